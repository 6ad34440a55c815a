"""What one running service holds: data, models, stores, limiter, metrics and caches.

Built once by the lifespan of :func:`service.http.app.create_app` and reached by routes through
:mod:`service.http.deps`. Loading never raises: bad data, an unreachable registry or a model without
a champion leave the service up, serving what it has, and /readyz says what is missing and why.

One service may serve several workspaces (``quotacast serve --data A --data B``): one
:class:`AppState` per workspace (its data, champions, alert store and caches), sharing the
process's keys, rate limits and request metrics. The first is the root the app holds; a request
is answered from the state of its key's workspace (:meth:`AppState.space`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from engine import tracking
from engine.alerting.store import AlertStore
from engine.config import Settings
from models.base import MODEL_KINDS
from rules import default_rules_path
from service.http.config import ServiceSettings
from service.http.keys import KeyRing, KeyStore
from service.http.metrics import RequestMetrics
from service.http.ratelimit import TokenBucketLimiter
from service.usecases.champions import load_champions
from service.usecases.served import RegistryStatus, Served, load_data

__all__ = ["AppState", "Fingerprint", "ReloadStatus", "bound_registry_calls", "build_state",
           "served_settings"]

# Each file of a data source: its name, modification time (ns) and size.
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass
class ReloadStatus:
    """What the watcher of one workspace last did (``/readyz`` reports it).

    Attributes:
        every_seconds: the interval (0: the data is loaded once).
        watched: whether the source can be fingerprinted (files, a SQLite file).
        checked_at: the last check (UTC).
        loaded_at: when the data served was loaded (UTC).
        loads: how many times the data was loaded (start-up included).
        problems: why the last changed data was refused (empty: the data served is the
            latest); the old data is served meanwhile.
        warmed_in: seconds the last warm-up took (None: not run yet or running).
        warmed_more_in: seconds the lowest-priority rest of it took, after ``warmed_in``:
            the previous quarter and the ready scenarios (None: not done yet).
    """

    every_seconds: float = 0.0
    watched: bool = True
    checked_at: datetime | None = None
    loaded_at: datetime | None = None
    loads: int = 1
    problems: list[str] = field(default_factory=list)
    warmed_in: float | None = None
    warmed_more_in: float | None = None
    fingerprint: Fingerprint | None = None


@dataclass(kw_only=True)
class AppState(Served):
    """Everything a request may need; one per app: what the use cases read (:class:`Served`)
    and what only HTTP needs (its own settings, the keys, the rate limiters, request
    metrics)."""

    options: ServiceSettings
    keys: KeyStore | KeyRing
    limiter: TokenBucketLimiter
    metrics: RequestMetrics
    failures: TokenBucketLimiter = field(default_factory=lambda: TokenBucketLimiter(10, 20))
    # Every workspace served, by name (the root's own included); empty: this one alone.
    spaces: dict[str, AppState] = field(default_factory=dict)
    # What the data watcher last did (service.http.reload).
    reload: ReloadStatus = field(default_factory=ReloadStatus)

    @property
    def name(self) -> str:
        """The workspace served by this state."""
        return self.registry_workspace().name or ""

    def space(self, workspace: str) -> AppState:
        """The state of ``workspace`` (a key's): its data, champions and alerts.

        Raises:
            LookupError: the service does not serve that workspace.
        """
        if not self.spaces:
            return self
        try:
            return self.spaces[workspace]
        except KeyError:
            raise LookupError(f"workspace {workspace!r} is not served here") from None

    def every_space(self) -> list[AppState]:
        """Every workspace's state, the root's first."""
        return list(self.spaces.values()) or [self]

    @property
    def ready(self) -> bool:
        """Whether the data of every workspace served is loaded."""
        return all(space.data.ok for space in self.every_space())

    def close(self) -> None:
        """Release the database connections (of every workspace)."""
        self.keys.close()
        for space in self.every_space():
            space.alerts.close()


def bound_registry_calls(max_retries: int = 1, timeout_seconds: int = 10) -> None:
    """Keep MLflow's HTTP client from retrying a dead server for minutes.

    MLflow retries a failing tracking server 7 times with exponential backoff by default: a
    probe of a dead server took 247 s here, which would hold up start-up and /readyz. Set only
    when not set already, so an operator's explicit choice wins.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_seconds))


def served_settings(settings: Settings, sources: Sequence[str]) -> dict[str, Settings]:
    """The settings of each workspace served, by workspace name: the data of each source; the
    default workspace stays that of ``settings`` (QUOTACAST_DATA or
    QUOTACAST_DEFAULT_WORKSPACE), whatever is served.

    Raises:
        ValueError: two sources of one workspace, or a named workspace for several sources.
    """
    default = settings.default_workspace_name()
    if len(sources) > 1 and settings.workspace:
        raise ValueError(f"the workspace {settings.workspace!r} is named (--workspace or "
                         "QUOTACAST_WORKSPACE) but several data sources are served: each is the "
                         "workspace of its own data, so leave the workspace unnamed")
    found: dict[str, Settings] = {}
    for source in sources:
        each = settings.model_copy(update={"data": source, "default_workspace": default})
        name = each.workspace_of()
        if name in found:
            raise ValueError(f"{found[name].data} and {source} are both workspace {name} (a "
                             "workspace is the data directory's name): serve one of them, or "
                             "rename a directory")
        found[name] = each
    return found


def _space(settings: Settings, options: ServiceSettings, limits: tuple[TokenBucketLimiter, ...],
           metrics: RequestMetrics, registry: RegistryStatus, keys: KeyStore | KeyRing
           ) -> AppState:
    """The state of one workspace: its data, alert store and champions."""
    limiter, failures = limits
    state = AppState(
        settings=settings,
        options=options,
        data=load_data(settings.data),
        rules=Path(options.rules) if options.rules else default_rules_path(),
        draws=options.draws,
        deliver_notifications=options.deliver_notifications,
        registry_check_seconds=options.registry_check_seconds,
        keys=keys,
        alerts=AlertStore(settings.database_url, workspace=settings.store_workspace()),
        limiter=limiter,
        failures=failures,
        metrics=metrics,
        registry=registry,
        workspace=tracking.Workspace.of(settings),
    )
    load_champions(state, MODEL_KINDS)
    return state


def build_state(settings: Settings, options: ServiceSettings,
                metrics: RequestMetrics | None = None,
                sources: Sequence[str] | None = None) -> AppState:
    """Open the stores, load the data and the champions of every workspace served.

    Args:
        sources: the data sources served, one workspace each (default: ``settings.data``).
    """
    bound_registry_calls()
    each = served_settings(settings, list(sources or [settings.data]))
    first = next(iter(each.values()))
    # The registry is the process's; the workspace is named on every call (the one set here
    # is only the default of calls that name none).
    tracking.configure(settings.mlflow_tracking_uri, workspace=tracking.Workspace.of(first))
    ring = KeyRing({name: KeyStore(s.database_url, workspace=s.store_workspace())
                    for name, s in each.items()})
    limits = (TokenBucketLimiter(options.rate_limit_per_minute, options.rate_limit_burst),
              TokenBucketLimiter(options.failed_keys_per_minute, options.failed_keys_burst))
    metrics = metrics or RequestMetrics()
    registry = RegistryStatus(tracking.describe_uri(settings.mlflow_tracking_uri))
    spaces: dict[str, AppState] = {}
    for name, space_settings in each.items():
        own = ring if not spaces else ring.stores[name]
        spaces[name] = _space(space_settings, options, limits, metrics, registry, own)
    root = spaces[first.workspace_of()]
    if len(spaces) > 1:
        root.spaces = spaces
    return root
