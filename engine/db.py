"""The quotacast database: one URL, one SQLAlchemy ``Base``, one way to open it.

Alert state (:mod:`engine.alerting.store`) and the API keys (``service/http/keys.py``) share the
database of ``QUOTACAST_DATABASE_URL`` (``sqlite:///quotacast.db`` by default, PostgreSQL by
URL). Their tables are declared on the one :class:`Base`; each store creates only its own tables
(:func:`open_database` takes them), so opening one never creates the other's.

A URL that names no usable database (an unknown scheme, a driver that is not installed, a file
that is not a database, a server that does not answer) raises :class:`DatabaseUrlError` or
:class:`DatabaseUnavailableError` with a plain message naming ``QUOTACAST_DATABASE_URL``.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    mapped_column,
    sessionmaker,
    with_loader_criteria,
)
from sqlalchemy.pool import StaticPool

from engine.config import SetupError

__all__ = [
    "Base",
    "DatabaseMissingError",
    "DatabaseUnavailableError",
    "DatabaseUrlError",
    "Workspaced",
    "create_engine",
    "describe_url",
    "driver_url",
    "missing_sqlite_file",
    "open_database",
]

_MEMORY = ("sqlite://", "sqlite:///:memory:")
SETTING = "QUOTACAST_DATABASE_URL"


class DatabaseUrlError(SetupError, sa.exc.ArgumentError):
    """The URL names no database quotacast can open: bad input in a setting (exit 2)."""

    exit_code = 2


class DatabaseMissingError(SetupError):
    """A read named a SQLite database file that does not exist (it is not created)."""


class DatabaseUnavailableError(SetupError, sa.exc.OperationalError):
    """The database named by the URL could not be opened (not a database, unreachable)."""

    def __init__(self, message: str):
        SetupError.__init__(self, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Base(DeclarativeBase):
    """Metadata of every quotacast table (JSON for dict and list columns)."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: sa.JSON, list[str]: sa.JSON}


class Workspaced:
    """A row of one workspace (one data source's alerts, silences, outbox and keys).

    ``''`` is the default workspace: rows stored before workspaces existed have it, so existing
    databases keep their state (:func:`open_database` adds the column to their tables). The
    sessions of :func:`open_database` read and write one workspace's rows only.
    """

    workspace: Mapped[str] = mapped_column(sa.String(64), default="", server_default="",
                                           index=True)


class WorkspaceSession(Session):
    """A session that sees and writes only the rows of ``info["workspace"]``."""


@event.listens_for(WorkspaceSession, "do_orm_execute")
def _only_the_workspace(state: ORMExecuteState) -> None:
    if state.is_column_load or state.is_relationship_load:
        return
    if state.is_select or state.is_update or state.is_delete:
        space = state.session.info.get("workspace", "")
        state.statement = state.statement.options(with_loader_criteria(
            Workspaced, lambda cls: cls.workspace == space, include_aliases=True))


@event.listens_for(WorkspaceSession, "before_flush")
def _into_the_workspace(session: Session, context: Any, instances: Any) -> None:
    space = session.info.get("workspace", "")
    for row in session.new:
        if isinstance(row, Workspaced):
            row.workspace = space


def describe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def driver_url(url: str) -> str:
    """``postgresql://`` means psycopg (3) when psycopg2, SQLAlchemy's default, is absent."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme) and importlib.util.find_spec("psycopg2") is None:
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


_WHAT_TO_DO = (f"set {SETTING} to a sqlite:///FILE or postgresql://USER@HOST/DB URL "
               "(default sqlite:///quotacast.db)")


BUSY_TIMEOUT_MS = 5000


def _wal(dbapi_connection: Any, _record: Any) -> None:
    """A SQLite file in write-ahead-log mode, waiting up to 5 s for a lock: a board page reads
    while a ``warnings evaluate`` or the service's warm-up writes snapshots, instead of waiting
    for the write (or failing with "database is locked"). A file that cannot switch (a
    read-only directory) stays in its journal mode; a file that is not a database fails at its
    first query, with :func:`open_database`'s plain message."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
    except sqlite3.Error:  # the connection stays usable as it was
        pass
    finally:
        cursor.close()


