"""Revenue forecasting: backtested candidates, a weighted combination, conformal intervals.

How :class:`RevenueForecaster` works, in the order ``fit`` does it:

1. **Panel.** The long series frame becomes a panel on a common date grid (partial last
   periods dropped, zero-filled after each series' first revenue, see ``models.backtest``).
2. **Candidates, backtested.** Every candidate forecasts from ``n_windows`` rolling origins
   (the last ``n_windows`` horizons by default) using only data before each origin, then once
   more from the end of the data. Candidates:

   - ``seasonal_naive``: the last season repeated.
   - ``ets``: statsforecast AutoETS (multiplicative errors on positive data, additive
     otherwise). Its specification (error/trend/season/damping) is chosen once, at the oldest
     origin with enough data for seasonal models, and only re-estimated afterwards: choosing
     costs ~5x estimating, and on the dev data (see benchmarks/forecast.py) re-choosing at
     every origin changed the combination's MASE by less than 0.5%.
   - ``theta``: statsforecast Theta over all series at once.
   - ``lgbm``: one global LightGBM over all series: lags, recent mean and trend, calendar,
     level, all divided by each series' recent level so big and small series share one
     model; recursive multi-step.
   - ``prophet``: fitted in parallel, only on levels whose series are few enough that its
     backtests stay within ``prophet_budget`` of one Prophet fit per series (so adding it can
     never make ``fit`` slower than fitting Prophet alone on every series). In a sales
     hierarchy that means the company and other upper levels, whose smooth aggregate series
     suit it best; its weight is then earned in the backtest like every other candidate's.

   ETS and Theta see at most the last ``_MAX_HISTORY`` periods (10 years of months): on long
   series this was both faster and more accurate (older regimes mislead them).
3. **Combination.** Each series' candidates are scored by backtest MASE. ``backtest_weights``
   (default) shrinks each series' scores towards its level's average (three windows are a
   noisy verdict on one series: the level's average counts as ``_SHRINK_WINDOWS`` windows),
   keeps the best ``_TOP_K`` candidates and weights them by inverse squared score.
   ``level_weights`` uses the level's average only, ``select`` the single best candidate,
   ``mean`` equal weights. Without any evidence a series gets the mean of ETS and Theta, and
   the backtest weights are blended with that default as if it had earned ``_PRIOR_WINDOWS``
   window of evidence (``with_prior``): a verdict of one or two windows is noisy (on the demo
   company LightGBM did best in the first window, on 16 months, and worst by far in the next
   two), so the pull towards the default fades as windows accumulate. When every backtest
   window trained on less than a season but the full history holds one (12 months of a
   monthly series), the windows measured forecasts that could not be seasonal: the final
   forecasts then ignore them and use the default with the seasonal naive added, ETS and
   Theta forecasting the series divided by the observed season's shrunk indices
   (``observed_season_indices``). On aus-retail per state from 12 months this took MASE from
   4.35 to 1.06 (benchmarks/history_sweep.py).
4. **Reconciliation** (with a hierarchy): the combined forecasts of every backtest window are
   reconciled bottom-up, with MinT's structural diagonal (``wls_struct``: needs no errors)
   and with MinT (shrink, covariance of earlier windows' errors); the method with the lowest
   backtest MASE, averaged over levels, is kept. Without evidence (the first window, or no
   window) ``wls_struct`` is used: bottom-up sums the noisiest forecasts (the reps'), which
   made the demo company's top levels far worse than their own combined forecasts. See
   ``models.reconcile`` for what is coherent (``yhat``) and what is not (quantiles).
5. **Conformal intervals.** Backtest errors of the final forecasts, divided by each series'
   MASE scale and by its spread relative to its level (``series_spread``: its own mean
   absolute error shrunk towards the level's), are pooled per level and horizon step
   (neighbouring steps are pooled too while fewer than ``_MIN_CALIBRATION`` errors are
   available, rescaled by the fitted growth of the errors with the step, ``error_growth``);
   their 10/50/90% quantiles, times the series' scale and spread, are added to ``yhat``. The
   same method calibrates every candidate, so ``metrics_`` compares them on equal terms. With
   fewer than ``MIN_WINDOWS`` windows or ``MIN_ERRORS`` errors the bands are widened to at
   least a random walk's, and ``sane_intervals`` checks every forecast row before it is kept.

6. **Short series** (fewer than ``min_history`` observations) get a fallback: seasonal naive
   with at least one season, else the mean; their intervals use the seasonal naive's
   calibration. ``notes_`` says which series fell back and anything else worth knowing.

Nothing in ``backtest_`` sees past its cutoff: the combination weights, MinT covariance and
interval quantiles used in a window are learned only from the errors of earlier windows that
were known by that cutoff (prequential). The first window therefore uses the default
combination, structural (WLS) reconciliation and has no intervals; ``metrics_``'s ``coverage_80`` is
measured on the later windows, an honest out-of-sample estimate. The final forecasts use
everything.

All forecasts are clipped at zero: revenue forecasts are never negative.
"""

from __future__ import annotations

import itertools
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.schemas import COMPANY_KEY, DS, KEY, LEVEL, LEVEL_COMPANY
from models.backtest import (
    Panel,
    Window,
    backtest_panel,
    freq_alias,
    rolling_origin_splits,
    season_length,
    to_panel,
    training_scales,
    window_table,
)
from models.metrics import MODEL, YHAT, YHAT_P10, YHAT_P50, YHAT_P90, metrics_table
from models.reconcile import Hierarchy, build_hierarchy, mint_projection, shrunk_covariance

__all__ = [
    "CANDIDATES",
    "COMBINATIONS",
    "COMBINED",
    "MIN_WINDOWS",
    "RECONCILED",
    "RECONCILIATIONS",
    "RevenueForecaster",
    "sane_intervals",
    "short_min_history",
]

CANDIDATES = ("seasonal_naive", "ets", "theta", "prophet", "lgbm")
COMBINATIONS = ("backtest_weights", "level_weights", "select", "mean")
# Reconciliation methods, and the one used without backtest evidence.
RECONCILIATIONS = ("bottom_up", "wls_struct", "mint_shrink")
_DEFAULT_RECONCILIATION = "wls_struct"
# Names of the derived forecasts in `backtest_` and `metrics_`.
COMBINED, RECONCILED = "combination", "reconciled"

# Longest history (periods) the statistical candidates see.
_MAX_HISTORY = {"D": 364, "W": 156, "M": 120, "Q": 40}
_QUANTILES = (0.1, 0.5, 0.9)
# Least number of scaled errors behind one conformal quantile.
_MIN_CALIBRATION = 40
# Least number of backtest windows an interval's width may rest on; with fewer, the band is
# widened to at least a random walk's (see ``_widened``).
MIN_WINDOWS = 3
# ... and least number of backtest errors (all series of a level pooled).
MIN_ERRORS = 20
# Shortest training history of a backtest window or a fully modelled series when the history
# is shorter than two seasons.
_MIN_SHORT_HISTORY = 3
# Combination: candidates kept per series, and the weight (in windows) of the level's average
# score when shrinking a series' own backtest score.
_TOP_K = 4
_SHRINK_WINDOWS = 4.0
# Combination: the default models' equal weights count as this many backtest windows of
# evidence (``with_prior``).
_PRIOR_WINDOWS = 1.0
# Conformal spread per series: the level's mean counts as this many errors of the series.
_SPREAD_SHRINK = 12.0

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------
# Candidates: pure functions of a training panel and a horizon -> (n_series, horizon) array.
# --------------------------------------------------------------------------------------------


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


