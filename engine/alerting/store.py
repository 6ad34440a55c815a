"""Alert state, its full history, silences and the notification outbox, in a SQL database.

SQLAlchemy 2.0-style ORM over any URL (``sqlite:///quotacast.db`` by default, PostgreSQL by URL;
``QUOTACAST_DATABASE_URL``), opened by :mod:`engine.db` with the tables declared on its one
``Base``. Tables are created on first use and only portable types are used
(strings, floats, dates, timestamps, JSON), so the same code runs on SQLite and PostgreSQL.

Tables (prefixed ``warning_`` because the database is shared with the API keys):

- ``warning_alerts``: one row per (rule, label set): its current state and the dates that drive
  ``for`` and ``keep_firing_for``, the last value, rendered annotations, mute flags and what was
  last notified.
- ``warning_history``: one row per state change, never updated.
- ``warning_evaluations``: one row per (rule, as_of) evaluated: what makes evaluation idempotent
  and lets an earlier as_of be refused.
- ``warning_silences``: Alertmanager-like silences (matchers, window in as_of time, author,
  comment).
- ``warning_outbox``: notifications written in the same transaction as the state change they
  announce, then delivered by :mod:`engine.alerting.notify`, which keeps each message's retry
  schedule here (``status``, ``attempts``, ``next_attempt_at``).

Dates of alert state are as_of dates (the evaluation date); wall-clock timestamps (naive UTC) only
record when something was written and schedule delivery retries.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from engine.alerting.rules import Matcher, parse_matcher
from engine.db import Base, Workspaced, open_database

__all__ = [
    "ACTIVE_STATES",
    "FIRING",
    "NORMAL",
    "PENDING",
    "RESOLVED",
    "SEVERITY_ORDER",
    "STATES",
    "STATE_ORDER",
    "AlertInstance",
    "AlertRow",
    "AlertStore",
    "AlreadyEvaluated",
    "EvaluationRow",
    "HistoryRow",
    "OutboxMessage",
    "OutboxRow",
    "Silence",
    "SilenceRow",
    "Transition",
    "json_safe",
    "utcnow",
]

NORMAL, PENDING, FIRING, RESOLVED = "normal", "pending", "firing", "resolved"
STATES = (NORMAL, PENDING, FIRING, RESOLVED)
# What "active" alerts are: the ones a person may still need to look at.
ACTIVE_STATES = (PENDING, FIRING, RESOLVED)
# Worst first: the order alerts are listed in (CLI and service alike).
STATE_ORDER = {FIRING: 0, PENDING: 1, RESOLVED: 2, NORMAL: 3}
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
# An outbox message is pending (waiting for its next attempt), sending (claimed by a deliverer
# until its lease ends), delivered, or dead (given up; ``warnings deliver`` may still retry it).
OUTBOX_PENDING, OUTBOX_SENDING, OUTBOX_DELIVERED, OUTBOX_DEAD = (
    "pending", "sending", "delivered", "dead")


def utcnow() -> datetime:
    """Wall-clock now as naive UTC (the one convention for timestamps in these tables)."""
    return datetime.now(UTC).replace(tzinfo=None)


def json_safe(value: Any) -> Any:
    """A value JSON and both databases accept: numpy scalars unwrapped, NaN/inf -> None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | str):
        return value
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return value.isoformat()
    return None if _is_missing(value) else str(value)


def _is_missing(value: Any) -> bool:
    try:
        return bool(value != value)  # NaN, NaT, pd.NA
    except (TypeError, ValueError):
        return False


# --- plain values the engine works with --------------------------------------------------------


@dataclass
class AlertInstance:
    """One alert: a rule at one label set, with the dates its state machine needs.

    ``since`` is when it entered ``state``; ``active_at`` when the current breach began (the
    clock of ``for``); ``keep_firing_since`` the first evaluation that saw a firing alert's
    condition clear (the clock of ``keep_firing_for``). All are as_of dates.
    """

    rule: str
    fingerprint: str
    labels: dict[str, str]
    state: str = NORMAL
    since: date | None = None
    active_at: date | None = None
    fired_at: date | None = None
    resolved_at: date | None = None
    keep_firing_since: date | None = None
    last_eval_at: date | None = None
    value: float | None = None
    threshold: float | None = None
    op: str = ""
    severity: str = "warning"
    annotations: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    silenced_by: list[str] = field(default_factory=list)
    inhibited: bool = False
    notified_state: str | None = None
    last_notified_at: date | None = None

    @property
    def muted(self) -> bool:
        return bool(self.silenced_by) or self.inhibited


