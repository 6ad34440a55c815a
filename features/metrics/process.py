"""Process targets: the pace of new customers, orders, pipeline created, visits and retention
against their targets (``targets`` rows whose ``metric`` is not revenue), per node.

Like :func:`~features.metrics.plan.pace_against_plan` for revenue: the count or amount to date in
the period / the target x the share of the period planned by now (the monthly targets' phasing
when every month has one, else the elapsed share of time); 1 = on plan. Retention is a rate, not
a sum: its value is the rate to date / the target rate.

What counts, in ``[period start, as_of)``:

- ``new_customers``: customers whose first revenue (an order or a won deal, positive amount)
  falls in the period, at the node that made that sale;
- ``orders``: revenue events with a positive amount (orders, and won deals without an order);
- ``pipeline_created``: the amount of the opportunities created, at their owner's node;
- ``visits``: interactions of kind ``visit``, at the customer's account manager's node;
- ``retention_rate``: of the customers with revenue in the 365 days before the period starts,
  the share with revenue in the 365 days before ``as_of``, at the account manager's node.

A node without a target of the metric has no row; data without process targets gives no rows
(rules on them stay quiet), while targets that cannot be measured (visits without
``interactions``) make the metric unavailable, saying what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from engine.io import tier_targets
from engine.periods import period_bounds
from engine.schemas import (
    AMOUNT,
    CREATED_AT,
    CUSTOMER_ID,
    DS,
    INTERACTIONS,
    KEY,
    KIND,
    LEVEL,
    METRIC_REVENUE,
    METRICS,
    OCCURRED_AT,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    PERIOD,
    TARGETS,
)
from features.hierarchy import NODE_COLUMNS, customer_nodes, opportunity_nodes
from features.metrics.base import (
    LABEL_COLUMNS,
    NODE_SCOPES,
    level_key,
    metric_frame,
    money,
    node_labels,
    pct,
    require_tables,
    resolve_period,
    revenue_events,
    stack,
)
from features.metrics.context import MetricContext
from features.metrics.plan import _planned_share

__all__ = ["PROCESS_METRICS", "target_attainment"]

PROCESS_METRICS = tuple(m for m in METRICS if m != METRIC_REVENUE)
ALL = "all"
RETENTION = "retention_rate"
VISIT = "visit"
_YEAR = pd.Timedelta(days=365)

_NEEDS = {
    "pipeline_created": (OPPORTUNITIES,),
    "visits": (INTERACTIONS,),
}


def _sales(context: MetricContext, as_of: pd.Timestamp) -> pd.DataFrame:
    """Revenue events with a positive amount before ``as_of`` (returns and credits aside)."""
    events = revenue_events(context, as_of)
    return events[events[AMOUNT] > 0]


def _orders(context: MetricContext, as_of: pd.Timestamp, start: pd.Timestamp) -> pd.DataFrame:
    sales = _sales(context, as_of)
    return sales[sales[DS] >= start].assign(_weight=1.0)


def _new_customers(context: MetricContext, as_of: pd.Timestamp, start: pd.Timestamp
                   ) -> pd.DataFrame:
    sales = _sales(context, as_of).sort_values(DS, kind="stable")
    first = sales.drop_duplicates(CUSTOMER_ID)
    return first[first[DS] >= start].assign(_weight=1.0)


def _pipeline_created(context: MetricContext, as_of: pd.Timestamp, start: pd.Timestamp
                      ) -> pd.DataFrame:
    opps = context.tables[OPPORTUNITIES]
    nodes = opportunity_nodes(context.tables).set_index(OPPORTUNITY_ID)
    created = opps[(opps[CREATED_AT] >= start) & (opps[CREATED_AT] < as_of)]
    return created[[OPPORTUNITY_ID]].join(nodes, on=OPPORTUNITY_ID).assign(
        _weight=created[AMOUNT].astype(float))


def _by_customer(context: MetricContext, customers: pd.Series) -> pd.DataFrame:
    """The account manager's node of each customer id."""
    nodes = customer_nodes(context.tables).drop_duplicates(CUSTOMER_ID).set_index(CUSTOMER_ID)
    return nodes.reindex(customers.to_numpy())[list(NODE_COLUMNS)].reset_index(drop=True)


def _visits(context: MetricContext, as_of: pd.Timestamp, start: pd.Timestamp) -> pd.DataFrame:
    found = context.tables[INTERACTIONS]
    kind = found[KIND].astype(str).str.strip().str.lower()
    visits = found[(kind == VISIT) & (found[OCCURRED_AT] >= start) & (found[OCCURRED_AT] < as_of)]
    return _by_customer(context, visits[CUSTOMER_ID]).assign(_weight=1.0)


_COUNTED: dict[str, Callable[[MetricContext, pd.Timestamp, pd.Timestamp], pd.DataFrame]] = {
    "new_customers": _new_customers,
    "orders": _orders,
    "pipeline_created": _pipeline_created,
    "visits": _visits,
}


