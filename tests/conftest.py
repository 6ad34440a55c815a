"""Shared pytest fixtures. Module-specific fixtures live beside their tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.alerting.store import AlertStore
from engine.db import Base

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public datasets shipped beside the repository (../shared/data)."""
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"the shared datasets are expected at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[Path]:
    """A real MLflow tracking store and model registry on SQLite in a temporary directory."""
    import mlflow

    from engine import tracking

    previous = mlflow.get_tracking_uri()
    tracking.configure(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
    tracking.configure(previous)


REAL_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "real"
REAL_DATASETS = ("online-retail", "crm-sales", "superstore")


def real_data_dir(name: str, months: int | None, root: Path) -> Path:
    """A data directory of a real imported dataset, cut to its first ``months`` months.

    The fixtures are the full imports of ../shared/data (``quotacast import``), gzipped in
    tests/fixtures/real; the cut keeps what an export made on the cut day would hold
    (engine/history.py). Written once per (name, months) under ``root``.
    """
    from engine.history import cut_history
    from engine.io import load_tables, write_data_dir

    target = root / f"{name}-{months or 'all'}m"
    if not target.exists():
        tables = load_tables(str(REAL_FIXTURES / name))
        if months is not None:
            tables = cut_history(tables, months)
        frames = {t: f for t, f in tables.frames.items() if t not in tables.derived}
        write_data_dir(frames, target)
    return target


@pytest.fixture(scope="session")
def real_data(tmp_path_factory: pytest.TempPathFactory):
    """``real_data(name, months=None) -> Path``: see :func:`real_data_dir`."""
    root = tmp_path_factory.mktemp("real")

    def make(name: str, months: int | None = None) -> Path:
        return real_data_dir(name, months, root)

    return make


# --- the alert database, on SQLite and (where QUOTACAST_TEST_POSTGRES_URL is set) PostgreSQL ----

POSTGRES_ENV = "QUOTACAST_TEST_POSTGRES_URL"


def _drop_tables(url: str) -> None:
    engine = sa.create_engine(url)
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty alert database URL of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'alerts.db'}"
        return
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_ENV} is not set under CI: .ci/run must start PostgreSQL and "
                        "export it, or the PostgreSQL variant of these tests never runs")
        pytest.skip(f"{POSTGRES_ENV} is not set: the PostgreSQL variant runs where it is (CI)")
    _drop_tables(url)
    yield url
    _drop_tables(url)


@pytest.fixture
def store(db_url: str) -> Iterator[AlertStore]:
    opened = AlertStore(db_url)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local[1] Spark engine per test module (4 shuffle partitions, a 1 GB driver)."""
    pytest.importorskip("pyspark")
    from engine.compute.spark import SparkEngine, spark_session

    session = spark_session("local[1]", shuffle_partitions=4, driver_memory="1g")
    yield SparkEngine("local[1]", session=session)
    session.stop()
