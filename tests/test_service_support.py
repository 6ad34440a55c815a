"""Helpers shared by the service tests (no tests here): a small company, stub champions, keys.

The stub churn and win models are deterministic stand-ins with the serving interface of the
real ones (``predict_frame``); the forecaster is a real one, fitted with the cheapest candidate.
All are registered and promoted through :mod:`engine.tracking` like the real ones, so these
tests exercise the service's wiring in seconds; the browser test trains real churn and win
champions through the pipelines.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import socket
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import tracking
from engine.config import Settings
from engine.io import Tables, load_tables, write_data_dir
from engine.schemas import ACCOUNT_MANAGER, CUSTOMER_ID, LEVEL_COMPANY, LEVEL_REGION
from engine.synthetic import generate
from features.revenue import revenue_series
from models.churn import CHURN_PROBABILITY, REASONS
from models.forecast import RevenueForecaster
from models.win import WIN_PROBABILITY
from service.http.config import ServiceSettings
from service.usecases.forecast import ServedForecaster

__all__ = [
    "SEED",
    "Company",
    "StubChurn",
    "StubWin",
    "closed_port",
    "company_frames",
    "fresh_registry",
    "make_company",
    "quiet_options",
    "quiet_registry",
    "register_stubs",
    "settings_for",
]

SEED = 7


@functools.lru_cache(maxsize=1)
def company_frames() -> dict[str, pd.DataFrame]:
    """The small demo company, generated once per test process."""
    return generate("small", seed=SEED)


@dataclass(frozen=True)
class Company:
    """A data directory, its tables and two of its account managers."""

    data: Path
    tables: Tables
    manager: str
    other_manager: str

    def customer_of(self, manager: str) -> str:
        customers = self.tables.customers
        return str(customers.loc[customers[ACCOUNT_MANAGER] == manager, CUSTOMER_ID].iloc[0])


def make_company(root: Path) -> Company:
    """Write the small company to ``root/data`` and load it back."""
    data = write_data_dir(company_frames(), root / "data")
    tables = load_tables(str(data))
    managers = tables.customers[ACCOUNT_MANAGER].value_counts().index
    return Company(data, tables, str(managers[0]), str(managers[1]))


class StubChurn:
    """Churn probability from a hash of the customer id: fixed, spread over [0, 1)."""

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        ids = frame[CUSTOMER_ID].astype(str)
        p = np.array([zlib.crc32(i.encode()) % 1000 / 1000 for i in ids])
        reasons = np.where(p > 0.5, "no order for 90 days, usual cycle 12 days; spend down 40%",
                           "")
        return pd.DataFrame({CHURN_PROBABILITY: p, REASONS: reasons}, index=frame.index)


class StubWin:
    """Every open deal is won in its period with probability 0.3."""

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({WIN_PROBABILITY: np.full(len(frame), 0.3)}, index=frame.index)


@functools.lru_cache(maxsize=1)
def _registry_template() -> Path:
    """An empty MLflow database with its schema: creating one runs MLflow's migrations, about
    12 s, so it is done once per test process and copied."""
    folder = Path(tempfile.mkdtemp(prefix="quotacast-mlflow-template-"))
    atexit.register(shutil.rmtree, folder, True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracking.configure(uri)
    # Reads never create a registry: MLflow's own client creates it (and runs the migrations).
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    assert tracking.registry_reachable()
    return folder / "mlflow.db"


def fresh_registry(root: Path) -> str:
    """The tracking URI of a new, empty registry in ``root``."""
    shutil.copyfile(_registry_template(), root / "mlflow.db")
    return f"sqlite:///{root / 'mlflow.db'}"


def _register(kind: str, estimator: object, example: pd.DataFrame, metric: str) -> str:
    run = tracking.log_and_register(
        kind, estimator, input_example=example, params={"stub": True},  # type: ignore[arg-type]
        metrics={metric: 0.5}, gate_metric=metric, greater_is_better=True, holdout="stub")
    tracking.promote(kind, run.version, force=True)
    return run.version


def register_stubs(tracking_uri: str, tables: Tables, kinds: tuple[str, ...] = (
        "churn", "forecast", "win")) -> dict[str, str]:
    """Register and promote stub champions; returns kind -> version."""
    tracking.configure(tracking_uri)
    versions = {}
    if "churn" in kinds:
        versions["churn"] = _register("churn", StubChurn(),
                                      pd.DataFrame({CUSTOMER_ID: ["C1", "C2"]}), "pr_auc")
    if "win" in kinds:
        versions["win"] = _register("win", StubWin(), pd.DataFrame({"stage": ["proposal"]}),
                                    "auc")
    if "forecast" in kinds:
        series = revenue_series(tables, "M", levels=[LEVEL_COMPANY, LEVEL_REGION])
        fitted = RevenueForecaster(freq="M", horizon=3, n_windows=1,
                                   candidates=("seasonal_naive",)).fit(series)
        served = ServedForecaster(fitted, "M", [LEVEL_COMPANY, LEVEL_REGION])
        versions["forecast"] = _register("forecast", served,
                                         pd.DataFrame({"horizon": [3.0]}), "skill")
    return versions


@contextmanager
def stubbed_service(root: Path, kinds: tuple[str, ...] = ("churn", "win")
                    ) -> Iterator[tuple[Company, str, pytest.MonkeyPatch]]:
    """The small company with stub champions of ``kinds`` in a fresh registry, MLflow kept
    quiet: ``(company, tracking uri, the patch to add to)``, undone on exit."""
    company = make_company(root)
    uri = fresh_registry(root)
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        register_stubs(uri, company.tables, kinds=kinds)
        yield company, uri, patch


def settings_for(root: Path, data: Path | str, tracking_uri: str) -> Settings:
    """Engine settings over a temporary database and registry."""
    return Settings(data=str(data), mlflow_tracking_uri=tracking_uri,
                    database_url=f"sqlite:///{root / 'quotacast.db'}", seed=SEED)


def quiet_options(**overrides: object) -> ServiceSettings:
    """Service settings for tests: few draws, no notification delivery, no cached probe."""
    values: dict[str, object] = {"draws": 2000, "deliver_notifications": False,
                                 "registry_check_seconds": 0.0, "rate_limit_per_minute": 60_000,
                                 "rate_limit_burst": 10_000, "failed_keys_per_minute": 60_000,
                                 "failed_keys_burst": 10_000, "warm_up": False}
    values.update(overrides)
    return ServiceSettings(**values)  # type: ignore[arg-type]


def quiet_registry(patch: pytest.MonkeyPatch) -> None:
    """MLflow's HTTP client settings for tests, set through ``patch`` so they are undone after:
    no retries of a dead server (the service would otherwise set its own defaults for good)."""
    patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
