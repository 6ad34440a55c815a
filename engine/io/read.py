"""Reading a data directory (CSV, gzipped CSV, Parquet, Delta) or a SQL database into raw frames.

Nothing is parsed here beyond what the file format stores; each frame is indexed by where its
rows sit, so that every problem found later names it:

- CSV: the line in the file where the record starts, counting the header as line 1. Records
  with quoted line breaks and skipped blank lines are counted exactly.
- Parquet and Delta: the row number plus one, as if the table were a CSV file with a header.
- SQL: the row's primary key (the 1-based row number when the table has none).

Problems with a whole file are on line 0, problems with the header (a column named twice, a
NUL byte in a name) on line 1. Reading never creates anything: a SQLite URL naming a file that
does not exist is a problem, not a new empty database.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from engine.io.problems import MAX_EXAMPLES, Problem
from engine.io.write import SUFFIXES
from engine.schemas import TABLES

__all__ = [
    "UNREADABLE",
    "delta_tables",
    "find_table_files",
    "is_delta_table",
    "is_sql_url",
    "near_table_names",
    "open_sql",
    "parquet_tables",
    "read_raw_file",
    "read_source",
]

EXPECTED_ENCODING = "UTF-8"
# The check of a file that exists but cannot be read (such a table is not also "missing").
UNREADABLE = "unreadable file"
NUL_CHECK = "NUL byte in the cell"
TWICE = "column named twice in the header"


def is_sql_url(source: str | Path) -> bool:
    """True when ``source`` is a SQLAlchemy URL rather than a directory."""
    return isinstance(source, str) and re.match(r"^[a-z][a-z0-9+]*://", source) is not None


def _split_name(path: Path) -> tuple[str, str]:
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    stem, dot, ext = name.partition(".")
    return stem, (dot + ext)


_TABLE_NAMES = {name.casefold(): name for name in TABLES}


def near_table_names(directory: Path, missing: str) -> list[str]:
    """Files of ``directory`` named nearly like the table ``missing`` (``order.csv``,
    ``oportunities.csv``): what a "did you mean" names."""
    import difflib

    try:
        names = {_split_name(p)[0].casefold(): p.name for p in directory.iterdir() if p.is_file()}
    except OSError:
        return []
    others = [n for n in names if n not in _TABLE_NAMES]
    close = difflib.get_close_matches(missing, others, n=3, cutoff=0.75)
    return [names[n] for n in close]


def find_table_files(directory: Path) -> tuple[dict[str, Path], list[Problem]]:
    """Map each known table to its one file in ``directory``; report file-level problems."""
    found: dict[str, list[Path]] = {}
    problems: list[Problem] = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        table, suffix = _split_name(path)
        table = _TABLE_NAMES.get(table.casefold(), table)  # Orders.csv is orders
        if table not in TABLES:
            continue
        if suffix not in SUFFIXES:
            problems.append(
                Problem(
                    table,
                    0,
                    "-",
                    "unknown file extension, expected .csv, .csv.gz or .parquet",
                    path.name,
                )
            )
            continue
        found.setdefault(table, []).append(path)
    files: dict[str, Path] = {}
    for table, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            problems.append(Problem(table, 0, "-", "two files for one table", names))
        else:
            files[table] = paths[0]
    return files, problems


def _first_non_utf8(data: bytes) -> tuple[int, bytes]:
    """Line and byte of the first byte that is not UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1, data[exc.start : exc.start + 1]
    return 0, b""


def own_columns(table: str, names: list[object])  -> tuple[list[int], list[str], list[Problem]]:
    """Column names stripped; a name given twice is a problem and only its first copy is kept.

    Returns the positions to keep, their names, and the problems.
    """
    keep: list[int] = []
    kept: list[str] = []
    first: dict[str, int] = {}
    problems: list[Problem] = []
    for position, raw in enumerate(names, start=1):
        name = str(raw).strip()
        if name in first:
            problems.append(
                Problem(table, 1, name, TWICE, f"columns {first[name]} and {position}")
            )
            continue
        first[name] = position
        keep.append(position - 1)
        kept.append(name)
        if "\x00" in name:
            problems.append(Problem(table, 1, "-", "NUL byte in a column name", _shown(name)))
    return keep, kept, problems


def _shown(value: object) -> str:
    return str(value).replace("\x00", "\\x00")


def _is_blank(row: list[str]) -> bool:
    """A record pandas skips: an empty line or one of spaces only."""
    return not row or (len(row) == 1 and not row[0].strip())


