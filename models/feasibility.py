"""Target feasibility: a Monte Carlo of the period's revenue for every node, and recalibration.

The revenue of a period, for every node of the hierarchy, is simulated as the sum of

1. **closed to date**: revenue dated in the period before ``as_of`` (known, no uncertainty);
2. **open pipeline**: each deal open at ``as_of`` is won *inside the period* with its calibrated
   probability (the win / slip model, :mod:`models.win`), independently per deal and draw, and
   then brings its amount. A deal expected to close after the period end is never counted (it
   is the next period's pipeline);
3. **revenue not yet in the pipeline** (the run rate): unlinked repeat orders plus deals that
   will be created and won before the period ends. Estimated per rep by a backtested trailing
   rate (:func:`estimate_run_rate`) with a lognormal error whose spread was measured on the
   same estimator's past errors: a company-wide factor shared by all reps in a draw (a good or
   bad quarter for everyone) times an independent factor per rep;
4. **churn**, where revenue recurs: the run rate is estimated from history that already
   contains the usual churn, so churn scores enter only as a *deviation* from it — each
   customer's expected loss over the rest of the period minus the revenue-weighted average
   expected loss (which the trailing rate already holds). This moves run rate between reps
   and leaves the company total unchanged; nothing is counted twice.

Everything is drawn for bottom *cells* (a rep, with its team, region and any extra target level
such as ``product``), and every node's draws are sums of its cells' draws (a sparse matrix
product), so every node's distribution is coherent with its children's: the parent's draws are
the sum of the children's draws, never a sum of quantiles. Deals are simulated with 16-bit
uniforms in float32 chunks on a few threads (:func:`simulate_deals`); there is no Python loop
over deals or reps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from engine.io import Tables
from engine.periods import period_bounds
from engine.schemas import (
    AMOUNT,
    AS_OF,
    CLOSE_DATE,
    COMPANY_KEY,
    CREATED_AT,
    CUSTOMER_ID,
    DS,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    PERIOD,
    REGION,
    REP,
    STATUS,
    STATUS_OPEN,
    STATUS_WON,
    TARGETS,
    TEAM,
)
from features.deals import (
    LABEL,
    deal_inputs,
    deal_snapshot_dates,
    deal_snapshots,
    period_features,
    win_training_rows,
)
from features.hierarchy import (
    UNASSIGNED,
    attribute_revenue,
    customer_column,
    customer_nodes,
    opportunity_nodes,
    rep_hierarchy,
)
from models.churn import CHURN_PROBABILITY
from models.win import FLAT_WIN_RATE, WIN_PROBABILITY, StageRateWinModel

__all__ = [
    "EXTRA_COLUMNS",
    "FEASIBILITY_COLUMNS",
    "RECALIBRATION_COLUMNS",
    "CellInputs",
    "Method",
    "RunRate",
    "Simulation",
    "build_inputs",
    "choose_half_life",
    "churn_adjustment",
    "estimate_run_rate",
    "feasibility",
    "feasibility_with_simulation",
    "fit_stage_rates",
    "interval_problems",
    "recalibrate",
    "simulate",
    "simulate_deals",
    "simulate_period",
    "summarise",
]

# --- output vocabulary ----------------------------------------------------------------------
TARGET = "target"
CLOSED_TO_DATE = "closed_to_date"
P_ATTAIN = "p_attain"
EXPECTED = "expected"
P10, P50, P90 = "p10", "p50", "p90"
GAP = "gap"
MUST_HIT = "must_hit"
STRETCH = "stretch"
PIPELINE_NEEDED = "pipeline_needed_for_p80"
FEASIBILITY_COLUMNS = (PERIOD, LEVEL, KEY, TARGET, CLOSED_TO_DATE, P_ATTAIN, EXPECTED,
                       P10, P50, P90, GAP, MUST_HIT, STRETCH, PIPELINE_NEEDED)
EXPECTED_PIPELINE = "expected_pipeline"
EXPECTED_RUN_RATE = "expected_run_rate"
CHURN_ADJUSTMENT = "churn_adjustment"
PIPELINE_IN_PERIOD = "pipeline_in_period"
DEALS_IN_PERIOD = "deals_in_period"
EXTRA_COLUMNS = (AS_OF, EXPECTED_PIPELINE, EXPECTED_RUN_RATE, CHURN_ADJUSTMENT,
                 PIPELINE_IN_PERIOD, DEALS_IN_PERIOD)
RECALIBRATED_TARGET = "recalibrated_target"
P_ATTAIN_BEFORE = "p_attain_before"
P_ATTAIN_AFTER = "p_attain_after"
RECALIBRATION_COLUMNS = (PERIOD, LEVEL, KEY, TARGET, RECALIBRATED_TARGET,
                         P_ATTAIN_BEFORE, P_ATTAIN_AFTER)

MUST_HIT_QUANTILE = 0.10  # reached with 90% probability
STRETCH_QUANTILE = 0.70  # reached with 30% probability
P80_QUANTILE = 0.20  # the revenue reached with 80% probability
# The horizon churn_probability refers to unless told otherwise (train_churn's default).
CHURN_HORIZON_DAYS = 180
CELL = "_cell"
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
_LEVEL_ORDER = {level: i for i, level in enumerate(HIERARCHY_LEVELS)}
Method = Literal["even_probability", "proportional_p50"]


# === days ======================================================================================


def _day(value: Any) -> int:
    """A date as whole days since 1970 (dates are taken at midnight)."""
    return int(np.datetime64(pd.Timestamp(value).normalize().as_unit("ns"), "D").astype(np.int64))


def _days(values: pd.Series) -> np.ndarray:
    """Dates as float days since 1970; NaT becomes NaN."""
    out = values.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)
    return np.where(values.isna().to_numpy(), np.nan, out.astype(float))


@dataclass(frozen=True)
class Window:
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

    def draw(self, draws: int, rng: np.random.Generator) -> np.ndarray:
        """``draws x reps`` run-rate draws."""
        n = len(self.mean)
        common = rng.standard_normal((draws, 1)) * self.sigma_common
        own = rng.standard_normal((draws, n)) * self.sigma
        log = self.bias_common + self.bias + common + own
        for codes, sigma in zip(self.group_codes, self.group_sigmas, strict=True):
            shared = rng.standard_normal((draws, int(codes.max()) + 1 if codes.size else 0))
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


def estimate_run_rate(events: pd.DataFrame, rep_codes: np.ndarray, n_reps: int, window: Window,
                      data_start: int, groups: Sequence[np.ndarray] = ()) -> RunRate:
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
                   n_reps: int, window: Window, data_start: int, active: np.ndarray) -> RunRate:
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


# === churn ====================================================================================


def churn_adjustment(scores: pd.DataFrame, customer_revenue: pd.Series, window_days: int,
                     horizon_days: int = CHURN_HORIZON_DAYS) -> pd.Series:
    """Per customer: the change in expected run-rate revenue that churn scores call for.

    The trailing run rate already contains the usual churn, so only the deviation from it is
    applied: ``-(loss - average loss)`` where ``loss = p_window * revenue_in_window / 2``
    (a customer who leaves somewhere in the window loses on average half of it), ``p_window``
    turns ``churn_probability`` over ``horizon_days`` into the window's length, and the average
    is weighted by revenue. The adjustments sum to zero over all customers.

    Args:
        scores: ``customer_id`` and ``churn_probability``.
        customer_revenue: expected run-rate revenue of each customer in the window, by id.
        window_days: days of the period still to come.
        horizon_days: the horizon ``churn_probability`` refers to.
    """
    p = scores.set_index(CUSTOMER_ID)[CHURN_PROBABILITY].astype(float).clip(0.0, 1.0)
    revenue = customer_revenue[customer_revenue > 0]
    p = p.reindex(revenue.index)
    p = p.fillna(float(p.mean()) if p.notna().any() else 0.0)
    p_window = 1.0 - (1.0 - p) ** (window_days / horizon_days)
    loss = p_window * revenue / 2.0
    if revenue.sum() <= 0:
        return pd.Series(0.0, index=revenue.index)
    average = loss.sum() / revenue.sum()
    return -(loss - average * revenue)


# === deals ====================================================================================


def _clt_deals(p: np.ndarray, amount: np.ndarray, cell: np.ndarray, n_cells: int,
               max_share: float, min_count: int) -> np.ndarray:
    """Deals small enough to be summed as a normal: each at most ``max_share`` of its cell's
    standard deviation, in a cell with at least ``min_count`` such deals."""
    if max_share <= 0 or len(p) == 0:
        return np.zeros(len(p), dtype=bool)
    sd = np.sqrt(np.bincount(cell, p * (1 - p) * amount**2, n_cells))
    small = amount <= max_share * sd[cell]
    count = np.bincount(cell[small], minlength=n_cells)
    return small & (count[cell] >= min_count)


def simulate_deals(p: np.ndarray, amount: np.ndarray, cell: np.ndarray, n_cells: int,
                   draws: int, seed: int, *, threads: int | None = None,
                   chunk_elements: int = 4_000_000, clt_max_share: float = 0.2,
                   clt_min_count: int = 50) -> np.ndarray:
    """Wins of independent deals summed per cell: ``draws x n_cells`` (float64).

    Each deal is won with probability ``p`` in each draw and then brings ``amount``. Uniforms
    are 16-bit slices of the bit generator's raw output (four per 64-bit word), so ``p`` is
    resolved to 1/65,536; deals with ``p`` at or above ``1 - 1/131,072`` are won in every draw
    and deals with ``p`` of 0 are skipped. Chunks of draws are independent streams spawned
    from ``seed``, so the result does not depend on ``threads``.

    Many small deals in one cell add up to a near-normal total (central limit theorem): deals
    whose amount is at most ``clt_max_share`` of their cell's standard deviation, in cells with
    at least ``clt_min_count`` of them, are drawn as one normal per cell with the exact mean
    and variance of their Bernoulli sum; the lumpy deals that shape the tails stay exact. Set
    ``clt_max_share=0`` to draw every deal.

    Args:
        p: win probability per deal.
        amount: amount per deal.
        cell: the cell index of each deal.
        n_cells: number of cells.
        draws: number of draws.
        seed: random seed.
        threads: worker threads (default: up to 2, the cores we share).
        chunk_elements: draws x deals per chunk (memory is about 7 bytes each).
        clt_max_share: largest deal, relative to its cell's standard deviation, drawn as part
            of the cell's normal.
        clt_min_count: fewest small deals in a cell for the normal to be used.
    """
    out = np.zeros((draws, n_cells))
    p = np.asarray(p, dtype=float)
    amount = np.asarray(amount, dtype=float)
    thr = np.round(p * 65536.0)
    certain = thr >= 65536
    if certain.any():
        out += np.bincount(cell[certain], weights=amount[certain], minlength=n_cells)
    keep = (thr > 0) & ~certain
    small = keep & _clt_deals(p, amount, cell, n_cells, clt_max_share, clt_min_count)
    normal_seed, bernoulli_seed = np.random.SeedSequence(seed).spawn(2)
    if small.any():
        mean = np.bincount(cell[small], p[small] * amount[small], n_cells)
        sd = np.sqrt(np.bincount(cell[small], (p * (1 - p) * amount**2)[small], n_cells))
        used = np.flatnonzero(sd > 0)
        z = np.random.default_rng(normal_seed).standard_normal((draws, used.size))
        out[:, used] += mean[used] + z * sd[used]
    keep &= ~small
    if not keep.any() or draws == 0:
        return out
    order = np.argsort(cell[keep], kind="stable")
    cells = cell[keep][order]
    thr16 = thr[keep][order].astype(np.uint16)
    amt = np.asarray(amount, dtype=np.float32)[keep][order]
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    targets = cells[starts]
    n = len(thr16)
    size = max(1, min(draws, chunk_elements // n))
    bounds = [(lo, min(lo + size, draws)) for lo in range(0, draws, size)]
    streams = bernoulli_seed.spawn(len(bounds))

    def run(i: int) -> None:
        lo, hi = bounds[i]
        rows = hi - lo
        bits = np.random.PCG64(streams[i]).random_raw((rows * n + 3) // 4)
        uniforms = bits.view(np.uint16)[: rows * n].reshape(rows, n)
        won = np.multiply(uniforms < thr16, amt, dtype=np.float32)
        out[lo:hi, targets] += np.add.reduceat(won, starts, axis=1)

    workers = threads or min(2, os.cpu_count() or 1)
    if workers == 1 or len(bounds) == 1:
        for i in range(len(bounds)):
            run(i)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, range(len(bounds))))
    return out


# === cells, nodes and the simulation ============================================================


@dataclass
class CellInputs:
    """Everything the simulation needs, at the level of bottom cells.

    A cell is a rep together with its team, region and the keys of any extra target level
    (``product``, ``segment``...). Attributes ending in ``_cell`` index ``cells``.

    Attributes:
        cells: one row per cell: ``rep``, ``team``, ``region`` and the extra levels.
        rep_of_cell: the rep index (into ``reps``) of each cell.
        reps: rep names.
        closed_cell: revenue closed to date per cell.
        deal_cell, deal_p, deal_amount: open deals: cell, in-period win probability, amount.
        run_rate: run rate per rep.
        share_cell: share of its rep's run rate that goes to each cell (sums to 1 per rep).
        churn_rep: churn adjustment per rep (added to its run rate).
        levels: the levels of the nodes, hierarchy first.
        pipeline_sigma: spread of the company-wide factor that multiplies every cell's
            pipeline wins in a draw (deals of one period share fortunes).
    """

    cells: pd.DataFrame
    rep_of_cell: np.ndarray
    reps: np.ndarray
    closed_cell: np.ndarray
    deal_cell: np.ndarray
    deal_p: np.ndarray
    deal_amount: np.ndarray
    run_rate: RunRate
    share_cell: np.ndarray
    churn_rep: np.ndarray
    levels: list[str]
    conversion: float = float("nan")
    notes: list[str] = field(default_factory=list)
    pipeline_sigma: float = 0.0


@dataclass
class Simulation:
    """Simulated period revenue for every node.

    Attributes:
        nodes: ``level``, ``key`` and ``parent`` (row number of the parent node, -1 for the
            company) of each node; hierarchy levels nest (rep > team > region > company),
            extra levels hang directly under the company.
        draws: ``draws x nodes`` total period revenue (closed to date included).
        closed: closed-to-date revenue per node.
        expected_pipeline, expected_run_rate, churn: mean of each component per node.
        pipeline_in_period, deals_in_period: open deals counted (probability > 0) per node.
        conversion: historical share of pipeline won in the rest of the period.
        notes: how each component was obtained.
        lowest: the lowest revenue each node's draws may take: closed to date plus its reps'
            run-rate floors (below closed to date only where returns made past windows
            negative); ``None`` for simulations made without it.
    """

    nodes: pd.DataFrame
    draws: np.ndarray
    closed: np.ndarray
    expected_pipeline: np.ndarray
    expected_run_rate: np.ndarray
    churn: np.ndarray
    pipeline_in_period: np.ndarray
    deals_in_period: np.ndarray
    conversion: float
    notes: list[str] = field(default_factory=list)
    lowest: np.ndarray | None = None

    def node_index(self, level: str, key: str) -> int:
        """Row of a node; KeyError when absent."""
        match = np.flatnonzero((self.nodes[LEVEL] == level).to_numpy()
                               & (self.nodes[KEY] == key).to_numpy())
        if match.size == 0:
            raise KeyError(f"no node {level}={key}")
        return int(match[0])


def _node_matrix(cells: pd.DataFrame, levels: Sequence[str]) -> tuple[pd.DataFrame,
                                                                        sparse.csr_matrix]:
    """Nodes of every level and the 0/1 matrix (nodes x cells) that sums cells into them."""
    frames, rows, cols = [], [], []
    offset = 0
    for level in levels:
        keys = (np.full(len(cells), COMPANY_KEY, dtype=object) if level == LEVEL_COMPANY
                else cells[level].to_numpy(dtype=object))
        codes, uniques = pd.factorize(keys, sort=True)
        frames.append(pd.DataFrame({LEVEL: level, KEY: np.asarray(uniques, dtype=object)}))
        rows.append(codes + offset)
        cols.append(np.arange(len(cells)))
        offset += len(uniques)
    nodes = pd.concat(frames, ignore_index=True)
    matrix = sparse.csr_matrix((np.ones(sum(len(r) for r in rows)),
                                (np.concatenate(rows), np.concatenate(cols))),
                               shape=(offset, len(cells)))
    nodes["parent"] = _parents(nodes, cells, levels)
    return nodes, matrix


def _parents(nodes: pd.DataFrame, cells: pd.DataFrame, levels: Sequence[str]) -> np.ndarray:
    """Row of each node's parent: rep -> team -> region -> company; extra levels -> company."""
    index = {(lv, k): i for i, (lv, k) in enumerate(zip(nodes[LEVEL], nodes[KEY],
                                                        strict=True))}
    up = {LEVEL_REP: LEVEL_TEAM, LEVEL_TEAM: LEVEL_REGION,
          LEVEL_REGION: LEVEL_COMPANY}
    parent = np.full(len(nodes), -1, dtype=np.int64)
    company = index.get((LEVEL_COMPANY, COMPANY_KEY), -1)
    for level in levels:
        if level == LEVEL_COMPANY:
            continue
        above = up.get(level, LEVEL_COMPANY)
        if above != LEVEL_COMPANY and above not in levels:
            above = LEVEL_COMPANY
        if above == LEVEL_COMPANY:
            pairs = pd.DataFrame({level: cells[level].unique()}).assign(_up=COMPANY_KEY)
        else:
            # A team listed under several regions (no org table) takes the most frequent one.
            pairs = (cells.groupby([level, above]).size().reset_index(name="_n")
                     .sort_values([level, "_n"], ascending=[True, False], kind="stable")
                     .drop_duplicates(level).rename(columns={above: "_up"}))
        for key, up_key in zip(pairs[level], pairs["_up"], strict=True):  # nodes, not deals
            parent[index[(level, key)]] = (company if above == LEVEL_COMPANY
                                           else index[(above, up_key)])
    return parent


