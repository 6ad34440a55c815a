"""Feasibility of the period's targets, what-if on a proposed target, recalibration."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from engine.schemas import PERIOD_PATTERN
from service.http.deps import PlanningUser, StateDep
from service.http.errors import errors
from service.http.jsonbody import StrictJSONRoute
from service.http.present import json_value, records
from service.http.schemas import (
    FeasibilityNode,
    FeasibilityOut,
    IsoDate,
    RecalibrationNode,
    RecalibrationOut,
    WhatIfIn,
    WhatIfOut,
)
from service.usecases.planning import feasibility_run, recalibration, what_if
from service.usecases.served import Served

__all__ = ["feasibility", "router"]

router = APIRouter(prefix="/v1", tags=["feasibility"],
                   responses=errors(400, 401, 403, 404, 429, 503), route_class=StrictJSONRoute)

Period = Annotated[str | None, Query(
    pattern=PERIOD_PATTERN, max_length=7,
    description="`2017`, `2017Q3` or `2017-08`; default: the quarter holding as_of.")]
AsOf = Annotated[IsoDate | None, Query(
    description="Only rows dated before it are used; default: the last date in the data.")]
_NODE_FIELDS = tuple(FeasibilityNode.model_fields)


def feasibility(served: Served, period: str | None, as_of: date | None) -> FeasibilityOut:
    """Attainment distribution of every node with a target in the period (also the
    dashboard's)."""
    run = feasibility_run(served, period, as_of)
    nodes = [FeasibilityNode(**row) for row in records(run.frame, _NODE_FIELDS)]
    return FeasibilityOut(period=run.period, as_of=run.as_of.date(), draws=run.draws,
                          notes=run.notes, nodes=nodes)


@router.get("/feasibility", response_model=FeasibilityOut)
def get_feasibility(user: PlanningUser, state: StateDep, period: Period = None,
                    as_of: AsOf = None) -> FeasibilityOut:
    """Attainment distribution of every node that has a target in the period."""
    return feasibility(state, period, as_of)


@router.post("/feasibility/what-if", response_model=WhatIfOut, responses=errors(404, 413))
def post_what_if(user: PlanningUser, state: StateDep, body: WhatIfIn) -> WhatIfOut:
    """Probability of reaching a proposed target for one node, from the same simulation."""
    found = what_if(state, body.level, body.key, body.target, body.period, body.as_of)
    return WhatIfOut(**{name: json_value(value) for name, value in asdict(found).items()})


@router.get("/recalibration", response_model=RecalibrationOut)
def get_recalibration(
    user: PlanningUser, state: StateDep, period: Period = None, as_of: AsOf = None,
    method: Annotated[Literal["even_probability", "proportional_p50"], Query(
        description="How the rest of each parent's target is shared among its children.")]
    = "even_probability",
) -> RecalibrationOut:
    """Revised targets for the rest of the period that keep every parent's total."""
    run, frame = recalibration(state, period, as_of, method)
    nodes = [RecalibrationNode(**row) for row in records(frame, RecalibrationNode.model_fields)]
    return RecalibrationOut(period=run.period, as_of=run.as_of.date(), method=method,
                            notes=[*run.notes, f"recalibration: {method}"], nodes=nodes)
