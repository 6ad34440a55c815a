"""The compute interface and its pandas implementation (one machine, the default).

A use case asks an engine for three things: the end of the data (:meth:`ComputeEngine.data_end`),
the tables it needs with only the columns it reads and only the rows dated before its as-of
(:meth:`ComputeEngine.read`, the date filter pushed into the read), and a pure function of
pandas frames run once per group of keys (:meth:`ComputeEngine.apply_by_group`). Both engines
run the same function on the same groups in the same row order, so their results are identical
to the last bit: a group is a bucket of keys (CRC-32 of the key's text modulo the number of
buckets, which Spark computes with the same ``crc32``), and every frame of a group is sorted by
all its columns before the function sees it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from engine.io import Tables, load_tables
from engine.io.checks import suspect_cells
from engine.io.read import parquet_tables
from engine.periods import data_end
from engine.schemas import DTYPES, STATUS, TABLES

__all__ = [
    "DEFAULT_BUCKETS",
    "ComputeEngine",
    "ComputeError",
    "GroupFn",
    "PandasEngine",
    "TableRead",
    "bucket_of",
    "canonical_order",
    "column_dtype",
    "empty_group",
    "finish",
    "parquet_tables",
    "typed_frame",
]

# Groups of keys per run: enough for every core of a small cluster to hold a few groups.
DEFAULT_BUCKETS = 16
GroupFn = Callable[[dict[str, pd.DataFrame]], pd.DataFrame]


class ComputeError(Exception):
    """A failure of the engine (Spark cannot start, a file it cannot parse), in plain words;
    :attr:`exit_code` 2 when the data is at fault, else 1."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class TableRead:
    """What a command reads of one table.

    Attributes:
        table: the table's name (``engine.schemas``).
        columns: the columns it reads; those the source lacks are skipped (optional columns).
        date: when given, only rows with this date before the as-of are read (rows without it
            are dropped too: a row with no date is never before the as-of).
    """

    table: str
    columns: tuple[str, ...]
    date: str | None = None


def column_dtype(table: str, column: str) -> str:
    """The pandas dtype of a column after validation (``engine.schemas.DTYPES``)."""
    spec = TABLES[table].columns.get(column)
    return DTYPES[spec.kind] if spec is not None else "object"


