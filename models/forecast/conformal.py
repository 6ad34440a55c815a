"""Conformal intervals from backtest errors, and the checks every forecast row passes.

Backtest errors of the final forecasts, divided by each series' MASE scale and by its spread
relative to its level (:func:`series_spread`: its own mean absolute error shrunk towards the
level's), are pooled per level and horizon step (neighbouring steps are pooled too while fewer
than ``_MIN_CALIBRATION`` errors are available, rescaled by the fitted growth of the errors with
the step, :func:`error_growth`); their 10/50/90% quantiles, times the series' scale and spread,
are added to ``yhat``. With fewer than :data:`MIN_WINDOWS` windows or :data:`MIN_ERRORS` errors
the bands are widened to at least a random walk's (:func:`widened`), and
:func:`sane_intervals` checks every forecast row before it is kept. Young histories (under two
seasons) use the errors and their opposites (:func:`mirrored`): bands centred on the forecast.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from models.backtest import BacktestWindow, Panel, known_before
from models.metrics import YHAT, YHAT_P10, YHAT_P50, YHAT_P90

__all__ = [
    "MIN_ERRORS",
    "MIN_WINDOWS",
    "apply_quantiles",
    "calibration",
    "conformal_quantiles",
    "error_growth",
    "mirrored",
    "sane_intervals",
    "scaled_errors",
    "series_spread",
    "widened",
    "window_bands",
]

_QUANTILES = (0.1, 0.5, 0.9)
# Least number of scaled errors behind one conformal quantile.
_MIN_CALIBRATION = 40
# Least number of backtest windows an interval's width may rest on; with fewer, the band is
# widened to at least a random walk's (see ``widened``).
MIN_WINDOWS = 3
# ... and least number of backtest errors (all series of a level pooled).
MIN_ERRORS = 20
# Conformal spread per series: the level's mean counts as this many errors of the series.
_SPREAD_SHRINK = 12.0


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


def scaled_errors(window: BacktestWindow, pred: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(y - yhat) / scale`` of a window's eligible series; NaN elsewhere or without a scale.

    ``scale`` is the one the quantiles will be multiplied by (the series' scale at the time of
    the forecast being calibrated), so that errors from windows with shorter histories, whose
    own MASE scale may be defined differently (lag 1 under one season), pool consistently.
    """
    safe = np.where(scale > 0, scale, np.nan)
    errors = (window.actual - pred) / safe[:, None]
    errors[~window.eligible] = np.nan
    return errors


def mirrored(errors: list[np.ndarray], symmetric: bool) -> list[np.ndarray]:
    """``errors`` and, when ``symmetric``, their opposites: quantiles of the result give a band
    centred on the forecast whose half-width is the 80% quantile of the absolute errors.

    A young series' few backtest windows cover part of one season, and the sign of their errors
    says which part (the run-up to a December peak: all under-forecasts), not a lasting bias:
    the next months can as well be on the other side. Their size still says how far off a
    forecast of that series goes.
    """
    return [*errors, *(-e for e in errors)] if symmetric else errors


def calibration(
    windows: list[BacktestWindow],
    name: str,
    scale: np.ndarray,
    levels: np.ndarray,
    horizon: int,
    symmetric: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The quantiles (:func:`conformal_quantiles`) and the spread (:func:`series_spread`) of
    model ``name``'s forecasts from the errors of every window, in units of ``scale`` (the
    scale of the forecasts they will calibrate); ``symmetric``: see :func:`mirrored`."""
    usable = [scaled_errors(w, w.preds[name], scale) for w in windows if name in w.preds]
    spread = series_spread(usable, levels)
    usable = mirrored([e / spread[:, None] for e in usable], symmetric)
    return (conformal_quantiles(usable, levels, horizon) if usable else {}), spread


def window_bands(
    windows: list[BacktestWindow], window: BacktestWindow, name: str, levels: np.ndarray,
    symmetric: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Model ``name``'s forecasts of one backtest window (NaN on ineligible series) and their
    ``(n_series, steps, 3)`` bands, calibrated only on the errors known at its cutoff."""
    known = [
        scaled_errors(k, k.preds[name], window.scale)
        for k in known_before(windows, window.cutoff)
        if name in k.preds
    ]
    own = series_spread(known, levels)
    known = mirrored([e / own[:, None] for e in known], symmetric)
    q = conformal_quantiles(known, levels, window.steps) if known else {}
    pred = np.where(window.eligible[:, None], window.preds[name], np.nan)
    return pred, apply_quantiles(pred, window.scale * own, levels, q)


def _in_sample_quantiles(panel: Panel, horizon: int, scales: np.ndarray | None = None,
                         symmetric: bool = False) -> dict[str, np.ndarray]:
    """10/50/90% quantiles of scaled one-step naive errors (and their opposites when
    ``symmetric``), widened by sqrt(step).

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
    if symmetric:
        scaled = np.concatenate([scaled, -scaled])
    base = _finite_sample_quantiles(scaled) if scaled.size else np.array([-1.0, 0.0, 1.0])
    steps = np.sqrt(np.arange(1, horizon + 1))[:, None]
    return {"": base[None, :] * steps}


def widened(quantiles: dict[str, np.ndarray], panel: Panel, scales: np.ndarray, horizon: int,
            n_windows: int, n_errors: int, notes: list[str], symmetric: bool = False
            ) -> dict[str, np.ndarray]:
    """The conformal quantiles, widened when fewer than :data:`MIN_WINDOWS` windows or
    :data:`MIN_ERRORS` errors back them.

    The floor is a random walk's band: the quantiles of each series' scaled one-step changes,
    growing with the square root of the step (:func:`_in_sample_quantiles`). Each level's
    10% quantile becomes the lower of the two and its 90% quantile the higher.
    """
    if n_windows >= MIN_WINDOWS and n_errors >= MIN_ERRORS and quantiles:
        return quantiles
    floor = _in_sample_quantiles(panel, horizon, scales, symmetric)[""]
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
