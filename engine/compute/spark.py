"""The Spark engine: the same group functions, run by ``groupBy(...).applyInPandas``.

Imported only when a command asks for ``--engine spark`` (``engine.compute.open_engine``), so
every other command starts without Spark. Reads prune columns and push the date filter into
the scan (Parquet row groups are skipped by their statistics): a Delta table is read as the
Parquet files of its snapshot that delta-rs lists (files dated wholly on or after the as-of
left out); a PostgreSQL database through JDBC (Spark sends the columns and the date filter in
its ``SELECT``, split on an integer primary key when the table has one); a database without a
JDBC driver here (SQLite) through the pandas engine's pruned ``SELECT``, handed to Spark. The
tables a function needs
travel together to each group as one tagged frame (``_table`` plus ``<table>__<column>``
columns, null where a row belongs to another table), since ``cogroup`` takes only two.
The JVM's own messages (its start-up notices, log4j) go to a log file, not the terminal.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from py4j.protocol import Py4JError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from engine.compute.base import (
    DEFAULT_BUCKETS,
    ComputeError,
    GroupFn,
    TableRead,
    canonical_order,
    column_dtype,
    finish,
    parquet_tables,
    typed_frame,
)
from engine.compute.sources import (
    DeltaSource,
    SqlSource,
    delta_files,
    jdbc_jars,
    jdbc_options,
    pruned_source,
)
from engine.io.checks import latest_event_date
from engine.io.read import find_table_files, is_sql_url
from engine.schemas import CLOSE_DATE, FORWARD_LOOKING_DATES, STATUS, STATUS_OPEN, TABLES

__all__ = ["SparkEngine", "spark_session"]

_TABLE, _GROUP = "_table", "_group"
_SPARK_TYPES = {"object": "string", "datetime64[ns]": "timestamp_ntz", "float64": "double",
                "int64": "bigint"}


def log_path() -> Path:
    """Where the JVM's messages go (one file per user, appended)."""
    return Path(tempfile.gettempdir()) / f"quotacast-spark-{os.getuid()}.log"


@contextlib.contextmanager
def _jvm_output_to_log() -> Iterator[None]:
    """The JVM started inside inherits a stderr pointing at the log file, for good."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log_path(), "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def spark_session(master: str, shuffle_partitions: int = DEFAULT_BUCKETS,
                  driver_memory: str | None = None) -> SparkSession:
    """A quiet Spark session (no UI, no progress bars, errors only, UTC)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master).appName("quotacast")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.python.worker.faulthandler.enabled", "false")
    )
    if driver_memory:
        builder = builder.config("spark.driver.memory", driver_memory)
    if jars := jdbc_jars():  # JDBC drivers must be on the classpath when the JVM starts
        builder = builder.config("spark.jars", ",".join(jars))
    try:
        with _jvm_output_to_log():
            session = builder.getOrCreate()
    except (PySparkException, OSError, RuntimeError) as exc:
        raise ComputeError(f"Spark did not start ({exc.__class__.__name__}); it needs Java 17 "
                           f"or later on the PATH or in JAVA_HOME; see {log_path()}") from exc
    session.sparkContext.setLogLevel("ERROR")
    return session


def _header(path: Path) -> list[str]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        import csv

        return [name.strip() for name in next(csv.reader(handle), [])]


def _schema(table: str, names: Sequence[str]) -> T.StructType:
    return T.StructType([
        T.StructField(name, T._parse_datatype_string(_SPARK_TYPES[column_dtype(table, name)])
                      if name in TABLES[table].columns else T.StringType(), True)
        for name in names
    ])


def _typed(frame: DataFrame, table: str) -> DataFrame:
    """The schema's columns in the engine's types (a cast Spark drops where the type is
    already right, so filters on them still reach the source)."""
    return frame.select(*[
        F.col(c).cast(_SPARK_TYPES[column_dtype(table, c)]).alias(c)
        if c in TABLES[table].columns else F.col(c) for c in frame.columns])


