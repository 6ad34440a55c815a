"""Hierarchical reconciliation: make forecasts add up across company > region > team > rep.

What is coherent, and why:

- ``yhat`` (the mean forecast) is coherent: for every period, the company forecast equals the
  sum of the regions, of the teams and of the reps. Bottom-up sums the bottom forecasts;
  MinT (shrink) first combines all levels' forecasts into bottom forecasts that are optimal
  under the estimated error covariance, then sums them the same way. Means add up, so a
  reconciled mean is a valid mean at every level.
- The quantiles (``yhat_p10``/``yhat_p50``/``yhat_p90``) are *not* summed. The quantile of a sum
  is not the sum of quantiles (summing the reps' p10 gives a company p10 far too low, because
  the reps' bad months do not all happen together), so summed quantiles would be coherent but
  wrong. Instead :class:`models.forecast.RevenueForecaster` reconciles the mean in every
  backtest window too, and calibrates each node's interval on the errors of those reconciled
  backtest forecasts (conformal, per level and horizon step). Each node's interval is thus a
  calibrated marginal interval around a coherent mean; the quantiles are deliberately not
  additive. The p50 is likewise a per-node median and need not add up.
- Non-negativity: the caller clips bottom forecasts at zero *before* summing, so every level
  stays non-negative and coherent (clipping after summing would break the sums).

The hierarchy frame has one row per bottom node and one column per level, named after the
level (``rep``, ``team``, ``region``); the company (key ``all``) is implied. Levels are ordered
by their number of distinct nodes, most first, so the bottom level is the finest one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.schemas import COMPANY_KEY, DS, KEY, LEVEL, LEVEL_COMPANY
from models.metrics import YHAT

__all__ = [
    "Hierarchy",
    "build_hierarchy",
    "mint_projection",
    "reconcile_bottom_up",
    "reconcile_mint",
    "shrunk_covariance",
]


@dataclass(frozen=True)
class Hierarchy:
    """A tree of nodes and its summing matrix.

    Attributes:
        nodes: ``level`` and ``key`` of every node, bottom nodes first (row ``i`` of ``summing``).
        summing: ``(n_nodes, n_bottom)`` 0/1 matrix: node value = ``summing @ bottom values``.
        levels: level names from bottom to top.
    """

    nodes: pd.DataFrame
    summing: np.ndarray
    levels: list[str]

    @property
    def n_bottom(self) -> int:
        return int(self.summing.shape[1])


def _ordered_levels(frame: pd.DataFrame) -> list[str]:
    """Columns from the finest (most distinct nodes) to the coarsest; ties keep frame order."""
    counts = frame.nunique()
    return sorted(frame.columns, key=lambda c: -counts[c])


def _check_tree(frame: pd.DataFrame, levels: list[str]) -> None:
    """Every node must have exactly one parent on each level above it."""
    for child, parent in itertools.pairwise(levels):
        parents = frame.groupby(child)[parent].nunique()
        bad = parents[parents > 1]
        if len(bad):
            raise ValueError(
                f"hierarchy is not a tree: {child} {', '.join(map(str, bad.index[:5]))} "
                f"belongs to several {parent} nodes"
            )


def build_hierarchy(hierarchy: pd.DataFrame, levels: Sequence[str] | None = None) -> Hierarchy:
    """Nodes and summing matrix of a hierarchy frame.

    Args:
        hierarchy: one row per bottom node, one column per level (e.g. ``rep``, ``team``,
            ``region``); a ``company`` column is optional (all rows belong to ``all``).
        levels: the levels to keep (others are dropped, duplicates merged); default every
            column plus the company.

    Raises:
        ValueError: unknown levels, or a node with two parents on one level.
    """
    frame = hierarchy.copy()
    if LEVEL_COMPANY not in frame.columns:
        frame[LEVEL_COMPANY] = COMPANY_KEY
    wanted = list(frame.columns) if levels is None else list(levels)
    unknown = [lv for lv in wanted if lv not in frame.columns]
    if unknown:
        raise ValueError(f"hierarchy has no level(s): {', '.join(unknown)}")
    frame = frame[wanted].astype(str).drop_duplicates()
    ordered = _ordered_levels(frame)
    _check_tree(frame, ordered)
    bottom = frame[ordered[0]].to_numpy()
    nodes, rows = [], []
    for level in ordered:
        for key, members in frame.groupby(level, sort=True)[ordered[0]]:
            nodes.append((level, key))
            rows.append(np.isin(bottom, members.to_numpy()))
    order = np.argsort(bottom, kind="stable")
    summing = np.array(rows, dtype=float)[:, order]
    ids = pd.DataFrame(nodes, columns=[LEVEL, KEY])
    return Hierarchy(ids, summing, ordered)


def _wide(forecasts: pd.DataFrame, nodes: pd.DataFrame, column: str) -> pd.DataFrame:
    """``column`` as a nodes x ds table in the order of ``nodes`` (missing nodes are NaN)."""
    wide = forecasts.pivot_table(index=[LEVEL, KEY], columns=DS, values=column, aggfunc="sum")
    index = pd.MultiIndex.from_frame(nodes.astype(str))
    wide.index = pd.MultiIndex.from_arrays(
        [wide.index.get_level_values(0).astype(str), wide.index.get_level_values(1).astype(str)]
    )
    return wide.reindex(index)


def _long(nodes: pd.DataFrame, dates: pd.Index, values: np.ndarray, column: str) -> pd.DataFrame:
    """nodes x dates array -> long frame level, key, ds, column."""
    return pd.DataFrame(
        {
            LEVEL: np.repeat(nodes[LEVEL].to_numpy(), len(dates)),
            KEY: np.repeat(nodes[KEY].to_numpy(), len(dates)),
            DS: np.tile(np.asarray(dates), len(nodes)),
            column: values.ravel(),
        }
    )


def reconcile_bottom_up(
    forecasts: pd.DataFrame, hierarchy: pd.DataFrame, value_cols: Sequence[str] = (YHAT,)
) -> pd.DataFrame:
    """Bottom-up reconciliation: every upper node is the sum of its bottom nodes.

    Only the bottom level's rows of ``forecasts`` are used; upper rows, if present, are
    replaced. A bottom node of the hierarchy without forecasts (a rep who never sold) counts as
    zero. Only ``value_cols`` are summed: see the module docstring for why quantiles are not.

    Args:
        forecasts: ``level``, ``key``, ``ds`` and the ``value_cols``.
        hierarchy: one row per bottom node with its ancestors (see :func:`build_hierarchy`).
        value_cols: columns to aggregate (means, or sample paths, never quantiles).

    Returns:
        ``level``, ``key``, ``ds`` and ``value_cols`` for every node of the hierarchy.
    """
    tree = build_hierarchy(hierarchy)
    bottom_nodes = tree.nodes.iloc[: tree.n_bottom]
    frames = []
    for column in value_cols:
        wide = _wide(forecasts, bottom_nodes, column).fillna(0.0)
        values = tree.summing @ wide.to_numpy(float)
        frames.append(_long(tree.nodes, wide.columns, values, column))
    result = frames[0]
    for extra, column in zip(frames[1:], value_cols[1:], strict=False):
        result[column] = extra[column].to_numpy()
    return result


def shrunk_covariance(errors: np.ndarray) -> np.ndarray:
    """Schäfer-Strimmer shrinkage of the error covariance towards its diagonal.

    Args:
        errors: ``(n_nodes, n_samples)`` forecast errors (assumed mean zero, so the
            second-moment matrix is used, as MinT does).

    Returns:
        ``(n_nodes, n_nodes)`` positive definite covariance.
    """
    n = errors.shape[1]
    cov = errors @ errors.T / n
    std = np.sqrt(np.diag(cov))
    safe = np.where(std > 0, std, 1.0)
    x = errors / safe[:, None]
    corr = x @ x.T / n
    # Variance of each correlation estimate (Schäfer & Strimmer 2005, eq. for var(r_ij)).
    squares = x**2
    var_corr = (squares @ squares.T - n * corr**2) * n / max(n - 1, 1) ** 3
    off = ~np.eye(len(cov), dtype=bool)
    denominator = float(np.sum(corr[off] ** 2))
    lam = 1.0 if denominator == 0 else float(np.clip(np.sum(var_corr[off]) / denominator, 0, 1))
    shrunk = (1 - lam) * cov + lam * np.diag(np.diag(cov))
    # A node that never erred (an all-zero series) would make the matrix singular.
    floor = 1e-9 * max(float(np.max(np.diag(cov))), 1e-12)
    return shrunk + np.eye(len(cov)) * floor


def mint_projection(summing: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """MinT bottom-level weights ``P = (S' W^-1 S)^-1 S' W^-1``, shape ``(n_bottom, n_nodes)``.

    Reconciled forecasts are ``summing @ P @ base``.
    """
    w_inv_s = np.linalg.solve(covariance, summing)
    return np.linalg.solve(summing.T @ w_inv_s, w_inv_s.T)


def reconcile_mint(
    forecasts: pd.DataFrame, hierarchy: pd.DataFrame, residuals: pd.DataFrame
) -> pd.DataFrame:
    """MinT (shrink) reconciliation of ``yhat``.

    Args:
        forecasts: ``level``, ``key``, ``ds``, ``yhat`` for every node of the hierarchy.
        hierarchy: one row per bottom node with its ancestors.
        residuals: forecast errors, one row per node (``level``, ``key`` columns) and one
            column per error sample (e.g. backtest origin x step).

    Returns:
        ``level``, ``key``, ``ds``, ``yhat`` for every node, coherent. Not clipped at zero.

    Raises:
        ValueError: when a node has no forecast or no residuals.
    """
    tree = build_hierarchy(hierarchy)
    base = _wide(forecasts, tree.nodes, YHAT)
    errors = residuals.assign(**{LEVEL: residuals[LEVEL].astype(str)}).set_index(
        [LEVEL, KEY]
    )
    errors.index = pd.MultiIndex.from_arrays(
        [errors.index.get_level_values(0).astype(str), errors.index.get_level_values(1).astype(str)]
    )
    errors = errors.reindex(base.index)
    if base.isna().any().any() or errors.isna().any().any():
        raise ValueError("MinT needs a forecast and residuals for every node of the hierarchy")
    covariance = shrunk_covariance(errors.to_numpy(float))
    projection = mint_projection(tree.summing, covariance)
    values = tree.summing @ projection @ base.to_numpy(float)
    return _long(tree.nodes, base.columns, values, YHAT)
