"""`quotacast demo` end to end on the small company, and the contract columns it writes.

This is the README's first command, run the way a user runs it (in a fresh working directory,
MLflow and the alert store on SQLite files there), so every command it chains is exercised.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine import tracking
from service.cli.app import app

runner = CliRunner()

CONTRACT = {
    "at_risk.csv": ["customer_id", "account_manager", "churn_probability", "revenue_at_risk",
                    "reasons"],
    "forecast.csv": ["level", "key", "ds", "yhat", "yhat_p10", "yhat_p50", "yhat_p90"],
    "feasibility.csv": ["period", "level", "key", "target", "closed_to_date", "p_attain",
                        "expected", "p10", "p50", "p90", "gap", "must_hit", "stretch"],
    "recalibration.csv": ["period", "level", "key", "target", "recalibrated_target",
                          "p_attain_before", "p_attain_after"],
    "alerts.csv": ["rule", "labels", "state", "severity", "value", "threshold", "since",
                   "message"],
}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("QUOTACAST_MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
        mp.setenv("QUOTACAST_DATABASE_URL", f"sqlite:///{workdir / 'quotacast.db'}")
        result = runner.invoke(app, ["demo", "--size", "small"])
    assert result.exit_code == 0, result.stderr[-3000:]
    (workdir / "demo-said.txt").write_text(result.stderr)
    return workdir


def test_demo_says_each_note_once(demo_dir: Path) -> None:
    """The demo chains feasibility and recalibration on the same data: their notes (and the
    "no champion" hints) are printed once, not once per command."""
    said = (demo_dir / "demo-said.txt").read_text().splitlines()
    notes = [line for line in said if line.startswith("- ") and ":" in line]
    assert any(n.startswith("- win model:") for n in notes)
    assert any(n.startswith("- rest of period:") for n in notes) or len(notes) > 5
    repeated = sorted({n for n in notes if notes.count(n) > 1})
    assert not repeated, repeated


@pytest.mark.parametrize("name", list(CONTRACT))
def test_demo_writes_every_result_with_the_contract_columns(demo_dir: Path, name: str) -> None:
    frame = pd.read_csv(demo_dir / "demo-output" / name)
    assert list(frame.columns[: len(CONTRACT[name])]) == CONTRACT[name]
    assert len(frame) > 0


def test_demo_results_are_consistent(demo_dir: Path) -> None:
    out = demo_dir / "demo-output"
    at_risk = pd.read_csv(out / "at_risk.csv")
    assert at_risk["churn_probability"].between(0, 1).all()
    assert at_risk["revenue_at_risk"].is_monotonic_decreasing
    feasibility = pd.read_csv(out / "feasibility.csv")
    assert (feasibility["p10"] <= feasibility["p50"]).all()
    assert (feasibility["p50"] <= feasibility["p90"]).all()
    assert (feasibility["must_hit"] <= feasibility["stretch"]).all()
    recal = pd.read_csv(out / "recalibration.csv")
    company = recal[recal["level"] == "company"]
    assert company["recalibrated_target"].iloc[0] == pytest.approx(company["target"].iloc[0])
    forecast = pd.read_csv(out / "forecast.csv")
    assert (forecast["yhat_p10"] >= 0).all()


def test_demo_registers_a_champion_of_every_model(demo_dir: Path) -> None:
    tracking.configure(f"sqlite:///{demo_dir / 'mlflow.db'}")
    for kind in ("churn", "forecast", "win"):
        assert tracking.load_champion(kind).version == "1"


@pytest.mark.parametrize(
    "command",
    [
        ["feasibility", "--period", "2026Q4"],
        ["recalibrate"],
        ["score", "churn"],
        ["forecast", "--fit"],
        ["features"],
    ],
)
def test_commands_on_bad_data_exit_2_and_write_nothing(command: list[str],
                                                       tmp_path: Path) -> None:
    data = tmp_path / "bad"
    data.mkdir()
    (data / "orders.csv").write_text("customer_id,order_date,amount\nc1,2026-13-01,5\n")
    out = tmp_path / "out.csv"
    result = runner.invoke(app, [*command, "--data", str(data), "--out", str(out)])
    assert result.exit_code == 2
    assert "orders:2: order_date: unparseable date" in result.stderr
    assert not out.exists()


def test_bad_period_and_as_of_are_usage_errors(demo_dir: Path, tmp_path: Path) -> None:
    data = str(demo_dir / "demo-data")
    bad_period = runner.invoke(app, ["feasibility", "--data", data, "--period", "2026Q7"])
    assert bad_period.exit_code == 2 and "--period" in bad_period.stderr
    bad_date = runner.invoke(app, ["features", "--data", data, "--as-of", "31/12/2026"])
    assert bad_date.exit_code == 2 and "ISO date" in bad_date.stderr
