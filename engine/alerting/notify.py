"""Delivery of the outbox: webhooks (JSON POST, Alertmanager-like payload) and JSON-lines files.

Retries follow Alertmanager's notify ``RetryStage``: exponential backoff with jitter until the
receiver answers, stopping early only when it refuses a message for good (an HTTP 4xx other than
408/429). Unlike Alertmanager, which retries in memory, the schedule lives in the outbox table
(``attempts``, ``next_attempt_at``), so retries survive the process: each :func:`deliver` call
sends what has fallen due, and the next call (the next ``warnings evaluate`` or ``warnings
deliver``) picks up the rest. Delays grow from minutes to hours (:class:`DeliveryPolicy`), and a
message is given up (``dead``) only once ``give_up_after`` (days by default) has passed since it
was queued; ``warnings deliver`` can still retry those.

Exactly once per message as far as this side can tell: a message is claimed with a
compare-and-set (status ``sending``, a lease), marked delivered at most once, and a delivered
message is never claimed again. Only a crash during the send itself (after the receiver got it,
before the mark) makes the message go out again when its lease ends; each payload carries its
``dedupKey`` for the receiver to drop such a repeat.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from engine.alerting.store import AlertStore, OutboxMessage, utcnow

__all__ = [
    "DeliveryError",
    "DeliveryPolicy",
    "DeliveryReport",
    "backoff",
    "deliver",
    "send",
]


class DeliveryError(Exception):
    """A failed send; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class DeliveryPolicy:
    """How the outbox is retried.

    Attributes:
        base_delay: delay before the first retry; multiplied by ``multiplier`` at each further
            failed attempt.
        multiplier: growth of the delay from one attempt to the next.
        max_delay: the longest delay between two attempts (before jitter).
        jitter: the delay is spread uniformly over +/- this fraction of itself, so receivers
            coming back are not hit by every message at once.
        give_up_after: how long after it was queued a message keeps being retried; after that
            its next failure marks it ``dead`` (``warnings deliver`` can still retry it).
        max_attempts: an optional cap on attempts per message (None: only ``give_up_after``).
        max_wait: how long one call waits for retries that fall due; messages due later stay
            pending for the next call.
        lease: how long a message being sent is hidden from other deliverers.
    """

    base_delay: timedelta = timedelta(minutes=1)
    multiplier: float = 2.0
    max_delay: timedelta = timedelta(hours=2)
    jitter: float = 0.25
    give_up_after: timedelta = timedelta(days=3)
    max_attempts: int | None = None
    max_wait: timedelta = timedelta(seconds=10)
    lease: timedelta = timedelta(seconds=60)


@dataclass
class DeliveryReport:
    """What one :func:`deliver` call did, and what is left undelivered after it.

    Attributes:
        delivered: messages delivered by this call.
        dead: messages this call gave up on.
        retried: failed attempts this call scheduled for a retry.
        pending: messages still waiting for a retry (or being sent by another deliverer).
        failed: every message given up on so far (``dead``), this call's included.
        next_attempt_at: when the earliest pending message is due (naive UTC).
        errors: what went wrong, one line per failed attempt that was given up.
    """

    delivered: int = 0
    dead: int = 0
    retried: int = 0
    pending: int = 0
    failed: int = 0
    next_attempt_at: datetime | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def undelivered(self) -> int:
        """Messages not delivered yet: pending ones and those given up."""
        return self.pending + self.failed


def backoff(attempts: int, policy: DeliveryPolicy, rng: random.Random | None = None
            ) -> timedelta:
    """Delay after the ``attempts``-th failed attempt: base x multiplier^(attempts-1), capped
    at ``max_delay``, then spread by +/- ``jitter`` when ``rng`` is given."""
    grown = policy.base_delay.total_seconds() * policy.multiplier ** min(max(attempts - 1, 0), 60)
    delay = timedelta(seconds=min(grown, policy.max_delay.total_seconds()))
    if rng is None or policy.jitter <= 0:
        return delay
    return delay * (1 + policy.jitter * (2 * rng.random() - 1))


def _post(url: str, payload: dict[str, Any], options: dict[str, Any],
          client: httpx.Client | None) -> None:
    headers = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
    timeout = float(options.get("timeout") or 10.0)
    try:
        if client is not None:
            response = client.post(url, json=payload, headers=headers, timeout=timeout)
        else:
            response = httpx.post(url, json=payload, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"POST {url}: {type(exc).__name__}: {exc}") from exc
    if response.is_success:
        return
    # Like Alertmanager: a 4xx is the receiver refusing the message, retrying will not help
    # (except for a timeout or rate limit); a 5xx may pass later.
    permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
    raise DeliveryError(f"POST {url}: HTTP {response.status_code}", permanent=permanent)


