"""Pure ASGI middleware: request metrics, the request body size limit and security headers.

Pure ASGI rather than ``BaseHTTPMiddleware``: the body limit must count bytes as they arrive
(a client may send no ``Content-Length``, or lie about it), and neither needs a request object.
"""

from __future__ import annotations

import json
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.metrics import RequestMetrics

__all__ = [
    "DOCS_CSP",
    "PAGE_CSP",
    "BodyLimitMiddleware",
    "MetricsMiddleware",
    "SecurityHeadersMiddleware",
    "too_large_detail",
]


class MetricsMiddleware:
    """Counts every HTTP request by method, route template and status, with its latency."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]  # an exception escaping the app is answered 500 by the server

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.begin()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.end()
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], name, status[0], time.perf_counter() - start)


def too_large_detail(limit: int) -> str:
    """The 413 message: the limit, and that every body the schema allows fits under it."""
    return (f"request body larger than {limit:,} bytes, the most this service takes: send a "
            "smaller one (every body the OpenAPI document allows fits: see its maxItems and "
            "maxLength)")


async def _reply_413(send: Send, limit: int) -> None:
    body = json.dumps({"detail": too_large_detail(limit)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Answers 413 to a request whose body is larger than ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading anything. A body that
    grows past the limit while streaming (no or a false ``Content-Length``) is refused as soon as
    it does: ``receive`` raises an ``HTTPException(413)``, which FastAPI lets through its body
    parsing (it turns other errors there into 400) to the exception handlers.
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.limit:
            await _reply_413(send, self.limit)
            return
        seen = [0]

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.limit:
                    raise HTTPException(413, too_large_detail(self.limit))
            return message

        await self.app(scope, counting_receive, send)


# The dashboard has no script, inline styles only, and posts its sign-in form to itself.
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# FastAPI's /docs and /redoc pages load their scripts and styles from a CDN and run an inline
# script; everything else stays as strict as the dashboard.
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net "
            "https://fonts.googleapis.com; font-src https://fonts.gstatic.com; "
            "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
            "connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'")
_DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")


def _security_headers(path: str) -> list[tuple[bytes, bytes]]:
    csp = DOCS_CSP if path in _DOCS_PATHS else PAGE_CSP
    return [(b"content-security-policy", csp.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()")]


class SecurityHeadersMiddleware:
    """Adds a Content-Security-Policy, X-Frame-Options, nosniff and a referrer policy to every
    HTTP response (errors and 413s included), unless the response set them itself."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _security_headers(scope.get("path", ""))

        async def send_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_headers)
