"""Read a data directory or SQL database into validated frames; write outputs atomically.

Validation happens here, at the edge, and loudly: :func:`load_tables` collects every problem of
every table (files, encodings, columns, cells, references between tables) and raises one
:class:`BadInput` carrying all of them, each naming table, line, column and value
(README, "When the data is wrong"). Inside quotacast the frames are trusted.

Line numbers count the header as line 1, so the first data row of a CSV file is line 2. For a
SQL source the row's primary key stands in for the line (its 1-based row number when the table
has none). Problems that concern a whole file are reported on line 0, problems with the header
(a missing column) on line 1. A CSV cell with an embedded line break shifts the numbering.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.errors as pa_errors

from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    COMPANY_KEY,
    CUSTOMER_ID,
    CUSTOMERS,
    DTYPES,
    HIERARCHY_LEVELS,
    INTERACTIONS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    OWNER,
    RECEIVABLES,
    REP,
    SEVERITY,
    SEVERITY_WORDS,
    STAGE_HISTORY,
    TABLES,
    TARGETS,
    TableSpec,
    pandera_schema,
)

__all__ = [
    "BadInput",
    "Problem",
    "Tables",
    "atomic_path",
    "empty_table",
    "is_sql_url",
    "load_tables",
    "read_source",
    "validate_tables",
    "write_data_dir",
    "write_frame",
]

SUFFIXES = (".csv", ".csv.gz", ".parquet")
EXPECTED_ENCODING = "UTF-8"
_PANDERA_CHECKS = {
    "not_nullable": "missing value",
    "field_uniqueness": "duplicate value",
}


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the input, printed as ``table:line: column: check (value)``."""

    table: str
    line: int
    column: str
    check: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.table}:{self.line}: {self.column}: {self.check} ({self.value})"


class BadInput(Exception):
    """Input that quotacast refuses; carries every problem found (exit status 2)."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems), key=_problem_order)
        super().__init__(f"{len(self.problems)} problem(s) in the input")

    def report(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def _problem_order(p: Problem) -> tuple[int, str, int, str, str]:
    table_rank = list(TABLES).index(p.table) if p.table in TABLES else len(TABLES)
    return (table_rank, p.table, p.line, p.column, p.check)


@dataclass
class Tables:
    """The validated tables of one data source.

    Attributes:
        frames: table name -> frame, for every table present (and ``customers`` when derived).
        source: where the tables came from (a directory or a SQL URL).
        derived: tables that were not given but derived (``customers`` from the other tables,
            an empty ``orders`` when only opportunities were given).
    """

    frames: dict[str, pd.DataFrame]
    source: str = ""
    derived: frozenset[str] = field(default_factory=frozenset)

    def has(self, name: str) -> bool:
        return name in self.frames

    def get(self, name: str) -> pd.DataFrame | None:
        return self.frames.get(name)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.frames[name]

    @property
    def orders(self) -> pd.DataFrame:
        """The orders; without rows (but with typed columns) when only deals were given."""
        frame = self.frames.get(ORDERS)
        return frame if frame is not None else empty_table(ORDERS)

    @property
    def customers(self) -> pd.DataFrame:
        return self.frames[CUSTOMERS]


_EMPTY_COLUMNS = {ORDERS: (ORDER_ID, CUSTOMER_ID, ORDER_DATE, AMOUNT, OPPORTUNITY_ID)}


def empty_table(name: str) -> pd.DataFrame:
    """A table without rows, with the parsed dtypes of its required columns.

    ``orders`` also gets ``order_id`` and ``opportunity_id``, so that code joining orders to
    deals needs no special case.
    """
    spec = TABLES[name]
    columns = _EMPTY_COLUMNS.get(name, tuple(spec.required_columns))
    return pd.DataFrame(
        {c: pd.Series(dtype=DTYPES[spec.columns[c].kind]) for c in columns}
    )


# --- finding and reading files ---------------------------------------------------------------


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


def find_table_files(directory: Path) -> tuple[dict[str, Path], list[Problem]]:
    """Map each known table to its one file in ``directory``; report file-level problems."""
    found: dict[str, list[Path]] = {}
    problems: list[Problem] = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        table, suffix = _split_name(path)
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


def _first_non_utf8(path: Path) -> tuple[int, bytes]:
    """Line and byte of the first byte that is not UTF-8 (read whole: only on failure)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1, data[exc.start : exc.start + 1]
    return 0, b""


