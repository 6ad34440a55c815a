"""Revenue summed per node and day before it reaches the forecasts: the same sums on one machine
and on a compute engine, to the last bit, with the driver holding nodes x days rows only.

Revenue series add up revenue events attributed to their node (:func:`features.hierarchy.
revenue_events`). On a large company the events are millions of customer-days; their nodes
(rep, region and the ``--level`` column) are a few hundred. So the events are summed per node
and day first, in three steps that each run on groups of keys (one group on one machine, CRC-32
buckets on an engine, ``engine.compute``):

1. :func:`deal_rows`, by deal: each deal an order dated before the as-of links to, once per
   customer whose order links it (``_at``: where step 2 finds it), and each won deal no such
   order carries (``_at``: its own customer). Every other deal adds no revenue.
2. :func:`order_node_days`, by customer: the customer's orders summed per day and deal
   (:func:`orders_by_day`), with the deals of step 2 attributed as always
   (:func:`features.hierarchy.revenue_events`), as orders-shaped rows: ``customer_id`` the
   node and day as one id (:func:`node_id`), ``order_date`` the day, ``amount``.
3. :func:`node_day_sums`, by node and day: those rows summed (:func:`orders_by_day`: rows in
   one canonical order, so the sum does not depend on how the rows were split into groups).

:func:`node_tables` turns the sums back into tables (one customer per node, whose account
manager is the node's rep): :func:`features.revenue.revenue_series` on them gives the series of
the original tables, summed per node and day first. Limit: without an ``org`` table, the region
of an order linked to another customer's deal is that customer's region only when both
customers fall in the same group (else it is ``unassigned``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from engine.compute import canonical_order
from engine.io import Tables
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    DS,
    HIERARCHY_LEVELS,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDERS,
    ORG,
    OWNER,
    REGION,
    REP,
    STATUS,
    STATUS_LOST,
    STATUS_WON,
    TEAM,
)
from features.hierarchy import UNASSIGNED, revenue_events

__all__ = [
    "AT",
    "CUBE_COLUMNS",
    "SIGN",
    "UNTIL",
    "CubeTables",
    "cube_events",
    "cube_node_days",
    "dated_deal_rows",
    "deal_rows",
    "extra_levels",
    "node_day_sums",
    "node_id",
    "node_tables",
    "order_node_days",
    "orders_by_day",
    "rep_names",
    "revenue_cube",
    "revenue_node_tables",
]

AT = "_at"  # the customer whose group a deal row of step 1 goes to
_SEP, _MISSING = "\x1f", "\x00"  # joins a node's values; stands for a missing one
_NODE, _REP_ROW, _FIRST = "\x1enode", "\x1erep", "\x1efirst"  # ids no real row has


def orders_by_day(orders: pd.DataFrame) -> pd.DataFrame:
    """Orders summed per customer, day, deal (and level column: every column but the
    amount), the rows added in :func:`engine.compute.canonical_order`. Summed on the whole
    table or on buckets of customers (a compute engine), the sums are the same to the last
    bit: revenue series, and so forecasts, do not depend on how the rows were read."""
    orders = canonical_order(orders, ORDERS)
    keys = [c for c in orders.columns if c != AMOUNT]
    summed = orders.groupby(keys, dropna=False, sort=True)[AMOUNT].sum().reset_index()
    return canonical_order(summed[list(orders.columns)], ORDERS)


def _before(frame: pd.DataFrame, column: str, as_of: pd.Timestamp) -> pd.DataFrame:
    return frame[frame[column] < as_of]


def deal_rows(frames: Mapping[str, pd.DataFrame], as_of: pd.Timestamp) -> pd.DataFrame:
    """Step 1 on one group of deals: ``frames`` holds ``opportunities`` and the ``orders``
    linked to them (see the module docstring)."""
    deals = frames[OPPORTUNITIES]
    orders = _before(frames[ORDERS], ORDER_DATE, as_of)
    links = (orders[[OPPORTUNITY_ID, CUSTOMER_ID]].dropna(subset=[OPPORTUNITY_ID])
             .drop_duplicates().rename(columns={CUSTOMER_ID: AT}))
    linked = deals.merge(links, on=OPPORTUNITY_ID, how="inner")
    carried = deals[OPPORTUNITY_ID].isin(links[OPPORTUNITY_ID])
    alone = deals[(deals[STATUS] == STATUS_WON) & ~carried]
    own = alone[CUSTOMER_ID] if CUSTOMER_ID in alone.columns else pd.Series("", index=alone.index)
    alone = alone.assign(**{AT: own.astype(object).where(own.notna(), "")})
    rows = pd.concat([linked, alone], ignore_index=True)[[*deals.columns, AT]]
    return rows.astype({AT: object})


def node_id(events: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """One text per row joining ``columns`` (and the day of ``ds``): each distinct
    combination is joined once."""
    codes = np.zeros(len(events), dtype=np.int64)
    for column in columns:
        values = events[column].astype(object)
        part, _ = pd.factorize(values.where(values.notna(), _MISSING))
        codes, _ = pd.factorize(codes * (int(part.max(initial=0)) + 1) + part)
    day, _ = pd.factorize(events[DS])
    codes, _ = pd.factorize(codes * (int(day.max(initial=0)) + 1) + day)
    _, first = np.unique(codes, return_index=True)  # codes are 0..k-1: first[k] is k's
    texts = pd.DatetimeIndex(events[DS].to_numpy()[first]).strftime("%Y-%m-%d").to_numpy(object)
    for column in reversed(columns):
        values = events[column].iloc[first].astype(object)
        texts = values.where(values.notna(), _MISSING).astype(str).to_numpy(object) + _SEP + texts
    return texts[codes]


def order_node_days(frames: Mapping[str, pd.DataFrame], org: pd.DataFrame | None,
                    levels: Sequence[str], as_of: pd.Timestamp) -> pd.DataFrame:
    """Step 2 on one group of customers: ``frames`` holds their ``orders``, ``customers``
    and the ``opportunities`` rows of step 1 that name them in ``_at``. ``levels``: the extra
    level columns (``product``...)."""
    present: dict[str, pd.DataFrame] = {ORDERS: orders_by_day(
        _before(frames[ORDERS], ORDER_DATE, as_of))}
    if (customers := frames.get(CUSTOMERS)) is not None:
        present[CUSTOMERS] = customers
    if (deals := frames.get(OPPORTUNITIES)) is not None:
        present[OPPORTUNITIES] = (deals.drop(columns=[AT])
                                  .drop_duplicates(OPPORTUNITY_ID, ignore_index=True))
    if org is not None:
        present[ORG] = org
    events = revenue_events(Tables(present), as_of=as_of, columns=list(levels))
    return pd.DataFrame({CUSTOMER_ID: node_id(events, [REP, REGION, *levels]),
                         ORDER_DATE: events[DS].to_numpy(),
                         AMOUNT: events[AMOUNT].to_numpy(dtype=float)})


def node_day_sums(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Step 3 on one group of node-days: the rows of step 2 summed."""
    return orders_by_day(frames[ORDERS])