def observed_season_indices(values: np.ndarray, season: int) -> np.ndarray:
    """``(n_series, season)`` multiplicative indices of the last ``season`` grid positions, for
    series that have seen at least one full season but are too short for the seasonal models
    (statsforecast's ETS and Theta need more than two seasons); 1 elsewhere.

    One season's ratios to its own mean mix seasonality with noise (and trend: a trend fitted
    on one season would absorb a peak at its end), so they are shrunk towards 1 by the
    evidence: ``k / (k + 1)`` for ``k`` full seasons observed (half-way with one season).
    """
    n_series, n_dates = values.shape
    out = np.ones((n_series, season))
    if season < 2 or n_dates < season:
        return out
    n_obs = np.sum(np.isfinite(values), axis=1)
    last = values[:, -season:]
    for i in range(n_series):
        y = last[i]
        if not (season <= n_obs[i] < 2 * season) or not np.all(np.isfinite(y)):
            continue
        if np.any(y <= 0):
            continue
        ratio = y / y.mean()
        k = n_obs[i] // season
        out[i] = 1.0 + (ratio - 1.0) * k / (k + 1.0)
    return out


def deseasonalised(
    fn: Callable[[Panel, int], np.ndarray], train: Panel, horizon: int, season: int
) -> np.ndarray:
    """``fn``'s forecasts on the series divided by :func:`observed_season_indices`, re-seasoned.

    Series without indices (too short, or long enough for seasonal models) are unchanged.
    """
    indices = observed_season_indices(train.values, season)
    if np.allclose(indices, 1.0):
        return fn(train, horizon)
    n_dates = train.values.shape[1]
    past = np.tile(indices, int(np.ceil(n_dates / season)) + 1)[:, -n_dates:]
    # The last grid position holds the last index: the future starts at index 0 again.
    future = np.tile(indices, int(np.ceil(horizon / season)))[:, :horizon]
    adjusted = Panel(train.ids, train.dates, train.values / past, train.freq)
    return fn(adjusted, horizon) * future


