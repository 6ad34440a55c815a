"""Delivery that never loses a notification: backoff from minutes to hours, a horizon of days,
exactly one delivery per message, and retries of failed messages by ``warnings deliver``.

Time is a fake clock handed to :func:`deliver` (its ``sleep`` moves the clock), the receiver an
``httpx.MockTransport`` that fails while the outage lasts: nothing really sleeps. Each test runs
on SQLite, and on PostgreSQL where ``QUOTACAST_TEST_POSTGRES_URL`` is set (as in
tests/test_warnings_store.py: skipped locally without it, failing under CI).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import date, datetime, timedelta

import httpx

from engine.alerting.notify import DeliveryPolicy, backoff, deliver
from engine.alerting.store import AlertStore, OutboxMessage, utcnow

URL = "http://receiver.test/hook"
AS_OF = date(2026, 11, 16)


class Clock:
    """A wall clock the test moves; ``sleep`` advances it."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Receiver:
    """A webhook that is down (connection refused, then HTTP 503) until ``back_at``."""

    def __init__(self, clock: Clock, back_at: datetime):
        self.clock, self.back_at = clock, back_at
        self.received: Counter[str] = Counter()
        self.refused = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        now = self.clock()
        if now < self.back_at:
            self.refused += 1
            if self.refused % 2:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(503)
        body = httpx.Response(200, content=request.content).json()
        self.received[body["dedupKey"]] += 1
        return httpx.Response(200)




def _queue(store: AlertStore, count: int, url: str = URL) -> list[str]:
    keys = [f"message-{k}" for k in range(count)]
    messages = [OutboxMessage(key, "ops", "webhook", url, {"groupKey": key}, AS_OF)
                for key in keys]
    assert store.commit_evaluation(AS_OF, {}, [], [], messages) == count
    return keys


def test_webhook_down_for_30_minutes_then_back_delivers_every_notification_exactly_once(
        store: AlertStore) -> None:
    keys = _queue(store, 6)
    clock = Clock(utcnow())
    receiver = Receiver(clock, back_at=clock() + timedelta(minutes=30))
    client = httpx.Client(transport=httpx.MockTransport(receiver.handle))
    rng = random.Random(15)
    reports = []
    # `warnings evaluate` (or a cron's `warnings deliver`) every 5 minutes for 4 hours.
    for _ in range(48):
        reports.append(deliver(store, DeliveryPolicy(), clock=clock, sleep=clock.sleep,
                               client=client, rng=rng))
        clock.sleep(5 * 60)
    assert receiver.refused > 0
    assert dict(receiver.received) == dict.fromkeys(keys, 1)
    assert {m.status for m in store.outbox()} == {"delivered"}
    assert reports[0].undelivered == 6 and reports[0].dead == 0
    assert all(r.dead == 0 for r in reports) and reports[-1].undelivered == 0
    delivered_at = max(m.delivered_at for m in store.outbox() if m.delivered_at)
    # Back within one capped delay (plus jitter) of the receiver's return.
    assert delivered_at - receiver.back_at <= timedelta(minutes=40)


def test_one_long_deliver_call_rides_out_the_outage(store: AlertStore) -> None:
    keys = _queue(store, 3)
    clock = Clock(utcnow())
    receiver = Receiver(clock, back_at=clock() + timedelta(minutes=30))
    client = httpx.Client(transport=httpx.MockTransport(receiver.handle))
    policy = DeliveryPolicy(max_wait=timedelta(hours=3))
    report = deliver(store, policy, clock=clock, sleep=clock.sleep, client=client,
                     rng=random.Random(1))
    assert (report.delivered, report.undelivered, report.dead) == (3, 0, 0)
    assert dict(receiver.received) == dict.fromkeys(keys, 1)
    # Minutes apart, not seconds: about log2(30) attempts each during the outage.
    assert all(m.attempts <= 8 for m in store.outbox())


def test_backoff_grows_from_minutes_to_hours_with_jitter() -> None:
    policy = DeliveryPolicy()
    plain = [backoff(n, policy).total_seconds() / 60 for n in range(1, 10)]
    assert plain == [1, 2, 4, 8, 16, 32, 64, 120, 120]
    rng = random.Random(3)
    spread = {backoff(4, policy, rng).total_seconds() for _ in range(50)}
    assert len(spread) > 40 and min(spread) >= 8 * 60 * 0.75 and max(spread) <= 8 * 60 * 1.25


def test_a_short_outage_is_never_given_up(store: AlertStore) -> None:
    """The finding: five attempts fitted in the 10 s wait and the message was dead for good."""
    _queue(store, 1)
    clock = Clock(utcnow())
    down = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    report = deliver(store, DeliveryPolicy(), clock=clock, sleep=clock.sleep, client=down)
    assert (report.dead, report.pending, report.retried) == (0, 1, 1)
    (message,) = store.outbox()
    assert message.status == "pending" and message.next_attempt_at is not None
    assert message.next_attempt_at - clock() >= timedelta(seconds=45)


