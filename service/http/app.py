"""The FastAPI application: :func:`create_app` builds one over the given settings.

At start-up (the lifespan) the app loads and validates the data, opens the key and alert
stores, and loads the ``champion`` of every model kind from the MLflow registry; a background
thread then computes the current period (:mod:`service.http.reload`) and, with
``QUOTACAST_RELOAD_SECONDS`` > 0, reloads the data whenever its files change. Nothing there
stops it from starting: bad data leaves it not ready (503 on /readyz, with the problems), an
unreachable registry or a kind without champion leaves it serving without that model (503 on
the endpoints that need it), and /readyz and the log say which versions it serves.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.config import Settings, get_settings
from models.base import MODEL_KINDS
from service.http.config import ServiceSettings
from service.http.errors import refused
from service.http.jsonbody import validation_failed
from service.http.metrics import RequestMetrics
from service.http.middleware import (
    BodyLimitMiddleware,
    MetricsMiddleware,
    SecurityHeadersMiddleware,
)
from service.http.reload import DataWatcher
from service.http.routes import ROUTERS
from service.http.state import AppState, build_state
from service.usecases.request import Refusal

__all__ = ["app_factory", "create_app"]

log = logging.getLogger("quotacast.service")

_DESCRIPTION = """\
Forecasts and risk warnings for sales planning, over one data directory.

Send an API key (from `quotacast keys add`) as `X-API-Key: KEY` or `Authorization: Bearer KEY`.
Roles: **admin** (everything), **planner** (feasibility, recalibration, forecasts, warnings,
all customers; read-only), **sales_ops** (as planner, and may evaluate warnings and silence
them), **account_manager** (their own customers only).
"""


def _version() -> str:
    try:
        return metadata.version("quotacast")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _report(state: AppState) -> None:
    """Say at start-up what is served, and what is not and why (per workspace)."""
    for space in state.every_space():
        if len(state.every_space()) > 1:
            log.info("workspace %s:", space.name)
        _report_one(space)


def _report_one(state: AppState) -> None:
    if state.data.ok:
        log.info("data %s loaded (up to %s)", state.data.source,
                 state.data.end.date() if state.data.end is not None else "?")
    else:
        log.warning("data %s NOT loaded (%d problems; see /readyz): %s", state.data.source,
                    len(state.data.problems), "; ".join(state.data.problems[:3]))
    for kind in MODEL_KINDS:
        model = state.model(kind)
        if model is not None:
            log.info("serving %s v%s (run %s)", model.model_name, model.version, model.run_id)
        else:
            log.warning("no %s model: %s", kind, state.model_problems.get(kind, "not loaded"))


def _documented_methods(app: FastAPI, path: str) -> set[str] | None:
    """The methods the OpenAPI document lists for ``path`` (None: a path it does not list)."""
    for template, operations in app.openapi()["paths"].items():
        pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return {m.upper() for m in operations}
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to HTTP errors, with a complete ``Allow`` header on 405.

    Starlette answers 405 with the methods of the first route matching the path only; a path
    served by two routes (GET and POST /v1/silences) must list both. The OpenAPI document
    knows every method of every path (routers nest in FastAPI, so the routes are not a flat
    list to walk).
    """
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        methods = _documented_methods(request.app, request.url.path)
        if methods:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
    return await http_exception_handler(request, exc)


def create_app(settings: Settings | None = None,
               options: ServiceSettings | None = None,
               sources: Sequence[str] | None = None) -> FastAPI:
    """The service over ``settings.data``, its models and stores.

    Args:
        settings: the engine settings (data, database, MLflow); default: read from the
            environment.
        options: the service's own settings (rate limit, body limit, rules...); default: read
            from the environment.
        sources: several data sources to serve, one workspace each (default:
            ``settings.data`` alone); a request is answered from its key's workspace.
    """
    settings = settings if settings is not None else get_settings()
    options = options if options is not None else ServiceSettings()
    request_metrics = RequestMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings, options, request_metrics, sources)
        app.state.quotacast = state
        _report(state)
        watcher = DataWatcher(state, every=settings.reload_seconds, warm_up=options.warm_up)
        if settings.reload_seconds > 0:
            log.info("data checked for changes every %g s", settings.reload_seconds)
        watcher.start()
        try:
            yield
        finally:
            watcher.stop()
            state.close()

    app = FastAPI(title="quotacast", version=_version(), description=_DESCRIPTION,
                  lifespan=lifespan)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Refusal, refused)
    app.add_exception_handler(RequestValidationError, validation_failed)
    # Added last = outermost: metrics see every answer, 413s of the body limit included, and
    # every answer carries the security headers.
    app.add_middleware(BodyLimitMiddleware, limit=options.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=request_metrics)
    for router in ROUTERS:
        app.include_router(router)
    return app


def app_factory() -> FastAPI:
    """For ``uvicorn --factory service.http.app:app_factory``: settings from the environment."""
    return create_app()