def rep_names(frame: pd.DataFrame | None, column: str) -> pd.DataFrame:
    """The distinct names of ``column`` (owners, account managers), as ``account_manager``:
    every rep the hierarchy knows besides ``org``'s (:func:`features.hierarchy.rep_hierarchy`)."""
    names = ([] if frame is None or column not in frame.columns
             else list(pd.unique(frame[column].dropna().astype(object))))
    return pd.DataFrame({ACCOUNT_MANAGER: pd.Series(sorted(names), dtype=object)})


def node_tables(sums: pd.DataFrame, org: pd.DataFrame | None, reps: pd.DataFrame,
                levels: Sequence[str], first_created: pd.Timestamp | None,
                has_deals: bool) -> Tables:
    """Tables whose revenue series are those the node-day ``sums`` (step 3) came from: an
    order per node and day, a customer per node (its rep as account manager, its region) and
    per known rep (``reps``: no orders), and, when the data has deals, one lost deal created
    on the first deal's day (the data's first day, :func:`engine.periods.first_day`)."""
    parts = pd.DataFrame([str(s).split(_SEP) for s in sums[CUSTOMER_ID]],
                         columns=[REP, REGION, *levels, "_day"], dtype=object)
    parts = parts.mask(parts == _MISSING)
    node = _NODE + _SEP + sums[CUSTOMER_ID].str.rsplit(_SEP, n=1).str[0].astype(object)
    orders = pd.DataFrame({CUSTOMER_ID: node.to_numpy(dtype=object),
                           ORDER_DATE: sums[ORDER_DATE].to_numpy(),
                           AMOUNT: sums[AMOUNT].to_numpy(dtype=float),
                           **{c: parts[c].to_numpy(dtype=object) for c in levels}})
    first = ~node.duplicated().to_numpy()
    rep = parts[REP].where(parts[REP] != UNASSIGNED)
    named = pd.DataFrame({CUSTOMER_ID: node[first].to_numpy(dtype=object),
                          ACCOUNT_MANAGER: rep[first].to_numpy(dtype=object),
                          REGION: parts[REGION][first].to_numpy(dtype=object)})
    known = reps.assign(**{CUSTOMER_ID: _REP_ROW + _SEP + reps[ACCOUNT_MANAGER].astype(str)})
    frames = {ORDERS: orders, CUSTOMERS: pd.concat([named, known], ignore_index=True)}
    if has_deals:
        frames[OPPORTUNITIES] = pd.DataFrame({
            OPPORTUNITY_ID: [_FIRST], OWNER: pd.Series([None], dtype=object),
            CUSTOMER_ID: pd.Series([None], dtype=object), STATUS: [STATUS_LOST],
            CREATED_AT: pd.Series([first_created], dtype="datetime64[ns]"),
            CLOSE_DATE: pd.Series([pd.NaT], dtype="datetime64[ns]"), AMOUNT: [np.nan]})
    if org is not None:
        frames[ORG] = org
    return Tables(frames)


