"""Who owns what: reps, teams and regions, and the revenue events attributed to them.

The hierarchy is company > region > team > rep (table ``org``).
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

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    COMPANY_KEY,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    DS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    OWNER,
    REGION,
    REP,
    STATUS,
    STATUS_WON,
    TEAM,
)

__all__ = [
    "NODE_COLUMNS",
    "UNASSIGNED",
    "attribute_revenue",
    "categorical_columns",
    "customer_column",
    "customer_nodes",
    "hierarchy_nodes",
    "node_actuals",
    "opportunity_nodes",
    "rep_hierarchy",
    "revenue_events",
    "unlinked_year_revenue",
]

UNASSIGNED = "unassigned"
# (since, as_of): events dated in [since, as_of); None leaves that end open.
_Window = tuple[pd.Timestamp | None, pd.Timestamp | None]
NODE_COLUMNS = (REP, TEAM, REGION)
# Columns that identify or time a row, or name the hierarchy: never offered as categories.
_NOT_CATEGORICAL = frozenset(
    {CUSTOMER_ID, ORDER_ID, OPPORTUNITY_ID, ACCOUNT_MANAGER, AMOUNT, DS,
     *NODE_COLUMNS}
)




def rep_hierarchy(tables: Tables) -> pd.DataFrame:
    """One row per known rep: ``rep``, ``team``, ``region``; reps outside ``org`` are unassigned."""
    org = tables.get(ORG)
    known = (
        org[[REP, TEAM, REGION]].astype(object)
        if org is not None
        else pd.DataFrame({c: pd.Series(dtype=object) for c in NODE_COLUMNS})
    )
    named = [
        frame[column]
        for frame, column in (
            (tables.get(OPPORTUNITIES), OWNER),
            (tables.get(CUSTOMERS), ACCOUNT_MANAGER),
        )
        if frame is not None and column in frame.columns
    ]
    seen = pd.unique(pd.concat(named, ignore_index=True).dropna()) if named else []
    extra = sorted(set(seen) - set(known[REP]))
    orphans = pd.DataFrame({REP: extra, TEAM: UNASSIGNED, REGION: UNASSIGNED}, dtype=object)
    return pd.concat([known, orphans], ignore_index=True)


def _nodes_of_reps(tables: Tables, reps: pd.Series, fallback_region: pd.Series) -> pd.DataFrame:
    """``rep``, ``team``, ``region`` for each rep value (aligned to ``reps``)."""
    hierarchy = rep_hierarchy(tables).set_index(REP)
    rep = reps.astype(object).where(reps.notna(), UNASSIGNED)
    team = rep.map(hierarchy[TEAM]).fillna(UNASSIGNED)
    if tables.has(ORG):
        region = rep.map(hierarchy[REGION]).fillna(UNASSIGNED)
    else:
        region = fallback_region.astype(object).where(fallback_region.notna(), UNASSIGNED)
    return pd.DataFrame({REP: rep, TEAM: team, REGION: region}, index=reps.index)


def customer_column(tables: Tables, column: str, customer_ids: pd.Series) -> pd.Series:
    """A column of ``customers`` for each of ``customer_ids`` (NaN where unknown or absent)."""
    customers = tables.get(CUSTOMERS)
    if customers is None or column not in customers.columns:
        return pd.Series(np.nan, index=customer_ids.index, dtype=object)
    values = customers.set_index(CUSTOMER_ID)[column]
    return customer_ids.map(values)


def customer_nodes(tables: Tables) -> pd.DataFrame:
    """One row per customer: ``customer_id`` and the node of its account manager."""
    customers = _customers(tables)
    ids = customers[CUSTOMER_ID].astype(object)
    manager = _column_or_nan(customers, ACCOUNT_MANAGER)
    nodes = _nodes_of_reps(tables, manager, _column_or_nan(customers, REGION))
    return pd.concat([ids.rename(CUSTOMER_ID), nodes], axis=1).reset_index(drop=True)


def opportunity_nodes(tables: Tables) -> pd.DataFrame:
    """One row per opportunity: ``opportunity_id`` and the node of its owner."""
    opps = tables[OPPORTUNITIES]
    region = customer_column(tables, REGION, _column_or_nan(opps, CUSTOMER_ID))
    nodes = _nodes_of_reps(tables, opps[OWNER], region)
    ids = opps[OPPORTUNITY_ID].astype(object).rename(OPPORTUNITY_ID)
    return pd.concat([ids, nodes], axis=1).reset_index(drop=True)


def _customers(tables: Tables) -> pd.DataFrame:
    """The customers table, or the customer ids of ``orders`` when it is absent."""
    customers = tables.get(CUSTOMERS)
    if customers is not None:
        return customers
    return pd.DataFrame({CUSTOMER_ID: tables[ORDERS][CUSTOMER_ID].drop_duplicates()})


def _column_or_nan(frame: pd.DataFrame, column: str) -> pd.Series:
    """``frame[column]``, or missing values when the column is absent."""
    if column in frame.columns:
        return frame[column]
    return pd.Series(np.nan, index=frame.index, dtype=object)


# A column of numbers is a level only with at most this many distinct values (a tier 1/2/3);
# more (quantities, counts, years, amounts) is a measure, not something to group rows by.
MAX_NUMERIC_LEVEL_VALUES = 10
_LOOK_AT = 1_000


def _head(values: pd.Series) -> pd.Series:
    """The first :data:`_LOOK_AT` values that are not missing (without copying a long column
    unless its start is mostly missing)."""
    head = values.iloc[:10 * _LOOK_AT].dropna()
    if len(head) < _LOOK_AT < len(values):
        head = values.dropna()
    return head.iloc[:_LOOK_AT]


def _is_categorical(values: pd.Series) -> bool:
    """Names a level can group by: text or categorical values that are not all numbers, or
    numbers with few distinct values (:data:`MAX_NUMERIC_LEVEL_VALUES`).

    Extra columns are read as text, so ``quantity`` arrives as ``"6"``, ``"12"``...: text that
    reads as numbers counts as numbers. Decided on the first :data:`_LOOK_AT` values (a column
    whose first thousand values are numbers is one of numbers), all of them only to count the
    distinct values of a column of few, so millions of rows cost little.
    """
    if isinstance(values.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(values):
        return True
    numeric = pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values)
    if not numeric:
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            return False
        text = _head(values).astype(str).str.strip()
        if pd.to_numeric(text[text != ""], errors="coerce").isna().any():
            return True
    if _head(values).nunique() > MAX_NUMERIC_LEVEL_VALUES:
        return False
    return bool(values.nunique() <= MAX_NUMERIC_LEVEL_VALUES)


def categorical_columns(tables: Tables) -> dict[str, str]:
    """Categorical columns usable as levels: column -> table (``orders`` wins over customers).

    Columns of numbers with many distinct values (quantity, n_lines, profit, employees) are
    measures, not levels (:func:`_is_categorical`)."""
    found: dict[str, str] = {}
    for table in (ORDERS, CUSTOMERS):
        frame = tables.get(table)
        if frame is None:
            continue
        for column in frame.columns:
            is_region = column == REGION and table == CUSTOMERS
            if column in _NOT_CATEGORICAL or column in found or is_region:
                continue
            if _is_categorical(frame[column]):
                found[str(column)] = table
    return found


def _positions(index: pd.Index, values: pd.Series) -> np.ndarray:
    """Position of each value in ``index``, -1 where absent (missing values included)."""
    # Hash the (many) values once, then look up only the distinct ones: get_indexer on millions
    # of objects would also infer their type first, costing a second full pass.
    codes, uniques = pd.factorize(values.to_numpy(dtype=object))
    found = np.append(index.get_indexer(pd.Index(uniques, dtype=object)), -1)
    return found[codes]


def _categories(*values: pd.Series) -> pd.Index:
    """``unassigned`` first (code 0), then every other value seen."""
    head = pd.Series([UNASSIGNED], dtype=object)
    return pd.Index(pd.unique(pd.concat([head, *values], ignore_index=True).dropna()))


@dataclass(frozen=True)
class _NodeLookup:
    """Node codes per customer row and per deal row; a trailing code answers position -1."""

    customer_ids: pd.Index
    deal_ids: pd.Index
    categories: dict[str, pd.Index]
    by_customer: dict[str, np.ndarray]
    by_deal: dict[str, np.ndarray]


def _node_lookup(tables: Tables) -> _NodeLookup:
    """Codes once per customer and per deal, so millions of orders only index arrays."""
    cust = customer_nodes(tables)
    if tables.has(OPPORTUNITIES):
        deals = opportunity_nodes(tables)
    else:
        deals = cust.iloc[:0].rename(columns={CUSTOMER_ID: OPPORTUNITY_ID})
    cats = {c: _categories(cust[c], deals[c]) for c in NODE_COLUMNS}
    return _NodeLookup(
        customer_ids=pd.Index(cust[CUSTOMER_ID]),
        deal_ids=pd.Index(deals[OPPORTUNITY_ID]),
        categories=cats,
        by_customer={c: np.append(_positions(cats[c], cust[c]), 0) for c in NODE_COLUMNS},
        by_deal={c: np.append(_positions(cats[c], deals[c]), 0) for c in NODE_COLUMNS},
    )


def _node_columns(lookup: _NodeLookup, cust_pos: np.ndarray, deal_pos: np.ndarray
                  ) -> dict[str, pd.Categorical]:
    """rep, team, region of each event: the linked deal's owner, else the account manager's."""
    # One row number into [customers..., "no customer", deals..., "no deal"] serves all columns.
    offset = len(lookup.customer_ids) + 1
    by_customer = np.where(cust_pos >= 0, cust_pos, offset - 1)
    rows = np.where(deal_pos >= 0, deal_pos + offset, by_customer)
    codes = {c: np.concatenate([lookup.by_customer[c], lookup.by_deal[c]])[rows]
             for c in NODE_COLUMNS}
    return {c: pd.Categorical.from_codes(cast("Sequence[int]", codes[c]),
                                         categories=lookup.categories[c])
            for c in NODE_COLUMNS}


def _customer_categorical(tables: Tables, column: str, cust_pos: np.ndarray) -> pd.Categorical:
    """A customers column at ``cust_pos`` (-1 -> missing), as a categorical."""
    values = _column_or_nan(_customers(tables), column)
    cats = pd.Index(pd.unique(values.dropna()))
    codes = np.append(_positions(cats, values), -1)
    return pd.Categorical.from_codes(codes[cust_pos], categories=cats)


def _extra_columns(tables: Tables, columns: Sequence[str], own: pd.DataFrame,
                   cust_pos: np.ndarray, keep: np.ndarray | None = None) -> dict[str, object]:
    """Categorical columns of each event: its own (order or deal) value, else its customer's
    (``own``'s rows picked by ``keep``, all when None; ``cust_pos`` already picked)."""
    extra: dict[str, object] = {}
    for column in columns:
        if column in own.columns:
            extra[column] = _picked(own[column].to_numpy(dtype=object), keep)
        else:
            extra[column] = _customer_categorical(tables, column, cust_pos)
    return extra


def _dated(frame: pd.DataFrame, column: str, window: _Window) -> pd.DataFrame:
    """Rows of ``frame`` dated in [since, as_of) (open ends where None)."""
    keep = _in_window(frame[column], window)
    return frame if keep is None else frame[keep]


def _in_window(dates: pd.Series, window: _Window) -> np.ndarray | None:
    """Which ``dates`` lie in [since, as_of) (open ends where None); None when all do."""
    since, as_of = window
    keep = np.ones(len(dates), dtype=bool)
    if since is not None:
        keep &= (dates >= since).to_numpy()
    if as_of is not None:
        keep &= (dates < as_of).to_numpy()
    return None if bool(keep.all()) else keep


@dataclass(frozen=True)
class _OrderRows:
    """Each order's row in ``customers`` and in ``opportunities`` (-1: none), found once."""

    customer: np.ndarray
    deal: np.ndarray


# The orders' rows, by the (orders, customers, opportunities) frames they were found in: every
# window of the same tables (a feasibility run looks at a dozen: its as-of, each backtest point
# and each earlier period's end) indexes them instead of hashing millions of ids again. Weak
# references, compared by identity, so other frames never hit and nothing is kept alive;
# frames are taken as unchanged once built (every step derives new frames).
_ORDER_ROWS: list[tuple[tuple[weakref.ref[pd.DataFrame] | None, ...], _OrderRows]] = []


def _frames_key(tables: Tables) -> tuple[weakref.ref[pd.DataFrame] | None, ...]:
    return tuple(None if (frame := tables.get(name)) is None else weakref.ref(frame)
                 for name in (ORDERS, CUSTOMERS, OPPORTUNITIES))


def _same_frames(key: tuple[weakref.ref[pd.DataFrame] | None, ...], tables: Tables) -> bool:
    return all((ref is None and tables.get(name) is None)
               or (ref is not None and ref() is tables.get(name))
               for ref, name in zip(key, (ORDERS, CUSTOMERS, OPPORTUNITIES), strict=True))


def _order_rows(tables: Tables, lookup: _NodeLookup) -> _OrderRows:
    """Rows of every order's customer and linked deal (:data:`_ORDER_ROWS`), as int32."""
    for key, rows in _ORDER_ROWS:
        if _same_frames(key, tables) and len(rows.customer) == len(tables[ORDERS]):
            return rows
    orders = tables[ORDERS]
    found = _OrderRows(
        customer=_positions(lookup.customer_ids, orders[CUSTOMER_ID]).astype(np.int32),
        deal=_deal_positions(lookup, _column_or_nan(orders, OPPORTUNITY_ID)).astype(np.int32))
    _ORDER_ROWS[:] = [(_frames_key(tables), found)]  # one set of tables at a time
    return found


def _deal_positions(lookup: _NodeLookup, linked_ids: pd.Series) -> np.ndarray:
    """Row of each linked deal in ``opportunities``; -1 for unlinked orders (looked up sparsely)."""
    linked = linked_ids.notna().to_numpy()
    positions = np.full(len(linked_ids), -1, dtype=np.intp)
    positions[linked] = _positions(lookup.deal_ids, linked_ids[linked])
    return positions


def _created_at(tables: Tables, deal_pos: np.ndarray) -> pd.Series:
    """The ``created_at`` of each deal row (NaT at -1 or without ``opportunities``)."""
    opps = tables.get(OPPORTUNITIES)
    if opps is None or CREATED_AT not in opps.columns:
        return pd.Series(np.full(len(deal_pos), np.datetime64("NaT"), dtype="datetime64[ns]"))
    created = opps[CREATED_AT].to_numpy(dtype="datetime64[ns]")
    return pd.Series(np.append(created, np.datetime64("NaT"))[deal_pos])


def _picked(values: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    return values if keep is None else values[keep]


def _order_events(tables: Tables, lookup: _NodeLookup, window: _Window, columns: Sequence[str],
                  with_ids: bool, with_created: bool) -> pd.DataFrame:
    """Revenue events from orders, attributed to the linked deal's owner or the account manager.

    The orders frame is never copied: its columns and the rows found once
    (:func:`_order_rows`) are indexed by the window's mask."""
    orders = tables[ORDERS]
    keep = _in_window(orders[ORDER_DATE], window)
    rows = _order_rows(tables, lookup)
    cust_pos, deal_pos = _picked(rows.customer, keep), _picked(rows.deal, keep)
    ids = {CUSTOMER_ID: _picked(orders[CUSTOMER_ID].to_numpy(dtype=object), keep),
           OPPORTUNITY_ID: _picked(_column_or_nan(orders, OPPORTUNITY_ID).to_numpy(dtype=object),
                                   keep)} if with_ids else {}
    return pd.DataFrame({
        DS: _picked(orders[ORDER_DATE].to_numpy(), keep),
        AMOUNT: _picked(orders[AMOUNT].to_numpy(dtype=float), keep),
        **_node_columns(lookup, cust_pos, deal_pos),
        **ids,
        **({CREATED_AT: _created_at(tables, deal_pos).to_numpy()} if with_created else {}),
        **_extra_columns(tables, columns, orders, cust_pos, keep),
    })


def _won_deal_events(tables: Tables, lookup: _NodeLookup, window: _Window,
                     columns: Sequence[str], with_ids: bool, with_created: bool
                     ) -> pd.DataFrame:
    """Revenue events of won opportunities that no (visible) order carries, on ``close_date``."""
    opps = tables[OPPORTUNITIES]
    # Point in time: an order that arrives after as_of does not yet replace the deal's revenue.
    before = _in_window(tables[ORDERS][ORDER_DATE], (None, window[1]))
    carried_rows = _picked(_order_rows(tables, lookup).deal, before)
    carried = np.zeros(len(opps) + 1, dtype=bool)
    carried[carried_rows] = True  # -1 (unlinked orders) marks the spare last slot
    won = (opps[STATUS] == STATUS_WON).to_numpy() & ~carried[:-1]
    deals = _dated(opps[won], CLOSE_DATE, window)
    customer_ids = _column_or_nan(deals, CUSTOMER_ID)
    cust_pos = _positions(lookup.customer_ids, customer_ids)
    deal_pos = _positions(lookup.deal_ids, deals[OPPORTUNITY_ID])
    ids = {CUSTOMER_ID: customer_ids.to_numpy(dtype=object),
           OPPORTUNITY_ID: deals[OPPORTUNITY_ID].to_numpy(dtype=object)} if with_ids else {}
    return pd.DataFrame({
        DS: deals[CLOSE_DATE].to_numpy(),
        AMOUNT: deals[AMOUNT].to_numpy(dtype=float),
        **_node_columns(lookup, cust_pos, deal_pos),
        **ids,
        **({CREATED_AT: _created_at(tables, deal_pos).to_numpy()} if with_created else {}),
        **_extra_columns(tables, columns, deals, cust_pos),
    })


def revenue_events(tables: Tables, as_of: pd.Timestamp | None = None,
                   columns: Sequence[str] = (), since: pd.Timestamp | None = None,
                   with_ids: bool = False, with_created: bool = False) -> pd.DataFrame:
    """Like :func:`attribute_revenue`, lean: ``ds, amount, rep, team, region`` + ``columns``.

    ``since`` keeps events dated on or after it (a won deal is still matched against every
    order before ``as_of``); ``with_ids`` adds ``customer_id`` and ``opportunity_id``;
    ``with_created`` adds ``created_at``, the linked deal's creation date (NaT when unlinked).
    """
    wanted = list(columns)
    lookup = _node_lookup(tables)
    window = (None if since is None else pd.Timestamp(since),
              None if as_of is None else pd.Timestamp(as_of))
    parts = [_order_events(tables, lookup, window, wanted, with_ids, with_created)]
    if tables.has(OPPORTUNITIES):
        parts.append(_won_deal_events(tables, lookup, window, wanted, with_ids, with_created))
    events = pd.concat(parts, ignore_index=True)
    if events[DS].dtype != "datetime64[ns]":
        events[DS] = events[DS].astype("datetime64[ns]")
    return events


def unlinked_year_revenue(tables: Tables, as_of: pd.Timestamp) -> pd.Series:
    """Each customer's revenue from orders no deal is linked to, dated in the year (365 days)
    before ``as_of``: the recurring revenue churn puts at risk. A customer's sum depends on
    that customer's orders alone (buckets of customers sum to the whole)."""
    when = pd.Timestamp(as_of)
    events = revenue_events(tables, as_of=when, since=when - pd.Timedelta(days=365),
                            with_ids=True)
    recent = events[events[OPPORTUNITY_ID].isna()]
    return recent.groupby(CUSTOMER_ID)[AMOUNT].sum()


def attribute_revenue(tables: Tables, as_of: pd.Timestamp | None = None,
                      columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Revenue events with their node: ``customer_id, ds, amount, rep, team, region,
    opportunity_id`` and categorical columns of orders/customers.

    ``rep``, ``team``, ``region`` and the columns taken from ``customers`` are pandas
    categoricals (cheap on millions of orders); ``opportunity_id`` is set on pipeline revenue
    (linked orders, won deals without an order) and missing on run-rate revenue.

    Args:
        tables: validated tables; ``orders`` is required.
        as_of: when given, only orders dated before it and deals closed before it count, and a
            won deal is matched only against orders dated before it.
        columns: categorical columns to carry (default: all of :func:`categorical_columns`).
    """
    wanted = list(categorical_columns(tables)) if columns is None else list(columns)
    events = revenue_events(tables, as_of=as_of, columns=wanted, with_ids=True)
    order = [CUSTOMER_ID, DS, AMOUNT, *NODE_COLUMNS, OPPORTUNITY_ID, *wanted]
    return events[order]


def hierarchy_nodes(tables: Tables) -> pd.DataFrame:
    """Every node a target may name, as ``level, key``: the company, then regions, teams and
    reps (sorted). With ``org`` they are its regions, teams and reps; without it the reps are
    the deals' owners and account managers and the regions the customers' own; ``unassigned``
    is never a node."""
    org = tables.get(ORG)
    reps = rep_hierarchy(tables)[REP]
    if org is not None:
        named = {REGION: org[REGION], TEAM: org[TEAM], REP: reps}
    else:
        named = {REGION: _column_or_nan(_customers(tables), REGION),
                 TEAM: pd.Series(dtype=object), REP: reps}
    rows = [(LEVEL_COMPANY, COMPANY_KEY)]
    for level in (REGION, TEAM, REP):
        keys = sorted({str(k) for k in named[level].dropna()} - {UNASSIGNED})
        rows += [(level, key) for key in keys]
    return pd.DataFrame(rows, columns=[LEVEL, KEY], dtype=object)


def node_actuals(tables: Tables, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """Revenue dated in [since, until) per node of :func:`hierarchy_nodes`: ``level, key,
    amount`` (0 for a node without revenue; attribution as in :func:`revenue_events`)."""
    events = revenue_events(tables, as_of=until, since=since)
    sums = {(LEVEL_COMPANY, COMPANY_KEY): float(events[AMOUNT].sum())}
    for level in (REGION, TEAM, REP):
        by_node = events.groupby(events[level].astype(object))[AMOUNT].sum()
        sums.update({(level, str(k)): float(v) for k, v in by_node.items()})
    nodes = hierarchy_nodes(tables)
    amounts = [sums.get((lvl, key), 0.0) for lvl, key in zip(nodes[LEVEL], nodes[KEY],
                                                              strict=True)]
    return nodes.assign(**{AMOUNT: amounts})
