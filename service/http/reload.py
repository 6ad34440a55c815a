"""Fresh data on a clock, and the current period computed before anyone asks.

**Warm-up.** At start-up and after each reload a background thread computes what the first view
of the board and of the dashboard needs: the simulation of the current period at the data's
as-of (the one ``/``, ``/v1/feasibility`` and ``/board`` open on), the board's company page
(deals, trend, what changed, commits) and the dashboard's sections. The caches compute each
value once (:class:`service.usecases.served.Memo`), so a request arriving meanwhile waits for
the value being computed instead of computing it again. Each simulation writes the board's
snapshot of every node (:func:`service.usecases.board.record_run`, the writer the CLI's
``feasibility`` and ``warnings evaluate`` use).

**Then, at the lowest priority, what a weekly call opens next** (:func:`more_steps`): the
previous quarter (its simulation, company page and node pages) and each ready scenario of the
library beside the current period. One small step at a time, each started only when no request
is being answered nor was for a quarter of a second (:meth:`RequestMetrics.idle`), so a page
asked meanwhile is not queued behind it; a simulation holds no lock a request needs (the caches
compute each key on its own: :class:`service.usecases.served.Memo`). A reload or a stop
interrupts it between steps.

**Requests first, within a step too.** During such a step the watcher's thread steps aside at
its next Python call while a request is being answered (:class:`service.http.metrics.Yielding`),
so a page asked in the middle of a background simulation does not share the interpreter with
it; not while a request waits for a value the thread computes. The simulation's worker threads
(the draws of a step) step aside too (:func:`models.feasibility.simulation.set_part_wrapper`),
and a paused step looks whether the request is answered every :data:`PAUSE_STEP` seconds only
(each look takes the interpreter from the request for a moment). What each step keeps is
frozen out of the garbage collector's full passes (:func:`freeze_kept`), which no step aside can
interrupt. (The current period is computed first regardless: its first views wait for it
anyway.)

**Reload** (``QUOTACAST_RELOAD_SECONDS`` > 0): every interval the data source's fingerprint
(each file's name, size and modification time; a SQLite database's file) is compared with the
one loaded. When it changed, the data is loaded and validated anew:

- valid: it replaces the served data, the caches keyed by the data are emptied, and the warm-up
  runs again, so a snapshot per node is recorded at the new as-of: the trend grows on the
  schedule the data changes on;
- not valid: the old data keeps being served (never a 500), the log says why and ``/readyz``
  (with a key) reports the problems under ``reload``; the same bad files are not read again
  until they change.

A database server (PostgreSQL...) has no cheap fingerprint: its data is not watched (``/readyz``
says so).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

import pandas as pd

from engine.io import is_sql_url
from models.feasibility.simulation import set_part_wrapper
from service.http.auth import Principal
from service.http.keys import Role
from service.http.metrics import Yielding
from service.http.state import AppState, Fingerprint, ReloadStatus
from service.usecases.request import Refusal
from service.usecases.served import DataState, load_data

__all__ = ["PAUSE_STEP", "QUIET_SECONDS", "WARM_NODES", "WARM_PERIODS", "DataWatcher",
           "fingerprint", "freeze_kept", "more_steps", "previous_periods", "reload_once",
           "snapshot", "warm"]

log = logging.getLogger("quotacast.service")
T = TypeVar("T")

# Who the warm-up computes the pages for: a planning role sees every section a page computes.
_WARM = Principal(key_id="warm-up", role=Role.PLANNER)
# Node pages computed ahead at most (a large company's reps beyond it are computed when asked).
WARM_NODES = 300
# Quarters before the current one computed ahead, at the lowest priority.
WARM_PERIODS = 1
# A background step starts only after this long without a request.
QUIET_SECONDS = 0.25
# While paused for a request, the background looks whether it is answered this often: each look
# takes the interpreter from the request for a moment (on a loaded machine, the wait for the
# scheduler to run the look too), so few looks; resuming a little late costs nobody anything.
PAUSE_STEP = 0.025


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _sqlite_file(source: str) -> Path | None:
    import sqlalchemy as sa

    try:
        url = sa.engine.make_url(source)
    except sa.exc.ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def fingerprint(source: str) -> Fingerprint | None:
    """The name, size and modification time (ns) of every file of the data source, sorted;
    a SQLite database: its file (and its write-ahead log). None: a database server, which
    has no cheap fingerprint. A missing directory is the empty fingerprint."""
    if is_sql_url(source):
        path = _sqlite_file(source)
        if path is None:
            return None
        files = [p for p in (path, path.with_name(path.name + "-wal")) if p.is_file()]
        root = path.parent
    else:
        root = Path(source)
        if not root.is_dir():
            return ()
        files = [p for p in root.rglob("*")
                 if p.is_file() and not any(part.startswith(".")
                                            for part in p.relative_to(root).parts)]
    out = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:  # removed between the listing and now
            continue
        out.append((str(path.relative_to(root)), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(out))


def warm(state: AppState) -> float:
    """Compute the current period's simulation and the first pages of the board and the
    dashboard (cached), for every workspace; seconds taken. Never raises: what cannot be
    computed is computed (and refused) again when asked."""
    from service.http.dashboard import board_context, dashboard_context
    from service.http.routes.dashboard import templates

    began = time.perf_counter()
    for page in ("board.html", "dashboard.html", "signin.html"):  # compiled once, kept
        templates.get_template(page)
    # The key lookup's first query (its statement compiled, a connection opened): a made-up,
    # well-formed key that no store holds.
    with contextlib.suppress(Exception):
        state.keys.verify("qk_00000000_" + "A" * 43)
    for space in state.every_space():
        if not space.data.ok:
            continue
        # The company page first (its period's simulation), then the dashboard's, then the
        # company page's product/segment/channel nodes (simulated on their own thread), then
        # every other node's page (deals, trend, what changed, commits, closed path: a tenth
        # of a second or two each).
        _quietly("board", space, partial(board_context, space, _WARM))
        _quietly("dashboard", space, partial(dashboard_context, space, _WARM))
        _quietly("board", space, partial(board_context, space, _WARM, wait_dimensions=True))
        for level, key in _quietly("board", space, partial(_nodes, space)) or []:
            _quietly("board", space, partial(board_context, space, _WARM, level=level, key=key))
    return time.perf_counter() - began


def freeze_kept() -> None:
    """What the warm-up computed, kept (caches: a few hundred thousand Python objects at the
    medium company) is left out of the garbage collector's full passes from now on
    (:func:`gc.freeze`; the young garbage collected first): a full pass over them holds the
    interpreter for a third of a second (seconds on a loaded machine) in whichever thread
    allocates at that moment, a request's or the background's, and no step aside can
    interrupt it. Frozen objects are still freed when no longer referenced; a reload's
    warm-up unfreezes first (the old caches' reference cycles are collected again) and
    :meth:`DataWatcher.stop` unfreezes them."""
    gc.collect(1)
    gc.freeze()


def previous_periods(space: AppState, count: int = WARM_PERIODS) -> list[str]:
    """The ``count`` quarters before the board's default period, latest first."""
    from engine.periods import period_bounds, period_of
    from service.http.dashboard import default_picker

    start = period_bounds(default_picker(space).period)[0]
    out = []
    for _ in range(count):
        start = period_bounds(period_of(start - pd.Timedelta(days=1), "Q"))[0]
        out.append(period_of(start, "Q"))
    return out


def more_steps(space: AppState) -> Iterator[Callable[[], object]]:
    """What a weekly call opens after the current period, one small step each: the previous
    quarters' company pages (their simulation and product/segment/channel nodes), each ready
    scenario beside the current period, then the previous quarters' node pages. Lazy: a
    step's nodes are read when it is reached. Each step never raises (:func:`_quietly`)."""
    from service.http.dashboard import board_context, library_names

    if not space.data.ok:
        return
    periods = _quietly("board", space, partial(previous_periods, space)) or []
    for period in periods:
        yield partial(_quietly, "board", space, partial(
            board_context, space, _WARM, period=period, wait_dimensions=True))
    for name in library_names():
        yield partial(_quietly, "scenario", space, partial(
            board_context, space, _WARM, scenario=name))
    for period in periods:
        for level, key in _quietly("board", space, partial(_nodes, space, period=period)) or []:
            yield partial(_quietly, "board", space, partial(
                board_context, space, _WARM, period=period, level=level, key=key))


def snapshot(space: AppState) -> None:
    """The current period's simulation at the data's as-of (which records its snapshot);
    a refusal (no period to simulate) is left to the requests to say."""
    from service.usecases.planning import feasibility_run

    with contextlib.suppress(Refusal):
        feasibility_run(space, None, None)


def _quietly(name: str, space: AppState, build: Callable[[], T]) -> T | None:
    """``build()``, or None when it refuses or fails (a warm-up must never kill the service:
    what fails here is computed, and said, again when asked)."""
    try:
        return build()
    except Refusal:
        return None
    except Exception as exc:
        log.warning("warm-up of the %s of %s failed: %s", name, space.data.source,
                    str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        return None


def _nodes(space: AppState, most: int = WARM_NODES, period: str | None = None
           ) -> list[tuple[str, str]]:
    """The nodes below the company of the current period (or ``period``) as its board shows
    them, top down, then its product/segment/channel nodes."""
    from service.http.dashboard import cached_nodes

    return [(n.level, n.key) for n in cached_nodes(space, period)
            if n.level != "company"][:most]


def _forget(space: AppState) -> None:
    """Empty every cache keyed by the data (the service's and the board's)."""
    from service.http.board_first import forget_first_views
    from service.http.dashboard import forget_board

    space.clear_caches()
    forget_board()
    forget_first_views()


def reload_once(space: AppState, load: Callable[[str], DataState] = load_data,
                settle: float = 0.1) -> bool:
    """Check one workspace's data source and load it anew when its fingerprint changed and
    then stayed the same for ``settle`` seconds and while it was read (a file half written is
    not read); whether new data is now served. Bad new data keeps the old data (and says
    why)."""
    status = space.reload
    status.checked_at = _now()
    found = fingerprint(space.data.source)
    if found is None or found == status.fingerprint:
        return False
    # A file being written (an export copied in, a CSV rewritten) is read once it settles.
    time.sleep(settle)
    if fingerprint(space.data.source) != found:
        return False
    fresh = load(space.data.source)
    if fingerprint(space.data.source) != found:  # changed while it was read: next time
        return False
    status.fingerprint = found
    if not fresh.ok:
        status.problems = list(fresh.problems[:200])
        served = space.data.end.date() if space.data.end is not None else None
        log.warning("data %s changed but was NOT reloaded (%d problems; still serving the data "
                    "of %s, up to %s): %s", space.data.source, len(fresh.problems),
                    status.loaded_at, served, "; ".join(fresh.problems[:3]))
        return False
    space.data = fresh
    _forget(space)
    status.problems = []
    status.loaded_at = _now()
    status.loads += 1
    log.info("data %s reloaded (up to %s)", fresh.source,
             fresh.end.date() if fresh.end is not None else "?")
    return True


class DataWatcher:
    """One background thread: the warm-up at start, then (``every`` > 0) a reload check of
    every workspace each ``every`` seconds, and a warm-up after each reload. Without
    ``warm_up`` only the current period's simulation (its snapshot) is computed after each
    load."""

    def __init__(self, state: AppState, every: float, warm_up: bool = True):
        self.state = state
        self.every = every
        self.warm_up = warm_up
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.yielding = Yielding(state.metrics, step=PAUSE_STEP)
        # The simulation's worker threads step aside too (the draws of a background step).
        set_part_wrapper(Yielding.inherit)
        for space in state.every_space():
            watched = fingerprint(space.data.source)
            space.reload = ReloadStatus(every_seconds=every, watched=watched is not None,
                                        loaded_at=_now(), fingerprint=watched)
            if every > 0 and watched is None:
                log.warning("data %s is a database server: it is not watched for changes "
                            "(QUOTACAST_RELOAD_SECONDS applies to files and SQLite)",
                            space.data.source)

    def start(self) -> None:
        if not self.warm_up and self.every <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="quotacast-data-watcher",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        gc.unfreeze()  # what the warm-up kept is the collector's again

    def _warm(self, full: bool = True) -> Iterator[Callable[[], object]]:
        """The current period computed now; the steps to compute after it, when idle."""
        if not full:  # no warm-up asked: only the snapshot of the current period
            for space in self.state.every_space():
                if space.data.ok:
                    snapshot(space)
            return iter(())
        for space in self.state.every_space():
            space.reload.warmed_in = space.reload.warmed_more_in = None
        gc.unfreeze()  # a reload's old caches: their reference cycles are collectable again
        spent = warm(self.state)
        freeze_kept()
        for space in self.state.every_space():
            space.reload.warmed_in = round(spent, 3)
        log.info("current period computed in the background in %.1f s", spent)
        return self._more()

    def _more(self) -> Iterator[Callable[[], object]]:
        began = time.perf_counter()
        for space in self.state.every_space():
            yield from more_steps(space)
        spent = time.perf_counter() - began
        for space in self.state.every_space():
            space.reload.warmed_more_in = round(spent, 3)
        log.info("previous quarter and ready scenarios computed in the background in %.1f s "
                 "(paused %d times, %.1f s in all, for requests)", spent, self.yielding.pauses,
                 self.yielding.paused)

    def _check(self) -> bool:
        """Reload every workspace whose data changed; whether any did."""
        changed = False
        for space in self.state.every_space():
            try:
                changed |= reload_once(space, settle=min(1.0, self.every / 2))
            except Exception as exc:  # the watcher must keep watching
                log.warning("reload check of %s failed: %s", space.data.source,
                            str(exc).splitlines()[0][:200] if str(exc)
                            else type(exc).__name__)
        return changed

    def _run(self) -> None:
        steps: Iterator[Callable[[], object]] | None = self._warm(self.warm_up)
        due = time.monotonic() + self.every
        while not self._stop.is_set():
            if self.every > 0 and time.monotonic() >= due:
                if self._check() and not self._stop.is_set():
                    steps = self._warm(self.warm_up)  # the steps left were of the old data
                due = time.monotonic() + self.every
                continue
            if steps is None:  # nothing left but the clock
                if self.every <= 0:
                    return
                self._stop.wait(max(0.0, due - time.monotonic()))
                continue
            if not self.state.metrics.idle(QUIET_SECONDS):  # requests first
                self._stop.wait(0.05)
                continue
            self.yielding.install()  # the step steps aside while a request is answered
            try:
                step = next(steps, None)
                if step is not None:
                    step()
            finally:
                self.yielding.remove()
            freeze_kept()
            if step is None:
                steps = None
