"""The pace rule, and the level-by-level choice between it and the simulation by backtest.

The **pace rule** is the simplest outlook of a period in progress: revenue closed to date divided
by the share of the period elapsed (the pace), times a lognormal whose spread is the root mean
square of ``log(actual / pace)`` at the same share of the earlier periods of the same length (by
level; :data:`DEFAULT_PACE_SIGMA` while a level has fewer than :data:`MIN_PACE_RATIOS` of them)
(:func:`pace_sigmas`), and never below what is already closed. One distribution gives both the
probability of reaching a target (:func:`pace_probability`) and the range (:func:`pace_quantiles`,
:func:`pace_mean`).

The simulation is only worth using where it beats that rule. The whole ``p_attain`` procedure
is therefore replayed at the same point of the last few periods (with what was known then;
:func:`models.feasibility.period.feasibility_with_simulation`), the pace rule is worked out at
the same points, and both are scored (Brier) against whether each node then reached its target
(:func:`choose`). A level keeps the simulation's ``p_attain`` only when its backtest Brier is at
most the pace rule's **and** at least one of its earlier targets was missed; otherwise that
level's ``p_attain`` is the pace rule's, and the notes say so; its range (P10/P50/P90, expected,
must-hit, stretch) is then the pace rule's too, so that the numbers of a node agree.

Why a miss is needed: when every earlier target of a level was hit, the Brier score only
rewards confidence that a target will be hit (targets far below what came rank any optimistic
method first) and says nothing of whether the simulation warns of a miss, the error this
engine exists to catch. Such a check cannot show that the simulation beats the simpler rule, so
the simpler rule answers (a model never replaces its baseline unproven). On crm-sales at nine
months the only earlier quarter with targets (2017Q2, targets a third of what came) was all hit,
the simulation scored better there, and the quarter that followed was missed at most levels.
A level never judged at all (no earlier period with targets seen at the same point) keeps the
simulation, and the notes say that too: there is no check to fail, and a first quarter with
targets is the common case of a young CRM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from engine.periods import period_bounds
from engine.schemas import AMOUNT, COMPANY_KEY, DS, LEVEL_COMPANY

__all__ = [
    "DEFAULT_PACE_SIGMA",
    "MIN_PACE_RATIOS",
    "PACE",
    "SIMULATION",
    "Choice",
    "LevelScore",
    "choose",
    "elapsed",
    "node_totals",
    "pace_mean",
    "pace_probability",
    "pace_quantiles",
    "pace_sigmas",
]

DEFAULT_PACE_SIGMA = 0.3
MIN_PACE_RATIOS = 5
# The pace never falls below this (a node with nothing closed yet).
_EPS = 1e-4
SIMULATION = "simulation"
PACE = "pace rule"


def elapsed(period: str, as_of: pd.Timestamp | str) -> float:
    """Share of ``period`` elapsed at ``as_of`` (0 before it starts, 1 once it is over)."""
    start, end = period_bounds(period)
    share = (pd.Timestamp(as_of) - start) / (end - start)
    return float(min(max(share, 0.0), 1.0))


def pace_probability(closed: np.ndarray, target: np.ndarray, fraction: float,
                     sigma: float | np.ndarray) -> np.ndarray:
    """P(max(closed, closed / fraction * lognormal(0, sigma)) >= target), per node (1 where
    the node already closed its target; NaN where there is no target)."""
    closed = np.asarray(closed, dtype=float)
    pace = np.maximum(closed / fraction, _EPS)
    target = np.asarray(target, dtype=float)
    with np.errstate(invalid="ignore"):
        z = (np.log(pace) - np.log(np.maximum(target, _EPS))) / sigma
        reached = closed >= target - 1e-9 * np.maximum(np.abs(target), 1.0)
    return np.where(np.isnan(target), np.nan, np.where(reached, 1.0, norm.cdf(z)))


def pace_quantiles(closed: np.ndarray, fraction: float, sigma: float | np.ndarray,
                   quantiles: Sequence[float]) -> np.ndarray:
    """``quantiles x nodes``: the quantiles of the distribution of :func:`pace_probability`
    (median the pace, never below ``closed``)."""
    closed = np.asarray(closed, dtype=float)
    pace = np.maximum(closed / fraction, _EPS)
    z = norm.ppf(np.asarray(quantiles, dtype=float))[:, None]
    return np.maximum(closed, pace * np.exp(z * np.asarray(sigma, dtype=float)))


def pace_mean(closed: np.ndarray, fraction: float, sigma: float | np.ndarray) -> np.ndarray:
    """Per node: the mean of the distribution of :func:`pace_probability`,
    ``E[max(closed, X)]`` with ``X = pace * lognormal(0, sigma)``."""
    closed = np.asarray(closed, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    pace = np.maximum(closed / fraction, _EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        # X below closed with probability norm.cdf(a); -inf when nothing is closed.
        a = (np.log(np.maximum(closed, 0.0)) - np.log(pace)) / sigma
    below = np.where(np.isneginf(a), 0.0, closed * norm.cdf(a))
    return below + pace * np.exp(sigma ** 2 / 2) * norm.cdf(sigma - a)


def node_totals(events: pd.DataFrame, level: str, start: pd.Timestamp, end: pd.Timestamp,
                before: pd.Timestamp | None = None) -> pd.Series:
    """Revenue per key of ``level`` dated in ``[start, end)`` (and before ``before``).

    ``events`` has ``ds``, ``amount`` and one column per level but company (keys filled)."""
    day = events[DS]
    keep = (day >= start) & (day < end)
    if before is not None:
        keep &= day < before
    inside = events[keep]
    keys = (pd.Series(COMPANY_KEY, index=inside.index) if level == LEVEL_COMPANY
            else inside[level].astype(str))
    return inside[AMOUNT].groupby(keys).sum()


def pace_sigmas(events: pd.DataFrame, periods: Sequence[str], fraction: float,
                levels: Sequence[str]) -> dict[str, float]:
    """Per level: RMS of ``log(actual / pace)`` at ``fraction`` of each of ``periods``.

    ``periods`` are earlier periods whose outcome is known and that the data covers whole;
    ``events`` as in :func:`node_totals`. A level with fewer than :data:`MIN_PACE_RATIOS`
    finite ratios gets :data:`DEFAULT_PACE_SIGMA`.
    """
    ratios: dict[str, list[float]] = {level: [] for level in levels}
    for label in periods:
        start, end = period_bounds(label)
        checkpoint = start + pd.Timedelta(days=round((end - start).days * fraction))
        for level in levels:
            total = node_totals(events, level, start, end)
            early = node_totals(events, level, start, end, checkpoint).reindex(
                total.index, fill_value=0.0)
            pace = np.maximum(early / fraction, _EPS)
            ratio = np.log(np.maximum(total, _EPS) / pace)
            ratios[level] += [float(r) for r in ratio if np.isfinite(r)]
    return {level: (max(float(np.sqrt(np.mean(np.square(values)))), 0.05)
                    if len(values) >= MIN_PACE_RATIOS else DEFAULT_PACE_SIGMA)
            for level, values in ratios.items()}


@dataclass(frozen=True)
class LevelScore:
    """One level's backtest: Brier of the simulation and of the pace rule on the same cases,
    and how many of those targets were missed."""

    level: str
    method: str
    cases: int
    brier_simulation: float = float("nan")
    brier_pace: float = float("nan")
    missed: int = 0


@dataclass(frozen=True)
class Choice:
    """Which ``p_attain`` each level uses, and why (``note``; empty when nothing was judged),
    with the share of the period elapsed and the pace rule's spread per level now."""

    levels: dict[str, LevelScore] = field(default_factory=dict)
    periods: tuple[str, ...] = ()
    note: str = ""
    fraction: float = float("nan")
    sigmas: dict[str, float] = field(default_factory=dict)

    def method(self, level: str) -> str:
        score = self.levels.get(level)
        return score.method if score is not None else SIMULATION


