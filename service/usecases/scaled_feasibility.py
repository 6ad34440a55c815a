"""Feasibility's tables read on a compute engine (``feasibility --engine pandas|spark``).

The orders are the big table (90 million rows on the 10x demo company); feasibility needs only
their revenue per node and day, with each linked deal's creation day (the run rate counts
revenue whose deal did not exist yet) and whether a won deal was carried by an order yet. So
the engine reads only the revenue columns dated before the as-of and sums them in the three
steps of :mod:`features.revenue_nodes` (by deal, by customer, by node and day), each on CRC-32
buckets of keys; only those sums reach this process (:class:`features.revenue_nodes
.CubeTables`), beside the org chart, the targets, the customers' owners and regions, the deals
and their stage history (dated before the as-of; given ``open_at``, only the history of the
deals open at those dates). Both engines run the same functions on the
same buckets and hand over the tables in the same row order, so the feasibility is the same to
the last bit on either.

Without a champion win model, the stage rates are learned from the deals seen every few weeks
back (:func:`engine_stage_rates`): each bucket of deals is seen and labelled where the engine
computes, and only the sums the rates are learned from (a few thousand cells,
:func:`models.win.stage_rate_counts`) reach this process; the rates are those of one machine.

With a churn champion, the customers are scored on the engine
(:func:`service.usecases.scaled.engine_churn_scorer`) and each customer's unlinked revenue of
the year is summed there (:func:`with_customer_revenue`): the churn adjustment's weights.

Not on this path: the snapshots of the product, segment and channel nodes the board's trend
keeps (their columns are not read here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import pandas as pd

from engine.compute import ComputeEngine, PandasEngine, TableRead, empty_group
from engine.io.tables import Tables, empty_table
from engine.periods import as_of_after, default_as_of
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    ENTERED_AT,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    OWNER,
    REGION,
    REP,
    STAGE_HISTORY,
    STATUS,
    TABLES,
    TARGETS,
    TEAM,
)
from features.funnel import open_at_any, snapshot_date
from features.hierarchy import unlinked_year_revenue
from features.revenue_nodes import (
    AT,
    CubeTables,
    cube_node_days,
    dated_deal_rows,
    node_day_sums,
    revenue_cube,
)
from models.feasibility import fit_stage_rates
from models.feasibility.backtest import earlier_points
from models.feasibility.period import stage_rate_counts_at, stage_rate_dates
from models.win import StageRateWinModel, add_counts
from service.usecases.scaled import bucket_count, bucket_tables

__all__ = ["FEASIBILITY_READS", "engine_stage_rates", "feasibility_dates", "feasibility_tables",
           "snapshot_tables", "with_customer_revenue"]

_ORDERS_SCHEMA = f"{CUSTOMER_ID} string, {ORDER_DATE} timestamp_ntz, {AMOUNT} double"
_LINKED_SCHEMA = f"{CUSTOMER_ID} string, {ORDER_DATE} timestamp_ntz, {OPPORTUNITY_ID} string"


def _all(table: str) -> tuple[str, ...]:
    """Every column of ``table``; a deal's stage history also its expected close then."""
    extra = (CLOSE_DATE,) if table == STAGE_HISTORY else ()
    return tuple(c for c in (*TABLES[table].columns, *extra) if c != ORDER_ID)


# The tables that come whole (dated ones before the as-of), each by its key.
_WHOLE: dict[str, tuple[str, str | None]] = {
    ORG: (REP, None), TARGETS: (KEY, None), OPPORTUNITIES: (OPPORTUNITY_ID, CREATED_AT),
    STAGE_HISTORY: (OPPORTUNITY_ID, ENTERED_AT)}
FEASIBILITY_READS: tuple[TableRead, ...] = (
    *(TableRead(t, _all(t), date) for t, (_, date) in _WHOLE.items()),
    TableRead(CUSTOMERS, (CUSTOMER_ID, ACCOUNT_MANAGER, REGION)),
    TableRead(ORDERS, (CUSTOMER_ID, ORDER_DATE, AMOUNT, OPPORTUNITY_ID), ORDER_DATE),
)
_REVENUE_DEALS = (OPPORTUNITY_ID, OWNER, CUSTOMER_ID, STATUS, CREATED_AT, CLOSE_DATE, AMOUNT)


