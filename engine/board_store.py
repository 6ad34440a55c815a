"""The board's tables in the quotacast database: feasibility snapshots and submitted commits.

The same database, workspace scoping and conventions as the alert store
(:mod:`engine.alerting.store`): SQLAlchemy 2.0 ORM on the one :class:`engine.db.Base`, tables
created on first use, portable types only (SQLite by default, PostgreSQL by URL).

- ``board_snapshots``: one row per (workspace, period, as_of, level, key): a node's feasibility
  (target, closed to date, P10/P50/P90, P(attain), must-hit, stretch, expected...) as computed
  on that as_of. Writing the snapshot of a (period, as_of) again replaces the rows of the nodes
  it holds (idempotent: an evaluation run twice leaves one row per node).
- ``board_commits``: every commit or best case submitted for a node and period, never updated
  (the latest submission of a (period, level, key, category) is the one that counts).

``as_of`` is a data date (only rows dated before it were used); ``written_at`` and
``submitted_at`` are wall-clock timestamps (naive UTC).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from engine.alerting.store import utcnow
from engine.db import Base, Workspaced, WorkspaceSession, open_database

__all__ = [
    "COMMIT_FIELDS",
    "SNAPSHOT_FIELDS",
    "SNAPSHOT_NUMBERS",
    "BoardStore",
    "CommitRecord",
    "CommitRow",
    "SnapshotRow",
    "finite_number",
]

# The numbers a snapshot keeps per node (feasibility's vocabulary, models.feasibility).
SNAPSHOT_NUMBERS = ("target", "closed_to_date", "p10", "p50", "p90", "p_attain", "must_hit",
                    "stretch", "expected", "expected_pipeline", "pipeline_in_period")
SNAPSHOT_FIELDS = ("period", "as_of", "level", "key", *SNAPSHOT_NUMBERS, "source",
                   "written_at")
COMMIT_FIELDS = ("id", "period", "level", "key", "category", "amount", "submitted_by",
                 "submitted_at", "as_of", "note")


class SnapshotRow(Workspaced, Base):
    __tablename__ = "board_snapshots"
    __table_args__ = (sa.UniqueConstraint("workspace", "period", "as_of", "level", "key",
                                          name="uq_board_snapshot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(sa.String(16), index=True)
    as_of: Mapped[date] = mapped_column(index=True)
    level: Mapped[str] = mapped_column(sa.String(64))
    key: Mapped[str] = mapped_column(sa.String(200))
    target: Mapped[float | None] = mapped_column(sa.Float)
    closed_to_date: Mapped[float | None] = mapped_column(sa.Float)
    p10: Mapped[float | None] = mapped_column(sa.Float)
    p50: Mapped[float | None] = mapped_column(sa.Float)
    p90: Mapped[float | None] = mapped_column(sa.Float)
    p_attain: Mapped[float | None] = mapped_column(sa.Float)
    must_hit: Mapped[float | None] = mapped_column(sa.Float)
    stretch: Mapped[float | None] = mapped_column(sa.Float)
    expected: Mapped[float | None] = mapped_column(sa.Float)
    expected_pipeline: Mapped[float | None] = mapped_column(sa.Float)
    pipeline_in_period: Mapped[float | None] = mapped_column(sa.Float)
    source: Mapped[str] = mapped_column(sa.String(32))
    written_at: Mapped[datetime]


class CommitRow(Workspaced, Base):
    __tablename__ = "board_commits"

    id: Mapped[int] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(sa.String(16), index=True)
    level: Mapped[str] = mapped_column(sa.String(64))
    key: Mapped[str] = mapped_column(sa.String(200))
    category: Mapped[str] = mapped_column(sa.String(16))
    amount: Mapped[float] = mapped_column(sa.Float)
    submitted_by: Mapped[str] = mapped_column(sa.String(200))
    submitted_at: Mapped[datetime] = mapped_column(index=True)
    as_of: Mapped[date | None]
    note: Mapped[str] = mapped_column(sa.Text, default="")


_TABLES = (SnapshotRow, CommitRow)


@dataclass(frozen=True)
class CommitRecord:
    """One submission, as stored."""

    id: int
    period: str
    level: str
    key: str
    category: str
    amount: float
    submitted_by: str
    submitted_at: datetime
    as_of: date | None
    note: str


def finite_number(value: Any) -> float | None:
    """A float both databases accept (None for missing, NaN or inf)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _day(value: Any) -> date:
    return pd.Timestamp(value).date()


