"""Liveness, readiness and Prometheus metrics (no key needed: probes and scrapers)."""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse, PlainTextResponse

from models.base import MODEL_KINDS
from service.http.deps import StateDep
from service.http.metrics import escape_label
from service.http.routes.models import model_out, registry_out
from service.http.schemas import DataStatus, LiveOut, ReadyOut
from service.http.state import AppState
from service.usecases.champions import served_models

__all__ = ["router"]

router = APIRouter(tags=["health"])


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
    )


@router.get("/readyz", response_model=ReadyOut,
            responses={503: {"model": ReadyOut, "description": "The data is not loaded."}})
def readyz(state: StateDep) -> JSONResponse:
    """Ready once the data is loaded; which models are served and whether the registry answers."""
    report = _readiness(state)
    code = status.HTTP_200_OK if report.ready else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse(report.model_dump(mode="json"), status_code=code)


def _gauges(state: AppState) -> str:
    reachable = state.registry.reachable
    lines = ["# HELP quotacast_ready Whether the data is loaded.",
             "# TYPE quotacast_ready gauge", f"quotacast_ready {int(state.data.ok)}",
             "# HELP quotacast_registry_reachable Last answer of the registry probe.",
             "# TYPE quotacast_registry_reachable gauge",
             f"quotacast_registry_reachable {int(bool(reachable))}",
             "# HELP quotacast_model_info The model version served per kind.",
             "# TYPE quotacast_model_info gauge"]
    for kind in MODEL_KINDS:
        model = state.model(kind)
        if model is not None:
            lines.append(f'quotacast_model_info{{kind="{escape_label(kind)}",'
                         f'version="{escape_label(model.version)}"}} 1')
    return "\n".join(lines) + "\n"


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text format 0.0.4."}})
def metrics(state: StateDep) -> PlainTextResponse:
    """Request counts and latencies per route and status, in the Prometheus text format."""
    return PlainTextResponse(state.metrics.render() + _gauges(state),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
