"""Use cases on a compute engine (``--engine pandas|spark``): the customer feature table, and
churn's training snapshots and scores.

The engine reads only the columns the features use and only the rows dated before the as-of
(point in time by construction: rows dated on or after it are never read), splits the customers
into buckets, and runs :func:`features.customer.customer_features` on each bucket. Every
feature of a customer depends on that customer's rows alone, so the buckets' tables are the
feature table; the pandas and the Spark engine run the same function on the same buckets and
agree to the last bit.

Churn (:func:`train_churn_on`, :func:`score_churn_on`) runs
:func:`service.usecases.churn.snapshot_parts` on each bucket the same way: the features and
labels of the active customers, and their BG/NBD purchase summaries, which the driver pools to
fit the BG/NBD on every customer (:func:`service.usecases.churn.assemble_snapshots`), exactly
as on one machine. On Spark the champion then scores the feature rows on the workers through
the registered model's ``mlflow.pyfunc.spark_udf``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd

from engine.compute import (
    DEFAULT_BUCKETS,
    ComputeEngine,
    GroupFn,
    TableRead,
    empty_group,
    parquet_tables,
)
from engine.io.tables import Tables, empty_table
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    DUE_DATE,
    INTERACTIONS,
    ISSUED_AT,
    KIND,
    OCCURRED_AT,
    OPPORTUNITIES,
    ORDER_DATE,
    ORDERS,
    PAID_AT,
    PRODUCT,
    RECEIVABLES,
    REGION,
    SEGMENT,
    SEVERITY,
    STATUS,
)
from features.customer import as_of_day, customer_features, customer_history
from service.usecases.request import BadRequest

if TYPE_CHECKING:  # churn brings LightGBM and MLflow: imported only by the churn use cases
    from engine import tracking
    from service.usecases import churn
    from service.usecases.train import Progress

__all__ = [
    "FEATURE_READS",
    "ROWS_PER_BUCKET",
    "ChurnScores",
    "FeatureRun",
    "bucket_count",
    "bucket_features",
    "bucket_tables",
    "engine_churn_scorer",
    "features_on",
    "score_churn_on",
    "snapshot_builder",
    "train_churn_on",
]

# What customer_features reads of each table; the date whose rows after as_of are not read.
FEATURE_READS: tuple[TableRead, ...] = (
    TableRead(ORDERS, (CUSTOMER_ID, ORDER_DATE, AMOUNT, PRODUCT), ORDER_DATE),
    TableRead(CUSTOMERS, (CUSTOMER_ID, CREATED_AT, SEGMENT, REGION, ACCOUNT_MANAGER)),
    TableRead(INTERACTIONS, (CUSTOMER_ID, OCCURRED_AT, KIND, SEVERITY), OCCURRED_AT),
    TableRead(RECEIVABLES, (CUSTOMER_ID, ISSUED_AT, DUE_DATE, PAID_AT, AMOUNT), ISSUED_AT),
    TableRead(OPPORTUNITIES, (CUSTOMER_ID, CREATED_AT, CLOSE_DATE, STATUS, AMOUNT), CREATED_AT),
)


# Rows of the tables read that one bucket holds, at most (about): a Spark worker holds a
# bucket's rows as pandas frames at once, about 0.9 GiB a million rows (large x3, 16 buckets of
# 3.6M rows: workers of 3.3 GiB). Large x1 (19M rows) stays at DEFAULT_BUCKETS.
ROWS_PER_BUCKET = 1_500_000


def bucket_count(source: str, reads: Sequence[TableRead]) -> int:
    """The buckets a per-customer step of ``source`` runs in: :data:`DEFAULT_BUCKETS`, or more
    when a Parquet data directory's tables of ``reads`` hold more than
    :data:`ROWS_PER_BUCKET` rows a bucket (counted from the files' metadata, nothing read).
    A customer's rows are all in one bucket, so another count changes a worker's memory and
    the answers only by rounding (running sums cross the bucket's other customers: 1e-12
    relative); both engines take the same count and agree to the last bit."""
    paths = parquet_tables(source)
    if not paths:
        return DEFAULT_BUCKETS
    import pyarrow.dataset as ds

    rows = sum(ds.dataset(paths[r.table], format="parquet", partitioning="hive").count_rows()
               for r in reads if r.table in paths)
    return max(DEFAULT_BUCKETS, -(-rows // ROWS_PER_BUCKET))


@dataclass(frozen=True)
class FeatureRun:
    """A feature table and the as-of it was computed at (midnight)."""

    frame: pd.DataFrame
    as_of: pd.Timestamp


def bucket_features(frames: dict[str, pd.DataFrame], as_of: pd.Timestamp) -> pd.DataFrame:
    """The feature table of one bucket of customers (the same pure function as ``features``)."""
    if ORDERS not in frames:  # a deals-only source: orders without rows, as the loader gives
        frames = {**frames, ORDERS: empty_table(ORDERS)[[CUSTOMER_ID, ORDER_DATE, AMOUNT]]}
    return customer_features(Tables(frames), as_of)


def features_on(engine: ComputeEngine, source: str, as_of: pd.Timestamp | None = None,
                buckets: int | None = None) -> FeatureRun:
    """The customer feature table of ``source`` at ``as_of`` (default: the day after the data's
    last dated row), computed on ``engine`` in ``buckets`` (default :func:`bucket_count`)."""
    when = as_of_day(as_of if as_of is not None else engine.data_end(source)
                     + pd.Timedelta(days=1))[0]
    frames = engine.read(source, FEATURE_READS, before=when)
    fn = partial(bucket_features, as_of=when)
    columns = {name: list(frame.columns) for name, frame in frames.items()}
    template = fn(empty_group(columns))
    count = bucket_count(source, FEATURE_READS) if buckets is None else buckets
    return FeatureRun(engine.apply_by_group(frames, CUSTOMER_ID, fn, template, count), when)


# --- churn -----------------------------------------------------------------------------------


def bucket_tables(frames: dict[str, pd.DataFrame]) -> Tables:
    """One bucket's frames as tables; a deals-only source's orders without rows, as the
    loader gives them."""
    if ORDERS not in frames:  # a deals-only source: orders without rows, as the loader gives
        frames = {**frames, ORDERS: empty_table(ORDERS)[[CUSTOMER_ID, ORDER_DATE, AMOUNT]]}
    return Tables(frames)


def _bucket_counts(frames: dict[str, pd.DataFrame], as_ofs: Sequence[pd.Timestamp],
                   horizon_days: int) -> pd.DataFrame:
    from service.usecases import churn

    return churn.snapshot_counts(customer_history(bucket_tables(frames)), as_ofs, horizon_days)


def _bucket_parts(frames: dict[str, pd.DataFrame], as_ofs: Sequence[pd.Timestamp],
                  horizon_days: int, cut: int, labels: bool) -> pd.DataFrame:
    from service.usecases import churn

    tables = bucket_tables(frames)
    managers = None if labels else churn._account_managers(tables)
    return churn.snapshot_parts(customer_history(tables), as_ofs, horizon_days, cut=cut,
                                labels=labels, managers=managers)


def _on_groups(engine: ComputeEngine, frames: Any, fn: GroupFn, buckets: int) -> pd.DataFrame:
    columns = {name: list(frame.columns) for name, frame in frames.items()}
    return engine.apply_by_group(frames, CUSTOMER_ID, fn, fn(empty_group(columns)), buckets)


def _first_order_day(engine: ComputeEngine, frames: Any) -> pd.Timestamp | None:
    """The first order day among the rows read (None without orders): one aggregate on the
    engine's own frame, no shuffle."""
    orders = frames.get(ORDERS)
    first = None if orders is None else engine.minimum(orders, ORDER_DATE)
    return None if first is None or pd.isna(first) else pd.Timestamp(first).normalize()


def _as_of(engine: ComputeEngine, source: str, as_of: pd.Timestamp | None) -> pd.Timestamp:
    return as_of_day(as_of if as_of is not None else engine.data_end(source)
                     + pd.Timedelta(days=1))[0]


def train_churn_on(engine: ComputeEngine, source: str, *, as_of: pd.Timestamp | None = None,
                   seed: int = 42, progress: Progress | None = None,
                   horizon_days: int | None = None, row_budget: int | None = None,
                   buckets: int | None = None) -> churn.ChurnTraining:
    """:func:`service.usecases.churn.train_churn` with the snapshot tables built on ``engine``:
    reads only what the features use, dated before the cutoff; counts the snapshot rows per
    sample bucket (orders only) to size the sample to ``row_budget``; then builds the kept
    customers' rows bucket by bucket. Same split, same tables, same training.
    ``row_budget``: default :data:`service.usecases.churn.TRAIN_ROW_BUDGET`; ``buckets``:
    default :func:`bucket_count`."""
    from service.usecases import churn
    from service.usecases.train import say

    budget = churn.TRAIN_ROW_BUDGET if row_budget is None else row_budget
    cutoff = _as_of(engine, source, as_of)
    frames = engine.read(source, FEATURE_READS, before=cutoff)
    first = _first_order_day(engine, frames)
    if first is None:
        raise ValueError("the orders table is empty: nothing to learn churn from"
                         if as_of is None else f"as_of {cutoff.date()} is not after the first "
                         "order: there is no history before it")
    say(progress, f"building the training snapshots on {engine.name}")
    count = bucket_count(source, FEATURE_READS) if buckets is None else buckets
    build = snapshot_builder(engine, frames, budget, count)
    split, train, holdout, sample = churn.labelled_snapshots(build, first, cutoff, horizon_days)
    return churn.train_on_snapshots(split, train, holdout, sample, cutoff, first, seed=seed,
                                    progress=progress, built_on=engine.name)


def snapshot_builder(engine: ComputeEngine, frames: Any, row_budget: int,
                     buckets: int = DEFAULT_BUCKETS) -> churn.SnapshotBuilder:
    """Builds a split's snapshot table on ``engine`` from the tables it read (``frames``):
    one pass over the orders counts the rows per sample bucket and sizes the sample to
    ``row_budget``, a second builds the kept customers' rows bucket by bucket."""
    from service.usecases import churn

    def build(split: churn.ChurnSplit) -> tuple[pd.DataFrame, churn.Sample]:
        as_ofs, horizon = split.as_ofs, split.horizon_days
        counts = _on_groups(engine, {ORDERS: frames[ORDERS]},
                            partial(_bucket_counts, as_ofs=as_ofs, horizon_days=horizon), buckets)
        sample = churn.choose_sample(counts, row_budget)
        parts = _on_groups(engine, frames, partial(_bucket_parts, as_ofs=as_ofs,
                                                   horizon_days=horizon, cut=sample.cut,
                                                   labels=True), buckets)
        return churn.assemble_snapshots(parts, as_ofs, horizon), sample

    return build


@dataclass(frozen=True)
class ChurnScores:
    """At-risk customers (:func:`service.usecases.churn.score_churn`'s columns), the as-of, and
    the fallback's line when no champion answered (None otherwise)."""

    frame: pd.DataFrame
    as_of: pd.Timestamp
    fallback: str | None


def _spark_scorer(engine: ComputeEngine) -> churn.ChampionScorer:
    from engine import tracking
    from models.base import CHURN
    from models.churn import CHURN_PROBABILITY, REASONS
    from service.usecases import churn

    session = getattr(engine, "session")  # noqa: B009 (only the Spark engine has one)

    def predict(loaded: tracking.LoadedModel, features: pd.DataFrame) -> pd.DataFrame:
        served = churn.serving_example(features, rows=len(features))
        scored = tracking.score_on_spark(
            session, served, CHURN.name, loaded.version, CUSTOMER_ID,
            f"{CHURN_PROBABILITY} double, {REASONS} string")
        return scored.drop(columns=[CUSTOMER_ID]).set_axis(features.index)

    return predict


def score_churn_on(engine: ComputeEngine, source: str, *, as_of: pd.Timestamp | None = None,
                   horizon_days: int | None = None, owner: str | None = None,
                   buckets: int | None = None) -> ChurnScores:
    """:func:`service.usecases.churn.score_churn` on ``engine``: the active customers'
    features and BG/NBD summaries computed bucket by bucket, the BG/NBD fitted on their union,
    then the champion scores the rows (on Spark: its ``spark_udf`` on the workers; on pandas:
    in this process). Without a champion, the BG/NBD (or recency) fallback answers on the
    driver from the same features. ``buckets``: default :func:`bucket_count`."""
    from service.usecases import churn

    stamp = _as_of(engine, source, as_of)
    if horizon_days is not None and horizon_days <= 0:
        raise BadRequest(f"horizon_days must be positive, got {horizon_days}")
    frames = engine.read(source, FEATURE_READS, before=stamp)
    if ORDERS not in frames:
        raise ValueError("the orders table is empty: no customer has bought yet, so there is "
                         "no churn risk to score")
    parts = _on_groups(engine, frames, partial(_bucket_parts, as_ofs=[stamp], horizon_days=1,
                                               cut=churn.SAMPLE_BUCKETS, labels=False),
                       bucket_count(source, FEATURE_READS) if buckets is None else buckets)
    predict = _spark_scorer(engine) if engine.name == "spark" else None
    frame, fallback = churn.score_parts(parts, stamp, horizon_days=horizon_days, owner=owner,
                                        predict=predict)
    return ChurnScores(frame, stamp, fallback)


def engine_churn_scorer(engine: ComputeEngine, source: str
                        ) -> Callable[[Tables, pd.Timestamp, int, Any], pd.DataFrame]:
    """Where ``run_feasibility(churn_scorer=)`` scores the customers when its tables were read
    on ``engine`` (``feasibility --engine spark``): :func:`score_churn_on` the ``source`` with
    the registry's champion (the one the feasibility was given: both come from the
    workspace's registry).

    Raises:
        ValueError: no customer to score, or the champion did not answer (the fallback did).
    """

    def score(tables: Tables, as_of: pd.Timestamp, horizon_days: int, loaded: Any
              ) -> pd.DataFrame:
        scored = score_churn_on(engine, source, as_of=as_of, horizon_days=horizon_days)
        if scored.fallback is not None:
            raise ValueError(f"the champion did not answer: {scored.fallback}")
        return scored.frame

    return score
