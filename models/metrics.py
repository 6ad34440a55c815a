"""Forecast accuracy metrics: MASE, WAPE, sMAPE, pinball loss and interval coverage.

Each metric is a small pure function over aligned 1-d arrays; NaN pairs are ignored so a
backtest window that is shorter than the horizon can be scored as it is. ``metrics_table``
turns a backtest table (``models.backtest``) into one row per group.

Conventions:

- MASE divides the mean absolute error by ``scale``, the in-sample mean absolute error of the
  seasonal naive forecast on the training part only (``mase_scale``), so it is comparable
  across series of any size and never looks at the future.
- sMAPE is a fraction in [0, 2] (not a percentage); a pair with ``y == yhat == 0`` counts as 0.
- The pinball loss reported by ``metrics_table`` is scaled like MASE (divided by ``scale``) and
  averaged over the 10%, 50% and 90% quantiles, so big series do not dominate it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import pandas as pd

from engine.schemas import KEY, LEVEL, Y

__all__ = [
    "CUTOFF",
    "MODEL",
    "SCALE",
    "YHAT",
    "YHAT_P10",
    "YHAT_P50",
    "YHAT_P90",
    "H",
    "interval_coverage",
    "mase",
    "mase_scale",
    "metrics_table",
    "pinball_loss",
    "smape",
    "wape",
]

# Columns of forecast and backtest frames (the `forecast` output, README, and
# backtests); engine/schemas.py does not name them yet, so they are named once here.
YHAT = "yhat"
YHAT_P10 = "yhat_p10"
YHAT_P50 = "yhat_p50"
YHAT_P90 = "yhat_p90"
MODEL = "model"
CUTOFF = "cutoff"
H = "h"
SCALE = "scale"

_QUANTILE_COLUMNS = {0.1: YHAT_P10, 0.5: YHAT_P50, 0.9: YHAT_P90}

ArrayLike: TypeAlias = np.ndarray | Sequence[float] | pd.Series


def _pairs(*arrays: ArrayLike) -> list[np.ndarray]:
    """Aligned float arrays with every position that is NaN in any of them dropped."""
    arrs = [np.asarray(a, dtype=float) for a in arrays]
    keep = np.logical_and.reduce([~np.isnan(a) for a in arrs])
    return [a[keep] for a in arrs]


def mase_scale(y_train: ArrayLike, season_length: int) -> float:
    """In-sample mean absolute error of the seasonal naive forecast (the MASE denominator).

    Falls back to the naive (lag 1) error when the history is not longer than one season, and
    to the mean absolute value when even that is zero or undefined, so a flat or very short
    series still gets a usable positive scale where one exists.

    Args:
        y_train: the training values, oldest first; leading NaNs (before the series started)
            are ignored.
        season_length: periods per season (12 for monthly data).

    Returns:
        The scale, or NaN when the history is empty, or 0.0 when it is all zeros.
    """
    y = np.asarray(y_train, dtype=float)
    y = y[~np.isnan(y)]
    if y.size == 0:
        return float("nan")
    lag = season_length if y.size > season_length else 1
    if y.size > lag:
        scale = float(np.mean(np.abs(y[lag:] - y[:-lag])))
        if scale > 0:
            return scale
    return float(np.mean(np.abs(y)))


def mase(y: ArrayLike, yhat: ArrayLike, scale: float) -> float:
    """Mean absolute scaled error: mean ``|y - yhat|`` divided by ``scale``."""
    yy, ff = _pairs(y, yhat)
    if yy.size == 0 or not scale > 0:
        return float("nan")
    return float(np.mean(np.abs(yy - ff)) / scale)


def wape(y: ArrayLike, yhat: ArrayLike) -> float:
    """Weighted absolute percentage error: ``sum |y - yhat| / sum |y|`` (a fraction)."""
    yy, ff = _pairs(y, yhat)
    denominator = float(np.sum(np.abs(yy)))
    if denominator == 0:
        return float("nan")
    return float(np.sum(np.abs(yy - ff)) / denominator)


def smape(y: ArrayLike, yhat: ArrayLike) -> float:
    """Symmetric MAPE as a fraction in [0, 2]: mean of ``2|y - yhat| / (|y| + |yhat|)``."""
    yy, ff = _pairs(y, yhat)
    if yy.size == 0:
        return float("nan")
    denominator = np.abs(yy) + np.abs(ff)
    # 0/0 means a perfect forecast of zero revenue: no error.
    ratio = np.divide(
        2 * np.abs(yy - ff), denominator, out=np.zeros_like(yy), where=denominator > 0
    )
    return float(np.mean(ratio))


def pinball_loss(y: ArrayLike, q: ArrayLike, tau: float) -> float:
    """Mean pinball (quantile) loss of the forecast quantile ``q`` at level ``tau``."""
    yy, qq = _pairs(y, q)
    if yy.size == 0:
        return float("nan")
    diff = yy - qq
    return float(np.mean(np.maximum(tau * diff, (tau - 1) * diff)))


def interval_coverage(
    y: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
) -> float:
    """Share of actuals inside the closed interval ``[lower, upper]``."""
    yy, lo, hi = _pairs(y, lower, upper)
    if yy.size == 0:
        return float("nan")
    return float(np.mean((yy >= lo) & (yy <= hi)))


def metrics_table(backtest: pd.DataFrame, by: Sequence[str] = (MODEL, LEVEL)) -> pd.DataFrame:
    """Accuracy of a backtest table, one row per group of ``by``.

    MASE, sMAPE and the scaled pinball loss are computed per series and origin and then
    averaged (every series counts once); WAPE and coverage pool all rows of the group (big
    series weigh more, as they do in revenue).

    Args:
        backtest: rows with ``level``, ``key``, ``cutoff``, ``y``, ``yhat``, ``scale`` and
            optionally the ``yhat_p10``/``yhat_p50``/``yhat_p90`` columns.
        by: grouping columns.

    Returns:
        ``by`` columns plus ``mase``, ``wape``, ``smape``, ``pinball``, ``coverage_80`` and
        ``n_series``.
    """
    by = list(by)
    y = backtest[Y].to_numpy(float)
    yhat = backtest[YHAT].to_numpy(float)
    scale = backtest[SCALE].to_numpy(float)
    scale = np.where(scale > 0, scale, np.nan)
    error = np.abs(y - yhat)
    denominator = np.abs(y) + np.abs(yhat)
    rows = backtest[[*by, KEY, CUTOFF]].copy()
    rows["mase"] = error / scale
    rows["smape"] = np.divide(2 * error, denominator, out=np.zeros_like(y), where=denominator > 0)
    rows["_abs_error"], rows["_abs_y"] = error, np.abs(y)
    if YHAT_P10 in backtest:
        losses = [
            _pinball(y, backtest[col].to_numpy(float), tau)
            for tau, col in _QUANTILE_COLUMNS.items()
        ]
        rows["pinball"] = np.mean(losses, axis=0) / scale
        inside = (y >= backtest[YHAT_P10].to_numpy(float)) & (
            y <= backtest[YHAT_P90].to_numpy(float)
        )
        has_interval = backtest[YHAT_P10].notna().to_numpy() & backtest[YHAT_P90].notna().to_numpy()
        rows["coverage_80"] = np.where(has_interval, inside, np.nan)
    per_origin = [c for c in ("mase", "smape", "pinball") if c in rows]
    averaged = rows.groupby([*by, KEY, CUTOFF], sort=False)[per_origin].mean().groupby(by).mean()
    grouped = rows.groupby(by)
    pooled = pd.DataFrame(
        {"wape": grouped["_abs_error"].sum() / grouped["_abs_y"].sum().replace(0, np.nan)}
    )
    if "coverage_80" in rows:
        pooled["coverage_80"] = grouped["coverage_80"].mean()
    pooled["n_series"] = grouped[KEY].nunique()
    table = averaged.join(pooled).reset_index()
    columns = [*by, "mase", "wape", "smape", "pinball", "coverage_80", "n_series"]
    return table.reindex(columns=columns)


def _pinball(y: np.ndarray, q: np.ndarray, tau: float) -> np.ndarray:
    """Row-wise pinball loss."""
    diff = y - q
    return np.maximum(tau * diff, (tau - 1) * diff)
