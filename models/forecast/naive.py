"""The seasonal naive candidate, and the fallbacks of series too short for the candidates."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from models.backtest import Panel
from models.forecast.base import CandidateContext

__all__ = [
    "SeasonalNaiveForecaster",
    "fallback_forecast",
    "mean_forecast",
    "seasonal_naive_forecast",
]


def seasonal_naive_forecast(train: Panel, horizon: int, season: int) -> np.ndarray:
    """The last full season repeated; the last value when a series has less than a season."""
    values = train.values
    last_season = values[:, -season:] if values.shape[1] >= season else values
    reps = int(np.ceil(horizon / max(last_season.shape[1], 1)))
    seasonal = np.tile(last_season, reps)[:, :horizon]
    naive = np.repeat(values[:, -1:], horizon, axis=1)
    short = train.n_obs < season
    return np.where(short[:, None], naive, seasonal)


def mean_forecast(train: Panel, horizon: int) -> np.ndarray:
    """The mean of each series' history, flat."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        means = np.nanmean(train.values, axis=1)
    return np.repeat(means[:, None], horizon, axis=1)


def fallback_forecast(train: Panel, horizon: int, season: int) -> np.ndarray:
    """Seasonal naive for series with a full season, the mean for shorter ones."""
    short = (train.n_obs < season)[:, None]
    return np.where(
        short, mean_forecast(train, horizon), seasonal_naive_forecast(train, horizon, season)
    )


@dataclass
class SeasonalNaiveForecaster:
    """``seasonal_naive``: the last season repeated (the baseline every forecast must beat)."""

    season: int

    @classmethod
    def build(cls, context: CandidateContext) -> SeasonalNaiveForecaster:
        return cls(context.season)

    def fit(self, train: Panel) -> SeasonalNaiveForecaster:
        self.train_ = train
        return self

    def predict(self, horizon: int) -> np.ndarray:
        return seasonal_naive_forecast(self.train_, horizon, self.season)
