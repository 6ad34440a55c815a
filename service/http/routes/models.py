"""The models the service serves, and reloading them from the registry."""

from __future__ import annotations

from fastapi import APIRouter

from engine import tracking
from models.base import MODEL_KINDS
from service.http.deps import ModelAdmin, ModelReader, StateDep
from service.http.errors import errors
from service.http.jsonbody import StrictJSONRoute
from service.http.present import number
from service.http.schemas import ModelOut, ModelsOut, RegistryOut
from service.usecases.champions import load_champions, served_models
from service.usecases.served import Served, probe_registry

__all__ = ["model_out", "registry_out", "router"]

router = APIRouter(prefix="/v1/models", tags=["models"], responses=errors(401, 403, 429),
                   route_class=StrictJSONRoute)


def model_out(kind: str, loaded: tracking.LoadedModel | None) -> ModelOut | None:
    """A served model with its version and holdout metrics (None for none)."""
    if loaded is None:
        return None
    return ModelOut(kind=kind, name=loaded.model_name, version=loaded.version,
                    run_id=loaded.run_id,
                    metrics={k: number(v) for k, v in sorted(loaded.metrics.items())})


def registry_out(served: Served) -> RegistryOut:
    """The registry and whether it answers (the probe's answer, reused for a while)."""
    return RegistryOut(uri=served.registry.uri, reachable=probe_registry(served))


def _models(served: Served) -> ModelsOut:
    found = [model_out(k, m) for k, m in served_models(served, MODEL_KINDS).items()]
    return ModelsOut(registry=registry_out(served), models=[m for m in found if m is not None],
                     missing=dict(sorted(served.model_problems.items())))


@router.get("", response_model=ModelsOut)
def get_models(user: ModelReader, state: StateDep) -> ModelsOut:
    """Models in use, with their versions and holdout metrics."""
    return _models(state)


@router.post("/reload", response_model=ModelsOut, responses=errors(413))
def post_reload(user: ModelAdmin, state: StateDep) -> ModelsOut:
    """Load the champions again; when the registry does not answer, keep serving the old ones."""
    load_champions(state, MODEL_KINDS)
    return _models(state)
