"""Inventory turnover per product, from the optional ``inventory`` table (product, date,
on_hand) and the orders' ``product`` column.

Cost-free turnover: what was sold over the trailing ``window_days`` / the average on-hand over
the same window. Sold is in units when ``orders`` carries a numeric ``quantity`` column, else in
revenue (then on_hand is read as a value too). The average on-hand is time-weighted: a count
holds from its date until the next one (the last count before the window opens it). Days of
cover: on hand at ``as_of`` / sold per day over the window. Point in time: counts and orders
dated before ``as_of``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from engine.schemas import (
    AMOUNT,
    DATE,
    INVENTORY,
    ON_HAND,
    ORDER_DATE,
    ORDERS,
    PRODUCT,
)
from features.metrics.base import (
    MetricUnavailable,
    metric_frame,
    require_tables,
    stack,
)
from features.metrics.context import MetricContext

__all__ = ["QUANTITY", "inventory_turnover"]

# Optional orders column beyond the contract: units sold on the order line.
QUANTITY = "quantity"
_DAY = pd.Timedelta(days=1)


def _sold(orders: pd.DataFrame, since: pd.Timestamp, as_of: pd.Timestamp
          ) -> tuple[pd.Series, str]:
    """Units (or revenue) sold per product in [since, as_of), and which of the two."""
    window = orders[(orders[ORDER_DATE] >= since) & (orders[ORDER_DATE] < as_of)
                    & orders[PRODUCT].notna()]
    if QUANTITY in orders.columns:
        units = pd.to_numeric(orders[QUANTITY], errors="coerce")
        if units.notna().any():
            return units.loc[window.index].groupby(window[PRODUCT].astype(str)).sum(), "units"
    return window[AMOUNT].groupby(window[PRODUCT].astype(str)).sum(), "revenue"


def _on_hand(inventory: pd.DataFrame, since: pd.Timestamp, as_of: pd.Timestamp
             ) -> pd.DataFrame:
    """Per product: time-weighted average on hand over [since, as_of) and the last count."""
    counts = inventory[inventory[DATE] < as_of]
    if counts.empty:
        return pd.DataFrame(columns=["average", "latest"], dtype=float)
    days = pd.date_range(min(counts[DATE].min().normalize(), since), as_of - _DAY, freq="D")
    daily = (counts.assign(**{DATE: counts[DATE].dt.normalize()})
             .pivot_table(index=DATE, columns=PRODUCT, values=ON_HAND, aggfunc="last")
             .reindex(days).ffill())
    window = daily[daily.index >= since]
    return pd.DataFrame({"average": window.mean(), "latest": daily.iloc[-1]})


def inventory_turnover(context: MetricContext, as_of: pd.Timestamp,
                       params: Mapping[str, Any]) -> pd.DataFrame:
    """Sold over the trailing window / average on hand, per product with stock counts."""
    tables = context.tables
    require_tables(tables, "inventory_turnover", INVENTORY)
    orders = tables[ORDERS]
    if PRODUCT not in orders.columns:
        raise MetricUnavailable("inventory_turnover", "a product column in orders (what each "
                                "order sold), to set against the inventory counts")
    days = int(params["window_days"])
    since = as_of - pd.Timedelta(days=days)
    stock = _on_hand(tables[INVENTORY], since, as_of)
    if stock.empty:
        return stack([])
    sold, basis = _sold(orders, since, as_of)
    products = pd.Series(stock.index.astype(str), dtype=object)
    moved = products.map(sold).astype(float).fillna(0.0)
    average = stock["average"].to_numpy(dtype=float)
    latest = stock["latest"].to_numpy(dtype=float)
    value = pd.Series(moved.to_numpy() / np.where(average > 0, average, np.nan))
    per_day = moved.to_numpy() / days
    cover = pd.Series(latest / np.where(per_day > 0, per_day, np.nan))
    words = [
        (f"{m:,.0f} {basis} sold in the last {days} days / {a:,.0f} on hand on average = "
         f"turnover {v:.2f}; {latest_:,.0f} on hand = "
         + (f"{c:,.1f} days of cover" if pd.notna(c) else "no sales to cover")
         ) if pd.notna(v) else f"nothing on hand over the last {days} days"
        for m, a, v, latest_, c in zip(moved, average, value, latest, cover, strict=True)
    ]
    labels = pd.DataFrame({PRODUCT: products})
    return metric_frame(PRODUCT, labels, value, pd.Series(words), {
        "sold": moved, "basis": basis, "average_on_hand": average, "on_hand": latest,
        "days_of_cover": cover, "window_days": days})
