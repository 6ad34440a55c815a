"""Workspaces: two data sources side by side in one installation (one MLflow registry, one
quotacast database) never see each other's models or alerts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.config import Settings, sanitize_workspace, workspace_for
from engine.db import driver_url
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
    # The quotacast database follows the models: the workspace of the command's data (named,
    # or derived from the data path); the default one keeps the rows of before workspaces ("").
    assert Settings(data="crm").store_workspace() == ""
    assert Settings(data="demo-data", workspace="CRM").store_workspace() == "crm"
    assert Settings(data="demo-data", workspace="demo-data").store_workspace() == ""
    assert Settings(data="demo-data").store_workspace("exports/crm-sales") == "crm-sales"
    assert Settings(data="exports/crm").store_workspace("elsewhere/crm") == ""
    assert Settings(data="demo-data", workspace="acme").store_workspace("exports/crm") == "acme"
    assert Settings(data="x", default_workspace="crm").store_workspace("exports/crm") == ""


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


def test_the_workspace_is_a_value_passed_down(two_sources: dict[str, object]) -> None:
    """One process, several workspaces: a call names its workspace, whatever the process's
    default (configure) is."""
    import mlflow

    from engine import tracking

    env = two_sources["env"]
    assert isinstance(env, dict)
    acme = tracking.Workspace("acme")
    assert acme.model_name("win") == "quotacast-acme-win"
    assert tracking.Workspace("demo-data", adopt_unscoped=True).model_name("win") == \
        "quotacast-win"
    assert tracking.Workspace("", adopt_unscoped=True) == tracking.Workspace()
    assert tracking.Workspace.of(Settings(data="x/acme")) == tracking.Workspace("acme", True)
    assert tracking.Workspace.of(Settings(data="demo-data"), "x/acme") == acme
    previous = mlflow.get_tracking_uri(), tracking.active_workspace()
    try:
        tracking.configure(env["QUOTACAST_MLFLOW_TRACKING_URI"], workspace=two_sources["crm_ws"])
        assert tracking.load_champion("win", workspace=acme).model_name == "quotacast-acme-win"
        with pytest.raises(tracking.ChampionMissingError, match="in workspace crm"):
            tracking.load_champion("win")
        assert tracking.model_name("win", acme) == "quotacast-acme-win"
        assert tracking.model_name("win", "acme") == "quotacast-acme-win"
    finally:
        tracking.configure(previous[0], workspace=previous[1])


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


def _alerts(env: object, *args: str, before: tuple[str, ...] = ()) -> list[dict[str, object]]:
    result = runner.invoke(app, [*before, "warnings", "list", "--state", "all", "--json", *args],
                           env=env)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_alerts_of_one_workspace_never_hold_back_another(two_sources: dict[str, object]) -> None:
    env, acme, crm, crm_ws = (two_sources[k] for k in ("env", "acme", "crm", "crm_ws"))
    # acme's data runs years later than crm-sales': in one shared store, crm's evaluation was
    # refused as "earlier than the last evaluation". Each data source is its own workspace, as
    # for the models: both evaluations succeed, without naming a workspace.
    code, said = _run(env, "warnings", "evaluate", "--data", str(acme), "--no-deliver")
    assert code == 0, said
    assert "in workspace acme" in said
    code, said = _run(env, "warnings", "evaluate", "--data", str(crm), "--no-deliver")
    assert code == 0, said
    assert "earlier than the last evaluation" not in said
    # And again, in the other order: each workspace keeps its own last evaluation.
    code, said = _run(env, "warnings", "evaluate", "--data", str(acme), "--no-deliver")
    assert code == 0, said
    # `warnings list` shows each its own: acme's alerts are not crm's.
    acme_alerts = _alerts(env, "--data", str(acme))
    assert acme_alerts
    assert _alerts(env, "--data", str(crm)) == []
    assert _alerts(env, before=("--workspace", "acme")) == acme_alerts
    code, said = _run(env, "warnings", "list", "--data", str(crm))
    assert code == 0
    flat = " ".join(said.split())
    assert f"no alerts in workspace {crm_ws}" in flat
    assert f"alerts of other workspaces: acme ({len(acme_alerts)})" in flat
    # The default workspace (of QUOTACAST_DATA, unset: demo-data) holds none of them.
    assert _alerts(env) == []
    # Silences, history and the outbox are the workspace's too.
    code, said = _run(env, "warnings", "silence", "add", "--data", str(acme), "-m",
                      "alertname=PaceBehindPlan", "--starts", "2026-11-01", "--ends",
                      "2026-12-01", "--author", "ana", "--comment", "acme only")
    assert code == 0, said
    silence_id = runner.invoke(app, ["warnings", "silence", "add", "--data", str(acme), "-m",
                                     "alertname=ForecastGap", "--starts", "2026-11-01",
                                     "--ends", "2026-12-01", "--author", "ana", "--comment",
                                     "to expire"], env=env).stdout.split()[-1]  # type: ignore[arg-type]

    def silences(*args: str) -> str:
        result = runner.invoke(app, ["warnings", "silence", "list", "--json", *args],
                               env=env)  # type: ignore[arg-type]
        assert result.exit_code == 0, result.stderr
        return result.stdout

    assert "acme only" in silences("--data", str(acme))
    assert "acme only" not in silences("--data", str(crm))
    assert "acme only" not in silences()
    code, said = _run(env, "warnings", "silence", "expire", silence_id, "--data", str(crm))
    assert code == 1 and f"in workspace {crm_ws}" in said
    code, said = _run(env, "warnings", "silence", "expire", silence_id, "--data", str(acme))
    assert code == 0, said
    history = runner.invoke(app, ["warnings", "history", "--json", "--data", str(crm)],
                            env=env)  # type: ignore[arg-type]
    assert history.exit_code == 0 and json.loads(history.stdout) == []
    code, said = _run(env, "warnings", "deliver", "--data", str(crm))
    assert code == 0 and f"nothing to deliver in workspace {crm_ws}" in said
    # A named workspace still works, and is the same as the one its data gives.
    code, said = _run(env, "--workspace", "acme", "warnings", "silence", "list")
    assert code == 0 and "1 silence(s) in workspace acme" in said


def test_the_cli_keys_belong_to_the_workspace_of_their_data(
        two_sources: dict[str, object]) -> None:
    env, acme, crm, crm_ws = (two_sources[k] for k in ("env", "acme", "crm", "crm_ws"))
    result = runner.invoke(app, ["keys", "add", "--role", "planner", "--data", str(acme)],
                           env=env)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.stderr
    assert "It opens the service of workspace acme only." in result.stderr
    key_id = result.stdout.split()[3].rstrip(":")
    code, said = _run(env, "keys", "list", "--data", str(acme))
    assert code == 0 and key_id in said and "in workspace acme" in said
    code, said = _run(env, "keys", "list", "--data", str(crm))
    assert code == 0 and key_id not in said and f"in workspace {crm_ws}" in said
    code, said = _run(env, "keys", "revoke", key_id, "--data", str(crm))
    assert code == 1 and f"no active key {key_id} in workspace {crm_ws}" in said
    assert f"it is a key of workspace acme: `quotacast --workspace acme keys revoke {key_id}`" \
        in " ".join(said.split())
    code, said = _run(env, "keys", "revoke", key_id, "--data", str(acme))
    assert code == 0, said


def test_a_database_of_before_workspaces_keeps_its_state(db_url: str) -> None:
    """Rows written before workspaces (workspace '') stay the default workspace's, on SQLite
    and PostgreSQL."""
    import sqlalchemy as sa

    from engine.alerting.store import AlertStore

    url = db_url
    engine = sa.create_engine(driver_url(url))
    with engine.begin() as conn:  # the table as quotacast created it before workspaces
        conn.execute(sa.text(
            "CREATE TABLE warning_evaluations (rule VARCHAR(200) NOT NULL, as_of DATE NOT NULL,"
            " alerts INTEGER NOT NULL, evaluated_at TIMESTAMP NOT NULL, "
            "PRIMARY KEY (rule, as_of))"))
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


def test_keys_open_only_their_workspace(db_url: str) -> None:
    from service.http.keys import KeyRing, KeyStore, Role

    url = db_url
    mine, theirs = KeyStore(url, workspace="acme"), KeyStore(url, workspace="crm")
    ring = KeyRing({"acme": KeyStore(url, workspace="acme"),
                    "crm-sales": KeyStore(url, workspace="crm")})
    try:
        _, token = mine.create(Role.PLANNER, None)
        _, other = theirs.create(Role.ADMIN, None)
        assert mine.verify(token) is not None
        assert theirs.verify(token) is None
        assert [k.key_id for k in theirs.list_keys(True)] == [theirs.verify(other).key_id]
        # A service serving both: each key opens its own workspace (by its served name).
        assert ring.verify(token).workspace == "acme"  # type: ignore[union-attr]
        assert ring.verify(other).workspace == "crm-sales"  # type: ignore[union-attr]
        assert ring.verify(token + "x") is None
    finally:
        mine.close()
        theirs.close()
        ring.close()


def test_two_workspaces_share_one_alert_database(db_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Alerts, evaluations, history, silences and the outbox of two workspaces in one database
    (SQLite and PostgreSQL): an earlier evaluation of one is not held back by the other's."""
    from datetime import date, timedelta

    import pandas as pd

    from engine.alerting.evaluate import evaluate
    from engine.alerting.notify import DeliveryPolicy, deliver
    from engine.alerting.rules import parse_matcher, parse_rules
    from engine.alerting.store import AlertStore
    from engine.io import Tables
    from features.metrics import METRICS, MetricContext, MetricSpec, Providers
    from features.metrics.alerting import METRIC_CATALOGUE, metric_source

    values: dict[str, list[tuple[str, float]]] = {}

    def frame(context: MetricContext, as_of: pd.Timestamp, params: object) -> pd.DataFrame:
        rows = values.get(str(as_of.date()), [])
        return pd.DataFrame([{"scope": "region", "region": r, "team": None, "value": v,
                              "explanation": f"value {v}"} for r, v in rows],
                            columns=["scope", "region", "team", "value", "explanation"])

    monkeypatch.setitem(METRICS, "test_value", MetricSpec(
        "test_value", ("region", "team"), "ratio", "set by the test", {}, "", frame))
    sink = tmp_path / "notified.jsonl"
    rules = parse_rules({"groups": [{"name": "g", "rules": [{
        "alert": "Low", "metric": "test_value", "scope": ["region"], "op": "<", "threshold": 1,
        "for": 0, "severity": "warning", "annotations": {"summary": "{{ node }}"}}]}],
        "receivers": [{"name": "out", "file_configs": [{"path": str(sink)}]}],
        "route": {"receiver": "out"}}, "test.yaml", catalogue=METRIC_CATALOGUE)
    source = metric_source(MetricContext(Tables({}), Providers()))
    late, early = date(2026, 10, 1), date(2017, 1, 2)
    values[str(late)] = [("North", 0.5)]
    values[str(early)] = [("South", 0.2)]
    acme, crm = AlertStore(db_url, workspace="acme"), AlertStore(db_url, workspace="crm")
    default = AlertStore(db_url)
    try:
        evaluate(rules, source, acme, late)
        evaluate(rules, source, crm, early)  # earlier than acme's: its own workspace
        assert [a.labels["region"] for a in acme.alerts()] == ["North"]
        assert [a.labels["region"] for a in crm.alerts()] == ["South"]
        assert default.alerts() == [] and default.last_evaluated(["Low"]) == {}
        assert acme.last_evaluated(["Low"]) == {"Low": late}
        assert crm.last_evaluated(["Low"]) == {"Low": early}
        assert [t.as_of for t in crm.history()] == [early]
        assert crm.other_workspaces() == {"acme": 1}
        assert default.other_workspaces() == {"acme": 1, "crm": 1}
        acme.add_silence([parse_matcher("alertname=Low")], late, late + timedelta(days=9),
                         "ana", "acme only")
        assert [s.comment for s in acme.silences()] == ["acme only"]
        assert crm.silences() == [] and default.silences() == []
        # One outbox message each; delivering crm's leaves acme's alone.
        assert acme.outbox_counts() == crm.outbox_counts() == {"pending": 1}
        assert default.outbox_counts() == {}
        assert deliver(crm, DeliveryPolicy(max_wait=timedelta(0))).delivered == 1
        assert acme.outbox_counts() == {"pending": 1}
        assert crm.outbox_counts() == {"delivered": 1}
        assert "South" in sink.read_text() and "North" not in sink.read_text()
    finally:
        for store in (acme, crm, default):
            store.close()


