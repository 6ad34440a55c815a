"""The ``lgbm`` candidate: one global LightGBM over all series.

Features: lags, recent mean and trend, calendar, level, all divided by each series' recent
level so big and small series share one model; recursive multi-step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.schemas import LEVEL
from models.backtest import Panel
from models.forecast.base import CandidateContext, cpu_jobs

__all__ = ["LgbmForecaster", "LgbmSettings"]


def _lags(season: int) -> list[int]:
    """Lags used as features: the last periods up to a season (at most 13) and the season."""
    return sorted({*range(1, min(season, 13) + 1), season})


def _season_position(dates: pd.DatetimeIndex, letter: str) -> np.ndarray:
    """Position of each date within its season: weekday, week of year, month or quarter."""
    if letter == "D":
        return np.asarray(dates.dayofweek)
    if letter == "W":
        return np.minimum(np.asarray(dates.isocalendar().week, dtype=int), 52) - 1
    if letter == "M":
        return np.asarray(dates.month) - 1
    return np.asarray(dates.quarter) - 1


def _local_level(values: np.ndarray, t: int, season: int) -> np.ndarray:
    """Mean absolute value of the last season before ``t`` (the series' scale at ``t``)."""
    window = np.abs(values[:, max(t - season, 0) : t])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        recent: np.ndarray = np.nanmean(window, axis=1)
        overall: np.ndarray = np.nanmean(np.abs(values[:, :t]), axis=1)
    level = np.where(np.isfinite(recent) & (recent > 0), recent, overall)
    return np.where(np.isfinite(level) & (level > 0), level, 1.0)


def _lgbm_rows(
    values: np.ndarray, t: int, season: int, lags: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Features at position ``t`` for every series (numeric part) and the scale used."""
    base = _local_level(values, t, season)
    lagged = np.column_stack(
        [values[:, t - k] if t - k >= 0 else np.full(len(values), np.nan) for k in lags]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        recent = np.nanmean(values[:, max(t - 3, 0) : t], axis=1)
        before = np.nanmean(values[:, max(t - 2 * season, 0) : max(t - season, 0)], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.where(np.abs(before) > 0, base / np.abs(before), np.nan)
    features = np.column_stack([lagged / base[:, None], recent / base, growth, np.log1p(base)])
    return features, base


@dataclass(frozen=True)
class LgbmSettings:
    """Settings of the global LightGBM candidate."""

    season: int
    letter: str
    max_history: int
    seed: int
    n_jobs: int
    n_estimators: int = 200


def _lgbm_training_set(
    train: Panel, cfg: LgbmSettings, level_codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked (features, scaled target) over the last ``max_history`` positions."""
    lags = _lags(cfg.season)
    values = train.values
    positions = _season_position(train.dates, cfg.letter)
    n_before = np.cumsum(~np.isnan(values), axis=1)
    xs, ys = [], []
    for t in range(max(values.shape[1] - cfg.max_history, 1), values.shape[1]):
        # A row needs an observed target and at least two observations before it.
        usable = ~np.isnan(values[:, t]) & (n_before[:, t - 1] >= 2)
        if not usable.any():
            continue
        features, base = _lgbm_rows(values, t, cfg.season, lags)
        calendar = np.column_stack([np.full(len(values), positions[t]), level_codes])
        xs.append(np.column_stack([features, calendar])[usable])
        ys.append(values[usable, t] / base[usable])
    if not xs:
        return np.empty((0, len(lags) + 5)), np.empty(0)
    return np.vstack(xs), np.concatenate(ys)


@dataclass
class LgbmForecaster:
    """``lgbm``: global LightGBM, recursive: each step's forecast becomes the next step's lag.

    ``levels`` are every level of the full panel, sorted: a series' level is a categorical
    feature coded by its position there.
    """

    settings: LgbmSettings
    levels: list[str]

    @classmethod
    def build(cls, context: CandidateContext) -> LgbmForecaster:
        settings = LgbmSettings(context.season, context.letter, context.max_history,
                                context.seed, context.n_jobs)
        return cls(settings, sorted(set(context.ids[LEVEL])))

    def fit(self, train: Panel) -> LgbmForecaster:
        """Train on every usable position of ``train`` (no model with fewer than 20 rows)."""
        cfg = self.settings
        self.train_ = train
        self.codes_ = (
            train.ids[LEVEL].map({lv: i for i, lv in enumerate(self.levels)}).to_numpy(float)
        )
        x, y = _lgbm_training_set(train, cfg, self.codes_)
        self.model_: Any = None
        if len(y) < 20:
            return self
        import lightgbm as lgb

        n_numeric = x.shape[1] - 2
        self.model_ = lgb.LGBMRegressor(
            n_estimators=cfg.n_estimators,
            learning_rate=0.075,
            num_leaves=31,
            min_child_samples=20,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            random_state=cfg.seed,
            deterministic=True,
            force_row_wise=True,
            n_jobs=cpu_jobs(cfg.n_jobs),
            verbose=-1,
        )
        self.model_.fit(x, y, categorical_feature=[n_numeric, n_numeric + 1])
        return self

    def predict(self, horizon: int) -> np.ndarray:
        train, cfg, level_codes = self.train_, self.settings, self.codes_
        if self.model_ is None:
            return np.full((train.n_series, horizon), np.nan)
        extended = np.hstack([train.values, np.full((train.n_series, horizon), np.nan)])
        future_positions = _season_position(train.future_dates(horizon), cfg.letter)
        lags = _lags(cfg.season)
        t0 = train.values.shape[1]
        for step in range(horizon):
            features, base = _lgbm_rows(extended, t0 + step, cfg.season, lags)
            calendar = np.column_stack(
                [np.full(train.n_series, future_positions[step]), level_codes]
            )
            pred = self.model_.predict(np.column_stack([features, calendar])) * base
            extended[:, t0 + step] = np.maximum(pred, 0.0)
        return extended[:, t0:]
