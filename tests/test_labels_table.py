"""Churn labels (features/labels.py) and training tables (features/table.py)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from engine.io import Tables
from engine.schemas import AMOUNT, AS_OF, CUSTOMER_ID, CUSTOMERS, ORDER_DATE, ORDERS, SEGMENT
from features.customer import customer_features, customer_history
from features.labels import CHURNED, churn_labels, label_window_complete
from features.table import DROPPED_AS_OFS, snapshot_dates, training_table
from models.btyd import BTYD_FEATURES, btyd_columns

T = pd.Timestamp("2024-07-01")  # lookback window from 2023-07-02; horizon ends 2024-12-27


def orders_frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    dates = pd.to_datetime([r[1] for r in rows], format="ISO8601")
    return pd.DataFrame({
        CUSTOMER_ID: pd.Series([r[0] for r in rows], dtype=object),
        ORDER_DATE: dates.astype("datetime64[ns]"),
        AMOUNT: [float(r[2]) for r in rows],
    })


BOUNDARIES = orders_frame([
    ("A", "2024-06-01", 50), ("A", "2024-07-01", 100),  # buys on as_of itself: stays
    ("B", "2024-06-20", 100), ("B", "2024-12-27", 100),  # last day of the horizon: stays
    ("C", "2024-01-10", 100), ("C", "2024-12-28", 100),  # first day after it: churned
    ("D", "2023-07-02", 100),  # first day of the lookback: active, then churned
    ("E", "2023-07-01", 100), ("E", "2024-08-01", 100),  # a day before the lookback: inactive
    ("F", "2024-05-01", 100), ("F", "2024-08-01", -100),  # only a return later: churned
    ("G", "2024-05-01", -30), ("G", "2024-09-01", 100),  # only a return before: inactive
    ("H", "2024-06-30T23:00", 100),  # late on the eve of as_of still counts as before
])


def test_churn_labels_boundaries() -> None:
    labels = churn_labels(BOUNDARIES, T, horizon_days=180, lookback_days=365)
    assert list(labels.columns) == [CUSTOMER_ID, AS_OF, CHURNED]
    assert dict(zip(labels[CUSTOMER_ID], labels[CHURNED], strict=True)) == {
        "A": 0, "B": 0, "C": 1, "D": 1, "F": 1, "H": 1}
    assert (labels[AS_OF] == T).all()


def test_churn_labels_with_shorter_windows() -> None:
    labels = churn_labels(BOUNDARIES, T, horizon_days=31, lookback_days=30)
    # Active in [2024-06-01, 2024-07-01): A, B, H; only A buys in [2024-07-01, 2024-08-01).
    assert dict(zip(labels[CUSTOMER_ID], labels[CHURNED], strict=True)) == {
        "A": 0, "B": 1, "H": 1}


def test_churn_labels_reject_non_positive_windows() -> None:
    with pytest.raises(ValueError, match="positive"):
        churn_labels(BOUNDARIES, T, horizon_days=0)


def test_label_window_complete() -> None:
    assert label_window_complete(T, 180, pd.Timestamp("2024-12-27"))
    assert label_window_complete(T, 180, pd.Timestamp("2024-12-27 08:00"))
    assert not label_window_complete(T, 180, pd.Timestamp("2024-12-26"))
    assert label_window_complete("2024-07-01", 1, "2024-07-01")


def test_snapshot_dates() -> None:
    assert snapshot_dates("2024-01-15", "2024-04-01") == [
        pd.Timestamp("2024-02-01"), pd.Timestamp("2024-03-01"), pd.Timestamp("2024-04-01")]
    assert snapshot_dates("2024-01-01", "2024-01-20", freq="7D")[-1] == pd.Timestamp("2024-01-15")


# --- training tables ---------------------------------------------------------------------------


def company(seed: int = 7, n_customers: int = 60, n_orders: int = 1500) -> Tables:
    """A small random company: customers with segments, orders over two years."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"k{i:03d}" for i in range(n_customers)], dtype=object)
    start = pd.Timestamp("2022-01-01")
    # Later customers get a segment nobody had before, to exercise category unions.
    segments = np.where(np.arange(n_customers) < n_customers - 5, "old", "new").astype(object)
    customers = pd.DataFrame({CUSTOMER_ID: ids, SEGMENT: segments})
    who = np.where(rng.random(n_orders) < 0.9, rng.integers(0, n_customers - 5, n_orders),
                   rng.integers(n_customers - 5, n_customers, n_orders))
    late = who >= n_customers - 5
    offset = np.where(late, rng.integers(500, 730, n_orders), rng.integers(0, 730, n_orders))
    orders = pd.DataFrame({
        CUSTOMER_ID: ids[who],
        ORDER_DATE: (start + pd.to_timedelta(offset, unit="D")).astype("datetime64[ns]"),
        AMOUNT: np.round(rng.gamma(2.0, 60.0, n_orders) - 10, 2),
    })
    return Tables({CUSTOMERS: customers, ORDERS: orders})


