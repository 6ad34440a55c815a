"""Customer features (features/customer.py): hand-computed values and point-in-time safety.

The tiny company below has five customers; every expected value was worked out by hand from
the rows (as_of 2024-07-01; its 30/90/180/365-day windows start on 2024-06-01, 2024-04-02,
2024-01-03 and 2023-07-02).
"""

from __future__ import annotations

import math
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.io import Tables, validate_tables
from engine.schemas import (
    AMOUNT,
    AS_OF,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    DUE_DATE,
    INTERACTIONS,
    ISSUED_AT,
    KIND,
    OCCURRED_AT,
    OPPORTUNITIES,
    ORDER_DATE,
    ORDERS,
    PAID_AT,
    PRODUCT,
    RECEIVABLES,
    SEGMENT,
    SEVERITY,
    STATUS,
    STATUS_LOST,
    STATUS_OPEN,
    STATUS_WON,
)
from features.customer import (
    FEATURE_DESCRIPTIONS,
    WINDOWS,
    PrefixSums,
    customer_features,
    feature_descriptions,
    format_feature,
)

T = pd.Timestamp("2024-07-01")
NAN = float("nan")

RAW = {
    CUSTOMERS: """customer_id,segment,region,account_manager,created_at
A,smb,north,ann,2023-01-15
B,ent,south,bob,2024-03-01
C,smb,north,ann,
D,ent,south,bob,2024-09-01
E,,north,ann,2024-06-15
F,mid,east,cid,
""",
    ORDERS: """order_id,customer_id,order_date,amount,product
o1,A,2024-01-01,100,p1
o2,A,2024-02-01,200,p2
o3,A,2024-03-02,100,p1
o4,A,2024-04-01,300,p3
o5,A,2024-04-01,50,p1
o6,A,2024-05-15,-50,p1
o7,A,2024-07-01,500,p2
o8,B,2024-03-10,1000,p1
o9,B,2024-06-20,400,p2
o10,C,2023-06-01,80,p1
o11,C,2023-07-01,-20,p1
o12,D,2024-09-05,70,p1
""",
    INTERACTIONS: """customer_id,occurred_at,kind,severity
A,2024-01-20,complaint,2
A,2024-05-01,ticket,1
A,2024-06-10,Complaint,3
A,2024-07-01,complaint,4
B,2024-06-25,call,
F,2024-05-05,visit,
""",
    RECEIVABLES: """invoice_id,customer_id,issued_at,due_date,amount,paid_at
i1,A,2024-05-01,2024-05-31,300,2024-06-15
i2,A,2024-06-01,2024-06-30,200,
i3,A,2024-06-20,2024-07-20,150,2024-07-05
i4,B,2024-04-01,2024-05-01,1000,2024-07-10
i5,B,2024-03-01,2024-03-31,500,2024-03-20
i6,C,2024-07-02,2024-08-01,90,
""",
    OPPORTUNITIES: """opportunity_id,owner,created_at,close_date,stage,status,amount,customer_id
d1,ann,2024-05-01,2024-08-01,proposal,open,1000,A
d2,ann,2024-02-01,2024-06-01,closed,lost,500,A
d3,ann,2024-06-01,2024-07-15,closed,won,700,A
d4,bob,2024-07-05,2024-09-01,prospecting,open,300,B
d5,bob,2023-01-01,2023-06-01,closed,lost,200,B
d6,bob,2024-01-10,2024-03-01,closed,won,800,B
""",
}


def tables_from(raw: dict[str, str]) -> Tables:
    """Validated tables from CSV text, typed exactly as ``load_tables`` types them."""
    frames = {name: pd.read_csv(StringIO(text), dtype=str) for name, text in raw.items()}
    tables, problems = validate_tables(frames)
    assert problems == []
    return tables


@pytest.fixture(scope="module")
def tiny() -> pd.DataFrame:
    return customer_features(tables_from(RAW), T).set_index(CUSTOMER_ID)


def check(features: pd.DataFrame, column: str, expected: dict[str, float]) -> None:
    got = features.loc[list(expected), column].to_numpy(dtype=float)
    np.testing.assert_allclose(got, list(expected.values()), rtol=1e-12, err_msg=column)


