"""Who owns what: reps, teams and regions, and the revenue events attributed to them.

The hierarchy is company > region > team > rep (CONTRACTS.md section 1, table ``org``).
Attribution rule, used by every room that splits money by node:

- an order linked to an opportunity belongs to the opportunity's ``owner``;
- an unlinked order belongs to the customer's ``account_manager``;
- a won opportunity that no order carries counts as revenue on its ``close_date``, owned by its
  ``owner`` (so a CRM-only data directory still has revenue);
- no rep -> rep ``unassigned``; a rep without an ``org`` row -> team and region ``unassigned``.

When the ``org`` table is absent altogether, region falls back to the customer's ``region``
column (if any), so a data directory without reps still has regional series; team is then
``unassigned``. When ``org`` is present, the hierarchy's region always wins and the customers'
own ``region`` column is not used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from engine import schemas as S
from engine.io import Tables

__all__ = [
    "NODE_COLUMNS",
    "UNASSIGNED",
    "attribute_revenue",
    "categorical_columns",
    "customer_column",
    "customer_nodes",
    "opportunity_nodes",
    "period_bounds",
    "rep_hierarchy",
]

UNASSIGNED = "unassigned"
NODE_COLUMNS = (S.REP, S.TEAM, S.REGION)
# Columns that identify or time a row, or name the hierarchy: never offered as categories.
_NOT_CATEGORICAL = frozenset(
    {S.CUSTOMER_ID, S.ORDER_ID, S.OPPORTUNITY_ID, S.ACCOUNT_MANAGER, S.AMOUNT, S.DS,
     *NODE_COLUMNS}
)


def period_bounds(period: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Start and exclusive end of a period written ``2017``, ``2017Q3`` or ``2017-08``."""
    text = str(period).strip()
    if re.fullmatch(S.PERIOD_PATTERN, text) is None:
        raise ValueError(f"period must look like 2017, 2017Q3 or 2017-08, got {period!r}")
    year = int(text[:4])
    if "Q" in text:
        start, months = pd.Timestamp(year, 3 * int(text[5]) - 2, 1), 3
    elif "-" in text:
        start, months = pd.Timestamp(year, int(text[5:7]), 1), 1
    else:
        start, months = pd.Timestamp(year, 1, 1), 12
    return start, start + pd.DateOffset(months=months)


def rep_hierarchy(tables: Tables) -> pd.DataFrame:
    """One row per known rep: ``rep``, ``team``, ``region``; reps outside ``org`` are unassigned."""
    org = tables.get(S.ORG)
    known = (
        org[[S.REP, S.TEAM, S.REGION]].astype(object)
        if org is not None
        else pd.DataFrame({c: pd.Series(dtype=object) for c in NODE_COLUMNS})
    )
    named = [
        frame[column]
        for frame, column in (
            (tables.get(S.OPPORTUNITIES), S.OWNER),
            (tables.get(S.CUSTOMERS), S.ACCOUNT_MANAGER),
        )
        if frame is not None and column in frame.columns
    ]
    seen = pd.unique(pd.concat(named, ignore_index=True).dropna()) if named else []
    extra = sorted(set(seen) - set(known[S.REP]))
    orphans = pd.DataFrame({S.REP: extra, S.TEAM: UNASSIGNED, S.REGION: UNASSIGNED}, dtype=object)
    return pd.concat([known, orphans], ignore_index=True)


def _nodes_of_reps(tables: Tables, reps: pd.Series, fallback_region: pd.Series) -> pd.DataFrame:
    """``rep``, ``team``, ``region`` for each rep value (aligned to ``reps``)."""
    hierarchy = rep_hierarchy(tables).set_index(S.REP)
    rep = reps.astype(object).where(reps.notna(), UNASSIGNED)
    team = rep.map(hierarchy[S.TEAM]).fillna(UNASSIGNED)
    if tables.has(S.ORG):
        region = rep.map(hierarchy[S.REGION]).fillna(UNASSIGNED)
    else:
        region = fallback_region.astype(object).where(fallback_region.notna(), UNASSIGNED)
    return pd.DataFrame({S.REP: rep, S.TEAM: team, S.REGION: region}, index=reps.index)


