"""The warm-up's rest in a process of its own, at the lowest OS priority (issue 18).

After the current period's pages (computed in this process: their first views wait for them
anyway, :func:`service.http.reload.warm`), what the warm-up computes ahead at the lowest
priority (the previous quarter and the ready scenarios: :func:`service.http.reload.more_steps`)
is computed by a child process started with ``spawn`` that lowers its own priority
(:data:`NICE`), loads the same data and the same models and computes the same steps with the
same code. After each step it sends what the step added to the caches a board page reads
(:func:`caches`: the simulations, the board's values, the product/segment/channel nodes), each
value pickled on its own; this process copies them into its caches
(:meth:`service.usecases.served.Memo.offer`) one value at a time, only while no request is
being answered, so a page asked meanwhile never shares the interpreter with a simulation nor
waits for more than one value's copy, and finds the values as if they had been computed here
(the same keys and values: pickling is exact).

What is cached here already (or being computed for a request) is kept, never replaced; the
child skips what this process held when it started. When the data the child loads is not the
data served here (it changed meanwhile), when it fails or dies, or when a process cannot start,
the rest is computed in this process instead (:class:`service.http.reload.DataWatcher`'s
thread that steps aside for requests).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import time
from collections.abc import Hashable
from multiprocessing.connection import Connection
from typing import Any, Literal

from engine.config import Settings
from service.http.config import ServiceSettings
from service.http.state import AppState, Fingerprint

__all__ = ["NICE", "WarmProcess", "caches", "held"]

log = logging.getLogger("quotacast.service")

# The child's niceness: it gets a CPU only when nothing of ordinary priority wants it.
NICE = 19

Outcome = Literal["step", "waiting", "done", "failed"]
# One step's new values: (cache name, key, pickled value).
Batch = list[tuple[str, Hashable, bytes]]


def caches(state: AppState) -> dict[str, Any]:
    """The caches a board page reads, by a name the same in both processes: the board's
    values, the product/segment/channel nodes being or done simulated, and each workspace's
    simulations and scores."""
    from service.http.dashboard import _BACKGROUND, _BOARD

    out: dict[str, Any] = {"board": _BOARD, "dimensions": _BACKGROUND}
    for space in state.every_space():
        out[f"feasibility {space.name}"] = space.feasibility_cache
        out[f"scores {space.name}"] = space.scores_cache
    return out


def held(cache: Any) -> list[tuple[Hashable, Any]]:
    """The keys and values a cache holds (a Memo's values, a Background's done ones)."""
    from service.http.dashboard import Background

    return cache.done() if isinstance(cache, Background) else cache.items()


def _known(state: AppState) -> dict[str, set[Hashable]]:
    return {name: {key for key, _ in held(cache)} for name, cache in caches(state).items()}


def _lowest_priority() -> None:
    """This process (and the threads it starts) at the lowest priority: niceness :data:`NICE`
    and, on Linux, the idle scheduling class (a CPU only when nothing else wants it, and
    preempted at once when a request's thread wakes up)."""
    with contextlib.suppress(OSError):
        os.nice(NICE)
    idle = getattr(os, "SCHED_IDLE", None)
    if idle is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, idle, os.sched_param(0))


def _context() -> Any:
    """How the child is started: ``spawn`` (a fresh interpreter: no copy of this process's
    threads and locks, which ``fork`` would copy mid-request)."""
    return multiprocessing.get_context("spawn")


def _new(found: dict[str, Any], sent: dict[str, set[Hashable]]) -> Batch:
    """What the caches hold that was not sent yet (and is now marked sent)."""
    out: Batch = []
    for name, cache in found.items():
        seen = sent.setdefault(name, set())
        for key, value in held(cache):
            if key not in seen:
                seen.add(key)
                out.append((name, key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)))
    return out