def test_one_row_per_customer_known_before_as_of(tiny: pd.DataFrame) -> None:
    # D is created after as_of and only orders after it; F is known through an interaction.
    assert list(tiny.index) == ["A", "B", "C", "E", "F"]
    assert (tiny[AS_OF] == T).all()


def test_recency_frequency_monetary(tiny: pd.DataFrame) -> None:
    check(tiny, "hist_recency_days", {"A": 91, "B": 11, "C": 396, "E": NAN})
    # A's 2024-04-01 purchase is one day before the 90-day window; its return is inside it.
    check(tiny, "hist_frequency_30d", {"A": 0, "B": 1, "C": 0, "E": 0})
    check(tiny, "hist_monetary_30d", {"A": 0, "B": 400, "C": 0, "E": 0})
    check(tiny, "hist_frequency_90d", {"A": 0, "B": 1, "C": 0})
    check(tiny, "hist_monetary_90d", {"A": -50, "B": 400, "C": 0})
    check(tiny, "hist_frequency_180d", {"A": 3, "B": 2, "C": 0})
    check(tiny, "hist_monetary_180d", {"A": 600, "B": 1400, "C": 0})
    # Two order rows on 2024-04-01 are one purchase day; C's return falls a day before.
    check(tiny, "hist_frequency_365d", {"A": 4, "B": 2, "C": 0})
    check(tiny, "hist_monetary_365d", {"A": 700, "B": 1400, "C": 0})


def test_lifetime_and_tenure(tiny: pd.DataFrame) -> None:
    check(tiny, "hist_frequency_lifetime", {"A": 4, "B": 2, "C": 1, "E": 0})
    check(tiny, "hist_monetary_lifetime", {"A": 700, "B": 1400, "C": 60, "E": 0})
    check(tiny, "hist_avg_order_value", {"A": 187.5, "B": 700, "C": 80, "E": NAN})
    check(tiny, "hist_days_since_first_order", {"A": 182, "B": 113, "C": 396, "E": NAN})
    # First seen: created (A, B, E), first order (C), first interaction (F).
    check(tiny, "hist_tenure_days", {"A": 533, "B": 122, "C": 396, "E": 16, "F": 57})


def test_repurchase_cycle_and_overdue(tiny: pd.DataFrame) -> None:
    # A's gaps are 31, 30, 30 days; B's single gap is 102 days.
    check(tiny, "hist_cycle_median_days", {"A": 30, "B": 102, "C": NAN})
    check(tiny, "hist_cycle_iqr_days", {"A": 0.5, "B": 0, "C": NAN})
    check(tiny, "hist_overdue_ratio", {"A": 91 / 30, "B": 11 / 102, "C": NAN})
    check(tiny, "hist_overdue_days", {"A": 61, "B": -91, "C": NAN})


def test_spend_trend_products_and_returns(tiny: pd.DataFrame) -> None:
    # Gross purchases: A 0 in the last 90 days vs 650 before; B 400 vs 1000; C, E nothing.
    check(tiny, "hist_spend_trend_90d", {"A": -1, "B": -600 / 1400, "C": 0, "E": 0})
    check(tiny, "hist_spend_change_90d", {"A": -1, "B": -0.6, "C": NAN})
    check(tiny, "hist_products_365d", {"A": 3, "B": 2, "C": 0, "E": 0})
    check(tiny, "hist_returns_share_365d", {"A": 50 / 750, "B": 0, "C": NAN})


def test_interactions(tiny: pd.DataFrame) -> None:
    check(tiny, "cx_complaints_30d", {"A": 1, "B": 0, "C": 0})
    check(tiny, "cx_complaints_180d", {"A": 2, "B": 0})
    check(tiny, "cx_tickets_30d", {"A": 0})
    check(tiny, "cx_tickets_90d", {"A": 1})
    check(tiny, "cx_interactions_90d", {"A": 2, "B": 1, "F": 1, "C": 0})
    check(tiny, "cx_interactions_365d", {"A": 3})
    check(tiny, "cx_days_since_last_complaint", {"A": 21, "B": NAN})
    check(tiny, "cx_days_since_last_interaction", {"A": 21, "B": 6, "C": NAN})
    check(tiny, "cx_severity_mean_90d", {"A": 2, "B": NAN, "C": NAN})
    check(tiny, "cx_severity_max_90d", {"A": 3, "B": NAN, "C": NAN})


