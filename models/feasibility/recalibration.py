"""Recalibration: revised targets for the rest of a period that keep every parent's total.

Going down the hierarchy, each parent's (revised) target is shared out again among its
children from the simulated draws (:func:`recalibrate`), so the children's new targets always
add up exactly to the parent's.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd

from engine.schemas import KEY, LEVEL, PERIOD
from models.feasibility.simulation import LEVEL_ORDER, TARGET, Simulation, attained

__all__ = ["RECALIBRATION_COLUMNS", "Method", "recalibrate"]

RECALIBRATED_TARGET = "recalibrated_target"
P_ATTAIN_BEFORE = "p_attain_before"
P_ATTAIN_AFTER = "p_attain_after"
RECALIBRATION_COLUMNS = (PERIOD, LEVEL, KEY, TARGET, RECALIBRATED_TARGET,
                         P_ATTAIN_BEFORE, P_ATTAIN_AFTER)
Method = Literal["even_probability", "proportional_p50"]


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
    depth = nodes[LEVEL].map(LEVEL_ORDER).fillna(1).to_numpy()
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


def _medians(draws: np.ndarray, elements: int = 500_000) -> np.ndarray:
    """The median of each node's draws, a block of nodes at a time (no copy of the store)."""
    out = np.full(draws.shape[1], np.nan)
    if len(draws):
        width = max(1, elements // len(draws))
        for a in range(0, draws.shape[1], width):
            out[a:a + width] = np.median(draws[:, a:a + width], axis=0)
    return out


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
        feasibility_frame: output of :func:`models.feasibility.period.feasibility` (its
            ``target`` column is used).
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
    median_rest = _medians(simulation.draws) - simulation.closed
    for parent, rows in _groups(nodes, ~np.isnan(target)):  # parents, top-down
        total = _group_total(target, revised, parent, rows)
        group = np.zeros(len(rows), dtype=np.int64)
        if method == "even_probability":
            # Only this group's children are sorted: never a copy of the whole store.
            values = _even_probability(np.sort(simulation.draws[:, rows], axis=0), group,
                                       np.array([total]))
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
        P_ATTAIN_BEFORE: attained(simulation.draws, target),
        P_ATTAIN_AFTER: attained(simulation.draws, revised),
    })
    wanted = pd.MultiIndex.from_frame(feasibility_frame[[LEVEL, KEY]].astype(object))
    frame = frame.set_index([LEVEL, KEY]).reindex(wanted).reset_index()
    return frame[list(RECALIBRATION_COLUMNS)]
