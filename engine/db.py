"""The quotacast database: one URL, one SQLAlchemy ``Base``, one way to open it.

Alert state (:mod:`engine.alerting.store`) and the API keys (``service/http/keys.py``) share the
database of ``QUOTACAST_DATABASE_URL`` (``sqlite:///quotacast.db`` by default, PostgreSQL by
URL). Their tables are declared on the one :class:`Base`; each store creates only its own tables
(:func:`open_database` takes them), so opening one never creates the other's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = ["Base", "create_engine", "driver_url", "open_database"]

_MEMORY = ("sqlite://", "sqlite:///:memory:")


class Base(DeclarativeBase):
    """Metadata of every quotacast table (JSON for dict and list columns)."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: sa.JSON, list[str]: sa.JSON}


def driver_url(url: str) -> str:
    """``postgresql://`` means psycopg (3) when psycopg2, SQLAlchemy's default, is absent."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme) and importlib.util.find_spec("psycopg2") is None:
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def create_engine(url: str) -> sa.Engine:
    """An engine for ``url`` (normalised by :func:`driver_url`).

    An in-memory SQLite database keeps one shared connection, or every session would see its
    own empty database.
    """
    url = driver_url(url)
    options: dict[str, Any] = {}
    if url in _MEMORY:
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    return sa.create_engine(url, **options)


def open_database(url: str, tables: Iterable[type[Base]]) -> tuple[sa.Engine,
                                                                   sessionmaker[Session]]:
    """The engine of ``url`` and its session factory, with ``tables`` created if missing."""
    engine = create_engine(url)
    names = [model.__tablename__ for model in tables]
    Base.metadata.create_all(engine, tables=[Base.metadata.tables[name] for name in names])
    return engine, sessionmaker(engine, expire_on_commit=False)
