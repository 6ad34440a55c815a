"""Write a Delta data directory: each table's folder a Delta table (``orders/_delta_log``),
dated tables partitioned by year like a Parquet data directory (``engine.compute.parquet``).

``deltalake`` (delta-rs, no JVM) writes it; for tests and benchmarks, and for trying the
Delta reads (:mod:`engine.compute.sources`) on a company of one's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from engine.compute.parquet import PARTITION, _event_date

__all__ = ["write_delta_dir"]


def _arrow(frame: pd.DataFrame) -> Any:
    """A frame as Arrow, timestamps in microseconds (Delta's and Spark's unit)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    return table.cast(pa.schema([
        field.with_type(pa.timestamp("us")) if pa.types.is_timestamp(field.type) else field
        for field in table.schema]))


def write_delta_dir(frames: Mapping[str, pd.DataFrame], directory: Path) -> Path:
    """``directory/<table>/`` a Delta table per frame (replaced if there), dated tables
    partitioned by the integer ``year`` of their event date (readers skip the years a date
    filter excludes and never return the column)."""
    from deltalake import write_deltalake

    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        date = _event_date(name, frame)
        if date is None:
            write_deltalake(directory / name, _arrow(frame), mode="overwrite")
            continue
        years = frame[date].dt.year.astype("Int32")
        write_deltalake(directory / name, _arrow(frame.assign(**{PARTITION: years})),
                        partition_by=[PARTITION], mode="overwrite")
    return directory
