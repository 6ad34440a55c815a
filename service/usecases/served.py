"""What a running service serves: the data loaded once, the champion models, the caches.

The use cases of the service (:mod:`service.usecases.planning`, ``customers``, ``forecasts``,
``alerts``, ``champions``) are functions over a :class:`Served`; they know nothing of HTTP and
refuse with the plain exceptions of :mod:`service.usecases.request`. The HTTP app's state extends
:class:`Served` with what only HTTP needs (keys, rate limits, request metrics).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pandas as pd
from sqlalchemy.exc import SQLAlchemyError

from engine import tracking
from engine.alerting.store import AlertStore
from engine.config import Settings
from engine.io import BadInput, Tables, is_sql_url, load_tables
from engine.periods import data_end, first_day
from service.usecases.request import DataSpan, Unavailable

__all__ = [
    "DataState",
    "Memo",
    "RegistryStatus",
    "Served",
    "load_data",
    "mark_background",
    "probe_registry",
    "result_of",
    "unreadable",
    "wait_for",
    "waiters",
]

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


_WAITERS = [0]  # threads waiting now for a value another thread computes (every Memo)
_WAITERS_LOCK = threading.Lock()
_THREAD = threading.local()


def waiters() -> int:
    """How many threads (background ones aside) wait now for a value another thread is
    computing (in any :class:`Memo`, or a future read with :func:`result_of`): a background
    computation that pauses for requests must not pause then, since a request may be waiting
    for it (see :class:`service.http.metrics.Yielding`)."""
    return _WAITERS[0]


def mark_background(on: bool) -> None:
    """Mark the calling thread as background work (or not): its waits are not counted in
    :func:`waiters` (a background thread waiting for another must not keep it running)."""
    _THREAD.background = on


def wait_for(done: threading.Event, timeout: float | None = None) -> bool:
    """``done.wait(timeout)``, counted in :func:`waiters` meanwhile (unless the calling thread
    is background work)."""
    if getattr(_THREAD, "background", False):
        return done.wait(timeout)
    with _WAITERS_LOCK:
        _WAITERS[0] += 1
    try:
        return done.wait(timeout)
    finally:
        with _WAITERS_LOCK:
            _WAITERS[0] -= 1


def result_of(future: Future[T]) -> T:
    """``future.result()``, its wait counted in :func:`waiters`."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    wait_for(done)
    return future.result()


class _Pending:
    """A value being computed: who computes it, and when it is done."""

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.done = threading.Event()


class Memo(Generic[T]):
    """A small LRU cache whose values are computed once even under concurrent requests.

    A request for a value being computed waits for it instead of computing it again; values of
    different keys are computed independently, so a long computation (a background warm-up's
    simulation of another period) never holds up a request for a value already cached or for
    another key. When the computation fails, each waiter computes the value itself (and is
    told why it fails). Re-entrant: a value may be computed from another value of the same
    cache.
    """

    def __init__(self, size: int = 8):
        self.size = size
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self._pending: dict[Hashable, _Pending] = {}
        self._lock = threading.Lock()
        self._generation = 0  # a value computed before clear() is not kept

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        while True:
            fresh = _Pending()  # made outside the lock: no Python call runs while it is held
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = fresh
                    generation = self._generation
                    break
            if pending.owner == threading.get_ident():  # asked again while computing it
                return compute()
            wait_for(pending.done)
        try:
            value = compute()
        except BaseException:
            with self._lock:
                if self._pending.get(key) is pending:
                    del self._pending[key]
            pending.done.set()
            raise
        with self._lock:
            if generation == self._generation:
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            if self._pending.get(key) is pending:
                del self._pending[key]
        pending.done.set()
        return value

    def peek(self, key: Hashable) -> bool:
        """Whether the value of ``key`` is cached (computed, not only being computed)."""
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        """Forget every value; those being computed are not kept either."""
        with self._lock:
            self._items.clear()
            self._pending.clear()
            self._generation += 1


