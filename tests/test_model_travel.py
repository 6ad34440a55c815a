"""Models that travel: a churn champion trained here loads where quotacast is not installed.

One real champion (the demo company ``small``, trained and promoted once into a temporary SQLite
registry) is read back three ways: its logged files (code and pinned requirements), a Python
process that cannot import quotacast, and ``mlflow.pyfunc.spark_udf`` in a fresh local[1] Spark
session, whose scores must equal the pandas scorer's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import tracking
from engine.io import Tables, validate_tables
from engine.schemas import CUSTOMER_ID
from engine.synthetic import generate
from models.churn import CHURN_PROBABILITY, REASONS
from service.usecases import churn as pipeline

AS_OF = pd.Timestamp("2026-10-01")
ROOT = Path(__file__).resolve().parents[1]
PINS = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().split()
            if "==" in line)


@pytest.fixture(scope="module")
def small() -> Tables:
    return validate_tables(generate("small", seed=7))[0]


@pytest.fixture(scope="module")
def champion(small: Tables, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The registry holding a promoted churn champion of the small company."""
    import mlflow

    registry = tmp_path_factory.mktemp("travel")
    previous = mlflow.get_tracking_uri()
    tracking.configure(f"sqlite:///{registry / 'mlflow.db'}")
    trained = pipeline.train_churn(small, as_of=AS_OF, seed=3, horizon_days=90)
    assert tracking.promote("churn", trained.version, force=True).promoted
    yield registry
    tracking.configure(previous)


def _model_dir(registry: Path) -> Path:
    (found,) = (registry / "mlruns").glob("churn/models/*/artifacts")
    return found


def _features(tables: Tables) -> pd.DataFrame:
    """What the pandas scorer feeds the model, as a served model receives it."""
    estimator = tracking.load_champion("churn").estimator
    days = pipeline._model_horizon(estimator) or pipeline.FALLBACK_HORIZON_DAYS
    features = pipeline._active_features(tables, AS_OF, days)
    return pipeline.serving_example(features, rows=len(features))


def test_the_model_carries_its_code_and_pinned_requirements(champion: Path) -> None:
    model = _model_dir(champion)
    for package in tracking.CODE_PACKAGES:
        assert (model / "code" / package / "__init__.py").is_file()
    assert (model / "code" / "models" / "churn.py").is_file()
    assert not list((model / "code").rglob("__pycache__"))
    requirements = (model / "requirements.txt").read_text().split()
    pinned = dict(line.split("==", 1) for line in requirements)
    assert len(pinned) == len(requirements)  # every requirement pinned
    assert "quotacast" not in pinned  # no package index has it: the code travels instead
    # What the pickle and the quotacast modules it names import, at the constraints' versions.
    assert {"lightgbm", "scikit-learn", "pandas", "numpy", "mlflow", "pandera"} <= set(pinned)
    for name, version in pinned.items():
        assert PINS.get(name, PINS.get(name.lower())) == version, name
    assert "pyspark" not in pinned and "prophet" not in pinned  # not imported by a churn model


def test_requirements_follow_module_level_imports_only() -> None:
    found = tracking.imported_packages({"models.churn"})
    assert {"lightgbm", "sklearn", "pandas", "numpy", "pandera"} <= found
    assert not found & {"engine", "features", "models", "service", "os", "json"}
    assert "typer" not in found and "fastapi" not in found  # the service floor is not imported


def test_the_champion_loads_in_a_process_without_quotacast(
        champion: Path, small: Tables, tmp_path: Path) -> None:
    """No repository and no installed quotacast on the path (``-S``: site-packages without its
    .pth files, so the editable install is gone): only the model's own code can answer."""
    frame = _features(small).head(50)
    frame.to_parquet(tmp_path / "input.parquet", index=False)
    expected = pipeline.score_churn(small, as_of=AS_OF).set_index(CUSTOMER_ID)
    script = f"""
import sys, json
sys.path.append({sysconfig.get_paths()["purelib"]!r})
try:
    import engine
    sys.exit("quotacast is importable: the test proves nothing")
except ImportError:
    pass
import pandas as pd, mlflow.pyfunc
model = mlflow.pyfunc.load_model({str(_model_dir(champion))!r})
frame = pd.read_parquet({str(tmp_path / 'input.parquet')!r})
out = model.predict(frame)
print(json.dumps(out["{CHURN_PROBABILITY}"].tolist()))
print(json.dumps([m.__file__ for m in [sys.modules["engine"]]]))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    done = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    scores, origin = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert "/code/engine/" in origin[0]  # the model's own copy of the code
    want = expected.loc[frame[CUSTOMER_ID], CHURN_PROBABILITY].to_numpy(dtype=float)
    np.testing.assert_allclose(scores, want, rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """One fresh local[1] session for the module; workers run this interpreter."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from engine.compute.sources import jdbc_jars

    # The JVM this starts serves every later module of the run: it carries the JDBC jars as
    # engine.compute.spark.spark_session's would (tests/test_sql_delta_sources.py reads
    # PostgreSQL through JDBC in the same process).
    session = (SparkSession.builder.master("local[1]").appName("quotacast-model-travel")
               .config("spark.jars", ",".join(jdbc_jars()))
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "1")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_udf_scores_the_champion_like_the_pandas_scorer(
        champion: Path, small: Tables, spark: object) -> None:
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    features = _features(small)
    expected = pipeline.score_churn(small, as_of=AS_OF).set_index(CUSTOMER_ID)
    frame = spark.createDataFrame(features)  # type: ignore[attr-defined]
    udf = mlflow.pyfunc.spark_udf(
        spark, f"models:/{tracking.model_name('churn')}@champion",
        result_type=f"{CHURN_PROBABILITY} double, {REASONS} string", env_manager="local")
    scored = (frame.withColumn("out", udf(F.struct(*features.columns)))
              .select(CUSTOMER_ID, f"out.{CHURN_PROBABILITY}", f"out.{REASONS}")
              .toPandas().set_index(CUSTOMER_ID))
    assert len(scored) == len(expected) == len(features) > 100
    want = expected.loc[scored.index]
    np.testing.assert_allclose(scored[CHURN_PROBABILITY].to_numpy(dtype=float),
                               want[CHURN_PROBABILITY].to_numpy(dtype=float),
                               rtol=1e-9, atol=1e-12)
    assert (scored[REASONS].fillna("") == want[REASONS].fillna("")).all()
