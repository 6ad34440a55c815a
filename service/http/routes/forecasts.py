"""Revenue forecasts of the champion forecaster."""

from __future__ import annotations

from typing import Annotated, Literal

import pandas as pd
from fastapi import APIRouter, Query

from engine.schemas import DS
from service.http.deps import PlanningUser, StateDep
from service.http.errors import errors
from service.http.jsonbody import StrictJSONRoute
from service.http.present import records
from service.http.schemas import ForecastOut, ForecastPoint
from service.usecases.forecasts import served_forecast

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["forecasts"], responses=errors(401, 403, 404, 429, 503),
                   route_class=StrictJSONRoute)


@router.get("/forecasts", response_model=ForecastOut)
def get_forecasts(
    user: PlanningUser,
    state: StateDep,
    level: Annotated[str, Query(min_length=1, max_length=100,
                                description="company, region, team, rep, ...")] = "company",
    horizon: Annotated[int | None, Query(
        ge=1, le=1000, description="Periods ahead; default: the forecaster's horizon.")] = None,
    freq: Annotated[Literal["D", "W", "M", "Q"] | None, Query(
        description="Must be the served forecaster's frequency; default: that one.")] = None,
) -> ForecastOut:
    """Revenue forecast per series of one level, with 80% intervals."""
    found = served_forecast(state, level, horizon, freq)
    points = [ForecastPoint(**{**r, DS: pd.Timestamp(r[DS]).date()})
              for r in records(found.frame, ForecastPoint.model_fields)]
    return ForecastOut(level=found.level, freq=found.freq, horizon=found.horizon,
                       model_version=found.model_version, points=points)
