"""The synthetic company: valid, deterministic, and carrying the signals models must find."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import synthetic as syn
from engine.io import load_tables, validate_tables, write_data_dir
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    COMMITS,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    DUE_DATE,
    ENTERED_AT,
    INTERACTIONS,
    INVENTORY,
    ISSUED_AT,
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
    ORG,
    OWNER,
    PAID_AT,
    PERIOD,
    RECEIVABLES,
    REGION,
    REP,
    SEGMENT,
    SEVERITY,
    STAGE,
    STAGE_HISTORY,
    STATUS,
    STATUS_OPEN,
    STATUS_WON,
    TABLES,
    TARGETS,
    TEAM,
    TIER,
)

END = pd.Timestamp(syn.DEFAULT_END)
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def company() -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    return syn.generate_with_truth("small", seed=42)


@pytest.fixture(scope="module")
def tables(company: tuple[dict[str, pd.DataFrame], pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return company[0]


@pytest.fixture(scope="module")
def truth(company: tuple[dict[str, pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    return company[1]


def _run_rate(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    orders = tables[ORDERS]
    return orders[orders[OPPORTUNITY_ID].isna()].sort_values([CUSTOMER_ID, ORDER_DATE])


# --- contract ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_validates_with_zero_problems(seed: int) -> None:
    _, problems = validate_tables(syn.generate("small", seed=seed))
    assert [str(p) for p in problems] == []


def test_round_trips_through_a_csv_data_directory(tables: dict[str, pd.DataFrame],
                                                  tmp_path: Path) -> None:
    loaded = load_tables(write_data_dir(tables, tmp_path / "demo"))
    assert {name: len(f) for name, f in loaded.frames.items()} == {
        name: len(f) for name, f in tables.items()}


# What the generated company does not simulate (yet): reps' own commits, stock on hand, and
# targets of other tiers or process metrics (its targets are the revenue plan, the defaults).
NOT_SIMULATED_TABLES = {COMMITS, INVENTORY}
DEFAULTED_COLUMNS = {TIER, METRIC}


def test_every_table_with_contract_and_optional_columns(tables: dict[str, pd.DataFrame]) -> None:
    assert set(tables) == set(TABLES) - NOT_SIMULATED_TABLES
    for name in tables:
        missing = set(TABLES[name].columns) - set(tables[name].columns) - DEFAULTED_COLUMNS
        assert not missing, f"{name} lacks {missing}"
        assert len(tables[name]) > 0, name


def test_dates_are_dates_amounts_cents_ids_strings(tables: dict[str, pd.DataFrame]) -> None:
    for name, frame in tables.items():
        spec = TABLES[name]
        for column in spec.columns_of_kind("date"):
            values = frame[column].dropna()
            assert frame[column].dtype == "datetime64[ns]", (name, column)
            assert (values == values.dt.normalize()).all(), (name, column)
        for column in spec.columns_of_kind("id"):
            assert frame[column].dropna().map(type).eq(str).all(), (name, column)
        if AMOUNT in frame.columns:
            cents = frame[AMOUNT] * 100
            assert np.allclose(cents, cents.round(), atol=1e-6), name
    severity = tables[INTERACTIONS][SEVERITY].dropna()
    assert severity.between(1, 4).all() and (severity == severity.round()).all()


def test_same_seed_same_company_other_seed_other_company(
    company: tuple[dict[str, pd.DataFrame], pd.DataFrame],
) -> None:
    again, truth = syn.generate_with_truth("small", seed=42)
    for name, frame in company[0].items():
        pd.testing.assert_frame_equal(frame, again[name], obj=name)
    pd.testing.assert_frame_equal(company[1], truth)
    other = syn.generate("small", seed=43)[ORDERS]
    assert not other[AMOUNT].equals(again[ORDERS][AMOUNT])


def test_custom_size_and_mid_week_end() -> None:
    spec = syn.SizeSpec("tiny", 150, years=2, regions=1, teams_per_region=(1, 1),
                        reps_per_team=(2, 2))
    end = pd.Timestamp(2024, 6, 12)  # a Wednesday: the simulated week runs past it
    tables = syn.generate(spec, seed=5, end=end.date())
    _assert_events_not_after(tables, end)
    assert tables[ORDERS][ORDER_DATE].min() >= pd.Timestamp(2023, 1, 1)
    assert len(tables[ORG]) == 2
    assert validate_tables(tables)[1] == []
    with pytest.raises(ValueError, match="unknown size"):
        syn.generate("huge")


# --- time ------------------------------------------------------------------------------------


def _assert_events_not_after(tables: dict[str, pd.DataFrame], end: pd.Timestamp) -> None:
    """Only forward-looking dates pass the end: expected closes (of open deals, and as recorded
    at each stage change), invoice due dates."""
    forward = {(OPPORTUNITIES, CLOSE_DATE), (OPPORTUNITIES, syn.ORIGINAL_CLOSE_DATE),
               (STAGE_HISTORY, CLOSE_DATE), (RECEIVABLES, DUE_DATE)}
    for name, frame in tables.items():
        for column in frame.select_dtypes("datetime").columns:
            if (name, column) not in forward:
                assert frame[column].max() <= end, (name, column)
    deals = tables[OPPORTUNITIES]
    assert deals.loc[deals[STATUS] != STATUS_OPEN, CLOSE_DATE].max() <= end


def test_events_dated_on_or_before_end(tables: dict[str, pd.DataFrame]) -> None:
    _assert_events_not_after(tables, END)


def test_yearly_and_weekly_seasonality(tables: dict[str, pd.DataFrame]) -> None:
    """On run-rate revenue: won enterprise deals are too lumpy for a small company."""
    orders = _run_rate(tables)
    when = orders[ORDER_DATE]
    full_years = orders[when.dt.year < END.year]
    by_quarter = full_years.groupby([when.dt.year, when.dt.quarter])[AMOUNT].sum().unstack()
    assert (by_quarter[4] / by_quarter[3]).mean() > 1.15
    by_month = full_years.groupby(when.dt.month)[AMOUNT].sum()
    assert by_month[[7, 8]].sum() < 0.97 * by_month[[5, 6]].sum()
    assert (tables[ORDERS][ORDER_DATE].dt.dayofweek >= 5).mean() < 0.05


def test_customer_base_grows(tables: dict[str, pd.DataFrame]) -> None:
    orders = tables[ORDERS]
    active = orders.groupby(orders[ORDER_DATE].dt.year)[CUSTOMER_ID].nunique()
    assert active.is_monotonic_increasing and active.iloc[-1] > 1.05 * active.iloc[0]
    created = tables[CUSTOMERS][CREATED_AT]
    assert (created.dt.year == END.year).sum() > 0.05 * len(created)


def test_revenue_grows_year_on_year() -> None:
    """Needs the demo size: in a small company a few big accounts swing the total."""
    orders = syn.generate("medium", seed=3)[ORDERS]
    yearly = orders.groupby(orders[ORDER_DATE].dt.year)[AMOUNT].sum()
    assert yearly[END.year - 1] > 1.03 * yearly[END.year - 2]


# --- customers and churn -----------------------------------------------------------------------


def test_truth_covers_every_customer(tables: dict[str, pd.DataFrame], truth: pd.DataFrame
                                     ) -> None:
    assert truth[CUSTOMER_ID].tolist() == tables[CUSTOMERS][CUSTOMER_ID].tolist()
    churned = truth[syn.TRUTH_CHURNED]
    assert truth.loc[churned, syn.TRUTH_CHURN_DATE].notna().all()
    assert truth.loc[~churned, syn.TRUTH_CHURN_DATE].isna().all()
    assert set(truth.loc[churned, syn.TRUTH_CAUSE]) <= set(syn.CAUSES)


def test_no_orders_or_interactions_after_churn(tables: dict[str, pd.DataFrame],
                                               truth: pd.DataFrame) -> None:
    churn = truth.set_index(CUSTOMER_ID)[syn.TRUTH_CHURN_DATE]
    for name, column in ((ORDERS, ORDER_DATE), (INTERACTIONS, OCCURRED_AT)):
        frame = tables[name]
        after = frame[column] >= frame[CUSTOMER_ID].map(churn)
        assert not after.any(), name


def test_nothing_happens_to_a_customer_before_it_exists(tables: dict[str, pd.DataFrame]
                                                        ) -> None:
    created = tables[CUSTOMERS].set_index(CUSTOMER_ID)[CREATED_AT]
    for name, column in ((ORDERS, ORDER_DATE), (INTERACTIONS, OCCURRED_AT),
                         (OPPORTUNITIES, CREATED_AT)):
        frame = tables[name]
        assert (frame[column] >= frame[CUSTOMER_ID].map(created)).all(), name


def test_annual_churn_is_plausible(tables: dict[str, pd.DataFrame], truth: pd.DataFrame
                                   ) -> None:
    created = tables[CUSTOMERS][CREATED_AT]
    churn = truth[syn.TRUTH_CHURN_DATE]
    rates = []
    for year in range(END.year - 2, END.year):
        start, stop = pd.Timestamp(year, 1, 1), pd.Timestamp(year + 1, 1, 1)
        alive = (created < start) & ~(churn < start)
        rates.append((alive & (churn < stop)).sum() / alive.sum())
    assert 0.10 < np.mean(rates) < 0.28


def test_most_but_not_all_churners_show_signals(truth: pd.DataFrame) -> None:
    churners = truth[truth[syn.TRUTH_CHURNED]]
    assert 0.6 < churners[syn.TRUTH_SIGNALS].mean() < 0.97
    assert {"silent", "complaints", "stretching_gaps", "spend_decline"} <= set(
        churners[syn.TRUTH_CAUSE])


def _reference_dates(truth: pd.DataFrame) -> pd.Series:
    """Churn date for churners, the day after the end for the others."""
    return truth.set_index(CUSTOMER_ID)[syn.TRUTH_CHURN_DATE].fillna(END + DAY)


def test_churners_complain_more_before_leaving(tables: dict[str, pd.DataFrame],
                                               truth: pd.DataFrame) -> None:
    ref = _reference_dates(truth)
    complaints = tables[INTERACTIONS]
    complaints = complaints[complaints[KIND] == "complaint"]
    before = complaints[OCCURRED_AT] >= complaints[CUSTOMER_ID].map(ref) - 120 * DAY
    counts = complaints[before].groupby(CUSTOMER_ID).size().reindex(ref.index, fill_value=0)
    churned = truth.set_index(CUSTOMER_ID)[syn.TRUTH_CHURNED]
    assert counts[churned].mean() > 2.5 * counts[~churned].mean()


def test_churners_gaps_stretch_and_spend_falls(tables: dict[str, pd.DataFrame],
                                               truth: pd.DataFrame) -> None:
    orders = _run_rate(tables)
    orders = orders.assign(gap=orders.groupby(CUSTOMER_ID)[ORDER_DATE].diff().dt.days)
    by_customer = orders[orders.groupby(CUSTOMER_ID)[ORDER_DATE].transform("size") >= 8]
    grouped = by_customer.groupby(CUSTOMER_ID)
    last_gaps = grouped["gap"].apply(lambda g: g.iloc[-2:].mean())
    stretch = last_gaps / grouped["gap"].median().clip(lower=1)
    spend = grouped[AMOUNT].apply(lambda a: a.iloc[-3:].mean() / a.iloc[:-3].mean())
    churned = truth.set_index(CUSTOMER_ID)[syn.TRUTH_CHURNED].reindex(stretch.index)
    assert stretch[churned].median() > 1.1 * stretch[~churned].median()
    assert spend[churned].median() < 0.9 * spend[~churned].median()


def test_account_managers_work_in_the_customers_region(tables: dict[str, pd.DataFrame]) -> None:
    customers = tables[CUSTOMERS]
    region_of = tables[ORG].set_index(REP)[REGION]
    assert (customers[ACCOUNT_MANAGER].map(region_of) == customers[REGION]).all()
    assert customers[SEGMENT].nunique() == 3
    assert tables[ORG].groupby(TEAM)[REGION].nunique().eq(1).all()


# --- opportunities -----------------------------------------------------------------------------


def test_won_deals_have_one_linked_order_on_the_close_date(tables: dict[str, pd.DataFrame]
                                                          ) -> None:
    deals = tables[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    linked = tables[ORDERS].dropna(subset=[OPPORTUNITY_ID]).set_index(OPPORTUNITY_ID)
    assert linked.index.is_unique
    won = deals[deals[STATUS] == STATUS_WON]
    assert set(linked.index) == set(won.index)
    linked = linked.loc[won.index]
    assert (linked[ORDER_DATE] == won[CLOSE_DATE]).all()
    assert np.allclose(linked[AMOUNT], won[AMOUNT])
    assert (linked[CUSTOMER_ID] == won[CUSTOMER_ID]).all()


def test_stage_history_walks_the_funnel(tables: dict[str, pd.DataFrame]) -> None:
    deals = tables[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    history = tables[STAGE_HISTORY]
    first = history.groupby(OPPORTUNITY_ID).first()
    last = history.groupby(OPPORTUNITY_ID).last()
    assert (first[STAGE] == syn.STAGES[0]).all()
    assert (first[ENTERED_AT] == deals.loc[first.index, CREATED_AT]).all()
    assert (last[STAGE] == deals.loc[last.index, STAGE]).all()
    closed = deals[deals[STATUS] != STATUS_OPEN]
    assert (last.loc[closed.index, ENTERED_AT] == closed[CLOSE_DATE]).all()
    rank = history[STAGE].map({s: i for i, s in enumerate(syn.STAGES)})
    assert (rank.groupby(history[OPPORTUNITY_ID]).diff() < 0).any(), "no regressions"


def test_stage_history_records_the_expected_close_and_its_pushes(
        tables: dict[str, pd.DataFrame]) -> None:
    deals = tables[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    history = tables[STAGE_HISTORY]
    first = history.groupby(OPPORTUNITY_ID).first()
    planned = deals.loc[first.index, syn.ORIGINAL_CLOSE_DATE]
    assert (first[CLOSE_DATE] == planned).all()  # recorded at creation: the plan
    closing = history[history[STAGE] == syn.STAGES[-1]].set_index(OPPORTUNITY_ID)
    assert (closing[CLOSE_DATE] == deals.loc[closing.index, CLOSE_DATE]).all()
    # A change after the planned close pushes it to a month end ahead of that change.
    open_rows = history[history[STAGE] != syn.STAGES[-1]]
    late = open_rows[open_rows[ENTERED_AT] > open_rows[OPPORTUNITY_ID].map(
        deals[syn.ORIGINAL_CLOSE_DATE])]
    assert len(late) > 0
    pushed = late[late[CLOSE_DATE] > late[ENTERED_AT]]
    assert len(pushed) >= 0.8 * len(late)  # all but the stale deals nobody updates
    assert pushed[CLOSE_DATE].dt.is_month_end.all()


def test_win_rate_rises_with_stage_reached(tables: dict[str, pd.DataFrame]) -> None:
    deals = tables[OPPORTUNITIES]
    closed = deals[deals[STATUS] != STATUS_OPEN].set_index(OPPORTUNITY_ID)
    history = tables[STAGE_HISTORY]
    rates = []
    for stage in syn.STAGES[:4]:
        reached = history.loc[history[STAGE] == stage, OPPORTUNITY_ID].unique()
        status = closed[STATUS].reindex(reached).dropna()
        rates.append((status == STATUS_WON).mean())
    assert rates == sorted(rates) and rates[-1] > rates[0] + 0.25


def test_open_pipeline_for_this_and_next_quarter(tables: dict[str, pd.DataFrame]) -> None:
    deals = tables[OPPORTUNITIES]
    open_deals = deals[deals[STATUS] == STATUS_OPEN]
    assert len(open_deals) >= 10
    assert (open_deals[STAGE] != syn.STAGES[-1]).all()
    quarters = open_deals[CLOSE_DATE].dt.to_period("Q")
    this = END.to_period("Q")
    assert (quarters == this).any() and (quarters == this + 1).any()


def test_close_dates_slip(tables: dict[str, pd.DataFrame]) -> None:
    deals = tables[OPPORTUNITIES]
    won = deals[deals[STATUS] == STATUS_WON]
    slip = (won[CLOSE_DATE] - won[syn.ORIGINAL_CLOSE_DATE]).dt.days
    assert slip.median() > 0 and (slip < 0).any()


# --- targets -----------------------------------------------------------------------------------


def _targets_by(tables: dict[str, pd.DataFrame], level: str) -> pd.Series:
    targets = tables[TARGETS]
    return targets[targets[LEVEL] == level].set_index([PERIOD, KEY])[AMOUNT].sort_index()


def test_children_targets_sum_to_their_parent(tables: dict[str, pd.DataFrame]) -> None:
    org = tables[ORG]
    rep = _targets_by(tables, LEVEL_REP)
    team_of = org.set_index(REP)[TEAM]
    region_of = org.drop_duplicates(TEAM).set_index(TEAM)[REGION]
    periods = rep.index.get_level_values(0)
    team = rep.groupby([periods, rep.index.get_level_values(1).map(team_of)]).sum()
    pd.testing.assert_series_equal(team, _targets_by(tables, LEVEL_TEAM), check_names=False)
    region = team.groupby([team.index.get_level_values(0),
                           team.index.get_level_values(1).map(region_of)]).sum()
    pd.testing.assert_series_equal(region, _targets_by(tables, LEVEL_REGION), check_names=False)
    company = region.groupby(level=0).sum()
    assert np.array_equal(company.to_numpy(),
                          _targets_by(tables, LEVEL_COMPANY).droplevel(1)[company.index])


def test_targets_cover_every_period_and_months_add_up(tables: dict[str, pd.DataFrame]) -> None:
    company = _targets_by(tables, LEVEL_COMPANY).droplevel(1)
    for year in range(END.year - 2, END.year + 1):
        months = company[[f"{year}-{m:02d}" for m in range(1, 13)]].to_numpy()
        quarters = company[[f"{year}Q{q}" for q in range(1, 5)]].to_numpy()
        assert np.array_equal(months.reshape(4, 3).sum(axis=1), quarters)
        assert quarters.sum() == company[str(year)]


def test_targets_are_ex_ante_some_easy_some_out_of_reach(tables: dict[str, pd.DataFrame]
                                                         ) -> None:
    """Rep attainment last year, revenue attributed like features/hierarchy does."""
    year = END.year - 1
    orders = tables[ORDERS]
    orders = orders[orders[ORDER_DATE].dt.year == year]
    owner = tables[OPPORTUNITIES].set_index(OPPORTUNITY_ID)[OWNER]
    manager = tables[CUSTOMERS].set_index(CUSTOMER_ID)[ACCOUNT_MANAGER]
    rep = orders[OPPORTUNITY_ID].map(owner).fillna(orders[CUSTOMER_ID].map(manager))
    revenue = orders.groupby(rep)[AMOUNT].sum()
    target = _targets_by(tables, LEVEL_REP).loc[str(year)]
    attainment = revenue.reindex(target.index, fill_value=0) / target
    assert attainment.min() < 0.9 and attainment.max() > 1.05


# --- receivables -------------------------------------------------------------------------------


def test_receivables_pay_late_or_not_at_all(tables: dict[str, pd.DataFrame], truth: pd.DataFrame
                                            ) -> None:
    bills = tables[RECEIVABLES]
    paid = bills.dropna(subset=[PAID_AT])
    assert (paid[PAID_AT] > paid[ISSUED_AT]).all()
    assert (bills[DUE_DATE] - bills[ISSUED_AT]).dt.days.isin([30, 45, 60]).all()
    assert 0 < bills[PAID_AT].isna().mean() < 0.3
    delay = (paid[PAID_AT] - paid[DUE_DATE]).dt.days
    late = paid[CUSTOMER_ID].map(truth.set_index(CUSTOMER_ID)[syn.TRUTH_LATE_PAYER])
    assert delay[late].median() > delay[~late].median() + 14
