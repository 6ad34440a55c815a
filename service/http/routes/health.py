"""Liveness, readiness and Prometheus metrics (no key needed: probes and scrapers).

/readyz without a key says only whether the service is ready; its details (data source and
problems, models, registry) name customers and model metrics, so they need a valid key.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Request, Security, status
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials

from models.base import MODEL_KINDS
from service.http.auth import authenticate
from service.http.deps import (
    API_KEY_HEADER,
    BEARER,
    RootDep,
    client_of,
    key_from_headers,
    space_of,
)
from service.http.errors import errors
from service.http.jsonbody import StrictJSONRoute
from service.http.metrics import escape_label
from service.http.routes.models import model_out, registry_out
from service.http.schemas import DataStatus, LiveOut, ReadyOut, ReloadOut
from service.http.state import AppState
from service.usecases.champions import served_models

__all__ = ["router"]

router = APIRouter(tags=["health"], route_class=StrictJSONRoute)


@router.get("/livez", response_model=LiveOut)
def livez() -> LiveOut:
    """The process answers."""
    return LiveOut()


def _readiness(state: AppState) -> ReadyOut:
    """What /readyz reports: data, models and registry."""
    data = state.data
    tables = {} if data.tables is None else {n: len(f) for n, f in data.tables.frames.items()}
    return ReadyOut(
        ready=data.ok,
        data=DataStatus(source=data.source, ok=data.ok, tables=tables,
                        problems=data.problems[:200],
                        start=None if data.start is None else data.start.date(),
                        end=None if data.end is None else data.end.date()),
        models={k: model_out(k, m) for k, m in served_models(state, MODEL_KINDS).items()},
        model_problems=dict(sorted(state.model_problems.items())),
        registry=registry_out(state),
        reload=ReloadOut(**{k: v for k, v in asdict(state.reload).items()
                            if k != "fingerprint"}),
    )


@router.get("/readyz", response_model=ReadyOut,
            responses={503: {"model": ReadyOut, "description": "The data is not loaded."},
                       **errors(401, 429)},
            # The key is optional here (the empty requirement): without one, only `ready`.
            openapi_extra={"security": [{}]})
def readyz(
    request: Request,
    state: RootDep,
    api_key: Annotated[str | None, Security(API_KEY_HEADER)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> JSONResponse:
    """Ready once the data is loaded. With a key (optional; a wrong one is 401): the data's
    problems, which models are served and whether the registry answers (of the key's
    workspace, when the service serves several: ready once every workspace's data is
    loaded)."""
    token = key_from_headers(api_key, bearer)
    code = status.HTTP_200_OK if state.ready else status.HTTP_503_SERVICE_UNAVAILABLE
    if not token:
        return JSONResponse({"ready": state.ready}, status_code=code)
    principal = authenticate(state.keys, token, state.failures, client_of(request))
    report = _readiness(space_of(state, principal))
    report.ready = state.ready
    return JSONResponse(report.model_dump(mode="json"), status_code=code)


def _gauges(state: AppState) -> str:
    reachable = state.registry.reachable
    lines = ["# HELP quotacast_ready Whether the data is loaded.",
             "# TYPE quotacast_ready gauge", f"quotacast_ready {int(state.ready)}",
             "# HELP quotacast_registry_reachable Last answer of the registry probe.",
             "# TYPE quotacast_registry_reachable gauge",
             f"quotacast_registry_reachable {int(bool(reachable))}",
             "# HELP quotacast_model_info The model version served per kind.",
             "# TYPE quotacast_model_info gauge"]
    spaces = state.every_space()
    for space in spaces:
        # Several workspaces served: each line names its workspace.
        where = f'workspace="{escape_label(space.name)}",' if len(spaces) > 1 else ""
        for kind in MODEL_KINDS:
            model = space.model(kind)
            if model is not None:
                lines.append(f'quotacast_model_info{{{where}kind="{escape_label(kind)}",'
                             f'version="{escape_label(model.version)}"}} 1')
    return "\n".join(lines) + "\n"


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text format 0.0.4."}})
def metrics(state: RootDep) -> PlainTextResponse:
    """Request counts and latencies per route and status, in the Prometheus text format."""
    return PlainTextResponse(state.metrics.render() + _gauges(state),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
