"""Workspaces: two data sources side by side in one installation (one MLflow registry, one
quotacast database) never see each other's models or alerts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.config import Settings, sanitize_workspace, workspace_for
from engine.io import write_data_dir
from service.cli.app import app

runner = CliRunner()


def test_workspace_names_derive_from_the_data_path() -> None:
    assert workspace_for("demo-data") == "demo-data"
    assert workspace_for("/tmp/x/Acme Sales/") == "acme-sales"
    assert workspace_for("sqlite:///exports/crm.db") == "crm"
    assert workspace_for("postgresql://u:p@host/sales") == "sales"
    assert workspace_for("/") == "default"
    assert sanitize_workspace(" EMEA/2024 ") == "emea-2024"
    assert Settings(data="a/b/crm").workspace_of() == "crm"
    assert Settings(data="crm", workspace="Mine").workspace_of("other") == "mine"
    # The default workspace (that of QUOTACAST_DATA) keeps what was stored before workspaces.
    assert Settings(data="demo-data").owns_unscoped("demo-data")
    assert not Settings(data="demo-data").owns_unscoped("crm")
    assert Settings(data="x", default_workspace="crm").owns_unscoped("crm")
    # The quotacast database: the named workspace, else the shared default one ("").
    assert Settings(data="crm").store_workspace() == ""
    assert Settings(data="demo-data", workspace="CRM").store_workspace() == "crm"
    assert Settings(data="demo-data", workspace="demo-data").store_workspace() == ""


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory: pytest.TempPathFactory, real_data) -> dict[str, object]:
    """The demo's small company and the real crm-sales fixture, in one installation."""
    from engine.synthetic import generate

    root = tmp_path_factory.mktemp("workspaces")
    acme = root / "acme"
    write_data_dir(generate("small", seed=7), acme)
    crm = real_data("crm-sales")
    env = {"QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "QUOTACAST_DATABASE_URL": f"sqlite:///{root / 'quotacast.db'}",
           "QUOTACAST_DATA": None, "QUOTACAST_WORKSPACE": None,
           "QUOTACAST_DEFAULT_WORKSPACE": None}
    trained = runner.invoke(app, ["train", "win", "--data", str(acme)], env=env)
    assert trained.exit_code == 0, trained.stderr[-2000:]
    assert "registered quotacast-acme-win version 1" in trained.stderr
    promoted = runner.invoke(app, ["promote", "win", "--data", str(acme), "--force"], env=env)
    assert promoted.exit_code == 0, promoted.stderr
    assert "promoted quotacast-acme-win v1" in promoted.stderr
    return {"acme": acme, "crm": crm, "env": env, "crm_ws": workspace_for(str(crm))}


def _run(env: object, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)  # type: ignore[arg-type]
    return result.exit_code, result.stderr


def test_a_champion_is_used_only_on_the_workspace_it_was_trained_for(
        two_sources: dict[str, object]) -> None:
    env, acme, crm, crm_ws = (two_sources[k] for k in ("env", "acme", "crm", "crm_ws"))
    code, own = _run(env, "feasibility", "--data", str(acme), "--all-nodes", "--draws", "500")
    assert code == 0, own
    assert "win model: champion v1 (quotacast-acme-win)" in own
    code, other = _run(env, "feasibility", "--data", str(crm), "--all-nodes", "--draws", "500")
    assert code == 0, other
    assert "quotacast-acme-win" not in other
    assert f"no win champion in workspace {crm_ws}" in other
    assert f"quotacast train win --data {crm}" in other


def test_promote_judges_only_within_its_workspace(two_sources: dict[str, object]) -> None:
    env, crm, crm_ws = (two_sources[k] for k in ("env", "crm", "crm_ws"))
    code, said = _run(env, "promote", "win", "--data", str(crm))
    assert code == 1
    assert f"no challenger for quotacast-win in workspace {crm_ws}" in said
    assert "quotacast train win" in said


def test_the_workspace_option_and_setting_name_the_workspace(
        two_sources: dict[str, object]) -> None:
    env, crm = two_sources["env"], two_sources["crm"]
    code, said = _run(env, "--workspace", "acme", "feasibility", "--data", str(crm),
                      "--all-nodes", "--draws", "500")
    assert code == 0, said
    assert "champion v1 (quotacast-acme-win)" in said
    with_env = {**env, "QUOTACAST_WORKSPACE": "Acme"}  # type: ignore[dict-item]
    code, said = _run(with_env, "feasibility", "--data", str(crm), "--all-nodes",
                      "--draws", "500")
    assert code == 0, said
    assert "champion v1 (quotacast-acme-win)" in said
    code, said = _run(env, "--workspace", " ", "feasibility", "--data", str(crm))
    assert code == 2


# --- the alert store and the API keys -----------------------------------------------------------