def test_receivables(tiny: pd.DataFrame) -> None:
    # i3 and i4 are paid only after as_of, so they count as unpaid at as_of.
    check(tiny, "ar_unpaid_amount", {"A": 350, "B": 1000, "C": 0})
    check(tiny, "ar_overdue_amount", {"A": 200, "B": 1000, "C": 0})
    check(tiny, "ar_overdue_invoices", {"A": 1, "B": 1, "C": 0})
    check(tiny, "ar_max_days_late", {"A": 1, "B": 61, "C": 0})
    check(tiny, "ar_paid_late_share", {"A": 1, "B": 0, "C": NAN})


def test_pipeline(tiny: pd.DataFrame) -> None:
    # d3 is won only after as_of, so it was open; d4 is created after; d5 is lost too long ago.
    check(tiny, "pipe_open_value", {"A": 1700, "B": 0, "C": 0})
    check(tiny, "pipe_open_deals", {"A": 2, "B": 0})
    check(tiny, "pipe_lost_180d", {"A": 1, "B": 0})
    check(tiny, "pipe_won_180d", {"A": 0, "B": 1})


def test_categories(tiny: pd.DataFrame) -> None:
    assert isinstance(tiny["cat_segment"].dtype, pd.CategoricalDtype)
    assert list(tiny["cat_segment"].cat.categories) == ["ent", "mid", "smb"]
    assert tiny["cat_segment"].cat.add_categories("-").fillna("-").tolist() == [
        "smb", "ent", "smb", "-", "mid"]
    assert tiny.loc["B", "cat_account_manager"] == "bob"


def test_every_feature_is_described_and_float(tiny: pd.DataFrame) -> None:
    features = [c for c in tiny.columns if c != AS_OF]
    assert set(features) == set(FEATURE_DESCRIPTIONS)
    numeric = [c for c in features if not c.startswith("cat_")]
    assert all(tiny[c].dtype == np.float64 for c in numeric)
    assert format_feature("hist_recency_days", 91.0) == "Days since the last purchase: 91 days"
    assert format_feature("ar_paid_late_share", 0.25).endswith(": 25%")
    assert format_feature("hist_cycle_median_days", NAN).endswith(": unknown")
    assert set(feature_descriptions((7,))) >= {"hist_frequency_7d", "cx_tickets_7d"}


def test_absent_optional_tables_give_missing_features() -> None:
    full = customer_features(tables_from(RAW), T).set_index(CUSTOMER_ID)
    only_orders = customer_features(tables_from({ORDERS: RAW[ORDERS]}), T)
    only_orders = only_orders.set_index(CUSTOMER_ID)
    # Without customers and interactions only customers with orders before as_of are known.
    assert list(only_orders.index) == ["A", "B", "C"]
    assert list(only_orders.columns) == list(full.columns)
    for prefix in ("cx_", "ar_", "pipe_", "cat_"):
        columns = [c for c in full.columns if c.startswith(prefix)]
        assert only_orders[columns].isna().all().all(), prefix
    hist = [c for c in full.columns if c.startswith("hist_") and c != "hist_tenure_days"]
    pd.testing.assert_frame_equal(only_orders[hist], full.loc[["A", "B", "C"], hist])


def test_orders_without_product_and_empty_optional_tables() -> None:
    raw = {**RAW, ORDERS: RAW[ORDERS].replace(",product", "").replace(",p1", "")
           .replace(",p2", "").replace(",p3", "")}
    tables = tables_from(raw)
    tables.frames[INTERACTIONS] = tables[INTERACTIONS].iloc[:0]
    features = customer_features(tables, T).set_index(CUSTOMER_ID)
    assert features["hist_products_365d"].isna().all()
    assert "F" not in features.index  # known only through an interaction
    check(features, "cx_interactions_365d", {"A": 0, "B": 0})
    check(features, "cx_severity_max_90d", {"A": NAN})


