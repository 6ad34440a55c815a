"""The run rate: revenue of the rest of a period that is not yet in the pipeline.

Revenue "not yet in the pipeline" at a date ``T'`` is revenue from unlinked orders (repeat
business) and from deals created on or after ``T'``. It is estimated per rep by a trailing
rate whose own backtest chooses its recency weights and measures its errors
(:func:`estimate_run_rate`): draws are lognormal around the estimate, with a company-wide factor
shared by all reps in a draw (a good or bad quarter for everyone), factors shared by the reps of
a region and of a team, and an independent factor per rep (:class:`RunRate`).

Dates are whole day numbers here (:func:`day_number`); :class:`RestOfPeriod` says where the rest
of the period lies as seen from ``as_of``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.schemas import AMOUNT, CREATED_AT, DS

__all__ = [
    "DEFAULT_COMMON_SIGMA",
    "DEFAULT_REP_SIGMA",
    "HALF_LIFE_GRID",
    "MIN_INDEPENDENT_WINDOWS",
    "RestOfPeriod",
    "RunRate",
    "choose_half_life",
    "day_number",
    "estimate_run_rate",
    "seasonal_index",
]

_WEEK = 7
_YEAR_WEEKS = 52
# Prior of the company-wide log spread of the run rate, and its weight in windows.
COMMON_SIGMA_PRIOR = 0.06
PRIOR_WINDOWS = 4.0
# Half-lives (weeks) of the weights of past windows in the run-rate level: the backtest picks
# the one whose predictions erred least (fast for books that step up or down, slow for steady
# ones).
HALF_LIFE_GRID = (2.0, 4.0, 8.0, 13.0, 26.0)
# Dispersion of the run rate when there is no backtest to measure it on (log scale).
DEFAULT_COMMON_SIGMA = 0.20
DEFAULT_REP_SIGMA = 0.45
# Independent backtest windows (weekly backtests / window length in weeks) the run-rate
# spread needs; with fewer it is widened towards at least the defaults above, and said so.
MIN_INDEPENDENT_WINDOWS = 2


# === days ======================================================================================


def day_number(value: Any) -> int:
    """A date as whole days since 1970 (dates are taken at midnight)."""
    return int(np.datetime64(pd.Timestamp(value).normalize().as_unit("ns"), "D").astype(np.int64))


def _days(values: pd.Series) -> np.ndarray:
    """Dates as float days since 1970; NaT becomes NaN."""
    out = values.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)
    return np.where(values.isna().to_numpy(), np.nan, out.astype(float))


@dataclass(frozen=True)
class RestOfPeriod:
    """Where the rest of the period lies, seen from ``as_of`` (in days)."""

    as_of: int
    start: int
    end: int

    @property
    def offset(self) -> int:
        """Days from ``as_of`` to the first day still to come in the period."""
        return max(self.start - self.as_of, 0)

    @property
    def length(self) -> int:
        """Days of the period still to come."""
        return max(self.end - max(self.as_of, self.start), 0)


# === run rate: revenue not yet in the pipeline ================================================


@dataclass(frozen=True)
class RunRate:
    """Per rep: the run-rate estimate for the rest of the period and its error model.

    A draw is ``(mean + shift) * exp(bias_common + bias + sigma_common * Z + sum_g
    sigma_g * Z_g + sigma * Z_rep) - shift`` with ``Z`` shared by all reps in a draw, ``Z_g``
    shared by the reps of one group (one team, one region) and ``Z_rep`` independent: the
    distribution of the estimator's backtested log errors, with the correlation between reps
    of a team or region kept. The shift keeps windows whose revenue can be zero or negative on
    a sensible log scale; it is each rep's own (a quarter of its typical window), so a small
    book is not stretched by a big one's scale, and a draw never goes below ``floor``, the
    lowest window the rep's history holds (0 unless returns made a window negative).

    Attributes:
        mean: point estimate per rep (the estimator's prediction).
        shift: additive shift of the log scale, per rep.
        bias: per-rep mean log error (shrunk), added to ``bias_common``.
        sigma: per-rep log-scale spread of the idiosyncratic error.
        bias_common: mean company log error (shrunk).
        sigma_common: spread of the company-wide factor.
        group_codes: for each grouping (region, team), the group index of every rep.
        group_sigmas: for each grouping, the spread of its shared factor.
        active: reps that ever had run-rate revenue (others are exactly zero).
        backtests: number of past windows the error model was measured on.
        seasonal: the seasonal / growth factor applied to the trailing mean.
        notes: how the estimate was made, in plain words.
        floor: lowest value a rep's draw may take (default 0: no negative run rate).
    """

    mean: np.ndarray
    shift: np.ndarray | float
    bias: np.ndarray
    sigma: np.ndarray
    bias_common: float
    sigma_common: float
    active: np.ndarray
    group_codes: tuple[np.ndarray, ...] = ()
    group_sigmas: tuple[float, ...] = ()
    backtests: int = 0
    seasonal: float = 1.0
    notes: tuple[str, ...] = ()
    floor: np.ndarray | float = 0.0

    @classmethod
    def zero(cls, n_reps: int) -> RunRate:
        """No run rate (the period is over)."""
        zeros = np.zeros(n_reps)
        return cls(zeros, 1.0, zeros, zeros, 0.0, 0.0, np.zeros(n_reps, bool))

    def expected(self) -> np.ndarray:
        """Mean of the draws per rep (lognormal mean; the floor, rarely reached, ignored)."""
        var = self.sigma_common**2 + self.sigma**2 + sum(s**2 for s in self.group_sigmas)
        scale = np.exp(self.bias_common + self.bias + var / 2)
        return np.where(self.active, (self.mean + self.shift) * scale - self.shift, 0.0)

    def central(self) -> np.ndarray:
        """Median of the draws per rep (the floor aside): unlike :meth:`expected`, not blown
        up by the wide spread of a rep with a short or erratic history."""
        scale = np.exp(self.bias_common + self.bias)
        return np.where(self.active, (self.mean + self.shift) * scale - self.shift, 0.0)

    def draw(self, draws: int, rng: np.random.Generator) -> np.ndarray:
        """``draws x reps`` run-rate draws."""
        return self.from_normals([rng.standard_normal((draws, width))
                                  for width in self.normal_widths()])

    def normal_widths(self) -> list[int]:
        """Columns of the standard normals a draw takes from its generator, in the order
        drawn (each a ``draws x width`` block): the company factor, one per rep, then one per
        group of each grouping."""
        return [1, len(self.mean), *(int(codes.max()) + 1 if codes.size else 0
                                     for codes in self.group_codes)]

    def from_normals(self, normals: Sequence[np.ndarray]) -> np.ndarray:
        """Run-rate draws (rows x reps) from the standard normals of :meth:`normal_widths`
        (rows of each block): :meth:`draw` for any block of draws, to the last bit."""
        common = normals[0] * self.sigma_common
        own = normals[1] * self.sigma
        log = self.bias_common + self.bias + common + own
        for codes, sigma, shared in zip(self.group_codes, self.group_sigmas, normals[2:],
                                        strict=True):
            log = log + sigma * shared[:, codes]
        values = np.maximum((self.mean + self.shift) * np.exp(log) - self.shift, self.floor)
        return np.where(self.active, values, 0.0)


def _window_sums(rep: np.ndarray, day: np.ndarray, created: np.ndarray, amount: np.ndarray,
                 n_reps: int, as_of: int, offset: int, length: int, weeks: int) -> np.ndarray:
    """Run-rate revenue of each rep in the window ``[T' + offset, T' + offset + length)`` for
    every weekly snapshot ``T' = as_of - 7k`` (k = 0..weeks-1): ``reps x weeks``.

    An event counts for ``T'`` when it falls in that window and its deal was created on or
    after ``T'`` (not yet in the pipeline then); unlinked events have ``created = +inf``.
    Each event covers a contiguous run of ``k``: a difference array per rep, then a cumsum.
    """
    x = as_of - day + offset
    k_lo = np.ceil(x / _WEEK)
    with np.errstate(invalid="ignore"):
        k_lo = np.fmax(k_lo, np.ceil((as_of - created) / _WEEK))
    k_lo = np.maximum(k_lo, 0)
    k_hi = np.minimum(np.ceil((x + length) / _WEEK) - 1, weeks - 1)
    ok = k_lo <= k_hi
    lo, hi, r, a = k_lo[ok].astype(np.int64), k_hi[ok].astype(np.int64), rep[ok], amount[ok]
    width = weeks + 1
    diff = np.bincount(r * width + lo, weights=a, minlength=n_reps * width)
    diff -= np.bincount(r * width + hi + 1, weights=a, minlength=n_reps * width)
    return np.cumsum(diff.reshape(n_reps, width), axis=1)[:, :weeks]


def _recent_weights(n: int, half_life: float) -> np.ndarray:
    """Weights of the last ``n`` windows, most recent first, halving every ``half_life``."""
    w = 0.5 ** (np.arange(n) / half_life)
    return w / w.sum()


def seasonal_index(company: np.ndarray) -> np.ndarray:
    """Each weekly window's company revenue over the centred yearly mean around it.

    NaN where the half-year on either side is not all observed (the ends of the history).
    """
    n, half = len(company), _YEAR_WEEKS // 2
    index = np.full(n, np.nan)
    if n <= 2 * half:
        return index
    csum = np.concatenate([[0.0], np.cumsum(company)])
    k = np.arange(half, n - half)
    centred = (csum[k + half + 1] - csum[k - half]) / (2 * half + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        index[k] = np.where(centred > 0, company[k] / centred, np.nan)
    return np.clip(index, 0.5, 2.0)


def _predict_at(sums: np.ndarray, j: int, lag: int, usable: int, index: np.ndarray,
                half_life: float) -> tuple[np.ndarray, float] | None:
    """Run rate per rep for snapshot ``j``, from the complete windows before it.

    The level is a recency-weighted mean of the last 52 complete windows (the most recent one
    ends exactly at the snapshot; weights halve every ``half_life`` weeks), so it follows
    churned and newly won customers instead of lagging a year. When last year's seasonal
    indices are known, each window is first divided by its index of a year earlier and the
    level is multiplied by the index of the window to forecast a year earlier (classical
    multiplicative seasonality from the company total).
    Returns the prediction and the seasonal factor it carries; None without a complete window.
    """
    lo, hi = j + lag, min(j + lag + _YEAR_WEEKS, usable)
    if lo >= hi:
        return None
    ks = np.arange(lo, hi)
    ahead = j + _YEAR_WEEKS
    target = index[ahead] if ahead < len(index) else np.nan
    last_year = np.where(ks + _YEAR_WEEKS < len(index),
                         index[np.minimum(ks + _YEAR_WEEKS, len(index) - 1)], np.nan)
    known = ~np.isnan(last_year)
    if np.isnan(target) or not known.any():
        return sums[:, lo:hi] @ _recent_weights(hi - lo, half_life), 1.0
    weights = _recent_weights(hi - lo, half_life)[known]
    level = (sums[:, ks[known]] / last_year[known]) @ (weights / weights.sum())
    factor = float(target)
    return level * factor, factor


def _shrink(value: float | np.ndarray, n_eff: float, prior_n: float) -> Any:
    return value * n_eff / (n_eff + prior_n)


@dataclass(frozen=True)
class _Errors:
    """The fitted log-error model of the run-rate estimator."""

    bias_common: float
    sigma_common: float
    bias: np.ndarray
    sigma: np.ndarray
    backtests: int
    group_sigmas: tuple[float, ...] = ()


# Company log errors, rep log errors net of the company's, and mean predictions per backtest.
Backtest = tuple[np.ndarray, np.ndarray, np.ndarray]


def _backtest_errors(sums: np.ndarray, lag: int, usable: int, shift: np.ndarray,
                     half_life: float) -> Backtest:
    """Company log errors, rep log errors net of the company's, and mean predictions.

    ``shift`` is per rep (:func:`_rep_shifts`); the company's is their median.
    """
    errors_c, errors_r, means = [], [], []
    shift_c = float(np.median(shift)) if np.size(shift) else 1.0
    index = seasonal_index(sums[:, :usable].sum(axis=0))
    for j in range(lag, min(lag + _YEAR_WEEKS, usable)):  # at most 52 backtests
        predicted = _predict_at(sums, j, lag, usable, index, half_life)
        if predicted is None:
            break
        pred, actual = predicted[0], sums[:, j]
        # Both sides floored: returns can make a short window's actual or predicted net
        # revenue negative, and the log of a negative ratio would turn every draw into NaN.
        floor, floor_c = shift * 0.05, shift_c * 0.05
        e_c = math.log(max(actual.sum() + shift_c, floor_c) / max(pred.sum() + shift_c, floor_c))
        e_r = np.log(np.maximum(actual + shift, floor) / np.maximum(pred + shift, floor))
        errors_c.append(e_c)
        errors_r.append(e_r - e_c)
        means.append(pred)
    n_reps = sums.shape[0]
    return (np.array(errors_c), np.array(errors_r).reshape(-1, n_reps),
            np.array(means).reshape(-1, n_reps))


def _shared_variance(u: np.ndarray, codes: np.ndarray, active: np.ndarray) -> float:
    """Mean covariance of the errors of two different active reps of the same group."""
    u, codes = u[:, active], codes[active]
    if codes.size < 2 or len(u) < 4:
        return 0.0
    n_groups = int(codes.max()) + 1
    group_sum = np.zeros((len(u), n_groups))
    np.add.at(group_sum.T, codes, u.T)
    own = np.zeros((len(u), n_groups))
    np.add.at(own.T, codes, (u**2).T)
    sizes = np.bincount(codes, minlength=n_groups)
    pairs = float((sizes * (sizes - 1)).sum())
    if pairs == 0:
        return 0.0
    return float(((group_sum**2 - own).sum(axis=1)).mean() / pairs)


def _group_sigmas(u: np.ndarray, groups: Sequence[np.ndarray], active: np.ndarray
                  ) -> tuple[float, ...]:
    """Spread of the shared factor of each grouping, coarsest first (region, then team).

    Reps of one team share the region's factor too, so the team's own part is what its pairs
    share beyond the region's.
    """
    out, claimed = [], 0.0
    for codes in groups:
        shared = max(_shared_variance(u, codes, active) - claimed, 0.0)
        out.append(math.sqrt(shared))
        claimed += shared
    return tuple(out)


def _best_backtest(sums: np.ndarray, lag: int, usable: int, shift: np.ndarray,
                   active: np.ndarray) -> tuple[float, Backtest]:
    """:func:`choose_half_life` and the backtest of the half-life it chose (computed once)."""
    middle = HALF_LIFE_GRID[len(HALF_LIFE_GRID) // 2]
    best = (middle, _backtest_errors(sums, lag, usable, shift, middle))
    if len(best[1][0]) < 4 or not active.any():  # nothing to choose on
        return best
    best_score = math.inf
    for half_life in HALF_LIFE_GRID:  # a handful of candidates
        backtest = (best[1] if half_life == middle
                    else _backtest_errors(sums, lag, usable, shift, half_life))
        e_c, u, _ = backtest
        score = float(np.mean((u[:, active] + e_c[:, None]) ** 2))
        if score < best_score:
            best, best_score = (half_life, backtest), score
    return best


def choose_half_life(sums: np.ndarray, lag: int, usable: int, shift: np.ndarray,
                     active: np.ndarray) -> float:
    """The half-life of :data:`HALF_LIFE_GRID` whose backtested rep predictions erred least
    (mean squared log error over the active reps and the backtest windows); the grid's
    middle value when there is nothing to backtest."""
    return _best_backtest(sums, lag, usable, shift, active)[0]


def _error_model(sums: np.ndarray, lag: int, usable: int, shift: np.ndarray,
                 groups: Sequence[np.ndarray], active: np.ndarray, half_life: float,
                 backtest: Backtest | None = None) -> _Errors:
    """Backtest the estimator on the last year of complete windows; fit the log-error model.

    The company's mean log error shifts the forecast only as far as it stands out from its
    own noise (positive-part shrinkage ``mean * max(0, 1 - se^2 / mean^2)`` with ``se`` from
    the independent windows): a year of overlapping windows often measures the seasonal phase
    of its windows rather than a lasting bias, and then it counts as spread; a lasting drift
    (a sales cycle that lengthens, say) is kept. Rep errors net of the company's keep a shrunk
    bias (a rep whose book the trailing rate keeps over- or under-estimating), and spreads are
    measured around the biases. With fewer than :data:`MIN_INDEPENDENT_WINDOWS` independent
    windows (a young history) the spreads are widened towards at least the defaults, fully
    with none. ``backtest``
    is :func:`_backtest_errors` at ``half_life`` when the caller already has it.
    """
    e_c, u, means = backtest or _backtest_errors(sums, lag, usable, shift, half_life)
    n = len(e_c)
    n_reps = sums.shape[0]
    if n < 4:
        return _Errors(0.0, DEFAULT_COMMON_SIGMA, np.zeros(n_reps),
                       np.full(n_reps, DEFAULT_REP_SIGMA), n)
    # Weekly snapshots of long windows overlap: count independent windows, not weeks.
    n_eff = max(n / max(lag, 1), 1.0)
    mean_c = float(e_c.mean())
    se2 = float(e_c.var()) / n_eff
    bias_c = mean_c * max(0.0, 1.0 - se2 / mean_c**2) if mean_c != 0 else 0.0
    # Overlapping windows make the measured company spread optimistic: shrink its variance to
    # a prior worth PRIOR_WINDOWS independent windows.
    var_c = ((e_c - bias_c) ** 2).sum() / max(n - 1, 1)
    var_c = (n_eff * var_c + PRIOR_WINDOWS * COMMON_SIGMA_PRIOR**2) / (n_eff + PRIOR_WINDOWS)
    sigma_c = float(max(np.sqrt(var_c), 0.02))
    bias_r = _shrink(u.mean(axis=0), n_eff, 4.0)
    var_r = ((u - bias_r) ** 2).mean(axis=0)
    pooled = _pooled_variance(var_r, means.mean(axis=0) + shift)
    var = (n_eff * var_r + 4.0 * pooled) / (n_eff + 4.0)
    independent = n / max(lag, 1)
    if independent < MIN_INDEPENDENT_WINDOWS:
        # Too few independent windows to trust a narrow spread: pulled up towards the
        # defaults, the more the fewer windows there are.
        w = independent / MIN_INDEPENDENT_WINDOWS
        sigma_c = math.sqrt(w * sigma_c**2 + (1 - w) * max(sigma_c, DEFAULT_COMMON_SIGMA)**2)
        var = w * var + (1 - w) * np.maximum(var, DEFAULT_REP_SIGMA**2)
    shared = _group_sigmas(u - u.mean(axis=0), groups, active)
    # What reps share is no longer theirs alone: the total per rep stays as measured.
    own = var - sum(s**2 for s in shared)
    return _Errors(bias_c, sigma_c, bias_r, np.sqrt(np.maximum(own, 0.02**2)), n, shared)


def _pooled_variance(var: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Variance expected from a rep's size: log-variance regressed on log-size across reps."""
    ok = (var > 0) & (scale > 0)
    if ok.sum() < 3:
        return np.full(var.shape, float(np.mean(var)) if var.size else DEFAULT_REP_SIGMA**2)
    x, y = np.log(scale[ok]), np.log(var[ok])
    slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(y.mean()))
    slope = float(np.clip(slope, -1.0, 0.0))  # bigger books are relatively steadier
    return np.exp(intercept + slope * np.log(np.maximum(scale, 1e-9)))


