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
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Cookie, HTTPException, Query, Request, Security, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from service.http.auth import Principal, authenticate, throttle
from service.http.board_first import board_page
from service.http.dashboard import (
    board_context,
    board_url,
    dashboard_context,
    money,
    percent,
    relative_change,
    signed_change,
    submit_board_commit,
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


def _signin(request: Request, message: str | None, code: int, action: str = "/"
            ) -> HTMLResponse:
    response = templates.TemplateResponse(request, "signin.html",
                                          {"message": message, "action": action},
                                          status_code=code)
    if message:
        response.delete_cookie(COOKIE, path="/")
    return response


def _remember(state: RootDep, key: str, target: str) -> RedirectResponse:
    # The address is always this site's own page (never one taken from the request).
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(COOKIE, key, max_age=_SESSION_SECONDS, path="/", httponly=True,
                        samesite="strict", secure=state.options.cookie_secure)
    return response


def _signed_in(request: Request, state: RootDep, token: str | None,
               action: str = "/") -> Principal | Response:
    """The caller's principal, or the sign-in page (401) for no key or a wrong one."""
    if not token:
        return _signin(request, None, status.HTTP_401_UNAUTHORIZED, action)
    try:
        return authenticate(state.keys, token, state.failures, client_of(request))
    except HTTPException as exc:
        if exc.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
            raise
        return _signin(request, "That key is not valid (unknown or revoked).",
                       status.HTTP_401_UNAUTHORIZED, action)


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
    principal = _signed_in(request, state, key or key_from_headers(api_key, bearer) or cookie)
    if not isinstance(principal, Principal):
        return principal
    if key is not None:
        # The picked scenario survives the sign-in.
        return _remember(state, key, "/?" + urlencode({"scenario": scenario}) if scenario
                         else "/")
    throttle(state.limiter, principal)
    return templates.TemplateResponse(request, "dashboard.html",
                                      dashboard_context(space_of(state, principal), principal,
                                                        scenario))


# Board parameters: free text checked by the page itself (a plain message, never a 422).
Text = Annotated[str | None, Query()]


@router.get("/board", response_class=HTMLResponse)
def board(
    request: Request,
    state: RootDep,
    api_key: Annotated[str | None, Security(API_KEY_HEADER)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    key: Annotated[str | None, Query()] = None,
    cookie: Annotated[str | None, Cookie(alias=COOKIE)] = None,
    period: Text = None,
    as_of: Text = None,
    level: Text = None,
    node: Text = None,
    scenario: Text = None,
    method: Text = None,
) -> Response:
    """The board: one node of the hierarchy (``level`` and ``node``, default the company; an
    account manager: their own rep) for a period as of a date, its children, deals, trend and
    commits."""
    principal = _signed_in(request, state, key or key_from_headers(api_key, bearer) or cookie,
                           "/board")
    if not isinstance(principal, Principal):
        return principal
    params = {"period": period, "as_of": as_of, "level": level, "node": node,
              "scenario": scenario, "method": method}
    if key is not None:
        return _remember(state, key, board_url(**params))
    throttle(state.limiter, principal)
    code, context = board_page(space_of(state, principal), principal, period=period,
                               as_of=as_of, level=level, key=node, scenario=scenario,
                               method=method)
    return templates.TemplateResponse(request, "board.html", context, status_code=code)


_FORM_BYTES = 8192


def _same_site(request: Request) -> bool:
    """A form sent from this site: the browser's ``Sec-Fetch-Site`` says so (its ``Origin``
    is ``null`` under the no-referrer policy), else a named origin must be this host; a client
    that sends neither is no browser page riding on the cookie (which is SameSite=Strict too).
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


@router.post("/board/commit", response_class=HTMLResponse)
async def board_commit(
    request: Request,
    state: RootDep,
    api_key: Annotated[str | None, Security(API_KEY_HEADER)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    cookie: Annotated[str | None, Cookie(alias=COOKIE)] = None,
) -> Response:
    """A commit or best case submitted with the board's form (``application/x-www-form-
    urlencoded``: period, as_of, level, node, category, amount, note); the board of that node
    answers, with the saved call beside quotacast's probability of reaching it."""
    principal = _signed_in(request, state, key_from_headers(api_key, bearer) or cookie,
                           "/board")
    if not isinstance(principal, Principal):
        return principal
    if not _same_site(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="a form of another site")
    throttle(state.limiter, principal)
    body = await request.body()
    if len(body) > _FORM_BYTES:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                            detail=f"a commit form is at most {_FORM_BYTES} bytes")
    fields = {name: values[-1] for name, values in
              parse_qs(body.decode("utf-8", "replace"), max_num_fields=20).items()}
    form = {name: fields.get(name, "")[:200] for name in
            ("period", "as_of", "level", "node", "category", "amount", "note")}
    space = space_of(state, principal)

    def answer() -> Response:
        try:
            code, message = submit_board_commit(
                space, principal, period=form["period"], as_of=form["as_of"],
                level=form["level"], key=form["node"], category=form["category"] or "commit",
                amount=form["amount"], note=form["note"])
        except HTTPException as exc:
            if exc.status_code == status.HTTP_403_FORBIDDEN:  # another's node: not yours
                code, context = board_context(space, principal, level=form["level"] or "?",
                                              key=form["node"] or "?")
            else:
                code, message = exc.status_code, str(exc.detail)
                _, context = board_context(space, principal, period=form["period"] or None,
                                           as_of=form["as_of"] or None)
                context["commit_problem"] = message
            return templates.TemplateResponse(request, "board.html", context, status_code=code)
        _, context = board_context(space, principal, period=form["period"] or None,
                                   as_of=form["as_of"] or None, level=form["level"] or None,
                                   key=form["node"] or None)
        context["submitted" if code == status.HTTP_200_OK else "commit_problem"] = message
        return templates.TemplateResponse(request, "board.html", context, status_code=code)

    return await run_in_threadpool(answer)


@router.get("/logout")
def logout() -> RedirectResponse:
    """Forget the key cookie."""
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/")
    return response
