"""Read a data directory or SQL database into validated frames; write outputs atomically.

Validation happens here, at the edge, and loudly: :func:`load_tables` collects every problem of
every table (files, encodings, columns, cells, references between tables) and raises one
:class:`BadInput` carrying all of them, each naming table, line, column and value
(README, "When the data is wrong"). Inside quotacast the frames are trusted.

- :mod:`engine.io.read`: files and SQL tables into raw frames indexed by line (or SQL key);
- :mod:`engine.io.checks`: parsing cells and checking what a sales number or date can be;
- :mod:`engine.io.problems`: problems, capped and summarised per kind with counts;
- :mod:`engine.io.write`: atomic writes of outputs and data directories.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path

import pandas as pd

from engine.io.checks import MISSING_TABLE, validate_tables
from engine.io.memory import release_unused_memory
from engine.io.problems import MAX_EXAMPLES, BadInput, Problem
from engine.io.read import is_sql_url, near_table_names, read_source
from engine.io.tables import Tables, empty_table, tier_targets
from engine.io.write import atomic_path, output_format, write_data_dir, write_frame
from engine.schemas import INVOICE_ID, ORDER_ID

__all__ = [
    "MAX_EXAMPLES",
    "ROW_IDS",
    "BadInput",
    "Problem",
    "Tables",
    "atomic_path",
    "empty_table",
    "is_sql_url",
    "load_tables",
    "output_format",
    "read_source",
    "release_unused_memory",
    "tier_targets",
    "validate_tables",
    "write_data_dir",
    "write_frame",
]


def _without(frame: pd.DataFrame, columns: Collection[str]) -> pd.DataFrame:
    """``frame`` without ``columns`` (as named in the file, or but for case and spaces)."""
    wanted = {c.casefold() for c in columns}
    dropped = [c for c in frame.columns if str(c).strip().casefold() in wanted]
    return frame.drop(columns=dropped) if dropped else frame


def _did_you_mean(source: str | Path, problem: Problem) -> Problem:
    """A missing table's problem, naming files of the directory spelt nearly like it."""
    if is_sql_url(source) or not Path(source).is_dir():
        return problem
    near = near_table_names(Path(source), problem.table)
    if not near:
        return problem
    return replace(problem, value=f"{problem.value}; found {', '.join(near)}: did you mean "
                                  f"{problem.table}?")


# Row identifiers that no command computes with (one distinct string per row: about a third of
# the orders' and receivables' memory on a large company); only their own checks read them.
ROW_IDS = frozenset({ORDER_ID, INVOICE_ID})


def load_tables(source: str | Path, on_table: Callable[[str], None] | None = None, *,
                skip: Collection[str] = ()) -> Tables:
    """Read and validate every table of ``source``; raise :class:`BadInput` with all problems.

    Args:
        source: a data directory, or a SQLAlchemy URL holding tables of the same names.
        on_table: called with each table's name as it is read (progress reporting).
        skip: columns a command never reads (e.g. :data:`ROW_IDS`): dropped from each table
            as soon as it is read (a Parquet directory's files are not asked for them), so
            neither checked (a duplicate order id is then not a
            problem) nor kept; every other column is checked as always, and a bad cell there
            is still reported with all the others.
    """
    raw, problems = read_source(source, on_table, frozenset(c.casefold() for c in skip))
    if skip:
        raw = {name: _without(frame, skip) for name, frame in raw.items()}
    release_unused_memory()  # the Arrow copies of Parquet tables, now frames
    tables, table_problems = (validate_tables(raw, consume=True, skipped=frozenset(skip))
                              if raw or not problems else (Tables({}), []))
    release_unused_memory()  # the Arrow text the checks used
    # A table whose file exists but could not be read is reported as such, not also as missing.
    unreadable = {p.table for p in problems if p.line == 0}
    problems += [_did_you_mean(source, p) if p.check == MISSING_TABLE else p
                 for p in table_problems
                 if not (p.check == MISSING_TABLE and p.table in unreadable)]
    if problems:
        raise BadInput(problems)
    tables.source = str(source)
    return tables
