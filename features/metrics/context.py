"""What a metric computes in: the tables, the providers of other modules' numbers, a cache.

Metrics that other modules compute (churn scores, the feasibility simulation, a period
forecast) are reached through :class:`Providers`, plain callables; ``None`` means not wired, and
the metrics that need it are skipped as unavailable. One :class:`MetricContext` serves every
rule of an evaluation, so two rules on one metric compute it once.

What a metric computes customer by customer or deal by deal (complaint counts, receivable
sums, days in stage) is a :class:`KeyedPart`: a pure function of one group of keys' rows,
run per CRC-32 bucket of keys by a compute engine (:mod:`engine.compute`). In this process the
buckets run on the context's tables (:func:`keyed_on_tables`); ``warnings evaluate --engine
spark`` gives the context a :data:`KeyedCompute` that runs them on Spark. Both engines see the
same buckets in the same row order, so the parts, and the alerts built on them, are identical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from engine.compute import (
    DEFAULT_BUCKETS,
    ComputeEngine,
    GroupFn,
    PandasEngine,
    TableRead,
    empty_group,
)
from engine.io import Tables
from engine.schemas import KEY, LEVEL

__all__ = [
    "ChurnScores",
    "ForecastFromAttainment",
    "KeyedCompute",
    "KeyedPart",
    "MetricContext",
    "MetricFn",
    "PeriodFrame",
    "Providers",
    "keyed_on_engine",
    "keyed_on_tables",
]

ChurnScores = Callable[[Tables, pd.Timestamp], pd.DataFrame]
PeriodFrame = Callable[[Tables, str, pd.Timestamp], pd.DataFrame]


@dataclass(frozen=True)
class ForecastFromAttainment:
    """A ``period_forecast`` provider that reads ``expected`` off an attainment provider.

    The feasibility simulation's ``expected`` is closed to date plus the mean of the simulated
    rest of the period (open deals won in the period, run rate, churn), which is the period
    forecast the ``forecast_gap`` metric wants. Inside an evaluation, metrics recognise this
    provider and reuse the attainment frame the context already holds for the same (period,
    as_of): the simulation runs once for ``attainment_probability``, ``forecast_gap`` and
    ``pipeline_gap_coverage`` together.
    """

    attainment: PeriodFrame

    def __call__(self, tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
        frame = self.attainment(tables, period, as_of)
        return frame[[LEVEL, KEY, "expected"]]


@dataclass
class Providers:
    """What other modules contribute, as plain callables (None = not wired yet).

    Attributes:
        churn_scores: ``(tables, as_of) -> customer_id, churn_probability, revenue_at_risk``
            (the ``score churn`` output of the data contract (README); ``expected_revenue``,
            when present, enables ``churn_exposure_share``).
        attainment: ``(tables, period, as_of) -> level, key, target, p_attain, expected`` (the
            ``feasibility`` output of the data contract (README); its extra columns
            ``closed_to_date``, ``expected_run_rate`` and ``pipeline_in_period`` enable
            ``pipeline_gap_coverage``).
        period_forecast: ``(tables, period, as_of) -> level, key, expected``: the period's
            expected revenue, closed to date plus the forecast of the rest of the period.
    """

    churn_scores: ChurnScores | None = None
    attainment: PeriodFrame | None = None
    period_forecast: PeriodFrame | None = None


@dataclass(frozen=True)
class KeyedPart:
    """A part of a metric that each key's rows alone decide (a customer's, a deal's).

    Attributes:
        name: names the part and its parameters (the cache key, with the as_of).
        key: the column the rows are grouped by (``customer_id``, ``opportunity_id``).
        reads: the tables, columns and event dates it reads; rows dated on or after the as_of
            are never read.
        fn: ``{table: rows of a bucket of keys} -> one row per key`` (a module-level function or
            a ``functools.partial`` of one: Spark ships it to its workers).
    """

    name: str
    key: str
    reads: tuple[TableRead, ...]
    fn: GroupFn


# (part, as_of) -> the part's rows of every key, sorted by the key.
KeyedCompute = Callable[[KeyedPart, pd.Timestamp], pd.DataFrame]


def _run_part(engine: ComputeEngine, frames: Any, part: KeyedPart) -> pd.DataFrame:
    columns = {name: list(frame.columns) for name, frame in frames.items()}
    template = part.fn(empty_group(columns))
    return engine.apply_by_group(frames, part.key, part.fn, template, DEFAULT_BUCKETS)


def keyed_on_tables(tables: Tables) -> KeyedCompute:
    """Parts computed in this process on ``tables``, bucket by bucket like every engine."""
    engine = PandasEngine()

    def compute(part: KeyedPart, as_of: pd.Timestamp) -> pd.DataFrame:
        frames = {}
        for read in part.reads:
            if not tables.has(read.table) or read.table in tables.derived:
                continue
            frame = tables[read.table]
            frame = frame[[c for c in read.columns if c in frame.columns]]
            if read.date is not None and read.date in frame.columns:
                frame = frame[frame[read.date] < as_of]
            frames[read.table] = frame
        return _run_part(engine, frames, part)

    return compute


def keyed_on_engine(engine: ComputeEngine, source: str) -> KeyedCompute:
    """Parts computed on ``engine`` (e.g. Spark) from the data source ``source``: only the
    columns a part reads and only the rows dated before the as_of are read."""

    def compute(part: KeyedPart, as_of: pd.Timestamp) -> pd.DataFrame:
        return _run_part(engine, engine.read(source, part.reads, before=as_of), part)

    return compute


@dataclass
class MetricContext:
    """Tables, providers and a cache shared by the metrics of one evaluation; ``keyed``
    computes the metrics' :class:`KeyedPart` (default: in this process, on ``tables``)."""

    tables: Tables
    providers: Providers = field(default_factory=Providers)
    cache: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    keyed: KeyedCompute | None = None

    def cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key (two rules on one metric compute it once)."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def by_key(self, part: KeyedPart, as_of: pd.Timestamp) -> pd.DataFrame:
        """The rows of ``part`` at ``as_of``, one per key (cached)."""
        when = pd.Timestamp(as_of)
        run = self.keyed if self.keyed is not None else keyed_on_tables(self.tables)
        frame: pd.DataFrame = self.cached(("keyed", part.name, when), lambda: run(part, when))
        return frame


MetricFn = Callable[[MetricContext, pd.Timestamp, Mapping[str, Any]], pd.DataFrame]