def simulate(inputs: CellInputs, draws: int = 10_000, seed: int = 42,
             threads: int | None = None, exact: bool = False) -> Simulation:
    """Draw the period's revenue for every cell and sum the cells into every node.

    ``exact`` draws every deal as a Bernoulli (no normal pooling of small deals, see
    :func:`simulate_deals`).
    """
    n_cells = len(inputs.cells)
    deal_seed, rate_seed, common_seed = np.random.SeedSequence(seed).spawn(3)
    deals = simulate_deals(inputs.deal_p, inputs.deal_amount, inputs.deal_cell, n_cells, draws,
                           int(deal_seed.generate_state(1)[0]), threads=threads,
                           clt_max_share=0.0 if exact else 0.2)
    if inputs.pipeline_sigma > 0:
        sigma = inputs.pipeline_sigma
        shared = np.random.default_rng(common_seed).standard_normal((draws, 1))
        deals *= np.exp(sigma * shared - sigma**2 / 2)  # mean 1: the expectation stays
    rates = inputs.run_rate.draw(draws, np.random.default_rng(rate_seed))
    # Churn moves run rate between reps; it cannot take a rep below its floor.
    floor = np.broadcast_to(np.asarray(inputs.run_rate.floor, dtype=float), rates.shape[1:])
    rates = np.maximum(rates + inputs.churn_rep, floor)
    totals = deals + rates[:, inputs.rep_of_cell] * inputs.share_cell + inputs.closed_cell
    nodes, matrix = _node_matrix(inputs.cells, inputs.levels)
    node_draws = np.asarray((matrix @ totals.T).T)
    expected_rate = ((inputs.run_rate.expected() + inputs.churn_rep)[inputs.rep_of_cell]
                     * inputs.share_cell)
    counted = inputs.deal_p > 0
    per_cell = {
        "pipeline": np.bincount(inputs.deal_cell, inputs.deal_p * inputs.deal_amount, n_cells),
        "rate": expected_rate,
        "churn": inputs.churn_rep[inputs.rep_of_cell] * inputs.share_cell,
        "amount": np.bincount(inputs.deal_cell[counted], inputs.deal_amount[counted], n_cells),
        "count": np.bincount(inputs.deal_cell[counted], minlength=n_cells).astype(float),
    }
    sums = {k: matrix @ v for k, v in per_cell.items()}
    lowest = matrix @ (inputs.closed_cell + floor[inputs.rep_of_cell] * inputs.share_cell)
    return Simulation(nodes, node_draws, matrix @ inputs.closed_cell, sums["pipeline"],
                      sums["rate"], sums["churn"], sums["amount"], sums["count"],
                      inputs.conversion, list(inputs.notes), lowest)


