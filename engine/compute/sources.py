"""Pruned reads: only the columns a command reads and only the rows dated before its as-of,
pushed into the source itself rather than filtered after reading.

- a Parquet data directory (a folder per table, partitioned by year): a pyarrow dataset scan,
  the date filter skipping year folders and row groups by their statistics;
- a Delta data directory (a folder per table holding ``_delta_log``): delta-rs (no JVM)
  resolves the snapshot's files, leaving out those whose statistics put every row on or after
  the as-of, and pyarrow scans them as above;
- a SQL database URL: ``SELECT <columns> FROM <table> WHERE <date> < :as_of`` through
  SQLAlchemy (:func:`sql_select`, the statement Spark's JDBC reader sends too).

A CSV data directory has no pruned read (:func:`pruned_source` gives None): the validating loader
reads it whole. The pruned reads do not validate: ``quotacast validate`` and every command
without ``--engine`` read the same sources through the loader, which reports every problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from engine.compute.base import ComputeError, TableRead
from engine.io.problems import BadInput, Problem
from engine.io.read import delta_tables, is_sql_url, open_sql, parquet_tables
from engine.schemas import TABLES

__all__ = [
    "DeltaSource",
    "ParquetSource",
    "PrunedSource",
    "SqlSource",
    "delta_files",
    "jdbc_jars",
    "jdbc_options",
    "pruned_source",
    "sql_select",
]


def _arrow_filter(schema: Any, read: TableRead, before: pd.Timestamp | None) -> Any:
    """The pyarrow expression ``date < before`` in the column's own type (None: no filter)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if before is None or read.date is None or read.date not in schema.names:
        return None
    kind = schema.field(read.date).type
    return ds.field(read.date) < pa.scalar(pd.Timestamp(before).to_pydatetime()).cast(kind)


def _scan(dataset: Any, read: TableRead, before: pd.Timestamp | None) -> pd.DataFrame:
    columns = [c for c in read.columns if c in dataset.schema.names]
    return dataset.to_table(columns=columns,
                            filter=_arrow_filter(dataset.schema, read, before)).to_pandas()


@dataclass(frozen=True)
class ParquetSource:
    """A Parquet data directory: table -> its folder (or single file)."""

    paths: Mapping[str, Path]

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(self.paths)

    def scan(self, read: TableRead, before: pd.Timestamp | None) -> pd.DataFrame:
        import pyarrow.dataset as ds

        dataset = ds.dataset(self.paths[read.table], format="parquet", partitioning="hive")
        return _scan(dataset, read, before)


def _delta_predicate(read: TableRead, before: pd.Timestamp | None, names: list[str]
                     ) -> str | None:
    """delta-rs's file pruning predicate: files whose statistics say every row is dated on or
    after ``before`` are not read."""
    if before is None or read.date is None or read.date not in names:
        return None
    return f"{read.date} < '{pd.Timestamp(before).isoformat(sep=' ')}'"


def _delta(path: Path) -> Any:
    try:
        from deltalake import DeltaTable
    except ImportError as exc:
        raise ComputeError("a Delta data directory needs the deltalake package: pip install "
                           "'quotacast[delta]'") from exc
    try:
        return DeltaTable(str(path))
    except Exception as exc:  # delta-rs raises its own error types
        raise BadInput([Problem(path.name, 0, "-", "not a readable Delta table",
                                str(exc).splitlines()[0][:120])]) from exc


# Reader features of the Delta protocol a plain Parquet read of the snapshot's files honours
# (deletion vectors or column mapping would need a Delta reader).
_PLAIN_FEATURES = frozenset({"timestampNtz"})


def delta_files(path: Path, read: TableRead, before: pd.Timestamp | None) -> list[str]:
    """The Parquet files of a Delta table's current snapshot that may hold rows dated before
    ``before`` (partition values and file statistics), for a reader that is not delta-rs
    (Spark); a table whose protocol needs more than reading its files is refused."""
    table = _delta(path)
    protocol = table.protocol()
    needs = set(protocol.reader_features or []) - _PLAIN_FEATURES
    if protocol.min_reader_version > 3 or needs or (
            protocol.min_reader_version == 2 and protocol.reader_features is None):
        raise ComputeError(f"the Delta table {path.name} uses reader features the spark engine "
                           f"does not read ({', '.join(sorted(needs)) or 'column mapping'}); "
                           "use --engine pandas")
    names = [f.name for f in table.schema().fields]
    return list(table.file_uris(file_pruning_predicate=_delta_predicate(read, before, names)))


@dataclass(frozen=True)
class DeltaSource:
    """A Delta data directory: table -> its Delta table's folder."""

    paths: Mapping[str, Path]

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(self.paths)

    def scan(self, read: TableRead, before: pd.Timestamp | None) -> pd.DataFrame:
        table = _delta(self.paths[read.table])
        names = [f.name for f in table.schema().fields]
        dataset = table.to_pyarrow_dataset(
            file_pruning_predicate=_delta_predicate(read, before, names))
        return _scan(dataset, read, before)


# --- SQL -----------------------------------------------------------------------------------


def _date_bound(before: pd.Timestamp, column_type: Any, dialect: str) -> object:
    """``before`` as the value a date column compares with: a datetime for a DATE or TIMESTAMP
    column; for dates stored as text (SQLite stores every date so), ISO text, without the time
    at midnight (``'2024-06-01' < '2024-06-01'`` is false, as a day at midnight must be)."""
    import sqlalchemy as sa

    stamp = pd.Timestamp(before)
    if dialect != "sqlite" and isinstance(column_type, sa.Date | sa.DateTime):
        return stamp.to_pydatetime()
    return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.isoformat(" ")