def read_raw_file(table: str, path: Path) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read one file as text cells (CSV) or as stored (Parquet), indexed by line number."""
    if path.name.endswith(".parquet"):
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            return None, [Problem(table, 0, "-", "not a readable Parquet file", str(exc)[:120])]
        frame.index = pd.RangeIndex(2, len(frame) + 2)
        return frame, []
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            encoding="utf-8-sig",
            keep_default_na=False,
            na_values=[""],
            skipinitialspace=False,
        )
    except UnicodeDecodeError:
        # pandas reports the offset inside its read buffer: find the byte in the whole file.
        line, byte = _first_non_utf8(path)
        check = f"file is not {EXPECTED_ENCODING}; save it as {EXPECTED_ENCODING}"
        return None, [Problem(table, line, "-", check, f"byte {byte!r}")]
    except pd.errors.EmptyDataError:
        return None, [Problem(table, 0, "-", "empty file", path.name)]
    except (pd.errors.ParserError, gzip.BadGzipFile, OSError, EOFError) as exc:
        return None, [Problem(table, 0, "-", "not a readable CSV file", str(exc)[:120])]
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.index = pd.RangeIndex(2, len(frame) + 2)
    return frame, []


def _read_sql_table(engine: object, inspector: object, table: str) -> pd.DataFrame:
    frame = pd.read_sql_table(table, engine)  # type: ignore[call-overload]
    pk = inspector.get_pk_constraint(table).get("constrained_columns") or []  # type: ignore[attr-defined]
    if len(pk) == 1 and pk[0] in frame.columns:
        frame.index = pd.Index(frame[pk[0]].astype(str).to_numpy(), name=None)
    else:
        frame.index = pd.RangeIndex(1, len(frame) + 1)
    return frame


def _read_sql(
    url: str, on_table: Callable[[str], None] | None
) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
        inspector = sa.inspect(engine)
        names = set(inspector.get_table_names())
    except (sa.exc.ArgumentError, sa.exc.OperationalError, sa.exc.NoSuchModuleError) as exc:
        return {}, [Problem("-", 0, "-", "cannot open the SQL database", str(exc).splitlines()[0])]
    raw: dict[str, pd.DataFrame] = {}
    try:
        for table in TABLES:
            if table in names:
                if on_table:
                    on_table(table)
                raw[table] = _read_sql_table(engine, inspector, table)
    finally:
        engine.dispose()
    return raw, []


def _read_directory(
    directory: Path, on_table: Callable[[str], None] | None
) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    if not directory.is_dir():
        return {}, [Problem("-", 0, "-", "data directory not found", str(directory))]
    files, problems = find_table_files(directory)
    raw: dict[str, pd.DataFrame] = {}
    for table, path in files.items():
        if on_table:
            on_table(table)
        frame, file_problems = read_raw_file(table, path)
        problems.extend(file_problems)
        if frame is not None:
            raw[table] = frame
    return raw, problems


def read_source(
    source: str | Path, on_table: Callable[[str], None] | None = None
) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    """Read every known table of a directory or SQL URL without parsing cells."""
    if is_sql_url(source):
        return _read_sql(str(source), on_table)
    return _read_directory(Path(source), on_table)


# --- parsing cells ---------------------------------------------------------------------------


def _as_text(values: pd.Series) -> pd.Series:
    """Cells as stripped strings, missing as NaN; numbers stored by Parquet/SQL (1.0) -> '1'.

    Clean string columns (the common case, millions of ids) are returned as they are: the
    strip runs as one Arrow kernel and only a column that changes is rebuilt.
    """
    if pd.api.types.is_float_dtype(values):
        whole = values.dropna()
        if (whole == whole.round()).all():
            values = values.astype("Int64")
    arrow = values.astype("string[pyarrow]")
    stripped = arrow.str.strip()
    blank = (stripped == "").fillna(False)
    changed = (stripped != arrow).fillna(False) | blank
    clean = not changed.any() and pd.api.types.infer_dtype(values, skipna=True) in (
        "string",
        "empty",
    )
    text = values if clean else stripped.mask(blank).astype(object)
    # Missing text is NaN whatever the source (read_csv's convention; SQL drivers give None).
    missing = text.isna()
    return text.where(~missing, np.nan) if missing.any() else text


def _retry_stripped(
    values: pd.Series, parsed: pd.Series, parse: Callable[[pd.Series], pd.Series]
) -> pd.Series:
    """Parse again, stripped, the cells that failed: most cells parse at once, untouched."""
    failed = values.notna() & parsed.isna()
    if failed.any():
        parsed = parsed.copy()
        parsed[failed] = parse(values[failed].astype(str).str.strip()).to_numpy()
    return parsed


def _to_dates(text: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    return parsed.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")


def _parse_dates(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values)
        if parsed.dt.tz is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        return parsed.astype("datetime64[ns]")
    return _retry_stripped(values, _to_dates(values), _to_dates)


def _to_numbers(text: pd.Series, words: dict[str, float] | None) -> pd.Series:
    if words:
        text = (
            text.astype(str).str.strip().str.lower().replace({k: str(v) for k, v in words.items()})
        )
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _parse_numbers(values: pd.Series, words: dict[str, float] | None = None) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    parsed = _to_numbers(values, words)
    return _retry_stripped(values, parsed, lambda text: _to_numbers(text, words))


def _bad_cells(values: pd.Series, parsed: pd.Series) -> pd.Series:
    """Cells that hold something (not blank) yet did not parse."""
    bad = values.notna() & parsed.isna()
    if bad.any():
        filled = values[bad].astype(str).str.strip() != ""
        bad[bad] = filled.to_numpy(dtype=bool)
    return bad


def parse_table(
    spec: TableSpec, raw: pd.DataFrame, may_be_empty: bool = False
) -> tuple[pd.DataFrame, list[Problem]]:
    """Parse the contract's columns of one raw table; report missing columns and bad cells.

    A table without rows is a problem unless ``may_be_empty`` (orders beside opportunities).
    """
    problems = [
        Problem(spec.name, 1, col, "missing required column", ", ".join(map(str, raw.columns)))
        for col in spec.required_columns
        if col not in raw.columns
    ]
    if raw.empty and not may_be_empty:
        problems.append(Problem(spec.name, 0, "-", "empty table", "no rows"))
    frame = raw.copy()
    for name, col in spec.columns.items():
        if name not in frame.columns:
            continue
        values = frame[name]
        if col.kind == "date":
            parsed = _parse_dates(values)
            check = "unparseable date, expected ISO 8601 like 2017-08-31"
        elif col.kind == "number":
            parsed = _parse_numbers(values, SEVERITY_WORDS if name == SEVERITY else None)
            check = "not a number"
        else:
            frame[name] = _as_text(values)
            continue
        bad = _bad_cells(values, parsed)
        problems.extend(
            Problem(spec.name, _line(idx), name, check, str(val))
            for idx, val in values[bad].items()
        )
        frame[name] = parsed
    return frame, problems


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def _line(index_value: object) -> int:
    try:
        return int(index_value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


# --- checking parsed tables ------------------------------------------------------------------


def check_table(
    spec: TableSpec, frame: pd.DataFrame, skip_cells: set[tuple[int, str]]
) -> list[Problem]:
    """Run the table's pandera schema lazily and turn its failure cases into problems.

    ``skip_cells`` are (line, column) cells that already failed parsing: their emptiness is not
    reported a second time as a missing value.
    """
    schema = pandera_schema(spec, [c for c in spec.columns if c in frame.columns])
    try:
        schema.validate(frame, lazy=True)
    except pa_errors.SchemaErrors as exc:
        return _failure_problems(spec, exc.failure_cases, skip_cells)
    return []


def _failure_problems(
    spec: TableSpec, cases: pd.DataFrame, skip: set[tuple[int, str]]
) -> list[Problem]:
    problems: list[Problem] = []
    compound: dict[int, list[str]] = {}
    for case in cases.itertuples(index=False):
        line = _line(case.index)
        column = str(case.column)
        check = str(case.check)
        value = "empty" if _missing(case.failure_case) else str(case.failure_case)
        if check == "multiple_fields_uniqueness":
            compound.setdefault(line, []).append(value)
            continue
        if check.startswith("dtype(") or (line, column) in skip:
            continue
        problems.append(Problem(spec.name, line, column, _PANDERA_CHECKS.get(check, check), value))
    unique_cols = next((u for u in spec.unique if len(u) > 1), ())
    for line, values in compound.items():
        problems.append(
            Problem(
                spec.name, line, ", ".join(unique_cols), "duplicate combination", "/".join(values)
            )
        )
    return problems


def _reference_problems(
    child: str, frame: pd.DataFrame, column: str, parent: str, known: pd.Series, what: str
) -> list[Problem]:
    if column not in frame.columns:
        return []
    values = frame[column]
    bad = values.notna() & ~values.isin(set(known.dropna()))
    return [
        Problem(child, _line(idx), column, f"unknown {what} (not in {parent})", str(val))
        for idx, val in values[bad].items()
    ]


def _target_problems(frames: dict[str, pd.DataFrame]) -> list[Problem]:
    targets = frames[TARGETS]
    allowed = set(HIERARCHY_LEVELS)
    for table in (CUSTOMERS, ORDERS):
        if table in frames:
            allowed |= set(frames[table].columns)
    problems = [
        Problem(
            TARGETS,
            _line(idx),
            LEVEL,
            "unknown level, expected company, region, team, rep or a column of customers/orders",
            str(val),
        )
        for idx, val in targets[LEVEL].items()
        if val is not None and val not in allowed
    ]
    company = targets[LEVEL] == LEVEL_COMPANY
    wrong_key = company & (targets[KEY] != COMPANY_KEY)
    problems += [
        Problem(TARGETS, _line(idx), KEY, f"company targets use key '{COMPANY_KEY}'", str(v))
        for idx, v in targets.loc[wrong_key, KEY].items()
    ]
    if ORG in frames:
        for level in (LEVEL_REGION, LEVEL_TEAM, LEVEL_REP):
            rows = targets[targets[LEVEL] == level]
            problems += _reference_problems(
                TARGETS, rows, KEY, ORG, frames[ORG][level], level
            )
    return problems


def cross_table_problems(frames: dict[str, pd.DataFrame], derived: frozenset[str]) -> list[Problem]:
    """References between tables: customers, opportunities and reps that must exist."""
    problems: list[Problem] = []
    if CUSTOMERS in frames and CUSTOMERS not in derived:
        known = frames[CUSTOMERS][CUSTOMER_ID]
        for child in (ORDERS, OPPORTUNITIES, INTERACTIONS, RECEIVABLES):
            if child in frames:
                problems += _reference_problems(
                    child, frames[child], CUSTOMER_ID, CUSTOMERS, known, "customer"
                )
    if OPPORTUNITIES in frames:
        known = frames[OPPORTUNITIES][OPPORTUNITY_ID]
        for child in (ORDERS, STAGE_HISTORY):
            if child in frames:
                problems += _reference_problems(
                    child, frames[child], OPPORTUNITY_ID, OPPORTUNITIES, known, "opportunity"
                )
    if ORG in frames:
        reps = frames[ORG][REP]
        if OPPORTUNITIES in frames:
            problems += _reference_problems(
                OPPORTUNITIES, frames[OPPORTUNITIES], OWNER, ORG, reps, "rep"
            )
        if CUSTOMERS in frames and CUSTOMERS not in derived:
            problems += _reference_problems(
                CUSTOMERS, frames[CUSTOMERS], ACCOUNT_MANAGER, ORG, reps, "rep"
            )
    if TARGETS in frames:
        problems += _target_problems(frames)
    return problems


def derive_customers(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The customers table when it is absent: every customer id named by another table."""
    ids = [
        frames[t][CUSTOMER_ID]
        for t in (ORDERS, OPPORTUNITIES, INTERACTIONS, RECEIVABLES)
        if t in frames and CUSTOMER_ID in frames[t].columns
    ]
    unique = pd.unique(pd.concat(ids, ignore_index=True).dropna()) if ids else []
    return pd.DataFrame({CUSTOMER_ID: pd.Series(unique, dtype=object)})


