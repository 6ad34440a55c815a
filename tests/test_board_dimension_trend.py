"""The trend and "what changed" of product and segment nodes (no target names them), from the
snapshots ``warnings evaluate`` leaves: on the command line, read back by the service (the same
database), and from the service's own evaluations.

A tiny company (two reps, products and segments on its deals); no registry, so the CLI and the
service both simulate with the fitted stage rates and the same seed: the snapshot the CLI leaves
of a product is the one the board's own simulation of that product writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_service_support import SEED, quiet_options, quiet_registry, settings_for
from typer.testing import CliRunner

from engine.board_store import BoardStore
from engine.io import write_data_dir
from engine.synthetic import SizeSpec, generate
from service.cli.app import app
from service.http.app import create_app

runner = CliRunner()
PERIOD = "2026Q4"
WEEK1, WEEK2 = "2026-11-09", "2026-11-16"
TINY = SizeSpec("tiny", 100, 1, 1, (1, 1), (2, 2))
RULES = """
groups:
  - name: plan
    rules:
      - alert: AttainmentAtRisk
        metric: attainment_probability
        scope: [company]
        op: "<"
        threshold: 0.5
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dimension-trend")
    frames = generate(TINY, seed=3)
    data = write_data_dir(frames, root / "demo")
    (root / "rules.yaml").write_text(RULES, encoding="utf-8")
    product = str(frames["opportunities"]["product"].value_counts().index[0])
    segment = str(frames["customers"]["segment"].value_counts().index[0])
    return {"root": root, "data": data, "rules": root / "rules.yaml", "product": product,
            "segment": segment}


def _cli(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, *args: str
         ) -> tuple[int, str, str]:
    monkeypatch.chdir(world["root"])
    env = {"QUOTACAST_DATABASE_URL": f"sqlite:///{world['root'] / 'quotacast.db'}",
           "QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{world['root'] / 'mlflow.db'}",
           "QUOTACAST_SEED": str(SEED), "QUOTACAST_N_JOBS": "1",
           # the service's data: the CLI's rows are in the service's (default) workspace
           "QUOTACAST_DATA": str(world["data"])}
    result = runner.invoke(app, list(args), env=env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def evaluated(world: dict[str, Any]) -> dict[str, Any]:
    """``warnings evaluate`` on the command line at two dates a week apart."""
    with pytest.MonkeyPatch.context() as patch:
        for day in (WEEK1, WEEK2):
            code, _, err = _cli(world, patch, "warnings", "evaluate", "--data",
                                str(world["data"]), "--rules", str(world["rules"]),
                                "--as-of", day, "--no-deliver")
            assert code == 0, err
    return world


def test_evaluate_stores_product_and_segment_snapshots(evaluated: dict[str, Any]) -> None:
    store = BoardStore(f"sqlite:///{evaluated['root'] / 'quotacast.db'}", workspace="")
    try:
        rows = store.snapshots(PERIOD)
    finally:
        store.close()
    for level in ("product", "segment", "channel", "company", "rep"):
        mine = rows[rows["level"] == level]
        assert {str(d) for d in mine["as_of"]} == {WEEK1, WEEK2}, level
        assert set(mine["source"]) == {"warnings"}
    dims = rows[rows["level"].isin(["product", "segment"])]
    assert dims["p_attain"].isna().all()  # no target names them
    assert (dims["p10"] <= dims["p50"]).all() and (dims["p50"] <= dims["p90"]).all()
    # Every product's P50 week by week; the products' closed to date add up to the company's.
    week2 = rows[rows["as_of"].astype(str) == WEEK2]
    company = week2[week2["level"] == "company"]["closed_to_date"].iloc[0]
    products = week2[week2["level"] == "product"]["closed_to_date"].sum()
    assert products == pytest.approx(company)


@pytest.mark.parametrize("level", ["product", "segment"])
def test_trend_of_a_dimension_node_on_the_command_line(
        evaluated: dict[str, Any], monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    key = evaluated[level]
    code, out, err = _cli(evaluated, monkeypatch, "trend", "--data", str(evaluated["data"]),
                          "--period", PERIOD, "--level", level, "--key", key, "--json")
    assert code == 0, err
    rows = json.loads(out.strip().splitlines()[-1])
    assert [r["as_of"][:10] for r in rows] == [WEEK1, WEEK2]
    assert {(r["level"], r["key"]) for r in rows} == {(level, key)}
    assert f"what changed from {WEEK1} to {WEEK2}" in err
    assert "has no target" in err  # its P(attain) is unknown, the expected effects stand


def test_the_service_reads_them_and_its_board_simulation_writes_the_same(
        evaluated: dict[str, Any]) -> None:
    root, key = evaluated["root"], evaluated["product"]
    uri = f"sqlite:///{root / 'no-registry' / 'mlflow.db'}"
    settings = settings_for(root, evaluated["data"], uri)  # the CLI's seed
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        service = create_app(settings, quiet_options())
        with TestClient(service) as client:
            state = service.state.quotacast
            headers = {"X-API-Key": state.keys.create("planner")[1]}
            params = {"level": "product", "key": key, "period": PERIOD, "as_of": WEEK2}
            trend = client.get("/v1/trend", params=params, headers=headers)
            assert trend.status_code == 200, trend.text
            points = trend.json()["points"]
            assert [(p["as_of"], p["source"]) for p in points] == [(WEEK1, "warnings"),
                                                                   (WEEK2, "warnings")]
            changes = client.get("/v1/changes", params={**params, "until": WEEK2},
                                 headers=headers)
            assert changes.status_code == 200, changes.text
            body = changes.json()
            assert (body["since"], body["until"]) == (WEEK1, WEEK2)
            assert body["p_attain_delta"] is None  # no target
            assert {g["change"] for g in body["groups"]} >= {"won", "lost", "created"}
            # The board's simulation of the products at WEEK2 writes its own snapshot there.
            deals = client.get("/v1/deals", params=params, headers=headers)
            assert deals.status_code == 200, deals.text
            again = client.get("/v1/trend", params=params, headers=headers).json()["points"]
    assert [(p["as_of"], p["source"]) for p in again] == [(WEEK1, "warnings"),
                                                          (WEEK2, "service")]
    for name in ("p10", "p50", "p90", "closed_to_date", "expected"):
        assert again[1][name] == pytest.approx(points[1][name]), name


def test_the_services_own_evaluations_fill_the_trend_of_a_segment(
        world: dict[str, Any], tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'no-registry' / 'mlflow.db'}"
    settings = settings_for(tmp_path, world["data"], uri)
    key = world["segment"]
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        service = create_app(settings, quiet_options(rules=str(world["rules"])))
        with TestClient(service) as client:
            state = service.state.quotacast
            headers = {"X-API-Key": state.keys.create("sales_ops")[1]}
            for day in (WEEK1, WEEK2):
                done = client.post("/v1/warnings/evaluate", json={"as_of": day},
                                   headers=headers)
                assert done.status_code == 200, done.text
            trend = client.get("/v1/trend", headers=headers, params={
                "level": "segment", "key": key, "period": PERIOD, "as_of": WEEK2})
    assert trend.status_code == 200, trend.text
    assert [(p["as_of"], p["source"]) for p in trend.json()["points"]] == [
        (WEEK1, "service"), (WEEK2, "service")]