def short_min_history(n_periods: int, season: int) -> int:
    """Observations a series needs for the full candidate set (and a backtest window for
    training): one season, or half the history when that is shorter (at least 3), so that
    a young history still gets backtest windows instead of none."""
    return int(min(season, max(_MIN_SHORT_HISTORY, n_periods // 2)))


def _recent(values: np.ndarray, max_history: int) -> list[np.ndarray]:
    """Each row's observed values, the last ``max_history`` of them."""
    return [row[~np.isnan(row)][-max_history:] for row in values]


def theta_forecast(train: Panel, horizon: int, season: int, max_history: int) -> np.ndarray:
    """statsforecast Theta over all series at once (naive where Theta cannot fit)."""
    from statsforecast import StatsForecast
    from statsforecast.models import Naive, Theta

    ys = _recent(train.values, max_history)
    frame = pd.DataFrame(
        {
            "unique_id": np.repeat(np.arange(len(ys)), [len(y) for y in ys]),
            "ds": np.concatenate([np.arange(len(y)) for y in ys]),
            "y": np.concatenate(ys),
        }
    )
    model = StatsForecast(models=[Theta(season_length=season)], freq=1, fallback_model=Naive())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.forecast(df=frame, h=horizon)
    # Integer time stamps continue each series' own length: align on the step instead.
    out["step"] = out.groupby("unique_id").cumcount()
    wide = out.pivot(index="unique_id", columns="step", values="Theta")
    return wide.reindex(np.arange(len(ys))).to_numpy(float)


EtsSpec = tuple[str, bool | None]


def _ets_one(
    y: np.ndarray, horizon: int, season: int, spec: EtsSpec | None
) -> tuple[np.ndarray, EtsSpec | None]:
    """One AutoETS forecast: re-estimate ``spec`` if given, else choose one.

    Multiplicative errors need positive data (and backtested better than additive ones on
    positive revenue), so the search space depends on the sign of the data.
    """
    from statsforecast.models import AutoETS

    positive = bool(np.all(y > 0))
    if spec is not None and not positive and "M" in spec[0]:
        spec = None  # the data turned non-positive since the spec was chosen
    # Damped trends are left out of the choice: that halves its cost, and on the dev data
    # (ABS retail, 2014-2016) it moved ETS's MASE by under 1% either way.
    model_spec, damped = spec if spec is not None else ("MZZ" if positive else "AZZ", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fitted = AutoETS(season_length=season, model=model_spec, damped=damped).fit(y)
            mean = fitted.predict(h=horizon)["mean"]
        except (ValueError, KeyError, IndexError, NotImplementedError, ZeroDivisionError,
                np.linalg.LinAlgError):
            # statsforecast fails in several ways on a handful of points (KeyError 'fitted'
            # on three quarters); the combination then falls back for that series.
            return np.full(horizon, np.nan), None
    components = fitted.model_["components"]
    return np.asarray(mean, float), ("".join(components[:3]), components[3] == "D")


def _ets_chunk(
    ys: list[np.ndarray], specs: list[EtsSpec | None], horizon: int, season: int
) -> list[tuple[np.ndarray, EtsSpec | None]]:
    """ETS for a chunk of series (the unit of work of a parallel job)."""
    return [_ets_one(y, horizon, season, spec) for y, spec in zip(ys, specs, strict=True)]


def _parallel_chunks(
    fn: Callable[..., list[Any]], items: list[Sequence[Any]], n_jobs: int, *args: Any
) -> list[Any]:
    """``fn(*chunk_columns, *args)`` over ``n_jobs`` contiguous chunks of ``items``, in order.

    ``items`` holds parallel sequences (one per argument of ``fn``), chunked together.
    """
    n = len(items[0])
    jobs = min(_cpu_jobs(n_jobs), max(n, 1))
    if jobs <= 1:
        return fn(*items, *args)
    from joblib import Parallel, delayed

    bounds = np.linspace(0, n, jobs + 1).astype(int)
    chunks = [[list(col[a:b]) for col in items] for a, b in itertools.pairwise(bounds)]
    results = Parallel(n_jobs=jobs)(delayed(fn)(*chunk, *args) for chunk in chunks)
    return [r for part in results for r in part]


def _cpu_jobs(n_jobs: int) -> int:
    """``n_jobs`` with joblib's convention: -1 means every core."""
    return (os.cpu_count() or 1) if n_jobs < 0 else max(n_jobs, 1)


@dataclass
class EtsCandidate:
    """AutoETS whose specification is chosen on the oldest data it is given, then re-estimated.

    Backtests call it oldest origin first, so every later origin and the final fit reuse the
    specification chosen before them: no choice ever depends on data after a cutoff. A series
    too short for seasonal models keeps choosing until it is long enough.
    """

    season: int
    max_history: int
    n_jobs: int = 1

    def __post_init__(self) -> None:
        self.specs: dict[tuple[str, str], EtsSpec] = {}

    def __call__(self, train: Panel, horizon: int) -> np.ndarray:
        keys = list(zip(train.ids[LEVEL], train.ids[KEY], strict=True))
        ys = _recent(train.values, self.max_history)
        specs = [self.specs.get(k) for k in keys]
        results = _parallel_chunks(_ets_chunk, [ys, specs], self.n_jobs, horizon, self.season)
        # A specification is kept only once it was chosen with seasonal models in the running
        # (statsforecast needs more than two seasons); until then it is chosen afresh.
        seasonal_enough = [len(y) > 2 * self.season + 1 for y in ys]
        for key, (_, spec), enough in zip(keys, results, seasonal_enough, strict=True):
            if spec is not None and enough and key not in self.specs:
                self.specs[key] = spec
        return np.array([mean for mean, _ in results]).reshape(len(keys), horizon)


def _prophet_chunk(
    frames: list[tuple[np.ndarray, np.ndarray]], future: pd.DatetimeIndex, daily: bool
) -> list[np.ndarray]:
    """Prophet forecasts for a chunk of series (dates, values)."""
    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    from prophet import Prophet

    out = []
    for ds, y in frames:
        # Yearly seasonality is left to Prophet's own rule (on with two years of data); weekly
        # only makes sense for daily data; no intervals (we calibrate our own, and skipping
        # Prophet's simulation halves its predict time).
        model = Prophet(weekly_seasonality=daily, daily_seasonality=False, uncertainty_samples=0)
        try:
            # Prophet's default 10,000 optimiser iterations can take 20 s on a noise-free
            # series; real fits converge in far fewer, so the cap only bounds the bad case.
            model.fit(pd.DataFrame({"ds": ds, "y": y}), iter=1000)
            out.append(model.predict(pd.DataFrame({"ds": future}))["yhat"].to_numpy(float))
        except (ValueError, RuntimeError):
            out.append(np.full(len(future), np.nan))
    return out


def prophet_forecast(
    train: Panel, horizon: int, rows: np.ndarray, daily: bool, n_jobs: int
) -> np.ndarray:
    """Prophet on the series selected by ``rows``; NaN elsewhere."""
    result = np.full((train.n_series, horizon), np.nan)
    positions = np.flatnonzero(rows)
    if positions.size == 0:
        return result
    dates = np.asarray(train.dates)
    frames = []
    for i in positions:
        observed = ~np.isnan(train.values[i])
        frames.append((dates[observed], train.values[i, observed]))
    future = train.future_dates(horizon)
    forecasts = _parallel_chunks(_prophet_chunk, [frames], n_jobs, future, daily)
    result[positions] = np.array(forecasts)
    return result


# --- global LightGBM ------------------------------------------------------------------------


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


def lgbm_forecast(
    train: Panel, horizon: int, cfg: LgbmSettings, level_codes: np.ndarray
) -> np.ndarray:
    """Global LightGBM, recursive: each step's forecast becomes the next step's lag."""
    x, y = _lgbm_training_set(train, cfg, level_codes)
    if len(y) < 20:
        return np.full((train.n_series, horizon), np.nan)
    import lightgbm as lgb

    n_numeric = x.shape[1] - 2
    model = lgb.LGBMRegressor(
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
        n_jobs=_cpu_jobs(cfg.n_jobs),
        verbose=-1,
    )
    model.fit(x, y, categorical_feature=[n_numeric, n_numeric + 1])
    extended = np.hstack([train.values, np.full((train.n_series, horizon), np.nan)])
    future_positions = _season_position(train.future_dates(horizon), cfg.letter)
    lags = _lags(cfg.season)
    t0 = train.values.shape[1]
    for step in range(horizon):
        features, base = _lgbm_rows(extended, t0 + step, cfg.season, lags)
        calendar = np.column_stack([np.full(train.n_series, future_positions[step]), level_codes])
        pred = model.predict(np.column_stack([features, calendar])) * base
        extended[:, t0 + step] = np.maximum(pred, 0.0)
    return extended[:, t0:]


# --------------------------------------------------------------------------------------------
# Combination, calibration and reconciliation over backtest windows.
# --------------------------------------------------------------------------------------------


def _window_scores(window: Window, models: Sequence[str]) -> np.ndarray:
    """``(n_series, n_models)`` scaled MAE of each model in one window (NaN if unscored)."""
    scale = np.where(window.scale > 0, window.scale, np.nan)
    scores = []
    for name in models:
        pred = window.preds.get(name)
        if pred is None:
            scores.append(np.full(len(scale), np.nan))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            scores.append(np.nanmean(np.abs(window.actual - pred), axis=1) / scale)
    return np.column_stack(scores)


def _nanmean(stack: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stack, axis=axis)


def _level_means(scores: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each series' row replaced by its level's mean score per model."""
    out = np.full_like(scores, np.nan)
    for level in np.unique(levels):
        rows = levels == level
        out[rows] = _nanmean(scores[rows], axis=0)
    return out


def _inverse_square(scores: np.ndarray, top_k: int) -> np.ndarray:
    """Weights proportional to 1/score^2 over each row's ``top_k`` best scores."""
    safe = np.where(np.isfinite(scores), np.maximum(scores, 1e-6), np.inf)
    rank = np.argsort(np.argsort(safe, axis=1), axis=1)
    weights = np.where((rank < top_k) & np.isfinite(safe), 1.0 / safe**2, 0.0)
    return weights


def combination_weights(
    scores: np.ndarray, n_scored: np.ndarray, levels: np.ndarray, method: str
) -> np.ndarray:
    """Unnormalised combination weights per series and model.

    Args:
        scores: ``(n_series, n_models)`` backtest MASE (NaN where a model was not scored).
        n_scored: ``(n_series,)`` windows behind each series' scores.
        levels: ``(n_series,)`` level of each series (scores are shrunk within a level).
        method: one of :data:`COMBINATIONS`.

    Returns:
        ``(n_series, n_models)`` non-negative weights; an all-zero row means "no evidence"
        and is resolved by :func:`combine` (default models).
    """
    level_scores = _level_means(scores, levels)
    if method == "mean":
        return np.ones_like(scores)
    if method == "level_weights":
        return _inverse_square(level_scores, _TOP_K)
    own = np.where(np.isfinite(scores), scores, level_scores)
    if method == "select":
        return _inverse_square(own, 1)
    # Shrink each series' score towards its level's, as if the level had _SHRINK_WINDOWS votes.
    n = n_scored[:, None].astype(float)
    shrunk = np.where(
        np.isfinite(scores) & np.isfinite(level_scores),
        (n * scores + _SHRINK_WINDOWS * level_scores) / (n + _SHRINK_WINDOWS),
        own,
    )
    return _inverse_square(shrunk, _TOP_K)


def with_prior(weights: np.ndarray, n_scored: np.ndarray, default: np.ndarray) -> np.ndarray:
    """Backtest weights blended with the default models' equal weights, as if the default had
    ``_PRIOR_WINDOWS`` windows of evidence behind it.

    One or two backtest windows are a noisy verdict (a candidate that happened to do well in
    one window can fail badly in the next), so the weights earned on few windows are pulled
    towards the default pair, and the pull fades as windows accumulate.

    Args:
        weights: ``(n_series, n_models)`` unnormalised weights (all-zero rows: no evidence).
        n_scored: ``(n_series,)`` windows behind each row.
        default: ``(n_models,)`` True for the default models.
    """
    total = weights.sum(axis=1, keepdims=True)
    evidence = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    prior = np.broadcast_to(default / max(default.sum(), 1), weights.shape)
    n = np.where(total[:, 0] > 0, n_scored, 0).astype(float)[:, None]
    return (n * evidence + _PRIOR_WINDOWS * prior) / (n + _PRIOR_WINDOWS)


def combine(
    preds: dict[str, np.ndarray], models: Sequence[str], weights: np.ndarray, default: Sequence[str]
) -> np.ndarray:
    """Weighted mean of the models' forecasts, ignoring a model where it has none.

    A series with no usable weight (no backtest evidence) gets the equal-weight mean of the
    ``default`` models (ETS and Theta: a strong, cheap pair), else of every model it has.
    """
    stack = np.stack(
        [
            preds[m] if m in preds else np.full_like(next(iter(preds.values())), np.nan)
            for m in models
        ]
    )
    available = np.isfinite(stack)
    w = weights.T[:, :, None] * available
    total = w.sum(axis=0)
    default_mask = np.array([m in default for m in models])[:, None, None]
    fallback_w = available * np.where(default_mask, 1.0, 0.0)
    fallback_w = np.where(fallback_w.sum(axis=0) > 0, fallback_w, available.astype(float))
    w = np.where(total > 0, w, fallback_w)
    total = w.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.where(total > 0, np.nansum(np.nan_to_num(stack) * w, axis=0) / total, np.nan)


def error_growth(errors: list[np.ndarray], horizon: int) -> np.ndarray:
    """``(horizon,)`` relative spread of the errors by step, ``(step + 1) ** b``.

    ``b`` is fitted (least squares on logs, weighted by the number of errors) to the mean
    absolute error of each step over every series and window, and kept within [0, 1]: errors
    do not shrink with the horizon and grow at most linearly. Without two steps to fit on,
    ``b = 0.5`` (a random walk).
    """
    steps, means, counts = [], [], []
    for h in range(horizon):
        column = [e[:, h] for e in errors if e.shape[1] > h]
        values = np.abs(np.concatenate(column)) if column else np.empty(0)
        values = values[np.isfinite(values)]
        if values.size and values.mean() > 0:
            steps.append(h + 1)
            means.append(values.mean())
            counts.append(values.size)
    b = 0.5
    if len(steps) >= 2:
        x, y, w = np.log(steps), np.log(means), np.asarray(counts, float)
        xm, ym = np.average(x, weights=w), np.average(y, weights=w)
        denominator = float(np.sum(w * (x - xm) ** 2))
        if denominator > 0:
            b = float(np.clip(np.sum(w * (x - xm) * (y - ym)) / denominator, 0.0, 1.0))
    return np.arange(1, horizon + 1, dtype=float) ** b


def _pooled_errors(
    errors: list[np.ndarray], levels: np.ndarray, level: str, step: int, horizon: int,
    growth: np.ndarray | None = None,
) -> np.ndarray:
    """Scaled errors of ``level`` around ``step`` (widening the step range until enough).

    Errors borrowed from other steps are rescaled to ``step`` by ``growth`` (the relative
    spread of each step), so that pooled bands still widen with the horizon.
    """
    rows = levels == level
    radius = 0
    if growth is None:
        growth = np.ones(max([horizon, *(e.shape[1] for e in errors)]))
    while True:
        lo, hi = max(step - radius, 0), step + radius + 1
        parts = [
            (e[rows, lo:hi] * (growth[step] / growth[lo : min(hi, e.shape[1])])).ravel()
            for e in errors
            if e.shape[1] > lo
        ]
        sample = np.concatenate(parts) if parts else np.empty(0)
        sample = sample[np.isfinite(sample)]
        if sample.size >= _MIN_CALIBRATION or (lo == 0 and hi >= horizon):
            return sample
        radius += 1


def conformal_quantiles(
    errors: list[np.ndarray], levels: np.ndarray, horizon: int
) -> dict[str, np.ndarray]:
    """Per level, ``(horizon, 3)`` quantiles (10/50/90%) of scaled errors by horizon step.

    Args:
        errors: per window, ``(n_series, steps)`` scaled errors ``(y - yhat) / scale`` (NaN
            where there is no error to learn from).
        levels: ``(n_series,)`` level of each series.
        horizon: steps to produce (steps without errors reuse the nearest ones).

    Returns:
        level -> quantiles; a level with too few errors of its own borrows from all levels,
        and "" maps to the all-levels quantiles. Empty when there are no errors at all.
    """
    everything = np.full(len(levels), "")
    pools = {"": everything, **{lv: levels for lv in np.unique(levels)}}
    result: dict[str, np.ndarray] = {}
    growth = error_growth(errors, max([horizon, *(e.shape[1] for e in errors)]))
    for name, labels in pools.items():
        qs = []
        for step in range(horizon):
            sample = _pooled_errors(errors, labels, name, step, horizon, growth)
            if sample.size < _MIN_CALIBRATION and name:
                sample = _pooled_errors(errors, everything, "", step, horizon, growth)
            if sample.size == 0:
                break
            qs.append(_finite_sample_quantiles(sample))
        if len(qs) == horizon:
            result[name] = np.array(qs)
    return result


def series_spread(errors: list[np.ndarray], levels: np.ndarray) -> np.ndarray:
    """``(n_series,)`` how widely each series erred relative to its level (1 = as its level).

    Each series' mean absolute scaled backtest error, shrunk towards its level's mean as if
    the level had ``_SPREAD_SHRINK`` errors of its own, divided by that mean. Conformal errors
    are divided by it before they are pooled and bands multiplied by it afterwards, so a
    smooth series does not get a volatile neighbour's band (and vice versa). 1 without errors.
    """
    spread = np.ones(len(levels))
    if not errors:
        return spread
    width = max(e.shape[1] for e in errors)
    padded = [np.pad(e, ((0, 0), (0, width - e.shape[1])), constant_values=np.nan)
              for e in errors]
    magnitude = np.abs(np.hstack(padded))
    counts = np.isfinite(magnitude).sum(axis=1)
    totals = np.nansum(magnitude, axis=1)
    for level in np.unique(levels):
        rows = levels == level
        n_level = counts[rows].sum()
        if n_level == 0:
            continue
        mean = totals[rows].sum() / n_level
        if not mean > 0:
            continue
        shrunk = (totals[rows] + _SPREAD_SHRINK * mean) / (counts[rows] + _SPREAD_SHRINK)
        spread[rows] = shrunk / mean
    return spread


def _finite_sample_quantiles(sample: np.ndarray) -> np.ndarray:
    """10/50/90% quantiles with the split-conformal correction ceil((n+1)q)/n outwards."""
    n = sample.size
    lo = np.quantile(sample, max(np.floor((n + 1) * _QUANTILES[0]) / n, 0.0), method="lower")
    mid = np.quantile(sample, _QUANTILES[1])
    hi = np.quantile(sample, min(np.ceil((n + 1) * _QUANTILES[2]) / n, 1.0), method="higher")
    return np.array([lo, mid, hi])


def apply_quantiles(
    point: np.ndarray, scale: np.ndarray, levels: np.ndarray, quantiles: dict[str, np.ndarray]
) -> np.ndarray:
    """``(n_series, steps, 3)`` non-negative quantile forecasts ``point + scale * q``.

    NaN for series whose level has no quantiles and when there is no all-levels fallback.
    """
    steps = point.shape[1]
    # Series without a calibration (no errors known yet) get no interval rather than a
    # zero-width one.
    out = np.full((*point.shape, 3), np.nan)
    safe_scale = np.where(np.isfinite(scale), scale, 0.0)
    for i, level in enumerate(levels):
        q = quantiles.get(level, quantiles.get(""))
        if q is None:
            continue
        out[i] = point[i, :, None] + safe_scale[i] * q[:steps]
    return np.maximum(out, 0.0)


def _scaled_errors(window: Window, pred: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(y - yhat) / scale`` of a window's eligible series; NaN elsewhere or without a scale.

    ``scale`` is the one the quantiles will be multiplied by (the series' scale at the time of
    the forecast being calibrated), so that errors from windows with shorter histories, whose
    own MASE scale may be defined differently (lag 1 under one season), pool consistently.
    """
    safe = np.where(scale > 0, scale, np.nan)
    errors = (window.actual - pred) / safe[:, None]
    errors[~window.eligible] = np.nan
    return errors


# --------------------------------------------------------------------------------------------
# The estimator.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Everything ``fit`` derives from its inputs before running models."""

    panel: Panel
    season: int
    letter: str
    min_history: int
    cutoffs: list[int]
    tree: Hierarchy | None
    tree_rows: np.ndarray  # panel row of every tree node, in tree order
    prophet_rows: np.ndarray  # series Prophet runs on


class RevenueForecaster:
    """Backtested combination of forecasters with conformal intervals and reconciliation.

    scikit-learn style: ``__init__`` only stores parameters, ``fit`` returns ``self`` and
    learned state ends in ``_``. See the module docstring for the method.

    Args:
        freq: D, W, M or Q (the pandas aliases D, W-MON, MS, QS are accepted too).
        horizon: periods to forecast.
        n_windows: backtest origins (windows of ``horizon`` periods).
        candidates: any of :data:`CANDIDATES`.
        combine: one of :data:`COMBINATIONS`.
        levels_to_reconcile: levels kept coherent with the hierarchy given to ``fit``;
            default every hierarchy level (plus ``company``) present in the series.
        interval: nominal coverage of the ``yhat_p10``..``yhat_p90`` interval; only 0.8 is
            supported (the output columns are the 10% and 90% quantiles).
        n_jobs: parallel jobs for ETS, Prophet and LightGBM (-1: every core).
        seed: random seed (LightGBM).
        min_history: observations a series needs for the full candidate set; shorter series
            fall back to seasonal naive or the mean. Default one season.
        prophet_budget: Prophet's backtest-and-fit cost allowed, as a fraction of one Prophet
            fit per series.

    Attributes:
        backtest_: level, key, model, cutoff, ds, h, y, yhat, scale, yhat_p10/p50/p90: every
            candidate's, the ``combination``'s and (with a hierarchy) the ``reconciled``
            backtest forecasts; intervals from errors known at each cutoff (none in the first
            window).
        metrics_: per model and level: mase, wape, smape, pinball, coverage_80, n_series.
        weights_: level, key, model, weight: the combination used for the final forecasts.
        quantiles_: level -> ``(horizon, 3)`` scaled-error quantiles of the published
            forecasts ("" holds the all-levels pool).
        reconciliation_: one of :data:`RECONCILIATIONS`, or None without a hierarchy.
        notes_: plain-language remarks (fallbacks, skipped candidates, choices made).
        forecast_: the forecasts ``predict`` serves.
    """

    def __init__(
        self,
        freq: str = "M",
        horizon: int = 12,
        n_windows: int = 3,
        candidates: Sequence[str] = ("seasonal_naive", "ets", "theta", "prophet", "lgbm"),
        combine: str = "backtest_weights",
        levels_to_reconcile: Sequence[str] | None = None,
        interval: float = 0.8,
        n_jobs: int = 1,
        seed: int = 42,
        min_history: int | None = None,
        prophet_budget: float = 0.5,
    ) -> None:
        self.freq = freq
        self.horizon = horizon
        self.n_windows = n_windows
        self.candidates = candidates
        self.combine = combine
        self.levels_to_reconcile = levels_to_reconcile
        self.interval = interval
        self.n_jobs = n_jobs
        self.seed = seed
        self.min_history = min_history
        self.prophet_budget = prophet_budget

    # --- checks and planning ----------------------------------------------------------------

    def _check_params(self) -> None:
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown or not self.candidates:
            raise ValueError(f"unknown or no candidates {unknown}: expected some of {CANDIDATES}")
        if self.combine not in COMBINATIONS:
            raise ValueError(f"combine must be one of {COMBINATIONS}, not {self.combine!r}")
        if not np.isclose(self.interval, 0.8):
            raise ValueError("only interval=0.8 is supported (yhat_p10..yhat_p90)")
        if self.horizon < 1 or self.n_windows < 1:
            raise ValueError("horizon and n_windows must be at least 1")
        freq_alias(self.freq)

    def _plan(
        self, series: pd.DataFrame, hierarchy: pd.DataFrame | None, notes: list[str]
    ) -> _Plan:
        panel = to_panel(series, self.freq)
        letter = {"D": "D", "W-MON": "W", "MS": "M", "QS": "Q"}[panel.freq]
        season = season_length(self.freq)
        n_periods = panel.values.shape[1]
        min_history = (self.min_history if self.min_history is not None
                       else short_min_history(n_periods, season))
        if min_history < season and self.min_history is None:
            notes.append(
                f"short history ({n_periods} periods, under two seasons of {season}): series "
                f"with at least {min_history} observations get every candidate, and backtest "
                "windows start from that much history")
        tree, panel, tree_rows = self._align_tree(panel, hierarchy, notes)
        cutoffs = rolling_origin_splits(
            panel.values.shape[1], self.horizon, self.n_windows, None, min_history
        )
        if len(cutoffs) < self.n_windows:
            notes.append(
                f"history of {panel.values.shape[1]} periods allows {len(cutoffs)} backtest "
                f"window(s) of the {self.n_windows} asked for"
            )
        prophet_rows = self._prophet_rows(panel, len(cutoffs), notes)
        return _Plan(panel, season, letter, min_history, cutoffs, tree, tree_rows, prophet_rows)

    def _prophet_rows(self, panel: Panel, n_cutoffs: int, notes: list[str]) -> np.ndarray:
        """Series Prophet is fitted on: whole levels, smallest first, within the budget."""
        rows = np.zeros(panel.n_series, dtype=bool)
        if "prophet" not in self.candidates:
            return rows
        budget = self.prophet_budget * panel.n_series
        sizes = panel.ids[LEVEL].value_counts(sort=False).sort_values(kind="stable")
        spent = 0
        for level, size in sizes.items():
            cost = int(size) * (n_cutoffs + 1)
            if spent + cost > budget:
                notes.append(
                    f"prophet skipped at level {level}: {cost} fits would exceed its budget "
                    f"({self.prophet_budget:g} x {panel.n_series} series)"
                )
                continue
            spent += cost
            rows |= (panel.ids[LEVEL] == level).to_numpy()
        return rows

    def _reconciled_levels(self, panel: Panel, hierarchy: pd.DataFrame) -> list[str]:
        columns = [*hierarchy.columns, LEVEL_COMPANY]
        wanted = columns if self.levels_to_reconcile is None else list(self.levels_to_reconcile)
        present = set(panel.ids[LEVEL])
        return [lv for lv in dict.fromkeys(wanted) if lv in present and lv in columns]

    def _align_tree(
        self, panel: Panel, hierarchy: pd.DataFrame | None, notes: list[str]
    ) -> tuple[Hierarchy | None, Panel, np.ndarray]:
        """The hierarchy restricted to the series' levels, and the panel rows of its nodes.

        Tree nodes missing from the series get a history summed from their bottom nodes;
        bottom nodes without a series are dropped (they never had revenue).
        """
        if hierarchy is None:
            return None, panel, np.empty(0, dtype=int)
        levels = self._reconciled_levels(panel, hierarchy)
        if len(levels) < 2:
            notes.append(
                "hierarchy given but fewer than two of its levels are in the series: not reconciled"
            )
            return None, panel, np.empty(0, dtype=int)
        frame = hierarchy.copy()
        if LEVEL_COMPANY not in frame:
            frame[LEVEL_COMPANY] = COMPANY_KEY
        bottom_level = build_hierarchy(frame, levels).levels[0]
        have = set(panel.ids.loc[panel.ids[LEVEL] == bottom_level, KEY].astype(str))
        kept = frame[frame[bottom_level].astype(str).isin(have)]
        if len(kept) < len(frame):
            notes.append(
                f"{len(frame) - len(kept)} {bottom_level} node(s) of the hierarchy have no "
                "series: left out"
            )
        tree = build_hierarchy(kept, levels)
        panel, rows = _panel_with_nodes(panel, tree, notes)
        return tree, panel, rows

    # --- fitting ----------------------------------------------------------------------------

    def fit(
        self,
        series: pd.DataFrame,
        hierarchy: pd.DataFrame | None = None,
        progress: Progress | None = None,
    ) -> RevenueForecaster:
        """Backtest the candidates, learn the combination and intervals, refit on all data.

        Args:
            series: long frame ``level``, ``key``, ``ds``, ``y`` (optionally ``partial``).
            hierarchy: one row per bottom node with one column per level (e.g. ``rep``,
                ``team``, ``region``) to reconcile forecasts across; ``None`` for none.
            progress: called as ``progress(done, total)`` after every unit of work.

        Returns:
            self.
        """
        self._check_params()
        notes: list[str] = []
        self.notes_ = notes
        plan = self._plan(series, hierarchy, notes)
        models = [c for c in CANDIDATES if c in self.candidates]
        total = (len(plan.cutoffs) + 1) * len(models) + 1
        done = [0]

        def tick() -> None:
            # One unit per candidate and origin (plus the final fit), one for the rest.
            done[0] = min(done[0] + 1, total - 1)
            if progress is not None:
                progress(done[0], total)

        model_fn = self._model_fn(plan, models, tick)
        windows = backtest_panel(
            model_fn, plan.panel, plan.cutoffs, self.horizon, plan.min_history, plan.season
        )
        final = self._final_window(plan, model_fn)
        self._learn(plan, models, windows, final, notes)
        if progress is not None:
            progress(total, total)
        return self

    def _model_fn(
        self, plan: _Plan, models: list[str], tick: Callable[[], None]
    ) -> Callable[[Panel, int], dict[str, np.ndarray]]:
        """The candidates as one backtest function (a fresh ETS state per fit)."""
        max_history = _MAX_HISTORY[plan.letter]
        ets = EtsCandidate(plan.season, max_history, self.n_jobs)
        level_names = sorted(set(plan.panel.ids[LEVEL]))
        lgbm_cfg = LgbmSettings(plan.season, plan.letter, max_history, self.seed, self.n_jobs)
        prophet_keys = set(
            zip(
                plan.panel.ids.loc[plan.prophet_rows, LEVEL],
                plan.panel.ids.loc[plan.prophet_rows, KEY],
                strict=True,
            )
        )

        def theta(train: Panel, horizon: int) -> np.ndarray:
            return theta_forecast(train, horizon, plan.season, max_history)

        # Without a backtest window trained on a full season, nothing measured whether the
        # season matters: ETS and Theta then use the observed season's indices (and the
        # default combination adds the seasonal naive, see ``_learn``).
        no_seasonal_window = all(c < plan.season for c in plan.cutoffs)

        def run(train: Panel, horizon: int) -> dict[str, np.ndarray]:
            out: dict[str, np.ndarray] = {}
            unseasoned = no_seasonal_window and train.values.shape[1] >= plan.season
            for name in models:
                if name == "seasonal_naive":
                    out[name] = seasonal_naive_forecast(train, horizon, plan.season)
                elif name == "ets":
                    out[name] = (deseasonalised(ets, train, horizon, plan.season)
                                 if unseasoned else ets(train, horizon))
                elif name == "theta":
                    out[name] = (deseasonalised(theta, train, horizon, plan.season)
                                 if unseasoned else theta(train, horizon))
                elif name == "lgbm":
                    codes = (
                        train.ids[LEVEL]
                        .map({lv: i for i, lv in enumerate(level_names)})
                        .to_numpy(float)
                    )
                    out[name] = lgbm_forecast(train, horizon, lgbm_cfg, codes)
                elif name == "prophet" and prophet_keys:
                    keys = zip(train.ids[LEVEL], train.ids[KEY], strict=True)
                    rows = np.array([k in prophet_keys for k in keys])
                    out[name] = prophet_forecast(
                        train, horizon, rows, plan.letter == "D", self.n_jobs
                    )
                tick()
            return out

        return run

    def _final_window(
        self, plan: _Plan, model_fn: Callable[[Panel, int], dict[str, np.ndarray]]
    ) -> Window:
        """Candidates refitted on the full history, as a window with no actuals."""
        panel = plan.panel
        eligible = panel.n_obs >= plan.min_history
        preds: dict[str, np.ndarray] = {}
        if eligible.any():
            for name, values in model_fn(panel.subset(eligible), self.horizon).items():
                full = np.full((panel.n_series, self.horizon), np.nan)
                full[eligible] = values
                preds[name] = full
        actual = np.full((panel.n_series, self.horizon), np.nan)
        scale = training_scales(panel, plan.season)
        return Window(panel.values.shape[1], eligible, actual, scale, preds)

    def _learn(
        self, plan: _Plan, models: list[str], windows: list[Window], final: Window, notes: list[str]
    ) -> None:
        """Combination, reconciliation, calibration and the tables, from the windows."""
        panel = plan.panel
        levels = panel.ids[LEVEL].astype(str).to_numpy()
        default: list[str] = [m for m in ("ets", "theta") if m in models] or models
        for w in windows:
            weights = self._weights(_known_before(windows, w.cutoff), models, levels, default)
            w.preds[COMBINED] = self._combined(plan, w, models, weights, default)
        # Windows all trained on less than a season scored forecasts that could not be
        # seasonal (seasonal naive was plain naive): no evidence about final forecasts that
        # have a season. They then use the default, with the seasonal naive added.
        final_windows, final_default = windows, default
        if final.cutoff >= plan.season and all(w.cutoff < plan.season for w in windows):
            final_windows = []
            if "seasonal_naive" in models:
                final_default = [*default, "seasonal_naive"]
        weights = self._weights(final_windows, models, levels, final_default)
        self.weights_ = _weights_frame(panel, models, weights)
        final.preds[COMBINED] = self._combined(plan, final, models, weights, final_default)
        short = np.flatnonzero(~final.eligible)
        if short.size:
            names = ", ".join(
                f"{panel.ids.at[i, LEVEL]}/{panel.ids.at[i, KEY]}" for i in short[:10]
            )
            notes.append(
                f"{short.size} series with fewer than {plan.min_history} observations use a "
                f"fallback (seasonal naive, or the mean under one season): {names}"
                + (" ..." if short.size > 10 else "")
            )
        output = COMBINED
        self.reconciliation_: str | None = None
        if plan.tree is not None:
            output = RECONCILED
            self.reconciliation_ = self._reconcile(plan, windows, final, levels, notes)
        self._calibrate(plan, models, windows, final, levels, output)

    def _weights(self, windows: list[Window], models: list[str], levels: np.ndarray,
                 default: list[str]) -> np.ndarray:
        """Combination weights learned from ``windows`` (all zero without any)."""
        if not windows:
            return np.zeros((len(levels), len(models)))
        scores = np.stack([_window_scores(w, models) for w in windows])
        n_scored = np.sum(np.isfinite(scores).any(axis=2), axis=0)
        weights = combination_weights(_nanmean(scores, 0), n_scored, levels, self.combine)
        if self.combine not in ("backtest_weights", "level_weights"):
            return weights
        return with_prior(weights, n_scored, np.array([m in default for m in models]))

    def _combined(
        self,
        plan: _Plan,
        window: Window,
        models: list[str],
        weights: np.ndarray,
        default: list[str],
    ) -> np.ndarray:
        """Combined forecasts of a window; fallback for ineligible series; clipped at zero."""
        train = plan.panel.head(window.cutoff)
        combined = combine(window.preds, models, weights, default) if window.preds else None
        fallback = fallback_forecast(train, window.steps, plan.season)
        if combined is None:
            combined = fallback
        combined = np.where(window.eligible[:, None] & np.isfinite(combined), combined, fallback)
        # A node that had not started at the cutoff is forecast at zero.
        return np.maximum(np.nan_to_num(combined, nan=0.0), 0.0)

    def _reconcile(
        self,
        plan: _Plan,
        windows: list[Window],
        final: Window,
        levels: np.ndarray,
        notes: list[str],
    ) -> str:
        """Reconcile every window and the final forecasts; returns the method kept.

        Every method is run in every window. The one a window publishes as ``reconciled`` is
        the one with the lowest MASE on the errors known at its cutoff (``wls_struct`` when
        none are), and MinT's covariance too comes only from those errors (``wls_struct``'s
        structural diagonal without any), so reconciled backtests
        never see past their cutoff either. The final forecasts use the method that did best
        over all windows.
        """
        tree, rows = plan.tree, plan.tree_rows
        assert tree is not None
        if not windows:
            final.preds[RECONCILED] = _reconciled(final.preds[COMBINED], tree, rows,
                                                  _DEFAULT_RECONCILIATION, windows)
            return _DEFAULT_RECONCILIATION
        methods = [*RECONCILIATIONS[:2], *(RECONCILIATIONS[2:] if len(windows) > 1 else [])]
        for w in windows:
            known = _known_before(windows, w.cutoff)
            for method in methods:
                w.preds[f"{RECONCILED}:{method}"] = _reconciled(
                    w.preds[COMBINED], tree, rows, method, known
                )
        for w in windows:
            best = _best_reconciliation(_known_before(windows, w.cutoff), methods, rows, levels)
            w.preds[RECONCILED] = w.preds[f"{RECONCILED}:{best}"]
        scores = _reconciliation_scores(windows, methods, rows, levels)
        chosen = min(methods, key=lambda m: scores[m])
        published = _level_averaged_mase(windows, [w.preds[RECONCILED] for w in windows],
                                         rows, levels)
        notes.append(
            "reconciliation: backtest MASE averaged over levels "
            + ", ".join(f"{m} {scores[m]:.3f}" for m in methods)
            + f"; kept {chosen}. The backtest's `reconciled` rows ({published:.3f}) reconcile "
            "each window with the method that did best in the windows before it "
            f"({_DEFAULT_RECONCILIATION} in the first)"
        )
        for w in windows:
            for method in methods:
                del w.preds[f"{RECONCILED}:{method}"]
        final.preds[RECONCILED] = _reconciled(final.preds[COMBINED], tree, rows, chosen, windows)
        return chosen

    def _calibrate(
        self,
        plan: _Plan,
        models: list[str],
        windows: list[Window],
        final: Window,
        levels: np.ndarray,
        output: str,
    ) -> None:
        """Conformal quantiles per model; the backtest table, metrics and the forecasts."""
        panel = plan.panel
        scored = [*models, COMBINED, *([RECONCILED] if output == RECONCILED else [])]
        tables, quantiles = [], {}
        spread: dict[str, np.ndarray] = {}
        for name in scored:
            errors = [
                _scaled_errors(w, w.preds[name], final.scale) if name in w.preds else None
                for w in windows
            ]
            usable = [e for e in errors if e is not None]
            spread[name] = series_spread(usable, levels)
            usable = [e / spread[name][:, None] for e in usable]
            quantiles[name] = conformal_quantiles(usable, levels, self.horizon) if usable else {}
            for w in windows:
                if name not in w.preds:
                    continue
                # Intervals of a backtest window come only from errors known at its cutoff.
                known = [
                    _scaled_errors(k, k.preds[name], w.scale)
                    for k in _known_before(windows, w.cutoff)
                    if name in k.preds
                ]
                own = series_spread(known, levels)
                known = [e / own[:, None] for e in known]
                q = conformal_quantiles(known, levels, w.steps) if known else {}
                pred = np.where(w.eligible[:, None], w.preds[name], np.nan)
                bands = {name: apply_quantiles(pred, w.scale * own, levels, q)}
                tables.append(window_table(panel, w, {name: pred}, bands))
        self.backtest_ = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        self.metrics_ = metrics_table(self.backtest_) if len(self.backtest_) else pd.DataFrame()
        backed = [w for w in windows if output in w.preds]
        n_errors = sum(int(np.isfinite(w.actual[w.eligible]).sum()) for w in backed)
        quantiles[output] = _widened(quantiles[output], panel, final.scale, self.horizon,
                                     len(backed), n_errors, self.notes_)
        self.quantiles_ = quantiles[output]
        self.spread_ = spread[output]
        frame = self._forecast_frame(plan, final, levels, quantiles, output)
        self.forecast_ = sane_intervals(frame, self.notes_)

    def _forecast_frame(
        self,
        plan: _Plan,
        final: Window,
        levels: np.ndarray,
        quantiles: dict[str, dict[str, np.ndarray]],
        output: str,
    ) -> pd.DataFrame:
        panel = plan.panel
        point = np.maximum(final.preds[output], 0.0)
        bands = apply_quantiles(point, final.scale * self.spread_, levels, quantiles[output])
        # Fallback series borrow the seasonal naive's calibration when it exists.
        naive_q = quantiles.get("seasonal_naive") or quantiles[output]
        fallback_rows = ~final.eligible
        if fallback_rows.any() and naive_q:
            bands[fallback_rows] = apply_quantiles(
                point[fallback_rows], final.scale[fallback_rows], levels[fallback_rows], naive_q
            )
        dates = panel.future_dates(self.horizon)
        frame = pd.DataFrame(
            {
                LEVEL: np.repeat(panel.ids[LEVEL].to_numpy(), self.horizon),
                KEY: np.repeat(panel.ids[KEY].to_numpy(), self.horizon),
                DS: np.tile(dates, panel.n_series),
                YHAT: point.ravel(),
            }
        )
        flat = bands.reshape(-1, 3)
        return frame.assign(**{YHAT_P10: flat[:, 0], YHAT_P50: flat[:, 1], YHAT_P90: flat[:, 2]})

    # --- prediction -------------------------------------------------------------------------

    def predict(self, horizon: int | None = None) -> pd.DataFrame:
        """Forecasts from the end of the fitted history.

        Args:
            horizon: periods to return, at most the fitted ``horizon`` (default all of them).

        Returns:
            ``level``, ``key``, ``ds``, ``yhat``, ``yhat_p10``, ``yhat_p50``, ``yhat_p90``;
            never negative; ``yhat`` coherent across the hierarchy given to ``fit``.

        Raises:
            RuntimeError: before ``fit``.
            ValueError: for a horizon longer than the fitted one.
        """
        if not hasattr(self, "forecast_"):
            raise RuntimeError("RevenueForecaster is not fitted: call fit() first")
        horizon = self.horizon if horizon is None else horizon
        if not 1 <= horizon <= self.horizon:
            raise ValueError(f"horizon must be between 1 and the fitted horizon {self.horizon}")
        keep = self.forecast_.groupby([LEVEL, KEY], sort=False).cumcount() < horizon
        return self.forecast_.loc[keep].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Helpers of the estimator.
# --------------------------------------------------------------------------------------------


def _weights_frame(panel: Panel, models: list[str], weights: np.ndarray) -> pd.DataFrame:
    """Normalised combination weights as a long frame: level, key, model, weight."""
    total = weights.sum(axis=1, keepdims=True)
    normalised = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    frame = pd.DataFrame(normalised, columns=models)
    frame[LEVEL] = panel.ids[LEVEL].to_numpy()
    frame[KEY] = panel.ids[KEY].to_numpy()
    return frame.melt(id_vars=[LEVEL, KEY], var_name=MODEL, value_name="weight")


def _panel_with_nodes(panel: Panel, tree: Hierarchy, notes: list[str]) -> tuple[Panel, np.ndarray]:
    """Panel with a row for every tree node (missing ones summed from the bottom), and the
    panel row of each node in tree order."""
    index = {
        (str(lv), str(k)): i
        for i, (lv, k) in enumerate(zip(panel.ids[LEVEL], panel.ids[KEY], strict=True))
    }
    bottom_rows = [
        index[(str(lv), str(k))]
        for lv, k in tree.nodes.iloc[: tree.n_bottom].itertuples(index=False)
    ]
    bottom = np.nan_to_num(panel.values[bottom_rows], nan=0.0)
    started_bottom = ~np.isnan(panel.values[bottom_rows])
    extra_ids, extra_values, rows = [], [], []
    for i, (lv, k) in enumerate(tree.nodes.itertuples(index=False)):
        key = (str(lv), str(k))
        if key in index:
            rows.append(index[key])
            continue
        members = tree.summing[i] > 0
        started = started_bottom[members].any(axis=0)
        extra_values.append(np.where(started, tree.summing[i] @ bottom, np.nan))
        extra_ids.append({LEVEL: lv, KEY: k})
        rows.append(panel.n_series + len(extra_ids) - 1)
    if extra_ids:
        notes.append(
            f"{len(extra_ids)} hierarchy node(s) had no series: history summed from their "
            "bottom nodes"
        )
        ids = pd.concat([panel.ids, pd.DataFrame(extra_ids)], ignore_index=True)
        panel = Panel(
            ids, panel.dates, np.vstack([panel.values, np.array(extra_values)]), panel.freq
        )
    _note_incoherent_history(panel, tree, np.array(rows), notes)
    return panel, np.array(rows)


def _note_incoherent_history(
    panel: Panel, tree: Hierarchy, rows: np.ndarray, notes: list[str]
) -> None:
    """Say so when the history itself does not add up (e.g. revenue not assigned to a rep)."""
    values = np.nan_to_num(panel.values[rows], nan=0.0)
    implied = tree.summing @ values[: tree.n_bottom]
    gap = np.abs(values - implied).sum(axis=1)
    size = np.abs(values).sum(axis=1)
    bad = gap > 1e-6 * np.maximum(size, 1.0)
    if bad.any():
        notes.append(
            f"history of {int(bad.sum())} node(s) differs from the sum of their bottom nodes "
            "(forecasts are made coherent with the bottom level)"
        )


def _in_sample_quantiles(panel: Panel, horizon: int, scales: np.ndarray | None = None
                         ) -> dict[str, np.ndarray]:
    """10/50/90% quantiles of scaled one-step naive errors, widened by sqrt(step).

    The last resort when no backtest window exists: a random walk's error grows with the
    square root of the horizon. ``scales`` (default each series' mean absolute one-step change)
    are the units the quantiles will be multiplied by.
    """
    diffs = np.diff(panel.values, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        own = (np.nanmean(np.abs(diffs), axis=1, keepdims=True) if diffs.size
               else np.ones((panel.n_series, 1)))
    scale = own if scales is None else np.asarray(scales, float)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (diffs / np.where(scale > 0, scale, np.nan)).ravel()
    scaled = scaled[np.isfinite(scaled)]
    base = _finite_sample_quantiles(scaled) if scaled.size else np.array([-1.0, 0.0, 1.0])
    steps = np.sqrt(np.arange(1, horizon + 1))[:, None]
    return {"": base[None, :] * steps}


def _widened(quantiles: dict[str, np.ndarray], panel: Panel, scales: np.ndarray, horizon: int,
             n_windows: int, n_errors: int, notes: list[str]) -> dict[str, np.ndarray]:
    """The conformal quantiles, widened when fewer than :data:`MIN_WINDOWS` windows or
    :data:`MIN_ERRORS` errors back them.

    The floor is a random walk's band: the quantiles of each series' scaled one-step changes,
    growing with the square root of the step (:func:`_in_sample_quantiles`). Each level's
    10% quantile becomes the lower of the two and its 90% quantile the higher.
    """
    if n_windows >= MIN_WINDOWS and n_errors >= MIN_ERRORS and quantiles:
        return quantiles
    floor = _in_sample_quantiles(panel, horizon, scales)[""]
    if not quantiles:
        notes.append("no backtest window: 80% intervals are a random walk's (quantiles of the "
                     "one-step changes of the history, growing with the square root of the step)")
        return {"": floor}
    notes.append(
        f"intervals rest on {n_windows} backtest window(s) and {n_errors} errors (fewer than "
        f"{MIN_WINDOWS} or {MIN_ERRORS}): widened to at least a random walk's (quantiles of the "
        "one-step changes of the history, growing with the square root of the step)")
    out = {}
    for name, q in quantiles.items():
        wide = q.copy()
        wide[:, 0] = np.minimum(q[:, 0], floor[: len(q), 0])
        wide[:, 2] = np.maximum(q[:, 2], floor[: len(q), 2])
        out[name] = wide
    return out


def sane_intervals(frame: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Forecast rows checked before they are written: no negative revenue, quantiles in order
    and the mean inside its own 80% band (a band that excludes its mean says the errors it was
    calibrated on were one-sided: it is stretched to the mean, and the notes say so)."""
    frame = frame.copy()
    cols = [YHAT, YHAT_P10, YHAT_P50, YHAT_P90]
    values = np.maximum(frame[cols].to_numpy(float), 0.0)
    point, bands = values[:, 0], np.sort(values[:, 1:], axis=1)
    outside = np.isfinite(point) & ((point > bands[:, 2]) | (point < bands[:, 0]))
    if outside.any():
        notes.append(
            f"{int(outside.sum())} forecast(s) lay outside their own 80% band (one-sided "
            "backtest errors): the band was stretched to include the mean")
        bands[:, 0] = np.fmin(bands[:, 0], point)
        bands[:, 2] = np.fmax(bands[:, 2], point)
    frame[cols] = np.column_stack([point, bands])
    return frame


def _known_before(windows: list[Window], cutoff: int) -> list[Window]:
    """The parts of earlier windows whose test periods lie before ``cutoff``."""
    known = []
    for w in windows:
        steps = min(w.steps, cutoff - w.cutoff)
        if steps <= 0:
            continue
        preds = {name: values[:, :steps] for name, values in w.preds.items()}
        known.append(Window(w.cutoff, w.eligible, w.actual[:, :steps], w.scale, preds))
    return known


def _reconciled(
    base: np.ndarray, tree: Hierarchy, rows: np.ndarray, method: str, others: Sequence[Window]
) -> np.ndarray:
    """Reconciled forecasts of all series: tree nodes made coherent, other series unchanged.

    Bottom forecasts are clipped at zero before summing so that every level stays
    non-negative and coherent. MinT (shrink) takes its covariance from ``others``' errors
    (the structural diagonal without any).
    """
    out = base.copy()
    node_base = np.nan_to_num(base[rows], nan=0.0)
    bottom = node_base[: tree.n_bottom]
    if method == "wls_struct" or (method == "mint_shrink" and not others):
        # MinT with the structural diagonal (each node's variance proportional to its number
        # of bottom nodes): needs no errors at all (Athanasopoulos et al. 2017).
        covariance = np.diag(tree.summing.sum(axis=1))
        bottom = mint_projection(tree.summing, covariance) @ node_base
    elif method == "mint_shrink":
        errors = np.hstack(
            [
                np.nan_to_num(w.actual[rows], nan=0.0)
                - np.nan_to_num(w.preds[COMBINED][rows], nan=0.0)
                for w in others
            ]
        )
        bottom = mint_projection(tree.summing, shrunk_covariance(errors)) @ node_base
    out[rows] = tree.summing @ np.maximum(bottom, 0.0)
    return out


def _reconciliation_scores(
    windows: list[Window], methods: list[str], rows: np.ndarray, levels: np.ndarray
) -> dict[str, float]:
    """Each method's backtest MASE over ``windows``, averaged within and then across levels."""
    return {
        m: _level_averaged_mase(
            windows, [w.preds[f"{RECONCILED}:{m}"] for w in windows], rows, levels
        )
        for m in methods
    }


def _best_reconciliation(
    known: list[Window], methods: list[str], rows: np.ndarray, levels: np.ndarray
) -> str:
    """The method with the lower MASE on the known errors; bottom-up without any."""
    if not known or len(methods) == 1:
        return _DEFAULT_RECONCILIATION
    scores = _reconciliation_scores(known, methods, rows, levels)
    return min(methods, key=lambda m: scores[m])


def _level_averaged_mase(
    windows: list[Window], preds: list[np.ndarray], rows: np.ndarray, levels: np.ndarray
) -> float:
    """Backtest MASE of the tree nodes, averaged within each level and then across levels."""
    per_window = []
    for w, pred in zip(windows, preds, strict=True):
        scale = np.where(w.scale > 0, w.scale, np.nan)
        per_window.append(_nanmean(np.abs(w.actual - pred), axis=1) / scale)
    mase = _nanmean(np.stack(per_window), axis=0)[rows]
    node_levels = levels[rows]
    return float(np.nanmean([np.nanmean(mase[node_levels == lv]) for lv in np.unique(node_levels)]))