def create_engine(url: str) -> sa.Engine:
    """An engine for ``url`` (normalised by :func:`driver_url`).

    An in-memory SQLite database keeps one shared connection, or every session would see its
    own empty database. A SQLite file is opened in write-ahead-log mode (:func:`_wal`), so
    readers never wait for a writer; PostgreSQL is left as it is.

    Raises:
        DatabaseUrlError: the URL is not a database URL, its scheme is unknown or its driver
            is not installed.
    """
    url = driver_url(url)
    shown = describe_url(url)
    options: dict[str, Any] = {}
    if url in _MEMORY:
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    try:
        engine = sa.create_engine(url, **options)
    except sa.exc.NoSuchModuleError:
        scheme = url.split(":", 1)[0]
        raise DatabaseUrlError(f"{SETTING}={shown}: unknown database scheme {scheme!r}; "
                               f"{_WHAT_TO_DO}") from None
    except ImportError as exc:  # the dialect is known, its driver is not installed
        scheme = url.split(":", 1)[0]
        raise DatabaseUrlError(f"{SETTING}={shown}: the driver for {scheme!r} is not installed "
                               f"({exc}); install it, or {_WHAT_TO_DO}") from None
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise DatabaseUrlError(f"{SETTING}={shown} is not a database URL ({exc}); "
                               f"{_WHAT_TO_DO}") from None
    if engine.dialect.name == "sqlite" and url not in _MEMORY:
        event.listen(engine, "connect", _wal)
    return engine


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ``url`` when that file does not exist (None otherwise)."""
    try:
        parsed = sa.make_url(driver_url(url))
    except sa.exc.ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def _add_workspace_column(engine: sa.Engine, names: list[str]) -> None:
    """Tables made before workspaces get the ``workspace`` column (their rows: the default
    workspace ``''``) and the unique constraints that include it: copied aside, recreated,
    copied back, in one transaction."""
    inspector = sa.inspect(engine)
    existing = set(inspector.get_table_names())
    for name in names:
        table = Base.metadata.tables[name]
        if name not in existing or "workspace" not in table.c:
            continue
        columns = [c["name"] for c in inspector.get_columns(name)]
        if "workspace" in columns:
            continue
        kept = ", ".join(f'"{c}"' for c in columns if c in table.c)
        aside = f"_before_workspaces_{name}"
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE TABLE "{aside}" AS SELECT * FROM "{name}"'))
            conn.execute(sa.text(f'DROP TABLE "{name}"'))
            table.create(conn)
            conn.execute(sa.text(f'INSERT INTO "{name}" ({kept}, "workspace") '
                                 f'SELECT {kept}, \'\' FROM "{aside}"'))
            conn.execute(sa.text(f'DROP TABLE "{aside}"'))
            if conn.dialect.name == "postgresql" and "id" in columns:
                conn.execute(sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f'COALESCE((SELECT MAX(id) FROM "{name}"), 0) + 1, false)'))


def open_database(url: str, tables: Iterable[type[Base]], *, must_exist: bool = False,
                  workspace: str = "") -> tuple[sa.Engine, sessionmaker[Session]]:
    """The engine of ``url`` and its session factory, with ``tables`` created if missing.

    Args:
        workspace: the workspace whose rows the sessions read and write (tables of
            :class:`Workspaced` rows); ``''`` is the default workspace.
        must_exist: a read: a SQLite file that does not exist is an error and is not created
            (a misspelt path must not leave an empty database behind).

    Raises:
        DatabaseUrlError: see :func:`create_engine`.
        DatabaseMissingError: ``must_exist`` and there is no such SQLite file.
        DatabaseUnavailableError: the database could not be opened or its tables created.
    """
    missing = missing_sqlite_file(url) if must_exist else None
    if missing is not None:
        raise DatabaseMissingError(
            f"there is no quotacast database at {missing} ({SETTING}); nothing was created. "
            "Check the path; `quotacast warnings evaluate` and `quotacast keys add` create it")
    engine = create_engine(url)
    names = [model.__tablename__ for model in tables]
    try:
        _add_workspace_column(engine, names)
        Base.metadata.create_all(engine, tables=[Base.metadata.tables[name] for name in names])
    except (sa.exc.OperationalError, sa.exc.DatabaseError, sa.exc.InterfaceError) as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise DatabaseUnavailableError(
            f"cannot open the quotacast database {SETTING}={describe_url(url)} ({reason}): "
            "check that the file is a quotacast database (restore it, or point the setting at "
            "a new file) or that the server is up") from None
    return engine, sessionmaker(engine, expire_on_commit=False, class_=WorkspaceSession,
                                info={"workspace": workspace})