def extra_levels(tables: Tables, levels: Sequence[str]) -> list[str]:
    """The levels that are columns of the data, not the hierarchy (``product``...)."""
    return [c for c in levels if c not in HIERARCHY_LEVELS and any(
        (frame := tables.get(t)) is not None and c in frame.columns
        for t in (ORDERS, CUSTOMERS, OPPORTUNITIES))]


def revenue_node_tables(tables: Tables, levels: Sequence[str], as_of: pd.Timestamp) -> Tables:
    """:func:`node_tables` of ``tables`` computed here, each step on one group (the sums a
    compute engine gets in buckets, to the last bit)."""
    orders = tables.orders
    deals = None if OPPORTUNITIES in tables.derived else tables.get(OPPORTUNITIES)
    customers = None if CUSTOMERS in tables.derived else tables.get(CUSTOMERS)
    org = tables.get(ORG)
    extra = extra_levels(tables, levels)
    orders = orders[[c for c in dict.fromkeys((CUSTOMER_ID, ORDER_DATE, AMOUNT, OPPORTUNITY_ID,
                                               *extra)) if c in orders.columns]]
    group: dict[str, pd.DataFrame] = {ORDERS: orders}
    if customers is not None:
        group[CUSTOMERS] = customers[[c for c in dict.fromkeys(
            (CUSTOMER_ID, ACCOUNT_MANAGER, REGION, *extra)) if c in customers.columns]]
    first_created = None
    if deals is not None:
        linked = orders[orders[OPPORTUNITY_ID].notna()] if OPPORTUNITY_ID in orders.columns \
            else orders.iloc[:0].assign(**{OPPORTUNITY_ID: pd.Series(dtype=object)})
        group[OPPORTUNITIES] = deal_rows({ORDERS: linked, OPPORTUNITIES: deals}, as_of)
        created = deals[CREATED_AT] if CREATED_AT in deals.columns else pd.Series(dtype=object)
        first_created = created.min() if created.notna().any() else None
    if org is not None:
        org = org[[REP, TEAM, REGION]]
    sums = node_day_sums({ORDERS: order_node_days(group, org, extra, as_of)})
    reps = pd.concat([rep_names(deals, OWNER), rep_names(customers, ACCOUNT_MANAGER)],
                     ignore_index=True).drop_duplicates(ignore_index=True)
    return node_tables(sums, org, reps, extra, first_created, deals is not None)


# === feasibility: revenue events summed per node, day, deal creation day and sign =============
#
# Feasibility reads revenue events as of several dates (its as-of, each backtest point, each
# earlier period's end), with the linked deal's creation day (the run rate counts revenue whose
# deal did not exist yet). The same three steps sum them per node, day, creation day, sign and
# "until" (below), so only those sums reach the driver; :func:`cube_events` answers
# :func:`features.hierarchy.revenue_events` from them for any date up to the as-of.
#
# A won deal no order carries is revenue on its close date; once an order linked to it exists,
# the order is. Seen from a date between the two, the deal is still alone: step 1 gives such a
# deal a second row (its id suffixed, so no order carries it) whose events are kept only as of
# dates up to its first linked order's day (``until``).

