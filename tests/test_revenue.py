"""Revenue attribution (features/hierarchy.py) and revenue series (features/revenue.py)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import schemas
from engine.io import Tables, validate_tables
from engine.periods import period_bounds
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CHANNEL,
    CLOSE_DATE,
    COMPANY_KEY,
    CREATED_AT,
    CUSTOMER_ID,
    DS,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    OWNER,
    PRODUCT,
    REGION,
    REP,
    SEGMENT,
    STAGE,
    STATUS,
    TEAM,
    Y,
)
from features.hierarchy import UNASSIGNED, attribute_revenue, rep_hierarchy
from features.revenue import (
    PARTIAL,
    data_end_of,
    data_granularity,
    period_ordinals,
    period_starts,
    revenue_series,
)

T = pd.Timestamp

ORG = pd.DataFrame({
    REP: ["ann", "bob", "cid", "dee"],
    TEAM: ["north-a", "north-a", "north-b", "south-a"],
    REGION: ["north", "north", "north", "south"],
})
CUSTOMERS = pd.DataFrame({
    CUSTOMER_ID: ["c1", "c2", "c3", "c4"],
    ACCOUNT_MANAGER: ["ann", "dee", None, "bob"],
    REGION: ["east", "west", "west", "east"],
    SEGMENT: ["smb", "enterprise", "smb", None],
})
# o1: won, carried by order 4 -> revenue on the order, owner cid (not c2's manager dee).
# o2: won, no order -> 70 on its close date 2017-02-15, owner bob.
# o3: lost -> no revenue; o4: won with a close date after every order -> 5 on 2017-03-31.
OPPORTUNITIES = pd.DataFrame({
    OPPORTUNITY_ID: ["o1", "o2", "o3", "o4"],
    OWNER: ["cid", "bob", "ann", "dee"],
    CREATED_AT: ["2016-12-01", "2017-01-01", "2017-01-01", "2017-01-01"],
    CLOSE_DATE: ["2017-03-01", "2017-02-15", "2017-02-20", "2017-03-31"],
    STAGE: ["won", "won", "lost", "won"],
    STATUS: ["won", "won", "lost", "won"],
    AMOUNT: ["40", "70", "90", "5"],
    CUSTOMER_ID: ["c2", "c1", "c1", "c4"],
    PRODUCT: ["gadget", None, "gadget", "widget"],
})
ORDERS = pd.DataFrame({
    ORDER_ID: ["1", "2", "3", "4", "5", "6"],
    CUSTOMER_ID: ["c1", "c1", "c3", "c2", "c4", "c1"],
    ORDER_DATE: ["2017-01-05", "2017-03-20", "2017-01-10", "2017-03-10", "2017-03-02",
                   "2017-03-15"],
    AMOUNT: ["100", "10", "20", "50", "30", "-15"],
    PRODUCT: ["widget", "widget", "gadget", "gadget", None, "widget"],
    CHANNEL: ["web", "web", "direct", "direct", "web", "web"],
    OPPORTUNITY_ID: [None, None, None, "o1", None, None],
})


def tables_of(**frames: pd.DataFrame) -> Tables:
    """Validated tables from raw frames (fails the test on any problem)."""
    tables, problems = validate_tables({name: frame.copy() for name, frame in frames.items()})
    assert problems == []
    return tables


@pytest.fixture
def tables() -> Tables:
    return tables_of(orders=ORDERS, customers=CUSTOMERS, opportunities=OPPORTUNITIES, org=ORG)


def series_of(series: pd.DataFrame, level: str, key: str) -> pd.Series:
    rows = series[(series[LEVEL] == level) & (series[KEY] == key)]
    return pd.Series(rows[Y].to_numpy(), index=pd.DatetimeIndex(rows[DS]))


# --- period helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(("period", "start", "end"), [
    ("2017", "2017-01-01", "2018-01-01"),
    ("2017Q3", "2017-07-01", "2017-10-01"),
    ("2017Q4", "2017-10-01", "2018-01-01"),
    ("2017-08", "2017-08-01", "2017-09-01"),
    ("2017-12", "2017-12-01", "2018-01-01"),
])
def test_period_bounds(period: str, start: str, end: str) -> None:
    assert period_bounds(period) == (T(start), T(end))


@pytest.mark.parametrize("bad", ["17Q3", "2017Q5", "2017-13", "2017-8", "Q3"])
def test_period_bounds_rejects_bad_periods(bad: str) -> None:
    with pytest.raises(ValueError, match="2017Q3"):
        period_bounds(bad)


def test_period_ordinals_start_weeks_on_monday_and_quarters_on_the_first() -> None:
    dates = pd.to_datetime(["2017-01-01", "2017-01-02", "2017-01-08", "2017-08-31"]).to_numpy()
    weeks = period_starts(period_ordinals(dates, "W"), "W")
    assert list(pd.DatetimeIndex(weeks)) == [T("2016-12-26"), T("2017-01-02"), T("2017-01-02"),
                                             T("2017-08-28")]
    quarters = period_starts(period_ordinals(dates, "Q"), "Q")
    assert pd.DatetimeIndex(quarters)[-1] == T("2017-07-01")
    with pytest.raises(ValueError, match="freq"):
        period_ordinals(dates, "Y")


# --- hierarchy and attribution ----------------------------------------------------------------


def test_rep_hierarchy_puts_reps_without_org_row_in_unassigned() -> None:
    customers = CUSTOMERS.copy()
    customers[ACCOUNT_MANAGER] = ["ann", "dee", None, "zed"]
    org = ORG[ORG[REP] != "bob"]
    tables = Tables({schemas.CUSTOMERS: customers, schemas.OPPORTUNITIES: OPPORTUNITIES,
                     schemas.ORG: org})
    hierarchy = rep_hierarchy(tables).set_index(REP)
    assert hierarchy.loc["ann", TEAM] == "north-a"
    for orphan in ("bob", "zed"):  # an owner and an account manager missing from org
        assert tuple(hierarchy.loc[orphan]) == (UNASSIGNED, UNASSIGNED)
    assert len(hierarchy) == 5


def test_attribute_revenue_follows_the_attribution_rule(tables: Tables) -> None:
    events = attribute_revenue(tables).sort_values([DS, AMOUNT]).reset_index(drop=True)
    north_a, north_b = ("north-a", "north"), ("north-b", "north")
    rows = [
        ("c1", "2017-01-05", 100.0, "ann", *north_a, None),  # the account manager's
        ("c3", "2017-01-10", 20.0, UNASSIGNED, UNASSIGNED, UNASSIGNED, None),  # no manager
        ("c1", "2017-02-15", 70.0, "bob", *north_a, "o2"),  # a won deal without order
        ("c4", "2017-03-02", 30.0, "bob", *north_a, None),
        ("c2", "2017-03-10", 50.0, "cid", *north_b, "o1"),  # linked: the deal owner's
        ("c1", "2017-03-15", -15.0, "ann", *north_a, None),  # a credit note
        ("c1", "2017-03-20", 10.0, "ann", *north_a, None),
        ("c4", "2017-03-31", 5.0, "dee", "south-a", "south", "o4"),
    ]
    columns = [CUSTOMER_ID, DS, AMOUNT, REP, TEAM, REGION, OPPORTUNITY_ID]
    expected = pd.DataFrame(rows, columns=columns).astype({DS: "datetime64[ns]"})
    got = events[columns].astype({c: object for c in (REP, TEAM, REGION)})
    pd.testing.assert_frame_equal(got, expected)


def value_at(events: pd.DataFrame, amount: float, column: str) -> object:
    """The ``column`` of the one event of ``amount``."""
    return events.loc[events[AMOUNT] == amount, column].item()


def test_attribute_revenue_carries_categorical_columns(tables: Tables) -> None:
    events = attribute_revenue(tables)
    assert {PRODUCT, CHANNEL, SEGMENT} <= set(events.columns)
    assert ORDER_ID not in events.columns and events.columns.is_unique
    assert value_at(events, 50.0, SEGMENT) == "enterprise"  # from the customer
    assert value_at(events, 5.0, PRODUCT) == "widget"  # a won deal's own product
    assert events.loc[events[AMOUNT] == 70.0, CHANNEL].isna().all()  # deals have none
    assert list(attribute_revenue(tables, columns=[SEGMENT]).columns)[-1] == SEGMENT


def test_won_deal_counts_once_whether_or_not_an_order_carries_it(tables: Tables) -> None:
    events = attribute_revenue(tables)
    assert events[AMOUNT].sum() == pytest.approx(100 + 10 + 20 + 50 + 30 - 15 + 70 + 5)
    assert (events[OPPORTUNITY_ID] == "o1").sum() == 1  # the order, not the deal's 40
    assert not (events[OPPORTUNITY_ID] == "o3").any()  # lost


def test_won_deal_is_matched_only_against_orders_seen_before_as_of(tables: Tables) -> None:
    # On 2017-03-05 o1 is won (2017-03-01) but its order (2017-03-10) is not there yet.
    early = attribute_revenue(tables, as_of=T("2017-03-05")).set_index(OPPORTUNITY_ID)
    assert early.loc["o1", AMOUNT] == 40.0
    assert early.loc["o1", DS] == T("2017-03-01")
    assert early[DS].max() < T("2017-03-05")
    late = attribute_revenue(tables, as_of=T("2017-03-11")).set_index(OPPORTUNITY_ID)
    assert late.loc["o1", AMOUNT] == 50.0


def test_crm_only_won_deals_make_revenue() -> None:
    orders = ORDERS.iloc[:1].assign(**{AMOUNT: "0"})
    tables = tables_of(orders=orders, opportunities=OPPORTUNITIES, org=ORG)
    series = revenue_series(tables, "M", levels=[LEVEL_COMPANY])
    assert series[Y].tolist() == [0.0, 70.0, 45.0]


# --- revenue series -------------------------------------------------------------------------------


def test_monthly_series_by_hand(tables: Tables) -> None:
    series = revenue_series(tables, "M")
    months = pd.DatetimeIndex(["2017-01-01", "2017-02-01", "2017-03-01"])
    assert series_of(series, LEVEL_COMPANY, COMPANY_KEY).to_dict() == dict(
        zip(months, [120.0, 70.0, 80.0], strict=True))
    assert series_of(series, LEVEL_REP, "bob").to_dict() == dict(
        zip(months[1:], [70.0, 30.0], strict=True))
    assert series_of(series, LEVEL_REGION, "south").to_dict() == {months[2]: 5.0}
    assert list(series.columns) == [LEVEL, KEY, DS, Y, PARTIAL]
    assert series[LEVEL].unique().tolist() == list(HIERARCHY_LEVELS)


def test_series_starts_at_first_revenue_and_fills_gaps_with_zero(tables: Tables) -> None:
    series = revenue_series(tables, "W")
    cid = series_of(series, LEVEL_REP, "cid")
    assert cid.index[0] == T("2017-03-06")  # no padding back to the company's first week
    company = series_of(series, LEVEL_COMPANY, COMPANY_KEY)
    assert company.index[0] == T("2017-01-02") and company.index[-1] == T("2017-03-27")
    assert len(company) == 13 and (company == 0).sum() == 5  # every week present
    dee = series_of(series, LEVEL_REP, "dee")
    assert dee.tolist() == [5.0]


@pytest.mark.parametrize("freq", ["D", "W", "M", "Q"])
def test_levels_add_up_to_the_company(tables: Tables, freq: str) -> None:
    series = revenue_series(tables, freq, levels=[*HIERARCHY_LEVELS, PRODUCT, SEGMENT])
    totals = series.pivot_table(index=DS, columns=LEVEL, values=Y, aggfunc="sum")
    for level in totals.columns:
        np.testing.assert_allclose(totals[level], totals[LEVEL_COMPANY], err_msg=level)
    assert totals[LEVEL_COMPANY].sum() == pytest.approx(270.0)


def test_missing_categories_are_unassigned_and_unknown_levels_rejected(tables: Tables) -> None:
    series = revenue_series(tables, "Q", levels=[PRODUCT, SEGMENT])
    by_key = series.groupby([LEVEL, KEY])[Y].sum()
    assert by_key[(PRODUCT, UNASSIGNED)] == 100.0  # the order without product + deal o2
    assert by_key[(SEGMENT, UNASSIGNED)] == 35.0  # customer c4 has no segment
    with pytest.raises(ValueError, match="colour"):
        revenue_series(tables, "M", levels=["colour"])


@pytest.mark.parametrize(("as_of", "partial"), [
    (None, False),  # the data ends on 2017-03-31, the last day of March
    ("2017-03-16", True),
    ("2017-04-01", False),
    ("2017-04-02", True),  # April has begun: a partial, zero-filled April
])
def test_last_period_is_marked_partial(tables: Tables, as_of: str | None, partial: bool) -> None:
    series = revenue_series(tables, "M", as_of=None if as_of is None else T(as_of))
    last = series[DS] == series[DS].max()
    assert series.loc[last, PARTIAL].eq(partial).all()
    assert not series.loc[~last, PARTIAL].any()


def test_partial_without_as_of_follows_the_last_day_of_data() -> None:
    tables = tables_of(orders=ORDERS.iloc[:5], customers=CUSTOMERS, org=ORG)  # ends 2017-03-20
    series = revenue_series(tables, "M")
    assert series.loc[series[DS] == T("2017-03-01"), PARTIAL].all()
    weekly = revenue_series(tables, "W")  # 2017-03-20 is a Monday: its week has just begun
    assert weekly.loc[weekly[DS] == T("2017-03-20"), PARTIAL].all()


def test_as_of_keeps_only_earlier_revenue(tables: Tables) -> None:
    series = revenue_series(tables, "M", as_of=T("2017-03-05"))
    company = series_of(series, LEVEL_COMPANY, COMPANY_KEY)
    assert company.tolist() == [120.0, 70.0, 30.0 + 40.0]  # c4's order and o1 without order yet
    assert series_of(series, LEVEL_REP, "dee").empty
    assert revenue_series(tables, "M", as_of=T("2016-01-01")).empty


def test_region_falls_back_to_customer_region_without_org() -> None:
    tables = tables_of(orders=ORDERS, customers=CUSTOMERS)
    series = revenue_series(tables, "Q", levels=[LEVEL_REGION, LEVEL_TEAM])
    regions = series[series[LEVEL] == LEVEL_REGION].set_index(KEY)[Y]
    assert regions.to_dict() == {"east": 125.0, "west": 70.0}
    teams = series[series[LEVEL] == LEVEL_TEAM]
    assert teams[KEY].tolist() == [UNASSIGNED]


# --- point in time ------------------------------------------------------------------------------

_DATES = st.dates(min_value=pd.Timestamp("2016-06-01").date(),
                  max_value=pd.Timestamp("2017-06-30").date())
_LATE_ORDER = st.tuples(st.integers(0, 60), st.sampled_from(["c1", "c2", "c3", "c4"]),
                        st.floats(-50, 500, allow_nan=False), st.sampled_from([None, "o1", "o2"]))


_BASE = tables_of(orders=ORDERS, customers=CUSTOMERS, opportunities=OPPORTUNITIES, org=ORG)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(as_of=_DATES, late=st.lists(_LATE_ORDER, max_size=5), freq=st.sampled_from(["W", "M"]))
def test_rows_dated_on_or_after_as_of_change_nothing(as_of: date, late: list[tuple],
                                                     freq: str) -> None:
    cutoff = pd.Timestamp(as_of)
    extra = pd.DataFrame({
        ORDER_ID: [f"late{i}" for i in range(len(late))],
        CUSTOMER_ID: [c for _, c, _, _ in late],
        ORDER_DATE: [cutoff + pd.Timedelta(days=d) for d, _, _, _ in late],
        AMOUNT: [float(a) for _, _, a, _ in late],
        OPPORTUNITY_ID: [o for _, _, _, o in late],
    })
    orders = _BASE[schemas.ORDERS]
    if late:
        orders = pd.concat([orders, extra.astype({ORDER_DATE: "datetime64[ns]"})],
                           ignore_index=True)
    grown = Tables({**_BASE.frames, schemas.ORDERS: orders})
    before = revenue_series(_BASE, freq, as_of=cutoff)
    after = revenue_series(grown, freq, as_of=cutoff)
    pd.testing.assert_frame_equal(before, after)


# --- the data's own granularity and where it ends ---------------------------------------------


def monthly_dates(dated: str, months: int = 24, start: str = "2018-01-01") -> pd.Series:
    """One date per month at the start, the middle or the end of the month."""
    firsts = pd.date_range(start, periods=months, freq="MS")
    shift = {"start": pd.Timedelta(0), "mid": pd.Timedelta(days=14)}
    return pd.Series(firsts + pd.offsets.MonthEnd(0) if dated == "end" else firsts + shift[dated])


@pytest.mark.parametrize("dated", ["start", "mid", "end"])
def test_one_row_per_month_is_monthly_data_wherever_it_is_dated(dated: str) -> None:
    dates = monthly_dates(dated).to_numpy()
    assert data_granularity(dates) == "M"
    end = data_end_of(dates, "M")  # default as-of: the day after the last row
    assert not end.partial and end.covered == 1.0
    assert end.last_start("M") == T("2019-12-01")
    assert end.first_open("M") == T("2020-01-01")
    assert data_end_of(dates, "Q").first_open("Q") == T("2020-01-01")


def test_granularity_of_weeks_quarters_and_transactions() -> None:
    assert data_granularity(pd.date_range("2020-01-05", periods=30, freq="W-SUN").to_numpy()) == "W"
    assert data_granularity(pd.date_range("2015-03-31", periods=12, freq="QE").to_numpy()) == "Q"
    rng = np.random.default_rng(0)
    # Sparse transactions, about one a month on random days: not monthly data.
    days = pd.Timestamp("2020-01-01") + pd.to_timedelta(np.sort(rng.choice(700, 24, False)), "D")
    assert data_granularity(days.to_numpy()) == "D"
    assert data_granularity(pd.date_range("2020-01-01", periods=90).to_numpy()) == "D"


def test_monthly_data_cannot_be_forecast_weekly() -> None:
    with pytest.raises(ValueError, match="one row per month: forecast at --freq M or Q, not W"):
        data_end_of(monthly_dates("start").to_numpy(), "W")


def test_trailing_partial_period_is_recognised_from_the_days_covered() -> None:
    days = pd.date_range("2020-01-01", "2020-03-10").to_numpy()
    end = data_end_of(days, "M")
    assert end.partial and end.last_start("M") == T("2020-03-01")
    assert end.covered == pytest.approx(10 / 31)
    assert end.first_open("M") == T("2020-03-01")
    whole = data_end_of(pd.date_range("2020-01-01", "2020-03-31").to_numpy(), "M")
    assert not whole.partial and whole.first_open("M") == T("2020-04-01")


def test_monthly_data_seen_mid_month_has_the_next_month_open() -> None:
    dates = monthly_dates("end").to_numpy()  # last row 2019-12-31
    end = data_end_of(dates[:-1], "M", as_of=T("2019-12-15"))  # December not reported yet
    assert end.partial and end.first_open("M") == T("2019-12-01")


@pytest.mark.parametrize("dated", ["start", "mid", "end"])
def test_series_of_monthly_rows_keep_their_last_month(dated: str) -> None:
    dates = monthly_dates(dated, months=6)
    orders = pd.DataFrame({ORDER_ID: [str(i) for i in range(6)], CUSTOMER_ID: "c1",
                           ORDER_DATE: dates.dt.strftime("%Y-%m-%d"),
                           AMOUNT: [str(10 * (i + 1)) for i in range(6)]})
    tables = tables_of(orders=orders, customers=CUSTOMERS.iloc[:1])
    series = revenue_series(tables, "M", levels=[LEVEL_COMPANY])
    assert series[DS].tolist() == list(pd.date_range("2018-01-01", periods=6, freq="MS"))
    assert series[Y].tolist() == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert not series[PARTIAL].any()


def test_a_first_period_covered_in_part_is_measured() -> None:
    days = pd.date_range("2020-01-10", "2020-04-30").to_numpy()
    assert data_end_of(days, "M").first_covered == pytest.approx(22 / 31)
    assert data_end_of(days, "D").first_covered == 1.0
    assert data_end_of(monthly_dates("mid").to_numpy(), "M").first_covered == 1.0
