"""engine/history.py: the data as an export made on an earlier day would hold it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine.history import cut_history, export_at
from engine.io import load_tables, write_data_dir
from engine.periods import first_day
from engine.schemas import (
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    STAGE,
    STATUS,
    STATUS_OPEN,
)

# The real-data slices of tests/fixtures/real (the tests' conftest names the same folder; a
# `from conftest import` would find tests/e2e/conftest.py when the whole suite is collected).
REAL_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "real"


def test_export_at_keeps_rows_before_the_day_and_reopens_later_closes() -> None:
    tables = load_tables(str(REAL_FIXTURES / "crm-sales"))
    cutoff = pd.Timestamp("2017-06-01")
    cut = export_at(tables, cutoff)
    opps = cut.frames[OPPORTUNITIES]
    assert (cut.orders[ORDER_DATE] < cutoff).all()
    assert (opps[CREATED_AT] < cutoff).all()
    closed = opps[opps[STATUS] != STATUS_OPEN]
    assert (closed[CLOSE_DATE] < cutoff).all()
    before = tables.frames[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    reopened = opps[(opps[STATUS] == STATUS_OPEN)
                    & opps[OPPORTUNITY_ID].map(before[STATUS]).ne(STATUS_OPEN)]
    assert len(reopened) > 100
    # valued at the quoted price, never at the closing amount that was not known yet
    quoted = pd.to_numeric(reopened["list_price"])
    assert (reopened[AMOUNT] == quoted).all()
    assert not set(reopened[STAGE]) & {"Won", "Lost"}


def test_cut_history_is_the_first_months_and_validates(tmp_path: Path) -> None:
    tables = load_tables(str(REAL_FIXTURES / "online-retail"))
    start = first_day(tables)
    cut = cut_history(tables, 3)
    assert cut.orders[ORDER_DATE].min() >= start
    assert cut.orders[ORDER_DATE].max() < start + pd.DateOffset(months=3)
    frames = {name: frame for name, frame in cut.frames.items() if name not in cut.derived}
    written = write_data_dir(frames, tmp_path / "cut")
    again = load_tables(str(written))  # raises BadInput on any problem
    assert len(again.orders) == len(cut.orders)
