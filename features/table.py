"""Churn training tables: point-in-time features and labels over many as_of snapshots.

The tables are prepared once (:func:`features.customer.customer_history`); each snapshot is
then a handful of vectorized window queries, so many snapshots cost little more than one.

``extra`` adds columns computed per snapshot from the history before its as_of only, such as the
outputs of a model stacked underneath (models/btyd.py: ``btyd_columns``), so that a model
trained on them never sees a parameter learned from its own future.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from engine.io import Tables
from engine.schemas import ORDER_DATE
from features.customer import (
    WINDOWS,
    CustomerHistory,
    as_of_day,
    customer_history,
    features_at,
)
from features.labels import CHURNED, churn_codes, label_window_complete

__all__ = [
    "DROPPED_AS_OFS",
    "ExtraColumns",
    "concat_snapshots",
    "snapshot_dates",
    "snapshot_rows",
    "training_table",
]

log = logging.getLogger(__name__)

# Key of ``DataFrame.attrs`` listing the snapshots dropped for an incomplete label window.
DROPPED_AS_OFS = "dropped_as_ofs"

# ``(history, as_of, horizon_days, rows) -> {column: values of those customer rows}``
ExtraColumns = Callable[[CustomerHistory, pd.Timestamp, int, np.ndarray],
                        Mapping[str, np.ndarray]]


def snapshot_dates(start: pd.Timestamp | str, end: pd.Timestamp | str,
                   freq: str = "MS") -> list[pd.Timestamp]:
    """Snapshot dates from ``start`` to ``end`` inclusive (default: first of each month)."""
    return list(pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=freq, normalize=True))


def snapshot_rows(history: CustomerHistory, as_of: pd.Timestamp, horizon_days: int,
                  lookback_days: int, windows: Sequence[int] = WINDOWS,
                  extra: ExtraColumns | None = None) -> pd.DataFrame:
    """Features and churn label of the customers active at one as_of (and ``extra``'s
    columns)."""
    active, churned = churn_codes(history.orders.purchases, as_of, horizon_days, lookback_days)
    # Active customers bought before as_of, so they are known: their rows are feature rows.
    table = features_at(history, as_of, windows, rows=active)
    if extra is not None:
        for name, values in extra(history, as_of, horizon_days, active).items():
            table[name] = values
    table[CHURNED] = churned
    return table


def concat_snapshots(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Stack snapshots, giving each categorical column the union of the snapshots' categories."""
    if len(frames) > 1:
        for column in frames[0].select_dtypes("category").columns:
            categories = union_categoricals([f[column] for f in frames], sort_categories=True)
            for frame in frames:
                frame[column] = frame[column].cat.set_categories(categories.categories)
    return pd.concat(frames, ignore_index=True)


def _data_end(tables: Tables, data_end: pd.Timestamp | str | None) -> pd.Timestamp:
    """The given data end, else the last order date."""
    if data_end is not None:
        return pd.Timestamp(data_end)
    return pd.Timestamp(tables.orders[ORDER_DATE].max())


def _complete_snapshots(as_ofs: Sequence[pd.Timestamp], horizon_days: int, end: pd.Timestamp
                        ) -> tuple[list[pd.Timestamp], list[pd.Timestamp]]:
    """The distinct as_ofs (at midnight) whose label window the data covers, and the others."""
    stamps = sorted({as_of_day(t)[0] for t in as_ofs})
    kept = [t for t in stamps if label_window_complete(t, horizon_days, end)]
    dropped = [t for t in stamps if t not in kept]
    if dropped:
        log.warning("dropped %d snapshot(s) whose %d-day label window runs past the data end "
                    "%s: %s", len(dropped), horizon_days, end.date(),
                    ", ".join(str(t.date()) for t in dropped))
    return kept, dropped


def training_table(tables: Tables, as_ofs: Sequence[pd.Timestamp], horizon_days: int = 180,
                   lookback_days: int = 365, data_end: pd.Timestamp | None = None,
                   extra: ExtraColumns | None = None) -> pd.DataFrame:
    """Features plus ``churned`` for the customers active at each as_of, stacked.

    Snapshots whose label window ``[as_of, as_of + horizon_days)`` runs past ``data_end``
    (default: the last order date) are dropped: they are logged as a warning and listed in
    ``table.attrs["dropped_as_ofs"]``. ``extra`` adds its columns to each snapshot.

    Returns:
        The :func:`features.customer.customer_features` columns plus ``churned``, one row per
        (active customer, kept as_of), sorted by ``as_of`` then ``customer_id``.
    """
    end = _data_end(tables, data_end)
    kept, dropped = _complete_snapshots(as_ofs, horizon_days, end)
    history = customer_history(tables)
    # With no snapshot left, the empty frame still carries every column (from the data end).
    frames = [snapshot_rows(history, t, horizon_days, lookback_days, extra=extra)
              for t in kept] or [
        snapshot_rows(history, end, horizon_days, lookback_days, extra=extra).iloc[:0]]
    table = concat_snapshots(frames)
    table.attrs[DROPPED_AS_OFS] = dropped
    return table