@dataclass(frozen=True)
class Transition:
    """A state change of one alert at one as_of."""

    rule: str
    fingerprint: str
    labels: dict[str, str]
    as_of: date
    from_state: str
    to_state: str
    value: float | None
    threshold: float | None
    message: str
    silenced: bool = False
    inhibited: bool = False


@dataclass(frozen=True)
class Silence:
    """Alertmanager-like silence: alerts matching all ``matchers`` are not notified while
    ``starts_at <= as_of < ends_at`` (as_of time) and it has not been expired."""

    id: str
    matchers: list[Matcher]
    starts_at: date
    ends_at: date
    created_by: str
    comment: str
    created_at: datetime | None = None
    expired_at: datetime | None = None

    def active_at(self, as_of: date) -> bool:
        return self.expired_at is None and self.starts_at <= as_of < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass
class OutboxMessage:
    """One notification to one destination (``kind`` webhook or file, ``target`` URL or path)."""

    dedup_key: str
    receiver: str
    kind: str
    target: str
    payload: dict[str, Any]
    as_of: date
    options: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    status: str = OUTBOX_PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    created_at: datetime | None = None


class AlreadyEvaluated(Exception):
    """Another evaluation recorded the same (rule, as_of) first (a concurrent run)."""


# --- the tables --------------------------------------------------------------------------------


