"""Market-shock scenarios through the feasibility simulation: baseline beside scenario."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from models.feasibility.scenario import COMPARED_COLUMNS, EXPECTED_DELTA, P_ATTAIN_DELTA, Scenario
from service.http.deps import PlanningUser, StateDep
from service.http.errors import errors
from service.http.jsonbody import StrictJSONRoute
from service.http.present import json_value
from service.http.schemas import IsoDate, PeriodText
from service.usecases.scenario import scenario_library, served_scenario

__all__ = ["ScenarioIn", "ScenarioNode", "ScenarioOut", "router"]

router = APIRouter(prefix="/v1", tags=["scenario"], responses=errors(401, 403, 429),
                   route_class=StrictJSONRoute)

LibraryName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=100)]
Number = float | None


class ScenarioIn(BaseModel):
    """A scenario: a library name (``budget-freeze``) or the scenario itself."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    scenario: LibraryName | Scenario = Field(
        description="a library scenario's name (GET /v1/scenarios lists them) or a scenario: "
                    "name and shocks, as in a scenario YAML file",
        examples=["budget-freeze"])
    period: PeriodText | None = Field(
        default=None, description="`2017`, `2017Q3` or `2017-08`; default: as_of's quarter")
    as_of: IsoDate | None = Field(default=None, description="default: the last date in the data")


class ScenarioNode(BaseModel):
    """One node: each feasibility column, baseline and scenario, and the changes."""

    model_config = ConfigDict(extra="forbid")

    level: str
    key: str
    target_baseline: Number
    target_scenario: Number
    closed_to_date_baseline: Number
    closed_to_date_scenario: Number
    p_attain_baseline: Number
    p_attain_scenario: Number
    expected_baseline: Number
    expected_scenario: Number
    p10_baseline: Number
    p10_scenario: Number
    p50_baseline: Number
    p50_scenario: Number
    p90_baseline: Number
    p90_scenario: Number
    gap_baseline: Number
    gap_scenario: Number
    must_hit_baseline: Number
    must_hit_scenario: Number
    stretch_baseline: Number
    stretch_scenario: Number
    expected_delta: Number
    p_attain_delta: Number


class ScenarioOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    period: str
    as_of: IsoDate
    draws: int
    notes: list[str]
    nodes: list[ScenarioNode]


class LibraryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    scenario: Scenario


_FIELDS = ("level", "key", *(f"{c}{s}" for c in COMPARED_COLUMNS
                             for s in ("_baseline", "_scenario")),
           EXPECTED_DELTA, P_ATTAIN_DELTA)


@router.get("/scenarios", response_model=list[LibraryEntry], response_model_exclude_none=True)
def get_scenarios(user: PlanningUser) -> list[LibraryEntry]:
    """The ready scenarios of the library."""
    return [LibraryEntry(name=name, scenario=ready)
            for name, ready in scenario_library().items()]


@router.post("/scenario", response_model=ScenarioOut,
             responses=errors(400, 404, 413, 503))
def post_scenario(user: PlanningUser, state: StateDep, body: ScenarioIn) -> ScenarioOut:
    """Every node's outlook under market shocks, beside the baseline (same simulation, same
    seed).

    404 when the data cannot answer: an as_of or period outside it, no library scenario of that
    name, or a stage the data does not have (as every planning route). A scenario is bounded
    (shocks, conditions, names and their lengths: see the schema) so that any the schema allows
    fits well under the service's body limit."""
    run = served_scenario(state, body.scenario, body.period, body.as_of)
    frame = run.result.frame
    nodes = [ScenarioNode(**{name: json_value(value) for name, value in
                             zip(_FIELDS, row, strict=True)})
             for row in frame[list(_FIELDS)].itertuples(index=False)]
    return ScenarioOut(name=run.result.scenario.name, period=run.period,
                       as_of=run.as_of.date(), draws=run.draws, notes=run.result.notes,
                       nodes=nodes)
