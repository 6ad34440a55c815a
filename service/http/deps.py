"""Dependencies as ``Annotated`` aliases: the state, the caller and what the caller may do.

A route states what it needs in its signature (``user: PlanningUser, state: StateDep``) and
FastAPI resolves it in that order: authentication, rate limit and role come before anything
reads the data, so a caller without a valid key learns nothing else (401 before 403, 404 or
503).

Workspaces: ``StateDep`` is the state of the caller's workspace (its key's), so every route
answers from that workspace's data, champions, alerts and silences; ``RootDep`` is the
service's own state (keys, limits, metrics), for the routes that need no key (probes, the
dashboard's sign-in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.http.auth import Permission, Principal, authenticate, authorize, throttle
from service.http.state import AppState

__all__ = [
    "API_KEY_HEADER",
    "BEARER",
    "CustomerReader",
    "ModelAdmin",
    "ModelReader",
    "PlanningUser",
    "PrincipalDep",
    "RootDep",
    "StateDep",
    "WarningsEditor",
    "client_of",
    "current_principal",
    "get_root",
    "get_state",
    "key_from_headers",
    "space_of",
]

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="An API key from `quotacast keys add`.")
BEARER = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")


def get_root(request: Request) -> AppState:
    """The state the lifespan built for this app (its first workspace's, holding them all)."""
    state: AppState = request.app.state.quotacast
    return state


RootDep = Annotated[AppState, Depends(get_root)]


def key_from_headers(api_key: str | None,
                     bearer: HTTPAuthorizationCredentials | None) -> str | None:
    """The key of ``X-API-Key``, else of ``Authorization: Bearer``."""
    return api_key or (bearer.credentials if bearer is not None else None)


def client_of(request: Request) -> str:
    """The client's address (the key of its failed-key budget)."""
    return request.client.host if request.client is not None else "-"


def current_principal(
    request: Request,
    state: RootDep,
    api_key: Annotated[str | None, Security(API_KEY_HEADER)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> Principal:
    """The caller (401 without a valid key; 429 past the client's failed-key budget), one token
    of its rate limit taken (429)."""
    principal = authenticate(state.keys, key_from_headers(api_key, bearer), state.failures,
                             client_of(request))
    throttle(state.limiter, principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def space_of(root: AppState, principal: Principal) -> AppState:
    """The state of the caller's workspace (401 when the service does not serve it)."""
    try:
        return root.space(principal.workspace)
    except LookupError:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required (X-API-Key header or Authorization: Bearer KEY)",
            headers={"WWW-Authenticate": 'Bearer realm="quotacast"'}) from None


def get_state(root: RootDep, principal: PrincipalDep) -> AppState:
    """The state of the caller's workspace: its data, champions, alerts and silences."""
    return space_of(root, principal)


StateDep = Annotated[AppState, Depends(get_state)]


def allowed(permission: Permission) -> Callable[[Principal], Principal]:
    """A dependency that lets through callers whose role has ``permission`` (403 otherwise)."""

    def check(principal: PrincipalDep) -> Principal:
        return authorize(principal, permission)

    check.__name__ = f"allowed_{permission.name.lower()}"
    return check


PlanningUser = Annotated[Principal, Depends(allowed(Permission.PLANNING))]
WarningsEditor = Annotated[Principal, Depends(allowed(Permission.WARNINGS_WRITE))]
CustomerReader = Annotated[Principal, Depends(allowed(Permission.CUSTOMERS))]
ModelReader = Annotated[Principal, Depends(allowed(Permission.MODELS))]
ModelAdmin = Annotated[Principal, Depends(allowed(Permission.MODELS_ADMIN))]
