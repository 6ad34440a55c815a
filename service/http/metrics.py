"""Request counts and latencies in the Prometheus text format, hand-rolled.

Two families are enough for a dashboard and alerting on the service itself, and writing them
takes forty lines, not a dependency:

- ``quotacast_http_requests_total{method, route, status}``: a counter;
- ``quotacast_http_request_duration_seconds{method, route, status}``: a histogram.

``route`` is the route's path template (``/v1/customers/{customer_id}``), never the raw path,
so a scan of made-up URLs cannot grow the series without bound; unmatched paths count as
``unmatched``. Service gauges (ready, models served) are appended by the caller.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, TypeVar

from service.usecases.served import mark_background, waiters

T = TypeVar("T")
_GATE = threading.local()  # the Yielding installed on each thread

__all__ = ["BUCKETS", "RequestMetrics", "Yielding", "escape_label"]

# Seconds; from a cached lookup (ms) to a cold feasibility simulation (s).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def escape_label(value: str) -> str:
    """A label value as the text format wants it (backslash, quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape_label(value)}"' for name, value in pairs)


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class RequestMetrics:
    """Counters and latency histograms per (method, route, status), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[tuple[str, str, str], int] = defaultdict(int)
        self._hist: dict[tuple[str, str, str], list[int]] = {}
        self._sum: dict[tuple[str, str, str], float] = defaultdict(float)
        self._active = 0  # requests being answered now
        self._quiet_since = time.monotonic()  # when the last request was answered

    def begin(self) -> None:
        """A request started (:meth:`end` when it is answered)."""
        with self._lock:
            self._active += 1

    def end(self) -> None:
        """A request begun with :meth:`begin` was answered."""
        with self._lock:
            self._active = max(0, self._active - 1)
            self._quiet_since = time.monotonic()

    def busy(self) -> bool:
        """Whether a request is being answered now (no lock: read on every call of a
        background thread that yields to requests, :class:`Yielding`)."""
        return self._active > 0

    def idle(self, quiet: float = 0.0) -> bool:
        """Whether no request is being answered, nor was in the last ``quiet`` seconds (the
        background warm-up starts its next step only then)."""
        with self._lock:
            return self._active == 0 and time.monotonic() - self._quiet_since >= quiet

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        key = (method, route, str(status))
        with self._lock:
            self._count[key] += 1
            counts = self._hist.setdefault(key, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._sum[key] += seconds

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Requests so far per (method, route, status)."""
        with self._lock:
            return dict(self._count)

    def render(self) -> str:
        """The text exposition of both families."""
        with self._lock:
            lines = [
                "# HELP quotacast_http_requests_total HTTP requests by method, route and status.",
                "# TYPE quotacast_http_requests_total counter",
            ]
            for (method, route, status), n in sorted(self._count.items()):
                labels = _labels([("method", method), ("route", route), ("status", status)])
                lines.append(f"quotacast_http_requests_total{{{labels}}} {n}")
            lines += [
                "# HELP quotacast_http_request_duration_seconds HTTP request latency.",
                "# TYPE quotacast_http_request_duration_seconds histogram",
            ]
            for (method, route, status), counts in sorted(self._hist.items()):
                base = [("method", method), ("route", route), ("status", status)]
                for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                    le = "+Inf" if bound == float("inf") else _number(bound)
                    lines.append("quotacast_http_request_duration_seconds_bucket{"
                                 f"{_labels([*base, ('le', le)])}}} {n}")
                lines.append(f"quotacast_http_request_duration_seconds_sum{{{_labels(base)}}} "
                             f"{self._sum[(method, route, status)]:.6f}")
                lines.append(f"quotacast_http_request_duration_seconds_count{{{_labels(base)}}} "
                             f"{counts[-1]}")
        return "\n".join(lines) + "\n"


class Yielding:
    """Makes a background thread step aside while a request is being answered.

    Installed on the thread itself (:meth:`install`), it stops the thread at its next Python
    function call while :meth:`RequestMetrics.busy` and sleeps (the GIL released) until the
    request is answered, so a page asked while the warm-up simulates another period has the
    interpreter to itself instead of sharing it in 5 ms turns. Never while a thread waits for
    a value being computed (:func:`service.usecases.served.waiters`: the request may wait for
    this very thread), and never longer than ``longest`` seconds at once (the thread may hold
    a lock the request needs); after such a pause it runs ``grace`` seconds before pausing
    again.

    Attributes:
        paused: seconds spent paused so far.
        pauses: how many times it paused.
    """

    def __init__(self, metrics: RequestMetrics, longest: float = 0.5, grace: float = 0.05,
                 step: float = 0.002):
        self.metrics = metrics
        self.longest = longest
        self.grace = grace
        self.step = step
        self.paused = 0.0
        self.pauses = 0
        self._free_until = 0.0

    def install(self) -> None:
        """Start yielding on the calling thread (a trace hook: calls only, no line events);
        the thread counts as background work (:func:`service.usecases.served.mark_background`).
        """
        _GATE.gate = self
        mark_background(True)
        sys.settrace(self._trace)

    def remove(self) -> None:
        """Stop yielding on the calling thread."""
        sys.settrace(None)
        mark_background(False)
        _GATE.gate = None

    @staticmethod
    def inherit(compute: Callable[[], T]) -> Callable[[], T]:
        """``compute`` to run on another thread: yielding as the calling thread does (work a
        background step hands to a pool yields too), else as it is."""
        gate: Yielding | None = getattr(_GATE, "gate", None)
        if gate is None:
            return compute

        def run() -> T:
            assert gate is not None
            gate.install()
            try:
                return compute()
            finally:
                gate.remove()

        return run

    def _trace(self, frame: FrameType, event: str, arg: Any) -> None:
        if self.metrics.busy():
            self._pause()

    def _pause(self) -> None:
        began = time.monotonic()
        if began < self._free_until or waiters():
            return
        until = began + self.longest
        now = began
        while self.metrics.busy() and not waiters() and now < until:
            time.sleep(self.step)
            now = time.monotonic()
        if now >= until:
            self._free_until = now + self.grace
        self.paused += now - began
        self.pauses += 1