def sql_select(table: str, columns: Mapping[str, Any], read: TableRead,
               before: pd.Timestamp | None, dialect: str) -> Any:
    """``SELECT <read's columns the table has> FROM table [WHERE date < :before]``
    (``columns``: the table's columns and their SQLAlchemy types)."""
    import sqlalchemy as sa

    wanted = [c for c in read.columns if c in columns]
    query: Any = sa.select(*[sa.column(c) for c in wanted]).select_from(
        sa.table(table))
    if before is not None and read.date is not None and read.date in columns:
        bound = _date_bound(before, columns[read.date], dialect)
        query = query.where(sa.column(read.date) < sa.bindparam("before", bound))
    return query


def _parse_dates(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Date columns stored as text (SQLite) as timestamps; a cell that is no date is bad input."""
    spec = TABLES[table]
    for column in frame.columns:
        kind = spec.columns.get(column)
        if kind is None or kind.kind != "date" or pd.api.types.is_datetime64_any_dtype(
                frame[column]):
            continue
        try:
            frame[column] = pd.to_datetime(frame[column], format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise ComputeError(f"{table}.{column}: a cell is not a date ({exc}); `quotacast "
                               "validate --data D` lists every problem", exit_code=2) from exc
    return frame


@dataclass
class SqlSource:
    """A SQL database (SQLAlchemy URL) whose tables are named like the schema's."""

    url: str
    _engine: Any = field(default=None, repr=False)
    _columns: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def engine(self) -> Any:
        if self._engine is None:
            engine, problems = open_sql(self.url)
            if engine is None:
                raise BadInput(problems)
            self._engine = engine
        return self._engine

    @property
    def dialect(self) -> str:
        return str(self.engine.dialect.name)

    def _inspect(self) -> dict[str, dict[str, Any]]:
        import sqlalchemy as sa

        if not self._columns:
            try:
                inspector = sa.inspect(self.engine)
                names = set(inspector.get_table_names())
                self._columns = {t: {c["name"]: c["type"] for c in inspector.get_columns(t)}
                                 for t in TABLES if t in names}
            except sa.exc.SQLAlchemyError as exc:
                raise BadInput([Problem("-", 0, "-", "cannot open the SQL database",
                                        str(exc).splitlines()[0][:120])]) from exc
        return self._columns

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(self._inspect())

    def columns(self, table: str) -> dict[str, Any]:
        """The table's columns and their SQLAlchemy types."""
        return self._inspect()[table]

    def select(self, read: TableRead, before: pd.Timestamp | None) -> Any:
        return sql_select(read.table, self.columns(read.table), read, before, self.dialect)

    def scan(self, read: TableRead, before: pd.Timestamp | None) -> pd.DataFrame:
        import sqlalchemy as sa

        if not any(c in self.columns(read.table) for c in read.columns):
            return pd.DataFrame()
        try:
            with self.engine.connect() as con:
                frame = pd.read_sql_query(self.select(read, before), con)
        except sa.exc.SQLAlchemyError as exc:
            raise BadInput([Problem(read.table, 0, "-", "cannot read the table",
                                    str(exc).splitlines()[0][:120])]) from exc
        return _parse_dates(frame, read.table)

    def integer_key(self, table: str) -> tuple[str, int, int] | None:
        """The table's one-column integer primary key and its smallest and largest values
        (Spark splits a JDBC read on it), or None."""
        import sqlalchemy as sa

        key = sa.inspect(self.engine).get_pk_constraint(table).get("constrained_columns") or []
        if len(key) != 1 or not isinstance(self.columns(table).get(key[0]), sa.Integer):
            return None
        column: sa.ColumnClause[Any] = sa.column(key[0])
        query = sa.select(sa.func.min(column), sa.func.max(column)).select_from(sa.table(table))
        with self.engine.connect() as con:
            low, high = con.execute(query).one()
        return None if low is None else (key[0], int(low), int(high))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


# JDBC: the drivers a Spark session is started with when the machine has them (Debian's
# libpostgresql-jdbc-java), and how a SQLAlchemy URL of their databases becomes a JDBC one.
JDBC_DRIVERS = {"postgresql": ("jdbc:postgresql", "org.postgresql.Driver",
                               Path("/usr/share/java/postgresql.jar"))}


def jdbc_options(url: str) -> dict[str, str] | None:
    """Spark's JDBC options (``url``, ``driver``, ``user``, ``password`` and the URL's query
    parameters, e.g. ``sslmode``) for a SQLAlchemy URL, or None when no JDBC driver of its
    database is on this machine (SQLite has none)."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    known = JDBC_DRIVERS.get(parsed.get_backend_name())
    if known is None or not known[2].is_file():
        return None
    prefix, driver, _ = known
    host = parsed.host or "localhost"
    where = f"{host}:{parsed.port}" if parsed.port else host
    options = {"url": f"{prefix}://{where}/{parsed.database or ''}", "driver": driver}
    if parsed.username:
        options["user"] = parsed.username
    if parsed.password is not None:
        options["password"] = str(parsed.password)
    for name, value in parsed.query.items():
        options[name] = value if isinstance(value, str) else value[-1]
    return options


def jdbc_jars() -> list[str]:
    """The JDBC driver jars on this machine, for ``spark.jars``."""
    return [str(jar) for _, _, jar in JDBC_DRIVERS.values() if jar.is_file()]


PrunedSource = ParquetSource | DeltaSource | SqlSource


def pruned_source(source: str) -> PrunedSource | None:
    """The pruned reader of ``source``, or None for a CSV data directory."""
    if is_sql_url(source):
        return SqlSource(source)
    if (delta := delta_tables(source)) is not None:
        return DeltaSource(delta)
    if (parquet := parquet_tables(source)) is not None:
        return ParquetSource(parquet)
    return None
