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