@dataclass(kw_only=True)
class Served:
    """What the service's use cases read: data, served models, stores, caches and settings.

    Attributes:
        settings: the engine settings (seed, database, MLflow, warning receivers).
        data: the data loaded at start-up.
        alerts: the alert store.
        registry: the last answer of the registry probe.
        rules: the warning rule file.
        draws: Monte Carlo draws of a feasibility request.
        deliver_notifications: send warning notifications right after an evaluation.
        registry_check_seconds: how long a registry reachability answer is reused.
        models: the champions served, per kind (loaded at start-up and on reload only).
        model_problems: per kind, why it is not (or no longer) loaded.
        workspace: whose champions are served (None: that of ``settings``, see
            :meth:`engine.tracking.Workspace.of`); a value, so that one process can serve
            several workspaces.
    """

    settings: Settings
    data: DataState
    alerts: AlertStore
    registry: RegistryStatus
    rules: Path
    draws: int = 10_000
    deliver_notifications: bool = True
    registry_check_seconds: float = 30.0
    models: dict[str, tracking.LoadedModel] = field(default_factory=dict)
    model_problems: dict[str, str] = field(default_factory=dict)
    workspace: tracking.Workspace | None = None
    # Small: a large company's draws take tens of MB per (period, as_of). Room for what the
    # service's warm-up keeps (stage rates, the current and previous quarter, the four ready
    # scenarios' frames) and three more.
    feasibility_cache: Memo[Any] = field(default_factory=lambda: Memo(size=10))
    scores_cache: Memo[Any] = field(default_factory=lambda: Memo(size=4))
    models_lock: threading.Lock = field(default_factory=threading.Lock)

    def registry_workspace(self) -> tracking.Workspace:
        """The workspace whose champions are served."""
        return self.workspace or tracking.Workspace.of(self.settings)

    def model(self, kind: str) -> tracking.LoadedModel | None:
        """The served model of ``kind`` (None when there is none)."""
        return self.models.get(kind)

    def clear_caches(self) -> None:
        """Forget computed results (after the models changed)."""
        self.feasibility_cache.clear()
        self.scores_cache.clear()

    def tables(self) -> Tables:
        """The loaded tables.

        Raises:
            Unavailable: the data could not be loaded.
        """
        if self.data.tables is None:
            shown = "; ".join(self.data.problems[:3])
            more = len(self.data.problems) - 3
            raise Unavailable(f"the data at {self.data.source} is not loaded: {shown}"
                              + (f" (and {more} more problems, see /readyz)" if more > 0 else ""))
        return self.data.tables

    def span(self) -> DataSpan:
        """The days the loaded data covers (:class:`Unavailable` when none is loaded)."""
        self.tables()
        assert self.data.start is not None and self.data.end is not None  # set with the tables
        return DataSpan(start=self.data.start, end=self.data.end)


def load_data(source: str) -> DataState:
    """Load and validate the data once; problems are kept, never raised."""
    state = DataState(source=source)
    try:
        tables = load_tables(source)
    except BadInput as bad:
        state.problems = [str(p) for p in bad.problems]
        return state
    except (OSError, ValueError, ImportError, SQLAlchemyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        state.problems = [f"-:0: -: cannot read the data ({reason})"]
        return state
    state.tables = tables
    state.end = data_end(tables)
    state.start = first_day(tables)
    return state


def unreadable(source: str) -> str | None:
    """Why ``source`` cannot be data at all (None: it may be; loading says what is wrong).

    Cheap, and creating nothing: a file given where a directory is expected, a database URL
    whose scheme or driver is unknown, a SQLite file that is not a database. A directory or
    SQLite file that does not exist, and a database server that does not answer, are left to
    loading (the service starts not ready and says why).
    """
    import sqlalchemy as sa

    if not is_sql_url(source):
        path = Path(source)
        if path.exists() and not path.is_dir():
            return (f"{source} is a file, not a data directory; a SQLite file is given as "
                    f"sqlite:///{path}")
        return None
    try:
        url = sa.engine.make_url(source)
        database = url.database or ""
        if url.get_backend_name() == "sqlite" and (database in ("", ":memory:")
                                                    or not Path(database).is_file()):
            return None
        engine = sa.create_engine(url)
    except (ImportError, ValueError, SQLAlchemyError) as exc:
        return f"cannot open the database ({str(exc).splitlines()[0] or type(exc).__name__})"
    if url.get_backend_name() != "sqlite":  # a server down now may be up later: not ready
        engine.dispose()
        return None
    try:
        sa.inspect(engine).get_table_names()
    except (ImportError, ValueError, SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return f"cannot open the database ({reason})"
    finally:
        engine.dispose()
    return None


def probe_registry(served: Served, max_age: float | None = None) -> bool:
    """Whether the registry answers, asking again when the last answer is older than ``max_age``
    seconds (default: ``served.registry_check_seconds``)."""
    age = served.registry_check_seconds if max_age is None else max_age
    now = time.monotonic()
    status = served.registry
    if status.reachable is None or now - status.checked_at >= age:
        status.reachable = tracking.registry_reachable()
        status.checked_at = time.monotonic()
    return bool(status.reachable)
