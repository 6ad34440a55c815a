"""Early warnings: alerts, evaluation of the rules, silences."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, Response, status

from service.http import operations as ops
from service.http.deps import PlanningUser, StateDep, WarningsEditor
from service.http.routes import errors
from service.http.schemas import AlertList, EvaluateIn, EvaluationOut, SilenceIn, SilenceOut

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["warnings"], responses=errors(401, 403, 429))

StateName = Literal["normal", "pending", "firing", "resolved", "active", "all"]


@router.get("/warnings", response_model=AlertList)
def get_warnings(
    user: PlanningUser,
    state: StateDep,
    alert_state: Annotated[list[StateName] | None, Query(
        alias="state", description="Repeatable; `active` (default) is pending, firing and "
        "resolved; `all` includes normal.")] = None,
) -> AlertList:
    """Current alerts, worst first, with their explanations."""
    return ops.alerts(state, alert_state)


@router.post("/warnings/evaluate", response_model=EvaluationOut,
             responses=errors(400, 409, 413, 503))
def post_evaluate(
    user: WarningsEditor, state: StateDep,
    body: Annotated[EvaluateIn | None, Body()] = None,
) -> EvaluationOut:
    """Evaluate the rules at as_of: update alert states and history, queue notifications."""
    return ops.evaluate_warnings(state, None if body is None else body.as_of)


@router.get("/silences", response_model=list[SilenceOut])
def get_silences(
    user: PlanningUser, state: StateDep,
    include_expired: Annotated[bool, Query(description="Also expired silences.")] = False,
) -> list[SilenceOut]:
    """Silences, oldest first."""
    return ops.silences(state, include_expired)


@router.post("/silences", response_model=SilenceOut, status_code=status.HTTP_201_CREATED,
             responses=errors(400, 413))
def post_silence(user: WarningsEditor, state: StateDep, body: SilenceIn) -> SilenceOut:
    """Mute notifications of matching alerts for a window of as_of dates."""
    return ops.add_silence(state, user, body)


@router.delete("/silences/{silence_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response, responses=errors(404))
def delete_silence(
    user: WarningsEditor, state: StateDep,
    silence_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Response:
    """Expire a silence now."""
    ops.expire_silence(state, silence_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
