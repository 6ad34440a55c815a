"""The funnel report of a period (features/funnel_report.py) and ``quotacast funnel``.

A hand-made company whose numbers can be counted by hand. Stages a > b > c, then won or lost.
Trailing window of 2024Q2 (2023Q2..2024Q1): r1's 8 deals all go a > b > c (6 won, 2 lost in c);
r2's 8 deals: 4 lost in a, 4 go a > b > c > won. In 2024Q2: r1's 4 deals are lost in a after 5
days and 2 more move a > b and wait in b; r2's 4 deals move a > b after 5 days and wait in b; r1
has one late deal of 500 sitting in a since 2024-06-01.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from engine.io import Tables, validate_tables, write_data_dir
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    ENTERED_AT,
    KEY,
    LEVEL,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    OWNER,
    PRODUCT,
    REGION,
    REP,
    STAGE,
    STATUS,
    TEAM,
)
from features.funnel import HISTORY_MISSING_NOTE, PRIOR_STRENGTH
from features.funnel_report import (
    FUNNEL_COLUMNS,
    MATERIAL_Z,
    MIN_EXITS,
    MIN_RELATIVE_DROP,
    funnel_report,
    material_shortfall,
    report_date,
    trailing_start,
)
from service.cli.funnel import funnel
from service.usecases.funnel import NO_DEALS, bottleneck_lines, run_funnel
from service.usecases.request import BadRequest

T = pd.Timestamp
PERIOD = "2024Q2"
END = T("2024-07-01")

runner = CliRunner()


def _deal(rows: list[tuple], history: list[tuple], deal: str, owner: str, path: list[str],
          start: pd.Timestamp, step: int, outcome: str | None, amount: float,
          product: str = "p1") -> None:
    """One deal entering ``path`` every ``step`` days from ``start``; ``outcome`` (won/lost)
    entered ``step`` days after the last stage, or open (None)."""
    for i, stage in enumerate(path):
        history.append((deal, stage, start + pd.Timedelta(days=i * step)))
    if outcome is None:
        close, stage, status = start + pd.Timedelta(days=90), path[-1], "open"
    else:
        close = start + pd.Timedelta(days=len(path) * step)
        stage, status = outcome, outcome
        history.append((deal, outcome, close))
    rows.append((deal, owner, start, close, stage, status, amount, "c1", product))


def frames() -> dict[str, pd.DataFrame]:
    rows: list[tuple] = []
    history: list[tuple] = []
    base = T("2023-06-01")
    for i in range(8):
        _deal(rows, history, f"t1_{i}", "r1", ["a", "b", "c"], base + pd.Timedelta(days=10 * i),
              10, "won" if i < 6 else "lost", 100.0)
        path = ["a"] if i < 4 else ["a", "b", "c"]
        _deal(rows, history, f"t2_{i}", "r2", path, base + pd.Timedelta(days=10 * i), 10,
              "lost" if i < 4 else "won", 100.0, product="p2")
    spring = T("2024-04-01")
    for i in range(4):
        _deal(rows, history, f"p1_{i}", "r1", ["a"], spring + pd.Timedelta(days=5 * i), 5,
              "lost", 100.0)
        _deal(rows, history, f"p2_{i}", "r2", ["a", "b"], spring + pd.Timedelta(days=5 * i), 5,
              None, 100.0, product="p2")
    for i in range(2):
        _deal(rows, history, f"q1_{i}", "r1", ["a", "b"], spring + pd.Timedelta(days=3 * i), 5,
              None, 100.0)
    _deal(rows, history, "late", "r1", ["a"], T("2024-06-01"), 5, None, 500.0)
    opportunities = pd.DataFrame(rows, columns=[OPPORTUNITY_ID, OWNER, CREATED_AT, CLOSE_DATE,
                                                STAGE, STATUS, AMOUNT, CUSTOMER_ID, PRODUCT])
    return {
        "orders": pd.DataFrame({ORDER_ID: ["1"], CUSTOMER_ID: ["c1"], ORDER_DATE: ["2023-06-01"],
                                AMOUNT: ["10"]}),
        "customers": pd.DataFrame({CUSTOMER_ID: ["c1"], ACCOUNT_MANAGER: ["r1"]}),
        "org": pd.DataFrame({REP: ["r1", "r2"], TEAM: ["t1", "t2"], REGION: ["east", "west"]}),
        "opportunities": _text(opportunities),
        "stage_history": _text(pd.DataFrame(history, columns=[OPPORTUNITY_ID, STAGE,
                                                              ENTERED_AT])),
    }


def _text(frame: pd.DataFrame) -> pd.DataFrame:
    """Dates as ISO text, numbers as text: what a CSV reader hands to validation."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.strftime("%Y-%m-%d")
        else:
            out[column] = out[column].astype(str)
    return out