def test_training_table_matches_per_snapshot_features_and_labels() -> None:
    tables = company()
    as_ofs = snapshot_dates("2022-04-01", "2023-09-01", freq="3MS")
    table = training_table(tables, as_ofs, horizon_days=90, lookback_days=180)
    expected = []
    for as_of in as_ofs:
        labels = churn_labels(tables.orders, as_of, horizon_days=90, lookback_days=180)
        features = customer_features(tables, as_of)
        expected.append(features.merge(labels, on=[CUSTOMER_ID, AS_OF]))
    plain = pd.concat(expected, ignore_index=True)
    assert len(table) == len(plain) > 0
    assert table[CHURNED].isin([0, 1]).all() and 0 < table[CHURNED].mean() < 1
    # Snapshots differ in their categories; the table carries their union.
    assert list(table["cat_segment"].cat.categories) == ["new", "old"]
    as_text = {c: object for c in table.columns if c.startswith("cat_")}
    pd.testing.assert_frame_equal(table.astype(as_text), plain.astype(as_text))
    assert table.attrs[DROPPED_AS_OFS] == []


def test_training_table_drops_snapshots_past_the_data_end(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    tables = company()
    last = tables.orders[ORDER_DATE].max()  # 2023-12-30 or so
    as_ofs = snapshot_dates(last - pd.Timedelta(days=200), last, freq="MS")
    with caplog.at_level(logging.WARNING, logger="features.table"):
        table = training_table(tables, as_ofs, horizon_days=90)
    dropped = [t for t in as_ofs if t + pd.Timedelta(days=89) > last.normalize()]
    assert dropped and table.attrs[DROPPED_AS_OFS] == dropped
    assert sorted(table[AS_OF].unique()) == [t for t in as_ofs if t not in dropped]
    assert "dropped" in caplog.text and str(dropped[0].date()) in caplog.text


def test_training_table_with_an_explicit_data_end_and_nothing_left() -> None:
    tables = company()
    table = training_table(tables, [pd.Timestamp("2023-06-01")], horizon_days=90,
                           data_end=pd.Timestamp("2023-08-01"))
    assert table.empty and CHURNED in table.columns and "hist_recency_days" in table.columns
    assert table.attrs[DROPPED_AS_OFS] == [pd.Timestamp("2023-06-01")]


def test_btyd_columns_are_fitted_on_each_snapshots_past_only() -> None:
    tables = company()
    as_ofs = [pd.Timestamp("2022-09-01"), pd.Timestamp("2023-06-01")]
    table = training_table(tables, as_ofs, horizon_days=90, extra=btyd_columns)
    plain = training_table(tables, as_ofs, horizon_days=90)
    # The same rows and features, plus the three BG/NBD columns.
    assert list(table.columns) == [*plain.columns[:-1], *BTYD_FEATURES, CHURNED]
    pd.testing.assert_frame_equal(table[list(plain.columns)], plain)
    for as_of in as_ofs:
        # Refit on the orders before as_of alone: the same numbers, so nothing later leaked in.
        orders = tables.orders
        past = Tables({**tables.frames, ORDERS: orders.loc[orders[ORDER_DATE] < as_of]})
        history = customer_history(past)
        rows = table.loc[table[AS_OF] == as_of]
        codes = np.searchsorted(history.ids, rows[CUSTOMER_ID].to_numpy())
        alone = btyd_columns(history, as_of, 90, codes)
        for name in BTYD_FEATURES:
            np.testing.assert_allclose(rows[name].to_numpy(), alone[name], rtol=1e-6)
        p = rows["btyd_p_churn"]
        assert p.between(0, 1).all() and p.nunique() > 10