def _retention(context: MetricContext, as_of: pd.Timestamp, start: pd.Timestamp
               ) -> pd.DataFrame:
    """One row per customer active in the year before ``start``: ``_weight`` 1 if it bought in
    the year before ``as_of`` too (the rate is their mean)."""
    sales = _sales(context, as_of)
    base = sales.loc[(sales[DS] >= start - _YEAR) & (sales[DS] < start), CUSTOMER_ID].unique()
    recent = set(sales.loc[sales[DS] >= as_of - _YEAR, CUSTOMER_ID])
    kept = pd.Series([c in recent for c in base], dtype=float)
    return _by_customer(context, pd.Series(base, dtype=object)).assign(_weight=kept.to_numpy())


def _unit(metric: str, value: float) -> str:
    if metric == "pipeline_created":
        return money(value)
    return f"{value:,.0f}"


def _pace_level(context: MetricContext, level: str, targets: pd.DataFrame, done: pd.DataFrame,
                metric: str, period: str, as_of: pd.Timestamp, elapsed: float) -> pd.DataFrame:
    goals = targets[(targets[PERIOD].astype(str) == period) & (targets[LEVEL] == level)]
    keys = goals[KEY].astype(object).reset_index(drop=True)
    target = goals[AMOUNT].astype(float).reset_index(drop=True)
    grouped = done["_weight"].groupby(level_key(done, level), observed=True)
    labels = node_labels(context.tables, level, keys)
    if metric == RETENTION:
        rate = keys.map(grouped.mean()).astype(float)
        value = (rate / target.where(target > 0)).astype(float)
        words = [f"retention to date {pct(r)} against a target of {pct(t)}" if pd.notna(v)
                 else "no customers to retain" for r, t, v in zip(rate, target, value,
                                                                    strict=True)]
        return metric_frame(level, labels, value, pd.Series(words), {
            "period": period, "target_metric": metric, "to_date": rate, "target": target,
            "expected_to_date": target, "planned_share": 1.0, "phasing": "rate"})
    to_date = keys.map(grouped.sum()).astype(float).fillna(0.0)
    share, phasing = _planned_share(targets, level, keys, period, as_of, elapsed)
    expected = target * share
    value = (to_date / expected.where(expected > 0)).astype(float)
    words = [
        (f"{metric.replace('_', ' ')} to date {_unit(metric, d)} is {v:.0%} of plan: "
         f"{_unit(metric, t)} target x {s:.0%} of {period} "
         + ("elapsed" if how == "linear" else f"planned by now ({how})")
         + f" = {_unit(metric, e)} expected by now") if pd.notna(v) else "no plan to date"
        for d, v, t, s, how, e in zip(to_date, value, target, share, phasing, expected,
                                      strict=True)
    ]
    return metric_frame(level, labels, value, pd.Series(words), {
        "period": period, "target_metric": metric, "to_date": to_date, "target": target,
        "expected_to_date": expected, "planned_share": share, "phasing": phasing})


def _pace(context: MetricContext, metric: str, targets: pd.DataFrame, period: str,
          as_of: pd.Timestamp, elapsed: float) -> pd.DataFrame:
    """The pace frame of one process metric at every node with a target of it."""
    require_tables(context.tables, "target_attainment", *_NEEDS.get(metric, ()))
    start, end = period_bounds(period)
    until = min(as_of, end)
    count = _retention if metric == RETENTION else _COUNTED[metric]
    done = count(context, until, start)
    return stack([_pace_level(context, level, targets, done, metric, period, as_of, elapsed)
                  for level in NODE_SCOPES])


def _worst(frame: pd.DataFrame) -> pd.DataFrame:
    """Per node, the process target furthest behind (lowest value; NaN last)."""
    labels = ["scope", *LABEL_COLUMNS]
    ranked = frame.assign(_missing=frame["value"].isna()).sort_values(
        ["_missing", "value"], kind="stable")
    keys = ranked[labels].astype(object).fillna("")
    return ranked[~keys.duplicated()].drop(columns="_missing").reset_index(drop=True)


def target_attainment(context: MetricContext, as_of: pd.Timestamp,
                      params: Mapping[str, Any]) -> pd.DataFrame:
    """Pace of the process targets against their plan to date, per node with such a target."""
    wanted = str(params["target_metric"]).strip()
    if wanted != ALL and wanted not in PROCESS_METRICS:
        raise ValueError(f"target_attainment: target_metric {wanted!r} is not a process metric; "
                         f"expected {ALL} or one of {', '.join(PROCESS_METRICS)}")
    tables = context.tables
    if not tables.has(TARGETS):
        return stack([])
    period = resolve_period(params["period"], as_of)
    start, end = period_bounds(period)
    elapsed = float(np.clip((as_of - start) / (end - start), 0.0, 1.0))
    if elapsed < float(params["min_elapsed_share"]):
        return stack([])  # too early in the period for a pace to mean anything
    metrics = PROCESS_METRICS if wanted == ALL else (wanted,)
    parts = []
    for metric in metrics:
        targets = tier_targets(tables[TARGETS], metric=metric)
        if (targets[PERIOD].astype(str) == period).any():
            parts.append(_pace(context, metric, targets, period, as_of, elapsed))
    frame = stack(parts)
    return _worst(frame) if wanted == ALL and not frame.empty else frame