def tables_of(raw: dict[str, pd.DataFrame]) -> Tables:
    tables, problems = validate_tables({k: v.copy() for k, v in raw.items()})
    assert problems == []
    return tables


@pytest.fixture(scope="module")
def tables() -> Tables:
    return tables_of(frames())


def row(frame: pd.DataFrame, level: str, key: str, stage: str) -> pd.Series:
    found = frame[(frame[LEVEL] == level) & (frame[KEY] == key) & (frame[STAGE] == stage)]
    assert len(found) == 1
    return found.iloc[0]


def test_report_has_the_contract_columns_and_stages_in_funnel_order(tables: Tables) -> None:
    report = funnel_report(tables, PERIOD, END)
    frame = report.frame
    assert list(frame.columns) == FUNNEL_COLUMNS
    for column in ("level", "key", "stage", "conversion", "trailing_conversion", "median_days",
                   "open_deals"):
        assert column in frame.columns
    company = frame[frame[LEVEL] == "company"]
    assert company[STAGE].tolist() == ["a", "b", "c"]  # won and lost are outcomes, not stages
    assert set(frame[LEVEL]) == {"company", "region", "team", "rep"}
    assert report.notes == []


def test_conversion_in_the_period_counts_the_exits_that_moved_forward(tables: Tables) -> None:
    frame = funnel_report(tables, PERIOD, END).frame
    company, r1, r2 = (row(frame, "company", "all", "a"), row(frame, "rep", "r1", "a"),
                       row(frame, "rep", "r2", "a"))
    assert (company["exits"], r1["exits"], r2["exits"]) == (10, 6, 4)
    assert company["conversion"] == pytest.approx(6 / 10)
    assert r1["conversion"] == pytest.approx(2 / 6) and r2["conversion"] == 1.0
    assert company["median_days"] == pytest.approx(5.0)
    # c: nobody left it in the period
    assert row(frame, "company", "all", "c")["exits"] == 0
    assert pd.isna(row(frame, "company", "all", "c")["conversion"])


def test_trailing_conversion_is_shrunk_towards_the_company(tables: Tables) -> None:
    frame = funnel_report(tables, PERIOD, END).frame
    company = row(frame, "company", "all", "a")
    assert company["trailing_exits"] == 16
    assert company["trailing_conversion"] == pytest.approx(12 / 16)
    r1, r2 = row(frame, "rep", "r1", "a"), row(frame, "rep", "r2", "a")
    k = PRIOR_STRENGTH
    assert r1["trailing_conversion"] == pytest.approx((8 + k * 0.75) / (8 + k))  # own 8/8 = 1
    assert r2["trailing_conversion"] == pytest.approx((4 + k * 0.75) / (8 + k))  # own 4/8
    assert row(frame, "rep", "r1", "c")["trailing_conversion"] == pytest.approx(
        (6 + k * 10 / 12) / (8 + k))


def test_open_deals_their_amount_and_aging(tables: Tables) -> None:
    frame = funnel_report(tables, PERIOD, END).frame
    b = row(frame, "company", "all", "b")
    assert (b["open_deals"], b["open_amount"]) == (6, 600.0)
    late = row(frame, "rep", "r1", "a")
    assert (late["open_deals"], late["open_amount"]) == (1, 500.0)
    assert late["open_median_age_days"] == pytest.approx(30.0)
    assert late["stage_p90_days"] == pytest.approx(10.0)  # visits to a last 10 or 5 days
    assert late["open_aged_share"] == 1.0
    assert row(frame, "rep", "r2", "a")["open_deals"] == 0  # the grid: every stage per node


