"""The backtest-weighted combination of the candidates' forecasts.

Each series' candidates are scored by backtest MASE. ``backtest_weights`` (default) shrinks each
series' scores towards its level's average (three windows are a noisy verdict on one series: the
level's average counts as ``_SHRINK_WINDOWS`` windows), keeps the best ``_TOP_K`` candidates and
weights them by inverse squared score. ``level_weights`` uses the level's average only,
``select`` the single best candidate, ``mean`` equal weights. Without any evidence a series gets
the mean of the default models (:func:`~models.forecast.candidates.default_models`: ETS,
AutoARIMA and AutoETS, plus Theta from four seasons of history: the M4 lesson that a combination
of statistical models beats any one of them), and the backtest weights are blended with that
default as if it had earned ``_PRIOR_WINDOWS`` windows of evidence (:func:`with_prior`): a
verdict of a few windows is noisy (on the demo company LightGBM did best in the first window, on
16 months, and worst by far in the next two), so the pull towards the default fades only as
windows accumulate (half-way with four).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from engine.schemas import KEY, LEVEL
from models.backtest import BacktestWindow, Panel
from models.forecast.base import nanmean
from models.forecast.naive import fallback_forecast, mean_forecast
from models.metrics import MODEL

__all__ = [
    "COMBINATIONS",
    "combination_weights",
    "combine",
    "combined_forecast",
    "learned_weights",
    "weights_frame",
    "window_scores",
    "with_history_mean",
    "with_prior",
]

COMBINATIONS = ("backtest_weights", "level_weights", "select", "mean")
# Candidates kept per series, and the weight (in windows) of the level's average score when
# shrinking a series' own backtest score.
_TOP_K = 4
_SHRINK_WINDOWS = 4.0
# The default models' equal weights count as this many backtest windows of evidence (selection
# on one to three windows picks wrong too often: with the usual three, the default keeps 4/7)
# (``with_prior``).
_PRIOR_WINDOWS = 4.0


def window_scores(window: BacktestWindow, models: Sequence[str]) -> np.ndarray:
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


def _level_means(scores: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each series' row replaced by its level's mean score per model."""
    out = np.full_like(scores, np.nan)
    for level in np.unique(levels):
        rows = levels == level
        out[rows] = nanmean(scores[rows], axis=0)
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
    ``default`` models (ETS, AutoARIMA, AutoETS, Theta), else of every model it has.
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


def learned_weights(
    windows: list[BacktestWindow],
    models: list[str],
    levels: np.ndarray,
    default: list[str],
    method: str,
) -> np.ndarray:
    """Combination weights learned from ``windows`` (all zero without any).

    Args:
        windows: the backtest windows to learn from (only those known at the time).
        models: the candidates, in order.
        levels: ``(n_series,)`` level of each series.
        default: the models a series without evidence averages.
        method: one of :data:`COMBINATIONS`.
    """
    if not windows:
        return np.zeros((len(levels), len(models)))
    scores = np.stack([window_scores(w, models) for w in windows])
    n_scored = np.sum(np.isfinite(scores).any(axis=2), axis=0)
    weights = combination_weights(nanmean(scores, 0), n_scored, levels, method)
    if method not in ("backtest_weights", "level_weights"):
        return weights
    return with_prior(weights, n_scored, np.array([m in default for m in models]))


def combined_forecast(
    panel: Panel,
    window: BacktestWindow,
    models: list[str],
    weights: np.ndarray,
    default: list[str],
    season: int,
) -> np.ndarray:
    """Combined forecasts of a window; fallback for ineligible series; clipped at zero."""
    train = panel.head(window.cutoff)
    combined = combine(window.preds, models, weights, default) if window.preds else None
    fallback = fallback_forecast(train, window.steps, season)
    if combined is None:
        combined = fallback
    combined = np.where(window.eligible[:, None] & np.isfinite(combined), combined, fallback)
    # A node that had not started at the cutoff is forecast at zero.
    return np.maximum(np.nan_to_num(combined, nan=0.0), 0.0)


def with_history_mean(combined: np.ndarray, train: Panel, n_default: int) -> np.ndarray:
    """``combined`` (the mean of ``n_default`` default models) averaged with each series' mean
    of ``train``, as one more model; for histories under one season.

    Under one season a model's level is wherever the part of the season it saw left it (the top
    of a December peak, a summer trough), and its trend the slope of that part: nothing in the
    data tells level, trend and season apart. The history's mean is the level that part of the
    season biases least. Off the history sweep's cells (30 ABS State x Industry series,
    origins in April, July and October, 3 to 9 months of history) it changed MASE by -1% to
    +0.3%; on the sweep's 9-month cells (January origins, after the December peak) it took the
    forecast from behind AutoETS to well ahead of it.
    """
    return (n_default * combined + mean_forecast(train, combined.shape[1])) / (n_default + 1)


def weights_frame(panel: Panel, models: list[str], weights: np.ndarray) -> pd.DataFrame:
    """Normalised combination weights as a long frame: level, key, model, weight."""
    total = weights.sum(axis=1, keepdims=True)
    normalised = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    frame = pd.DataFrame(normalised, columns=models)
    frame[LEVEL] = panel.ids[LEVEL].to_numpy()
    frame[KEY] = panel.ids[KEY].to_numpy()
    return frame.melt(id_vars=[LEVEL, KEY], var_name=MODEL, value_name="weight")
