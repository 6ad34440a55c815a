"""Delta data directories and SQL databases, read with column and date pruning on both engines:
the same feature table as from CSV and Parquet files, the same problems when a cell is wrong,
and reads that fetch only what a command asks for (issue 19).

PostgreSQL variants run where ``QUOTACAST_TEST_POSTGRES_URL`` is set (CI); the JDBC one also
needs Debian's ``libpostgresql-jdbc-java`` (``/usr/share/java/postgresql.jar``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from engine.compute import PandasEngine, TableRead
from engine.compute.delta import write_delta_dir
from engine.compute.parquet import write_parquet_dir
from engine.compute.sources import (
    JDBC_DRIVERS,
    DeltaSource,
    delta_files,
    jdbc_options,
    pruned_source,
)
from engine.io import BadInput, load_tables, validate_tables, write_data_dir
from engine.io.read import delta_tables, parquet_tables
from engine.schemas import AMOUNT, CUSTOMER_ID, ORDER_DATE, ORDERS, PRODUCT, TABLES
from engine.synthetic import generate
from service.cli.app import app
from service.usecases.scaled import features_on

POSTGRES_ENV = "QUOTACAST_TEST_POSTGRES_URL"
ORDERS_READ = TableRead(ORDERS, (CUSTOMER_ID, ORDER_DATE, AMOUNT, PRODUCT), ORDER_DATE)


def _to_sql(frames: dict[str, pd.DataFrame], url: str) -> str:
    engine = sa.create_engine(url)
    for name, frame in frames.items():
        frame.to_sql(name, engine, index=False, if_exists="replace")
    engine.dispose()
    return url


def _drop(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as con:
        for name in TABLES:
            con.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The small demo company as CSV, Parquet and Delta data directories, a SQLite database,
    and (where CI gives one) PostgreSQL tables."""
    root = tmp_path_factory.mktemp("sources")
    raw = generate("small", seed=11)
    tables, problems = validate_tables(raw)
    assert not problems
    kinds = {"csv": str(write_data_dir(raw, root / "csv")),
             "parquet": str(write_parquet_dir(tables.frames, root / "parquet")),
             "delta": str(write_delta_dir(tables.frames, root / "delta")),
             "sqlite": _to_sql(raw, f"sqlite:///{root / 'company.db'}")}
    postgres = os.environ.get(POSTGRES_ENV)
    if postgres:
        kinds["postgresql"] = _to_sql(raw, postgres)
    yield kinds
    if postgres:
        _drop(postgres)


def _source(company: dict[str, str], kind: str) -> str:
    if kind not in company:
        pytest.skip(f"{POSTGRES_ENV} is not set: the PostgreSQL variant runs where it is (CI)")
    return company[kind]


def test_delta_directory_is_told_apart(company: dict[str, str]) -> None:
    delta = Path(company["delta"])
    assert (delta / ORDERS / "_delta_log").is_dir()
    assert delta_tables(delta) is not None and parquet_tables(delta) is None
    assert delta_tables(company["parquet"]) is None and delta_tables(company["csv"]) is None
    assert isinstance(pruned_source(company["delta"]), DeltaSource)
    assert pruned_source(company["csv"]) is None


@pytest.mark.parametrize("kind", ["parquet", "delta", "sqlite", "postgresql"])
def test_pandas_features_are_the_same_from_every_source(company: dict[str, str],
                                                        kind: str) -> None:
    expected = features_on(PandasEngine(), company["csv"])
    got = features_on(PandasEngine(), _source(company, kind))
    assert got.as_of == expected.as_of and len(got.frame) > 400
    pd.testing.assert_frame_equal(got.frame, expected.frame, check_exact=True)


@pytest.mark.parametrize("kind", ["delta", "sqlite", "postgresql"])
def test_spark_features_are_the_same_from_every_source(spark: Any, company: dict[str, str],
                                                       kind: str) -> None:
    """Spark reads a Delta table's files, a SQLite database through the pandas reader and
    PostgreSQL through JDBC, and computes the pandas engine's table to the last bit."""
    source = _source(company, kind)
    if kind == "postgresql" and jdbc_options(source) is None:
        pytest.skip("no PostgreSQL JDBC driver: apt-get install libpostgresql-jdbc-java")
    expected = features_on(PandasEngine(), company["csv"])
    got = features_on(spark, source)
    assert got.as_of == expected.as_of
    pd.testing.assert_frame_equal(got.frame, expected.frame, check_exact=True)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_sql_reads_only_the_asked_columns_before_the_as_of(company: dict[str, str],
                                                           kind: str) -> None:
    """The statement sent names the read's columns and the date bound, nothing else."""
    source = _source(company, kind)
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()))

    before = pd.Timestamp("2025-06-01")
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        frames = PandasEngine().read(source, [ORDERS_READ], before=before)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    (select,) = [s for s in sent if s.startswith("SELECT") and "FROM orders" in s]
    columns = select[len("SELECT "):select.index(" FROM")].replace('"', "").split(", ")
    assert columns == list(ORDERS_READ.columns)
    assert "WHERE order_date <" in select and "*" not in select
    orders = frames[ORDERS]
    whole = load_tables(company["csv"]).orders
    assert list(orders.columns) == list(ORDERS_READ.columns)
    assert len(orders) == int((whole[ORDER_DATE] < before).sum()) < len(whole)
    assert orders[ORDER_DATE].max() < before


