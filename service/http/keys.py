"""API keys: created once, shown once, stored hashed in the quotacast database.

A key reads ``qk_<key id>_<secret>``: the key id (8 hex digits) names the key in listings, logs
and ``quotacast keys revoke``; the secret is 32 random bytes. Only the SHA-256 of the whole key
is stored. A slow password hash is not needed: the secret has 256 bits of entropy, so no
dictionary or brute-force attack applies, and a fast hash keeps every request's check cheap.

The table ``api_keys`` lives in the database of ``QUOTACAST_DATABASE_URL``, beside the warning
tables (``warning_*``), declared on the one ``Base`` of :mod:`engine.db`; each store creates only
its own tables. A key belongs to one workspace (a :class:`KeyStore` reads and writes one
workspace's keys); a service serving several workspaces verifies a key with a :class:`KeyRing`,
which says whose the key is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, Workspaced, open_database

__all__ = ["ApiKey", "KeyRing", "KeyStore", "Role", "key_id_of"]

_PREFIX = "qk"
_KEY_RE = re.compile(r"^qk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_ID_RE = re.compile(r"^[0-9a-f]{8}$")


class Role(StrEnum):
    """What a key may do (the access matrix is in :mod:`service.http.auth`)."""

    ADMIN = "admin"
    PLANNER = "planner"
    SALES_OPS = "sales_ops"
    ACCOUNT_MANAGER = "account_manager"


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    role: Role
    owner: str | None
    created_at: datetime
    revoked_at: datetime | None = None
    # Whose key it is: the workspace as stored ('': the default one), or as served (KeyRing).
    workspace: str = ""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class _KeyRow(Workspaced, Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    role: Mapped[str] = mapped_column(sa.String(32))
    owner: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _key_of(row: _KeyRow) -> ApiKey:
    return ApiKey(row.key_id, Role(row.role), row.owner, row.created_at, row.revoked_at,
                  row.workspace or "")


def key_id_of(text: str) -> str | None:
    """The key id of a whole key or of a bare key id; None when it is neither."""
    text = text.strip()
    if _ID_RE.match(text):
        return text
    found = _KEY_RE.match(text)
    return found.group(1) if found else None


class KeyStore:
    """The ``api_keys`` table at one SQLAlchemy URL; created on first use."""

    def __init__(self, url: str, *, must_exist: bool = False, workspace: str = ""):
        self.workspace = workspace
        self.engine, self._sessions = open_database(url, [_KeyRow], must_exist=must_exist,
                                                    workspace=workspace)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    def create(self, role: Role | str, owner: str | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns it and the whole key text, which is never stored.

        Raises:
            ValueError: unknown role, an account manager key without owner, or an owner on a
                key of another role (it would scope nothing and mislead).
        """
        role = Role(role)
        owner = owner.strip() if owner else None
        if role is Role.ACCOUNT_MANAGER and not owner:
            raise ValueError("an account_manager key needs --owner (the account manager's name)")
        if role is not Role.ACCOUNT_MANAGER and owner:
            raise ValueError(f"--owner applies to account_manager keys only, not {role.value}")
        with self._sessions.begin() as session:
            key_id = secrets.token_hex(4)
            while session.get(_KeyRow, key_id) is not None:  # 1 in 4 billion, but be sure
                key_id = secrets.token_hex(4)
            token = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
            row = _KeyRow(key_id=key_id, key_hash=_digest(token), role=role.value, owner=owner,
                          created_at=_now(), revoked_at=None)
            session.add(row)
        return _key_of(row), token

    def revoke(self, key_id: str) -> bool:
        """Revoke a key now; False when unknown or already revoked."""
        with self._sessions.begin() as session:
            row = session.get(_KeyRow, key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = _now()
            return True

    def verify(self, token: str) -> ApiKey | None:
        """The active key that ``token`` is, or None (unknown, malformed or revoked)."""
        found = _KEY_RE.match(token.strip())
        if found is None:
            return None
        with self._sessions.begin() as session:
            row = session.get(_KeyRow, found.group(1))
            if row is None or row.revoked_at is not None:
                return None
            # Constant-time comparison: response time says nothing about how close a guess was.
            if not hmac.compare_digest(row.key_hash, _digest(token.strip())):
                return None
            return _key_of(row)

    def workspace_of_key(self, key_id: str) -> str | None:
        """The workspace (as stored: ``''`` is the default one) holding the key ``key_id``, in
        any workspace of the database; None when there is no such key. For messages only."""
        table = _KeyRow.__table__
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(table.c.workspace)
                                 .where(table.c.key_id == key_id)).scalar()
        return None if found is None else str(found)

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        """Stored keys, oldest first."""
        query = sa.select(_KeyRow).order_by(_KeyRow.created_at, _KeyRow.key_id)
        if not include_revoked:
            query = query.where(_KeyRow.revoked_at.is_(None))
        with self._sessions.begin() as session:
            return [_key_of(row) for row in session.scalars(query)]


class KeyRing:
    """The keys of the workspaces one service serves: a key opens its own workspace only.

    Args:
        stores: per served workspace name, the key store of its rows (the first one also
            creates keys, for a service serving one workspace).
    """

    def __init__(self, stores: Mapping[str, KeyStore]):
        if not stores:
            raise ValueError("a key ring needs at least one workspace")
        self.stores = dict(stores)

    @property
    def workspace(self) -> str:
        """The first workspace's stored name (where :meth:`create` writes)."""
        return next(iter(self.stores.values())).workspace

    def close(self) -> None:
        """Release the connections of every store."""
        for store in self.stores.values():
            store.close()

    def create(self, role: Role | str, owner: str | None = None) -> tuple[ApiKey, str]:
        """A key of the first workspace (see :meth:`KeyStore.create`)."""
        name, store = next(iter(self.stores.items()))
        key, token = store.create(role, owner)
        return replace(key, workspace=name), token

    def revoke(self, key_id: str) -> bool:
        """Revoke a key of any served workspace now; False when unknown or already revoked."""
        return any(store.revoke(key_id) for store in self.stores.values())

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        """The keys of every served workspace, oldest first."""
        found = [replace(key, workspace=name) for name, store in self.stores.items()
                 for key in store.list_keys(include_revoked)]
        return sorted(found, key=lambda key: (key.created_at, key.key_id))

    def verify(self, token: str) -> ApiKey | None:
        """The active key ``token`` is, its ``workspace`` the served workspace it belongs to;
        None when no served workspace holds it (unknown, malformed, revoked, or another
        workspace's)."""
        if _KEY_RE.match(token.strip()) is None:
            return None
        for name, store in self.stores.items():
            key = store.verify(token)
            if key is not None:
                return replace(key, workspace=name)
        return None