class AlertRow(Workspaced, Base):
    __tablename__ = "warning_alerts"
    __table_args__ = (sa.UniqueConstraint("workspace", "rule", "fingerprint",
                                          name="uq_warning_alert"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(sa.String(200), index=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    labels: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    since: Mapped[date | None]
    active_at: Mapped[date | None]
    fired_at: Mapped[date | None]
    resolved_at: Mapped[date | None]
    keep_firing_since: Mapped[date | None]
    last_eval_at: Mapped[date | None]
    value: Mapped[float | None] = mapped_column(sa.Float)
    threshold: Mapped[float | None] = mapped_column(sa.Float)
    op: Mapped[str] = mapped_column(sa.String(4))
    severity: Mapped[str] = mapped_column(sa.String(16))
    annotations: Mapped[dict[str, Any]]
    details: Mapped[dict[str, Any]]
    message: Mapped[str] = mapped_column(sa.Text)
    silenced_by: Mapped[list[str]]
    inhibited: Mapped[bool]
    notified_state: Mapped[str | None] = mapped_column(sa.String(16))
    last_notified_at: Mapped[date | None]
    updated_at: Mapped[datetime]


class HistoryRow(Workspaced, Base):
    __tablename__ = "warning_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(sa.String(200), index=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    labels: Mapped[dict[str, Any]]
    as_of: Mapped[date]
    from_state: Mapped[str] = mapped_column(sa.String(16))
    to_state: Mapped[str] = mapped_column(sa.String(16))
    value: Mapped[float | None] = mapped_column(sa.Float)
    threshold: Mapped[float | None] = mapped_column(sa.Float)
    message: Mapped[str] = mapped_column(sa.Text)
    silenced: Mapped[bool]
    inhibited: Mapped[bool]
    recorded_at: Mapped[datetime]


class EvaluationRow(Workspaced, Base):
    __tablename__ = "warning_evaluations"

    workspace: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default="",
                                           server_default="")
    rule: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    as_of: Mapped[date] = mapped_column(primary_key=True)
    alerts: Mapped[int]
    evaluated_at: Mapped[datetime]


class SilenceRow(Workspaced, Base):
    __tablename__ = "warning_silences"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    matchers: Mapped[list[str]]
    starts_at: Mapped[date]
    ends_at: Mapped[date]
    created_by: Mapped[str] = mapped_column(sa.String(200))
    comment: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    expired_at: Mapped[datetime | None]


class OutboxRow(Workspaced, Base):
    __tablename__ = "warning_outbox"
    __table_args__ = (sa.UniqueConstraint("workspace", "dedup_key",
                                          name="uq_warning_outbox_dedup"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dedup_key: Mapped[str] = mapped_column(sa.String(64))
    receiver: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(16))
    target: Mapped[str] = mapped_column(sa.Text)
    options: Mapped[dict[str, Any]]
    payload: Mapped[dict[str, Any]]
    as_of: Mapped[date]
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


_TABLES = (AlertRow, HistoryRow, EvaluationRow, SilenceRow, OutboxRow)
_ALERT_FIELDS = [f.name for f in fields(AlertInstance)]
_OUTBOX_FIELDS = [f.name for f in fields(OutboxMessage)]


def _alert_of(row: AlertRow) -> AlertInstance:
    return AlertInstance(**{name: getattr(row, name) for name in _ALERT_FIELDS})


def _copy_alert(alert: AlertInstance, row: AlertRow) -> None:
    for name in _ALERT_FIELDS:
        value = getattr(alert, name)
        if name in ("labels", "annotations", "details", "silenced_by", "value", "threshold"):
            value = json_safe(value)
        setattr(row, name, value)


def _silence_of(row: SilenceRow) -> Silence:
    matchers = [parse_matcher(m, check=False) for m in row.matchers]
    return Silence(row.id, matchers, row.starts_at, row.ends_at, row.created_by, row.comment,
                   row.created_at, row.expired_at)


def _message_of(row: OutboxRow) -> OutboxMessage:
    return OutboxMessage(**{name: getattr(row, name) for name in _OUTBOX_FIELDS})


# --- the store ---------------------------------------------------------------------------------


class AlertStore:
    """The warning tables at one SQLAlchemy URL; tables are created on first use.

    The store reads and writes the rows of one ``workspace`` only (``''``: the default
    workspace, which holds the rows stored before workspaces).
    """

    def __init__(self, url: str, *, must_exist: bool = False, workspace: str = ""):
        self.url = url
        self.workspace = workspace
        self.engine, self._sessions = open_database(url, _TABLES, must_exist=must_exist,
                                                    workspace=workspace)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    def other_workspaces(self) -> dict[str, int]:
        """The other workspaces of this database holding alerts that are not normal, with how
        many (``''``: the default workspace): for messages that say where the alerts are."""
        table = AlertRow.__table__
        query = (sa.select(table.c.workspace, sa.func.count()).where(table.c.state != NORMAL)
                 .where(table.c.workspace != self.workspace).group_by(table.c.workspace)
                 .order_by(table.c.workspace))
        with self.engine.connect() as conn:
            return {str(space): int(count) for space, count in conn.execute(query)}

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed together, or not at all."""
        with self._sessions.begin() as session:
            yield session

    # --- reads ----------------------------------------------------------------------------------

    def last_evaluated(self, rules: Iterable[str]) -> dict[str, date]:
        """The latest as_of evaluated for each of ``rules`` (absent when never evaluated)."""
        names = list(rules)
        query = (sa.select(EvaluationRow.rule, sa.func.max(EvaluationRow.as_of))
                 .where(EvaluationRow.rule.in_(names)).group_by(EvaluationRow.rule))
        with self.transaction() as session:
            return {rule: as_of for rule, as_of in session.execute(query)}

    def alerts(self, rules: Iterable[str] | None = None, states: Iterable[str] | None = None
               ) -> list[AlertInstance]:
        """Alerts, optionally only of some rules and states, in a stable order."""
        query = sa.select(AlertRow).order_by(AlertRow.rule, AlertRow.fingerprint)
        if rules is not None:
            query = query.where(AlertRow.rule.in_(list(rules)))
        if states is not None:
            query = query.where(AlertRow.state.in_(list(states)))
        with self.transaction() as session:
            return [_alert_of(row) for row in session.scalars(query)]

    def history(self, rule: str | None = None, limit: int | None = None) -> list[Transition]:
        """State changes, newest first."""
        query = sa.select(HistoryRow).order_by(HistoryRow.as_of.desc(), HistoryRow.id.desc())
        if rule is not None:
            query = query.where(HistoryRow.rule == rule)
        if limit is not None:
            query = query.limit(limit)
        with self.transaction() as session:
            return [Transition(r.rule, r.fingerprint, r.labels, r.as_of, r.from_state, r.to_state,
                               r.value, r.threshold, r.message, r.silenced, r.inhibited)
                    for r in session.scalars(query)]

    # --- silences -------------------------------------------------------------------------------

    def add_silence(self, matchers: list[Matcher], starts_at: date, ends_at: date,
                    created_by: str, comment: str) -> Silence:
        """Record a silence; its id is a UUID, as in Alertmanager."""
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        if ends_at <= starts_at:
            raise ValueError(f"ends ({ends_at}) must be after starts ({starts_at})")
        row = SilenceRow(id=str(uuid.uuid4()), matchers=[str(m) for m in matchers],
                         starts_at=starts_at, ends_at=ends_at, created_by=created_by,
                         comment=comment, created_at=utcnow(), expired_at=None)
        with self.transaction() as session:
            session.add(row)
        return _silence_of(row)

    def silences(self, include_expired: bool = False) -> list[Silence]:
        """Silences, oldest first (expired ones only when asked)."""
        query = sa.select(SilenceRow).order_by(SilenceRow.created_at, SilenceRow.id)
        if not include_expired:
            query = query.where(SilenceRow.expired_at.is_(None))
        with self.transaction() as session:
            return [_silence_of(row) for row in session.scalars(query)]

    def expire_silence(self, silence_id: str) -> bool:
        """Expire a silence now (it stops applying at every as_of); False when unknown/expired."""
        with self.transaction() as session:
            row = session.get(SilenceRow, silence_id)
            if row is None or row.expired_at is not None:
                return False
            row.expired_at = utcnow()
            return True

    # --- the evaluation transaction -------------------------------------------------------------

    def commit_evaluation(self, as_of: date, evaluated: Mapping[str, int],
                          alerts: list[AlertInstance], transitions: list[Transition],
                          outgoing: list[OutboxMessage]) -> int:
        """Write one evaluation whole: alert states, history, outbox and evaluation markers.

        Returns:
            how many outbox rows were written (a message already there is not written twice).

        Raises:
            AlreadyEvaluated: another run recorded one of these (rule, as_of) first.
        """
        now = utcnow()
        try:
            with self.transaction() as session:
                done = session.scalars(sa.select(EvaluationRow.rule).where(
                    EvaluationRow.rule.in_(list(evaluated)), EvaluationRow.as_of == as_of)).all()
                if done:
                    raise AlreadyEvaluated(
                        f"already evaluated at {as_of}: {', '.join(sorted(done))}")
                self._save_alerts(session, alerts, now)
                session.add_all(_history_row(t, now) for t in transitions)
                written = self._add_outbox(session, outgoing, now)
                session.add_all(EvaluationRow(rule=rule, as_of=as_of, alerts=count,
                                              evaluated_at=now)
                                for rule, count in evaluated.items())
        except sa.exc.IntegrityError as exc:
            # A concurrent run inserted the same (rule, as_of) or alert first; ours is void.
            raise AlreadyEvaluated(f"a concurrent evaluation at {as_of} won: {exc.orig}") from exc
        return written

    @staticmethod
    def _save_alerts(session: Session, alerts: list[AlertInstance], now: datetime) -> None:
        rules = sorted({a.rule for a in alerts})
        existing = {(r.rule, r.fingerprint): r for r in session.scalars(
            sa.select(AlertRow).where(AlertRow.rule.in_(rules)))}
        for alert in alerts:
            row = existing.get((alert.rule, alert.fingerprint))
            if row is None:
                row = AlertRow()
                session.add(row)
            _copy_alert(alert, row)
            row.updated_at = now

    @staticmethod
    def _add_outbox(session: Session, outgoing: list[OutboxMessage], now: datetime) -> int:
        keys = [m.dedup_key for m in outgoing]
        known = set(session.scalars(sa.select(OutboxRow.dedup_key).where(
            OutboxRow.dedup_key.in_(keys))))
        fresh = [m for m in outgoing if m.dedup_key not in known]
        session.add_all(OutboxRow(
            dedup_key=m.dedup_key, receiver=m.receiver, kind=m.kind, target=m.target,
            options=json_safe(m.options), payload=json_safe(m.payload), as_of=m.as_of,
            status=OUTBOX_PENDING, attempts=0, next_attempt_at=now, last_error=None,
            created_at=now, delivered_at=None) for m in fresh)
        return len(fresh)

    # --- the outbox -----------------------------------------------------------------------------

    def claim_due(self, now: datetime, lease: timedelta, limit: int = 100) -> list[OutboxMessage]:
        """Take the messages whose time has come, counting the attempt and leasing them.

        Due: pending with ``next_attempt_at`` passed, or ``sending`` whose lease has run out (its
        deliverer died). Each is taken with a compare-and-set on (status, attempts,
        ``next_attempt_at``), so of two deliverers racing for a message exactly one gets it,
        on SQLite as on PostgreSQL; ``FOR UPDATE SKIP LOCKED`` also keeps PostgreSQL
        deliverers from waiting on each other. The lease pushes ``next_attempt_at`` forward: a
        crash while sending leaves the message to be retried once the lease runs out.
        """
        query = (sa.select(OutboxRow)
                 .where(OutboxRow.status.in_([OUTBOX_PENDING, OUTBOX_SENDING]),
                        OutboxRow.next_attempt_at <= now)
                 .order_by(OutboxRow.id).limit(limit).with_for_update(skip_locked=True))
        with self.transaction() as session:
            seen = [(row.id, row.status, row.attempts, row.next_attempt_at)
                    for row in session.scalars(query)]
            taken = []
            for message_id, status, attempts, due in seen:
                claimed = session.execute(
                    sa.update(OutboxRow)
                    .where(OutboxRow.id == message_id, OutboxRow.status == status,
                           OutboxRow.attempts == attempts, OutboxRow.next_attempt_at == due)
                    .values(status=OUTBOX_SENDING, attempts=attempts + 1,
                            next_attempt_at=now + lease)
                    .execution_options(synchronize_session=False))
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    taken.append(message_id)
            rows = session.scalars(sa.select(OutboxRow).where(OutboxRow.id.in_(taken))
                                   .order_by(OutboxRow.id)
                                   .execution_options(populate_existing=True))
            return [_message_of(row) for row in rows]

    def mark_delivered(self, message_id: int, now: datetime) -> bool:
        """Mark a message delivered, once: False when it already was (nothing changes)."""
        with self.transaction() as session:
            done = session.execute(
                sa.update(OutboxRow)
                .where(OutboxRow.id == message_id, OutboxRow.status != OUTBOX_DELIVERED)
                .values(status=OUTBOX_DELIVERED, delivered_at=now, last_error=None)
                .execution_options(synchronize_session=False))
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def mark_failed(self, message_id: int, error: str, retry_at: datetime | None,
                    attempts: int | None = None) -> bool:
        """Record a failed attempt: retry at ``retry_at``, or give up (dead) when None.

        Only while the message is still ``sending`` under this attempt (``attempts`` as
        claimed, when given): False, and nothing written, when it was delivered or claimed
        again meanwhile.
        """
        query = sa.update(OutboxRow).where(OutboxRow.id == message_id,
                                           OutboxRow.status == OUTBOX_SENDING)
        if attempts is not None:
            query = query.where(OutboxRow.attempts == attempts)
        values: dict[str, Any] = {"last_error": error[:2000]}
        if retry_at is None:
            values["status"] = OUTBOX_DEAD
        else:
            values.update(status=OUTBOX_PENDING, next_attempt_at=retry_at)
        with self.transaction() as session:
            done = session.execute(query.values(**values)
                                   .execution_options(synchronize_session=False))
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def reschedule(self, now: datetime, pending: bool = True, dead: bool = False) -> int:
        """Make pending messages (and dead ones, when asked) due at ``now``; how many.

        Messages being sent (``sending``) are left to their deliverer.
        """
        statuses = [s for s, wanted in ((OUTBOX_PENDING, pending), (OUTBOX_DEAD, dead))
                    if wanted]
        if not statuses:
            return 0
        with self.transaction() as session:
            done = session.execute(
                sa.update(OutboxRow).where(OutboxRow.status.in_(statuses))
                .values(status=OUTBOX_PENDING, next_attempt_at=now)
                .execution_options(synchronize_session=False))
            return int(done.rowcount)  # type: ignore[attr-defined]

    def next_attempt(self) -> datetime | None:
        """When the earliest pending message (or lease) is due (None when nothing is)."""
        with self.transaction() as session:
            return session.scalar(sa.select(sa.func.min(OutboxRow.next_attempt_at))
                                  .where(OutboxRow.status.in_([OUTBOX_PENDING,
                                                               OUTBOX_SENDING])))

    def outbox_counts(self) -> dict[str, int]:
        """How many outbox messages are in each status."""
        query = sa.select(OutboxRow.status, sa.func.count()).group_by(OutboxRow.status)
        with self.transaction() as session:
            return {status: int(count) for status, count in session.execute(query)}

    def outbox(self, status: str | None = None) -> list[OutboxMessage]:
        """Outbox messages in the order they were written."""
        query = sa.select(OutboxRow).order_by(OutboxRow.id)
        if status is not None:
            query = query.where(OutboxRow.status == status)
        with self.transaction() as session:
            return [_message_of(row) for row in session.scalars(query)]


def _history_row(t: Transition, now: datetime) -> HistoryRow:
    return HistoryRow(rule=t.rule, fingerprint=t.fingerprint, labels=json_safe(t.labels),
                      as_of=t.as_of, from_state=t.from_state, to_state=t.to_state,
                      value=json_safe(t.value), threshold=json_safe(t.threshold),
                      message=t.message, silenced=t.silenced, inhibited=t.inhibited,
                      recorded_at=now)
