"""The forecast candidates by name: one registry entry each.

A candidate is a :class:`~models.forecast.base.Forecaster` (``fit(train) -> self``,
``predict(horizon) -> (n_series, horizon)``) with a factory that builds it from the
:class:`~models.forecast.base.CandidateContext` of one ``RevenueForecaster.fit``. Adding one is
a class (in a module of its family, or a new one) and an entry here; ``tests/test_forecast.py``
runs every entry through the protocol. The order of the registry is the order in which the
candidates run and appear in the tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from models.forecast.base import CandidateContext, Forecaster
from models.forecast.lgbm import LgbmForecaster
from models.forecast.naive import SeasonalNaiveForecaster
from models.forecast.prophet import ProphetForecaster
from models.forecast.statistical import (
    ArimaForecaster,
    AutoEtsForecaster,
    EtsForecaster,
    ThetaForecaster,
)

__all__ = ["CANDIDATES", "DEFAULT_PAIR", "REGISTRY", "Candidate", "default_models"]


@dataclass(frozen=True)
class Candidate:
    """A registry entry.

    Attributes:
        build: the factory; returns None when the candidate has nothing to forecast in this
            fit (it then produces no forecasts, and its combination weight is zero).
        deseasonalise: the seasons of data the model needs to find seasonality itself
            (0: not a seasonal model); series that saw at least one season but fewer are
            forecast divided by their observed season (see :mod:`models.forecast.season`).
        per_series: each series' forecasts depend on that series alone (given the panel-wide
            season pool): the candidate may run on any part of the panel, e.g. on groups of
            series on Spark (:mod:`models.forecast.local`). Global models (LightGBM) and
            Prophet, whose budget picks levels over the whole panel, run on the whole panel.
    """

    build: Callable[[CandidateContext], Forecaster | None]
    deseasonalise: int = 0
    per_series: bool = False


REGISTRY: dict[str, Candidate] = {
    "seasonal_naive": Candidate(SeasonalNaiveForecaster.build, per_series=True),
    "ets": Candidate(EtsForecaster.build, deseasonalise=3, per_series=True),
    "theta": Candidate(ThetaForecaster.build, deseasonalise=4, per_series=True),
    "arima": Candidate(ArimaForecaster.build, deseasonalise=3, per_series=True),
    "autoets": Candidate(AutoEtsForecaster.build, deseasonalise=3, per_series=True),
    "prophet": Candidate(ProphetForecaster.build),
    "lgbm": Candidate(LgbmForecaster.build),
}
CANDIDATES = tuple(REGISTRY)
# The combination's default without (enough) backtest evidence: the statistical models, the M4
# lesson. Theta joins it only from four seasons of history, when statsforecast's Theta models
# the season itself: on younger series its undamped drift, fitted on a few months that end in a
# seasonal peak, runs away (it stays a candidate, weighted by its backtest). AutoARIMA leaves it
# under one season, for the same reason.
DEFAULT_PAIR = ("ets", "theta", "arima", "autoets")
_THETA_SEASONS = 4


def default_models(models: list[str], n_periods: int, season: int) -> list[str]:
    """The default combination among ``models`` for a history of ``n_periods`` (every model
    when none of the default is there)."""
    young = n_periods < _THETA_SEASONS * season
    default = [m for m in DEFAULT_PAIR if m in models and not (young and m == "theta")]
    if n_periods < season:
        # Under one season AutoARIMA's differences and drift extrapolate the part of the
        # season it saw (a run-up to a December peak becomes a trend).
        default = [m for m in default if m != "arima"] or default
    return default or list(models)