class BoardStore:
    """The board tables of one workspace at one SQLAlchemy URL (or on an open engine).

    Args:
        url: the database URL (``QUOTACAST_DATABASE_URL``); or
        engine: an engine already open on the quotacast database (the alert store's), so that
            the board shares its connections (and an in-memory database).
        must_exist: a read: a SQLite file that does not exist is an error, not created.
        workspace: the workspace whose rows are read and written (``''``: the default).
    """

    def __init__(self, url: str | None = None, *, engine: sa.Engine | None = None,
                 must_exist: bool = False, workspace: str = ""):
        self.workspace = workspace
        self._owns_engine = engine is None
        if engine is None:
            if url is None:
                raise ValueError("a database URL or an engine is needed")
            self.engine, self._sessions = open_database(url, _TABLES, must_exist=must_exist,
                                                        workspace=workspace)
        else:
            Base.metadata.create_all(engine, tables=[m.__table__ for m in _TABLES])  # type: ignore[misc]
            self.engine = engine
            self._sessions = sessionmaker(engine, expire_on_commit=False,
                                          class_=WorkspaceSession,
                                          info={"workspace": workspace})

    def close(self) -> None:
        """Release the connections (only those this store opened)."""
        if self._owns_engine:
            self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed together, or not at all."""
        with self._sessions.begin() as session:
            yield session

    # --- snapshots ------------------------------------------------------------------------------

    def write_snapshots(self, rows: Iterable[Mapping[str, Any]], source: str,
                        now: datetime | None = None) -> int:
        """Store snapshot rows (``period, as_of, level, key`` and :data:`SNAPSHOT_NUMBERS`);
        a row of the same (period, as_of, level, key) is replaced. How many were written."""
        now = now or utcnow()
        chosen: dict[tuple[str, date, str, str], dict[str, Any]] = {}
        for row in rows:
            node = (str(row["period"]), _day(row["as_of"]), str(row["level"]), str(row["key"]))
            chosen[node] = {name: finite_number(row.get(name)) for name in SNAPSHOT_NUMBERS}
        if not chosen:
            return 0
        with self.transaction() as session:
            groups: dict[tuple[str, date], list[tuple[str, str]]] = {}
            for period, as_of, level, key in chosen:
                groups.setdefault((period, as_of), []).append((level, key))
            for (period, as_of), nodes in groups.items():
                for start in range(0, len(nodes), 400):
                    part = nodes[start:start + 400]
                    session.execute(
                        sa.delete(SnapshotRow)
                        .where(SnapshotRow.period == period, SnapshotRow.as_of == as_of,
                               sa.tuple_(SnapshotRow.level, SnapshotRow.key).in_(part))
                        .execution_options(synchronize_session=False))
            session.add_all([
                SnapshotRow(period=period, as_of=as_of, level=level, key=key, source=source,
                            written_at=now, **numbers)
                for (period, as_of, level, key), numbers in chosen.items()])
        return len(chosen)

    def snapshots(self, period: str, level: str | None = None, key: str | None = None,
                  until: date | None = None, since: date | None = None) -> pd.DataFrame:
        """Snapshots of ``period`` (of one node when ``level``/``key`` are given), oldest
        as_of first; only as_ofs in ``[since, until]`` when given. Columns
        :data:`SNAPSHOT_FIELDS`."""
        query = sa.select(SnapshotRow).where(SnapshotRow.period == period)
        if level is not None:
            query = query.where(SnapshotRow.level == level)
        if key is not None:
            query = query.where(SnapshotRow.key == key)
        if until is not None:
            query = query.where(SnapshotRow.as_of <= until)
        if since is not None:
            query = query.where(SnapshotRow.as_of >= since)
        query = query.order_by(SnapshotRow.as_of, SnapshotRow.level, SnapshotRow.key)
        with self.transaction() as session:
            rows = [{name: getattr(row, name) for name in SNAPSHOT_FIELDS}
                    for row in session.scalars(query)]
        frame = pd.DataFrame(rows, columns=list(SNAPSHOT_FIELDS))
        return frame.astype({name: float for name in SNAPSHOT_NUMBERS})

    def snapshot_dates(self, period: str | None = None) -> list[tuple[str, date]]:
        """The (period, as_of) pairs stored, oldest first."""
        query = sa.select(SnapshotRow.period, SnapshotRow.as_of).distinct()
        if period is not None:
            query = query.where(SnapshotRow.period == period)
        with self.transaction() as session:
            return sorted((str(p), a) for p, a in session.execute(query))

    # --- commits --------------------------------------------------------------------------------

    def add_commit(self, period: str, level: str, key: str, category: str, amount: float,
                   submitted_by: str, *, as_of: date | None = None, note: str = "",
                   now: datetime | None = None) -> CommitRecord:
        """Keep one submission (never replaces an earlier one)."""
        row = CommitRow(period=period, level=level, key=key, category=category,
                        amount=float(amount), submitted_by=submitted_by,
                        submitted_at=now or utcnow(), as_of=as_of, note=note)
        with self.transaction() as session:
            session.add(row)
            session.flush()
            return _commit_of(row)

    def commits(self, period: str | None = None, nodes: Iterable[tuple[str, str]] | None = None
                ) -> list[CommitRecord]:
        """Submissions, oldest first (of ``period`` and of ``nodes`` when given)."""
        query = sa.select(CommitRow).order_by(CommitRow.submitted_at, CommitRow.id)
        if period is not None:
            query = query.where(CommitRow.period == period)
        if nodes is not None:
            wanted = list(nodes)
            if not wanted:
                return []
            query = query.where(sa.tuple_(CommitRow.level, CommitRow.key).in_(wanted))
        with self.transaction() as session:
            return [_commit_of(row) for row in session.scalars(query)]


def _commit_of(row: CommitRow) -> CommitRecord:
    return CommitRecord(**{name: getattr(row, name) for name in COMMIT_FIELDS})