def test_as_of_is_taken_at_midnight_and_times_of_day_count() -> None:
    raw = {ORDERS: "customer_id,order_date,amount\nA,2024-06-30T23:30:00,10\n"
                     "A,2024-07-01T00:30:00,10\nB,2024-07-01T00:00:00,5\n"}
    features = customer_features(tables_from(raw), pd.Timestamp("2024-07-01 15:00"))
    assert features[CUSTOMER_ID].tolist() == ["A"]
    assert features["hist_recency_days"].tolist() == [1.0]
    assert features["hist_monetary_30d"].tolist() == [10.0]
    assert (features[AS_OF] == T).all()


# --- point in time -------------------------------------------------------------------------

FUTURE = {
    ORDERS: "o20,A,2024-07-01,999,p9\no21,C,2024-08-01,50,p1\no22,E,2024-07-02,-10,p1\n",
    INTERACTIONS: "C,2024-07-01,complaint,4\nE,2025-01-01,ticket,2\n",
    RECEIVABLES: "i7,A,2024-07-01,2024-07-02,80,\ni8,B,2024-07-03,2024-07-04,70,2024-07-05\n",
    OPPORTUNITIES: "d7,ann,2024-07-01,2024-07-09,proposal,open,5000,C\n",
    CUSTOMERS: "G,smb,north,ann,2024-07-01\n",
}


def test_rows_dated_on_or_after_as_of_change_nothing(tiny: pd.DataFrame) -> None:
    raw = {name: RAW[name] + FUTURE.get(name, "") for name in RAW}
    # Later knowledge about old rows: i2 gets paid, d1 is lost, both after as_of.
    raw[RECEIVABLES] = raw[RECEIVABLES].replace("2024-06-30,200,", "2024-06-30,200,2024-07-01")
    raw[OPPORTUNITIES] = raw[OPPORTUNITIES].replace(
        "2024-08-01,proposal,open,1000", "2024-07-03,closed,lost,1000")
    later = customer_features(tables_from(raw), T).set_index(CUSTOMER_ID)
    pd.testing.assert_frame_equal(later, tiny)


KINDS = ("complaint", "ticket", "call")
STATUSES = (STATUS_OPEN, STATUS_WON, STATUS_LOST)
DAY0 = pd.Timestamp("2023-01-01")
days = st.integers(0, 500)
customer = st.integers(0, 4)


def _dates(values: list[int | None]) -> pd.Series:
    return pd.Series([DAY0 + pd.Timedelta(days=v) if v is not None else pd.NaT for v in values],
                     dtype="datetime64[ns]")


