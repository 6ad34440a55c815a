"""One router per resource, and the error responses each route documents.

Every status code a route can answer is listed in the OpenAPI document through
:func:`errors`, so clients (and schemathesis) know them: 401 and 429 on every route that needs
a key, 403 where a role may be refused, and the rest where they apply.
"""

from __future__ import annotations

from typing import Any

from service.http.schemas import ErrorOut

__all__ = ["errors"]

_WHY = {
    400: "The request is well-formed but cannot be answered (a date outside the data, an "
         "unknown owner, a forecast frequency that is not served).",
    401: "No API key, or an unknown or revoked one.",
    403: "The key's role may not do this (or an account manager asked for someone else's "
         "customers).",
    404: "No such resource (another account manager's customer is not found either).",
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


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of the given error codes."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": ErrorOut, "description": _WHY[code]}
        if code in _HEADERS:
            entry["headers"] = _HEADERS[code]
        out[code] = entry
    return out
