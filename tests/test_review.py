"""``quotacast review``: attainment, the gap's causes, checkpoints, process targets, the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.history import export_at
from engine.io import Tables, load_tables, write_data_dir
from engine.periods import default_as_of, period_bounds
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    COMPANY_KEY,
    CUSTOMER_ID,
    DS,
    KEY,
    KIND,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    METRIC,
    OCCURRED_AT,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDERS,
    OWNER,
    PERIOD,
    REGION,
    REP,
    STATUS,
    STATUS_WON,
    TARGETS,
    TEAM,
    TIER,
)
from engine.synthetic import generate
from models.feasibility import P_ATTAIN
from models.feasibility.simulation import (
    CLOSED_TO_DATE,
    EXPECTED,
    EXPECTED_PIPELINE,
    EXPECTED_RUN_RATE,
)
from models.review import (
    ACTUAL,
    ATTAINMENT,
    CALLED_ON,
    CAUSES,
    CHECKPOINT,
    CHURNED,
    DEALS_LOST,
    DEALS_SLIPPED,
    GAP,
    NEW_CUSTOMERS,
    PIPELINE_WON,
    PLANNING_GAP,
    RUN_RATE,
    VS_EXPECTED,
    called_on,
    decompose,
)
from service.usecases.review import ReviewResult, checkpoint_dates, run_review
from service.usecases.review_report import write_report

PERIOD_Q = "2026Q2"
CENT = 0.005


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo company, with a few process targets for the reviewed quarter."""
    frames = generate("small", seed=7)
    extra = pd.DataFrame({
        PERIOD: PERIOD_Q, LEVEL: LEVEL_COMPANY, KEY: COMPANY_KEY,
        AMOUNT: [40.0, 2_000.0, 300.0, 5_000_000.0, 0.9],
        METRIC: ["new_customers", "orders", "visits", "pipeline_created", "retention_rate"],
    })
    levels = pd.DataFrame({PERIOD: PERIOD_Q, LEVEL: ["product", LEVEL_COMPANY],
                           KEY: ["Analytics", COMPANY_KEY], AMOUNT: [3_000_000.0, 8_000_000.0],
                           TIER: ["plan", "must_hit"]})
    frames[TARGETS] = pd.concat([frames[TARGETS], extra, levels], ignore_index=True)
    folder = tmp_path_factory.mktemp("review") / "demo"
    write_data_dir(frames, folder)
    return folder


@pytest.fixture(scope="module")
def demo(demo_dir: Path) -> Tables:
    return load_tables(str(demo_dir))


@pytest.fixture(scope="module")
def reviewed(demo: Tables) -> ReviewResult:
    return run_review(demo, PERIOD_Q, default_as_of(demo), draws=400)


def _revenue(result: ReviewResult) -> pd.DataFrame:
    return result.frame[result.frame[METRIC] == "revenue"]


# --- attainment, computed independently --------------------------------------------------------