def _stands_in(spec: TableSpec, raw: dict[str, pd.DataFrame]) -> bool:
    """True when the table ``spec`` may be absent or empty: its stand-in table has rows."""
    other = raw.get(spec.optional_with) if spec.optional_with else None
    return other is not None and not other.empty


def _missing_table(name: str, spec: TableSpec) -> Problem:
    expected = f"expected {name}.csv, {name}.csv.gz or {name}.parquet"
    if spec.optional_with:
        expected += f", or rows in {spec.optional_with}"
    return Problem(name, 0, "-", "required table is missing", expected)


def validate_tables(raw: dict[str, pd.DataFrame]) -> tuple[Tables, list[Problem]]:
    """Parse and check raw tables; returns the typed tables and every problem found.

    ``orders`` may be absent or empty when ``opportunities`` has rows (won deals are then the
    revenue): an absent one becomes an empty typed frame, listed in ``derived``.
    """
    problems = [
        _missing_table(name, spec)
        for name, spec in TABLES.items()
        if spec.required and name not in raw and not _stands_in(spec, raw)
    ]
    frames: dict[str, pd.DataFrame] = {}
    for name, frame in raw.items():
        spec = TABLES[name]
        parsed, parse_problems = parse_table(spec, frame, may_be_empty=_stands_in(spec, raw))
        problems += parse_problems
        if any(p.check == "missing required column" for p in parse_problems):
            continue
        skip = {(p.line, p.column) for p in parse_problems}
        problems += check_table(spec, parsed, skip)
        frames[name] = parsed
    derived: set[str] = set()
    if ORDERS not in raw and _stands_in(TABLES[ORDERS], raw):
        frames[ORDERS] = empty_table(ORDERS)
        derived.add(ORDERS)
    if CUSTOMERS not in raw and ORDERS in frames:
        frames[CUSTOMERS] = derive_customers(frames)
        derived.add(CUSTOMERS)
    problems += cross_table_problems(frames, frozenset(derived))
    clean = {name: f.reset_index(drop=True) for name, f in frames.items()}
    return Tables(clean, derived=frozenset(derived)), problems


