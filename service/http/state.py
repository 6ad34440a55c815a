"""What one running service holds: data, models, stores, limiter, metrics and caches.

Built once by the lifespan of :func:`service.http.app.create_app` and reached by routes through
:mod:`service.http.deps`. Loading never raises: bad data, an unreachable registry or a model without
a champion leave the service up, serving what it has, and /readyz says what is missing and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from engine import tracking
from engine.alerting.store import AlertStore
from engine.config import Settings
from models.base import MODEL_KINDS
from rules import default_rules_path
from service.http.config import ServiceSettings
from service.http.keys import KeyStore
from service.http.metrics import RequestMetrics
from service.http.ratelimit import TokenBucketLimiter
from service.usecases.champions import load_champions
from service.usecases.served import RegistryStatus, Served, load_data

__all__ = ["AppState", "bound_registry_calls", "build_state"]


@dataclass(kw_only=True)
class AppState(Served):
    """Everything a request may need; one per app: what the use cases read (:class:`Served`)
    and what only HTTP needs (its own settings, the keys, the rate limiters, request
    metrics)."""

    options: ServiceSettings
    keys: KeyStore
    limiter: TokenBucketLimiter
    metrics: RequestMetrics
    failures: TokenBucketLimiter = field(default_factory=lambda: TokenBucketLimiter(10, 20))

    def close(self) -> None:
        """Release the database connections."""
        self.keys.close()
        self.alerts.close()


def bound_registry_calls(max_retries: int = 1, timeout_seconds: int = 10) -> None:
    """Keep MLflow's HTTP client from retrying a dead server for minutes.

    MLflow retries a failing tracking server 7 times with exponential backoff by default: a
    probe of a dead server took 247 s here, which would hold up start-up and /readyz. Set only
    when not set already, so an operator's explicit choice wins.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_seconds))


def build_state(settings: Settings, options: ServiceSettings,
                metrics: RequestMetrics | None = None) -> AppState:
    """Open the stores, load the data and the champions."""
    bound_registry_calls()
    # The service serves the workspace of its data (or QUOTACAST_WORKSPACE): its champions only.
    space = settings.workspace_of()
    tracking.configure(settings.mlflow_tracking_uri, workspace=space,
                       adopt_unscoped=settings.owns_unscoped(space))
    state = AppState(
        settings=settings,
        options=options,
        data=load_data(settings.data),
        rules=Path(options.rules) if options.rules else default_rules_path(),
        draws=options.draws,
        deliver_notifications=options.deliver_notifications,
        registry_check_seconds=options.registry_check_seconds,
        keys=KeyStore(settings.database_url, workspace=settings.store_workspace()),
        alerts=AlertStore(settings.database_url, workspace=settings.store_workspace()),
        limiter=TokenBucketLimiter(options.rate_limit_per_minute, options.rate_limit_burst),
        failures=TokenBucketLimiter(options.failed_keys_per_minute, options.failed_keys_burst),
        metrics=metrics or RequestMetrics(),
        registry=RegistryStatus(tracking.describe_uri(settings.mlflow_tracking_uri)),
    )
    load_champions(state, MODEL_KINDS)
    return state