def customer_column(tables: Tables, column: str, customer_ids: pd.Series) -> pd.Series:
    """A column of ``customers`` for each of ``customer_ids`` (NaN where unknown or absent)."""
    customers = tables.get(S.CUSTOMERS)
    if customers is None or column not in customers.columns:
        return pd.Series(np.nan, index=customer_ids.index, dtype=object)
    values = customers.set_index(S.CUSTOMER_ID)[column]
    return customer_ids.map(values)


def customer_nodes(tables: Tables) -> pd.DataFrame:
    """One row per customer: ``customer_id`` and the node of its account manager."""
    customers = _customers(tables)
    ids = customers[S.CUSTOMER_ID].astype(object)
    manager = _column_or_nan(customers, S.ACCOUNT_MANAGER)
    nodes = _nodes_of_reps(tables, manager, _column_or_nan(customers, S.REGION))
    return pd.concat([ids.rename(S.CUSTOMER_ID), nodes], axis=1).reset_index(drop=True)


def opportunity_nodes(tables: Tables) -> pd.DataFrame:
    """One row per opportunity: ``opportunity_id`` and the node of its owner."""
    opps = tables[S.OPPORTUNITIES]
    region = customer_column(tables, S.REGION, _column_or_nan(opps, S.CUSTOMER_ID))
    nodes = _nodes_of_reps(tables, opps[S.OWNER], region)
    ids = opps[S.OPPORTUNITY_ID].astype(object).rename(S.OPPORTUNITY_ID)
    return pd.concat([ids, nodes], axis=1).reset_index(drop=True)


def _customers(tables: Tables) -> pd.DataFrame:
    """The customers table, or the customer ids of ``orders`` when it is absent."""
    customers = tables.get(S.CUSTOMERS)
    if customers is not None:
        return customers
    return pd.DataFrame({S.CUSTOMER_ID: tables[S.ORDERS][S.CUSTOMER_ID].drop_duplicates()})


def _column_or_nan(frame: pd.DataFrame, column: str) -> pd.Series:
    if column in frame.columns:
        return frame[column]
    return pd.Series(np.nan, index=frame.index, dtype=object)


def _is_categorical(values: pd.Series) -> bool:
    return bool(
        pd.api.types.is_object_dtype(values)
        or pd.api.types.is_string_dtype(values)
        or isinstance(values.dtype, pd.CategoricalDtype)
    )


def categorical_columns(tables: Tables) -> dict[str, str]:
    """Categorical columns usable as levels: column -> table (``orders`` wins over customers)."""
    found: dict[str, str] = {}
    for table in (S.ORDERS, S.CUSTOMERS):
        frame = tables.get(table)
        if frame is None:
            continue
        for column in frame.columns:
            is_region = column == S.REGION and table == S.CUSTOMERS
            if column in _NOT_CATEGORICAL or column in found or is_region:
                continue
            if _is_categorical(frame[column]):
                found[str(column)] = table
    return found


def _take(values: pd.Series, positions: np.ndarray) -> np.ndarray:
    """``values`` at ``positions``, NaN where the position is -1 (not found)."""
    padded = np.append(values.to_numpy(dtype=object), np.nan)
    return padded[np.where(positions < 0, len(values), positions)]


def _order_events(tables: Tables, as_of: pd.Timestamp | None, columns: Sequence[str]
                  ) -> pd.DataFrame:
    """Revenue events from orders, attributed to the linked deal's owner or the account manager."""
    orders = tables[S.ORDERS]
    if as_of is not None:
        orders = orders[orders[S.ORDER_DATE] < as_of]
    cust = customer_nodes(tables)
    cust_pos = pd.Index(cust[S.CUSTOMER_ID]).get_indexer(orders[S.CUSTOMER_ID])
    opp_pos = _opportunity_positions(tables, _column_or_nan(orders, S.OPPORTUNITY_ID))
    opp_nodes = opportunity_nodes(tables) if tables.has(S.OPPORTUNITIES) else cust.iloc[:0]
    linked = opp_pos >= 0
    events = {
        S.CUSTOMER_ID: orders[S.CUSTOMER_ID].to_numpy(dtype=object),
        S.DS: orders[S.ORDER_DATE].to_numpy(),
        S.AMOUNT: orders[S.AMOUNT].to_numpy(dtype=float),
    }
    for column in NODE_COLUMNS:
        by_owner = _take(opp_nodes[column], opp_pos)
        by_manager = _take(cust[column], cust_pos)
        events[column] = np.where(linked, by_owner, by_manager)
    events[S.OPPORTUNITY_ID] = _column_or_nan(orders, S.OPPORTUNITY_ID).to_numpy(dtype=object)
    frame = pd.DataFrame(events)
    return _with_categories(frame, tables, columns, orders, cust_pos)