def choose(cases: pd.DataFrame, levels: Sequence[str], periods: Sequence[str]) -> Choice:
    """The method per level from backtest cases.

    Args:
        cases: one row per node and earlier period: ``level``, ``p_simulation``, ``p_pace``,
            ``outcome`` (1 when the node reached its target).
        levels: the levels asked about (those of the frame being answered).
        periods: the earlier periods the cases come from (for the note).

    A level with cases keeps the simulation only when at least one of them was a missed target
    and the pace rule's Brier is not lower; a level without cases keeps the simulation.
    """
    scores: dict[str, LevelScore] = {}
    for level in levels:
        part = cases[cases["level"] == level] if len(cases) else cases
        if part.empty:
            scores[level] = LevelScore(level, SIMULATION, 0)
            continue
        y = part["outcome"].to_numpy(dtype=float)
        sim = float(np.mean((part["p_simulation"].to_numpy(dtype=float) - y) ** 2))
        pace = float(np.mean((part["p_pace"].to_numpy(dtype=float) - y) ** 2))
        missed = int(np.sum(y < 1.0))
        method = PACE if pace < sim or not missed else SIMULATION
        scores[level] = LevelScore(level, method, len(part), sim, pace, missed)
    return Choice(scores, tuple(periods), _note(scores, periods))


def _note(scores: dict[str, LevelScore], periods: Sequence[str]) -> str:
    judged = [s for s in scores.values() if s.cases]
    if not judged:
        return ("p_attain: no earlier period with targets could be replayed at the same point, "
                "so the simulation is not checked against the pace rule (closed to date / "
                "share elapsed); its p_attain is used as it is")
    listed = "; ".join(
        f"{s.level}: {'pace rule' if s.method == PACE else 'simulation'} "
        f"(Brier {s.brier_simulation:.3f} simulation vs {s.brier_pace:.3f} pace, "
        f"{s.cases} targets, {s.missed} missed)" for s in judged)
    unjudged = [s.level for s in scores.values() if not s.cases]
    fallback = [s.level for s in judged if s.method == PACE]
    unproven = [s.level for s in judged if not s.missed]
    text = (f"p_attain: replayed at the same point of {', '.join(periods)}, the simulation "
            f"against the pace rule (closed to date / share elapsed, lognormal): {listed}")
    if unproven:
        text += (f". Every earlier target was hit at {', '.join(unproven)}: a check without a "
                 "miss cannot show that the simulation warns of one, so the pace rule (the "
                 "simpler) answers there")
    if fallback:
        text += (f". Where the simulation did not beat the pace rule ({', '.join(fallback)}), "
                 "p_attain is the pace rule's, and so is the range (P10/P50/P90, expected, "
                 "must-hit, stretch: pace times the lognormal, never below closed to date)")
    if unjudged:
        text += f". Not judged (no target then): {', '.join(unjudged)}; the simulation is used"
    return text