def estimate_run_rate(events: pd.DataFrame, rep_codes: np.ndarray, n_reps: int,
                      window: RestOfPeriod, data_start: int,
                      groups: Sequence[np.ndarray] = ()) -> RunRate:
    """The run rate of every rep for the rest of the period, with its backtested error model.

    Revenue "not yet in the pipeline" at a date ``T'`` is revenue from unlinked orders and
    from deals created on or after ``T'``. For every weekly ``T'`` whose window (the same
    offset and length as the rest of the period) lies wholly in the past, that revenue is
    summed per rep; the estimate at ``as_of`` is a recency-weighted mean of the last 52 such
    windows, scaled by last year's seasonal factor when two years of history allow it. The
    same estimator is run at each of the last 52 weekly dates where its outcome is known: the
    half-life of its weights is the one of :data:`HALF_LIFE_GRID` that erred least there, and
    its log errors give the spread of the draws (company-wide and per rep, shrunk to a
    size-based pool).

    Args:
        events: revenue events dated before ``as_of``, with ``ds``, ``amount`` and the linked
            deal's ``created_at`` (NaT when unlinked).
        rep_codes: the rep index of each event.
        n_reps: number of reps.
        window: the rest of the period.
        data_start: first day with revenue data; windows starting earlier are incomplete.
        groups: for each grouping of reps, coarsest first (region, team), each rep's group
            index; reps of a group share part of their error.
    """
    if window.length <= 0:
        return RunRate.zero(n_reps)
    day = _days(events[DS])
    created = _days(events[CREATED_AT])
    created = np.where(np.isnan(created), np.inf, created)
    amount = events[AMOUNT].to_numpy(dtype=float)
    weeks = max((window.as_of + window.offset - data_start) // _WEEK + 1, 1)
    sums = _window_sums(rep_codes, day, created, amount, n_reps, window.as_of, window.offset,
                        window.length, weeks)
    lag = math.ceil((window.offset + window.length) / _WEEK)
    active = np.bincount(rep_codes, weights=np.abs(amount), minlength=n_reps) > 0
    index = seasonal_index(sums.sum(axis=0))
    predicted = _predict_at(sums, 0, lag, weeks, index, HALF_LIFE_GRID[0])
    if predicted is None:
        return _pace_run_rate(rep_codes, day, created, amount, n_reps, window, data_start,
                              active)
    shift = _rep_shifts(sums[:, lag:weeks])
    half_life, backtest = _best_backtest(sums, lag, weeks, shift, active)
    mean, factor = _predict_at(sums, 0, lag, weeks, index, half_life) or predicted
    err = _error_model(sums, lag, weeks, shift, groups, active, half_life, backtest)
    groups_used = tuple(groups) if len(err.group_sigmas) == len(groups) else ()
    notes = (f"run rate: weighted mean of the last {min(weeks - lag, _YEAR_WEEKS)} weekly "
             f"windows of {window.length} days (weights halve every {half_life:g} weeks, "
             f"chosen by backtest), seasonal factor {factor:.2f}; spread from "
             f"{err.backtests} backtests" + _spread_remark(err.backtests, lag),)
    return RunRate(mean, shift, err.bias, err.sigma, err.bias_common, err.sigma_common, active,
                   groups_used, err.group_sigmas if groups_used else (), err.backtests, factor,
                   notes, np.minimum(sums[:, lag:weeks].min(axis=1, initial=0.0), 0.0))


def _rep_shifts(sums: np.ndarray) -> np.ndarray:
    """Each rep's shift of the log scale: a quarter of its typical complete window (mean of
    the positive parts), at least 1.

    One shift for all reps, taken from the median rep, let a small book's draws swing around
    the big books' scale: P50 -10 and P10 -228 for a rep that never had a negative window.
    """
    typical = np.clip(sums, 0.0, None).mean(axis=1) if sums.size else np.zeros(len(sums))
    return np.maximum(0.25 * typical, 1.0)


def _spread_remark(backtests: int, lag: int) -> str:
    """How the number of backtests bounded the spread (see :func:`_error_model`)."""
    if backtests < 4:
        return " (too few: default spread used)"
    independent = backtests / max(lag, 1)
    if independent < MIN_INDEPENDENT_WINDOWS:
        return (f" (about {independent:.1f} independent windows, fewer than "
                f"{MIN_INDEPENDENT_WINDOWS}: spread widened towards the default)")
    return ""


def _pace_run_rate(rep: np.ndarray, day: np.ndarray, created: np.ndarray, amount: np.ndarray,
                   n_reps: int, window: RestOfPeriod, data_start: int, active: np.ndarray
                   ) -> RunRate:
    """Too little history for one complete window: scale what arrived since ``data_start``."""
    span = window.as_of - data_start
    if span <= 0:
        zeros = np.zeros(n_reps)
        return RunRate(zeros, 1.0, zeros, zeros, 0.0, 0.0, np.zeros(n_reps, bool), notes=(
            "run rate: no revenue before as_of, none assumed (deals not yet in the pipeline "
            "are not counted: the outlook is a floor)",))
    new = (created >= data_start) & (day >= data_start)
    seen = np.bincount(rep[new], weights=amount[new], minlength=n_reps)
    mean = seen * window.length / span
    shift = np.maximum(0.25 * np.abs(mean), 1.0)
    return RunRate(mean, shift, np.zeros(n_reps), np.full(n_reps, DEFAULT_REP_SIGMA), 0.0,
                   DEFAULT_COMMON_SIGMA, active, notes=(
                       f"run rate: only {span} days of history, the pace since the first "
                       "revenue is scaled to the rest of the period with a default spread",),
                   floor=np.minimum(mean, 0.0))
