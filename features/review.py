"""What happened in a period, per node: the revenue events, who bought for the first time, who
stopped buying, and the process metrics targets may set (``quotacast review``).

Everything is point in time: a function given ``as_of`` reads only rows dated before it, so a
review made during a period does not change when later rows arrive. Revenue is the revenue of
:func:`features.hierarchy.revenue_events` (orders by ``order_date``, plus won deals that no order
carries on their ``close_date``), attributed to nodes the same way; every frame here carries the
node columns ``rep, team, region`` and any extra level (``product``, ``channel``, ``segment``...),
so :func:`node_sums` turns it into one row per node of every level, where a parent is the sum
of its children.

Process metrics (the ``metric`` column of ``targets``, :data:`engine.schemas.METRICS`):

- ``new_customers``: customers whose first purchase (first revenue event with a positive amount)
  falls in the period, at the node of that purchase;
- ``orders``: revenue events with a positive amount in the period (orders, plus won deals that no
  order carries);
- ``pipeline_created``: the amount of the deals created in the period, at their owner's node;
- ``visits``: interactions of kind ``visit`` in the period, at the customer's account manager;
- ``retention_rate``: of the customers who bought in the period before, the share who bought
  again in the period (at their account manager's node).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.schemas import (
    AMOUNT,
    COMPANY_KEY,
    CREATED_AT,
    CUSTOMER_ID,
    DS,
    HIERARCHY_LEVELS,
    INTERACTIONS,
    KEY,
    KIND,
    LEVEL,
    LEVEL_COMPANY,
    METRIC_REVENUE,
    OCCURRED_AT,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    REGION,
    REP,
    TEAM,
)
from features.hierarchy import (
    UNASSIGNED,
    customer_column,
    customer_nodes,
    opportunity_nodes,
    revenue_events,
)

__all__ = [
    "NEW_CUSTOMERS",
    "ORDERS_COUNT",
    "PIPELINE_CREATED",
    "PROCESS_METRICS",
    "RETENTION_RATE",
    "VISIT",
    "VISITS",
    "churned_customers",
    "customer_rows",
    "deal_rows",
    "first_purchases",
    "node_sums",
    "period_revenue",
    "previous_period",
    "process_actuals",
]

NEW_CUSTOMERS = "new_customers"
ORDERS_COUNT = "orders"
PIPELINE_CREATED = "pipeline_created"
VISITS = "visits"
RETENTION_RATE = "retention_rate"
PROCESS_METRICS = (NEW_CUSTOMERS, ORDERS_COUNT, PIPELINE_CREATED, VISITS, RETENTION_RATE)
# The interaction kind a visit target counts.
VISIT = "visit"
_NODE = (REP, TEAM, REGION)


# === nodes ======================================================================================


def _keys(rows: pd.DataFrame, level: str) -> np.ndarray:
    """The key of each row at ``level`` as text; missing -> ``unassigned``."""
    if level == LEVEL_COMPANY:
        return np.full(len(rows), COMPANY_KEY, dtype=object)
    if level not in rows.columns:
        return np.full(len(rows), UNASSIGNED, dtype=object)
    values = rows[level].astype(object)
    return values.where(values.notna(), UNASSIGNED).astype(str).to_numpy(dtype=object)


def node_sums(rows: pd.DataFrame, values: Sequence[str], levels: Sequence[str]) -> pd.DataFrame:
    """``level, key`` and the sums of ``values`` for every node of ``levels`` the rows reach.

    The company is always there (zeros without rows); every other level partitions the same
    rows, so each level's sums add up to the company's.
    """
    parts = []
    for level in levels:
        keys = _keys(rows, level)
        sums = rows[list(values)].groupby(keys).sum() if len(rows) else pd.DataFrame(
            {v: pd.Series(dtype=float) for v in values})
        if level == LEVEL_COMPANY and sums.empty:
            sums = pd.DataFrame({v: [0.0] for v in values}, index=[COMPANY_KEY])
        part = sums.rename_axis(KEY).reset_index()
        part.insert(0, LEVEL, level)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def customer_rows(tables: Tables, customer_ids: pd.Series, extra: Sequence[str]) -> pd.DataFrame:
    """The node of each customer (its account manager's ``rep, team, region``, and the
    customer's own value of each extra level), aligned to ``customer_ids``."""
    nodes = customer_nodes(tables).drop_duplicates(CUSTOMER_ID).set_index(CUSTOMER_ID)
    out = pd.DataFrame({c: customer_ids.map(nodes[c]) for c in _NODE}, index=customer_ids.index)
    for level in extra:
        out[level] = customer_column(tables, level, customer_ids)
    return out


def deal_rows(tables: Tables, deals: pd.DataFrame, extra: Sequence[str]) -> pd.DataFrame:
    """The node of each deal of ``deals`` (rows with ``opportunity_id``): its owner's ``rep,
    team, region``; each extra level from the deal's own column, else from its customer (as the
    feasibility simulation places open deals)."""
    nodes = opportunity_nodes(tables).drop_duplicates(OPPORTUNITY_ID).set_index(OPPORTUNITY_ID)
    ids = deals[OPPORTUNITY_ID]
    out = pd.DataFrame({c: ids.map(nodes[c]) for c in _NODE}, index=deals.index)
    customers = (deals[CUSTOMER_ID] if CUSTOMER_ID in deals.columns
                 else pd.Series(np.nan, index=deals.index, dtype=object))
    for level in extra:
        own = (deals[level] if level in deals.columns
               else pd.Series(np.nan, index=deals.index, dtype=object))
        out[level] = own.where(own.notna(), customer_column(tables, level, customers))
    return out


# === revenue ====================================================================================


def previous_period(start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The period of the same calendar length just before ``[start, end)``."""
    months = (end.year - start.year) * 12 + end.month - start.month
    return start - pd.DateOffset(months=months), start


def period_revenue(tables: Tables, start: pd.Timestamp, end: pd.Timestamp,
                   as_of: pd.Timestamp, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Revenue events dated in ``[start, min(end, as_of))``, with ids and node columns.

    A won deal counts on its close date unless an order dated before ``as_of`` carries it (the
    same rule as the feasibility's revenue closed to date).
    """
    events = revenue_events(tables, as_of=as_of, columns=list(extra), since=start,
                            with_ids=True)
    return events[events[DS] < end].reset_index(drop=True)


def first_purchases(tables: Tables, as_of: pd.Timestamp) -> pd.Series:
    """Day of each customer's first revenue event with a positive amount, before ``as_of``."""
    events = revenue_events(tables, as_of=as_of, with_ids=True)
    bought = events[(events[AMOUNT] > 0) & events[CUSTOMER_ID].notna()]
    return bought.groupby(CUSTOMER_ID)[DS].min()


def churned_customers(tables: Tables, start: pd.Timestamp, end: pd.Timestamp,
                      as_of: pd.Timestamp, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The revenue events of the previous period (:func:`previous_period`) of the customers who
    bought then (a positive total) and bought nothing in ``[start, min(end, as_of))``.

    These rows carry their own nodes, so a churned customer's lost revenue sits where it was
    booked.
    """
    before_start, _ = previous_period(start, end)
    before = period_revenue(tables, before_start, start, as_of, extra)
    now = period_revenue(tables, start, end, as_of, extra)
    totals = before.groupby(CUSTOMER_ID)[AMOUNT].sum()
    buyers = totals.index[totals > 0]
    still = now.loc[now[AMOUNT] > 0, CUSTOMER_ID].dropna().unique()
    gone = buyers.difference(pd.Index(still))
    return before[before[CUSTOMER_ID].isin(gone)].reset_index(drop=True)


# === process metrics ============================================================================


def _window(frame: pd.DataFrame, column: str, start: pd.Timestamp, end: pd.Timestamp,
            as_of: pd.Timestamp) -> pd.DataFrame:
    stop = min(end, as_of)
    return frame[(frame[column] >= start) & (frame[column] < stop)]


def _metric_rows(tables: Tables, metric: str, start: pd.Timestamp, end: pd.Timestamp,
                 as_of: pd.Timestamp, extra: Sequence[str]) -> pd.DataFrame:
    """One row per counted item of ``metric`` with its node columns, ``value`` and (for rates)
    ``base``."""
    if metric in (NEW_CUSTOMERS, ORDERS_COUNT):
        events = period_revenue(tables, start, end, as_of, extra)
        events = events[events[AMOUNT] > 0]
        if metric == NEW_CUSTOMERS:
            first = first_purchases(tables, as_of)
            new = first.index[(first >= start) & (first < end)]
            events = (events[events[CUSTOMER_ID].isin(new)].sort_values(DS, kind="stable")
                      .drop_duplicates(CUSTOMER_ID))
        return events.assign(value=1.0)
    if metric == PIPELINE_CREATED:
        opps = tables.get(OPPORTUNITIES)
        if opps is None:
            return pd.DataFrame({"value": pd.Series(dtype=float)})
        created = _window(opps, CREATED_AT, start, end, as_of)
        return deal_rows(tables, created, extra).assign(
            value=created[AMOUNT].to_numpy(dtype=float))
    if metric == VISITS:
        contacts = tables.get(INTERACTIONS)
        if contacts is None:
            return pd.DataFrame({"value": pd.Series(dtype=float)})
        visits = _window(contacts, OCCURRED_AT, start, end, as_of)
        visits = visits[visits[KIND].astype(str).str.strip().str.lower() == VISIT]
        return customer_rows(tables, visits[CUSTOMER_ID], extra).assign(value=1.0)
    if metric == RETENTION_RATE:
        before_start, _ = previous_period(start, end)
        before = period_revenue(tables, before_start, start, as_of)
        totals = before.groupby(CUSTOMER_ID)[AMOUNT].sum()
        buyers = pd.Series(totals.index[totals > 0], dtype=object)
        now = period_revenue(tables, start, end, as_of)
        still = set(now.loc[now[AMOUNT] > 0, CUSTOMER_ID].dropna())
        return customer_rows(tables, buyers, extra).assign(
            value=buyers.isin(still).to_numpy(dtype=float), base=1.0)
    raise ValueError(f"unknown metric {metric!r}, expected {METRIC_REVENUE} or one of "
                     f"{', '.join(PROCESS_METRICS)}")


def process_actuals(tables: Tables, metric: str, start: pd.Timestamp, end: pd.Timestamp,
                    as_of: pd.Timestamp, levels: Sequence[str]) -> pd.DataFrame:
    """``level, key, actual`` of a process metric in ``[start, min(end, as_of))`` for every
    node of ``levels`` it reaches (see the module docstring for each metric's meaning).

    ``retention_rate`` is a share (NaN where a node had no buyers in the previous period); the
    others are counts, or an amount for ``pipeline_created``.
    """
    extra = [level for level in levels if level not in HIERARCHY_LEVELS]
    rows = _metric_rows(tables, metric, start, end, as_of, extra)
    values = ["value", "base"] if "base" in rows.columns else ["value"]
    sums = node_sums(rows, values, levels)
    if "base" in sums.columns:
        actual = sums["value"] / sums["base"].where(sums["base"] > 0)
    else:
        actual = sums["value"].astype(float)
    return sums[[LEVEL, KEY]].assign(actual=actual.to_numpy(dtype=float))
