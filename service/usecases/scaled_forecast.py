"""Forecasts on a compute engine (``train forecast`` / ``forecast --fit`` with ``--engine``).

Two steps run on the engine, the rest is :mod:`service.usecases.forecast` unchanged:

- **The data** (:func:`engine_tables`): only the columns revenue attribution reads and only the
  rows dated before the as-of (orders by ``order_date``, deals by ``created_at``: rows dated
  later are never read, so appending them changes nothing). Orders are summed per customer,
  day, deal (and the ``--level`` column) on the engine, one CRC-32 bucket of customers at a
  time, before they reach the driver; customers, deals and the org chart come as they are.
  The revenue series are then built on the driver by the same functions as always.
- **The per-series candidates** (:func:`engine_runner`): the series are grouped by the CRC-32
  bucket of their id (``level/key``) and each group is backtested and fitted by
  :func:`models.forecast.local.run_local` (statsforecast: one batched call per model and
  group), exactly as on the whole panel. LightGBM (one global model), Prophet (levels chosen
  by its budget over the whole panel), the combination, reconciliation and the conformal
  intervals stay on the driver.

The engine moves frames shaped as tables of the schema (``engine.compute``), so a series
travels as orders-shaped rows: ``customer_id`` holds the series id, ``order_date`` the period
and ``amount`` the revenue. Both engines run the same group function on the same groups, so
their forecasts are identical; against the pandas pipeline they agree to about 1e-12 (orders
are summed per customer and day first, which changes the order of the additions).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from engine.compute import DEFAULT_BUCKETS, ComputeEngine, TableRead, empty_group, open_engine
from engine.io import Tables
from engine.io.tables import empty_table
from engine.periods import as_of_after
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDERS,
    ORG,
    OWNER,
    REGION,
    REP,
    STATUS,
    TEAM,
)
from features.revenue_nodes import (
    AT,
    deal_rows,
    node_day_sums,
    node_tables,
    order_node_days,
    rep_names,
)
from models.backtest import Panel
from models.forecast.local import LocalJob, LocalRunner, run_local, series_ids

__all__ = [
    "SERIES_READS",
    "EngineData",
    "engine_data",
    "engine_runner",
    "engine_tables",
    "fit_group",
    "series_reads",
]

# What revenue attribution (features.hierarchy.revenue_events) reads of each table.
SERIES_READS: tuple[TableRead, ...] = (
    TableRead(ORDERS, (CUSTOMER_ID, ORDER_DATE, AMOUNT, OPPORTUNITY_ID), ORDER_DATE),
    TableRead(CUSTOMERS, (CUSTOMER_ID, ACCOUNT_MANAGER, REGION)),
    TableRead(OPPORTUNITIES, (OPPORTUNITY_ID, OWNER, CUSTOMER_ID, STATUS, CREATED_AT, CLOSE_DATE,
                              AMOUNT), CREATED_AT),
    TableRead(ORG, (REP, TEAM, REGION)),
)
_KEYS = {ORDERS: CUSTOMER_ID, CUSTOMERS: CUSTOMER_ID, OPPORTUNITIES: OPPORTUNITY_ID, ORG: REP}
# The series as orders-shaped rows (see the module docstring).
_SID, _DS, _Y = CUSTOMER_ID, ORDER_DATE, AMOUNT
_SERIES_SCHEMA = f"{_SID} string, {_DS} timestamp_ntz, {_Y} double"
_ORDERS_SCHEMA = _SERIES_SCHEMA
_LINKED_SCHEMA = f"{CUSTOMER_ID} string, {ORDER_DATE} timestamp_ntz, {OPPORTUNITY_ID} string"
_WINDOW, _MODEL = "window", "model"


def series_reads(level: str | None) -> tuple[TableRead, ...]:
    """:data:`SERIES_READS`, plus the ``--level`` column (``product``, ``segment``...) where a
    table may hold it (an order's or deal's own value wins over its customer's)."""
    if level is None or level in HIERARCHY_LEVELS:
        return SERIES_READS
    extra = {ORDERS, CUSTOMERS, OPPORTUNITIES}
    return tuple(TableRead(r.table, (*r.columns, level) if r.table in extra else r.columns,
                           r.date) for r in SERIES_READS)


def _as_read(frames: dict[str, pd.DataFrame], table: str) -> pd.DataFrame:
    return frames[table]


def _names(frames: dict[str, pd.DataFrame], table: str, column: str) -> pd.DataFrame:
    return rep_names(frames[table], column)


def engine_tables(engine: ComputeEngine, source: str, as_of: pd.Timestamp | None,
                  level: str | None = None, buckets: int = DEFAULT_BUCKETS
                  ) -> tuple[Tables, pd.Timestamp]:
    """The tables revenue series are built from, read on ``engine`` as of ``as_of`` (default
    the day after the data's last dated row), and that as-of (midnight): revenue summed per
    node and day on the engine (:mod:`features.revenue_nodes`, its three steps each on
    buckets of keys), so only nodes x days rows, the org chart and the reps' names reach
    this process."""
    when = (pd.Timestamp(as_of) if as_of is not None
            else as_of_after(engine.data_end(source))).normalize()
    read = engine.read(source, series_reads(level), before=when)
    orders = read.get(ORDERS)
    if orders is None:  # a deals-only source: orders without rows, as the loader gives
        orders = engine.from_pandas(empty_table(ORDERS)[[CUSTOMER_ID, ORDER_DATE, AMOUNT]],
                                    _ORDERS_SCHEMA)
    customers, deals = read.get(CUSTOMERS), read.get(OPPORTUNITIES)
    columns = {ORDERS: _columns(orders), **({CUSTOMERS: _columns(customers)} if customers
                                           is not None else {}),
               **({OPPORTUNITIES: _columns(deals)} if deals is not None else {})}
    extra = [c for c in ([] if level is None or level in HIERARCHY_LEVELS else [level])
             if any(c in cols for cols in columns.values())]
    org = None
    if ORG in read:
        org = engine.apply_by_group({ORG: read[ORG]}, REP, partial(_as_read, table=ORG),
                                    empty_group({ORG: _columns(read[ORG])})[ORG], buckets)
        org = org[[REP, TEAM, REGION]]
    group: dict[str, Any] = {ORDERS: orders}
    if customers is not None:
        group[CUSTOMERS] = customers
    names = []
    first_created = None
    if deals is not None:
        if OPPORTUNITY_ID not in columns[ORDERS]:
            linked = engine.from_pandas(
                empty_table(ORDERS)[[CUSTOMER_ID, ORDER_DATE, OPPORTUNITY_ID]], _LINKED_SCHEMA)
        else:
            linked = orders
        step1 = partial(deal_rows, as_of=when)
        template = step1(empty_group({ORDERS: _columns(linked),
                                      OPPORTUNITIES: columns[OPPORTUNITIES]}))
        group[OPPORTUNITIES] = engine.apply_by_group(
            {ORDERS: linked, OPPORTUNITIES: deals}, OPPORTUNITY_ID, step1, template, buckets,
            collect=False)
        first_created = engine.minimum(deals, CREATED_AT) if CREATED_AT in columns[
            OPPORTUNITIES] else None
        if OWNER in columns[OPPORTUNITIES]:
            names.append(_distinct(engine, deals, OPPORTUNITIES, OWNER, buckets))
    if customers is not None and ACCOUNT_MANAGER in columns[CUSTOMERS]:
        names.append(_distinct(engine, customers, CUSTOMERS, ACCOUNT_MANAGER, buckets))
    step2 = partial(order_node_days, org=org, levels=extra, as_of=when)
    empty = empty_group({t: _columns(f) for t, f in group.items() if t != OPPORTUNITIES})
    if OPPORTUNITIES in group:
        empty[OPPORTUNITIES] = template
    days = engine.apply_by_group(group, CUSTOMER_ID, step2, step2(empty), buckets,
                                 keys={OPPORTUNITIES: AT}, collect=False)
    sums = engine.apply_by_group({ORDERS: days}, CUSTOMER_ID, node_day_sums,
                                 node_day_sums({ORDERS: step2(empty)}), buckets)
    reps = (pd.concat(names, ignore_index=True).drop_duplicates(ignore_index=True)
            if names else rep_names(None, ACCOUNT_MANAGER))
    first = None if first_created is None or pd.isna(first_created) else pd.Timestamp(
        first_created)
    return node_tables(sums, org, reps, extra, first, deals is not None), when


def _columns(frame: Any) -> list[str]:
    return list(frame.columns)


def _distinct(engine: ComputeEngine, frame: Any, table: str, column: str, buckets: int
              ) -> pd.DataFrame:
    """The distinct names of a column, found on the engine (a few hundred reps)."""
    fn = partial(_names, table=table, column=column)
    template = fn(empty_group({table: [column]}))
    return engine.apply_by_group({table: frame[[column]]}, ACCOUNT_MANAGER, fn, template,
                                 buckets, keys={table: column})


# --- the per-series candidates on groups of series ---------------------------------------------


def _series_rows(panel: Panel) -> pd.DataFrame:
    """The panel's observed cells as orders-shaped rows."""
    rows, cols = np.nonzero(np.isfinite(panel.values))
    return pd.DataFrame({_SID: series_ids(panel.ids)[rows],
                         _DS: np.asarray(panel.dates)[cols],
                         _Y: panel.values[rows, cols]})


def _template(horizon: int) -> pd.DataFrame:
    columns: dict[str, pd.Series] = {_SID: pd.Series([], dtype=object),
                                     _WINDOW: pd.Series([], dtype=float),
                                     _MODEL: pd.Series([], dtype=object)}
    columns |= {f"h{i}": pd.Series([], dtype=float) for i in range(1, horizon + 1)}
    return pd.DataFrame(columns)


def fit_group(frames: dict[str, pd.DataFrame], job: LocalJob, dates: pd.DatetimeIndex,
              freq: str) -> pd.DataFrame:
    """The per-series candidates of one group of series (orders-shaped rows), as rows
    ``customer_id`` (series id), ``window`` (position in ``job.cutoffs``), ``model``,
    ``h1``..``hH``."""
    rows = frames[ORDERS]
    if rows.empty:
        return _template(job.horizon)
    codes, sids = pd.factorize(rows[_SID])
    values = np.full((len(sids), len(dates)), np.nan)
    values[codes, dates.get_indexer(pd.DatetimeIndex(rows[_DS]))] = rows[_Y].to_numpy(float)
    split = [str(s).split("/", 1) for s in sids]
    ids = pd.DataFrame({LEVEL: [p[0] for p in split], KEY: [p[1] for p in split]}, dtype=object)
    results = run_local(job, Panel(ids, dates, values, freq))
    parts = []
    for window, preds in enumerate(results):
        for name, forecasts in preds.items():
            part = pd.DataFrame(forecasts, columns=[f"h{i}" for i in range(1, job.horizon + 1)])
            part.insert(0, _MODEL, name)
            part.insert(0, _WINDOW, float(window))
            part.insert(0, _SID, np.asarray(sids, dtype=object))
            parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else _template(job.horizon)


def engine_runner(engine: ComputeEngine, buckets: int = DEFAULT_BUCKETS) -> LocalRunner:
    """A :data:`~models.forecast.local.LocalRunner` that fits groups of series on ``engine``
    (see the module docstring)."""

    def run(job: LocalJob, panel: Panel) -> list[dict[str, np.ndarray]]:
        fn = partial(fit_group, job=job, dates=panel.dates, freq=panel.freq)
        template = _template(job.horizon)
        frames = {ORDERS: engine.from_pandas(_series_rows(panel), _SERIES_SCHEMA)}
        result = engine.apply_by_group(frames, _SID, fn, template, buckets)
        return _reassembled(result, job, panel)

    return run


def _reassembled(result: pd.DataFrame, job: LocalJob, panel: Panel
                 ) -> list[dict[str, np.ndarray]]:
    """The groups' rows as the whole panel's forecasts per cutoff and candidate."""
    sids = pd.Index(result[_SID].to_numpy(dtype=object))
    position = pd.Index(series_ids(panel.ids)).get_indexer(sids)
    if (position < 0).any():
        raise RuntimeError("a group returned forecasts of a series not in the panel")
    values = result[[f"h{i}" for i in range(1, job.horizon + 1)]].to_numpy(float)
    windows = result[_WINDOW].to_numpy(float).astype(int)
    models = result[_MODEL].to_numpy(dtype=object)
    out: list[dict[str, np.ndarray]] = []
    for window in range(len(job.cutoffs)):
        preds = {}
        for name in job.forecasters:
            mask = (windows == window) & (models == name)
            if not mask.any():
                continue
            full = np.full((panel.n_series, job.horizon), np.nan)
            full[position[mask]] = values[mask]
            preds[name] = full
        out.append(preds)
    return out



@dataclass(frozen=True)
class EngineData:
    """What a forecast command needs from an engine: the tables read as of ``as_of`` and the
    runner that fits the per-series candidates there (pass both to
    :func:`service.usecases.forecast.forecast_fresh` or ``train_forecast``)."""

    tables: Tables
    as_of: pd.Timestamp
    runner: LocalRunner


@contextmanager
def engine_data(name: str, master: str, source: str, as_of: pd.Timestamp | None,
                level: str | None = None, buckets: int = DEFAULT_BUCKETS
                ) -> Iterator[EngineData]:
    """The engine ``name`` open (Spark stopped on exit) with the series' tables read.

    Raises:
        engine.compute.ComputeError: the engine failed (in plain words; exit code in it).
        engine.io.BadInput: the pandas engine found problems in the data.
        ValueError: the data holds no dates.
    """
    with open_engine(name, master) as compute:
        tables, when = engine_tables(compute, source, as_of, level, buckets)
        yield EngineData(tables, when, engine_runner(compute, buckets))
