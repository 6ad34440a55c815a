"""Where the commands that grow with the data compute: one implementation, two engines.

``pandas`` runs in this process; ``spark`` runs the same pure functions of pandas frames on
Spark (local or a cluster) with ``groupBy(...).applyInPandas``. See :mod:`engine.compute.base`
for why their results are identical. Spark is imported only by :func:`open_engine` when asked
for, so the pandas path never loads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engine.compute.base import (
    DEFAULT_BUCKETS,
    ComputeEngine,
    ComputeError,
    GroupFn,
    PandasEngine,
    TableRead,
    bucket_of,
    canonical_order,
    empty_group,
    finish,
    parquet_tables,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "ENGINES",
    "ComputeEngine",
    "ComputeError",
    "GroupFn",
    "PandasEngine",
    "TableRead",
    "bucket_of",
    "canonical_order",
    "empty_group",
    "finish",
    "make_engine",
    "open_engine",
    "parquet_tables",
]

ENGINES = ("pandas", "spark")


def make_engine(name: str, spark_master: str = "local[*]") -> ComputeEngine:
    """The engine called ``name`` (``pandas`` or ``spark``); Spark starts on first use."""
    if name == "pandas":
        return PandasEngine()
    if name == "spark":
        try:
            from engine.compute.spark import SparkEngine
        except ImportError as exc:
            raise ComputeError("the spark engine needs pyspark: pip install 'quotacast[spark]'"
                               ) from exc
        return SparkEngine(spark_master)
    raise ValueError(f"unknown engine {name!r}, expected one of {', '.join(ENGINES)}")


@contextmanager
def open_engine(name: str, spark_master: str = "local[*]") -> Iterator[ComputeEngine]:
    """An engine, closed (Spark stopped) on exit."""
    engine = make_engine(name, spark_master)
    try:
        yield engine
    finally:
        engine.close()