def _silence_body(comment: str) -> dict[str, object]:
    """A silence request of November 2026 (a window given by its end, or by its length)."""
    from service.http.schemas import SilenceIn

    window: dict[str, object] = ({"days": 30} if "days" in SilenceIn.model_fields
                                 else {"ends_at": "2026-12-01"})
    return {"matchers": ["alertname=PaceBehindPlan"], "starts_at": "2026-11-01", **window,
            "comment": comment}


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
        silence = _silence_body("acme only")
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


def test_one_service_serves_several_workspaces(two_sources: dict[str, object]) -> None:
    """`quotacast serve --data A --data B`: one app, each key answered from its own workspace
    (data, champions, alerts, silences, customers), never the other's."""
    from fastapi.testclient import TestClient
    from test_service_support import quiet_options

    from service.http.app import create_app

    env, acme, crm = two_sources["env"], two_sources["acme"], two_sources["crm"]
    assert isinstance(env, dict)

    def key(data: object) -> dict[str, str]:
        made = runner.invoke(app, ["keys", "add", "--role", "admin", "--data", str(data)],
                             env=env)
        assert made.exit_code == 0, made.stderr
        return {"X-API-Key": made.stdout.split()[-1]}

    acme_key, crm_key = key(acme), key(crm)
    # The installation's default workspace is demo-data (QUOTACAST_DATA unset), as for the CLI.
    settings = Settings(data=str(acme), mlflow_tracking_uri=env["QUOTACAST_MLFLOW_TRACKING_URI"],
                        database_url=env["QUOTACAST_DATABASE_URL"], default_workspace="demo-data")
    service = create_app(settings, quiet_options(), sources=[str(acme), str(crm)])
    acme_customer = "C000001"
    crm_customer = "Acme Corporation"
    with TestClient(service) as client:
        assert client.get("/readyz").json() == {"ready": True}
        assert client.get("/v1/models", headers={"X-API-Key": "qk_00000000_" + "x" * 43}
                          ).status_code == 401
        ready = {name: client.get("/readyz", headers=h).json()
                 for name, h in (("acme", acme_key), ("crm", crm_key))}
        assert ready["acme"]["data"]["source"] == str(acme)
        assert ready["crm"]["data"]["source"] == str(crm)
        # Champions: acme's win model is served to acme's keys only.
        assert "quotacast-acme-win" in client.get("/v1/models", headers=acme_key).text
        assert "quotacast-acme-win" not in client.get("/v1/models", headers=crm_key).text
        # Alerts: each evaluation in its own workspace (crm's data ends years before acme's).
        for headers in (acme_key, crm_key):
            evaluated = client.post("/v1/warnings/evaluate", headers=headers, json={})
            assert evaluated.status_code == 200, evaluated.text
        acme_alerts = client.get("/v1/warnings?state=all", headers=acme_key).json()
        crm_alerts = client.get("/v1/warnings?state=all", headers=crm_key).json()
        assert acme_alerts["count"] > 0
        assert acme_alerts["count"] == len(_alerts(env, "--data", str(acme)))
        assert crm_alerts["count"] == len(_alerts(env, "--data", str(crm)))
        assert not ({a["rule"] + str(a["labels"]) for a in acme_alerts["alerts"]}
                    & {a["rule"] + str(a["labels"]) for a in crm_alerts["alerts"]})
        # Silences.
        silence = _silence_body("served acme only")
        assert client.post("/v1/silences", headers=acme_key, json=silence).status_code == 201
        assert "served acme only" in client.get("/v1/silences", headers=acme_key).text
        assert "served acme only" not in client.get("/v1/silences", headers=crm_key).text
        # Customers: another workspace's customer is unknown (404), as any unknown one; its own
        # is found (then scored, or 503 here: neither workspace has a churn champion).
        def customer(customer_id: str, headers: dict[str, str]) -> int:
            return client.get(f"/v1/customers/{customer_id}", headers=headers).status_code

        assert customer(acme_customer, acme_key) in (200, 503)
        assert customer(acme_customer, crm_key) == 404
        assert customer(crm_customer, crm_key) in (200, 503)
        assert customer(crm_customer, acme_key) == 404
        # The metrics name the workspace of each served model.
        assert 'quotacast_model_info{workspace="acme",kind="win",version="1"} 1' in \
            client.get("/metrics").text
        # The dashboard is the key's workspace's.
        page = client.get("/", headers=crm_key)
        assert page.status_code == 200 and f"data {crm}" in page.text
        assert f"data {acme}" not in page.text


