"""Who may do what: API key authentication, the role matrix, the owner scope, the rate limits.

The access matrix (``yes``: allowed; ``own``: only the key owner's customers):

    permission       routes                                      admin planner sales_ops AM
    planning         feasibility, what-if, recalibration,        yes   yes     yes       -
                     forecasts, warnings and silences (read)
    warnings:write   warnings/evaluate, add/expire silences      yes   -       yes       -
    customers        customers/at-risk, customers/{id}           yes   yes     yes       own
    models           models (read)                               yes   yes     yes       -
    models:admin     models/reload                               yes   -       -         -
    board            trend, changes, commits (read)              yes   yes     yes       own
    commits:write    commits (submit)                            yes   yes     yes       own

On the board (``board``, ``commits:write``) an account manager's own node is its rep node
(``level=rep``, ``key=owner``: the name a customer's ``account_manager`` and a deal's ``owner``
share): naming any other node answers 403, and lists without a node show its own only
(:func:`board_node`, :func:`board_nodes`).

An account manager's key carries its ``owner`` (the name in ``customers.account_manager``):
another manager's customer answers 404, exactly as an unknown one, so a key cannot probe which
customers exist; an explicit ``owner=`` filter naming someone else answers 403.

Wrong keys are throttled per client address: each client has a budget of failed attempts
(a token bucket); past it, a wrong key answers 429 with ``Retry-After`` instead of 401. A valid
key is checked first and never spends from that budget, so a client guessing keys cannot lock
out the valid keys of others behind the same address.

Workspaces: a key belongs to one workspace, and the principal carries it; every request is
answered from that workspace's data, models, alerts and silences (:mod:`service.http.deps`), so
a key of one data source sees nothing of another served by the same process.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fastapi import HTTPException, status

from service.http.keys import KeyRing, KeyStore, Role
from service.http.ratelimit import TokenBucketLimiter

__all__ = [
    "MATRIX",
    "NOT_YOURS",
    "Permission",
    "Principal",
    "authenticate",
    "authorize",
    "board_node",
    "board_nodes",
    "customer_owner",
    "names_other_node",
    "throttle",
]


class Permission(StrEnum):
    """What a route needs."""

    PLANNING = "planning"
    WARNINGS_WRITE = "warnings:write"
    CUSTOMERS = "customers"
    MODELS = "models"
    MODELS_ADMIN = "models:admin"
    BOARD = "board"
    COMMITS_WRITE = "commits:write"


MATRIX: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.PLANNER: frozenset({Permission.PLANNING, Permission.CUSTOMERS, Permission.MODELS,
                             Permission.BOARD, Permission.COMMITS_WRITE}),
    Role.SALES_OPS: frozenset({Permission.PLANNING, Permission.WARNINGS_WRITE,
                               Permission.CUSTOMERS, Permission.MODELS, Permission.BOARD,
                               Permission.COMMITS_WRITE}),
    Role.ACCOUNT_MANAGER: frozenset({Permission.CUSTOMERS, Permission.BOARD,
                                     Permission.COMMITS_WRITE}),
}


@dataclass(frozen=True)
class Principal:
    """The caller, as its API key says."""

    key_id: str
    role: Role
    owner: str | None = None
    # The workspace the key belongs to (whose data, models and alerts it sees).
    workspace: str = ""

    def can(self, permission: Permission) -> bool:
        return permission in MATRIX[self.role]

    @property
    def scoped_to(self) -> str | None:
        """The only account manager whose customers this key sees (None: all of them)."""
        return self.owner if self.role is Role.ACCOUNT_MANAGER else None

    @property
    def name(self) -> str:
        """How the caller is recorded (as the author of a silence)."""
        return self.owner or f"{self.role.value} key {self.key_id}"


def authenticate(keys: KeyStore | KeyRing, token: str | None,
                 failures: TokenBucketLimiter | None = None, client: str = "-") -> Principal:
    """The principal of a key; 401 for no key, an unknown, malformed or revoked one.

    Args:
        keys: the key store (or the key ring of the served workspaces).
        token: the key sent, if any.
        failures: the budget of failed attempts per client (None: not throttled); a wrong key
            past it answers 429 with ``Retry-After``.
        client: the client's address, the budget's key.
    """
    # One message for every failure: telling "revoked" from "unknown" would help a thief.
    if token:
        key = keys.verify(token)
        if key is not None:
            return Principal(key.key_id, key.role, key.owner, key.workspace)
        if failures is not None:
            wait = failures.take(client)
            if wait > 0:
                retry = failures.retry_after(wait)
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    detail=f"too many wrong API keys from this client; retry in {retry} s",
                    headers={"Retry-After": retry},
                )
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail="a valid API key is required (X-API-Key header or Authorization: Bearer KEY)",
        headers={"WWW-Authenticate": 'Bearer realm="quotacast"'},
    )


def authorize(principal: Principal, permission: Permission) -> Principal:
    """The principal itself when its role has ``permission``; 403 otherwise."""
    if not principal.can(permission):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"role {principal.role.value} may not use this endpoint ({permission.value})",
        )
    return principal


def throttle(limiter: TokenBucketLimiter, principal: Principal) -> None:
    """Take one token of the key's bucket; 429 with ``Retry-After`` when it is empty."""
    wait = limiter.take(principal.key_id)
    if wait > 0:
        retry = limiter.retry_after(wait)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"rate limit of this key exceeded; retry in {retry} s",
            headers={"Retry-After": retry},
        )


def customer_owner(principal: Principal, owner: str | None) -> str | None:
    """The account manager filter a customer list applies for this caller.

    Account managers always see their own customers only, and asking for another manager's is
    refused (403); the other roles see everybody's, or ``owner``'s when given.
    """
    mine = principal.scoped_to
    if mine is None:
        return owner
    if owner is not None and owner != mine:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail="an account manager key sees its own customers only")
    return mine


_REP = "rep"
_COMPANY = ("company", "all")
NOT_YOURS = "an account manager key sees and submits for its own rep node only"


def names_other_node(principal: Principal, level: str | None, key: str | None) -> bool:
    """Whether an account manager's request names a node other than its own rep node.

    The one rule of the board's scope (pages, ``/v1/deals``, trend, changes and commits): an
    account manager may name nothing, its rep level, its own name, or both
    (``level=rep&key=<owner>``); anything else (another rep, the company, a team, its own name
    at another level) is another node. An empty value counts as not given. Other roles name
    any node: always False.
    """
    mine = principal.scoped_to
    if mine is None:
        return False
    return (level or None) not in (None, _REP) or (key or None) not in (None, mine)


def board_node(principal: Principal, level: str | None, key: str | None) -> tuple[str, str]:
    """The board node a request is about: ``level`` (default the company) and ``key`` (the
    company's is ``all``; another level without a key: 404, no such node). An account manager's
    is always its own rep node: naming any other (:func:`names_other_node`) answers 403."""
    mine = principal.scoped_to
    if mine is not None:
        if names_other_node(principal, level, key):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=NOT_YOURS)
        return _REP, mine
    chosen = level or _COMPANY[0]
    key = key or None
    if key is None and chosen == _COMPANY[0]:
        key = _COMPANY[1]
    if key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"which {chosen}? give its key (level={chosen}&key=NAME)")
    return chosen, key


def board_nodes(principal: Principal, level: str | None, key: str | None
                ) -> list[tuple[str, str]] | None:
    """The nodes a board list shows: every node (None), the one named, or an account
    manager's own rep node only."""
    if principal.scoped_to is None and level is None and key is None:
        return None
    return [board_node(principal, level, key)]