# === summary ==================================================================================


def _targets_of(nodes: pd.DataFrame, targets: pd.DataFrame | None, period: str) -> np.ndarray:
    if targets is None or targets.empty:
        return np.full(len(nodes), np.nan)
    chosen = targets[targets[PERIOD].astype(str) == str(period)]
    lookup = chosen.groupby([LEVEL, KEY])[AMOUNT].sum()
    index = pd.MultiIndex.from_frame(nodes[[LEVEL, KEY]].astype(object))
    return lookup.reindex(index).to_numpy(dtype=float)


def _attained(draws: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Share of draws reaching the target (a relative tolerance absorbs float sums)."""
    tolerance = 1e-9 * np.maximum(np.abs(target), 1.0)
    with np.errstate(invalid="ignore"):
        p = (draws >= (target - tolerance)[None, :]).mean(axis=0)
    return np.where(np.isnan(target), np.nan, p)


def summarise(simulation: Simulation, targets: pd.DataFrame | None, period: str,
              as_of: pd.Timestamp, *, all_nodes: bool = False) -> pd.DataFrame:
    """The feasibility frame (:data:`FEASIBILITY_COLUMNS` then :data:`EXTRA_COLUMNS`).

    ``gap`` is ``target - expected``: positive means the node is expected to fall short by
    that much, negative that it is expected to beat its target.
    """
    nodes, draws = simulation.nodes, simulation.draws
    target = _targets_of(nodes, targets, period)
    q = np.quantile(draws, [MUST_HIT_QUANTILE, P80_QUANTILE, 0.5, STRETCH_QUANTILE, 0.9],
                    axis=0) if len(draws) else np.full((5, len(nodes)), np.nan)
    expected = draws.mean(axis=0) if len(draws) else simulation.closed
    p_attain = _attained(draws, target)
    conversion = simulation.conversion if simulation.conversion > 0 else np.nan
    needed = np.where(p_attain >= 0.8, 0.0, np.maximum(target - q[1], 0.0) / conversion)
    frame = pd.DataFrame({
        PERIOD: str(period), LEVEL: nodes[LEVEL], KEY: nodes[KEY],
        TARGET: target, CLOSED_TO_DATE: simulation.closed, P_ATTAIN: p_attain,
        EXPECTED: expected, P10: q[0], P50: q[2], P90: q[4], GAP: target - expected,
        MUST_HIT: q[0], STRETCH: q[3], PIPELINE_NEEDED: needed,
        AS_OF: pd.Timestamp(as_of), EXPECTED_PIPELINE: simulation.expected_pipeline,
        EXPECTED_RUN_RATE: simulation.expected_run_rate, CHURN_ADJUSTMENT: simulation.churn,
        PIPELINE_IN_PERIOD: simulation.pipeline_in_period,
        DEALS_IN_PERIOD: simulation.deals_in_period,
    })
    problems = interval_problems(frame, simulation.lowest)
    if not all_nodes:
        frame = frame[frame[TARGET].notna()]
    order = frame[LEVEL].map(_LEVEL_ORDER).fillna(len(_LEVEL_ORDER))
    frame = frame.assign(_order=order).sort_values(["_order", LEVEL, KEY], kind="stable")
    frame = frame.drop(columns="_order").reset_index(drop=True)
    frame.attrs["notes"] = list(simulation.notes) + problems
    return frame


def interval_problems(frame: pd.DataFrame, lowest: np.ndarray | None = None,
                      tolerance: float = 1e-6) -> list[str]:
    """What is wrong with the intervals of a feasibility frame, in plain words (none: ``[]``).

    Checked before anything is written: quantiles in order (``p10 <= p50 <= p90``), and no
    quantile below the lowest revenue the node can have: what it already closed, less only
    what returns took in past windows (``lowest``, per row of ``frame``; without it, closed
    to date).
    """
    q = frame[[P10, P50, P90]].to_numpy(dtype=float)
    closed = frame[CLOSED_TO_DATE].to_numpy(dtype=float)
    bound = closed if lowest is None else np.minimum(np.asarray(lowest, dtype=float), closed)
    slack = tolerance * np.maximum(np.abs(q).max(axis=1, initial=0.0), 1.0)
    names = frame[LEVEL].astype(str) + "=" + frame[KEY].astype(str)
    problems = []
    unordered = (np.diff(q, axis=1) < -slack[:, None]).any(axis=1)
    if unordered.any():
        problems.append(f"interval check: quantiles out of order for {_some(names[unordered])}")
    below = q[:, 0] < bound - slack
    if below.any():
        problems.append(f"interval check: P10 below the revenue already closed (or below zero) "
                        f"for {_some(names[below])}")
    return problems


def _some(names: pd.Series, shown: int = 5) -> str:
    listed = ", ".join(names.iloc[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


# === building the inputs from tables ============================================================


def _extra_levels(targets: pd.DataFrame | None, period: str,
                  levels: Sequence[str] | None) -> list[str]:
    wanted = list(levels or [])
    if targets is not None:
        chosen = targets[targets[PERIOD].astype(str) == str(period)]
        wanted += [lv for lv in chosen[LEVEL].unique() if lv not in HIERARCHY_LEVELS]
    return sorted({lv for lv in wanted if lv not in HIERARCHY_LEVELS})


def _node_columns(extra: Sequence[str]) -> list[str]:
    return [REP, TEAM, REGION, *extra]


def _filled(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for column in columns:
        values = frame[column] if column in frame.columns else pd.Series(np.nan, frame.index)
        out[column] = values.astype(object).where(values.notna(), UNASSIGNED).astype(str)
    return out


def _deal_nodes(tables: Tables, deals: pd.DataFrame, extra: Sequence[str]) -> pd.DataFrame:
    """Node columns of each open deal: its owner's rep/team/region and the extra levels."""
    nodes = opportunity_nodes(tables).drop_duplicates(OPPORTUNITY_ID).set_index(
        OPPORTUNITY_ID)
    out = pd.DataFrame({c: deals[OPPORTUNITY_ID].map(nodes[c]) for c in (REP, TEAM,
                                                                           REGION)},
                       index=deals.index)
    customers = deals.get(CUSTOMER_ID, pd.Series(np.nan, index=deals.index, dtype=object))
    for level in extra:
        own = deals[level] if level in deals.columns else pd.Series(np.nan, deals.index)
        out[level] = own.where(own.notna(), customer_column(tables, level, customers))
    return _filled(out, _node_columns(extra))


def _with_created(tables: Tables, events: pd.DataFrame) -> pd.DataFrame:
    """Events plus the creation date of their linked deal (NaT when unlinked)."""
    opps = tables.get(OPPORTUNITIES)
    if opps is None:
        return events.assign(**{CREATED_AT: pd.Series(pd.NaT, index=events.index,
                                                         dtype="datetime64[ns]")})
    created = opps.drop_duplicates(OPPORTUNITY_ID).set_index(OPPORTUNITY_ID)[CREATED_AT]
    return events.assign(**{CREATED_AT: events[OPPORTUNITY_ID].map(created)})


def _reps(tables: Tables, events: pd.DataFrame, deal_nodes: pd.DataFrame,
          targets: pd.DataFrame | None) -> np.ndarray:
    named = [rep_hierarchy(tables)[REP], events[REP], deal_nodes[REP]]
    if targets is not None:
        named.append(targets.loc[targets[LEVEL] == LEVEL_REP, KEY])
    values = pd.concat(named, ignore_index=True).astype(object)
    values = values.where(values.notna(), UNASSIGNED).astype(str)
    return np.array(sorted(set(values) | {UNASSIGNED}), dtype=object)


def _home_cells(tables: Tables, reps: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
    """Each rep's own cell: its team and region from the hierarchy, extra levels unassigned."""
    hierarchy = rep_hierarchy(tables).drop_duplicates(REP).set_index(REP)
    base = pd.DataFrame({REP: reps})
    base[TEAM] = base[REP].map(hierarchy[TEAM])
    base[REGION] = base[REP].map(hierarchy[REGION])
    return _filled(base, columns)


def _cells(frames: Sequence[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    """Distinct node combinations of the given frames, sorted."""
    stacked = pd.concat([f[list(columns)] for f in frames], ignore_index=True)
    return stacked.drop_duplicates().sort_values(list(columns), kind="stable").reset_index(
        drop=True)


def _cell_codes(cells: pd.DataFrame, frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    index = pd.MultiIndex.from_frame(cells[list(columns)])
    codes = index.get_indexer(pd.MultiIndex.from_frame(frame[list(columns)]))
    if (codes < 0).any():
        raise AssertionError("a row has no cell")  # cannot happen: cells come from the rows
    return codes


def _run_rate_shares(n_cells: int, cell_rep: np.ndarray, home: np.ndarray,
                     recent_cell: np.ndarray, recent_amount: np.ndarray) -> np.ndarray:
    """Share of each rep's run rate per cell: its last year's revenue mix, else its home cell.

    Args:
        n_cells: number of cells.
        cell_rep: rep index of each cell.
        home: home cell of each rep.
        recent_cell: cell of each revenue event of the last year.
        recent_amount: amount of each of those events.
    """
    weights = np.bincount(recent_cell, np.maximum(recent_amount, 0.0), n_cells)
    totals = np.bincount(cell_rep, weights, len(home))
    safe = np.where(totals > 0, totals, 1.0)
    share = np.where(totals[cell_rep] > 0, weights / safe[cell_rep], 0.0)
    share[home[totals <= 0]] = 1.0
    return share


def _open_deals(tables: Tables, as_of: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp,
                win_model: Any) -> pd.DataFrame:
    """Deals open at ``as_of`` with their in-period win probability (0 when not countable)."""
    if not tables.has(OPPORTUNITIES) or as_of >= end:
        return pd.DataFrame({OPPORTUNITY_ID: pd.Series(dtype=object),
                             AMOUNT: pd.Series(dtype=float), "p": pd.Series(dtype=float)})
    deals = deal_inputs(tables, as_of)
    deals = pd.concat([deals, period_features(deals, start, end, as_of)], axis=1)
    p = (win_model.predict_frame(deals)[WIN_PROBABILITY].to_numpy(dtype=float)
         if len(deals) else np.zeros(0))
    # Expected after the period end: next period's pipeline, never counted here.
    outside = (deals[CLOSE_DATE] >= end).to_numpy()
    return deals.assign(p=np.where(outside, 0.0, np.clip(p, 0.0, 1.0)))


def _customer_run_rate(events: pd.DataFrame, as_of: pd.Timestamp, window_days: int
                       ) -> pd.Series:
    """Each customer's unlinked revenue of the last year, scaled to the window."""
    recent = events[(events[DS] >= as_of - pd.Timedelta(days=365))
                    & events[OPPORTUNITY_ID].isna()]
    return recent.groupby(CUSTOMER_ID)[AMOUNT].sum() * window_days / 365.0


def _churn_by_rep(tables: Tables, churn: pd.DataFrame | None, events: pd.DataFrame,
                  as_of: pd.Timestamp, window: Window, reps: np.ndarray, horizon_days: int
                  ) -> np.ndarray:
    if churn is None or window.length <= 0:
        return np.zeros(len(reps))
    revenue = _customer_run_rate(events, as_of, window.length)
    adjust = churn_adjustment(churn, revenue, window.length, horizon_days)
    owner = customer_nodes(tables).drop_duplicates(CUSTOMER_ID).set_index(CUSTOMER_ID)[REP]
    rep = adjust.index.to_series().map(owner).fillna(UNASSIGNED).astype(str)
    codes = pd.Index(reps).get_indexer(pd.Index(rep))
    ok = codes >= 0
    return np.bincount(codes[ok], adjust.to_numpy()[ok], len(reps))


def _pipeline_matured(tables: Tables, as_of: pd.Timestamp, quantile: float = 0.9) -> int:
    """First day whose revenue no longer depends on deals created before the data starts.

    An export that starts with its first opportunity has no pipeline from before it, so early
    on nearly every win comes from a deal created "after" any date: counted as run rate, it
    would inflate the rate. Windows start once the usual sales cycle (``quantile`` of the
    created-to-won days of deals won before ``as_of``) has passed since the first deal.
    """
    opps = tables.get(OPPORTUNITIES)
    if opps is None or opps.empty:
        return -(2**62)
    won = opps[(opps[STATUS] == STATUS_WON) & (opps[CLOSE_DATE] < as_of)]
    cycle = ((won[CLOSE_DATE] - won[CREATED_AT]).dt.days.quantile(quantile)
             if len(won) else 0.0)
    first = opps.loc[opps[CREATED_AT] < as_of, CREATED_AT].min()
    if pd.isna(first) or pd.isna(cycle):
        return -(2**62)
    return _day(first) + int(max(cycle, 0.0))


def build_inputs(tables: Tables, period: str, as_of: pd.Timestamp | str, win_model: Any, *,
                 churn: pd.DataFrame | None = None, levels: Sequence[str] | None = None,
                 churn_horizon_days: int = CHURN_HORIZON_DAYS) -> CellInputs:
    """Closed revenue, open deals, run rate and churn of ``period`` as of ``as_of``, by cell.

    Args:
        tables: validated tables.
        period: ``2017``, ``2017Q3`` or ``2017-08``.
        as_of: the date T; only rows dated before it are used.
        win_model: anything with ``predict_frame`` returning ``win_probability``.
        churn: optional ``customer_id, churn_probability`` scores at ``as_of``.
        levels: extra levels to simulate besides those the period's targets use.
        churn_horizon_days: horizon of ``churn_probability``.
    """
    as_of = pd.Timestamp(as_of)
    start, end = period_bounds(period)
    targets = tables.get(TARGETS)
    extra = _extra_levels(targets, period, levels)
    columns = _node_columns(extra)
    window = Window(_day(as_of), _day(start), _day(end))
    events = _with_created(tables, attribute_revenue(tables, as_of=as_of, columns=extra))
    events_nodes = _filled(events, columns)
    deals = _open_deals(tables, as_of, start, end, win_model)
    deal_nodes = _deal_nodes(tables, deals, extra) if len(deals) else _filled(deals, columns)
    reps = _reps(tables, events_nodes, deal_nodes, targets)
    home_cells = _home_cells(tables, reps, columns)
    cells = _cells([home_cells, events_nodes, deal_nodes], columns)
    cell_rep = pd.Index(reps).get_indexer(pd.Index(cells[REP]))
    home = _cell_codes(cells, home_cells, columns)
    event_cell = _cell_codes(cells, events_nodes, columns)
    in_period = ((events[DS] >= start) & (events[DS] < end)).to_numpy()
    closed = np.bincount(event_cell[in_period], events[AMOUNT].to_numpy()[in_period],
                         len(cells))
    rep_of_event = cell_rep[event_cell]
    data_start = (max(_day(events[DS].min()), _pipeline_matured(tables, as_of))
                  if len(events) else window.as_of)
    groups = [pd.factorize(home_cells[level])[0] for level in (REGION, TEAM)]
    run_rate = estimate_run_rate(events, rep_of_event, len(reps), window, data_start, groups)
    recent = (events[DS] >= as_of - pd.Timedelta(days=365)).to_numpy()
    share = _run_rate_shares(len(cells), cell_rep, home, event_cell[recent],
                             events[AMOUNT].to_numpy()[recent])
    churn_rep = _churn_by_rep(tables, churn, events, as_of, window, reps, churn_horizon_days)
    days_left = window.end - max(window.as_of, window.start)
    conversion = (win_model.conversion_at(days_left)
                  if hasattr(win_model, "conversion_at") and days_left > 0 else float("nan"))
    notes = list(run_rate.notes)
    pipeline_sigma = (float(win_model.period_spread()) if hasattr(win_model, "period_spread")
                      else 0.0)
    measured = (win_model.period_spread_measured()
                if hasattr(win_model, "period_spread_measured") else True)
    if pipeline_sigma > 0 and measured:
        notes.append(f"pipeline: the period's deal wins share a company-wide factor of spread "
                     f"{pipeline_sigma:.2f}, measured on past periods' won vs expected amounts")
    elif pipeline_sigma > 0:
        notes.append(f"pipeline: too few past periods to measure how far a period's deal wins "
                     f"stray from their expectation; a wide default spread of "
                     f"{pipeline_sigma:.2f} is used (intervals widened)")
    if churn is None:
        notes.append("churn: no churn scores given, no churn adjustment")
    return CellInputs(
        cells=cells, rep_of_cell=cell_rep, reps=reps, closed_cell=closed,
        deal_cell=(_cell_codes(cells, deal_nodes, columns) if len(deals)
                   else np.zeros(0, dtype=np.int64)),
        deal_p=deals["p"].to_numpy(dtype=float), deal_amount=deals[AMOUNT].to_numpy(float),
        run_rate=run_rate, share_cell=share, churn_rep=churn_rep,
        levels=[*HIERARCHY_LEVELS, *extra], conversion=conversion or float("nan"),
        notes=notes, pipeline_sigma=pipeline_sigma,
    )


def simulate_period(tables: Tables, period: str, as_of: pd.Timestamp | str, win_model: Any, *,
                    draws: int = 10_000, seed: int = 42, churn: pd.DataFrame | None = None,
                    levels: Sequence[str] | None = None, threads: int | None = None
                    ) -> Simulation:
    """:func:`build_inputs` then :func:`simulate`."""
    inputs = build_inputs(tables, period, as_of, win_model, churn=churn, levels=levels)
    return simulate(inputs, draws=draws, seed=seed, threads=threads)


def feasibility(tables: Tables, period: str, as_of: pd.Timestamp | str, *,
                draws: int = 10_000, seed: int = 42, win_model: Any = None,
                churn: pd.DataFrame | None = None, levels: Sequence[str] | None = None,
                all_nodes: bool = False, threads: int | None = None) -> pd.DataFrame:
    """Attainment distribution of every node with a target in ``period``, as of ``as_of``.

    The frame of :func:`feasibility_with_simulation` (same arguments); use that one when the
    draws are needed too (:func:`recalibrate`).
    """
    return feasibility_with_simulation(
        tables, period, as_of, draws=draws, seed=seed, win_model=win_model, churn=churn,
        levels=levels, all_nodes=all_nodes, threads=threads)[0]


def feasibility_with_simulation(
        tables: Tables, period: str, as_of: pd.Timestamp | str, *, draws: int = 10_000,
        seed: int = 42, win_model: Any = None, churn: pd.DataFrame | None = None,
        levels: Sequence[str] | None = None, all_nodes: bool = False,
        threads: int | None = None) -> tuple[pd.DataFrame, Simulation]:
    """Attainment distribution of every node with a target in ``period``, as of ``as_of``.

    Works before the period (a plan check: pipeline expected to close plus run rate), during it
    and after it (then it is the actual: ``p_attain`` is 0 or 1 and every quantile equals
    ``closed_to_date``).

    Args:
        tables: validated tables.
        period: ``2017``, ``2017Q3`` or ``2017-08``.
        as_of: the date T; only rows dated before it are used.
        draws: Monte Carlo draws.
        seed: random seed; same seed, same numbers.
        win_model: the win / slip estimator; ``None`` fits historical stage win rates
            (:class:`models.win.StageRateWinModel`) on monthly snapshots first.
        churn: ``customer_id, churn_probability`` scores at ``as_of`` (optional).
        levels: extra levels to report besides those with targets.
        all_nodes: also report hierarchy nodes without a target.
        threads: worker threads of the deal simulation.

    Returns:
        The frame (:data:`FEASIBILITY_COLUMNS` then :data:`EXTRA_COLUMNS`; ``attrs["notes"]``
        says how each component was obtained) and the :class:`Simulation` (for
        :func:`recalibrate`).
    """
    as_of = pd.Timestamp(as_of)
    notes: list[str] = []
    if win_model is None:
        win_model, note = fit_stage_rates(tables, as_of)
        notes.append(note)
    simulation = simulate_period(tables, period, as_of, win_model, draws=draws, seed=seed,
                                 churn=churn, levels=levels, threads=threads)
    simulation.notes[:0] = notes
    frame = summarise(simulation, tables.get(TARGETS), period, as_of, all_nodes=all_nodes)
    return frame, simulation


def _won_and_lost(tables: Tables, as_of: pd.Timestamp) -> bool:
    """Whether deals were both won and lost before ``as_of`` (rates need both)."""
    opps = tables.get(OPPORTUNITIES)
    if opps is None:
        return False
    closed = opps.loc[(opps[STATUS] != STATUS_OPEN) & (opps[CLOSE_DATE] < as_of), STATUS]
    return bool((closed == STATUS_WON).any() and (closed != STATUS_WON).any())


def fit_stage_rates(tables: Tables, as_of: pd.Timestamp, every_days: int = 28
                    ) -> tuple[StageRateWinModel, str]:
    """Historical in-period win rates by stage (the fallback win model) and a note saying so.

    Without won and lost deals before ``as_of`` there is nothing to learn rates from: every
    open deal gets :data:`models.win.FLAT_WIN_RATE` (and the note says so).
    """
    dates = deal_snapshot_dates(tables, as_of, every_days=every_days)
    rows = (win_training_rows(deal_snapshots(tables, dates), tables[OPPORTUNITIES], as_of)
            if dates and _won_and_lost(tables, as_of) else pd.DataFrame())
    if rows.empty or LABEL not in rows.columns:
        return StageRateWinModel().fit(pd.DataFrame()), (
            "win model: no champion and no won and lost deals before "
            f"{pd.Timestamp(as_of).date()}; every open deal expected in the period is counted "
            f"at a flat {FLAT_WIN_RATE:.0%} win rate")
    return StageRateWinModel().fit(rows), (
        "win model: no champion registered (a trained win model becomes champion only when "
        "it beats stage rates on its holdout); historical in-period win rates by stage and "
        "days left "
        f"({len(rows):,} deal snapshots) are used instead")


# === recalibration ==============================================================================


def _quantile_at(sorted_draws: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Linear-interpolated quantile ``tau`` of each column of column-sorted draws."""
    n = sorted_draws.shape[0]
    pos = np.clip(tau, 0.0, 1.0) * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    cols = np.arange(sorted_draws.shape[1])
    frac = pos - lo
    return sorted_draws[lo, cols] * (1 - frac) + sorted_draws[hi, cols] * frac


def _even_probability(sorted_draws: np.ndarray, group: np.ndarray, totals: np.ndarray,
                      iterations: int = 60) -> np.ndarray:
    """Targets at one common attainment probability per group summing to the group total.

    A bisection on ``q`` for all groups at once: child target = its revenue quantile at
    ``1 - q``; the children's sum falls as ``q`` rises.
    """
    lo, hi = np.zeros(len(totals)), np.ones(len(totals))
    for _ in range(iterations):  # bisection steps, not data
        mid = (lo + hi) / 2
        total = np.bincount(group, _quantile_at(sorted_draws, 1 - mid[group]), len(totals))
        above = total > totals  # sum too high: raise q (lower the quantiles)
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return _quantile_at(sorted_draws, 1 - ((lo + hi) / 2)[group])


def _close_exactly(values: np.ndarray, weights: np.ndarray, group: np.ndarray,
                   totals: np.ndarray) -> np.ndarray:
    """Spread each group's remainder over its children by weight; the last child takes the
    rounding, so every group sums to its total."""
    n_groups = len(totals)
    w = np.where(weights > 0, weights, 0.0)
    w_sum = np.bincount(group, w, n_groups)
    counts = np.bincount(group, minlength=n_groups)
    share = np.where(w_sum[group] > 0, w / np.where(w_sum > 0, w_sum, 1.0)[group],
                     1.0 / counts[group])
    residual = totals - np.bincount(group, values, n_groups)
    out = values + residual[group] * share
    last = np.full(n_groups, -1)
    last[group] = np.arange(len(group))  # the last child of each group
    for g in np.flatnonzero(last >= 0):  # groups, a few hundred at most
        others = (group == g) & (np.arange(len(group)) != last[g])
        out[last[g]] = totals[g] - math.fsum(out[others])
    return out


def _groups(nodes: pd.DataFrame, targeted: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(parent row, targeted child rows) per parent and child level, parents top-down."""
    frame = nodes.assign(_row=np.arange(len(nodes)))[(nodes["parent"] >= 0) & targeted]
    depth = nodes[LEVEL].map(_LEVEL_ORDER).fillna(1).to_numpy()
    out = [(int(rows["parent"].iloc[0]), rows["_row"].to_numpy())
           for _, rows in frame.groupby(["parent", LEVEL], sort=False)]
    return sorted(out, key=lambda g: (depth[g[1][0]], g[0]))


def _group_total(target: np.ndarray, revised: np.ndarray, parent: int, rows: np.ndarray
                 ) -> float:
    """What the children share: their original total, scaled as their parent was revised."""
    original = float(np.sum(target[rows]))
    if np.isnan(target[parent]) or target[parent] == 0:
        return original
    return original * float(revised[parent] / target[parent])


def recalibrate(feasibility_frame: pd.DataFrame, simulation: Simulation, *,
                method: Method = "even_probability") -> pd.DataFrame:
    """Revised targets for the rest of the period that keep every parent's total.

    In plain words: the company keeps its target. Going down the hierarchy (company, then
    regions, then teams), each parent's (revised) target is shared out again among its
    children, so the children's new targets always add up exactly to the parent's. With
    ``even_probability`` the split makes the children equally likely to reach their targets:
    we look for the one probability level ``q`` at which the children's simulated revenues,
    each taken at the amount it reaches with probability ``q``, add up to the parent's target
    (a one-dimensional search on the simulated draws), and give each child that amount. A child
    with a strong pipeline therefore takes on more of the target, one with a weak outlook less,
    and all end at the same chance of success. With ``proportional_p50`` the part of the
    parent's target not yet closed is shared in proportion to each child's median outlook for
    the rest of the period. Revenue already closed stays credited either way: it is part of
    every child's simulated revenue, so a new target never asks to earn it again. Extra levels
    (``product``, ``segment``) are split from the company's target the same way. Only children
    with a target take part: what they share is the sum of their original targets (the parent's
    target when the targets add up), scaled by how much their parent's own target was revised.

    Args:
        feasibility_frame: output of :func:`feasibility` (its ``target`` column is used).
        simulation: the simulation that produced it.
        method: ``even_probability`` or ``proportional_p50``.

    Returns:
        :data:`RECALIBRATION_COLUMNS`, one row per node of ``feasibility_frame``.
    """
    if method not in ("even_probability", "proportional_p50"):
        raise ValueError(f"unknown method {method!r}: even_probability or proportional_p50")
    nodes = simulation.nodes
    keyed = feasibility_frame.set_index([LEVEL, KEY])[TARGET]
    index = pd.MultiIndex.from_frame(nodes[[LEVEL, KEY]].astype(object))
    target = keyed.reindex(index).to_numpy(dtype=float)
    revised = target.copy()
    sorted_draws = np.sort(simulation.draws, axis=0)
    median_rest = np.median(simulation.draws, axis=0) - simulation.closed
    for parent, rows in _groups(nodes, ~np.isnan(target)):  # parents, top-down
        total = _group_total(target, revised, parent, rows)
        group = np.zeros(len(rows), dtype=np.int64)
        if method == "even_probability":
            values = _even_probability(sorted_draws[:, rows], group, np.array([total]))
            weights = median_rest[rows]
        else:
            closed = simulation.closed[rows]
            weights = np.maximum(median_rest[rows], 0.0)
            values = closed.copy()
        revised[rows] = _close_exactly(values, weights, group, np.array([total]))
    frame = pd.DataFrame({
        PERIOD: feasibility_frame[PERIOD].iloc[0] if len(feasibility_frame) else "",
        LEVEL: nodes[LEVEL], KEY: nodes[KEY], TARGET: target,
        RECALIBRATED_TARGET: revised,
        P_ATTAIN_BEFORE: _attained(simulation.draws, target),
        P_ATTAIN_AFTER: _attained(simulation.draws, revised),
    })
    wanted = pd.MultiIndex.from_frame(feasibility_frame[[LEVEL, KEY]].astype(object))
    frame = frame.set_index([LEVEL, KEY]).reindex(wanted).reset_index()
    return frame[list(RECALIBRATION_COLUMNS)]
