"""Write a Parquet data directory: a sub-directory per table, partitioned by year."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from engine.schemas import FORWARD_LOOKING_DATES, TABLES

__all__ = ["PARTITION", "write_parquet_dir"]

PARTITION = "year"  # the year of a table's first event date; readers never select it


def _event_date(name: str, frame: pd.DataFrame) -> str | None:
    spec = TABLES.get(name)
    dates = [] if spec is None else spec.columns_of_kind("date")
    return next((c for c in dates if c in frame.columns and c not in FORWARD_LOOKING_DATES), None)


def write_parquet_dir(frames: Mapping[str, pd.DataFrame], directory: Path,
                      part: int | None = None) -> Path:
    """``directory/<table>/year=YYYY/*.parquet`` for dated tables, ``directory/<table>/`` one
    file for the others (hive partitioning: readers skip the years a date filter excludes).

    With ``part`` the frames are one more block of the directory's rows (a company generated a
    block of customers at a time): the dated tables' files ``part-<part>-*.parquet`` are added
    beside the earlier blocks' instead of replacing their years; an undated table is still
    written whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def arrow(frame: pd.DataFrame) -> pa.Table:
        # Microseconds: Spark reads no nanosecond timestamps.
        table = pa.Table.from_pandas(frame, preserve_index=False)
        return table.cast(pa.schema([
            field.with_type(pa.timestamp("us")) if pa.types.is_timestamp(field.type) else field
            for field in table.schema]))

    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        target = directory / name
        date = _event_date(name, frame)
        table = frame.reset_index(drop=True)
        if date is None:
            target.mkdir(exist_ok=True)
            pq.write_table(arrow(table), target / "part-0.parquet")
            continue
        years = table[date].dt.year.astype("Int64").astype(str).replace("<NA>", "none")
        pq.write_to_dataset(arrow(table.assign(**{PARTITION: years})), target,
                            partition_cols=[PARTITION],
                            **({"existing_data_behavior": "delete_matching"} if part is None else
                               {"existing_data_behavior": "overwrite_or_ignore",
                                "basename_template": f"part-{part}-{{i}}.parquet"}))
    return directory
