"""Pace against plan: revenue to date in the period against the plan to date."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from engine.io import tier_targets
from engine.periods import period_bounds
from engine.schemas import AMOUNT, DS, KEY, LEVEL, PERIOD, TARGETS
from features.metrics.base import (
    NODE_SCOPES,
    level_key,
    metric_frame,
    money,
    node_labels,
    require_tables,
    resolve_period,
    revenue_events,
    stack,
)
from features.metrics.context import MetricContext

__all__ = [
    "pace_against_plan",
]


def _months(period: str) -> list[str]:
    """The months of a year or quarter period (``2026Q3`` -> 2026-07, 2026-08, 2026-09)."""
    start, end = period_bounds(period)
    months = pd.period_range(start, end - pd.Timedelta(days=1), freq="M")
    return [] if len(months) < 2 else [str(m) for m in months]


def _planned_share(targets: pd.DataFrame, level: str, keys: pd.Series, period: str,
                   as_of: pd.Timestamp, elapsed: float) -> tuple[pd.Series, pd.Series]:
    """Per key: the share of the period's target planned by ``as_of``, and how it was phased.

    Targets of a quarter or year are rarely flat: when every month of the period has a target
    for the node, the plan to date follows them (the months gone by in full, the current one
    pro rata), so a summer dip or a December push is not mistaken for falling behind.
    Otherwise the plan is linear in time.
    """
    share = pd.Series(elapsed, index=keys.index, dtype=float)
    phasing = pd.Series("linear", index=keys.index, dtype=object)
    months = _months(period)
    if not months:
        return share, phasing
    mine = targets[(targets[LEVEL] == level) & targets[PERIOD].astype(str).isin(months)]
    grid = mine.pivot_table(index=KEY, columns=PERIOD, values=AMOUNT, aggfunc="sum")
    grid = grid.reindex(columns=months)
    complete = grid.notna().all(axis=1) & (grid.sum(axis=1) > 0)
    if not complete.any():
        return share, phasing
    grid = grid[complete]
    done = []
    for month in months:
        first, after = period_bounds(month)
        done.append(float(np.clip((as_of - first) / (after - first), 0.0, 1.0)))
    phased = (grid * np.array(done)).sum(axis=1) / grid.sum(axis=1)
    found = keys.map(phased)
    share = found.where(found.notna(), share).astype(float)
    phasing = phasing.where(found.isna(), "monthly targets")
    return share, phasing


def _pace_level(context: MetricContext, level: str, targets: pd.DataFrame,
                revenue: pd.DataFrame, period: str, as_of: pd.Timestamp, elapsed: float
                ) -> pd.DataFrame:
    goals = targets[(targets[PERIOD].astype(str) == period) & (targets[LEVEL] == level)]
    keys = goals[KEY].astype(object).reset_index(drop=True)
    target = goals[AMOUNT].astype(float).reset_index(drop=True)
    done = revenue[AMOUNT].groupby(level_key(revenue, level), observed=True).sum()
    to_date = keys.map(done).astype(float).fillna(0.0)
    share, phasing = _planned_share(targets, level, keys, period, as_of, elapsed)
    expected = target * share
    value = (to_date / expected.where(expected > 0)).astype(float)
    words = [
        (f"revenue to date {money(r)} is {v:.0%} of plan: {money(t)} target x {s:.0%} of "
         + (f"{period} elapsed" if how == "linear" else f"{period} planned by now ({how})")
         + f" = {money(e)} expected by now") if pd.notna(v) else "no plan to date"
        for r, v, t, s, how, e in zip(to_date, value, target, share, phasing, expected,
                                      strict=True)
    ]
    labels = node_labels(context.tables, level, keys)
    return metric_frame(level, labels, value, pd.Series(words), {
        "period": period, "revenue_to_date": to_date, "target": target,
        "expected_to_date": expected, "elapsed_share": elapsed, "planned_share": share,
        "phasing": phasing})


def pace_against_plan(context: MetricContext, as_of: pd.Timestamp,
                      params: Mapping[str, Any]) -> pd.DataFrame:
    """Revenue to date against the plan to date, per node with a target."""
    tables = context.tables
    require_tables(tables, "pace_against_plan", TARGETS)
    period = resolve_period(params["period"], as_of)
    start, end = period_bounds(period)
    elapsed = float(np.clip((as_of - start) / (end - start), 0.0, 1.0))
    if elapsed < float(params["min_elapsed_share"]):
        return stack([])  # too early in the period for a pace to mean anything
    events = revenue_events(context, as_of)
    revenue = events[(events[DS] >= start) & (events[DS] < end)]
    return stack([
        _pace_level(context, level, tier_targets(tables[TARGETS]), revenue, period, as_of, elapsed)
        for level in NODE_SCOPES
    ])