def test_given_up_only_after_the_horizon_then_retried_by_deliver(store: AlertStore) -> None:
    _queue(store, 1)
    clock = Clock(utcnow())
    calls: list[str] = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(str(clock()))
        return httpx.Response(502)

    client = httpx.Client(transport=httpx.MockTransport(down))
    policy = DeliveryPolicy(give_up_after=timedelta(days=2), max_wait=timedelta(days=5))
    report = deliver(store, policy, clock=clock, sleep=clock.sleep, client=client,
                     rng=random.Random(2))
    assert (report.dead, report.failed, report.pending) == (1, 1, 0)
    assert "gave up after" in report.errors[0] and "HTTP 502" in report.errors[0]
    (message,) = store.outbox()
    assert message.created_at is not None
    assert clock() - message.created_at >= timedelta(days=2)
    assert 20 < len(calls) < 40  # hourly-ish for two days, not a burst
    # The receiver is repaired: `warnings deliver` retries what was given up.
    received: list[bytes] = []
    up = httpx.Client(transport=httpx.MockTransport(
        lambda r: received.append(r.content) or httpx.Response(200)))
    assert deliver(store, policy, clock=clock, sleep=clock.sleep, client=up).delivered == 0
    again = deliver(store, policy, clock=clock, sleep=clock.sleep, client=up, retry_failed=True)
    assert (again.delivered, again.undelivered, len(received)) == (1, 0, 1)


def test_a_delivered_message_is_never_sent_again(store: AlertStore) -> None:
    _queue(store, 2)
    clock = Clock(utcnow())
    sent: Counter[str] = Counter()

    def ok(request: httpx.Request) -> httpx.Response:
        sent[httpx.Response(200, content=request.content).json()["dedupKey"]] += 1
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(ok))
    for _ in range(3):
        deliver(store, DeliveryPolicy(), clock=clock, sleep=clock.sleep, client=client,
                now_all=True, retry_failed=True)
        clock.sleep(3600)
    assert set(sent.values()) == {1}
    (first, _) = store.outbox()
    assert first.id is not None
    assert store.mark_delivered(first.id, clock()) is False  # idempotent marking
    assert store.reschedule(clock(), pending=True, dead=True) == 0


def test_two_deliverers_never_send_the_same_message(db_url: str) -> None:
    one, two = AlertStore(db_url), AlertStore(db_url)
    _queue(one, 4)
    now = utcnow()
    taken = one.claim_due(now, timedelta(minutes=1))
    assert len(taken) == 4 and two.claim_due(now, timedelta(minutes=1)) == []
    # The first deliverer stalls past its lease; the second takes over and delivers.
    later = now + timedelta(minutes=2)
    again = two.claim_due(later, timedelta(minutes=1))
    assert [m.id for m in again] == [m.id for m in taken]
    for message in again:
        assert message.id is not None and two.mark_delivered(message.id, later)
    # The stalled one's verdicts change nothing: no retry, no second delivery.
    for message in taken:
        assert message.id is not None
        assert not one.mark_failed(message.id, "HTTP 503", later, message.attempts)
        assert not one.mark_delivered(message.id, later)
    assert {m.status for m in one.outbox()} == {"delivered"}
    assert one.claim_due(later + timedelta(days=1), timedelta(minutes=1)) == []
    one.close()
    two.close()


def test_a_receiver_refusal_is_given_up_at_once(store: AlertStore) -> None:
    _queue(store, 1)
    clock = Clock(utcnow())
    refuse = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    report = deliver(store, DeliveryPolicy(), clock=clock, sleep=clock.sleep, client=refuse)
    assert (report.dead, report.failed) == (1, 1) and "refused after 1" in report.errors[0]


def test_deliverers_running_at_once_send_each_message_once(db_url: str) -> None:
    stores = [AlertStore(db_url) for _ in range(3)]
    keys = _queue(stores[0], 30)
    received: Counter[str] = Counter()
    lock = threading.Lock()

    def ok(request: httpx.Request) -> httpx.Response:
        key = httpx.Response(200, content=request.content).json()["dedupKey"]
        with lock:
            received[key] += 1
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(ok))
    reports: list[int] = []

    def run(store: AlertStore) -> None:
        reports.append(deliver(store, DeliveryPolicy(max_wait=timedelta(0)), client=client,
                               now_all=True).delivered)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert dict(received) == dict.fromkeys(keys, 1) and sum(reports) == 30
    for store in stores:
        store.close()


def test_a_receiver_that_is_down_costs_one_attempt_per_run_not_one_per_message(
        store: AlertStore) -> None:
    _queue(store, 5)
    other = _queue_more(store, "http://other.test/hook")
    clock = Clock(utcnow())
    tried: Counter[str] = Counter()

    def handle(request: httpx.Request) -> httpx.Response:
        tried[request.url.host] += 1
        if request.url.host == "receiver.test":
            raise httpx.ConnectTimeout("timed out", request=request)
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(handle))
    report = deliver(store, DeliveryPolicy(), clock=clock, sleep=clock.sleep, client=client)
    assert dict(tried) == {"receiver.test": 1, "other.test": 1}
    assert (report.delivered, report.retried, report.pending) == (1, 5, 5)
    assert {m.status for m in store.outbox() if m.dedup_key != other} == {"pending"}


def test_sends_that_outlast_the_lease_are_left_to_the_next_deliverer(store: AlertStore) -> None:
    keys = _queue(store, 3)
    clock = Clock(utcnow())
    received: Counter[str] = Counter()

    def slow(request: httpx.Request) -> httpx.Response:
        clock.sleep(70)  # longer than the 60 s lease
        received[httpx.Response(200, content=request.content).json()["dedupKey"]] += 1
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(slow))
    policy = DeliveryPolicy(max_wait=timedelta(0))
    first = deliver(store, policy, clock=clock, sleep=clock.sleep, client=client)
    assert first.delivered == 1 and first.pending == 2
    for _ in range(3):
        deliver(store, policy, clock=clock, sleep=clock.sleep, client=client)
    assert dict(received) == dict.fromkeys(keys, 1)


def _queue_more(store: AlertStore, url: str) -> str:
    message = OutboxMessage("other-0", "ops", "webhook", url, {"groupKey": "other"}, AS_OF)
    store.commit_evaluation(AS_OF, {}, [], [], [message])
    return message.dedup_key
