"""Use cases on a compute engine (``--engine pandas|spark``): the customer feature table.

The engine reads only the columns the features use and only the rows dated before the as-of
(point in time by construction: rows dated on or after it are never read), splits the customers
into buckets, and runs :func:`features.customer.customer_features` on each bucket. Every
feature of a customer depends on that customer's rows alone, so the buckets' tables are the
feature table; the pandas and the Spark engine run the same function on the same buckets and
agree to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pandas as pd

from engine.compute import DEFAULT_BUCKETS, ComputeEngine, TableRead, empty_group
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
from features.customer import as_of_day, customer_features

__all__ = ["FEATURE_READS", "FeatureRun", "bucket_features", "features_on"]

# What customer_features reads of each table; the date whose rows after as_of are not read.
FEATURE_READS: tuple[TableRead, ...] = (
    TableRead(ORDERS, (CUSTOMER_ID, ORDER_DATE, AMOUNT, PRODUCT), ORDER_DATE),
    TableRead(CUSTOMERS, (CUSTOMER_ID, CREATED_AT, SEGMENT, REGION, ACCOUNT_MANAGER)),
    TableRead(INTERACTIONS, (CUSTOMER_ID, OCCURRED_AT, KIND, SEVERITY), OCCURRED_AT),
    TableRead(RECEIVABLES, (CUSTOMER_ID, ISSUED_AT, DUE_DATE, PAID_AT, AMOUNT), ISSUED_AT),
    TableRead(OPPORTUNITIES, (CUSTOMER_ID, CREATED_AT, CLOSE_DATE, STATUS, AMOUNT), CREATED_AT),
)


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
                buckets: int = DEFAULT_BUCKETS) -> FeatureRun:
    """The customer feature table of ``source`` at ``as_of`` (default: the day after the data's
    last dated row), computed on ``engine``."""
    when = as_of_day(as_of if as_of is not None else engine.data_end(source)
                     + pd.Timedelta(days=1))[0]
    frames = engine.read(source, FEATURE_READS, before=when)
    fn = partial(bucket_features, as_of=when)
    columns = {name: list(frame.columns) for name, frame in frames.items()}
    template = fn(empty_group(columns))
    return FeatureRun(engine.apply_by_group(frames, CUSTOMER_ID, fn, template, buckets), when)
