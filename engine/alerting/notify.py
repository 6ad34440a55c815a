"""Delivery of the outbox: webhooks (JSON POST, Alertmanager-like payload) and JSON-lines files.

At least once: a message is leased, sent, then marked delivered; a crash between the state
write and the send, or during the send, leaves it pending and the next :func:`deliver` sends it
(so a receiver may see a message twice; each payload's ``groupKey`` + ``asOf`` + alert
fingerprints identify it for de-duplication). Failed attempts are retried with exponential
backoff up to ``max_attempts``; a message that still fails, or that a receiver refuses for good
(HTTP 4xx other than 408/429), is marked ``dead`` and reported.
"""

from __future__ import annotations

import json
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
    """Retries of one :func:`deliver` call.

    Attributes:
        max_attempts: attempts per message before it is marked dead.
        base_delay: delay before the first retry; doubled at each further attempt.
        max_delay: the longest delay between two attempts.
        max_wait: how long one call waits for retries that fall due; messages due later stay
            pending for the next call.
        lease: how long a message being sent is hidden from other deliverers.
    """

    max_attempts: int = 5
    base_delay: timedelta = timedelta(seconds=0.5)
    max_delay: timedelta = timedelta(seconds=60)
    max_wait: timedelta = timedelta(seconds=10)
    lease: timedelta = timedelta(seconds=60)


@dataclass
class DeliveryReport:
    """What one :func:`deliver` call did."""

    delivered: int = 0
    dead: int = 0
    retried: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)


def backoff(attempts: int, policy: DeliveryPolicy) -> timedelta:
    """Delay after the ``attempts``-th failed attempt: base x 2^(attempts-1), capped."""
    return min(policy.base_delay * (2 ** max(attempts - 1, 0)), policy.max_delay)


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
             report: DeliveryReport, now: datetime, client: httpx.Client | None) -> None:
    if message.id is None:
        raise ValueError("an outbox message must be stored before it is sent")
    try:
        send(message, client)
    except DeliveryError as exc:
        last = exc.permanent or message.attempts >= policy.max_attempts
        retry_at = None if last else now + backoff(message.attempts, policy)
        store.mark_failed(message.id, str(exc), retry_at)
        if last:
            report.dead += 1
            report.errors.append(f"{message.receiver} ({message.target}): gave up after "
                                 f"{message.attempts} attempt(s): {exc}")
        else:
            report.retried += 1
        return
    store.mark_delivered(message.id, now)
    report.delivered += 1


def deliver(store: AlertStore, policy: DeliveryPolicy | None = None, *,
            clock: Callable[[], datetime] = utcnow,
            sleep: Callable[[float], None] = time.sleep,
            client: httpx.Client | None = None) -> DeliveryReport:
    """Send every pending outbox message that is due, retrying within ``policy.max_wait``.

    Bounded: each message gets at most ``max_attempts`` attempts, and the call returns once
    nothing more falls due before ``max_wait`` has passed.
    """
    policy = policy or DeliveryPolicy()
    report = DeliveryReport()
    deadline = clock() + policy.max_wait
    while True:
        now = clock()
        claimed = store.claim_due(now, policy.lease)
        for message in claimed:
            _attempt(store, message, policy, report, now, client)
        due = store.next_attempt()
        if due is None or due > deadline:
            break
        wait = (due - clock()).total_seconds()
        if wait > 0 or not claimed:
            # Never spin: a due message another deliverer holds locked is left a moment.
            sleep(max(wait, 0.05))
    report.pending = len(store.outbox(status="pending"))
    return report