def _as_read(frames: dict[str, pd.DataFrame], table: str) -> pd.DataFrame:
    """The table as read; a column outside the schema (a stage's expected close) as the
    text of its day, as a CSV file gives it (what any engine can return as text)."""
    frame = frames[table]
    extra = [c for c in frame.columns if c not in TABLES[table].columns]
    if not extra or frame.empty:
        return frame
    out = frame.copy()
    for column in extra:
        values = out[column]
        if values.map(lambda v: isinstance(v, pd.Timestamp)).any():
            days = pd.to_datetime(values).dt.strftime("%Y-%m-%d").to_numpy(dtype=object)
            days[values.isna().to_numpy()] = None
            out[column] = days
    return out


def _columns(frame: Any) -> list[str]:
    return list(frame.columns)


def _extra_levels(targets: pd.DataFrame | None, present: set[str]) -> list[str]:
    """The targets' levels that are not the hierarchy's but a column the data has."""
    if targets is None or targets.empty:
        return []
    return sorted({str(lv) for lv in targets[LEVEL].dropna().unique()
                   if lv not in HIERARCHY_LEVELS and lv in present})


def _whole(engine: ComputeEngine, frame: Any, table: str, key: str, buckets: int
           ) -> pd.DataFrame:
    """A table brought here, in the engines' one row order (by key, then every column)."""
    fn = partial(_as_read, table=table)
    return engine.apply_by_group({table: frame}, key, fn,
                                 empty_group({table: _columns(frame)})[table], buckets)


def _history_of_open(frames: dict[str, pd.DataFrame], dates: list[pd.Timestamp]
                     ) -> pd.DataFrame:
    """One bucket's stage history (as read, :func:`_as_read`) of the deals open at one of
    ``dates`` at least."""
    history = _as_read(frames, STAGE_HISTORY)
    deals = frames[OPPORTUNITIES]
    kept = deals.loc[open_at_any(deals, dates).to_numpy(), OPPORTUNITY_ID]
    return history[history[OPPORTUNITY_ID].isin(kept)]


def _open_history(engine: ComputeEngine, first: dict[str, Any], dates: list[pd.Timestamp],
                  buckets: int) -> pd.DataFrame:
    """The stage history of the deals open at one of ``dates``, brought here in the engines'
    one row order (as :func:`_whole`)."""
    group = {OPPORTUNITIES: first[OPPORTUNITIES], STAGE_HISTORY: first[STAGE_HISTORY]}
    fn = partial(_history_of_open, dates=dates)
    columns = {name: _columns(frame) for name, frame in group.items()}
    return engine.apply_by_group(group, OPPORTUNITY_ID, fn, fn(empty_group(columns)), buckets)


def feasibility_dates(period: str, as_of: pd.Timestamp) -> list[pd.Timestamp]:
    """The dates a feasibility of ``period`` as of ``as_of`` sees deals at: ``as_of``, the
    same point of the earlier periods its rest-of-period factor and p_attain check replay,
    and theirs of each of those replays (:func:`models.feasibility.backtest.earlier_points`
    twice over)."""
    points = earlier_points(period, as_of)
    again = [q.as_of for p in points for q in earlier_points(p.period, p.as_of)]
    return sorted({pd.Timestamp(as_of), *(p.as_of for p in points), *again})


def snapshot_tables(tables: Tables) -> Tables:
    """The tables the board's snapshots of a feasibility are recorded from: the whole tables
    summed ones were read from when they were loaded here (pandas), else ``tables`` (on Spark,
    where no process holds the orders, the product, segment and channel nodes are not
    snapshot: their columns are not read)."""
    whole = tables.whole if isinstance(tables, CubeTables) else None
    return whole if whole is not None else tables


