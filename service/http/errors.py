"""The HTTP side of a refusal: one status code per use-case exception, and the error responses
each route documents.

Use cases refuse with the plain exceptions of :mod:`service.usecases.request`; :func:`refused`
(installed by the app) answers them with their status code and ``{"detail": ...}``, the body of
every error but 422. Every status code a route can answer is listed in the OpenAPI document
through :func:`errors`, so clients (and schemathesis) know them: 401 and 429 on every route that
needs a key, 403 where a role may be refused, and the rest where they apply.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, status
from fastapi.responses import JSONResponse, Response

from service.http.schemas import ErrorOut
from service.usecases.request import BadRequest, Conflict, NotFound, Refusal, Unavailable

__all__ = ["STATUS_OF", "errors", "refused", "status_of"]

STATUS_OF: dict[type[Refusal], int] = {
    BadRequest: status.HTTP_400_BAD_REQUEST,
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}

_WHY = {
    400: "The request is well-formed but this data cannot answer it (a period with nothing to "
         "simulate).",
    401: "No API key, or an unknown or revoked one.",
    403: "The key's role may not do this (or an account manager asked for someone else's "
         "customers).",
    404: "No such resource, or nothing in the data there: an as_of, period or level outside "
         "the data, an owner nobody has, a forecast frequency or level that is not served "
         "(another account manager's customer is not found either).",
    409: "The request conflicts with the stored state (an evaluation at an as_of earlier than "
         "the last one).",
    413: "The request body is larger than the service accepts.",
    429: "The key's rate limit is exhausted; retry after `Retry-After` seconds.",
    503: "The data or a model this needs is not loaded (see /readyz).",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "How to authenticate.",
                               "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait before the next request.",
                          "schema": {"type": "string"}}},
}


def status_of(refusal: Refusal) -> int:
    """The status code answering ``refusal`` (by its class, the most specific first)."""
    for kind in type(refusal).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return status.HTTP_400_BAD_REQUEST


async def refused(request: Request, exc: Exception) -> Response:
    """A use case's refusal as an HTTP error."""
    assert isinstance(exc, Refusal)
    return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of the given error codes."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": ErrorOut, "description": _WHY[code]}
        if code in _HEADERS:
            entry["headers"] = _HEADERS[code]
        out[code] = entry
    return out