class SparkEngine:
    """Spark local or a cluster (``master``); see the module docstring."""

    name = "spark"

    def __init__(self, master: str = "local[*]", session: SparkSession | None = None) -> None:
        self.master = master
        self._session = session
        self._owned = session is None

    @property
    def session(self) -> SparkSession:
        if self._session is None:
            # A session already running in this process (a notebook, a test) is used and left
            # running; one started here is stopped by close().
            active = SparkSession.getActiveSession()
            self._owned = active is None
            self._session = active if active is not None else spark_session(self.master)
        return self._session

    # --- reading ---------------------------------------------------------------------------

    def _frame(self, source: str, table: str, read: TableRead | None = None,
               before: pd.Timestamp | None = None) -> DataFrame | None:
        """The table as Spark reads it (``read``/``before``: what a Delta table's file list
        or a database without JDBC is pruned to; Spark prunes the rest itself)."""
        if is_sql_url(source):
            return self._sql_frame(source, table, read, before)
        if (delta := pruned_source(source)) is not None and isinstance(delta, DeltaSource):
            path = delta.paths.get(table)
            if path is None:
                return None
            snapshot = delta_files(path, read or TableRead(table, ()), before)
            if not snapshot:
                return self.session.createDataFrame(
                    [], _schema(table, [c for c in (read.columns if read else ())
                                        if c in TABLES[table].columns]))
            return _typed(self.session.read.parquet(*snapshot), table)
        if (paths := parquet_tables(source)) is not None:
            path = paths.get(table)
            if path is None:
                return None
            return _typed(self.session.read.parquet(str(path)), table)
        files, _ = find_table_files(Path(source))
        path = files.get(table)
        if path is None:
            return None
        if path.name.endswith(".parquet"):
            return self.session.read.parquet(str(path))
        return (self.session.read.option("header", "true").option("mode", "FAILFAST")
                .option("escape", '"').option("multiLine", "true")
                .schema(_schema(table, _header(path))).csv(str(path)))

    def _sql_frame(self, url: str, table: str, read: TableRead | None,
                   before: pd.Timestamp | None) -> DataFrame | None:
        database = SqlSource(url)
        try:
            if table not in database.tables:
                return None
            options = jdbc_options(url)
            if options is not None and not self._loads(options["driver"]):
                options = None  # a JVM started without the jar (a session made elsewhere)
            if options is None:  # no JDBC driver (SQLite): the pruned SELECT, run here
                wanted = read or TableRead(table, tuple(database.columns(table)))
                frame = typed_frame(database.scan(wanted, before), table)
                return self.session.createDataFrame(frame, _schema(table, list(frame.columns)))
            reader = (self.session.read.format("jdbc").options(**options)
                      .option("dbtable", table).option("preferTimestampNTZ", "true"))
            if (key := database.integer_key(table)) is not None:
                column, low, high = key
                reader = (reader.option("partitionColumn", column)
                          .option("lowerBound", str(low)).option("upperBound", str(high + 1))
                          .option("numPartitions",
                                  str(self.session.sparkContext.defaultParallelism)))
            return _typed(reader.load(), table)
        finally:
            database.close()

    def _loads(self, driver: str) -> bool:
        """Whether this session's JVM can load the JDBC ``driver`` class: only a JVM started
        with its jar can (:func:`spark_session` adds it; a session made elsewhere may not)."""
        jvm = self.session.sparkContext._jvm
        try:  # Spark's own class lookup, the one its JDBC reader uses
            jvm.org.apache.spark.util.Utils.classForName(  # type: ignore[union-attr]
                driver, True, False)
        except Py4JError:
            return False
        return True

    def data_end(self, source: str) -> pd.Timestamp:
        try:
            return self._data_end(source)
        except (PySparkException, Py4JError) as exc:
            raise _plain(exc) from exc

    def _data_end(self, source: str) -> pd.Timestamp:
        """:func:`engine.periods.data_end` in one Spark job: the latest event date of every
        table (a closed deal's close date counts, an open deal's expected one does not)."""
        ends: DataFrame | None = None
        for table in TABLES:
            frame = self._frame(source, table, TableRead(
                table, (*TABLES[table].columns_of_kind("date"), STATUS)))
            if frame is None:
                continue
            dates = [F.col(c) for c in TABLES[table].columns_of_kind("date")
                     if c in frame.columns and c not in FORWARD_LOOKING_DATES]
            if STATUS in frame.columns and CLOSE_DATE in frame.columns:
                dates.append(F.when(~F.col(STATUS).eqNullSafe(STATUS_OPEN), F.col(CLOSE_DATE)))
            if not dates:
                continue
            latest = dates[0] if len(dates) == 1 else F.greatest(*dates)
            one = frame.agg(F.max(latest).cast("timestamp_ntz").alias("end"))
            ends = one if ends is None else ends.unionByName(one)
        if ends is None:
            raise ValueError("the data holds no dates")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            latest_day = ends.agg(F.max("end").alias("end")).toPandas()["end"].iloc[0]
        if pd.isna(latest_day):
            raise ValueError("the data holds no dates")
        if (day := pd.Timestamp(latest_day)) > (allowed := latest_event_date()):
            # The loader refuses such a row (an order dated 2099): the data ends before it.
            raise ComputeError(f"an event is dated {day:%Y-%m-%d}, in the future (after "
                               f"{allowed:%Y-%m-%d}); `quotacast validate --data D` lists "
                               "every problem with its line", exit_code=2)
        return day.normalize()

    def read(self, source: str, reads: Sequence[TableRead], before: pd.Timestamp
             ) -> dict[str, DataFrame]:
        try:
            return self._read(source, reads, before)
        except (PySparkException, Py4JError) as exc:
            raise _plain(exc) from exc

    def _read(self, source: str, reads: Sequence[TableRead], before: pd.Timestamp
              ) -> dict[str, DataFrame]:
        out = {}
        _ = self.session  # started before any column expression is built (F.lit needs it)
        limit = F.lit(pd.Timestamp(before).to_pydatetime()).cast("timestamp_ntz")
        for read in reads:
            frame = self._frame(source, read.table, read, before)
            if frame is None:
                continue
            frame = frame.select(*[c for c in read.columns if c in frame.columns])
            if read.date is not None and read.date in frame.columns:
                frame = frame.where(F.col(read.date) < limit)
            out[read.table] = frame
        return out

    # --- computing -------------------------------------------------------------------------

    def apply_by_group(self, frames: Mapping[str, DataFrame], key: str, fn: GroupFn,
                       template: pd.DataFrame, buckets: int = DEFAULT_BUCKETS, *,
                       keys: Mapping[str, str] | None = None, collect: bool = True) -> Any:
        columns = {name: list(frame.columns) for name, frame in frames.items()}
        packed: DataFrame | None = None
        for name, frame in frames.items():
            by = (keys or {}).get(name, key)
            tagged = frame.where(F.col(by).isNotNull()).select(
                (F.crc32(F.col(by).cast("string")) % buckets).alias(_GROUP),
                F.lit(name).alias(_TABLE),
                *[F.col(c).alias(f"{name}__{c}") for c in frame.columns],
            )
            packed = tagged if packed is None else packed.unionByName(
                tagged, allowMissingColumns=True)
        if packed is None:
            return template.copy() if collect else self.from_pandas(template, _ddl(template))
        schema = _ddl(template)

        def run(group: pd.DataFrame) -> pd.DataFrame:
            tables = {}
            for name, cols in columns.items():
                rows = group.loc[group[_TABLE] == name, [f"{name}__{c}" for c in cols]]
                rows.columns = cols
                tables[name] = canonical_order(rows, name)
            result = fn(tables)
            return result.astype({c: object for c in result.columns
                                  if isinstance(result[c].dtype, pd.CategoricalDtype)})

        applied = packed.groupBy(_GROUP).applyInPandas(run, schema)
        if not collect:
            return applied
        try:
            with warnings.catch_warnings():  # pyspark warns before raising; the error says it
                warnings.simplefilter("ignore")
                result = applied.toPandas()
        except (PySparkException, Py4JError) as exc:
            raise _plain(exc) from exc
        return finish([result], template, key)

    def minimum(self, frame: DataFrame, column: str) -> Any:
        try:
            return frame.agg(F.min(column).alias("first")).toPandas()["first"].iloc[0]
        except (PySparkException, Py4JError) as exc:
            raise _plain(exc) from exc

    def from_pandas(self, frame: pd.DataFrame, schema: str) -> DataFrame:
        return self.session.createDataFrame(frame, schema=schema)

    def close(self) -> None:
        if self._session is not None and self._owned:
            self._session.stop()
        self._session = None


def _ddl(template: pd.DataFrame) -> str:
    """Spark's DDL of a function's output (``template``: its output on no rows)."""
    return ", ".join(f"`{c}` {_SPARK_TYPES.get(str(t), 'string')}"
                     for c, t in template.dtypes.items())


_CAUSE = re.compile(r"Caused by: [\w.$]+: (?:\[[A-Z_.]+\] )?(.+?)(?: SQLSTATE: \w+)?$", re.M)


def _plain(exc: Exception) -> ComputeError:
    """A Spark failure in a few words: its innermost cause, without the JVM stack. A cell that
    cannot be parsed is bad input (exit 2)."""
    text = str(exc)
    causes = _CAUSE.findall(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = causes[-1] if causes else (lines[0] if lines else exc.__class__.__name__)
    first = re.sub(r"\s+", " ", first)[:300]
    if "Cannot parse" in text or "MALFORMED_RECORD" in text:
        return ComputeError(f"a cell of the data could not be read as its type ({first}); "
                            "`quotacast validate --data D` lists every problem", exit_code=2)
    return ComputeError(f"Spark failed: {first} (details: {log_path()})")
