"""benchmarks/history_sweep.py: its machinery on one tiny cell, so the sweep cannot rot."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from engine.io import Tables, validate_tables
from engine.schemas import AMOUNT, CUSTOMER_ID, DS, KEY, LEVEL, ORDER_DATE, ORDER_ID, ORDERS, Y

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep() -> ModuleType:
    spec = importlib.util.spec_from_file_location("history_sweep",
                                                  REPO / "benchmarks" / "history_sweep.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["history_sweep"] = module
    spec.loader.exec_module(module)
    return module


def monthly_tables(months: int = 20) -> Tables:
    """Two states, two customers each, one order per customer and month (seasonal, growing)."""
    rng = np.random.default_rng(3)
    dates = pd.date_range("2020-01-01", periods=months, freq="MS")
    rows = []
    for state, base in (("North", 100.0), ("South", 60.0)):
        for customer in ("a", "b"):
            for i, day in enumerate(dates):
                season = 1 + 0.3 * np.sin(2 * np.pi * day.month / 12)
                rows.append({ORDER_ID: f"{state}-{customer}-{i}",
                             CUSTOMER_ID: f"{state}-{customer}", ORDER_DATE: day,
                             AMOUNT: base * season * (1 + 0.01 * i) + rng.normal(0, 2),
                             "state": state})
    tables, problems = validate_tables({ORDERS: pd.DataFrame(rows)})
    assert not problems
    return tables


def test_mase_and_coverage_by_hand(sweep: ModuleType) -> None:
    keys = {LEVEL: "company", KEY: "all"}
    history = pd.DataFrame({**keys, DS: pd.date_range("2021-01-01", periods=3, freq="MS"),
                            Y: [10.0, 12.0, 11.0]})  # lag-1 scale: (2 + 1) / 2 = 1.5
    ahead = pd.date_range("2021-04-01", periods=3, freq="MS")
    actual = pd.DataFrame({**keys, DS: ahead, Y: [12.0, 9.0, 11.0]})
    forecast = pd.DataFrame({**keys, DS: ahead[:2], "yhat": [11.0, 11.0],
                             "yhat_p10": [10.0, 10.0], "yhat_p90": [13.0, 10.5]})
    mase, coverage, missed = sweep.mase_and_coverage(history, forecast, actual)
    assert mase == pytest.approx((1 + 2) / 2 / 1.5)
    assert coverage == pytest.approx(0.5)  # 12 inside [10, 13]; 9 below [10, 10.5]
    assert missed == 1  # the third month had no forecast


def test_verdicts_and_best_peer(sweep: ModuleType) -> None:
    cell = sweep.Cell("forecast", "x", 3.0, "3", scores={
        "ours": {"mase": 1.0, "coverage_80": 0.7},
        "AutoETS": {"mase": 0.9, "coverage_80": 0.95},
        "seasonal naive": {"mase": 1.2, "coverage_80": math.nan}}, answered=True)
    table = sweep.summary_table([cell]).set_index("metric")
    assert table.loc["mase", "best peer"] == "AutoETS"
    assert table.loc["mase", "vs peer"] == "BELOW"
    assert table.loc["coverage_80", "vs peer"] == "at/above"  # 0.70 is nearer 0.80 than 0.95


def test_lengths_skip_what_the_data_lacks(sweep: ModuleType) -> None:
    kept, skipped = sweep.lengths_for(monthly_tables(8), (3, 6, 9))  # to 2020-08-01
    assert [label for _, label in kept] == ["3", "6", "7.0 (full)"]
    assert skipped == [9]


def test_one_forecast_cell_end_to_end(sweep: ModuleType, tmp_path: Path) -> None:
    tables = monthly_tables(24)  # 2020-01 .. 2021-12
    data = sweep.ForecastData("tiny", tables, "state", sweep.forecast_origins(tables, 3))
    assert data.origins == (pd.Timestamp("2021-01-01"),)  # 2020-01 has no history before it
    cell = sweep.Cell("forecast", "tiny", 3.0, "3")
    sweep._run(cell, lambda: sweep.forecast_cell(cell, data, 3), tmp_path / "fail.log")
    assert cell.answered, cell.note
    assert np.isfinite(cell.scores["ours"]["mase"])
    assert "seasonal naive" in cell.scores  # AutoETS cannot fit three months; naive can
    broken = sweep.Cell("churn", "tiny", 3.0, "3")
    sweep._run(broken, lambda: sweep.churn_cell(broken, Tables({})), tmp_path / "fail.log")
    assert not broken.answered and "FAILED" in broken.note
    assert "churn tiny 3" in (tmp_path / "fail.log").read_text()
    table = sweep.write_outputs([cell, broken], ["forecast tiny 24 months: too short"],
                                tmp_path, "header")
    assert list(table["family"]) == ["churn", "churn", "forecast", "forecast"]  # family order
    assert list(table["answered"]) == ["NO", "NO", "yes", "yes"]
    markdown = (tmp_path / "history_sweep.md").read_text()
    assert "| forecast | tiny | 3 | yes | mase " in markdown
    assert "skipped: forecast tiny 24 months" in markdown
    assert (tmp_path / "history_sweep.png").stat().st_size > 0