UNTIL = "_until"  # the first day a linked order carries a won deal (events kept before it)
SIGN = "_sign"  # "-" for refunds: a node-day's sales and refunds are summed apart
_ALONE = "\x1ealone"  # suffix of a deal's row that stays alone until its first linked order
CUBE_COLUMNS = (DS, AMOUNT, REP, TEAM, REGION)


@dataclass
class CubeTables(Tables):
    """Tables whose revenue events come from ``revenue`` (:func:`revenue_cube`), built as of
    ``as_of`` with the extra ``levels``; their ``orders`` hold no rows. Feasibility reads
    revenue through :func:`cube_events` then (``models.feasibility.inputs``)."""

    revenue: pd.DataFrame | None = None
    levels: tuple[str, ...] = ()
    as_of: pd.Timestamp | None = None
    whole: Tables | None = None  # the tables these were read from, when loaded here
    # Each customer's unlinked revenue of the year before as_of (unlinked_year_revenue),
    # summed where the tables were read: the churn adjustment's, when a champion scores.
    customer_revenue: pd.Series | None = None


def _day_text(values: pd.Series) -> pd.Series:
    """Dates as ``YYYY-MM-DD`` texts (None where missing)."""
    days = pd.to_datetime(values).dt.strftime("%Y-%m-%d").to_numpy(dtype=object)
    days[values.isna().to_numpy()] = None
    return pd.Series(days, index=values.index, dtype=object)


def dated_deal_rows(frames: Mapping[str, pd.DataFrame], as_of: pd.Timestamp) -> pd.DataFrame:
    """Step 1 for feasibility: :func:`deal_rows` with ``_until`` (None), and for each won deal
    whose first linked order (before ``as_of``) came on a later day than its close, one more
    row: the deal alone until that day (id suffixed, ``_at`` its own customer)."""
    rows = deal_rows(frames, as_of).assign(**{UNTIL: None}).astype({UNTIL: object})
    deals = frames[OPPORTUNITIES]
    orders = _before(frames[ORDERS], ORDER_DATE, as_of)
    linked = orders[orders[OPPORTUNITY_ID].notna()]
    if linked.empty or deals.empty or CLOSE_DATE not in deals.columns:
        return rows
    first = linked.groupby(OPPORTUNITY_ID, sort=True)[ORDER_DATE].min().dt.normalize()
    won = deals[deals[STATUS] == STATUS_WON]
    carried = won[OPPORTUNITY_ID].map(first)
    late = (carried > won[CLOSE_DATE].dt.normalize()).to_numpy()
    if not late.any():
        return rows
    copies = won[late]
    own = (copies[CUSTOMER_ID] if CUSTOMER_ID in copies.columns
           else pd.Series(None, index=copies.index, dtype=object))
    copies = copies.assign(**{
        OPPORTUNITY_ID: copies[OPPORTUNITY_ID].astype(str) + _ALONE,
        AT: own.astype(object).where(own.notna(), ""),
        UNTIL: _day_text(carried[late])})
    return pd.concat([rows, copies[rows.columns]], ignore_index=True).astype(
        {AT: object, UNTIL: object})


