"""The models the service serves, and reloading them from the registry."""

from __future__ import annotations

from fastapi import APIRouter

from service.http import operations as ops
from service.http.deps import ModelAdmin, ModelReader, StateDep
from service.http.routes import errors
from service.http.schemas import ModelsOut

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["models"], responses=errors(401, 403, 429))


@router.get("", response_model=ModelsOut)
def get_models(user: ModelReader, state: StateDep) -> ModelsOut:
    """Models in use, with their versions and holdout metrics."""
    return ops.models(state)


@router.post("/reload", response_model=ModelsOut, responses=errors(413))
def post_reload(user: ModelAdmin, state: StateDep) -> ModelsOut:
    """Load the champions again; when the registry does not answer, keep serving the old ones."""
    return ops.reload_models(state)