def test_sql_date_bound_at_midnight_excludes_that_day_stored_as_text(tmp_path: Path) -> None:
    """Dates stored as text, with and without a time: a row on the as-of day is not before it."""
    url = _to_sql({ORDERS: pd.DataFrame({
        CUSTOMER_ID: ["a", "b", "c", "d"],
        ORDER_DATE: ["2025-05-31", "2025-06-01", "2025-05-31 23:59:59", "2025-06-01 00:00:00"],
        AMOUNT: [1.0, 2.0, 3.0, 4.0]})}, f"sqlite:///{tmp_path / 'text.db'}")
    got = PandasEngine().read(url, [ORDERS_READ], before=pd.Timestamp("2025-06-01"))[ORDERS]
    assert sorted(got[CUSTOMER_ID]) == ["a", "c"]
    assert got[ORDER_DATE].dtype == "datetime64[ns]"


def test_delta_reads_skip_files_and_columns(company: dict[str, str]) -> None:
    """delta-rs leaves out the files (years) wholly on or after the as-of; the scan returns
    only the read's columns, never the writer's ``year`` partition."""
    path = Path(company["delta"]) / ORDERS
    every = delta_files(path, ORDERS_READ, None)
    early = delta_files(path, ORDERS_READ, pd.Timestamp("2025-01-01"))
    assert 0 < len(early) < len(every)
    assert all("year=2026" not in f for f in early)
    before = pd.Timestamp("2025-06-01")
    orders = PandasEngine().read(company["delta"], [ORDERS_READ], before=before)[ORDERS]
    assert list(orders.columns) == list(ORDERS_READ.columns)
    assert orders[ORDER_DATE].max() < before


def test_spark_jdbc_pushes_the_columns_and_the_date_filter(spark: Any,
                                                           company: dict[str, str]) -> None:
    source = _source(company, "postgresql")
    if jdbc_options(source) is None:
        pytest.skip("no PostgreSQL JDBC driver: apt-get install libpostgresql-jdbc-java")
    frame = spark.read(source, [ORDERS_READ], before=pd.Timestamp("2025-06-01"))[ORDERS]
    plan = frame._jdf.queryExecution().executedPlan().toString()
    assert "JDBCRelation(orders)" in plan
    assert "LessThan(order_date,2025-06-01T00:00)" in plan.split("PushedFilters:")[1]
    schema = plan.split("ReadSchema: struct<")[1].split(">")[0]
    assert [c.split(":")[0] for c in schema.split(",")] == list(ORDERS_READ.columns)


def test_jdbc_url_of_a_sqlalchemy_url() -> None:
    if not JDBC_DRIVERS["postgresql"][2].is_file():
        assert jdbc_options("postgresql+psycopg://u:p@db:5433/sales") is None
        return
    assert jdbc_options("postgresql+psycopg://u:p%40ss@db:5433/sales?sslmode=require") == {
        "url": "jdbc:postgresql://db:5433/sales", "driver": "org.postgresql.Driver",
        "user": "u", "password": "p@ss", "sslmode": "require"}
    assert jdbc_options("sqlite:///x.db") is None


@pytest.fixture
def bad_frames(company: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The company with an infinite amount on the first order and one dated 2099."""
    tables = load_tables(company["csv"])
    orders = tables.orders.copy()
    orders.loc[orders.index[0], AMOUNT] = np.inf
    orders.loc[orders.index[1], ORDER_DATE] = pd.Timestamp("2099-01-01")
    return {**{n: f for n, f in tables.frames.items() if n not in tables.derived},
            ORDERS: orders}


@pytest.mark.parametrize("kind", ["delta", "sqlite"])
def test_bad_cells_of_a_delta_or_sql_table_are_problems(bad_frames: dict[str, pd.DataFrame],
                                                        tmp_path: Path, kind: str) -> None:
    """The loader's checks and messages: table:line: column: check (value), exit 2; the line
    is the row number (plus one for the header a Delta table lacks, as for Parquet)."""
    if kind == "delta":
        source = str(write_delta_dir(bad_frames, tmp_path / "bad"))
        first = 2
    else:
        source = _to_sql(bad_frames, f"sqlite:///{tmp_path / 'bad.db'}")
        first = 1
    with pytest.raises(BadInput) as caught:
        load_tables(source)
    text = "\n".join(map(str, caught.value.problems))
    assert "amount: not a finite number (inf)" in text
    assert "order_date: event dated in the future" in text and "(2099-01-01)" in text
    if kind == "sqlite":  # rows in insertion order: the line is the row
        assert f"orders:{first}: amount: not a finite number (inf)" in text
        assert f"orders:{first + 1}: order_date: event dated in the future" in text
    result = CliRunner().invoke(app, ["validate", "--data", source])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_feasibility_end_to_end_from_delta_and_sqlite(company: dict[str, str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTACAST_HOME", str(tmp_path))
    runs = {}
    for kind in ("csv", "delta", "sqlite"):
        out = tmp_path / f"{kind}.csv"
        result = CliRunner().invoke(app, ["feasibility", "--data", company[kind],
                                          "--all-nodes", "--draws", "300", "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[kind] = pd.read_csv(out)
    assert len(runs["csv"]) > 3
    pd.testing.assert_frame_equal(runs["csv"], runs["delta"])
    pd.testing.assert_frame_equal(runs["csv"], runs["sqlite"])


def test_spark_on_a_missing_sqlite_file_is_bad_input(spark: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Spark reads a database now: one that is not there is the pandas engine's problem."""
    monkeypatch.setenv("QUOTACAST_SPARK_MASTER", "local[1]")
    result = CliRunner().invoke(app, ["features", "--data", f"sqlite:///{tmp_path}/none.db",
                                      "--engine", "spark"])
    assert result.exit_code == 2, result.output
    assert "SQLite database not found" in result.output and "Traceback" not in result.output