def _opportunity_positions(tables: Tables, opportunity_ids: pd.Series) -> np.ndarray:
    """Row of each id in ``opportunities`` (-1 when unlinked or the table is absent)."""
    opps = tables.get(S.OPPORTUNITIES)
    if opps is None:
        return np.full(len(opportunity_ids), -1, dtype=np.intp)
    return pd.Index(opps[S.OPPORTUNITY_ID]).get_indexer(opportunity_ids)


def _with_categories(events: pd.DataFrame, tables: Tables, columns: Sequence[str],
                     own: pd.DataFrame, cust_pos: np.ndarray) -> pd.DataFrame:
    """Add categorical columns: the event's own value, else the customer's."""
    customers = tables.get(S.CUSTOMERS)
    for column in columns:
        if column in own.columns:
            events[column] = own[column].to_numpy(dtype=object)
        elif customers is not None and column in customers.columns:
            events[column] = _take(customers[column], cust_pos)
        else:
            events[column] = np.full(len(events), np.nan, dtype=object)
    return events


def _won_deal_events(tables: Tables, as_of: pd.Timestamp | None, columns: Sequence[str]
                     ) -> pd.DataFrame:
    """Revenue events of won opportunities that no (visible) order carries, on ``close_date``."""
    opps = tables[S.OPPORTUNITIES]
    orders = tables[S.ORDERS]
    won = (opps[S.STATUS] == S.STATUS_WON).to_numpy()
    if as_of is not None:
        won &= (opps[S.CLOSE_DATE] < as_of).to_numpy()
        orders = orders[orders[S.ORDER_DATE] < as_of]
    # Point in time: an order that arrives after as_of does not yet replace the deal's revenue.
    carried = _column_or_nan(orders, S.OPPORTUNITY_ID).dropna().unique()
    keep = won & ~opps[S.OPPORTUNITY_ID].isin(carried).to_numpy()
    deals = opps[keep]
    nodes = opportunity_nodes(tables)[keep].reset_index(drop=True)
    customer_ids = _column_or_nan(deals, S.CUSTOMER_ID)
    events = pd.DataFrame({
        S.CUSTOMER_ID: customer_ids.to_numpy(dtype=object),
        S.DS: deals[S.CLOSE_DATE].to_numpy(),
        S.AMOUNT: deals[S.AMOUNT].to_numpy(dtype=float),
        **{c: nodes[c].to_numpy(dtype=object) for c in NODE_COLUMNS},
        S.OPPORTUNITY_ID: deals[S.OPPORTUNITY_ID].to_numpy(dtype=object),
    })
    cust_pos = pd.Index(_customers(tables)[S.CUSTOMER_ID]).get_indexer(customer_ids)
    return _with_categories(events, tables, columns, deals, cust_pos)


def attribute_revenue(tables: Tables, as_of: pd.Timestamp | None = None,
                      columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Revenue events with their node: ``customer_id, ds, amount, rep, team, region,
    opportunity_id`` and categorical columns of orders/customers.

    Args:
        tables: validated tables; ``orders`` is required.
        as_of: when given, only orders dated before it and deals closed before it count, and a
            won deal is matched only against orders dated before it.
        columns: categorical columns to carry (default: all of :func:`categorical_columns`).
    """
    wanted = list(categorical_columns(tables)) if columns is None else list(columns)
    parts = [_order_events(tables, as_of, wanted)]
    if tables.has(S.OPPORTUNITIES):
        parts.append(_won_deal_events(tables, as_of, wanted))
    events = pd.concat(parts, ignore_index=True)
    events[S.DS] = events[S.DS].astype("datetime64[ns]")
    return events