def test_bottleneck_is_the_stage_converting_below_trailing_with_value_stuck(
        tables: Tables) -> None:
    frame = funnel_report(tables, PERIOD, END).frame
    marked = frame[frame["bottleneck"]]
    assert set(zip(marked[LEVEL], marked[KEY], marked[STAGE], strict=True)) == {
        ("region", "east", "a"), ("team", "t1", "a"), ("rep", "r1", "a")}
    # the company's a: 60% on 10 exits vs 75%, 1.1 standard errors: noise, not a bottleneck
    company = row(frame, "company", "all", "a")
    assert company["shortfall"] > 0 and company["bottleneck_score"] > 0
    assert company["shortfall_z"] == pytest.approx(0.15 / (0.75 * 0.25 / 10) ** 0.5)
    k = PRIOR_STRENGTH
    trailing = (8 + k * 0.75) / (8 + k)
    assert row(frame, "rep", "r1", "a")["shortfall"] == pytest.approx(
        trailing - (2 + k * trailing) / (6 + k))
    # r2 converts better than usual: no bottleneck although 400 waits in b
    assert not frame[(frame[KEY] == "r2")]["bottleneck"].any()
    lines = bottleneck_lines(frame)
    assert len(lines) == 3
    assert lines[-1].startswith("rep r1: bottleneck a: conversion 33% (6 exits) vs trailing 86% "
                                "(3.7 standard errors below)")


@pytest.mark.parametrize(("exits", "conversion", "trailing", "material"), [
    (50, 0.73, 0.753, False),   # two deals fewer than usual out of fifty: noise
    (50, 0.62, 0.753, True),    # 13 points, 2.2 standard errors
    (4, 0.0, 0.8, False),       # too few exits to tell
    (1000, 0.70, 0.75, False),  # beyond noise, but only 7% below the usual rate
    (8, 0.38, 0.69, False),     # 31 points on 8 exits: 1.9 standard errors
    (6, 0.5, 1.0, True),        # a stage that always converted: no noise
    (30, 0.9, 0.7, False),      # better than usual
])
def test_a_shortfall_is_material_with_enough_exits_a_real_drop_and_beyond_noise(
        exits: int, conversion: float, trailing: float, material: bool) -> None:
    z, flagged = material_shortfall(pd.Series([exits]), pd.Series([conversion]),
                                    pd.Series([trailing]))
    assert bool(flagged.iloc[0]) is material
    assert bool(z.iloc[0] > 0) is (conversion < trailing)
    assert MIN_EXITS == 5 and MIN_RELATIVE_DROP == 0.10 and MATERIAL_Z == 2.0


def test_a_tiny_shortfall_with_value_stuck_is_not_a_bottleneck() -> None:
    """Before the materiality rule any stage a little below its trailing rate with open value
    was the bottleneck: here 10 of 12 exits forward against 12 of 13 before."""
    raw = frames()
    rows: list[tuple] = []
    history: list[tuple] = []
    base, spring = T("2023-06-01"), T("2024-04-01")
    for i in range(13):
        _deal(rows, history, f"x{i}", "r2", ["a", "b"] if i else ["a"],
              base + pd.Timedelta(days=20 * i), 5, "won" if i else "lost", 10.0, product="p2")
    for i in range(12):
        _deal(rows, history, f"y{i}", "r2", ["a", "b"] if i > 1 else ["a"],
              spring + pd.Timedelta(days=4 * i), 3, "won" if i > 1 else "lost", 10.0,
              product="p2")
    _deal(rows, history, "stuck", "r2", ["a"], T("2024-06-20"), 5, None, 900.0, product="p2")
    raw["opportunities"] = _text(pd.DataFrame(rows, columns=list(raw["opportunities"].columns)))
    raw["stage_history"] = _text(pd.DataFrame(history, columns=[OPPORTUNITY_ID, STAGE,
                                                                ENTERED_AT]))
    frame = funnel_report(tables_of(raw), PERIOD, END).frame
    a = row(frame, "rep", "r2", "a")
    assert a["exits"] == 12 and a["conversion"] == pytest.approx(10 / 12)
    assert a["shortfall"] > 0 and a["open_amount"] == 900.0  # what used to flag it
    assert not frame["bottleneck"].any()


def test_product_level_on_request(tables: Tables) -> None:
    frame = funnel_report(tables, PERIOD, END, levels=["company", "product"]).frame
    assert set(frame[LEVEL]) == {"company", "product"}
    assert row(frame, "product", "p2", "b")["open_deals"] == 4


