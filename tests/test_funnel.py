"""Funnel state, per-deal features and node metrics as of a date (features/funnel.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import schemas
from engine.io import Tables, validate_tables
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    COMPANY_KEY,
    CREATED_AT,
    CUSTOMER_ID,
    ENTERED_AT,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REP,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    OWNER,
    PERIOD,
    REGION,
    REP,
    SEGMENT,
    STAGE,
    STATUS,
    TEAM,
)
from features.funnel import (
    CLOSE_HISTORY_MISSING_NOTE,
    CLOSE_SLIPS,
    DAYS_SLIPPED,
    ENTERED_STAGE_AT,
    F_AGE,
    F_AMOUNT_VS_OWNER,
    F_CLOSE_SLIPS,
    F_DAYS_IN_STAGE,
    F_DAYS_SLIPPED,
    F_DAYS_TO_CLOSE,
    F_HISTORY_EXACT,
    F_OVERDUE,
    F_OWNER_WIN_RATE,
    F_REGRESSIONS,
    F_SEGMENT_WIN_RATE,
    F_STAGE,
    F_STAGE_CHANGES,
    F_STAGE_INDEX,
    FEATURES,
    HISTORY_EXACT,
    HISTORY_MISSING_NOTE,
    NODE_METRICS,
    ORIGINAL_CLOSE_DATE,
    REGRESSIONS,
    STAGE_CHANGES,
    STAGE_INDEX,
    _first_entries,
    _precedence_votes,
    funnel_node_metrics,
    funnel_notes,
    opportunity_features,
    opportunity_state,
    stage_conversion,
    stage_order,
)

T = pd.Timestamp
AS_OF = T("2017-03-05")

ORG = pd.DataFrame({REP: ["r1", "r2"], TEAM: ["t1", "t2"], REGION: ["east", "west"]})
CUSTOMERS = pd.DataFrame({
    CUSTOMER_ID: ["c1", "c2"],
    ACCOUNT_MANAGER: ["r1", "r2"],
    SEGMENT: ["smb", "enterprise"],
})
# As of 2017-03-05: o1 won and o5 lost before; o2 is lost later, so it was open; o3 moved back
# from proposal to qualify and slipped twice; o4's expected close had passed (it moved later,
# after the date, in the snapshot's close_date); o6 did not exist yet.
OPPORTUNITIES = pd.DataFrame({
    OPPORTUNITY_ID: ["o1", "o2", "o3", "o4", "o5", "o6"],
    OWNER: ["r1", "r1", "r2", "r2", "r2", "r1"],
    CREATED_AT: ["2017-01-01", "2017-01-10", "2017-02-01", "2017-02-05", "2017-01-05",
                   "2017-04-01"],
    CLOSE_DATE: ["2017-03-01", "2017-04-20", "2017-03-15", "2017-05-30", "2017-02-10",
                   "2017-06-30"],
    STAGE: ["won", "lost", "proposal", "qualify", "lost", "prospect"],
    STATUS: ["won", "lost", "open", "open", "lost", "open"],
    AMOUNT: ["40", "70", "30", "10", "20", "50"],
    CUSTOMER_ID: ["c2", "c1", "c1", "c2", "c1", "c2"],
})
_HISTORY_ROWS = [  # opportunity, stage, entered_at, expected close recorded then
    ("o1", "prospect", "2017-01-01", "2017-02-15"),
    ("o1", "qualify", "2017-01-10", "2017-03-01"),
    ("o1", "proposal", "2017-02-01", "2017-03-01"),
    ("o1", "won", "2017-03-01", "2017-03-01"),
    ("o2", "prospect", "2017-01-10", "2017-03-01"),
    ("o2", "qualify", "2017-02-01", "2017-03-10"),
    ("o2", "lost", "2017-04-20", "2017-04-20"),
    ("o3", "prospect", "2017-02-01", "2017-03-01"),
    ("o3", "qualify", "2017-02-10", "2017-03-01"),
    ("o3", "proposal", "2017-02-20", "2017-03-20"),
    ("o3", "qualify", "2017-03-01", "2017-04-10"),
    ("o3", "proposal", "2017-03-10", "2017-04-10"),
    ("o4", "qualify", "2017-02-05", "2017-03-01"),
    ("o4", "qualify", "2017-04-01", "2017-05-30"),
    ("o5", "prospect", "2017-01-05", "2017-02-01"),
    ("o5", "lost", "2017-02-10", "2017-02-10"),
    ("o6", "prospect", "2017-04-01", "2017-06-30"),
]
STAGE_HISTORY = pd.DataFrame(_HISTORY_ROWS, columns=[OPPORTUNITY_ID, STAGE, ENTERED_AT,
                                                     CLOSE_DATE])
ORDERS = pd.DataFrame({
    ORDER_ID: ["1", "2"],
    CUSTOMER_ID: ["c1", "c2"],
    ORDER_DATE: ["2017-01-05", "2017-03-10"],
    AMOUNT: ["100", "50"],
    OPPORTUNITY_ID: [None, "o1"],
})
TARGETS = pd.DataFrame({
    PERIOD: ["2017Q1", "2017Q1", "2017Q2"],
    LEVEL: ["company", "rep", "company"],
    KEY: ["all", "r1", "all"],
    AMOUNT: ["300", "150", "999"],
})


def tables_of(**frames: pd.DataFrame) -> Tables:
    """Validated tables from raw frames (fails the test on any problem)."""
    tables, problems = validate_tables({name: frame.copy() for name, frame in frames.items()})
    assert problems == []
    return tables


def crm(history: pd.DataFrame | None = STAGE_HISTORY, **extra: pd.DataFrame) -> Tables:
    frames = {"orders": ORDERS, "customers": CUSTOMERS, "opportunities": OPPORTUNITIES,
              "org": ORG, "targets": TARGETS, **extra}
    if history is not None:
        frames["stage_history"] = history
    return tables_of(**frames)


@pytest.fixture(scope="module")
def tables() -> Tables:
    return crm()


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index(OPPORTUNITY_ID)


def node(metrics: pd.DataFrame, level: str, key: str) -> pd.Series:
    rows = metrics[(metrics[LEVEL] == level) & (metrics[KEY] == key)]
    assert len(rows) == 1
    return rows.iloc[0]


# --- stage order ----------------------------------------------------------------------------------


def test_stage_order_is_inferred_from_stage_changes_before_as_of(tables: Tables) -> None:
    assert stage_order(tables, AS_OF) == ["prospect", "qualify", "proposal", "lost", "won"]
    assert stage_order(tables, "2017-01-06") == ["prospect"]


def test_precedence_votes_count_every_ordered_pair_of_first_entries() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for deal in range(300):  # random walks with repeats, skips and regressions
        for day, stage in enumerate(rng.choice(list("ABCDE"), rng.integers(1, 8))):
            rows.append((f"o{deal}", str(stage), T("2024-01-01") + pd.Timedelta(days=day)))
    history = pd.DataFrame(rows, columns=[OPPORTUNITY_ID, STAGE, ENTERED_AT])
    first = _first_entries(history)
    stages = sorted(first[STAGE].unique())
    expected = np.zeros((len(stages), len(stages)), dtype=np.int64)
    for _, deal in first.groupby(OPPORTUNITY_ID):  # the definition, pair by pair
        order = list(deal[STAGE])
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                expected[stages.index(a), stages.index(b)] += 1
    np.testing.assert_array_equal(_precedence_votes(first, stages), expected)


def test_stage_order_survives_skipped_stages() -> None:
    # Most deals jump from a to d; an average position would put d before b and c.
    paths = [["a", "d"]] * 6 + [["a", "b", "c", "d"]] * 2 + [["a", "c", "d"]]
    rows = [(f"x{i}", stage, T("2017-01-01") + pd.Timedelta(days=j))
            for i, path in enumerate(paths) for j, stage in enumerate(path)]
    history = pd.DataFrame(rows, columns=[OPPORTUNITY_ID, STAGE, ENTERED_AT])
    opps = pd.DataFrame({OPPORTUNITY_ID: [f"x{i}" for i in range(len(paths))],
                         CREATED_AT: T("2017-01-01")})
    tables = Tables({schemas.OPPORTUNITIES: opps, schemas.STAGE_HISTORY: history})
    assert stage_order(tables, "2018-01-01") == ["a", "b", "c", "d"]


# --- state at T -----------------------------------------------------------------------------------


def test_opportunity_state_reconstructs_each_deal_at_as_of(tables: Tables) -> None:
    state = by_id(opportunity_state(tables, AS_OF))
    assert list(state.index) == ["o1", "o2", "o3", "o4", "o5"]  # o6 created later
    assert state[STATUS].to_dict() == {"o1": "won", "o2": "open", "o3": "open", "o4": "open",
                                         "o5": "lost"}
    assert state[STAGE].to_dict() == {"o1": "won", "o2": "qualify", "o3": "qualify",
                                        "o4": "qualify", "o5": "lost"}
    assert state.loc["o3", ENTERED_STAGE_AT] == T("2017-03-01")
    assert state[STAGE_CHANGES].to_dict() == {"o1": 3, "o2": 1, "o3": 3, "o4": 0, "o5": 1}
    assert state[REGRESSIONS].to_dict() == {"o1": 0, "o2": 0, "o3": 1, "o4": 0, "o5": 0}
    assert state[CLOSE_SLIPS].to_dict() == {"o1": 1, "o2": 1, "o3": 2, "o4": 0, "o5": 1}
    assert state[DAYS_SLIPPED].to_dict() == {"o1": 14, "o2": 9, "o3": 40, "o4": 0, "o5": 9}
    # Closed deals keep their actual close; open ones the expectation recorded before T.
    assert state[CLOSE_DATE].dt.strftime("%m-%d").to_dict() == {
        "o1": "03-01", "o2": "03-10", "o3": "04-10", "o4": "03-01", "o5": "02-10"}
    assert state[HISTORY_EXACT].all()


def test_opportunity_features_by_hand(tables: Tables) -> None:
    features = by_id(opportunity_features(tables, AS_OF))
    assert list(features.index) == ["o2", "o3", "o4"]  # open at T, o2 included
    expected = pd.DataFrame({
        F_STAGE: ["qualify"] * 3,
        F_STAGE_INDEX: [1.0] * 3,
        F_AGE: [54.0, 32.0, 28.0],
        F_DAYS_IN_STAGE: [32.0, 4.0, 28.0],
        F_STAGE_CHANGES: [1.0, 3.0, 0.0],
        F_REGRESSIONS: [0.0, 1.0, 0.0],
        F_CLOSE_SLIPS: [1.0, 2.0, 0.0],
        F_DAYS_SLIPPED: [9.0, 40.0, 0.0],
        F_OVERDUE: [0.0, 0.0, 1.0],
        F_DAYS_TO_CLOSE: [5.0, 36.0, -4.0],
        # Owner medians of won deals closed before T: r1 40; r2 none -> company median 40.
        F_AMOUNT_VS_OWNER: [70 / 40, 30 / 40, 10 / 40],
        # Closed before T: o1 won (r1, enterprise), o5 lost (r2, smb); prior (1+1)/(2+2) = 0.5
        # with 10 pseudo-deals: one win -> 6/11, one loss -> 5/11.
        F_OWNER_WIN_RATE: [6 / 11, 5 / 11, 5 / 11],
        F_SEGMENT_WIN_RATE: [5 / 11, 5 / 11, 6 / 11],
        F_HISTORY_EXACT: [True] * 3,
    }, index=pd.Index(["o2", "o3", "o4"], name=OPPORTUNITY_ID))
    pd.testing.assert_frame_equal(features[list(FEATURES)], expected, check_dtype=False)
    assert features[OWNER].tolist() == ["r1", "r2", "r2"]
    assert features[SEGMENT].tolist() == ["smb", "smb", "enterprise"]
    assert (features[schemas.AS_OF] == AS_OF).all()
    assert list(opportunity_features(tables, AS_OF).columns[:2]) == [OPPORTUNITY_ID, schemas.AS_OF]


def test_win_rates_are_shrunk_but_not_constant(tables: Tables) -> None:
    features = opportunity_features(tables, "2017-06-01")  # o1 won, o2 o5 lost; o3 o4 o6 open
    rates = features.set_index(OPPORTUNITY_ID)[F_OWNER_WIN_RATE]
    prior = (1 + 1) / (3 + 2)
    assert rates["o6"] == pytest.approx((1 + 10 * prior) / (2 + 10))  # r1: 1 of 2
    assert rates["o3"] == pytest.approx((0 + 10 * prior) / (1 + 10))  # r2: 0 of 1
    assert 0 < rates.min() < rates.max() < 1


# --- without (complete) stage history ------------------------------------------------------------


def test_missing_stage_history_falls_back_and_says_so() -> None:
    tables = crm(history=None)
    assert funnel_notes(tables) == [HISTORY_MISSING_NOTE]
    past = by_id(opportunity_features(tables, AS_OF))
    # Before the snapshot (2017-04-20) the snapshot's stage would leak how deals went on.
    assert past[F_STAGE].isna().all() and past[F_DAYS_IN_STAGE].isna().all()
    assert past[CLOSE_DATE].isna().all() and past[F_OVERDUE].isna().all()
    assert not past[F_HISTORY_EXACT].any()
    assert past[F_AGE].tolist() == [54.0, 32.0, 28.0]  # what created_at allows
    assert past[F_OWNER_WIN_RATE].notna().all()
    now = by_id(opportunity_features(tables, "2017-05-01"))
    assert now[F_STAGE].to_dict() == {"o3": "proposal", "o4": "qualify", "o6": "prospect"}
    assert now.loc["o4", CLOSE_DATE] == T("2017-05-30")
    assert now[F_STAGE_CHANGES].isna().all() and now[F_REGRESSIONS].isna().all()


def test_history_without_close_dates_has_no_slips() -> None:
    tables = crm(history=STAGE_HISTORY.drop(columns=[CLOSE_DATE]))
    assert funnel_notes(tables) == [CLOSE_HISTORY_MISSING_NOTE]
    features = by_id(opportunity_features(tables, AS_OF))
    assert features[F_CLOSE_SLIPS].isna().all() and features[F_DAYS_SLIPPED].isna().all()
    assert features[F_STAGE_CHANGES].notna().all()
    assert features[CLOSE_DATE].isna().all()
    metrics = funnel_node_metrics(tables, AS_OF, "2017Q1")
    company = node(metrics, LEVEL_COMPANY, COMPANY_KEY)
    assert np.isnan(company["slipped_deals"]) and np.isnan(company["coverage"])
    assert company["open_deals"] == 3


def test_original_close_date_is_the_expectation_known_at_creation() -> None:
    originals = ["2017-02-20", "2017-03-01", "2017-03-30", "2017-03-04", "2017-02-01", None]
    opps = OPPORTUNITIES.copy()
    opps[ORIGINAL_CLOSE_DATE] = originals
    tables = crm(history=None, opportunities=opps)
    features = by_id(opportunity_features(tables, AS_OF))
    assert features[CLOSE_DATE].dt.strftime("%m-%d").tolist() == ["03-01", "03-30", "03-04"]
    assert features[F_OVERDUE].tolist() == [1.0, 0.0, 1.0]


def test_deals_without_history_rows_are_marked_inexact() -> None:
    tables = crm(history=STAGE_HISTORY[STAGE_HISTORY[OPPORTUNITY_ID] != "o4"])
    features = by_id(opportunity_features(tables, AS_OF))
    assert features[F_HISTORY_EXACT].to_dict() == {"o2": True, "o3": True, "o4": False}
    assert pd.isna(features.loc["o4", F_STAGE])
    assert features.loc["o3", F_STAGE] == "qualify"


# --- node metrics ---------------------------------------------------------------------------------


def test_node_metrics_by_hand(tables: Tables) -> None:
    metrics = funnel_node_metrics(tables, AS_OF, "2017Q1")
    assert list(metrics.columns) == [PERIOD, LEVEL, KEY, schemas.AS_OF, *NODE_METRICS]
    assert metrics[[LEVEL, KEY]].apply(tuple, axis=1).tolist() == [
        ("company", "all"), ("region", "east"), ("region", "west"), ("team", "t1"),
        ("team", "t2"), ("rep", "r1"), ("rep", "r2")]
    company = node(metrics, LEVEL_COMPANY, COMPANY_KEY)
    expected = {
        "open_deals": 3, "open_pipeline": 110,  # o2 70, o3 30, o4 10
        "deals_in_period": 2, "pipeline_in_period": 80,  # o2 expected 03-10, o4 03-01
        "overdue_deals": 1, "stalled_deals": 1, "stalled_pipeline": 70,  # o2: 32 days
        "slipped_deals": 2, "won_to_date": 40,
        # 100 (order) + 40 (o1 is won, its order comes after T)
        "revenue_to_date": 140, "target": 300, "remaining_target": 160, "coverage": 0.5,
        "win_rate": 0.5,
        # Exits: prospect 3 of 4 forward (o5 lost), qualify 2 of 2, proposal 1 of 2 (o3 back).
        "conversion": 6 / 8, "velocity_days": 16.0,
    }
    for name, value in expected.items():
        assert company[name] == pytest.approx(value), name
    assert np.isnan(company["win_rate_baseline"]) and np.isnan(company["conversion_drop"])
    r1 = node(metrics, LEVEL_REP, "r1")
    assert (r1["revenue_to_date"], r1["remaining_target"], r1["coverage"]) == (140, 10, 7.0)
    r2 = node(metrics, LEVEL_REP, "r2")
    assert (r2["open_deals"], r2["overdue_deals"], r2["win_rate"]) == (2, 1, 0.0)
    assert np.isnan(r2["target"]) and np.isnan(r2["coverage"])


def test_node_metrics_parameters(tables: Tables) -> None:
    metrics = funnel_node_metrics(tables, AS_OF, "2017Q1", stall_days=20, trailing_days=20,
                                    targets=TARGETS.assign(**{AMOUNT: 100.0}))
    company = node(metrics, LEVEL_COMPANY, COMPANY_KEY)
    assert company["stalled_deals"] == 2  # o2 (32 days) and o4 (28 days)
    assert company["win_rate"] == 1.0  # since 02-13 only o1 closed
    assert company["win_rate_baseline"] == 0.0  # o5, lost on 02-10
    assert (company["target"], company["remaining_target"]) == (100, 0)
    assert np.isnan(company["coverage"])  # target met: nothing left to cover
    quarter2 = funnel_node_metrics(tables, AS_OF, "2017Q2")
    assert node(quarter2, LEVEL_COMPANY, COMPANY_KEY)["pipeline_in_period"] == 30  # o3
    assert node(quarter2, LEVEL_COMPANY, COMPANY_KEY)["revenue_to_date"] == 0


def test_stage_conversion_by_hand(tables: Tables) -> None:
    table = stage_conversion(tables, AS_OF, levels=[LEVEL_COMPANY]).set_index(STAGE)
    assert table["exits"].to_dict() == {"proposal": 2, "prospect": 4, "qualify": 2}
    assert table["conversion"].to_dict() == {"proposal": 0.5, "prospect": 0.75, "qualify": 1.0}
    assert table["median_days_in_stage"].to_dict() == {"proposal": 18.5, "prospect": 15.5,
                                                       "qualify": 16.0}
    assert table[STAGE_INDEX].to_dict() == {"proposal": 2.0, "prospect": 0.0, "qualify": 1.0}


def test_conversion_drop_names_the_stage_that_fell() -> None:
    # Baseline year: 10 deals a -> b -> won. Last 180 days: 4 a -> b -> won, 6 a -> lost.
    paths = [("2016-09-01", ["a", "b", "won"])] * 10 + [("2017-09-01", ["a", "b", "won"])] * 4 \
        + [("2017-09-01", ["a", "lost"])] * 6
    ids = [f"d{i}" for i in range(len(paths))]
    rows = [(i, stage, T(day) + pd.Timedelta(days=10 * j))
            for i, (day, path) in zip(ids, paths, strict=True) for j, stage in enumerate(path)]
    history = pd.DataFrame(rows, columns=[OPPORTUNITY_ID, STAGE, ENTERED_AT])
    opps = pd.DataFrame({
        OPPORTUNITY_ID: ids, OWNER: "r1", CREATED_AT: [day for day, _ in paths],
        CLOSE_DATE: [str((T(day) + pd.Timedelta(days=10 * (len(p) - 1))).date())
                       for day, p in paths],
        STAGE: [p[-1] for _, p in paths], STATUS: [p[-1] for _, p in paths],
        AMOUNT: "10", CUSTOMER_ID: "c1"})
    tables = tables_of(orders=ORDERS.iloc[:1], customers=CUSTOMERS, opportunities=opps, org=ORG,
                       stage_history=history)
    company = node(funnel_node_metrics(tables, "2018-01-01", "2017Q4"),
                   LEVEL_COMPANY, COMPANY_KEY)
    assert company["conversion_drop_stage"] == "a"
    assert company["conversion_drop"] == pytest.approx(1.0 - 0.4)  # b has too few recent exits
    assert (company["win_rate"], company["win_rate_baseline"]) == (0.4, 1.0)


def test_without_opportunities_only_revenue_is_known() -> None:
    tables = tables_of(orders=ORDERS.iloc[:1], customers=CUSTOMERS, org=ORG)
    assert opportunity_features(tables, AS_OF).empty
    company = node(funnel_node_metrics(tables, AS_OF, "2017Q1"), LEVEL_COMPANY,
                   COMPANY_KEY)
    assert (company["open_deals"], company["revenue_to_date"]) == (0, 100)
    assert stage_conversion(tables, AS_OF).empty


# --- point in time -------------------------------------------------------------------------------

_BASE = crm()
_DAY_OFFSETS = st.integers(min_value=0, max_value=120)


def _future_of(base: Tables, cutoff: pd.Timestamp, data: st.DataObject) -> Tables:
    """The same tables plus what happened on or after ``cutoff``: new deals, stage changes,
    orders, and open deals that closed since."""
    opps = base[schemas.OPPORTUNITIES].copy()
    later = opps[CLOSE_DATE] >= cutoff
    outcome = data.draw(st.lists(st.sampled_from(["won", "lost", "open"]), min_size=len(opps),
                                 max_size=len(opps)))
    opps.loc[later, STATUS] = np.asarray(outcome, dtype=object)[later.to_numpy()]
    opps.loc[later, STAGE] = opps.loc[later, STATUS]
    shift = pd.Timedelta(days=data.draw(_DAY_OFFSETS))
    opps.loc[later, CLOSE_DATE] = cutoff + shift
    new = pd.DataFrame({OPPORTUNITY_ID: ["n1"], OWNER: ["r2"], CREATED_AT: [cutoff + shift],
                        CLOSE_DATE: [cutoff + shift], STAGE: ["won"], STATUS: ["won"],
                        AMOUNT: [5.0], CUSTOMER_ID: ["c1"]})
    moves = pd.DataFrame({
        OPPORTUNITY_ID: data.draw(st.lists(st.sampled_from(["o2", "o3", "o4", "n1"]),
                                             min_size=3, max_size=3)),
        STAGE: data.draw(st.lists(st.sampled_from(["prospect", "won", "lost", "zzz"]),
                                    min_size=3, max_size=3)),
        ENTERED_AT: [cutoff + pd.Timedelta(days=d)
                       for d in data.draw(st.lists(_DAY_OFFSETS, min_size=3, max_size=3))],
        CLOSE_DATE: "2018-01-01",
    })
    orders = pd.DataFrame({ORDER_ID: ["n9"], CUSTOMER_ID: ["c2"], ORDER_DATE: [cutoff],
                           AMOUNT: [1e6], OPPORTUNITY_ID: [data.draw(
                               st.sampled_from([None, "o1", "o3"]))]})
    return Tables({
        **base.frames,
        schemas.OPPORTUNITIES: pd.concat([opps, new], ignore_index=True),
        schemas.STAGE_HISTORY: pd.concat([base[schemas.STAGE_HISTORY], moves], ignore_index=True),
        schemas.ORDERS: pd.concat([base[schemas.ORDERS], orders], ignore_index=True),
    })


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(day=st.integers(min_value=0, max_value=150), data=st.data())
def test_rows_dated_on_or_after_as_of_change_nothing(day: int, data: st.DataObject) -> None:
    cutoff = T("2017-01-02") + pd.Timedelta(days=day)
    future = _future_of(_BASE, cutoff, data)
    quarter = f"{cutoff.year}Q{cutoff.quarter}"
    for compute in (opportunity_state, opportunity_features, stage_conversion,
                    lambda t, d: funnel_node_metrics(t, d, quarter, trailing_days=30,
                                                       baseline_days=60)):
        pd.testing.assert_frame_equal(compute(_BASE, cutoff), compute(future, cutoff))
