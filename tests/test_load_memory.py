"""The loader's memory-saving paths give the same tables and the same problems (issue 19).

- ``load_tables(..., skip=ROW_IDS)`` leaves the row ids out: every other column is the same and
  still checked (a bad cell there is reported with all the others, exit 2), while garbage in a
  skipped column (duplicate order ids) is not read, so not a problem;
- ``validate_tables(raw, consume=True)`` parses each raw table in place and lets it go: the
  same tables and problems as the copying path;
- missing text shares one NaN object (no float object per empty cell);
- ``win_training_rows`` paired block by block is the whole at once;
- ``load_tables(..., skip=ROW_IDS)`` reads a Parquet data directory without ever reading its
  row ids: the whole read's tables without them, and the problems of the columns read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.compute.parquet import write_parquet_dir
from engine.io import ROW_IDS, BadInput, Tables, load_tables, validate_tables
from engine.io.checks import _as_text
from engine.schemas import AMOUNT, INVOICE_ID, OPPORTUNITIES, ORDER_ID, ORDERS, RECEIVABLES
from engine.synthetic import generate
from features import deals
from features.deals import deal_snapshot_dates, deal_snapshots, win_training_rows
from tests.test_validate import VALID, with_table, write_dir


def test_skipped_row_ids_are_not_loaded_and_the_rest_is_unchanged(tmp_path: Path) -> None:
    data = write_dir(tmp_path / "d")
    whole = load_tables(data)
    lean = load_tables(data, skip=ROW_IDS)
    assert ORDER_ID in whole[ORDERS].columns and INVOICE_ID in whole[RECEIVABLES].columns
    assert ORDER_ID not in lean[ORDERS].columns
    assert INVOICE_ID not in lean[RECEIVABLES].columns  # required, yet not reported missing
    assert set(lean.frames) == set(whole.frames)
    for name, frame in lean.frames.items():
        pd.testing.assert_frame_equal(frame, whole[name].drop(columns=list(ROW_IDS),
                                                              errors="ignore"))


def test_a_bad_cell_in_a_read_column_is_still_reported_with_the_others(tmp_path: Path) -> None:
    orders = VALID[ORDERS].replace("o2,c2,2023-03-04,900", "o1,c2,2023-03-04,lots")
    data = write_dir(tmp_path / "d", with_table(ORDERS, orders))
    with pytest.raises(BadInput) as whole:
        load_tables(data)
    with pytest.raises(BadInput) as lean:
        load_tables(data, skip=ROW_IDS)
    checks = {(p.column, p.check) for p in whole.value.problems}
    assert (ORDER_ID, "duplicate value") in checks and (AMOUNT, "not a number") in checks
    # The skipped column is not read, so its duplicate is not a problem; the amount still is,
    # on the same line.
    assert [(p.line, p.column, p.check) for p in lean.value.problems] == [
        (p.line, p.column, p.check) for p in whole.value.problems if p.column != ORDER_ID]


def test_garbage_only_in_a_skipped_column_loads(tmp_path: Path) -> None:
    orders = VALID[ORDERS].replace("o2,", "o1,")
    data = write_dir(tmp_path / "d", with_table(ORDERS, orders))
    with pytest.raises(BadInput):
        load_tables(data)
    assert len(load_tables(data, skip=ROW_IDS)[ORDERS]) == 3


def test_validating_in_place_gives_the_same_tables_and_problems() -> None:
    frames = generate("small", seed=3)
    frames[ORDERS] = frames[ORDERS].astype({AMOUNT: object})
    frames[ORDERS].loc[frames[ORDERS].index[5], AMOUNT] = "n/a"  # one bad cell, one problem
    copied, copied_problems = validate_tables({n: f.copy() for n, f in frames.items()})
    raw = {n: f.copy() for n, f in frames.items()}
    consumed, consumed_problems = validate_tables(raw, consume=True)
    assert raw == {}  # every raw table let go once parsed
    assert consumed_problems == copied_problems and len(copied_problems) == 1
    assert set(consumed.frames) == set(copied.frames)
    for name, frame in consumed.frames.items():
        pd.testing.assert_frame_equal(frame, copied[name])


def test_missing_text_shares_one_nan() -> None:
    values = pd.Series(np.array([None, " a", None, "b", None], dtype=object),
                       index=range(2, 7), name="x")
    text = _as_text(values)
    assert text.tolist()[1::2] == ["a", "b"] and text.isna().tolist() == [True, False] * 2 + [True]
    assert len({id(v) for v in text.to_numpy()[::2]}) == 1
    assert list(text.index) == [2, 3, 4, 5, 6] and text.name == "x"


def test_win_training_rows_in_blocks_are_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    tables = validate_tables(generate("small", seed=7))[0]
    as_of = pd.Timestamp(tables[OPPORTUNITIES]["close_date"].max()) - pd.Timedelta(days=60)
    snapshots = deal_snapshots(tables, deal_snapshot_dates(tables, as_of, every_days=28))
    whole = win_training_rows(snapshots, tables[OPPORTUNITIES], as_of, windows=(30,))
    monkeypatch.setattr(deals, "_BLOCK_ROWS", 37)
    assert len(snapshots) > 5 * 37  # several blocks, some of them without rows kept
    blocks = win_training_rows(snapshots, tables[OPPORTUNITIES], as_of, windows=(30,))
    assert len(whole) > 0
    pd.testing.assert_frame_equal(blocks, whole)


def _same_tables(lean: object, whole: object) -> None:
    assert set(lean.frames) == set(whole.frames)  # type: ignore[attr-defined]
    for name, frame in lean.frames.items():  # type: ignore[attr-defined]
        pd.testing.assert_frame_equal(frame, whole[name], check_exact=True)  # type: ignore[index]


def test_lean_parquet_tables_are_the_loaders_without_row_ids(tmp_path: Path) -> None:
    data = write_parquet_dir(generate("small", seed=5), tmp_path / "p")
    lean, whole = load_tables(data, skip=ROW_IDS), load_tables(data)
    assert ORDER_ID not in lean[ORDERS].columns and INVOICE_ID not in lean[RECEIVABLES].columns
    _same_tables(lean, Tables({name: frame.drop(columns=[c for c in ROW_IDS if c in frame])
                               for name, frame in whole.frames.items()}))
    assert lean.source == str(data)


def test_lean_parquet_reports_what_the_loader_reports(tmp_path: Path) -> None:
    frames = generate("small", seed=5)
    orders = frames[ORDERS].astype({AMOUNT: str})  # stored as text, parsed by the checks
    orders.loc[orders.index[3], AMOUNT] = "lots"  # a bad cell in a column that is read
    orders[ORDER_ID] = "same"  # garbage only in a row id: never read
    data = write_parquet_dir({**frames, ORDERS: orders}, tmp_path / "p")
    with pytest.raises(BadInput) as lean:
        load_tables(data, skip=ROW_IDS)
    with pytest.raises(BadInput) as whole:
        load_tables(data)  # the ids read too: the same cell's problem, and the ids' own
    assert [str(p) for p in lean.value.problems] == [
        str(p) for p in whole.value.problems if p.column != ORDER_ID]
    assert [(p.table, p.column) for p in lean.value.problems] == [(ORDERS, AMOUNT)]
