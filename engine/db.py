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
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool

from engine.config import SetupError

__all__ = [
    "Base",
    "DatabaseMissingError",
    "DatabaseUnavailableError",
    "DatabaseUrlError",
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


def create_engine(url: str) -> sa.Engine:
    """An engine for ``url`` (normalised by :func:`driver_url`).

    An in-memory SQLite database keeps one shared connection, or every session would see its
    own empty database.

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
        return sa.create_engine(url, **options)
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


def open_database(url: str, tables: Iterable[type[Base]], *, must_exist: bool = False
                  ) -> tuple[sa.Engine, sessionmaker[Session]]:
    """The engine of ``url`` and its session factory, with ``tables`` created if missing.

    Args:
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
        Base.metadata.create_all(engine, tables=[Base.metadata.tables[name] for name in names])
    except (sa.exc.OperationalError, sa.exc.DatabaseError, sa.exc.InterfaceError) as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise DatabaseUnavailableError(
            f"cannot open the quotacast database {SETTING}={describe_url(url)} ({reason}): "
            "check that the file is a quotacast database (restore it, or point the setting at "
            "a new file) or that the server is up") from None
    return engine, sessionmaker(engine, expire_on_commit=False)