def test_point_in_time_later_rows_change_nothing(tables: Tables) -> None:
    when = T("2024-05-10")
    before = funnel_report(tables, PERIOD, when).frame
    raw = frames()
    opps, history = raw["opportunities"].copy(), raw["stage_history"].copy()
    # After T: the late deal... r2's open deals move to c and are won, a new deal appears.
    moved = opps[OPPORTUNITY_ID].str.startswith("p2_")
    opps.loc[moved, [STAGE, STATUS, CLOSE_DATE]] = ["won", "won", "2024-06-20"]
    later = [(i, "c", "2024-05-20") for i in opps.loc[moved, OPPORTUNITY_ID]]
    later += [(i, "won", "2024-06-20") for i in opps.loc[moved, OPPORTUNITY_ID]]
    later += [("new", "a", "2024-05-10")]
    new = pd.DataFrame([("new", "r1", "2024-05-10", "2024-08-01", "a", "open", "900", "c1",
                         "p1")], columns=opps.columns)
    raw["opportunities"] = pd.concat([opps, new], ignore_index=True)
    raw["stage_history"] = pd.concat([history, pd.DataFrame(later, columns=history.columns)],
                                     ignore_index=True)
    after = funnel_report(tables_of(raw), PERIOD, when).frame
    pd.testing.assert_frame_equal(before, after)
    # and the later data does see them
    assert not funnel_report(tables_of(raw), PERIOD, END).frame.equals(
        funnel_report(tables, PERIOD, END).frame)


def test_a_finished_period_is_seen_at_its_end(tables: Tables) -> None:
    assert report_date(PERIOD, T("2024-09-15")) == END
    assert report_date(PERIOD, T("2024-05-15")) == T("2024-05-15")
    assert trailing_start(PERIOD) == T("2023-04-01")
    assert trailing_start("2024-05") == T("2024-01-01")
    pd.testing.assert_frame_equal(funnel_report(tables, PERIOD, T("2024-09-15")).frame,
                                  funnel_report(tables, PERIOD, END).frame)


def test_without_stage_history_open_deals_only_and_a_note() -> None:
    raw = frames()
    del raw["stage_history"]
    report = funnel_report(tables_of(raw), PERIOD, END)
    assert HISTORY_MISSING_NOTE in report.notes
    assert report.frame["conversion"].isna().all()
    assert row(report.frame, "company", "all", "b")["open_deals"] == 6
    assert not report.frame["bottleneck"].any()


def test_without_stage_history_before_the_snapshot_nothing_is_known() -> None:
    raw = frames()
    del raw["stage_history"]
    report = funnel_report(tables_of(raw), PERIOD, T("2024-05-01"))
    assert report.frame.empty and list(report.frame.columns) == FUNNEL_COLUMNS
    assert any("have no known stage" in note for note in report.notes)


def test_no_opportunities_is_refused_in_plain_words() -> None:
    raw = frames()
    orders_only = tables_of({"orders": raw["orders"], "customers": raw["customers"]})
    with pytest.raises(BadRequest, match="no opportunities table: the funnel needs deals"):
        run_funnel(orders_only, PERIOD, END)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = None

    app.command("funnel")(funnel)
    return app


def test_cli_writes_the_table_the_bottlenecks_and_the_plot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_data_dir(frames(), data)
    out, plot = tmp_path / "funnel.csv", tmp_path / "funnel.png"
    result = runner.invoke(_app(), ["funnel", "--data", str(data), "--period", PERIOD,
                                    "--levels", "company,rep,product", "--out", str(out),
                                    "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "rep r1: bottleneck a" in result.output
    written = pd.read_csv(out)
    assert list(written.columns) == FUNNEL_COLUMNS
    assert set(written[LEVEL]) == {"company", "rep", "product"}
    assert plot.stat().st_size > 1000


def test_cli_refuses_data_without_deals_and_unknown_levels(tmp_path: Path) -> None:
    raw = frames()
    data = tmp_path / "orders-only"
    write_data_dir({"orders": raw["orders"], "customers": raw["customers"]}, data)
    result = runner.invoke(_app(), ["funnel", "--data", str(data)])
    assert result.exit_code == 1
    assert NO_DEALS[:40] in " ".join(result.output.split())
    full = tmp_path / "full"
    write_data_dir(frames(), full)
    result = runner.invoke(_app(), ["funnel", "--data", str(full), "--levels", "channel"])
    assert result.exit_code == 2
    assert "unknown level" in result.output
    result = runner.invoke(_app(), ["funnel", "--data", str(full), "--plot", "f.txt"])
    assert result.exit_code == 2 and "expected a .png" in result.output
