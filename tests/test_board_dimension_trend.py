"""The trend and "what changed" of product and segment nodes (no target names them), from the
snapshots ``warnings evaluate`` leaves: on the command line, read back by the service (the same
database), and from the service's own evaluations.

A tiny company (two reps, products and segments on its deals); no registry, so the CLI and the
service both simulate with the fitted stage rates and the same seed: the snapshot the CLI leaves
of a product is the one the board's own simulation of that product writes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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
    # The printed tables leave out the columns no target leaves empty; the JSON keeps them.
    assert "expected_effect" in err and "closed_to_date" in err
    assert "p_attain" not in err and "target" not in err.replace("has no target", "")
    assert all(r["p_attain"] is None and r["target"] is None for r in rows)


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


QUOTACAST = [sys.executable, "-c",
             "import sys; from service.cli.app import main; sys.exit(main())"]
# A logger's own line (``INFO:alembic...``, ``2026/01/01 12:00:00 INFO mlflow...``,
# ``12:00:01 - cmdstanpy - INFO``), a Python warning, or a library's known chatter: never
# quotacast's own (which says ``note:`` or ``warning:`` in lower case).
_CHATTER = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)[: ]|^\d{4}[/-]\d{2}[/-]\d{2} "
                      r"\d{2}:\d{2}:\d{2}|^\d{2}:\d{2}:\d{2} - |Warning: |Importing plotly "
                      r"failed|Successfully registered|Created version|py4j")


def test_the_commands_print_no_third_party_line_and_each_note_once(
        world: dict[str, Any], tmp_path: Path) -> None:
    """``feasibility`` and ``warnings evaluate`` (which now also simulate the segments) and
    ``trend`` of a segment, each in a fresh interpreter (a logger's import-time set-up would be
    hidden in this one): a segment's trend from the two."""
    env = {**os.environ, "QUOTACAST_DATABASE_URL": f"sqlite:///{tmp_path / 'quotacast.db'}",
           "QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "QUOTACAST_DATA": str(world["data"]), "QUOTACAST_N_JOBS": "1", "COLUMNS": "200"}
    segment = world["segment"]
    commands = [
        ["feasibility", "--period", PERIOD, "--as-of", WEEK1, "--draws", "500"],
        ["warnings", "evaluate", "--rules", str(world["rules"]), "--as-of", WEEK2,
         "--no-deliver"],
        ["trend", "--period", PERIOD, "--level", "segment", "--key", segment, "--json"],
    ]
    for args in commands:
        done = subprocess.run([*QUOTACAST, *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, (args, done.stderr)
        lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()
                 if line.strip()]
        assert not [line for line in lines if _CHATTER.search(line)], (args, lines)
        notes = [line for line in lines if line.startswith(("note:", "- ", "warning:"))]
        assert len(notes) == len(set(notes)), (args, notes)
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(r["as_of"][:10], r["source"]) for r in rows] == [(WEEK1, "feasibility"),
                                                              (WEEK2, "warnings")]