def _independent_actuals(demo_dir: Path, period: str) -> pd.DataFrame:
    """Revenue per node straight from the files: orders by order_date (the linked deal's owner,
    else the account manager), won deals no order carries on their close date (the owner)."""
    start, end = period_bounds(period)
    orders = pd.read_csv(demo_dir / "orders.csv", parse_dates=[ORDER_DATE])
    opps = pd.read_csv(demo_dir / "opportunities.csv", parse_dates=[CLOSE_DATE])
    customers = pd.read_csv(demo_dir / "customers.csv")
    org = pd.read_csv(demo_dir / "org.csv").set_index(REP)
    owner = opps.set_index(OPPORTUNITY_ID)[OWNER]
    manager = customers.set_index(CUSTOMER_ID)[ACCOUNT_MANAGER]
    sold = orders[(orders[ORDER_DATE] >= start) & (orders[ORDER_DATE] < end)]
    rep = sold[OPPORTUNITY_ID].map(owner).fillna(sold[CUSTOMER_ID].map(manager))
    carried = set(orders[OPPORTUNITY_ID].dropna())
    won = opps[(opps[STATUS] == STATUS_WON) & ~opps[OPPORTUNITY_ID].isin(carried)
               & (opps[CLOSE_DATE] >= start) & (opps[CLOSE_DATE] < end)]
    rows = pd.DataFrame({REP: pd.concat([rep, won[OWNER]], ignore_index=True),
                         AMOUNT: pd.concat([sold[AMOUNT], won[AMOUNT]], ignore_index=True)})
    rows[TEAM] = rows[REP].map(org[TEAM]).fillna("unassigned")
    rows[REGION] = rows[REP].map(org[REGION]).fillna("unassigned")
    parts = [pd.DataFrame({LEVEL: LEVEL_COMPANY, KEY: [COMPANY_KEY],
                           ACTUAL: [rows[AMOUNT].sum()]})]
    for level in (REGION, TEAM, REP):
        sums = rows.groupby(level)[AMOUNT].sum()
        parts.append(pd.DataFrame({LEVEL: level, KEY: sums.index, ACTUAL: sums.to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def test_attainment_is_actual_over_target_computed_independently(
        demo_dir: Path, reviewed: ReviewResult) -> None:
    expected = _independent_actuals(demo_dir, PERIOD_Q)
    targets = pd.read_csv(demo_dir / "targets.csv")
    plan = targets[(targets[PERIOD] == PERIOD_Q) & targets[METRIC].fillna("revenue").eq(
        "revenue") & targets.get(TIER, pd.Series("plan", index=targets.index)).fillna(
        "plan").eq("plan") & targets[LEVEL].isin(
        [LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM, LEVEL_REP])].groupby([LEVEL, KEY])[AMOUNT].sum()
    got = _revenue(reviewed).set_index([LEVEL, KEY])
    hierarchy = got[got.index.get_level_values(0).isin(
        [LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM, LEVEL_REP])]
    mine = expected.set_index([LEVEL, KEY])[ACTUAL]
    # Every node with revenue is reviewed, with the same actual to the cent.
    assert set(mine.index[mine.abs() > CENT]) <= set(hierarchy.index)
    np.testing.assert_allclose(hierarchy[ACTUAL], mine.reindex(hierarchy.index).fillna(0.0),
                               atol=CENT)
    with_target = hierarchy[hierarchy["target"].notna()]
    assert len(with_target) == len(plan) > 10
    np.testing.assert_allclose(with_target["target"], plan.reindex(with_target.index))
    np.testing.assert_allclose(with_target[ATTAINMENT],
                               mine.reindex(with_target.index) / plan.reindex(with_target.index),
                               rtol=1e-12)
    np.testing.assert_allclose(with_target[GAP], with_target["target"] - with_target[ACTUAL])


def test_a_product_target_and_a_must_hit_tier_are_reviewed(demo_dir: Path,
                                                            reviewed: ReviewResult) -> None:
    start, end = period_bounds(PERIOD_Q)
    orders = pd.read_csv(demo_dir / "orders.csv", parse_dates=[ORDER_DATE])
    sold = orders[(orders[ORDER_DATE] >= start) & (orders[ORDER_DATE] < end)
                  & (orders["product"] == "Analytics")]
    opps = pd.read_csv(demo_dir / "opportunities.csv", parse_dates=[CLOSE_DATE])
    won = opps[(opps[STATUS] == STATUS_WON) & ~opps[OPPORTUNITY_ID].isin(
        set(orders[OPPORTUNITY_ID].dropna())) & (opps[CLOSE_DATE] >= start)
        & (opps[CLOSE_DATE] < end) & (opps["product"] == "Analytics")]
    rows = _revenue(reviewed).set_index([LEVEL, KEY])
    analytics = rows.loc[("product", "Analytics")]
    assert analytics[ACTUAL] == pytest.approx(sold[AMOUNT].sum() + won[AMOUNT].sum())
    assert analytics[ATTAINMENT] == pytest.approx(analytics[ACTUAL] / 3_000_000.0)
    company = rows.loc[(LEVEL_COMPANY, COMPANY_KEY)]
    assert company["target_must_hit"] == 8_000_000.0 and company["target"] != 8_000_000.0


def test_the_causes_add_up_to_the_gap_on_every_node(reviewed: ReviewResult) -> None:
    rows = _revenue(reviewed)
    assert len(rows) > 20
    causes = rows[list(CAUSES)].sum(axis=1)
    assert (causes - (rows[ACTUAL] - rows[EXPECTED])).abs().max() < CENT
    assert (causes - rows[VS_EXPECTED]).abs().max() < CENT
    targeted = rows[rows["target"].notna()]
    assert (targeted[PLANNING_GAP] - causes - targeted[GAP]).abs().max() < CENT
    # Every part of the split is at work on the demo company.
    company = reviewed.company()
    assert all(abs(company[c]) > 1.0 for c in CAUSES)


def test_parents_are_the_sums_of_their_children(reviewed: ReviewResult) -> None:
    rows = _revenue(reviewed)
    company = rows[rows[LEVEL] == LEVEL_COMPANY]
    for level in (LEVEL_REGION, LEVEL_TEAM, LEVEL_REP, "product", "segment", "channel"):
        part = rows[rows[LEVEL] == level]
        assert len(part) >= 2, level
        for column in (ACTUAL, EXPECTED, *CAUSES):
            assert abs(part[column].sum() - company[column].iloc[0]) < 0.01, (level, column)


def test_expected_is_the_outlook_at_the_start(demo: Tables, reviewed: ReviewResult) -> None:
    from service.usecases.feasibility import run_feasibility

    start, _ = period_bounds(PERIOD_Q)
    outlook = run_feasibility(export_at(demo, start), PERIOD_Q, start, draws=400, models={},
                              use_churn=False, levels=["product", "channel", "segment"],
                              all_nodes=True).frame
    company = outlook[outlook[LEVEL] == LEVEL_COMPANY].iloc[0]
    mine = reviewed.company()
    assert mine[EXPECTED] == pytest.approx(
        company[CLOSED_TO_DATE] + company[EXPECTED_PIPELINE] + company[EXPECTED_RUN_RATE])
    assert mine["p_attain_start"] == pytest.approx(company[P_ATTAIN])
    assert mine[PLANNING_GAP] == pytest.approx(company["target"] - mine[EXPECTED])


# --- the decomposition by hand -----------------------------------------------------------------


def test_decompose_places_each_row_in_its_cause() -> None:
    start = pd.Timestamp("2024-04-01")
    node = {REP: "r1", TEAM: "t1", REGION: "North"}
    events = pd.DataFrame([
        {**node, DS: start, AMOUNT: 120.0, CUSTOMER_ID: "c1", OPPORTUNITY_ID: "won"},
        {**node, DS: start, AMOUNT: 10.0, CUSTOMER_ID: "c1", OPPORTUNITY_ID: "lost"},
        {**node, DS: start, AMOUNT: 30.0, CUSTOMER_ID: "c2", OPPORTUNITY_ID: np.nan},
        {**node, DS: start, AMOUNT: 50.0, CUSTOMER_ID: "c3", OPPORTUNITY_ID: "later"},
    ])
    deals = pd.DataFrame([
        {**node, OPPORTUNITY_ID: "won", "expected": 60.0},
        {**node, OPPORTUNITY_ID: "lost", "expected": 25.0},
        {**node, OPPORTUNITY_ID: "slip", "expected": 15.0},
    ])
    outcomes = pd.Series({"won": "won", "lost": "lost", "slip": "slipped"})
    first = pd.Series({"c1": pd.Timestamp("2023-01-01"), "c2": pd.Timestamp("2023-05-01"),
                       "c3": start})
    churned = pd.DataFrame([{**node, AMOUNT: 40.0, CUSTOMER_ID: "c9"}])
    outlook = pd.DataFrame({LEVEL: [LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM, LEVEL_REP],
                            KEY: [COMPANY_KEY, "North", "t1", "r1"], CLOSED_TO_DATE: 0.0,
                            EXPECTED_PIPELINE: 100.0, EXPECTED_RUN_RATE: 70.0})
    frame = decompose(events=events, deals=deals, outcomes=outcomes, first_purchase=first,
                      churned=churned, outlook=outlook, start=start,
                      levels=[LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM, LEVEL_REP])
    assert len(frame) == 4
    for _, row in frame.iterrows():
        assert row[ACTUAL] == 210.0 and row[EXPECTED] == 170.0 and row[VS_EXPECTED] == 40.0
        assert row[PIPELINE_WON] == 120.0 - 60.0
        assert row[DEALS_LOST] == 10.0 - 25.0
        assert row[DEALS_SLIPPED] == -15.0
        assert row[NEW_CUSTOMERS] == 50.0  # a first purchase outside the opening pipeline
        assert row[CHURNED] == -40.0
        # c2's 30 plus what churned c9 used to bring, against the expected run rate of 70
        assert row[RUN_RATE] == 30.0 + 40.0 - 70.0
        assert sum(row[c] for c in CAUSES) == row[VS_EXPECTED]


def test_called_on_is_the_first_checkpoint_from_which_the_call_held() -> None:
    days = pd.to_datetime(["2024-04-01", "2024-05-01", "2024-06-01"])
    trail = pd.DataFrame({
        LEVEL: "rep", KEY: np.repeat(["early", "late", "never", "none"], 3),
        CHECKPOINT: np.tile(days, 4),
        P_ATTAIN: [0.7, 0.8, 0.9, 0.6, 0.3, 0.2, 0.2, 0.6, 0.7, np.nan, np.nan, np.nan]})
    hit = pd.Series([1.0, 0.0, 0.0, np.nan], index=pd.MultiIndex.from_tuples(
        [("rep", "early"), ("rep", "late"), ("rep", "never"), ("rep", "none")]))
    calls = called_on(trail, hit)
    assert calls[("rep", "early")] == days[0]
    assert calls[("rep", "late")] == days[1]
    assert pd.isna(calls[("rep", "never")]) and pd.isna(calls[("rep", "none")])


def test_checkpoints_are_month_starts_weeks_or_evenly_spread() -> None:
    start, end = period_bounds("2024Q2")
    assert checkpoint_dates(start, end) == list(pd.to_datetime(
        ["2024-04-01", "2024-05-01", "2024-06-01"]))
    month = checkpoint_dates(*period_bounds("2024-02"))
    assert month[0] == pd.Timestamp("2024-02-01") and len(month) == 5
    spread = checkpoint_dates(start, end, 6)
    assert len(spread) == 6 and spread[0] == start and spread[-1] < end


def test_the_review_replays_each_checkpoint(reviewed: ReviewResult) -> None:
    trail = reviewed.trail
    assert sorted(trail[CHECKPOINT].unique()) == list(pd.to_datetime(
        ["2026-04-01", "2026-05-01", "2026-06-01"]))
    company = _revenue(reviewed).iloc[0]
    assert company[LEVEL] == LEVEL_COMPANY
    hit = company[ACTUAL] >= company["target"]
    last = trail[(trail[LEVEL] == LEVEL_COMPANY)].sort_values(CHECKPOINT)[P_ATTAIN].iloc[-1]
    assert pd.isna(company[CALLED_ON]) == ((last >= 0.5) != hit)


# --- point in time, process targets, no targets -------------------------------------------------


def test_a_review_as_of_t_ignores_rows_dated_from_t(demo: Tables) -> None:
    as_of = pd.Timestamp("2026-05-20")
    full = run_review(demo, PERIOD_Q, as_of, draws=300)
    before = run_review(export_at(demo, as_of), PERIOD_Q, as_of, draws=300)
    pd.testing.assert_frame_equal(full.frame, before.frame)
    pd.testing.assert_frame_equal(full.trail, before.trail)
    assert not full.finished and full.frame[CALLED_ON].isna().all()
    assert any("still running" in note for note in full.notes)


def test_process_targets_get_their_actuals(demo_dir: Path, reviewed: ReviewResult) -> None:
    start, end = period_bounds(PERIOD_Q)
    rows = reviewed.frame[reviewed.frame[METRIC] != "revenue"].set_index(METRIC)
    assert set(rows.index) == {"new_customers", "orders", "visits", "pipeline_created",
                               "retention_rate"}
    contacts = pd.read_csv(demo_dir / "interactions.csv", parse_dates=[OCCURRED_AT])
    visits = ((contacts[KIND] == "visit") & (contacts[OCCURRED_AT] >= start)
              & (contacts[OCCURRED_AT] < end)).sum()
    assert rows.loc["visits", ACTUAL] == visits > 0
    assert rows.loc["visits", ATTAINMENT] == pytest.approx(visits / 300.0)
    opps = pd.read_csv(demo_dir / "opportunities.csv", parse_dates=["created_at"])
    created = opps.loc[(opps["created_at"] >= start) & (opps["created_at"] < end), AMOUNT]
    assert rows.loc["pipeline_created", ACTUAL] == pytest.approx(created.sum())
    orders = pd.read_csv(demo_dir / "orders.csv", parse_dates=[ORDER_DATE])
    paid = orders[orders[AMOUNT] > 0]
    first = paid.groupby(CUSTOMER_ID)[ORDER_DATE].min()
    # The demo's deals all carry orders, so first purchases are first positive orders.
    assert rows.loc["new_customers", ACTUAL] == ((first >= start) & (first < end)).sum()
    in_q = paid[(paid[ORDER_DATE] >= start) & (paid[ORDER_DATE] < end)]
    assert rows.loc["orders", ACTUAL] >= len(in_q)
    before = paid[(paid[ORDER_DATE] >= start - pd.DateOffset(months=3))
                  & (paid[ORDER_DATE] < start)]
    buyers = set(before[CUSTOMER_ID])
    assert rows.loc["retention_rate", ACTUAL] == pytest.approx(
        len(buyers & set(in_q[CUSTOMER_ID])) / len(buyers), abs=0.02)


def test_without_targets_actuals_and_causes_are_still_reviewed(demo: Tables) -> None:
    frames = {k: v for k, v in demo.frames.items() if k != TARGETS}
    result = run_review(Tables(frames, demo.source, demo.derived), PERIOD_Q,
                        default_as_of(demo), draws=300, checkpoints=1)
    rows = _revenue(result)
    assert not result.has_targets and rows["target"].isna().all()
    assert rows[ATTAINMENT].isna().all() and rows[CALLED_ON].isna().all()
    assert (rows[list(CAUSES)].sum(axis=1) - rows[VS_EXPECTED]).abs().max() < CENT
    assert any("no revenue targets" in note for note in result.notes)


def test_a_period_not_started_is_refused(demo: Tables) -> None:
    with pytest.raises(ValueError, match="nothing to review yet"):
        run_review(demo, "2030Q1", default_as_of(demo))
    with pytest.raises(ValueError, match="ended before the data starts"):
        run_review(demo, "2010Q1", default_as_of(demo))


def test_only_orders_data_has_no_deal_causes(demo: Tables) -> None:
    frames = {k: v for k, v in demo.frames.items()
              if k not in (OPPORTUNITIES, "stage_history", TARGETS)}
    frames[ORDERS] = frames[ORDERS].assign(**{OPPORTUNITY_ID: np.nan})
    result = run_review(Tables(frames), PERIOD_Q, default_as_of(demo), draws=300,
                        checkpoints=1)
    company = result.company()
    assert company[PIPELINE_WON] == company[DEALS_LOST] == company[DEALS_SLIPPED] == 0.0
    assert abs(sum(company[c] for c in CAUSES) - company[VS_EXPECTED]) < CENT
    assert set(result.frame[LEVEL]) >= {LEVEL_COMPANY, LEVEL_REGION}


# --- the report and the command -----------------------------------------------------------------


def test_the_report_has_its_charts(reviewed: ReviewResult, tmp_path: Path) -> None:
    written = write_report(reviewed, tmp_path / "review.md")
    text = written[0].read_text()
    assert "# Review of 2026Q2" in text and "attainment" in text
    charts = [p for p in written if p.suffix == ".png"]
    assert len(charts) == 3
    for chart in charts:
        assert chart.read_bytes()[:4] == b"\x89PNG"
        assert f"]({chart.name})" in text
    trail = pd.read_csv(tmp_path / "review_checkpoints.csv")
    assert len(trail) == len(reviewed.trail) and "review_checkpoints.csv" in text
    page = write_report(reviewed, tmp_path / "review.html")[0].read_text()
    assert page.startswith("<!doctype html>") and "review_waterfall.png" in page


def _run(*args: str) -> object:
    from service.cli.app import app

    return CliRunner().invoke(app, ["review", *args])


def test_the_command_writes_the_table_and_the_report(demo_dir: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "review.csv", tmp_path / "review.md"
    result = _run("--data", str(demo_dir), "--period", PERIOD_Q, "--draws", "300",
                  "--checkpoints", "2", "--out", str(out), "--report", str(report))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    frame = pd.read_csv(out)
    for column in (LEVEL, KEY, "target", ACTUAL, ATTAINMENT, *CAUSES):
        assert column in frame.columns
    assert report.exists() and (tmp_path / "review_waterfall.png").exists()
    assert "top by attainment" in result.output  # type: ignore[attr-defined]


def test_the_command_takes_a_targets_file_and_refuses_a_bad_one(demo_dir: Path,
                                                                 tmp_path: Path) -> None:
    good = tmp_path / "plan.csv"
    pd.DataFrame({PERIOD: [PERIOD_Q], LEVEL: [LEVEL_COMPANY], KEY: [COMPANY_KEY],
                  AMOUNT: [1_000_000.0]}).to_csv(good, index=False)
    out = tmp_path / "review.csv"
    result = _run("--data", str(demo_dir), "--period", PERIOD_Q, "--draws", "200",
                  "--checkpoints", "1", "--targets", str(good), "--out", str(out))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    company = pd.read_csv(out).iloc[0]
    assert company["target"] == 1_000_000.0
    assert company[ATTAINMENT] == pytest.approx(company[ACTUAL] / 1_000_000.0)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({PERIOD: [PERIOD_Q], LEVEL: ["rep"], KEY: ["Nobody"],
                  AMOUNT: ["lots"]}).to_csv(bad, index=False)
    refused = _run("--data", str(demo_dir), "--period", PERIOD_Q, "--targets", str(bad))
    assert refused.exit_code == 2  # type: ignore[attr-defined]
    assert "targets:2: amount" in refused.output  # type: ignore[attr-defined]
    wrong = _run("--data", str(demo_dir), "--period", PERIOD_Q, "--out", str(tmp_path / "x.xlsx"))
    assert wrong.exit_code == 2 and not (tmp_path / "x.xlsx").exists()  # type: ignore
    early = _run("--data", str(demo_dir), "--period", "2030Q1")
    assert early.exit_code == 1 and "nothing to review" in early.output  # type: ignore


@pytest.mark.shared_data
def test_the_command_answers_on_a_real_cut(real_data, tmp_path: Path) -> None:  # type: ignore
    data = real_data("superstore", 12)
    out = tmp_path / "review.csv"
    result = _run("--data", str(data), "--period", "2016Q3", "--draws", "200", "--out", str(out))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    assert "no revenue targets" in result.output  # type: ignore[attr-defined]
    frame = pd.read_csv(out)
    assert (frame[list(CAUSES)].sum(axis=1) - frame[VS_EXPECTED]).abs().max() < CENT


class _Constant:
    """A win model that gives every deal the same probability."""

    def __init__(self, p: float) -> None:
        self.p = p

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"win_probability": self.p}, index=frame.index)


def test_champions_are_used_for_the_outlook_and_the_deals(demo: Tables) -> None:
    from types import SimpleNamespace

    def champion(p: float) -> dict[str, object]:
        return {"win": SimpleNamespace(estimator=_Constant(p), version="9", model_name="fake")}

    never = run_review(demo, PERIOD_Q, default_as_of(demo), draws=200, checkpoints=1,
                       champions=champion(0.0))  # type: ignore[arg-type]
    always = run_review(demo, PERIOD_Q, default_as_of(demo), draws=200, checkpoints=1,
                        champions=champion(1.0))  # type: ignore[arg-type]
    assert any("champion v9 (fake)" in note for note in never.notes)
    # one wording for a missing champion (the outlook's), and the caveat once
    assert sum("no champion churn model" in note for note in never.notes) == 1
    assert sum(note.startswith("champions: the registered") for note in never.notes) == 1
    assert not any(note.startswith(("win: no champion", "churn: no champion registered"))
                   for note in never.notes)
    low, high = never.company(), always.company()
    # Nothing expected of the deals: they only bring what they won; every deal won: the lost
    # and slipped ones cost their whole amount.
    assert low[DEALS_LOST] == low[DEALS_SLIPPED] == 0.0 < low[PIPELINE_WON]
    assert high[DEALS_LOST] < 0 and high[DEALS_SLIPPED] < 0
    assert high[EXPECTED] > low[EXPECTED] and high[ACTUAL] == low[ACTUAL]
    for company in (low, high):
        assert abs(sum(company[c] for c in CAUSES) - company[VS_EXPECTED]) < CENT
    assert not any(note.startswith("pipeline check") for note in [*never.notes,
                                                                   *always.notes])


def test_the_trail_starts_where_the_review_does(reviewed: ReviewResult) -> None:
    trail = reviewed.trail
    start = trail[(trail[CHECKPOINT] == trail[CHECKPOINT].min()) & (trail[LEVEL] == LEVEL_COMPANY)]
    assert start[EXPECTED].iloc[0] == pytest.approx(reviewed.company()[EXPECTED])
    assert start[P_ATTAIN].iloc[0] == pytest.approx(reviewed.company()["p_attain_start"])