def _ids(values: list[int]) -> pd.Series:
    return pd.Series([f"c{v}" for v in values], dtype=object)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict[str, pd.DataFrame], int]:
    """A random full history (all tables) and an as_of day; many dates fall next to as_of."""
    cut = draw(days)
    near = st.one_of(days, st.integers(max(cut - 1, 0), cut + 1))
    maybe = st.one_of(st.none(), near)
    orders = draw(st.lists(st.tuples(customer, near, st.integers(-50, 300),
                                     st.sampled_from(["p0", "p1", "p2", None])), min_size=1,
                           max_size=40))
    touches = draw(st.lists(st.tuples(customer, near, st.sampled_from(KINDS),
                                      st.one_of(st.none(), st.integers(1, 4))), max_size=15))
    bills = draw(st.lists(st.tuples(customer, near, near, maybe), max_size=10))
    deals = draw(st.lists(st.tuples(customer, near, near, st.sampled_from(STATUSES)),
                          max_size=10))
    created = draw(st.lists(maybe, min_size=5, max_size=5))
    frames = {
        CUSTOMERS: pd.DataFrame({CUSTOMER_ID: _ids(list(range(5))),
                                   SEGMENT: ["a", "b", "a", "c", None],
                                   CREATED_AT: _dates(created)}),
        ORDERS: pd.DataFrame({CUSTOMER_ID: _ids([o[0] for o in orders]),
                                ORDER_DATE: _dates([o[1] for o in orders]),
                                AMOUNT: [float(o[2]) for o in orders],
                                PRODUCT: [o[3] for o in orders]}),
        INTERACTIONS: pd.DataFrame({CUSTOMER_ID: _ids([t[0] for t in touches]),
                                      OCCURRED_AT: _dates([t[1] for t in touches]),
                                      KIND: [t[2] for t in touches],
                                      SEVERITY: [float(t[3] or "nan") for t in touches]}),
        RECEIVABLES: pd.DataFrame({CUSTOMER_ID: _ids([b[0] for b in bills]),
                                     ISSUED_AT: _dates([b[1] for b in bills]),
                                     DUE_DATE: _dates([b[2] for b in bills]),
                                     PAID_AT: _dates([b[3] for b in bills]),
                                     AMOUNT: [100.0] * len(bills)}),
        OPPORTUNITIES: pd.DataFrame({CUSTOMER_ID: _ids([d[0] for d in deals]),
                                       CREATED_AT: _dates([d[1] for d in deals]),
                                       CLOSE_DATE: _dates([d[2] for d in deals]),
                                       STATUS: [d[3] for d in deals],
                                       AMOUNT: [250.0] * len(deals)}),
    }
    return frames, cut


def as_seen_at(frames: dict[str, pd.DataFrame], day: int) -> dict[str, pd.DataFrame]:
    """The database as it looked at the start of ``day``: nothing dated on or after it."""
    cut = DAY0 + pd.Timedelta(days=day)
    orders = frames[ORDERS][frames[ORDERS][ORDER_DATE] < cut]
    touches = frames[INTERACTIONS][frames[INTERACTIONS][OCCURRED_AT] < cut]
    bills = frames[RECEIVABLES][frames[RECEIVABLES][ISSUED_AT] < cut].copy()
    bills.loc[bills[PAID_AT] >= cut, PAID_AT] = pd.NaT
    deals = frames[OPPORTUNITIES][frames[OPPORTUNITIES][CREATED_AT] < cut].copy()
    deals.loc[deals[CLOSE_DATE] >= cut, STATUS] = STATUS_OPEN
    customers = frames[CUSTOMERS]
    seen = set(orders[CUSTOMER_ID]) | set(touches[CUSTOMER_ID]) | set(deals[CUSTOMER_ID])
    customers = customers[(customers[CREATED_AT] < cut) | customers[CUSTOMER_ID].isin(seen)]
    return {CUSTOMERS: customers, ORDERS: orders, INTERACTIONS: touches,
            RECEIVABLES: bills, OPPORTUNITIES: deals}


@settings(max_examples=80, deadline=None)
@given(worlds())
def test_features_see_nothing_on_or_after_as_of(world: tuple[dict[str, pd.DataFrame], int]
                                                ) -> None:
    frames, day = world
    as_of = DAY0 + pd.Timedelta(days=day)
    full = customer_features(Tables(frames), as_of)
    then = customer_features(Tables(as_seen_at(frames, day)), as_of)
    pd.testing.assert_frame_equal(full, then)


# --- against a plain per-customer implementation ---------------------------------------------


def random_frames(seed: int, n_customers: int = 25, n_orders: int = 600) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"k{i:02d}" for i in range(n_customers)], dtype=object)
    when = DAY0 + pd.to_timedelta(rng.integers(0, 700, n_orders), unit="D")
    orders = pd.DataFrame({
        CUSTOMER_ID: ids[rng.integers(0, n_customers, n_orders)],
        ORDER_DATE: when.astype("datetime64[ns]"),
        AMOUNT: np.round(rng.normal(100, 80, n_orders), 2),
        PRODUCT: rng.choice(np.array(["p0", "p1", "p2", "p3", "p4"], dtype=object), n_orders),
    })
    n_touch = 200
    touches = pd.DataFrame({
        CUSTOMER_ID: ids[rng.integers(0, n_customers, n_touch)],
        OCCURRED_AT: (DAY0 + pd.to_timedelta(rng.integers(0, 700, n_touch), unit="D")
                        ).astype("datetime64[ns]"),
        KIND: rng.choice(np.array(KINDS, dtype=object), n_touch),
        SEVERITY: np.where(rng.random(n_touch) < 0.3, np.nan, rng.integers(1, 5, n_touch)),
    })
    return {ORDERS: orders, INTERACTIONS: touches}


