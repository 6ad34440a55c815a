"""``features --engine spark``: the same feature table as pandas, to the last bit.

One local[1] Spark session serves the whole module; the pandas engine and the direct
``customer_features`` call need no Spark.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.compute import PandasEngine, bucket_of, parquet_tables
from engine.compute.parquet import write_parquet_dir
from engine.io import load_tables, validate_tables, write_data_dir
from engine.periods import default_as_of
from engine.synthetic import generate
from features.customer import customer_features
from service.usecases.scaled import features_on

pytest.importorskip("pyspark")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small demo company as a CSV data directory and as a partitioned Parquet one."""
    root = tmp_path_factory.mktemp("demo")
    raw = generate("small", seed=3)
    tables, _ = validate_tables(raw)
    return {"csv": write_data_dir(raw, root / "csv"),
            "parquet": write_parquet_dir(tables.frames, root / "parquet")}


@pytest.fixture(scope="module")
def real(real_data: Callable[..., Path]) -> Path:
    """A real slice with deals: the first 6 months of the CRM sales dataset."""
    return real_data("crm-sales", 6)


def test_pandas_engine_is_the_feature_function(demo: dict[str, Path]) -> None:
    """Bucketing customers changes no feature: the same table as one customer_features call
    (sums within 1e-12, relative: the running sums cross other customers' rows there)."""
    run = features_on(PandasEngine(), str(demo["csv"]), buckets=5)
    tables = load_tables(demo["csv"])
    whole = customer_features(tables, default_as_of(tables))
    assert run.as_of == default_as_of(tables)
    assert len(run.frame) > 400 and run.frame["pipe_open_deals"].sum() > 0
    pd.testing.assert_frame_equal(run.frame, whole, check_exact=False, rtol=1e-12, atol=0)


def test_parquet_directory_reads_the_same(demo: dict[str, Path]) -> None:
    assert parquet_tables(str(demo["csv"])) is None
    assert parquet_tables(str(demo["parquet"])) is not None
    assert (demo["parquet"] / "orders" / "year=2025").is_dir()
    engine = PandasEngine()
    pd.testing.assert_frame_equal(features_on(engine, str(demo["csv"])).frame,
                                  features_on(engine, str(demo["parquet"])).frame,
                                  check_exact=True)


def test_rows_after_as_of_change_nothing(demo: dict[str, Path], tmp_path: Path) -> None:
    """Point in time: rows dated on or after as_of are never read, so appending them (a
    new customer, a huge order, a complaint) leaves every bit of the table as it was."""
    tables = load_tables(demo["csv"])
    when = default_as_of(tables) - pd.Timedelta(days=60)
    frames = {n: f.copy() for n, f in tables.frames.items() if n not in tables.derived}
    known = frames["orders"]["customer_id"].iloc[0]
    late = frames["orders"].iloc[:2].copy()
    late["order_date"] = [when, when + pd.Timedelta(days=3)]
    late["customer_id"] = [known, "NEW-1"]
    late["order_id"] = ["LATE-1", "LATE-2"]
    late["amount"] = 1e6
    frames["orders"] = pd.concat([frames["orders"], late], ignore_index=True)
    newcomer = frames["customers"].iloc[:1].assign(customer_id="NEW-1",
                                                   created_at=when + pd.Timedelta(days=2))
    frames["customers"] = pd.concat([frames["customers"], newcomer], ignore_index=True)
    complaint = frames["interactions"].iloc[:1].assign(customer_id=known, occurred_at=when,
                                                       kind="complaint", severity=4.0)
    frames["interactions"] = pd.concat([frames["interactions"], complaint], ignore_index=True)
    grown = write_data_dir(frames, tmp_path / "grown")
    before = features_on(PandasEngine(), str(demo["csv"]), when).frame
    after = features_on(PandasEngine(), str(grown), when).frame
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    assert "NEW-1" not in set(after["customer_id"])


def test_bucket_matches_spark_crc32(spark: object) -> None:
    from pyspark.sql import functions as F

    keys = pd.Series(["C-1", "12346", "Zoë GmbH", None, "C-1"])
    session = spark.session  # type: ignore[attr-defined]
    frame = session.createDataFrame(pd.DataFrame({"k": keys.iloc[:3]}))
    theirs = frame.select((F.crc32("k") % 7).alias("b")).toPandas()["b"].tolist()
    assert bucket_of(keys, 7).tolist() == [*theirs, -1, theirs[0]]


def test_spark_equals_pandas_exactly(spark: object, demo: dict[str, Path]) -> None:
    """A CSV data directory, the as-of found by Spark (the Parquet directory: the CLI test)."""
    source = str(demo["csv"])
    expected = features_on(PandasEngine(), source)
    got = features_on(spark, source)  # type: ignore[arg-type]
    assert got.as_of == expected.as_of
    pd.testing.assert_frame_equal(got.frame, expected.frame, check_exact=True)


