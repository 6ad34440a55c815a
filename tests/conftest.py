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