def _records(text: str) -> list[tuple[int, list[str]]]:
    """Each non-blank CSV record (header first) with the line it starts on."""
    reader = csv.reader(io.StringIO(text))
    records = []
    previous = 0
    for row in reader:
        start, previous = previous + 1, reader.line_num
        if not _is_blank(row):
            records.append((start, row))
    return records


def _csv_lines(data: bytes, rows: int) -> tuple[pd.Index, list[tuple[int, list[str]]]]:
    """The line each of ``rows`` records starts on; and the records, when they had to be read.

    One line per record (the common case) is seen by counting line breaks; only a file with
    quoted line breaks, blank lines or NUL bytes is read record by record.
    """
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    if lines == rows + 1 and b"\x00" not in data:
        return pd.RangeIndex(2, rows + 2), []
    try:
        records = _records(data.decode("utf-8-sig"))
    except (csv.Error, UnicodeDecodeError):
        return pd.RangeIndex(2, rows + 2), []
    starts = [start for start, _ in records[1:]]
    index = pd.Index(starts) if len(starts) == rows else pd.RangeIndex(2, rows + 2)
    return index, records


def _nul_problems(table: str, records: list[tuple[int, list[str]]]) -> list[Problem]:
    """Cells holding a NUL byte (pandas would silently cut the value there)."""
    if not records:
        return []
    header = [name.strip() for name in records[0][1]]
    found: dict[str, list[tuple[int, str]]] = {}
    for line, row in records[1:]:
        for position, cell in enumerate(row):
            if "\x00" in cell:
                column = header[position] if position < len(header) else f"column {position + 1}"
                found.setdefault(column, []).append((line, cell))
    problems = []
    for column, cells in found.items():
        problems += [Problem(table, line, column, NUL_CHECK, _shown(cell))
                     for line, cell in cells[:MAX_EXAMPLES]]
        if len(cells) > MAX_EXAMPLES:
            problems.append(Problem(table, "", column, NUL_CHECK, more=len(cells) - MAX_EXAMPLES))
    return problems


def _file_bytes(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return fh.read()
    return path.read_bytes()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def _read_csv(table: str, path: Path) -> tuple[pd.DataFrame | None, list[Problem]]:
    try:
        data = _file_bytes(path)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, gzip.BadGzipFile | EOFError | zlib.error):
            return None, [Problem(table, 0, "-", "not a readable CSV file", _reason(exc))]
        return None, [Problem(table, 0, "-", UNREADABLE, f"{path.name}: {_reason(exc)}")]
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype=str,
            encoding="utf-8-sig",
            keep_default_na=False,
            na_values=[""],
            skipinitialspace=False,
        )
    except UnicodeDecodeError:
        # pandas reports the offset inside its read buffer: find the byte in the whole file.
        line, byte = _first_non_utf8(data)
        check = f"file is not {EXPECTED_ENCODING}; save it as {EXPECTED_ENCODING}"
        return None, [Problem(table, line, "-", check, f"byte {byte!r}")]
    except pd.errors.EmptyDataError:
        return None, [Problem(table, 0, "-", "empty file", path.name)]
    except (pd.errors.ParserError, ValueError, OverflowError) as exc:
        return None, [Problem(table, 0, "-", "not a readable CSV file", _reason(exc))]
    index, records = _csv_lines(data, len(frame))
    header: list[object] = list(records[0][1]) if records else _header(data)
    names: list[object] = header if len(header) == frame.shape[1] else list(frame.columns)
    keep, kept, problems = own_columns(table, names)
    frame = frame.iloc[:, keep].set_axis(kept, axis=1)
    frame.index = index
    return frame, problems + _nul_problems(table, records)


def _header(data: bytes) -> list[object]:
    head = data[: 1 << 16].decode("utf-8-sig", errors="replace")
    try:
        return list(next(csv.reader(io.StringIO(head)), []))
    except csv.Error:
        return []


