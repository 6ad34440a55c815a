"""How far the outlook for the rest of a period erred at the same point of earlier periods.

The open pipeline (win model) and the run rate (trailing windows) are each estimated from the
past, but neither is checked against what the rest of a *whole period* brought: a win model
trained on a young CRM's months extrapolates to a quarter's days left (on crm-sales at nine
months of history it expected 0.64M of the 1.66M that the open pipeline brought in the rest of
the quarter), and a run rate can trail a book that shrinks or grows.

The same estimate is therefore made at the same point of each of the last few periods of the
same length (:func:`earlier_points`: as many days into, or before, the period as ``as_of`` is
now), with only what was known then, and compared with the revenue those periods then brought
(:func:`rest_scale`): the mean log ratio, shrunk towards no correction by one pseudo-period,
becomes one company-wide factor on the rest of the period (on the run rate and on the odds of
every open deal's win, so a certain deal stays certain; one factor for all nodes, so every
parent still equals the sum of its children), and the spread of those ratios around it is the
least spread the company's rest of period is given. Points at which the run rate had no
history yet (the data starts there) say nothing about it and are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.periods import period_bounds, period_of

__all__ = [
    "BACKTEST_PERIODS",
    "MAX_SCALE",
    "PastPoint",
    "RestScale",
    "earlier_points",
    "rest_scale",
]

# Earlier periods looked at (a year of quarters).
BACKTEST_PERIODS = 4
# Pseudo-periods of "no correction" the mean log ratio is shrunk with.
PRIOR_PERIODS = 1.0
# The factor never goes beyond this (or below its inverse).
MAX_SCALE = 4.0
# Prior of the log spread of the rest of a period around its corrected outlook, and its weight
# in periods (few earlier periods measure a spread poorly).
PRIOR_SIGMA = 0.25
PRIOR_SIGMA_PERIODS = 1.0


@dataclass(frozen=True)
class PastPoint:
    """An earlier period seen from the same point: its bounds and the date it is seen at."""

    period: str
    start: pd.Timestamp
    end: pd.Timestamp
    as_of: pd.Timestamp


def _freq(period: str) -> str:
    text = str(period).strip()
    return "Y" if len(text) == 4 else ("Q" if "Q" in text else "M")


def earlier_points(period: str, as_of: pd.Timestamp | str,
                   periods: int = BACKTEST_PERIODS) -> list[PastPoint]:
    """The last ``periods`` periods of the same length that ended by ``as_of``, each seen as
    many days after (or before) its start as ``as_of`` is from ``period``'s start.

    Most recent first. A period still running at ``as_of`` is left out: its outcome is not
    known yet. None when ``as_of`` is at or after the end of ``period`` (nothing left).
    """
    as_of = pd.Timestamp(as_of)
    start, end = period_bounds(period)
    if as_of >= end:
        return []
    freq = _freq(period)
    offset = as_of - start
    points = []
    for back in range(1, 4 * periods + 1):
        label = period_of(start, freq, -back)
        k_start, k_end = period_bounds(label)
        if k_end > as_of:
            continue
        seen = k_start + offset
        if seen >= k_end:  # a longer period's day count overruns a shorter one (months)
            seen = k_end - pd.Timedelta(days=1)
        points.append(PastPoint(label, k_start, k_end, seen))
        if len(points) == periods:
            break
    return points


@dataclass(frozen=True)
class RestScale:
    """The factor on the rest of the period, and what it rests on.

    Attributes:
        factor: multiplies pipeline wins and run rate (1: no correction).
        sigma: log spread of the realised rest around the corrected outlook in those periods
            (with a prior); the simulation's company spread of the rest of the period is
            widened to at least this. 0 without earlier periods.
        ratios: realised / expected rest of each earlier period used, most recent first.
        periods: their labels.
        note: how it was obtained, in plain words.
    """

    factor: float
    sigma: float = 0.0
    ratios: tuple[float, ...] = ()
    periods: tuple[str, ...] = ()
    note: str = ""


def rest_scale(realised: np.ndarray, expected: np.ndarray, periods: list[str] | tuple[str, ...],
               prior_periods: float = PRIOR_PERIODS, max_scale: float = MAX_SCALE,
               deals: bool = True) -> RestScale:
    """The company-wide factor from earlier periods' realised and expected rest of period.

    ``exp(mean(log(realised / expected)) * n / (n + prior_periods))`` over the ``n`` periods
    where both are positive, kept within ``[1 / max_scale, max_scale]``; 1 without any. The
    spread is the root mean square of the log ratios around that factor, pooled with
    :data:`PRIOR_SIGMA` worth :data:`PRIOR_SIGMA_PERIODS` periods. ``deals``: whether the
    data has deals (the note names their odds only then).
    """
    realised = np.asarray(realised, dtype=float)
    expected = np.asarray(expected, dtype=float)
    ok = (realised > 0) & (expected > 0) & np.isfinite(realised) & np.isfinite(expected)
    used = [p for p, keep in zip(periods, ok, strict=True) if keep]
    if not ok.any():
        return RestScale(1.0, note="rest of period: no earlier period seen at the same point "
                                   "with a known outcome; the outlook is not corrected")
    logs = np.log(realised[ok] / expected[ok])
    n = len(logs)
    shrunk = float(logs.mean()) * n / (n + prior_periods)
    factor = float(np.clip(math.exp(shrunk), 1.0 / max_scale, max_scale))
    residual = logs - math.log(factor)
    sigma = math.sqrt((float(np.sum(residual**2)) + PRIOR_SIGMA_PERIODS * PRIOR_SIGMA**2)
                      / (n + PRIOR_SIGMA_PERIODS))
    ratios = tuple(float(r) for r in np.exp(logs))
    listed = ", ".join(f"{p} {r:.2f}" for p, r in zip(used, ratios, strict=True))
    note = (f"rest of period: at the same point of earlier periods the outlook for the rest "
            f"of the period brought realised/expected {listed}; the run rate"
            f"{' and the odds of deal wins are' if deals else ' is'} scaled by {factor:.2f} "
            f"(their mean log ratio shrunk by "
            f"{prior_periods:g} pseudo-period towards no correction); the company's rest of "
            f"period spreads at least {sigma:.2f} (log scale), as those ratios did")
    return RestScale(factor, sigma, ratios, tuple(used), note)
