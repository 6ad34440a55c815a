"""Request bodies parsed as standard JSON only, and validation errors that always serialise.

Python's ``json`` module reads ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON), and turns
``1e400`` into ``inf``; FastAPI then reports the bad number in its 422 body, which cannot be
written as JSON, and the client got a 500. :class:`StrictJSONRoute` parses bodies refusing
non-standard constants, numbers out of the float range, integers too long to be amounts and
bytes that are not UTF-8, each as a 422 ``json_invalid`` error naming the value; every router
of the service uses it. :func:`validation_failed` answers a ``RequestValidationError`` with the
offending input dropped when it cannot be written as JSON, so no validation error is a 500.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

__all__ = ["MAX_INT_DIGITS", "StrictJSONRequest", "StrictJSONRoute", "strict_loads",
           "validation_failed"]

# Longer integers are no amount or count of this service (and Python refuses > 4300 digits).
MAX_INT_DIGITS = 30


class _Refused(ValueError):
    """A value standard JSON (or a float) cannot hold."""


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number (JSON has no NaN or infinity)")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text} is out of the range of a number")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits is too long")
    return int(text)


def strict_loads(body: bytes | str) -> Any:
    """``body`` as standard JSON; ``json.JSONDecodeError`` for anything else.

    Refused besides malformed JSON: ``NaN``, ``Infinity``, ``-Infinity``, numbers outside the
    float range (``1e400``), integers longer than :data:`MAX_INT_DIGITS` digits, bytes that are
    not UTF-8 and nesting too deep to parse.
    """
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError("the body is not UTF-8 text", "", exc.start) from exc
    else:
        text = body
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except _Refused as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from exc
    except RecursionError as exc:
        raise json.JSONDecodeError("the body is nested too deeply", text, 0) from exc


class StrictJSONRequest(Request):
    """A request whose ``json()`` is :func:`strict_loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is parsed by :func:`strict_loads` (422 on what it refuses)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def _errors(exc: RequestValidationError) -> list[Any]:
    """The errors of ``exc`` as JSON-able values; an input JSON cannot hold is dropped."""
    out: list[Any] = []
    for error in exc.errors():
        entry = jsonable_encoder(error)
        try:
            json.dumps(entry, allow_nan=False)
        except (TypeError, ValueError):
            entry = {k: v for k, v in entry.items() if k not in ("input", "ctx")}
        out.append(entry)
    return out


async def validation_failed(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 answer (``{"detail": [errors]}``), safe for any input."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _errors(exc)}, status_code=422)