def _read_parquet(table: str, path: Path, skip: frozenset[str] = frozenset()
                  ) -> tuple[pd.DataFrame | None, list[Problem]]:
    """A Parquet file, or a table's folder of them (partition folders such as ``year=2024``
    are not read as a column). Columns named in ``skip`` (casefold) are never read from the
    file, so never converted to Python strings and then dropped."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    try:
        if skip:
            arrow, problems = _parquet_without(table, path, skip)
        else:
            arrow = (ds.dataset(path, format="parquet").to_table() if path.is_dir()
                     else pq.ParquetFile(path).read())
            keep, kept, problems = own_columns(table, list(arrow.column_names))
            if len(keep) < arrow.num_columns:
                arrow = arrow.select(keep).rename_columns(kept).replace_schema_metadata(None)
        frame = arrow.to_pandas()
    except PermissionError as exc:
        return None, [Problem(table, 0, "-", UNREADABLE, f"{path.name}: {_reason(exc)}")]
    except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
        return None, [Problem(table, 0, "-", "not a readable Parquet file", _reason(exc))]
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.index = pd.RangeIndex(2, len(frame) + 2)
    return frame, problems


def _parquet_without(table: str, path: Path, skip: frozenset[str]) -> tuple[Any, list[Problem]]:
    """The table's own columns of a Parquet file or folder (:func:`own_columns`) but those in
    ``skip`` (casefold), only those read from the file; and the columns' problems."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    dataset = ds.dataset(path, format="parquet") if path.is_dir() else None
    file = None if dataset is not None else pq.ParquetFile(path)
    names = list(dataset.schema.names if dataset is not None
                 else file.schema_arrow.names)  # type: ignore[union-attr]
    keep, kept, problems = own_columns(table, names)
    wanted = [(position, name) for position, name in zip(keep, kept, strict=True)
              if name.casefold() not in skip]
    if len(set(names)) == len(names):  # read only the wanted columns
        read = [names[position] for position, _ in wanted]
        arrow = (dataset.to_table(columns=read) if dataset is not None
                 else file.read(columns=read))  # type: ignore[union-attr]
    else:  # a name given twice: by position
        whole = dataset.to_table() if dataset is not None else file.read()  # type: ignore[union-attr]
        arrow = whole.select([position for position, _ in wanted])
    return (arrow.rename_columns([name for _, name in wanted]).replace_schema_metadata(None),
            problems)


def _read_delta(table: str, path: Path) -> tuple[pd.DataFrame | None, list[Problem]]:
    """A Delta table's current snapshot (``deltalake``, no JVM), without the partition column
    the writer added (``year``: not a column of the table)."""
    try:
        from deltalake import DeltaTable
    except ImportError:
        return None, [Problem(table, 0, "-", UNREADABLE,
                              f"{path.name}: a Delta table needs pip install 'quotacast[delta]'")]
    try:
        delta = DeltaTable(str(path))
        added = [c for c in delta.metadata().partition_columns if c not in TABLES[table].columns]
        arrow = delta.to_pyarrow_table()
        arrow = arrow.drop_columns(added) if added else arrow
    except PermissionError as exc:
        return None, [Problem(table, 0, "-", UNREADABLE, f"{path.name}: {_reason(exc)}")]
    except Exception as exc:  # delta-rs: its own error types
        return None, [Problem(table, 0, "-", "not a readable Delta table", _reason(exc))]
    keep, kept, problems = own_columns(table, list(arrow.column_names))
    if len(keep) < arrow.num_columns:
        arrow = arrow.select(keep).rename_columns(kept)
    frame = arrow.to_pandas()
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.index = pd.RangeIndex(2, len(frame) + 2)
    return frame, problems


def is_delta_table(path: Path) -> bool:
    """A folder holding a Delta table (its transaction log ``_delta_log``)."""
    return (path / "_delta_log").is_dir()


def read_raw_file(table: str, path: Path, skip: frozenset[str] = frozenset()
                  ) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read one file as text cells (CSV) or as stored (Parquet: a file or a table's folder;
    Delta: a table's folder), indexed by line number (a Parquet or Delta row's number plus
    one, as if under a header line). ``skip`` (casefold names): columns a Parquet read leaves
    in the file; other formats read them (the caller drops them)."""
    if path.is_dir() and is_delta_table(path):
        return _read_delta(table, path)
    if path.name.endswith(".parquet") or path.is_dir():
        return _read_parquet(table, path, skip)
    return _read_csv(table, path)


def _sql_problem(check: str, detail: object) -> list[Problem]:
    return [Problem("-", 0, "-", check, _reason(detail) if isinstance(detail, BaseException)
                    else str(detail))]


def open_sql(url: str) -> tuple[Any, list[Problem]]:
    """A SQLAlchemy engine on ``url``, or None and the problem (not a URL, a SQLite file that
    does not exist: reading never creates a database, no driver)."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        return None, _sql_problem("not a database URL", exc)
    database = parsed.database or ""
    if (parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
            and not database.startswith("file:") and not Path(database).is_file()):
        return None, _sql_problem("SQLite database not found", database)
    try:
        return sa.create_engine(parsed), []
    except (sa.exc.SQLAlchemyError, ImportError) as exc:
        return None, _sql_problem("cannot open the SQL database (driver or URL)", exc)


