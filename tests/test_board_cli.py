"""``quotacast feasibility``, ``warnings evaluate``, ``trend`` and ``commit`` on the tiny demo
company: each feasibility leaves a snapshot, two evaluations a week apart make a two-row trend,
a commit is stored with history beside P(reaching it); no traceback anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.board_store import BoardStore
from engine.io import write_data_dir
from engine.synthetic import SizeSpec, generate
from service.cli.app import app

runner = CliRunner()
PERIOD = "2026Q4"
# One year of a two-rep company: fast to generate, and without a win champion the stage rates
# are fitted on few monthly snapshots.
TINY = SizeSpec("tiny", 100, 1, 1, (1, 1), (2, 2))
RULES = """
groups:
  - name: plan
    rules:
      - alert: AttainmentAtRisk
        metric: attainment_probability
        scope: [company, rep]
        op: "<"
        threshold: 0.5
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("board-cli")
    data = write_data_dir(generate(TINY, seed=3), root / "demo")
    (root / "rules.yaml").write_text(RULES, encoding="utf-8")
    return {"root": root, "data": data, "db": root / "quotacast.db",
            "rules": root / "rules.yaml"}


def _run(world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str,
                                                                                      str]:
    monkeypatch.chdir(world["root"])
    env = {"QUOTACAST_DATABASE_URL": f"sqlite:///{world['db']}",
           "QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{world['root'] / 'mlflow.db'}",
           "QUOTACAST_N_JOBS": "1"}
    result = runner.invoke(app, list(args), env=env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return result.exit_code, result.stdout, result.stderr


def _store(world: dict[str, Path]) -> BoardStore:
    return BoardStore(f"sqlite:///{world['db']}", workspace="demo")


def test_feasibility_leaves_a_snapshot_of_every_node(world: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = _run(world, monkeypatch, "feasibility", "--data", str(world["data"]),
                          "--period", PERIOD, "--as-of", "2026-10-26", "--draws", "500",
                          "--json")
    assert code == 0, err
    shown = {(r["level"], r["key"]): r for r in json.loads(out.strip().splitlines()[-1])}
    store = _store(world)
    rows = store.snapshots(PERIOD, until=None)
    store.close()
    assert set(rows["source"]) == {"feasibility"}
    company = rows[rows["level"] == "company"].iloc[0]
    assert str(company["as_of"]) == "2026-10-26"
    assert company["p_attain"] == pytest.approx(shown[("company", "all")]["p_attain"])
    assert company["p50"] == pytest.approx(shown[("company", "all")]["p50"])
    assert len(rows) >= len(shown)  # every node, with a target or not


def test_two_evaluations_a_week_apart_make_a_two_row_trend(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    for day in ("2026-11-09", "2026-11-16"):
        code, _, err = _run(world, monkeypatch, "warnings", "evaluate", "--data",
                            str(world["data"]), "--rules", str(world["rules"]), "--as-of", day,
                            "--no-deliver")
        assert code == 0, err
    code, out, err = _run(world, monkeypatch, "trend", "--data", str(world["data"]),
                          "--period", PERIOD, "--as-of", "2026-11-16", "--json")
    assert code == 0, err
    rows = json.loads(out.strip().splitlines()[-1])
    assert [r["as_of"][:10] for r in rows] == ["2026-10-26", "2026-11-09", "2026-11-16"]
    assert [r["source"] for r in rows] == ["feasibility", "warnings", "warnings"]
    assert "what changed from 2026-11-09 to 2026-11-16" in err
    assert "by deal group" in err
    # Point in time: as of 11-12 the trend ends with the 11-09 evaluation.
    code, out, err = _run(world, monkeypatch, "trend", "--data", str(world["data"]),
                          "--period", PERIOD, "--as-of", "2026-11-12", "--json")
    assert [r["as_of"][:10] for r in json.loads(out.strip().splitlines()[-1])] == [
        "2026-10-26", "2026-11-09"]


def test_trend_without_snapshots_says_what_to_run(world: dict[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = _run(world, monkeypatch, "trend", "--data", str(world["data"]),
                        "--period", "2026Q2")
    assert code == 1
    assert "no snapshot" in err and "warnings evaluate" in err


@pytest.mark.parametrize("since", ["abc", "1677-01-01", "1999-01-01"])
def test_trend_since_a_day_that_is_no_date_of_the_data_is_a_usage_error(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, since: str) -> None:
    code, _, err = _run(world, monkeypatch, "trend", "--data", str(world["data"]),
                        "--period", PERIOD, "--since", since)
    assert code == 2, err
    assert "since" in err and "quotacast could not finish" not in err


def test_commit_is_stored_with_history_beside_its_probability(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(world)
    rep = str(store.snapshots(PERIOD, "rep").iloc[0]["key"])
    store.add_commit(PERIOD, "rep", rep, "commit", 1000.0, rep)  # an earlier submission
    store.close()
    code, out, err = _run(world, monkeypatch, "commit", "--data", str(world["data"]),
                          "--period", PERIOD, "--as-of", "2026-11-16", "--rep", rep,
                          "--amount", "2000000", "--draws", "500", "--json")
    assert code == 0, err
    [latest] = json.loads(out.strip().splitlines()[-1])
    assert latest["amount"] == 2_000_000 and latest["submissions"] == 2
    assert latest["p_reach"] is not None and 0 <= latest["p_reach"] < 0.5
    assert "p_reach" in err and "stored the commit" in err
    code, _, err = _run(world, monkeypatch, "commit", "--data", str(world["data"]),
                        "--rep", "Nobody Atall", "--amount", "5")
    assert code == 2 and "Nobody Atall" in err