def test_serve_takes_several_data_sources(two_sources: dict[str, object],
                                          monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    import uvicorn

    import service.http.app

    env, acme, crm = two_sources["env"], two_sources["acme"], two_sources["crm"]
    seen: dict[str, object] = {}

    def create_app(settings: Settings, options: object = None,
                   sources: list[str] | None = None) -> str:
        seen.update(settings=settings, sources=sources)
        return "the-app"

    monkeypatch.setattr(service.http.app, "create_app", create_app)
    monkeypatch.setattr(uvicorn.Server, "run", lambda server: None)
    monkeypatch.setattr("service.cli.serve._one_blas_thread", lambda: None)
    code, said = _run(env, "serve", "--data", str(acme), "--data", str(crm))
    assert code == 0, said
    assert seen["sources"] == [str(acme), str(crm)]
    flat = " ".join(said.split())
    assert f"{acme} (workspace acme), {crm} (workspace {two_sources['crm_ws']})" in flat
    # The default workspace stays that of QUOTACAST_DATA, whatever is served.
    assert seen["settings"].default_workspace == "demo-data"  # type: ignore[attr-defined]
    # Two sources of one name, or a named workspace for several: exit 2, said plainly.
    twin = tmp_path / "elsewhere" / "acme"
    twin.mkdir(parents=True)
    code, said = _run(env, "serve", "--data", str(acme), "--data", str(twin))
    assert code == 2 and "both workspace acme" in " ".join(said.split())
    code, said = _run(env, "--workspace", "x", "serve", "--data", str(acme), "--data", str(crm))
    assert code == 2 and "several data sources" in said


def test_the_default_workspace_keeps_the_cli_state_of_before_workspaces(tmp_path: Path) -> None:
    """Rows stored before workspaces (workspace '') are the default workspace's: that of
    QUOTACAST_DATA, or QUOTACAST_DEFAULT_WORKSPACE; another data source does not see them."""
    from datetime import date

    from engine.alerting.rules import parse_matcher
    from engine.alerting.store import AlertStore

    url = f"sqlite:///{tmp_path / 'quotacast.db'}"
    before = AlertStore(url)
    before.add_silence([parse_matcher("alertname=PaceBehindPlan")], date(2026, 11, 1),
                       date(2026, 12, 1), "ana", "from before workspaces")
    before.close()
    mine, other = tmp_path / "exports" / "mine", tmp_path / "exports" / "other"
    base = {"QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "QUOTACAST_DATABASE_URL": url, "QUOTACAST_WORKSPACE": None,
            "QUOTACAST_DEFAULT_WORKSPACE": None}

    def listed(env: dict[str, str | None], *args: str) -> str:
        result = runner.invoke(app, ["warnings", "silence", "list", "--json", *args], env=env)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    with_data = {**base, "QUOTACAST_DATA": str(mine)}
    assert "from before workspaces" in listed(with_data)
    assert "from before workspaces" in listed(with_data, "--data", str(mine))
    assert "from before workspaces" not in listed(with_data, "--data", str(other))
    pinned = {**base, "QUOTACAST_DATA": None, "QUOTACAST_DEFAULT_WORKSPACE": "mine"}
    assert "from before workspaces" in listed(pinned, "--data", str(mine))
    assert "from before workspaces" not in listed(pinned)  # demo-data's is not the default
