"""A token bucket per API key, in memory.

Each key has a bucket of ``burst`` tokens refilled at ``rate_per_minute / 60`` tokens a second;
a request takes one token or is refused with the seconds until one is there (``Retry-After``).
In memory means per process: with several server processes each has its own buckets, which
is what a single-process ``quotacast serve`` needs; a shared limiter would live in a proxy.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TokenBucketLimiter"]


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBucketLimiter:
    """Token buckets keyed by a string (the key id).

    Args:
        rate_per_minute: average requests per minute allowed.
        burst: bucket size: requests allowed at once after a quiet spell.
        clock: monotonic seconds (injected by tests).
        max_keys: buckets kept at most; past it, the buckets that have refilled (which hold
            nothing a new bucket would not) are dropped, so keys an attacker makes up (client
            addresses) cannot grow memory without bound.
    """

    def __init__(self, rate_per_minute: float, burst: int,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        if rate_per_minute <= 0 or burst < 1:
            raise ValueError("rate_per_minute must be positive and burst at least 1")
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        # Sync routes run in a thread pool: two requests of one key may take a token at once.
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0 when granted, else the seconds to wait for one."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._prune(now)
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Drop the buckets full again by ``now``; the oldest half when none is (lock held)."""
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.stamp) * self.rate >= self.burst]
        if not full:
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k].stamp)
            full = by_age[: max(1, len(by_age) // 2)]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    @staticmethod
    def retry_after(wait: float) -> str:
        """``Retry-After`` header value: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(wait)))
