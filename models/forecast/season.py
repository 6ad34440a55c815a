"""Seasonality from the seasons observed, for series too short for a model's own seasonality.

A series that saw at least one season but fewer than a model needs to find seasonality itself
(statsforecast's ETS and ARIMA: three seasons here, Theta: four) is forecast divided by its
observed season's indices, pooled over the panel's series and shrunk by the evidence, and the
forecasts are re-seasoned (:class:`Deseasonalised`), in the backtest windows and the final fit
alike. On aus-retail per state from 12 months this took MASE from 4.35 to 1.06 with the season
of each series alone, and pooling the season over the series took it to about 0.6
(benchmarks/history_sweep.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.backtest import Panel
from models.forecast.base import Forecaster

__all__ = ["Deseasonalised", "SeasonPool", "observed_season_indices", "season_pool"]


@dataclass(frozen=True)
class SeasonPool:
    """The panel-wide part of :func:`observed_season_indices`, for computing the indices of a
    part of the panel elsewhere (a group of series on Spark) exactly as on the whole panel.

    Attributes:
        pooled: ``(season,)`` mean ratios of the panel's eligible series (None: none eligible).
        m: how many series were eligible.
        active: whether the whole panel's indices differ from 1 (the forecasts are then made on
            the deseasonalised panel, as :meth:`Deseasonalised.predict` decides).
    """

    pooled: np.ndarray | None
    m: float
    active: bool


def _season_ratios(values: np.ndarray, season: int, seasons_needed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which series have indices (``ok``), their full seasons ``k`` and their ratios."""
    n_series, n_dates = values.shape
    n_obs = np.sum(np.isfinite(values), axis=1)
    k = np.minimum(n_obs // season, n_dates // season)
    ok = (k >= 1) & (n_obs < seasons_needed * season)
    ratios = np.full((n_series, season), np.nan)
    for i in np.flatnonzero(ok):
        y = values[i, n_dates - k[i] * season:].reshape(k[i], season)
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            ok[i] = False
            continue
        ratios[i] = (y / y.mean(axis=1, keepdims=True)).mean(axis=0)
    return ok, k, ratios


def season_pool(values: np.ndarray, season: int, seasons_needed: int = 2) -> SeasonPool:
    """The pooled ratios of a whole panel (see :class:`SeasonPool`)."""
    indices = observed_season_indices(values, season, seasons_needed)
    if season < 2 or values.shape[1] < season:
        return SeasonPool(None, 0.0, False)
    ok, _, ratios = _season_ratios(values, season, seasons_needed)
    pooled = ratios[ok].mean(axis=0) if ok.any() else None
    return SeasonPool(pooled, float(ok.sum()), not np.allclose(indices, 1.0))


def observed_season_indices(values: np.ndarray, season: int, seasons_needed: int = 2,
                            pool: SeasonPool | None = None) -> np.ndarray:
    """``(n_series, season)`` multiplicative indices of the last ``season`` grid positions, for
    series that have seen at least one full season but fewer than ``seasons_needed``, the
    seasons a model needs to find seasonality itself (the candidates ask three for ETS and
    ARIMA, four for Theta: ``Candidate.deseasonalise``); 1 elsewhere.

    Each series' ratios to its seasons' means are averaged over its ``k`` full seasons (aligned
    on the end of the data). That mixes seasonality with noise (and trend: a trend fitted on
    one season would absorb a peak at its end), so the ratios are shrunk by the evidence. The
    series of a panel mostly share their season (every store peaks in December): each series'
    ratios are the pooled ratios of the ``m`` eligible series, shrunk towards 1 by
    ``m k / (m k + 1)``, plus its own deviation from them shrunk by ``k / (k + 1)``. A lone
    series is shrunk half-way towards 1 with one season; twenty series that agree keep almost
    all of their common season.

    ``pool``, the whole panel's :func:`season_pool`, makes the indices of a part of a panel
    those its series have in the whole panel.
    """
    n_series, n_dates = values.shape
    out = np.ones((n_series, season))
    if season < 2 or n_dates < season:
        return out
    ok, k, ratios = _season_ratios(values, season, seasons_needed)
    if not ok.any():
        return out
    ratio = ratios[ok]
    if pool is not None and pool.pooled is not None:
        pooled, m = pool.pooled, pool.m
    else:
        pooled, m = ratio.mean(axis=0), float(ok.sum())
    kk = k[ok].astype(float)[:, None]
    out[ok] = 1.0 + (pooled - 1.0) * m * kk / (m * kk + 1.0) + (ratio - pooled) * kk / (kk + 1.0)
    return out


@dataclass
class Deseasonalised:
    """``inner``'s forecasts on the series divided by :func:`observed_season_indices`,
    re-seasoned.

    Series without indices (too short, or long enough for seasonal models) are unchanged;
    ``inner`` keeps its own state (the same object is fitted here as elsewhere).
    """

    inner: Forecaster
    season: int
    seasons_needed: int = 2
    # The whole panel's pool when this one fits a part of it (a group of series).
    pool: SeasonPool | None = None

    def fit(self, train: Panel) -> Deseasonalised:
        self.train_ = train
        return self

    def predict(self, horizon: int) -> np.ndarray:
        train, season = self.train_, self.season
        indices = observed_season_indices(train.values, season, self.seasons_needed, self.pool)
        if not (np.allclose(indices, 1.0) if self.pool is None else self.pool.active):
            return self.inner.fit(train).predict(horizon)
        n_dates = train.values.shape[1]
        past = np.tile(indices, int(np.ceil(n_dates / season)) + 1)[:, -n_dates:]
        # The last grid position holds the last index: the future starts at index 0 again.
        future = np.tile(indices, int(np.ceil(horizon / season)))[:, :horizon]
        adjusted = Panel(train.ids, train.dates, train.values / past, train.freq)
        return self.inner.fit(adjusted).predict(horizon) * future