def _coerce(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """The validated dtypes, whatever the reader produced; text NAs as ``None``."""
    out: dict[str, np.ndarray] = {}
    for column in frame.columns:
        dtype = column_dtype(table, column)
        if dtype == "object":
            out[column] = _objects(frame[column])
        else:
            out[column] = frame[column].to_numpy(dtype=dtype)
    return pd.DataFrame(out, columns=list(frame.columns))


def _objects(values: pd.Series) -> np.ndarray:
    """Python objects with ``None`` for every missing value."""
    array = values.to_numpy(dtype=object, copy=True)
    array[pd.isna(array)] = None
    return array


def canonical_order(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """One row order whatever order the rows arrived in: sorted by every column (stable), so
    sums over rows add in the same order on every engine."""
    frame = _coerce(frame, table)
    if len(frame) > 1 and len(frame.columns):
        frame = frame.sort_values(list(frame.columns), kind="mergesort", na_position="last",
                                  ignore_index=True)
    return frame


def bucket_of(keys: pd.Series, buckets: int) -> np.ndarray:
    """The group of each key: CRC-32 of its UTF-8 text modulo ``buckets`` (-1 for a missing
    key). Each distinct key is hashed once."""
    codes, uniques = pd.factorize(keys)
    hashed = np.array([zlib.crc32(str(value).encode("utf-8")) % buckets for value in uniques],
                      dtype=np.int64)
    return np.append(hashed, -1)[codes]


def empty_group(columns: Mapping[str, Sequence[str]]) -> dict[str, pd.DataFrame]:
    """Frames without rows but with the validated dtypes, for finding a function's output."""
    return {
        table: pd.DataFrame({c: pd.Series([], dtype=column_dtype(table, c)) for c in cols})
        for table, cols in columns.items()
    }


def finish(parts: Iterable[pd.DataFrame], template: pd.DataFrame, sort_by: str) -> pd.DataFrame:
    """The groups' results as one frame shaped like ``template`` (the function's output on no
    rows): its columns in its order, its dtypes (categoricals over the values present), rows
    sorted by ``sort_by``."""
    frames = [p for p in parts if len(p)]
    if not frames:
        return template.copy()
    plain = [f.astype({c: object for c in f.columns
                       if isinstance(f[c].dtype, pd.CategoricalDtype)}) for f in frames]
    joined = pd.concat(plain, ignore_index=True)[list(template.columns)]
    joined = joined.sort_values(sort_by, kind="mergesort", ignore_index=True)
    for column in template.columns:
        dtype = template[column].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            joined[column] = pd.Categorical(_objects(joined[column]))
        elif joined[column].dtype != dtype:
            joined[column] = joined[column].astype(dtype)
    return joined


class ComputeEngine(Protocol):
    """Where a use case computes (see the module docstring)."""

    name: str

    def data_end(self, source: str) -> pd.Timestamp: ...

    def read(self, source: str, reads: Sequence[TableRead], before: pd.Timestamp) -> Any: ...

    def apply_by_group(self, frames: Any, key: str, fn: GroupFn, template: pd.DataFrame,
                       buckets: int = DEFAULT_BUCKETS, *, keys: Mapping[str, str] | None = None,
                       collect: bool = True) -> Any:
        """``fn`` on each bucket of keys, its results as one frame shaped like ``template``
        (rows sorted by ``key``, a column of ``template``).

        ``keys`` names another key column for some frames (a frame's rows go to the bucket of
        that column's value; rows without a key go nowhere). ``collect=False`` leaves the
        result where the engine computes (a frame to pass to the next ``apply_by_group``, never
        brought to this process; pandas: the frame itself)."""
        ...

    def minimum(self, frame: Any, column: str) -> Any:
        """The smallest value of ``column`` of a frame this engine read (None without rows)."""
        ...

    def from_pandas(self, frame: pd.DataFrame, schema: str) -> Any:
        """``frame`` where this engine computes (``schema``: Spark's DDL of its columns)."""
        ...

    def close(self) -> None: ...


def _prune(frame: pd.DataFrame, read: TableRead, before: pd.Timestamp) -> pd.DataFrame:
    frame = frame[[c for c in read.columns if c in frame.columns]]
    if read.date is not None and read.date in frame.columns:
        frame = frame[frame[read.date] < before]
    return frame


class PandasEngine:
    """Everything in this process: CSV data directories through the validating loader (every
    problem reported, exit 2); Parquet and Delta data directories and SQL databases with the
    columns and the date filter pushed into the read (:mod:`engine.compute.sources`)."""

    name = "pandas"

    def __init__(self) -> None:
        self._loaded: tuple[str, Tables] | None = None

    def _tables(self, source: str) -> Tables:
        if self._loaded is None or self._loaded[0] != source:
            self._loaded = (source, load_tables(source))
        return self._loaded[1]

    def _held(self, source: str) -> bool:
        return self._loaded is not None and self._loaded[0] == source

    def hold(self, source: str, tables: Tables) -> PandasEngine:
        """Read ``source`` from ``tables``, already loaded here (the command's own read), instead
        of reading it again; returns the engine."""
        self._loaded = (source, tables)
        return self

    def data_end(self, source: str) -> pd.Timestamp:
        from engine.compute.sources import pruned_source

        if not self._held(source) and (pruned := pruned_source(source)) is not None:
            return data_end(Tables(_checked(source, _source_dates(pruned))))
        return data_end(self._tables(source))

    def read(self, source: str, reads: Sequence[TableRead], before: pd.Timestamp
             ) -> dict[str, pd.DataFrame]:
        from engine.compute.sources import pruned_source

        if not self._held(source) and (pruned := pruned_source(source)) is not None:
            present = pruned.tables
            return _checked(source, {r.table: typed_frame(pruned.scan(r, before), r.table)
                                     for r in reads if r.table in present})
        tables = self._tables(source)
        return {r.table: _prune(tables[r.table], r, before)
                for r in reads if tables.has(r.table) and r.table not in tables.derived}

    def apply_by_group(self, frames: dict[str, pd.DataFrame], key: str, fn: GroupFn,
                       template: pd.DataFrame, buckets: int = DEFAULT_BUCKETS, *,
                       keys: Mapping[str, str] | None = None, collect: bool = True
                       ) -> pd.DataFrame:
        key_of = {name: (keys or {}).get(name, key) for name in frames}
        groups = {name: bucket_of(frame[key_of[name]], buckets)
                  for name, frame in frames.items()}
        parts = []
        for bucket in sorted(set().union(*(set(g[g >= 0].tolist()) for g in groups.values()))):
            group = {name: canonical_order(frame[groups[name] == bucket], name)
                     for name, frame in frames.items()}
            parts.append(fn(group))
        return finish(parts, template, key)

    def minimum(self, frame: pd.DataFrame, column: str) -> Any:
        return frame[column].min() if len(frame) else None

    def from_pandas(self, frame: pd.DataFrame, schema: str) -> pd.DataFrame:
        return frame

    def close(self) -> None:
        self._loaded = None


def typed_frame(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """:func:`_coerce`; a stored value that is not of its column's type (text in a number
    column of a database) is bad input, exit 2."""
    try:
        return _coerce(frame, table)
    except (ValueError, TypeError) as exc:
        raise ComputeError(f"{table}: a cell could not be read as its column's type ({exc}); "
                           "`quotacast validate --data D` lists every problem",
                           exit_code=2) from exc


def _checked(source: str, frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``frames`` of a pruned read, once no cell of them is one the loader would refuse (an
    ``inf`` amount, an order dated 2099); else the source goes through the validating loader,
    which raises :class:`engine.io.BadInput` naming every problem with its line (exit 2)."""
    if any(suspect_cells(table, frame) for table, frame in frames.items()):
        load_tables(source)
    return frames


def _source_dates(source: Any) -> dict[str, pd.DataFrame]:
    """The date columns (and deals' status) of every table of a pruned source
    (:class:`engine.compute.sources.PrunedSource`): all :func:`data_end` reads."""
    return {name: typed_frame(source.scan(TableRead(
        name, (*TABLES[name].columns_of_kind("date"), STATUS)), None), name)
        for name in sorted(source.tables)}
