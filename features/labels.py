"""Churn labels: did a customer active at as_of stop buying within the horizon?

Boundary convention (the same day split as ``features.customer``): ``as_of`` is taken at
midnight; features use rows dated strictly before it, labels use rows on or after it.

- *active* at as_of: a purchase on a day in ``[as_of - lookback_days, as_of)``;
- *churned* = 1: no purchase on a day in ``[as_of, as_of + horizon_days)``.

A purchase is an order row with a positive amount: a return or credit note neither makes a
customer active nor keeps one from churning. The label window is complete when the data covers
its last day, ``as_of + horizon_days - 1`` (see :func:`label_window_complete`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.schemas import AS_OF, CUSTOMER_ID
from features.customer import Timeline, as_of_day, customer_index, order_history

__all__ = [
    "CHURNED",
    "churn_codes",
    "churn_labels",
    "label_window_complete",
    "labels_at",
]

CHURNED = "churned"


def _check_days(horizon_days: int, lookback_days: int) -> None:
    if horizon_days <= 0 or lookback_days <= 0:
        raise ValueError(
            f"horizon_days and lookback_days must be positive, got {horizon_days}, {lookback_days}"
        )


def churn_codes(purchases: Timeline, as_of: pd.Timestamp | str, horizon_days: int = 180,
                lookback_days: int = 365) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the customers active at as_of (ascending) and their churn labels (int8)."""
    _check_days(horizon_days, lookback_days)
    _, day = as_of_day(as_of)
    active = np.flatnonzero(purchases.count(day - lookback_days, day) > 0)
    bought_after = purchases.count(day, day + horizon_days)[active] > 0
    return active, (~bought_after).astype(np.int8)


def labels_at(purchases: Timeline, ids: np.ndarray, as_of: pd.Timestamp | str,
              horizon_days: int = 180, lookback_days: int = 365) -> pd.DataFrame:
    """Churn labels at one as_of from a prepared purchase timeline (codes = positions in ids)."""
    active, churned = churn_codes(purchases, as_of, horizon_days, lookback_days)
    stamp, _ = as_of_day(as_of)
    return pd.DataFrame({
        CUSTOMER_ID: ids[active],
        AS_OF: np.full(len(active), stamp.to_datetime64(), dtype="datetime64[ns]"),
        CHURNED: churned,
    })


def churn_labels(orders: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int = 180,
                 lookback_days: int = 365) -> pd.DataFrame:
    """Churn labels of the customers active at ``as_of``.

    Returns:
        ``customer_id``, ``as_of``, ``churned`` (int8: 1 when no purchase in
        ``[as_of, as_of + horizon_days)``), one row per customer with a purchase in
        ``[as_of - lookback_days, as_of)``, sorted by ``customer_id``.
    """
    ids, (codes,) = customer_index([orders[CUSTOMER_ID]])
    history = order_history(orders, codes, len(ids))
    return labels_at(history.purchases, ids, as_of, horizon_days, lookback_days)


def label_window_complete(as_of: pd.Timestamp | str, horizon_days: int,
                          data_end: pd.Timestamp | str) -> bool:
    """True when the data, ending on day ``data_end`` (inclusive), covers the label window."""
    _, day = as_of_day(as_of)
    _, end = as_of_day(data_end)
    return day + horizon_days - 1 <= end