def _read_sql(
    url: str, on_table: Callable[[str], None] | None
) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    import sqlalchemy as sa

    engine, opening = open_sql(url)
    if engine is None:
        return {}, opening
    raw: dict[str, pd.DataFrame] = {}
    problems: list[Problem] = []
    try:
        inspector = sa.inspect(engine)
        names = set(inspector.get_table_names())
        for table in TABLES:
            if table not in names:
                continue
            if on_table:
                on_table(table)
            try:
                raw[table] = _read_sql_table(engine, inspector, table)
            except (sa.exc.SQLAlchemyError, ValueError, TypeError) as exc:
                problems.append(Problem(table, 0, "-", "cannot read the table", _reason(exc)))
    except (sa.exc.SQLAlchemyError, ImportError) as exc:
        return {}, _sql_problem("cannot open the SQL database", exc)
    finally:
        engine.dispose()
    return raw, problems


def _read_sql_table(engine: object, inspector: object, table: str) -> pd.DataFrame:
    """The rows as the database stores them (no type conversion that could fail on a stray
    value: text in a REAL column is a text cell, reported like in a CSV file)."""
    import sqlalchemy as sa

    query: sa.Select[tuple[object]] = sa.select(sa.literal_column("*")).select_from(
        sa.table(table))
    with engine.connect() as con:  # type: ignore[attr-defined]
        frame = pd.read_sql_query(query, con)
    pk = inspector.get_pk_constraint(table).get("constrained_columns") or []  # type: ignore[attr-defined]
    keep, kept, _ = own_columns(table, list(frame.columns))
    frame = frame.iloc[:, keep].set_axis(kept, axis=1)
    if len(pk) == 1 and pk[0] in frame.columns:
        frame.index = pd.Index(frame[pk[0]].astype(str).to_numpy(), name=None)
    else:
        frame.index = pd.RangeIndex(1, len(frame) + 1)
    return frame


def _read_directory(
    directory: Path, on_table: Callable[[str], None] | None
) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    if not directory.is_dir():
        return {}, [Problem("-", 0, "-", "data directory not found", str(directory))]
    try:
        files, problems = find_table_files(directory)
    except OSError as exc:
        return {}, [Problem("-", 0, "-", "cannot read the data directory",
                            f"{directory}: {_reason(exc)}")]
    return _read_files(files, problems, on_table)


def _read_files(files: dict[str, Path], problems: list[Problem],
                on_table: Callable[[str], None] | None, skip: frozenset[str] = frozenset()
                ) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    raw: dict[str, pd.DataFrame] = {}
    for table, path in files.items():
        if on_table:
            on_table(table)
        frame, file_problems = read_raw_file(table, path, skip)
        problems.extend(file_problems)
        if frame is not None:
            raw[table] = frame
    return raw, problems


def parquet_tables(source: str | Path) -> dict[str, Path] | None:
    """The tables of a Parquet data directory, or None when ``source`` is not one.

    A Parquet data directory holds a sub-directory per table (``orders/``, possibly
    partitioned, e.g. ``orders/year=2024/part-0.parquet``) with Parquet files inside, and may
    hold single ``<table>.parquet`` files beside them.
    """
    if is_sql_url(str(source)):
        return None
    root = Path(source)
    if not root.is_dir() or delta_tables(root) is not None:
        return None
    found: dict[str, Path] = {}
    has_directory = False
    for name in TABLES:
        folder, single = root / name, root / f"{name}.parquet"
        if folder.is_dir() and next(folder.rglob("*.parquet"), None) is not None:
            found[name], has_directory = folder, True
        elif single.is_file():
            found[name] = single
    return found if has_directory else None


def delta_tables(source: str | Path) -> dict[str, Path] | None:
    """The tables of a Delta data directory (a folder per table, each a Delta table holding
    ``_delta_log``), or None when ``source`` is not one."""
    if is_sql_url(str(source)) or not Path(source).is_dir():
        return None
    root = Path(source)
    found = {name: root / name for name in TABLES if is_delta_table(root / name)}
    return found or None


def read_source(
    source: str | Path, on_table: Callable[[str], None] | None = None,
    skip: frozenset[str] = frozenset()
) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    """Read every known table of a directory (CSV files, or Parquet or Delta: a folder per
    table) or SQL URL; CSV cells are not parsed here. ``skip`` (casefold names): columns a
    Parquet directory's files are not asked for (:func:`read_raw_file`)."""
    if is_sql_url(source):
        return _read_sql(str(source), on_table)
    if (paths := delta_tables(source) or parquet_tables(source)) is not None:
        return _read_files(paths, [], on_table, skip)
    return _read_directory(Path(source), on_table)
