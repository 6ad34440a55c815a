"""Feasibility of the period's targets, what-if on a proposed target, recalibration."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from engine.schemas import PERIOD_PATTERN
from service.http import operations as ops
from service.http.deps import PlanningUser, StateDep
from service.http.routes import errors
from service.http.schemas import FeasibilityOut, IsoDate, RecalibrationOut, WhatIfIn, WhatIfOut

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["feasibility"],
                   responses=errors(400, 401, 403, 429, 503))

Period = Annotated[str | None, Query(
    pattern=PERIOD_PATTERN, max_length=7,
    description="`2017`, `2017Q3` or `2017-08`; default: the quarter holding as_of.")]
AsOf = Annotated[IsoDate | None, Query(
    description="Only rows dated before it are used; default: the last date in the data.")]


@router.get("/feasibility", response_model=FeasibilityOut)
def get_feasibility(user: PlanningUser, state: StateDep, period: Period = None,
                    as_of: AsOf = None) -> FeasibilityOut:
    """Attainment distribution of every node that has a target in the period."""
    return ops.feasibility(state, period, as_of)


@router.post("/feasibility/what-if", response_model=WhatIfOut, responses=errors(404, 413))
def post_what_if(user: PlanningUser, state: StateDep, body: WhatIfIn) -> WhatIfOut:
    """Probability of reaching a proposed target for one node, from the same simulation."""
    return ops.what_if(state, body)


@router.get("/recalibration", response_model=RecalibrationOut)
def get_recalibration(
    user: PlanningUser, state: StateDep, period: Period = None, as_of: AsOf = None,
    method: Annotated[Literal["even_probability", "proportional_p50"], Query(
        description="How the rest of each parent's target is shared among its children.")]
    = "even_probability",
) -> RecalibrationOut:
    """Revised targets for the rest of the period that keep every parent's total."""
    return ops.recalibration(state, period, as_of, method)