def _child(conn: Connection, settings: Settings, options: ServiceSettings, sources: list[str],
           fingerprints: list[Fingerprint | None], known: dict[str, set[Hashable]]) -> None:
    """The child process: load, compute every rest step, send each step's new values, then
    ``("done", seconds)``; ``("failed", why)`` when it cannot."""
    _lowest_priority()
    state: AppState | None = None
    try:
        import service.http.app  # noqa: F401  (the routes first: the modules' import order)
        from service.http.reload import fingerprint, more_steps
        from service.http.state import build_state

        began = time.perf_counter()
        logging.disable(logging.WARNING)  # the service said what loading finds already
        try:
            state = build_state(settings, options, sources=sources)
        finally:
            logging.disable(logging.NOTSET)
        spaces = state.every_space()
        now = [fingerprint(space.data.source) for space in spaces]
        if now != fingerprints:
            raise RuntimeError("the data changed since the service loaded it")
        found = caches(state)
        sent = {name: set(keys) for name, keys in known.items()}
        for space in spaces:
            for step in more_steps(space):
                step()
                conn.send_bytes(pickle.dumps(("step", _new(found, sent))))
        conn.send_bytes(pickle.dumps(("done", time.perf_counter() - began)))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send_bytes(pickle.dumps(("failed", str(exc).splitlines()[0][:200] if str(exc)
                                          else type(exc).__name__)))
    finally:
        conn.close()
        if state is not None:
            state.close()


class WarmProcess:
    """The child process computing the warm-up's rest, and the copying of its values here."""

    def __init__(self, state: AppState):
        self.state = state
        self.copied = 0  # values copied into this process's caches
        self.offered = 0  # values received (those held here already are not copied)
        self.failed: str | None = None
        self.seconds: float | None = None  # the child's time from its start to done
        self._conn: Connection | None = None
        self._left: Batch = []  # received, not copied yet (a request came)
        self._process: Any = None
        self._caches = caches(state)

    def start(self) -> bool:
        """Start the child; False (and why, logged) when a process cannot start."""
        spaces = self.state.every_space()
        pipe: tuple[Connection, Connection] | None = None
        try:
            context = _context()
            pipe = ours, theirs = context.Pipe(duplex=False)
            process = context.Process(
                target=_child, name="quotacast-warm-up", daemon=True,
                args=(theirs, self.state.settings, self.state.options,
                      [s.data.source for s in spaces], [s.reload.fingerprint for s in spaces],
                      _known(self.state)))
            process.start()
        except Exception as exc:  # no process here (a sandbox, no /dev/shm...): in-process
            self.failed = f"the warm-up's process could not start: {exc}"
            log.warning("%s; its rest is computed in the service's process", self.failed)
            for end in pipe or ():
                end.close()
            return False
        theirs.close()
        self._conn, self._process = ours, process
        return True

    def take(self, wait: float) -> Outcome:
        """Copy one step's values into this process's caches when one comes within ``wait``
        seconds: ``"step"`` (also when a request came in the middle: the rest of the step's
        values are copied at the next call); ``"waiting"``: none came; ``"done"``: the child
        finished; ``"failed"``: it failed or died (:attr:`failed` says why)."""
        if self._left:
            return self._copy()
        if self._conn is None:
            return "failed" if self.failed else "done"
        try:
            if not self._conn.poll(wait):
                if self._process is not None and not self._process.is_alive() \
                        and not self._conn.poll(0):
                    return self._fail(f"the warm-up's process ended (exit code "
                                      f"{self._process.exitcode})")
                return "waiting"
            kind, payload = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as exc:
            return self._fail(f"the warm-up's process ended: {exc or type(exc).__name__}")
        if kind == "failed":
            return self._fail(str(payload))
        if kind == "done":
            self.seconds = float(payload)
            self.stop()
            return "done"
        self._left = list(reversed(payload))
        return self._copy()

    def _copy(self) -> Outcome:
        """Copy the values received, one at a time, until a request is being answered."""
        while self._left and self.state.metrics.idle():
            name, key, value = self._left.pop()
            cache = self._caches.get(name)
            self.offered += 1
            if cache is not None and cache.offer(key, pickle.loads(value)):
                self.copied += 1
        return "step"

    def _fail(self, why: str) -> Outcome:
        self.failed = why
        self.stop()
        return "failed"

    def stop(self) -> None:
        """End the child (when still running) and close the pipe."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.terminate()
            self._process.join(5)
            self._process = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