def cube_node_days(frames: Mapping[str, pd.DataFrame], org: pd.DataFrame | None,
                   levels: Sequence[str], as_of: pd.Timestamp) -> pd.DataFrame:
    """Step 2 for feasibility on one group of customers: like :func:`order_node_days`, the
    id joining rep, team, region, ``levels``, the linked deal's creation day, ``_until`` and
    the sign (each order day's sales and refunds summed apart)."""
    orders = _before(frames[ORDERS], ORDER_DATE, as_of)
    orders = orders.assign(**{SIGN: np.where(orders[AMOUNT].to_numpy(float) < 0, "-", "+")
                              .astype(object)})
    present: dict[str, pd.DataFrame] = {ORDERS: orders_by_day(orders).drop(columns=[SIGN])}
    if (customers := frames.get(CUSTOMERS)) is not None:
        present[CUSTOMERS] = customers
    until = pd.Series(dtype=object)
    if (deals := frames.get(OPPORTUNITIES)) is not None:
        deals = deals.drop(columns=[AT]).drop_duplicates(OPPORTUNITY_ID, ignore_index=True)
        until = deals.set_index(OPPORTUNITY_ID)[UNTIL].dropna()
        present[OPPORTUNITIES] = deals.drop(columns=[UNTIL])
    if org is not None:
        present[ORG] = org
    events = revenue_events(Tables(present), as_of=as_of, columns=list(levels), with_ids=True,
                            with_created=True)
    events[DS] = events[DS].dt.normalize()
    events[CREATED_AT] = _day_text(events[CREATED_AT])
    events[UNTIL] = events[OPPORTUNITY_ID].map(until).astype(object)
    events[SIGN] = np.where(events[AMOUNT].to_numpy(float) < 0, "-", "+").astype(object)
    key = node_id(events, [REP, TEAM, REGION, *levels, CREATED_AT, UNTIL, SIGN])
    return pd.DataFrame({CUSTOMER_ID: key, ORDER_DATE: events[DS].to_numpy(),
                         AMOUNT: events[AMOUNT].to_numpy(dtype=float)})


def revenue_cube(sums: pd.DataFrame, levels: Sequence[str]) -> pd.DataFrame:
    """The node-day sums of step 3 (:func:`node_day_sums` of :func:`cube_node_days`' rows) as
    events: ``ds, amount, rep, team, region``, ``levels``, ``created_at`` and ``_until``
    (NaT where none); node columns as categoricals."""
    head = sums[CUSTOMER_ID].astype(str).str.rsplit(_SEP, n=1).str[0]
    codes, uniques = pd.factorize(head)
    names = [REP, TEAM, REGION, *levels, CREATED_AT, UNTIL, SIGN]
    parts = pd.DataFrame([str(u).split(_SEP) for u in uniques], columns=names, dtype=object)
    parts = parts.mask(parts == _MISSING)
    cube: dict[str, object] = {
        DS: pd.DatetimeIndex(sums[ORDER_DATE]).as_unit("ns").to_numpy(),
        AMOUNT: sums[AMOUNT].to_numpy(dtype=float)}
    for column in (REP, TEAM, REGION, *levels):
        values = parts[column]
        cats = pd.Index(pd.unique(values.dropna()), dtype=object)
        unique_codes = cats.get_indexer(pd.Index(values.to_numpy(dtype=object), dtype=object))
        cube[column] = pd.Categorical.from_codes(cast("Sequence[int]", unique_codes[codes]),
                                                 categories=cats)
    for column in (CREATED_AT, UNTIL):
        days = pd.to_datetime(parts[column]).to_numpy(dtype="datetime64[ns]")
        cube[column] = days[codes] if len(codes) else np.zeros(0, "datetime64[ns]")
    return pd.DataFrame(cube)


def cube_events(cube: pd.DataFrame, as_of: pd.Timestamp | None = None,
                since: pd.Timestamp | None = None, columns: Sequence[str] = (),
                with_created: bool = False) -> pd.DataFrame:
    """:func:`features.hierarchy.revenue_events` (without ids) from the sums of
    :func:`revenue_cube`, as of any date up to the one the cube was built at: events dated in
    ``[since, as_of)``, a won deal's alone row only up to its first linked order's day."""
    keep = np.ones(len(cube), dtype=bool)
    if as_of is not None:
        as_of = pd.Timestamp(as_of)
        until = cube[UNTIL]
        keep &= (cube[DS] < as_of).to_numpy() & (until.isna() | (until >= as_of)).to_numpy()
    if since is not None:
        keep &= (cube[DS] >= pd.Timestamp(since)).to_numpy()
    picked = cube[keep]
    out = {c: picked[c].to_numpy() if c in (DS, AMOUNT) else picked[c].reset_index(drop=True)
           for c in CUBE_COLUMNS}
    for column in columns:
        out[column] = (picked[column].reset_index(drop=True) if column in picked.columns
                       else pd.Series(np.nan, index=range(len(picked)), dtype=object))
    if with_created:
        out[CREATED_AT] = picked[CREATED_AT].to_numpy()
    return pd.DataFrame(out)
