"""Forecasts of the served champion forecasters (the service's forecasts resource): one per
frequency and level family, each answered by its own champion.

The pipeline that trains and promotes the forecaster is :mod:`service.usecases.forecast`; this
module answers from the champion loaded at start-up, never a fresh registry lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from models.base import FORECAST
from service.usecases.forecast import ServedForecaster, forecast_kind
from service.usecases.request import NotFound, Unavailable
from service.usecases.served import Served

__all__ = ["ServedForecast", "served_forecast"]


@dataclass(frozen=True)
class ServedForecast:
    """The champion's forecast of one level: ``level``, ``key``, ``ds`` and the quantiles."""

    level: str
    freq: str
    horizon: int
    model_version: str
    frame: pd.DataFrame


def _forecaster(served: Served, freq: str | None, level: str
                ) -> tuple[ServedForecaster, str]:
    """The served champion that answers ``level`` at ``freq``: the forecaster registered for
    that frequency and level family (``forecast-W-company``...), else the monthly company one
    (which also answers when no frequency is asked for)."""
    # The monthly company champion answers when its own family has none (and then says why it
    # cannot, if it cannot).
    kind = forecast_kind(freq or "M", level)
    loaded = served.model(kind) or served.model(FORECAST.name)
    if loaded is None:
        raise Unavailable("no forecast model is served: run `quotacast train forecast` and "
                          "`quotacast promote forecast`, then POST /v1/models/reload")
    if not isinstance(loaded.estimator, ServedForecaster):
        raise Unavailable(f"the forecast champion v{loaded.version} is a "
                          f"{type(loaded.estimator).__name__}, not a ServedForecaster: retrain it")
    return loaded.estimator, loaded.version


def served_forecast(served: Served, level: str, horizon: int | None,
                    freq: str | None) -> ServedForecast:
    """The champion forecaster's forecasts of one level, from the end of its history.

    The checks are the CLI's (``ServedForecaster.cannot_answer``).

    Raises:
        Unavailable: no forecaster is served.
        NotFound: the served forecaster has not that level, frequency or horizon.
    """
    forecaster, version = _forecaster(served, freq, level)
    problem = forecaster.cannot_answer(freq, level, horizon)
    if problem is not None:
        raise NotFound(f"{problem}; train and promote a forecaster with that --freq, --level "
                         "or --horizon to ask for it")
    steps = int(forecaster.forecaster.horizon) if horizon is None else horizon
    return ServedForecast(level=level, freq=forecaster.freq, horizon=steps,
                          model_version=version, frame=forecaster.predict(steps, level))