def feasibility_tables(engine: ComputeEngine, source: str, as_of: pd.Timestamp | None,
                       buckets: int | None = None, whole: Tables | None = None,
                       open_at: Sequence[pd.Timestamp] = ()
                       ) -> tuple[Tables, pd.Timestamp] | None:
    """Feasibility's tables read on ``engine`` as of ``as_of`` (default: the day after the
    data's last dated row), and that as-of: :class:`features.revenue_nodes.CubeTables`.
    ``buckets``: of customers (default :func:`service.usecases.scaled.bucket_count` of the
    orders; the sums do not depend on it).

    ``open_at``: the dates deals will be seen at here (:func:`feasibility_dates`): only the
    stage history of deals open at one of them comes here (the rest of it stays where the
    engine computes; the stage rates are counted there, :func:`engine_stage_rates`). The
    deals' stages, expected closes and days in stage at those dates are the same; the stage
    order is inferred from that history, so a champion win model (which reads it) wants the
    whole history: ``()``, the default.

    ``whole``: the tables, already loaded here (the pandas engine): read from them instead of
    ``source`` (as the pandas engine reads a CSV directory), so Spark and pandas start from
    the same rows; they stay available for the board's snapshots (:func:`snapshot_tables`).
    Without a customers table (the loader derives one from the orders) the answer is
    ``whole`` itself, or None when nothing was loaded here: read the whole tables then.

    Raises:
        engine.compute.ComputeError: the engine failed (in plain words; exit code in it).
        engine.io.BadInput: the pandas engine found problems in the data.
        ValueError: the data holds no dates.
    """
    if whole is not None:
        if CUSTOMERS in whole.derived:
            return whole, (pd.Timestamp(as_of) if as_of is not None
                           else default_as_of(whole))
        engine = PandasEngine().hold(source, whole)
    if buckets is None:
        buckets = bucket_count(source, [r for r in FEASIBILITY_READS if r.table == ORDERS])
    when = (pd.Timestamp(as_of) if as_of is not None
            else as_of_after(engine.data_end(source))).normalize()
    targets_read = engine.read(source, [r for r in FEASIBILITY_READS if r.table == TARGETS],
                               before=when)
    targets = (_whole(engine, targets_read[TARGETS], TARGETS, KEY, buckets)
               if TARGETS in targets_read else None)
    first = engine.read(source, [r for r in FEASIBILITY_READS if r.table != TARGETS],
                        before=when)
    if CUSTOMERS not in first:
        return None
    present = {c for t in (ORDERS, CUSTOMERS, OPPORTUNITIES) if t in first
               for c in _columns(first[t])}
    extra = _extra_levels(targets, present)
    if extra:  # the targets name a level of the data's own (product...): read it too
        reads = [TableRead(r.table, tuple(dict.fromkeys((*r.columns, *extra))), r.date)
                 if r.table in (ORDERS, CUSTOMERS) else r
                 for r in FEASIBILITY_READS if r.table != TARGETS]
        first = engine.read(source, reads, before=when)
    frames: dict[str, pd.DataFrame] = {} if targets is None else {TARGETS: targets}
    for table, (key, _) in _WHOLE.items():
        if table in first and table != TARGETS:
            if table == STAGE_HISTORY and open_at and OPPORTUNITIES in first:
                frames[table] = _open_history(engine, first, list(open_at), buckets)
            else:
                frames[table] = _whole(engine, first[table], table, key, buckets)
    customers = first[CUSTOMERS]
    frames[CUSTOMERS] = _whole(engine, customers, CUSTOMERS, CUSTOMER_ID, buckets)
    org = frames[ORG][[REP, TEAM, REGION]] if ORG in frames else None
    orders = first.get(ORDERS)
    if orders is None:  # a deals-only source: orders without rows, as the loader gives
        orders = engine.from_pandas(empty_table(ORDERS)[[CUSTOMER_ID, ORDER_DATE, AMOUNT]],
                                    _ORDERS_SCHEMA)
    columns = {ORDERS: _columns(orders), CUSTOMERS: _columns(customers)}
    group: dict[str, Any] = {ORDERS: orders, CUSTOMERS: customers}
    template = None
    if OPPORTUNITIES in first:
        deals = first[OPPORTUNITIES]
        deals = deals[[c for c in dict.fromkeys((*_REVENUE_DEALS, *extra))
                       if c in _columns(deals)]]
        linked = orders if OPPORTUNITY_ID in columns[ORDERS] else engine.from_pandas(
            empty_table(ORDERS)[[CUSTOMER_ID, ORDER_DATE, OPPORTUNITY_ID]], _LINKED_SCHEMA)
        step1 = partial(dated_deal_rows, as_of=when)
        template = step1(empty_group({ORDERS: _columns(linked),
                                      OPPORTUNITIES: _columns(deals)}))
        group[OPPORTUNITIES] = engine.apply_by_group(
            {ORDERS: linked, OPPORTUNITIES: deals}, OPPORTUNITY_ID, step1, template, buckets,
            collect=False)
    step2 = partial(cube_node_days, org=org, levels=extra, as_of=when)
    empty = empty_group(columns)
    if template is not None:
        empty[OPPORTUNITIES] = template
    days = engine.apply_by_group(group, CUSTOMER_ID, step2, step2(empty), buckets,
                                 keys={OPPORTUNITIES: AT}, collect=False)
    sums = engine.apply_by_group({ORDERS: days}, CUSTOMER_ID, node_day_sums,
                                 node_day_sums({ORDERS: step2(empty)}), buckets)
    frames[ORDERS] = empty_table(ORDERS)[[CUSTOMER_ID, ORDER_DATE, AMOUNT]]
    tables = CubeTables(frames, source=str(source), revenue=revenue_cube(sums, extra),
                        levels=tuple(extra), as_of=when, whole=whole)
    return tables, when


