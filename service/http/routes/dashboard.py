"""The dashboard page at ``/``, server-rendered (Jinja2), signed in with an API key.

The key comes once as ``?key=`` (the sign-in form sends it so): it is checked, kept in an
HttpOnly, SameSite=Strict cookie and the browser is redirected to ``/`` so the key leaves the
address bar and the history. Afterwards the cookie (or an ``X-API-Key`` / bearer header) signs
the page in. The cookie is honoured by the page only, never by ``/v1``: no API call can be made
by another site riding on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Cookie, HTTPException, Query, Request, Security, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates

from service.http.auth import authenticate, throttle
from service.http.dashboard import (
    dashboard_context,
    money,
    percent,
    relative_change,
    signed_change,
)
from service.http.deps import (
    API_KEY_HEADER,
    BEARER,
    RootDep,
    client_of,
    key_from_headers,
    space_of,
)
from service.http.jsonbody import StrictJSONRoute

__all__ = ["COOKIE", "router"]

COOKIE = "quotacast_key"
_SESSION_SECONDS = 8 * 3600
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))
templates.env.filters["money"] = money
templates.env.filters["percent"] = percent
templates.env.filters["signed"] = signed_change
templates.env.globals["relative_change"] = relative_change

router = APIRouter(include_in_schema=False, route_class=StrictJSONRoute)


def _signin(request: Request, message: str | None, code: int) -> HTMLResponse:
    response = templates.TemplateResponse(request, "signin.html", {"message": message},
                                          status_code=code)
    if message:
        response.delete_cookie(COOKIE, path="/")
    return response


def _remember(state: RootDep, key: str, scenario: str | None) -> RedirectResponse:
    # The picked scenario survives the sign-in; the address is always this page's own.
    target = "/?" + urlencode({"scenario": scenario}) if scenario else "/"
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(COOKIE, key, max_age=_SESSION_SECONDS, path="/", httponly=True,
                        samesite="strict", secure=state.options.cookie_secure)
    return response


@router.get("/", response_class=HTMLResponse)
def dashboard(
    request: Request,
    state: RootDep,
    api_key: Annotated[str | None, Security(API_KEY_HEADER)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    # No length limits here: an odd value is a bad key (the sign-in page), not a 422.
    key: Annotated[str | None, Query()] = None,
    cookie: Annotated[str | None, Cookie(alias=COOKIE)] = None,
    # A ready scenario's name; an unknown one is said so on the page, never a 422.
    scenario: Annotated[str | None, Query()] = None,
) -> Response:
    """The dashboard for the signed-in key, or the sign-in form; ``?scenario=NAME`` adds a
    ready scenario beside the baseline for the planning roles."""
    token = key or key_from_headers(api_key, bearer) or cookie
    if not token:
        return _signin(request, None, status.HTTP_401_UNAUTHORIZED)
    try:
        principal = authenticate(state.keys, token, state.failures, client_of(request))
    except HTTPException as exc:
        if exc.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
            raise
        return _signin(request, "That key is not valid (unknown or revoked).",
                       status.HTTP_401_UNAUTHORIZED)
    if key is not None:
        return _remember(state, key, scenario)
    throttle(state.limiter, principal)
    return templates.TemplateResponse(request, "dashboard.html",
                                      dashboard_context(space_of(state, principal), principal,
                                                        scenario))


@router.get("/logout")
def logout() -> RedirectResponse:
    """Forget the key cookie."""
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/")
    return response