def load_tables(source: str | Path, on_table: Callable[[str], None] | None = None) -> Tables:
    """Read and validate every table of ``source``; raise :class:`BadInput` with all problems.

    Args:
        source: a data directory, or a SQLAlchemy URL holding tables of the same names.
        on_table: called with each table's name as it is read (progress reporting).
    """
    raw, problems = read_source(source, on_table)
    tables, table_problems = validate_tables(raw) if raw or not problems else (Tables({}), [])
    problems += table_problems
    if problems:
        raise BadInput(problems)
    tables.source = str(source)
    return tables


# --- atomic writes ---------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "csv.gz":
        frame.to_csv(path, index=False, compression="gzip")
    else:
        frame.to_csv(path, index=False)


def output_format(path: str | Path) -> str:
    """``csv``, ``csv.gz`` or ``parquet`` from a file name; ``ValueError`` otherwise."""
    name = Path(path).name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix.lstrip(".")
    raise ValueError(f"unknown output format for {name}: use .csv, .csv.gz or .parquet")


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` (.csv, .csv.gz or .parquet) atomically."""
    fmt = output_format(path)
    with atomic_path(path) as tmp:
        _write(frame, tmp, fmt)
    return Path(path)


def write_data_dir(frames: dict[str, pd.DataFrame], out_dir: str | Path, fmt: str = "csv") -> Path:
    """Write tables as a data directory, all or nothing.

    The tables are written into a temporary sibling directory which then replaces ``out_dir``;
    a failure part-way leaves any previous ``out_dir`` untouched.
    """
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = target.with_name(f".{target.name}.old")
    try:
        for name, frame in frames.items():
            _write(frame, tmp / f"{name}.{fmt}", fmt)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target
