"""Giving back memory that a read no longer uses.

Arrow converts Parquet columns to pandas through its own memory pool (mimalloc here), which
keeps the pages it freed for the next allocation instead of returning them to the system: after
reading a large table the process holds the table's Arrow copy as well as its frame (on the
`large` demo company's orders, about as much again as the frame). :func:`release_unused_memory`
hands those pages back; it changes no value, only what the process keeps.

:func:`lean_tables` is the read of a command that computes with the tables in this process but
never with the row ids (``order_id``, ``invoice_id``: one distinct string per row, about a third
of the orders' and receivables' memory on a large company): ``warnings evaluate``,
``feasibility``, ``train churn``, ``score churn``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from engine.io.problems import BadInput, Problem

if TYPE_CHECKING:
    from engine.io.tables import Tables

__all__ = ["lean_tables", "release_unused_memory"]


def release_unused_memory() -> None:
    """Return the pages Arrow's memory pool keeps free to the system (nothing when pyarrow was
    never imported: a CSV-only run pays nothing)."""
    if "pyarrow" not in sys.modules:
        return
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _lean_parquet(table: str, path: Path, skip: frozenset[str]
                  ) -> tuple[pd.DataFrame | None, list[Problem]]:
    """A Parquet table as :func:`engine.io.read.read_raw_file` reads it, without the columns
    named in ``skip`` (casefold): they are never read from the file, so never converted to
    Python strings and then copied away."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from engine.io.read import UNREADABLE, own_columns

    try:
        if path.is_dir():
            dataset = ds.dataset(path, format="parquet")
            names = list(dataset.schema.names)
        else:
            file = pq.ParquetFile(path)
            names = list(file.schema_arrow.names)
        keep, kept, problems = own_columns(table, names)
        wanted = [(position, name) for position, name in zip(keep, kept, strict=True)
                  if name.casefold() not in skip]
        if len(set(names)) == len(names):  # read only the wanted columns
            read = [names[position] for position, _ in wanted]
            arrow = dataset.to_table(columns=read) if path.is_dir() else file.read(columns=read)
        else:  # a name given twice: by position
            arrow = (dataset.to_table() if path.is_dir() else file.read()).select(
                [position for position, _ in wanted])
        arrow = arrow.rename_columns([name for _, name in wanted]).replace_schema_metadata(None)
        frame = arrow.to_pandas()
    except PermissionError as exc:
        return None, [Problem(table, 0, "-", UNREADABLE, f"{path.name}: {exc.strerror or exc}")]
    except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return None, [Problem(table, 0, "-", "not a readable Parquet file", reason)]
    frame.index = pd.RangeIndex(2, len(frame) + 2)
    return frame, problems


def lean_tables(source: str | Path) -> Tables:
    """Every table of ``source`` but the row ids (``order_id``, ``invoice_id``), validated.

    The same tables as ``load_tables(source, skip=ROW_IDS)`` (every other column checked as
    always, every problem reported), read leaner: a Parquet data directory's row ids are never
    read from its files; any other source (CSV, Delta, SQL) drops them as each table is read.

    Raises:
        BadInput: the data does not validate (the loader's problems).
    """
    from engine.io import ROW_IDS, load_tables
    from engine.io.checks import MISSING_TABLE, validate_tables
    from engine.io.read import parquet_tables

    if (paths := parquet_tables(source)) is None:
        return load_tables(source, skip=ROW_IDS)
    skip = frozenset(c.casefold() for c in ROW_IDS)
    raw: dict[str, pd.DataFrame] = {}
    problems: list[Problem] = []
    for table, path in paths.items():
        frame, read_problems = _lean_parquet(table, path, skip)
        problems += read_problems
        if frame is not None:
            raw[table] = frame
    release_unused_memory()  # the Arrow copies of the tables, now frames
    tables, table_problems = validate_tables(raw, consume=True, skipped=ROW_IDS)
    release_unused_memory()  # the Arrow text the checks used
    unreadable = {p.table for p in problems if p.line == 0}
    problems += [p for p in table_problems
                 if not (p.check == MISSING_TABLE and p.table in unreadable)]
    if problems:
        raise BadInput(problems)
    tables.source = str(source)
    return tables