def plain_features(frames: dict[str, pd.DataFrame], as_of: pd.Timestamp) -> pd.DataFrame:
    """The same features, one customer at a time, the obvious way."""
    orders = frames[ORDERS][frames[ORDERS][ORDER_DATE] < as_of]
    touches = frames[INTERACTIONS][frames[INTERACTIONS][OCCURRED_AT] < as_of]
    rows = {}
    for cid in sorted(set(orders[CUSTOMER_ID]) | set(touches[CUSTOMER_ID])):
        own = orders[orders[CUSTOMER_ID] == cid]
        bought = own[own[AMOUNT] > 0]
        days_ = np.array(sorted(set(bought[ORDER_DATE])), dtype="datetime64[ns]")
        gaps = np.diff(days_).astype("timedelta64[D]").astype(float)
        row: dict[str, float] = {
            "hist_recency_days": (as_of - days_.max()).days if len(days_) else NAN,
            "hist_cycle_median_days": np.median(gaps) if len(gaps) else NAN,
            "hist_cycle_iqr_days": np.subtract(*np.quantile(gaps, [0.75, 0.25]))
            if len(gaps) else NAN,
        }
        for w in WINDOWS:
            start = as_of - pd.Timedelta(days=w)
            row[f"hist_frequency_{w}d"] = float((days_ >= start).sum())
            row[f"hist_monetary_{w}d"] = own.loc[own[ORDER_DATE] >= start, AMOUNT].sum()
            mine = touches[(touches[CUSTOMER_ID] == cid) & (touches[OCCURRED_AT] >= start)]
            row[f"cx_complaints_{w}d"] = float((mine[KIND] == "complaint").sum())
        year = bought[bought[ORDER_DATE] >= as_of - pd.Timedelta(days=365)]
        row["hist_products_365d"] = float(year[PRODUCT].nunique())
        recent = touches[(touches[CUSTOMER_ID] == cid)
                         & (touches[OCCURRED_AT] >= as_of - pd.Timedelta(days=90))]
        row["cx_severity_max_90d"] = recent[SEVERITY].max()
        rows[cid] = row
    return pd.DataFrame.from_dict(rows, orient="index")


@pytest.mark.parametrize("seed", [1, 2])
def test_matches_a_plain_per_customer_implementation(seed: int) -> None:
    frames = random_frames(seed)
    tables = Tables(frames)
    for as_of in (pd.Timestamp("2023-03-15"), pd.Timestamp("2024-01-01"),
                  pd.Timestamp("2025-06-01")):
        ours = customer_features(tables, as_of).set_index(CUSTOMER_ID)
        plain = plain_features(frames, as_of)
        assert list(ours.index) == list(plain.index)
        for column in plain.columns:
            np.testing.assert_allclose(ours[column].to_numpy(float),
                                       plain[column].to_numpy(float), rtol=1e-9, atol=1e-9,
                                       err_msg=f"{column} at {as_of.date()}")


def test_window_sums_stay_exact_over_millions_of_amounts() -> None:
    rng = np.random.default_rng(3)
    amounts = np.round(rng.gamma(1.0, 2e5, 2_000_000), 2)
    lo, hi = np.array([1_500_000, 1_999_990, 10]), np.array([1_500_010, 2_000_000, 1_999_000])
    exact = [math.fsum(amounts[a:b]) for a, b in zip(lo, hi, strict=True)]
    plain = PrefixSums.of(amounts).between(lo, hi)
    assert np.abs(plain - exact).max() > 1e-4  # a plain running sum drifts
    np.testing.assert_allclose(PrefixSums.of(amounts, compensated=True).between(lo, hi), exact,
                               rtol=1e-15, atol=0)