# --- the stage rates, learned bucket by bucket of deals ----------------------------------------

_DEAL_READS = tuple(r for r in FEASIBILITY_READS if r.table in (OPPORTUNITIES, STAGE_HISTORY))


def deal_counts(frames: dict[str, pd.DataFrame], dates: list[pd.Timestamp],
                as_of: pd.Timestamp, snapshot: pd.Timestamp) -> pd.DataFrame:
    """The stage rates' sums of one bucket of deals (:func:`models.feasibility.period
    .stage_rate_counts_at`), read as the whole tables are (:func:`_as_read`), each row labelled
    with the bucket's first deal id (``opportunity_id``), which only orders the buckets' sums
    the same way on every engine (:func:`models.win.add_counts` drops it)."""
    tables = Tables({table: _as_read(frames, table) for table in frames})
    counts = stage_rate_counts_at(tables, dates, as_of, snapshot)
    deals = frames[OPPORTUNITIES][OPPORTUNITY_ID]
    first = str(deals.min()) if len(deals) else ""
    return counts.assign(**{OPPORTUNITY_ID: first})[[OPPORTUNITY_ID, *counts.columns]]


def engine_stage_rates(engine: ComputeEngine, tables: Tables
                       ) -> Callable[[Tables, pd.Timestamp], tuple[StageRateWinModel, str]]:
    """:func:`models.feasibility.fit_stage_rates` for ``run_feasibility(stage_rates=)``, with
    the deals seen and labelled on ``engine`` (read again from the source of ``tables``,
    dated before the as-of asked) bucket by bucket of deals; only the sums come here: the
    rates of the whole tables to the last bit, also when ``tables`` hold only the stage
    history of some deals (:func:`feasibility_tables` ``open_at``). Tables not read on an
    engine, or asked after their as-of, are fitted here as before."""

    def fit(given: Tables, as_of: pd.Timestamp) -> tuple[StageRateWinModel, str]:
        when = pd.Timestamp(as_of)
        if (not isinstance(tables, CubeTables) or given is not tables or tables.as_of is None
                or when > tables.as_of):
            return fit_stage_rates(given, when)
        dates = stage_rate_dates(tables, when)
        parts = pd.DataFrame()
        if dates:
            frames = engine.read(tables.source, _DEAL_READS, before=when)
            step = partial(deal_counts, dates=dates, as_of=when, snapshot=snapshot_date(tables))
            columns = {name: _columns(frame) for name, frame in frames.items()}
            parts = engine.apply_by_group(frames, OPPORTUNITY_ID, step,
                                          step(empty_group(columns)),
                                          bucket_count(tables.source, _DEAL_READS))
        return fit_stage_rates(given, when, counts=add_counts(parts))

    return fit


# --- the churn adjustment's revenue, summed bucket by bucket of customers ----------------------


def _year_revenue(frames: dict[str, pd.DataFrame], as_of: pd.Timestamp) -> pd.DataFrame:
    """One bucket of customers' :func:`features.hierarchy.unlinked_year_revenue`, as rows."""
    revenue = unlinked_year_revenue(bucket_tables(frames), as_of)
    return pd.DataFrame({CUSTOMER_ID: revenue.index.to_numpy(dtype=object),
                         AMOUNT: revenue.to_numpy(dtype=float)})


def with_customer_revenue(engine: ComputeEngine, tables: Tables) -> Tables:
    """Summed tables (:func:`feasibility_tables`) with each customer's unlinked revenue of the
    year before their as-of, summed on ``engine`` bucket by bucket of customers (their
    orders, deals and customer rows): what the churn adjustment weighs a customer's churn
    probability by, without the orders coming here. Other tables are returned as they are."""
    if not isinstance(tables, CubeTables) or tables.as_of is None:
        return tables
    when = tables.as_of
    reads = [r for r in FEASIBILITY_READS if r.table in (ORDERS, OPPORTUNITIES, CUSTOMERS)]
    frames = engine.read(tables.source, reads, before=when)
    fn = partial(_year_revenue, as_of=when)
    columns = {name: _columns(frame) for name, frame in frames.items()}
    sums = engine.apply_by_group(frames, CUSTOMER_ID, fn, fn(empty_group(columns)),
                                 bucket_count(tables.source, reads))
    revenue = pd.Series(sums[AMOUNT].to_numpy(dtype=float),
                        index=pd.Index(sums[CUSTOMER_ID].to_numpy(dtype=object),
                                       name=CUSTOMER_ID), name=AMOUNT)
    return replace(tables, customer_revenue=revenue)
