"""Churn on a compute engine: ``train churn`` / ``score churn --engine spark`` build the same
snapshot tables and give the same scores as pandas, and the trainer's row budget keeps a
deterministic sample of customers on both engines.

One local[1] Spark session serves the module; the tests of the snapshot parts and the sample
need no Spark. The champion is trained once on Spark, with a row budget that bites (the small
demo company's first seven months), into a temporary SQLite registry; the tables are checked
on the last three snapshots of a 90-day split (each snapshot refits a BG/NBD: that is the cost).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine import tracking
from engine.compute import PandasEngine, bucket_of
from engine.history import tables_before
from engine.io import Tables, load_tables, write_data_dir
from engine.schemas import ACCOUNT_MANAGER, AS_OF, CUSTOMER_ID
from engine.synthetic import generate
from features.customer import customer_history
from features.labels import CHURNED
from features.table import training_table
from models.btyd import btyd_columns
from models.churn import CHURN_PROBABILITY, REASONS
from service.usecases import churn as pipeline
from service.usecases.scaled import FEATURE_READS, score_churn_on, snapshot_builder

pytest.importorskip("pyspark")
CUTOFF = pd.Timestamp("2026-10-01")
HORIZON = 90
TRAIN_AS_OF, TRAIN_HORIZON = pd.Timestamp("2024-08-01"), 30


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data_dir(generate("small", seed=7), tmp_path_factory.mktemp("demo") / "small")


@pytest.fixture(scope="module")
def tables(demo: Path) -> Tables:
    return load_tables(str(demo))


@pytest.fixture(scope="module")
def split(tables: Tables) -> pipeline.ChurnSplit:
    past = tables_before(tables, CUTOFF)
    full = pipeline.plan_split(pipeline._first_order_day(past), CUTOFF - pd.Timedelta(days=1),
                               HORIZON)
    return pipeline.ChurnSplit(full.train[-2:], full.holdout, HORIZON, full.last_day)


@pytest.fixture(scope="module")
def in_memory(tables: Tables, split: pipeline.ChurnSplit) -> pd.DataFrame:
    table, sample = pipeline.snapshots_in_memory(tables_before(tables, CUTOFF))(split)
    assert sample.whole
    return table


@pytest.fixture(scope="module")
def champion(spark: object, demo: Path, tables: Tables,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[pipeline.ChurnTraining]:
    """Trained on Spark with half the snapshot rows (unscoped name), promoted, in a fresh
    registry."""
    import mlflow

    from service.usecases.scaled import train_churn_on

    previous = mlflow.get_tracking_uri()
    tracking.configure(f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}")
    trained = train_churn_on(spark, str(demo), as_of=TRAIN_AS_OF, seed=3,  # type: ignore[arg-type]
                             horizon_days=TRAIN_HORIZON, row_budget=2500)
    assert tracking.promote("churn", trained.version, force=True).promoted
    yield trained
    tracking.configure(previous)


# --- the snapshot parts, on one machine -------------------------------------------------------


def test_parts_assemble_into_the_training_table_exactly(
        tables: Tables, split: pipeline.ChurnSplit, in_memory: pd.DataFrame) -> None:
    """Features, labels and the BG/NBD fitted on every customer's pooled summary: the table
    ``training_table`` builds with ``btyd_columns``, to the last bit; and the scoring frame."""
    past = tables_before(tables, CUTOFF)
    reference = training_table(past, split.as_ofs, HORIZON, pipeline.LOOKBACK_DAYS,
                               split.last_day, extra=btyd_columns)
    assert len(reference) > 1000 and reference["btyd_p_churn"].notna().all()
    pd.testing.assert_frame_equal(in_memory, reference, check_exact=True)
    parts = pipeline.snapshot_parts(customer_history(tables), [CUTOFF], 1, labels=False,
                                    managers=pipeline._account_managers(tables))
    scoring = pipeline.assemble_snapshots(parts, [CUTOFF], HORIZON, labels=False)
    pd.testing.assert_frame_equal(scoring, pipeline._active_features(tables, CUTOFF, HORIZON),
                                  check_exact=True)


def test_the_sample_bites_only_over_the_budget(
        tables: Tables, split: pipeline.ChurnSplit, in_memory: pd.DataFrame) -> None:
    past = tables_before(tables, CUTOFF)
    total = len(in_memory)
    same, whole = pipeline.snapshots_in_memory(past, row_budget=total)(split)
    assert whole.whole and whole.note() is None and whole.rows == total
    pd.testing.assert_frame_equal(same, in_memory, check_exact=True)

    table, sample = pipeline.snapshots_in_memory(past, row_budget=total // 3)(split)
    assert not sample.whole and sample.total == total
    assert 0 < len(table) == sample.rows <= total // 3
    assert sample.rows > total // 4  # the largest prefix of buckets that fits
    note = sample.note()
    assert note is not None and f"{total:,}" in note and f"{sample.cut} of 1000" in note
    # The kept customers are those of the first buckets, with every one of their snapshots,
    # and their rows are the full table's rows, BG/NBD columns included.
    kept = bucket_of(in_memory[CUSTOMER_ID], pipeline.SAMPLE_BUCKETS) < sample.cut
    expected = in_memory.loc[kept].reset_index(drop=True)
    pd.testing.assert_frame_equal(table, expected, check_exact=True, check_categorical=False)


# --- on Spark -----------------------------------------------------------------------------------


def test_spark_builds_the_pandas_tables(
        spark: object, demo: Path, tables: Tables, split: pipeline.ChurnSplit,
        in_memory: pd.DataFrame) -> None:
    """Bucket by bucket, Spark and the pandas engine agree to the last bit; one machine's
    whole-table prefix sums differ from both by rounding only, with and without a sample (the
    same one)."""
    def build(engine: object, budget: int) -> tuple[pd.DataFrame, pipeline.Sample]:
        frames = engine.read(str(demo), FEATURE_READS, before=CUTOFF)  # type: ignore[attr-defined]
        return snapshot_builder(engine, frames, budget, buckets=4)(split)  # type: ignore[arg-type]

    on_spark, whole = build(spark, 10**9)
    assert whole.whole
    pd.testing.assert_frame_equal(on_spark, build(PandasEngine(), 10**9)[0], check_exact=True)
    pd.testing.assert_frame_equal(on_spark, in_memory, check_exact=False, rtol=1e-12, atol=0)

    budget = len(in_memory) // 2
    sampled, sample = build(spark, budget)
    here, here_sample = pipeline.snapshots_in_memory(tables_before(tables, CUTOFF), budget)(split)
    assert sample == here_sample and not sample.whole and len(sampled) == sample.rows <= budget
    pd.testing.assert_frame_equal(sampled, here, check_exact=False, rtol=1e-12, atol=0)


def test_spark_scores_with_the_champion_like_pandas(
        spark: object, demo: Path, tables: Tables, champion: pipeline.ChurnTraining) -> None:
    """The champion through its spark_udf on Spark; same rows, order, columns and reasons as
    ``score_churn`` in this process; the owner filter too."""
    expected = pipeline.score_churn(tables, as_of=CUTOFF)
    run = score_churn_on(spark, str(demo), as_of=CUTOFF)  # type: ignore[arg-type]
    assert run.fallback is None and run.as_of == CUTOFF
    got = run.frame
    assert len(got) > 300 and got[REASONS].str.len().gt(0).sum() > 100
    assert list(got.columns) == list(expected.columns)
    assert (got[CUSTOMER_ID] == expected[CUSTOMER_ID]).all()
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=1e-12)

    owner = str(expected[ACCOUNT_MANAGER].dropna().iloc[0])
    mine = score_churn_on(spark, str(demo), as_of=CUTOFF, owner=owner,  # type: ignore[arg-type]
                          horizon_days=30).frame
    theirs = pipeline.score_churn(tables, as_of=CUTOFF, owner=owner, horizon_days=30)
    assert 0 < len(mine) < len(got) and (mine[ACCOUNT_MANAGER] == owner).all()
    pd.testing.assert_frame_equal(mine, theirs, check_exact=False, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="did you mean"):
        score_churn_on(PandasEngine(), str(demo), as_of=CUTOFF, owner=owner[:-1] + "x")


def test_cli_spark_without_a_champion_falls_back_like_pandas(
        spark: object, demo: Path, tables: Tables, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``QUOTACAST_ENGINE=spark``: no champion in an empty registry, so the BG/NBD fallback
    answers on the driver from the features Spark computed: pandas' file, the same scores."""
    from service.cli.app import app

    monkeypatch.setenv("QUOTACAST_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("QUOTACAST_DATABASE_URL", f"sqlite:///{tmp_path / 'alerts.db'}")
    monkeypatch.setenv("QUOTACAST_SPARK_MASTER", "local[1]")
    monkeypatch.setenv("QUOTACAST_ENGINE", "spark")
    import mlflow

    previous = mlflow.get_tracking_uri()
    try:
        done = CliRunner().invoke(app, ["score", "churn", "--data", str(demo), "--as-of",
                                        str(CUTOFF.date()), "--out", str(tmp_path / "s.csv")])
    finally:
        tracking.configure(previous)
    assert done.exit_code == 0, done.output
    assert "fallback" in done.output and "driver" in done.output
    got = pd.read_csv(tmp_path / "s.csv")
    expected, _ = pipeline.score_churn_fallback(tables, as_of=CUTOFF)
    assert list(got.columns) == list(expected.columns)
    assert (got[CUSTOMER_ID] == expected[CUSTOMER_ID]).all()
    np.testing.assert_allclose(got[CHURN_PROBABILITY], expected[CHURN_PROBABILITY], rtol=1e-9)
    assert (got[REASONS].fillna("") == expected[REASONS].fillna("")).all()
    assert not spark.session.sparkContext._jsc.sc().isStopped()  # type: ignore[attr-defined]


def test_spark_training_samples_and_says_so(
        tables: Tables, champion: pipeline.ChurnTraining) -> None:
    """``train churn`` on Spark with a budget that bites: the summary says where the tables
    were built and what was kept; the holdout is the sample's: the customers of the first
    buckets in the table one machine builds without a budget."""
    notes = "\n".join(champion.notes)
    assert "built on spark" in notes and "sample:" in notes and "budget of 2,500" in notes
    split = champion.split
    whole, _ = pipeline.snapshots_in_memory(tables_before(tables, TRAIN_AS_OF))(split)
    cut = int(notes.split(" of 1000 CRC-32")[0].rsplit(" ", 1)[-1])
    kept = whole[bucket_of(whole[CUSTOMER_ID], pipeline.SAMPLE_BUCKETS) < cut]
    assert len(whole) > 2500 >= len(kept) > 1500
    assert f"{len(whole):,} rows" in notes and f"({len(kept):,} rows" in notes
    holdout = kept[kept[AS_OF] == split.holdout]
    assert f"holdout: {len(holdout):,} active customers" in notes
    assert f"{holdout[CHURNED].mean():.1%} churned" in notes
    assert champion.metrics["roc_auc"] > 0.7
