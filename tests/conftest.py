"""Shared pytest fixtures. Module-specific fixtures live beside their tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