def test_spark_equals_pandas_on_real_data(spark: object, real: Path) -> None:
    """Deals and orders of a real CRM, six months in: 85 accounts, 2,577 deals."""
    expected = features_on(PandasEngine(), str(real))
    got = features_on(spark, str(real), expected.as_of).frame  # type: ignore[arg-type]
    frame = expected.frame
    assert len(frame) > 50 and np.nansum(frame["hist_monetary_lifetime"]) > 0
    assert frame["pipe_open_deals"].sum() > 0
    pd.testing.assert_frame_equal(got, frame, check_exact=True)


def test_cli_engine_option_and_setting(spark: object, demo: dict[str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``--engine spark`` writes the pandas command's file, byte for byte; the command reuses
    the running session and leaves it running."""
    from service.cli.app import app

    runner = CliRunner()
    monkeypatch.setenv("QUOTACAST_SPARK_MASTER", "local[1]")
    args = ["features", "--data", str(demo["parquet"]), "--as-of", "2026-06-01"]
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "pandas.csv")])
    assert plain.exit_code == 0, plain.output
    on_spark = runner.invoke(app, [*args, "--engine", "spark", "--out", str(tmp_path / "a.csv")])
    assert on_spark.exit_code == 0, on_spark.output
    assert "(spark)" in on_spark.output
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    assert not spark.session.sparkContext._jsc.sc().isStopped()  # type: ignore[attr-defined]


def test_spark_on_bad_cells_and_a_database_answers_in_words(
        spark: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.cli.app import app

    (tmp_path / "orders.csv").write_text("customer_id,order_date,amount\nc1,2026-13-01,5\n")
    monkeypatch.setenv("QUOTACAST_SPARK_MASTER", "local[1]")
    runner = CliRunner()
    bad = runner.invoke(app, ["features", "--data", str(tmp_path), "--engine", "spark",
                              "--out", str(tmp_path / "f.csv")])
    assert bad.exit_code == 2, bad.output
    assert "2026-13-01" in bad.output and "quotacast validate" in bad.output
    assert "Traceback" not in bad.output and "at org.apache" not in bad.output
    assert not (tmp_path / "f.csv").exists()
    # QUOTACAST_ENGINE=spark picks Spark, which reads a database as pandas does: a SQLite
    # file that is not there is bad input, in words.
    monkeypatch.setenv("QUOTACAST_ENGINE", "spark")
    sql = runner.invoke(app, ["features", "--data", "sqlite:///x.db"])
    assert sql.exit_code == 2 and "SQLite database not found" in sql.output
    monkeypatch.setenv("QUOTACAST_ENGINE", "pandas")
    assert runner.invoke(app, ["features", "--data", "sqlite:///x.db"]).exit_code == 2


def test_cli_bad_engine_and_pandas_path_without_spark(demo: dict[str, Path]) -> None:
    """A wrong --engine is a usage error; the pandas path never loads the Spark engine nor
    starts a JVM (pandera imports parts of pyspark by itself when it is installed)."""
    from service.cli.app import app

    wrong = CliRunner().invoke(app, ["features", "--data", str(demo["csv"]), "--engine", "dask"])
    assert wrong.exit_code == 2
    script = ("import sys; from typer.testing import CliRunner; from service.cli.app import app; "
              f"r = CliRunner().invoke(app, ['features', '--data', {str(demo['csv'])!r}]); "
              "assert r.exit_code == 0, r.output; "
              "assert 'engine.compute.spark' not in sys.modules; "
              "ctx = sys.modules.get('pyspark.core.context'); "
              "assert ctx is None or ctx.SparkContext._gateway is None")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=120)


def test_spark_refuses_an_event_dated_in_the_future(demo: dict[str, Path], tmp_path: Path,
                                                    spark: Any) -> None:
    """An order dated 2099 (which the loader refuses) would move Spark's default as-of to
    2100: the data's end is bad input there too (exit 2), naming the date."""
    from engine.compute import ComputeError

    tables = load_tables(demo["csv"])
    orders = tables.orders.copy()
    orders.loc[orders.index[3], "order_date"] = pd.Timestamp("2099-01-01")
    bad = write_parquet_dir({**tables.frames, "orders": orders}, tmp_path / "bad")
    with pytest.raises(ComputeError) as caught:
        spark.data_end(str(bad))
    assert caught.value.exit_code == 2 and "2099-01-01" in str(caught.value)
    assert spark.data_end(str(demo["parquet"])) == PandasEngine().data_end(str(demo["parquet"]))
