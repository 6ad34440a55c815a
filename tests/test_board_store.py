"""The board's tables on SQLite and PostgreSQL (the suite's ``db_url``): snapshots replaced per
(period, as_of, node), read back in as_of order and up to a date; commits kept with history,
latest wins; workspaces see only their own rows; the weekly trend and what changed, point in
time, on a few hand-made deals."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.board_store import BoardStore
from engine.io import Tables
from service.usecases.board import changes_between, default_since, trend_frame
from service.usecases.commits import commit_history, latest_commits, submit
from service.usecases.request import BadRequest


def _snapshot(day: str, p: float, closed: float, key: str = "all", level: str = "company",
              period: str = "2026Q4", **extra: float) -> dict[str, object]:
    return {"period": period, "as_of": day, "level": level, "key": key, "target": 1000.0,
            "closed_to_date": closed, "p10": 500.0, "p50": 900.0, "p90": 1300.0,
            "p_attain": p, "must_hit": 500.0, "stretch": 1100.0, "expected": 950.0,
            "expected_pipeline": 200.0, "pipeline_in_period": 400.0, **extra}


@pytest.fixture
def board(db_url: str):
    store = BoardStore(db_url)
    yield store
    store.close()


def test_a_snapshot_written_again_replaces_its_rows(board: BoardStore) -> None:
    assert board.write_snapshots([_snapshot("2026-11-09", 0.4, 100.0),
                                  _snapshot("2026-11-09", 0.2, 10.0, "North", "region")],
                                 "feasibility") == 2
    board.write_snapshots([_snapshot("2026-11-09", 0.5, 120.0)], "warnings")
    rows = board.snapshots("2026Q4")
    assert len(rows) == 2
    company = rows[rows["level"] == "company"].iloc[0]
    assert (company["p_attain"], company["closed_to_date"], company["source"]) == (
        0.5, 120.0, "warnings")
    assert rows[rows["level"] == "region"].iloc[0]["p_attain"] == 0.2  # untouched


def test_snapshots_are_read_in_as_of_order_up_to_a_date(board: BoardStore) -> None:
    for day, p in (("2026-11-16", 0.5), ("2026-11-02", 0.3), ("2026-11-09", 0.4)):
        board.write_snapshots([_snapshot(day, p, 100 * p)], "feasibility")
    frame = board.snapshots("2026Q4", "company", "all", until=date(2026, 11, 10))
    assert list(frame["as_of"]) == [date(2026, 11, 2), date(2026, 11, 9)]
    assert list(frame["p_attain"]) == [0.3, 0.4]
    assert board.snapshots("2026Q3").empty


def test_missing_numbers_are_stored_as_null(board: BoardStore) -> None:
    board.write_snapshots([_snapshot("2026-11-09", float("nan"), np.float64(5.0),
                                     target=float("inf"))], "feasibility")
    row = board.snapshots("2026Q4").iloc[0]
    assert np.isnan(row["p_attain"]) and np.isnan(row["target"]) and row["closed_to_date"] == 5


def test_workspaces_see_only_their_own_rows(db_url: str) -> None:
    north, south = BoardStore(db_url, workspace="north"), BoardStore(db_url, workspace="south")
    try:
        north.write_snapshots([_snapshot("2026-11-09", 0.4, 1.0)], "feasibility")
        south.write_snapshots([_snapshot("2026-11-09", 0.9, 2.0)], "feasibility")
        north.add_commit("2026Q4", "rep", "Ann", "commit", 10.0, "Ann")
        assert list(north.snapshots("2026Q4")["p_attain"]) == [0.4]
        assert list(south.snapshots("2026Q4")["p_attain"]) == [0.9]
        assert south.commits() == []
    finally:
        north.close()
        south.close()


def test_a_board_page_reads_while_another_process_writes(tmp_path: Path) -> None:
    """SQLite in write-ahead-log mode: a reader (a board page) is answered at once, with the
    rows committed before, while a writer (``warnings evaluate``, the service's warm-up) holds
    the database's write lock; in the default journal mode the read waited for the write
    (and failed with "database is locked" after the 5 s busy timeout)."""
    url = f"sqlite:///{tmp_path / 'quotacast.db'}"
    board = BoardStore(url)
    try:
        board.write_snapshots([_snapshot("2026-11-09", 0.4, 100.0)], "feasibility")
        with board.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        writer = sqlite3.connect(tmp_path / "quotacast.db", timeout=0.2)
        try:
            writer.execute("BEGIN EXCLUSIVE")
            writer.execute("DELETE FROM board_snapshots")
            assert list(board.snapshots("2026Q4")["p_attain"]) == [0.4]
        finally:
            writer.rollback()
            writer.close()
    finally:
        board.close()


def test_commits_keep_every_submission_and_the_latest_wins(board: BoardStore) -> None:
    start = datetime(2026, 11, 1, 9)
    for i, amount in enumerate((100.0, 80.0, 120.0)):
        submit(board, "2026Q4", "rep", "Ann", amount, "commit", "Ann",
               now=start + timedelta(hours=i))
    submit(board, "2026Q4", "rep", "Ann", 200.0, "best_case", "Ann", now=start)
    submit(board, "2026Q4", "rep", "Bob", 50.0, "commit", "Bob", now=start)
    history = commit_history(board, None, "2026Q4", [("rep", "Ann")])
    assert list(history["amount"]) == [100.0, 200.0, 80.0, 120.0]
    latest = latest_commits(history).set_index("category")
    assert latest.loc["commit", "amount"] == 120.0 and latest.loc["commit", "submissions"] == 3
    assert latest.loc["best_case", "amount"] == 200.0
    with pytest.raises(BadRequest):
        submit(board, "2026Q4", "rep", "Ann", -1.0)
    with pytest.raises(BadRequest):
        submit(board, "2026Q4", "rep", "Ann", 1.0, "pipeline")


# --- trend and what changed on hand-made deals ----------------------------------------------------

def _tables() -> Tables:
    """Four deals of Ann (North A, North) and one of Bob: won, lost, slipped, created."""
    day = pd.Timestamp
    opps = pd.DataFrame({
        "opportunity_id": ["W", "L", "S", "C", "B", "LATE"],
        "owner": ["Ann", "Ann", "Ann", "Ann", "Bob", "Ann"],
        "created_at": [day("2026-09-01"), day("2026-09-01"), day("2026-09-01"),
                       day("2026-11-10"), day("2026-09-01"), day("2026-11-20")],
        "close_date": [day("2026-11-11"), day("2026-11-12"), day("2027-02-01"),
                       day("2026-12-15"), day("2026-11-11"), day("2026-12-20")],
        "stage": ["Won", "Lost", "Proposal", "Prospecting", "Won", "Prospecting"],
        "status": ["won", "lost", "open", "open", "won", "open"],
        "amount": [1000.0, 500.0, 300.0, 200.0, 700.0, 999.0],
    })
    history = pd.DataFrame({
        "opportunity_id": ["W", "L", "S", "S", "B"],
        "stage": ["Proposal", "Proposal", "Proposal", "Proposal", "Proposal"],
        "entered_at": [day("2026-09-01"), day("2026-09-01"), day("2026-09-01"),
                       day("2026-11-13"), day("2026-09-01")],
        "close_date": ["2026-11-20", "2026-11-20", "2026-12-10", "2027-02-01", "2026-11-20"],
    })
    org = pd.DataFrame({"rep": ["Ann", "Bob"], "team": ["North A", "South A"],
                        "region": ["North", "South"], "manager": ["M", "N"]})
    orders = pd.DataFrame({"customer_id": ["c1"], "order_date": [day("2026-01-05")],
                           "amount": [10.0]})
    return Tables({"opportunities": opps, "stage_history": history, "org": org,
                   "orders": orders}, "hand-made")


def test_the_trend_keeps_one_snapshot_per_week(board: BoardStore) -> None:
    for day, p in (("2026-11-02", 0.3), ("2026-11-04", 0.35), ("2026-11-10", 0.5)):
        board.write_snapshots([_snapshot(day, p, 1.0)], "feasibility")
    frame = trend_frame(board, "2026Q4", "company", "all")
    assert [str(d) for d in frame["as_of"]] == ["2026-11-04", "2026-11-10"]
    assert frame["p_attain_delta"].iloc[1] == pytest.approx(0.15)
    assert len(trend_frame(board, "2026Q4", "company", "all", weekly=False)) == 3
    assert default_since(board, "2026Q4", "company", "all", date(2026, 11, 10)) == date(
        2026, 11, 2)


def test_what_changed_sorts_deals_into_groups_and_attributes_the_delta(
        board: BoardStore) -> None:
    tables = _tables()
    board.write_snapshots([_snapshot("2026-11-09", 0.40, 0.0, "Ann", "rep"),
                           _snapshot("2026-11-16", 0.55, 1000.0, "Ann", "rep")], "warnings")
    found = changes_between(tables, board, "2026Q4", "rep", "Ann", date(2026, 11, 9),
                            date(2026, 11, 16))
    kinds = dict(zip(found.deals["opportunity_id"], found.deals["change"], strict=True))
    assert kinds == {"W": "won", "L": "lost", "S": "slipped", "C": "created"}
    assert found.p_attain_delta == pytest.approx(0.15)
    effect = dict(zip(found.deals["opportunity_id"], found.deals["expected_effect"],
                      strict=True))
    share = 200 / 400  # expected pipeline / pipeline in period of the since snapshot
    assert effect == pytest.approx({"W": 1000 * (1 - share), "L": -500 * share,
                                    "S": -300 * share, "C": 200 * share})
    groups = found.groups.set_index("change")
    assert groups["p_attain_effect"].sum() == pytest.approx(0.15)
    assert groups.loc["won", "p_attain_effect"] > 0 > groups.loc["lost", "p_attain_effect"]


def test_what_changed_is_point_in_time(board: BoardStore) -> None:
    """Rows dated on or after `until` appended (a deal created later, a later stage change)
    change nothing of what happened before it."""
    tables = _tables()
    before = changes_between(tables, board, "2026Q4", "team", "North A", date(2026, 11, 9),
                             date(2026, 11, 12))
    frames = dict(tables.frames)
    day = pd.Timestamp
    frames["opportunities"] = pd.concat([frames["opportunities"], pd.DataFrame({
        "opportunity_id": ["NEW"], "owner": ["Ann"], "created_at": [day("2026-11-25")],
        "close_date": [day("2026-12-01")], "stage": ["Won"], "status": ["won"],
        "amount": [5000.0]})], ignore_index=True)
    frames["stage_history"] = pd.concat([frames["stage_history"], pd.DataFrame({
        "opportunity_id": ["C", "NEW"], "stage": ["Proposal", "Won"],
        "entered_at": [day("2026-11-12"), day("2026-11-25")],
        "close_date": ["2027-03-01", "2026-12-01"]})], ignore_index=True)
    after = changes_between(Tables(frames, "appended"), board, "2026Q4", "team", "North A",
                            date(2026, 11, 9), date(2026, 11, 12))
    pd.testing.assert_frame_equal(before.deals, after.deals)
    pd.testing.assert_frame_equal(before.groups, after.groups)
    # At 11-12 the slip (recorded 11-13) and L's loss (on 11-12) are not known yet.
    assert set(before.deals["change"]) == {"won", "created"}
