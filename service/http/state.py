"""What one running service holds: data, models, stores, limiter, metrics and caches.

Built once by the lifespan of :func:`service.http.app.create_app` and reached by routes through
:mod:`service.http.deps`. Loading never raises: bad data, an unreachable registry or a model without
a champion leave the service up, serving what it has, and :func:`readiness` says what is
missing and why.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pandas as pd

from engine import tracking
from engine.alerting.store import AlertStore
from engine.config import Settings
from engine.io import BadInput, Tables, load_tables
from engine.periods import data_end, first_day
from service.http.config import ServiceSettings
from service.http.keys import KeyStore
from service.http.metrics import RequestMetrics
from service.http.ratelimit import TokenBucketLimiter

__all__ = [
    "MODEL_KINDS",
    "AppState",
    "DataState",
    "Memo",
    "RegistryStatus",
    "bound_registry_calls",
    "build_state",
    "load_data",
    "load_models",
]

MODEL_KINDS = ("churn", "forecast", "win")
T = TypeVar("T")


@dataclass
class DataState:
    """The data source, loaded and validated once.

    Attributes:
        source: the directory or SQL URL.
        tables: the validated tables, or None when they could not be loaded.
        problems: every problem found (``table:line: column: check (value)``).
        start: the first day with an order or a created deal.
        end: the last date in the data (the default as_of is the day after it).
    """

    source: str
    tables: Tables | None = None
    problems: list[str] = field(default_factory=list)
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    @property
    def ok(self) -> bool:
        return self.tables is not None


@dataclass
class RegistryStatus:
    """The last answer of the registry probe and when it was asked (monotonic seconds)."""

    uri: str
    reachable: bool | None = None
    checked_at: float = float("-inf")


class Memo(Generic[T]):
    """A small LRU cache whose values are computed once even under concurrent requests.

    One lock for everything: the values are CPU-bound simulations on a two-core machine, so
    computing two of them at once would not be faster, and a request for a value being computed
    waits for it instead of computing it again. Re-entrant: a value may be computed from
    another value of the same cache.
    """

    def __init__(self, size: int = 8):
        self.size = size
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = compute()
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass
class AppState:
    """Everything a request may need; one per app."""

    settings: Settings
    options: ServiceSettings
    data: DataState
    keys: KeyStore
    alerts: AlertStore
    limiter: TokenBucketLimiter
    metrics: RequestMetrics
    registry: RegistryStatus
    models: dict[str, tracking.LoadedModel] = field(default_factory=dict)
    model_problems: dict[str, str] = field(default_factory=dict)
    # Small: a large company's draws take tens of MB per (period, as_of).
    feasibility_cache: Memo[Any] = field(default_factory=lambda: Memo(size=6))
    scores_cache: Memo[Any] = field(default_factory=lambda: Memo(size=4))
    models_lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        """Release the database connections."""
        self.keys.close()
        self.alerts.close()

    def model(self, kind: str) -> tracking.LoadedModel | None:
        """The served model of ``kind`` (None when there is none)."""
        return self.models.get(kind)

    def clear_caches(self) -> None:
        """Forget computed results (after the models changed)."""
        self.feasibility_cache.clear()
        self.scores_cache.clear()


def bound_registry_calls(max_retries: int = 1, timeout_seconds: int = 10) -> None:
    """Keep MLflow's HTTP client from retrying a dead server for minutes.

    MLflow retries a failing tracking server 7 times with exponential backoff by default: a
    probe of a dead server took 247 s here, which would hold up start-up and /readyz. Set only
    when not set already, so an operator's explicit choice wins.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_seconds))


def load_data(source: str) -> DataState:
    """Load and validate the data once; problems are kept, never raised."""
    state = DataState(source=source)
    try:
        tables = load_tables(source)
    except BadInput as bad:
        state.problems = [str(p) for p in bad.problems]
        return state
    except (OSError, ValueError) as exc:
        state.problems = [f"-:0: -: cannot read the data ({exc})"]
        return state
    state.tables = tables
    state.end = data_end(tables)
    state.start = first_day(tables)
    return state


def probe_registry(state: AppState, max_age: float | None = None) -> bool:
    """Whether the registry answers, asking again when the last answer is older than ``max_age``
    seconds (default: the ``registry_check_seconds`` setting)."""
    age = state.options.registry_check_seconds if max_age is None else max_age
    now = time.monotonic()
    status = state.registry
    if status.reachable is None or now - status.checked_at >= age:
        status.reachable = tracking.registry_reachable()
        status.checked_at = time.monotonic()
    return bool(status.reachable)


def _load_one(state: AppState, kind: str) -> None:
    try:
        loaded = tracking.load_champion(kind)
    except tracking.ChampionMissingError as exc:
        if kind not in state.models:
            state.model_problems[kind] = str(exc)
        else:
            state.model_problems[kind] = f"kept v{state.models[kind].version}: {exc}"
        return
    # Any failure to unpickle or fetch a model (MLflow, I/O, a class that moved) must not take
    # the service down: the model is left out (or the old one kept) and /readyz says why.
    except Exception as exc:
        kept = f"kept v{state.models[kind].version}: " if kind in state.models else ""
        state.model_problems[kind] = f"{kept}cannot load the champion: {type(exc).__name__}: {exc}"
        return
    state.models[kind] = loaded
    state.model_problems.pop(kind, None)


def load_models(state: AppState) -> bool:
    """(Re)load every champion; keep what is served when the registry does not answer.

    Returns:
        whether the registry was reachable.
    """
    with state.models_lock:
        if not probe_registry(state, max_age=0):
            for kind in MODEL_KINDS:
                held = state.models.get(kind)
                state.model_problems[kind] = (
                    f"registry unreachable: kept v{held.version}" if held
                    else "registry unreachable: not loaded")
            return False
        before = {k: m.version for k, m in state.models.items()}
        for kind in MODEL_KINDS:
            _load_one(state, kind)
        if before != {k: m.version for k, m in state.models.items()}:
            state.clear_caches()
        return True


def build_state(settings: Settings, options: ServiceSettings,
                metrics: RequestMetrics | None = None) -> AppState:
    """Open the stores, load the data and the champions."""
    bound_registry_calls()
    tracking.configure(settings.mlflow_tracking_uri)
    state = AppState(
        settings=settings,
        options=options,
        data=load_data(settings.data),
        keys=KeyStore(settings.database_url),
        alerts=AlertStore(settings.database_url),
        limiter=TokenBucketLimiter(options.rate_limit_per_minute, options.rate_limit_burst),
        metrics=metrics or RequestMetrics(),
        registry=RegistryStatus(tracking.describe_uri(settings.mlflow_tracking_uri)),
    )
    load_models(state)
    return state
