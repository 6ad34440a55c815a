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
from models.forecast.statistical import EtsForecaster, ThetaForecaster

__all__ = ["CANDIDATES", "DEFAULT_PAIR", "REGISTRY", "Candidate"]


@dataclass(frozen=True)
class Candidate:
    """A registry entry.

    Attributes:
        build: the factory; returns None when the candidate has nothing to forecast in this
            fit (it then produces no forecasts, and its combination weight is zero).
        deseasonalise: forecast the series divided by their one observed season when no
            backtest window trained on a full season (seasonal models that need more than
            two seasons of data: see :mod:`models.forecast.season`).
    """

    build: Callable[[CandidateContext], Forecaster | None]
    deseasonalise: bool = False


REGISTRY: dict[str, Candidate] = {
    "seasonal_naive": Candidate(SeasonalNaiveForecaster.build),
    "ets": Candidate(EtsForecaster.build, deseasonalise=True),
    "theta": Candidate(ThetaForecaster.build, deseasonalise=True),
    "prophet": Candidate(ProphetForecaster.build),
    "lgbm": Candidate(LgbmForecaster.build),
}
CANDIDATES = tuple(REGISTRY)
# The combination's default without backtest evidence: a strong, cheap pair.
DEFAULT_PAIR = ("ets", "theta")