def test_alerts_of_one_workspace_never_hold_back_another(two_sources: dict[str, object]) -> None:
    env, acme, crm = (two_sources[k] for k in ("env", "acme", "crm"))
    # acme's data runs years later than crm-sales': in one shared store, crm's evaluation is
    # refused as "earlier than the last evaluation", and the refusal says what to do.
    code, said = _run(env, "warnings", "evaluate", "--data", str(acme), "--no-deliver")
    assert code == 0, said
    code, said = _run(env, "warnings", "evaluate", "--data", str(crm), "--no-deliver")
    assert code == 2 and "earlier than the last evaluation" in said
    assert "quotacast --workspace NAME warnings evaluate" in said
    # Named workspaces: each data source has its own alerts, evaluations and silences.
    code, said = _run(env, "--workspace", "acme", "warnings", "evaluate", "--data", str(acme),
                      "--no-deliver")
    assert code == 0, said
    code, said = _run(env, "--workspace", "crm", "warnings", "evaluate", "--data", str(crm),
                      "--no-deliver")
    assert code == 0, said
    code, said = _run(env, "--workspace", "acme", "warnings", "silence", "add", "-m",
                      "alertname=PaceBehindPlan", "--starts", "2026-11-01", "--ends",
                      "2026-12-01", "--author", "ana", "--comment", "acme only")
    assert code == 0, said
    acme_silences = runner.invoke(app, ["--workspace", "acme", "warnings", "silence", "list",
                                        "--json"], env=env)  # type: ignore[arg-type]
    crm_silences = runner.invoke(app, ["--workspace", "crm", "warnings", "silence", "list",
                                       "--json"], env=env)  # type: ignore[arg-type]
    assert "acme only" in acme_silences.stdout
    assert "acme only" not in crm_silences.stdout


def test_a_database_of_before_workspaces_keeps_its_state(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from engine.alerting.store import AlertStore

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the table as quotacast created it before workspaces
        conn.execute(sa.text(
            "CREATE TABLE warning_evaluations (rule VARCHAR(200) NOT NULL, as_of DATE NOT NULL,"
            " alerts INTEGER NOT NULL, evaluated_at DATETIME NOT NULL, PRIMARY KEY (rule, as_of))"))
        conn.execute(sa.text("INSERT INTO warning_evaluations VALUES "
                             "('PaceBehindPlan', '2026-11-02', 3, '2026-11-02 08:00:00')"))
    engine.dispose()
    default = AlertStore(url)
    other = AlertStore(url, workspace="crm")
    try:
        assert str(default.last_evaluated(["PaceBehindPlan"])["PaceBehindPlan"]) == "2026-11-02"
        assert other.last_evaluated(["PaceBehindPlan"]) == {}
    finally:
        default.close()
        other.close()


def test_keys_open_only_their_workspace(tmp_path: Path) -> None:
    from service.http.keys import KeyStore, Role

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    mine, theirs = KeyStore(url, workspace="acme"), KeyStore(url, workspace="crm")
    try:
        _, token = mine.create(Role.PLANNER, None)
        assert mine.verify(token) is not None
        assert theirs.verify(token) is None
        assert [k.key_id for k in theirs.list_keys(True)] == []
    finally:
        mine.close()
        theirs.close()


def test_one_installation_serves_each_workspace_its_own(two_sources: dict[str, object]) -> None:
    from fastapi.testclient import TestClient
    from test_service_support import quiet_options

    from service.http.app import create_app

    env = two_sources["env"]
    assert isinstance(env, dict)

    def settings(data: object, workspace: str) -> Settings:
        return Settings(data=str(data), mlflow_tracking_uri=env["QUOTACAST_MLFLOW_TRACKING_URI"],
                        database_url=env["QUOTACAST_DATABASE_URL"], default_workspace="demo-data",
                        workspace=workspace)

    acme_app = create_app(settings(two_sources["acme"], "acme"), quiet_options())
    crm_app = create_app(settings(two_sources["crm"], "crm"), quiet_options())
    with TestClient(acme_app) as acme, TestClient(crm_app) as crm:
        acme_key = {"X-API-Key": acme_app.state.quotacast.keys.create("admin")[1]}
        crm_key = {"X-API-Key": crm_app.state.quotacast.keys.create("admin")[1]}
        assert crm.get("/v1/models", headers=acme_key).status_code == 401
        assert "quotacast-acme-win" in acme.get("/v1/models", headers=acme_key).text
        assert "quotacast-acme-win" not in crm.get("/v1/models", headers=crm_key).text
        silence = {"matchers": ["alertname=PaceBehindPlan"], "starts_at": "2026-11-01",
                   "ends_at": "2026-12-01", "comment": "acme only"}
        assert acme.post("/v1/silences", headers=acme_key, json=silence).status_code == 201
        assert "acme only" in acme.get("/v1/silences", headers=acme_key).text
        assert "acme only" not in crm.get("/v1/silences", headers=crm_key).text


def test_promote_without_the_data_names_the_workspace_that_has_a_challenger(
        tmp_path: Path, real_data) -> None:
    """`train win --data D` then a bare `promote win` (the default workspace): the message says
    where the challenger is and how to promote it."""
    crm = real_data("crm-sales")
    env = {"QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "QUOTACAST_DATABASE_URL": f"sqlite:///{tmp_path / 'quotacast.db'}",
           "QUOTACAST_DATA": None, "QUOTACAST_WORKSPACE": None,
           "QUOTACAST_DEFAULT_WORKSPACE": None}
    code, said = _run(env, "train", "win", "--data", str(crm))
    assert code == 0, said[-2000:]
    code, said = _run(env, "promote", "win")
    assert code == 1
    flat = " ".join(said.replace("│", " ").split())
    assert f"a challenger was trained in workspace {workspace_for(str(crm))}" in flat, said
    assert "quotacast promote win --data D" in flat