def _append(path: str, payload: dict[str, Any]) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(payload, ensure_ascii=False, sort_keys=True) + "\n")
    except OSError as exc:
        raise DeliveryError(f"append to {path}: {exc.strerror or exc}") from exc


def send(message: OutboxMessage, client: httpx.Client | None = None) -> None:
    """Send one message to its destination; :class:`DeliveryError` when it failed."""
    payload = {**message.payload, "dedupKey": message.dedup_key}
    if message.kind == "webhook":
        _post(message.target, payload, message.options, client)
    elif message.kind == "file":
        _append(message.target, payload)
    else:
        raise DeliveryError(f"unknown destination kind {message.kind!r}", permanent=True)


def _attempt(store: AlertStore, message: OutboxMessage, policy: DeliveryPolicy,
             report: DeliveryReport, now: datetime, client: httpx.Client | None,
             rng: random.Random, down: dict[str, DeliveryError]) -> None:
    """One attempt at ``message``; ``down`` holds the webhooks that failed earlier in this call,
    whose other messages are not sent (one timeout per receiver, not one per message) but
    rescheduled as failed attempts."""
    if message.id is None:
        raise ValueError("an outbox message must be stored before it is sent")
    try:
        if message.kind == "webhook" and message.target in down:
            raise DeliveryError(f"not sent, the receiver failed moments ago: "
                                f"{down[message.target]}")
        try:
            send(message, client)
        except DeliveryError as exc:
            if message.kind == "webhook" and not exc.permanent:
                down[message.target] = exc
            raise
    except DeliveryError as exc:
        retry_at = now + backoff(message.attempts, policy, rng)
        horizon = (message.created_at or now) + policy.give_up_after
        too_many = policy.max_attempts is not None and message.attempts >= policy.max_attempts
        last = exc.permanent or too_many or now >= horizon
        if not last:
            retry_at = min(retry_at, horizon)  # one last attempt at the horizon itself
        if not store.mark_failed(message.id, str(exc), None if last else retry_at,
                                 message.attempts):
            return  # delivered or taken over by another deliverer meanwhile
        if last:
            report.dead += 1
            why = "refused" if exc.permanent else "gave up"
            report.errors.append(f"{message.receiver} ({message.target}): {why} after "
                                 f"{message.attempts} attempt(s): {exc}")
        else:
            report.retried += 1
        return
    if store.mark_delivered(message.id, now):
        report.delivered += 1


def deliver(store: AlertStore, policy: DeliveryPolicy | None = None, *,
            clock: Callable[[], datetime] = utcnow,
            sleep: Callable[[float], None] = time.sleep,
            client: httpx.Client | None = None,
            rng: random.Random | None = None,
            now_all: bool = False,
            retry_failed: bool = False) -> DeliveryReport:
    """Send every outbox message that is due, retrying within ``policy.max_wait``.

    Args:
        now_all: make every pending message due now (a person saying the receiver is back),
            not only those whose retry time has come.
        retry_failed: also give the messages given up (``dead``) one more attempt.
        rng: the source of jitter (seeded in tests).

    Returns once nothing more falls due before ``max_wait`` has passed; the report says what is
    still undelivered.
    """
    policy = policy or DeliveryPolicy()
    rng = rng or random.Random()
    report = DeliveryReport()
    if now_all or retry_failed:
        store.reschedule(clock(), pending=now_all, dead=retry_failed)
    deadline = clock() + policy.max_wait
    while True:
        now = clock()
        claimed = store.claim_due(now, policy.lease)
        down: dict[str, DeliveryError] = {}
        for message in claimed:
            if message.next_attempt_at is not None and clock() >= message.next_attempt_at:
                # Slow receivers used up the lease: another deliverer may hold the message
                # now, so it is not sent from here (it is retried once the lease is over).
                continue
            _attempt(store, message, policy, report, clock(), client, rng, down)
        due = store.next_attempt()
        if due is None or due > deadline:
            break
        wait = (due - clock()).total_seconds()
        if wait > 0 or not claimed:
            # Never spin: a due message another deliverer holds locked is left a moment.
            sleep(max(wait, 0.05))
    counts = store.outbox_counts()
    report.pending = counts.get("pending", 0) + counts.get("sending", 0)
    report.failed = counts.get("dead", 0)
    report.next_attempt_at = store.next_attempt()
    return report
