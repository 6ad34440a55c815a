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

Memory: nothing here holds an ``n_nodes x n_nodes`` or ``n_nodes x n_bottom`` dense matrix, so
50,000 reps reconcile in seconds and megabytes. The summing matrix is sparse (one entry per
node and bottom node below it). MinT is solved in its constraint form (Wickramasuriya,
Athanasopoulos & Hyndman 2019): with ``C = [-S_upper, I]`` the reconciled forecasts are
``y - W C' (C W C')^-1 C y``, and ``C W C'`` is only ``n_upper x n_upper`` and sparse for a
diagonal ``W`` (a node couples only with its ancestors and descendants). ``wls_struct``'s ``W``
is diagonal; the shrunk covariance is a diagonal plus ``errors @ errors.T`` scaled, i.e.
diagonal plus rank ``n_samples``, handled exactly by the Woodbury identity. Both give the
same numbers as the textbook dense ``(S' W^-1 S)^-1 S' W^-1`` (kept as :func:`mint_projection`
for small trees and tests) to rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.linalg import splu

from engine.schemas import COMPANY_KEY, DS, KEY, LEVEL, LEVEL_COMPANY
from models.metrics import YHAT

__all__ = [
    "Hierarchy",
    "build_hierarchy",
    "mint_bottom",
    "mint_projection",
    "reconcile_bottom_up",
    "reconcile_mint",
    "shrunk_covariance",
    "shrunk_covariance_parts",
]


@dataclass(frozen=True)
class Hierarchy:
    """A tree of nodes and its summing matrix.

    Attributes:
        nodes: ``level`` and ``key`` of every node, bottom nodes first (row ``i`` of ``summing``).
        summing: ``(n_nodes, n_bottom)`` sparse 0/1 matrix: node value = ``summing @ bottom
            values``; its first ``n_bottom`` rows are the identity.
        levels: level names from bottom to top.
    """

    nodes: pd.DataFrame
    summing: sparse.csr_array
    levels: list[str]

    @property
    def n_bottom(self) -> int:
        return int(self.summing.shape[1])

    @property
    def sizes(self) -> np.ndarray:
        """Number of bottom nodes under each node (``wls_struct``'s variances)."""
        return np.asarray(self.summing.sum(axis=1), dtype=float).ravel()


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
    """Nodes and (sparse) summing matrix of a hierarchy frame.

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
    # Bottom nodes (columns) in key order; each level's nodes in key order, as a sorted
    # groupby lists them. A tree's bottom keys are unique, so the bottom block is I.
    bottom = frame[ordered[0]].to_numpy()
    frame = frame.iloc[np.argsort(bottom, kind="stable")]
    n_bottom = len(frame)
    levels_out, keys, row_parts = [], [], []
    offset = 0
    for level in ordered:
        names, codes = np.unique(frame[level].to_numpy(), return_inverse=True)
        levels_out.append(np.full(len(names), level, dtype=object))
        keys.append(names.astype(object))
        row_parts.append(codes.ravel() + offset)
        offset += len(names)
    rows = np.concatenate(row_parts)
    columns = np.tile(np.arange(n_bottom), len(ordered))
    summing = sparse.csr_array(
        (np.ones(len(rows)), (rows, columns)), shape=(offset, n_bottom)
    )
    ids = pd.DataFrame({LEVEL: np.concatenate(levels_out), KEY: np.concatenate(keys)})
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


def shrunk_covariance_parts(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Schäfer-Strimmer shrinkage of the error covariance towards its diagonal, as
    ``diag(diagonal) + factor @ factor.T``, never forming the ``n_nodes x n_nodes`` matrix.

    The shrunk covariance ``(1 - lam) E E' / n + lam diag(E E' / n) + floor I`` of errors
    ``E`` with ``n`` samples is a diagonal plus a rank-``n`` term; the shrinkage intensity
    ``lam`` needs only sums over all pairs, computed from ``n x n`` Gram matrices.

    Args:
        errors: ``(n_nodes, n_samples)`` forecast errors (assumed mean zero, so the
            second-moment matrix is used, as MinT does).

    Returns:
        ``diagonal`` (``n_nodes``, positive) and ``factor`` (``n_nodes x n_samples``).
    """
    errors = np.asarray(errors, dtype=float)
    n = errors.shape[1]
    variances = np.einsum("ij,ij->i", errors, errors) / n
    std = np.sqrt(variances)
    safe = np.where(std > 0, std, 1.0)
    x = errors / safe[:, None]
    squares = x**2
    # Sums over the off-diagonal pairs i != j of corr_ij^2 and of var(corr_ij) (Schäfer &
    # Strimmer 2005): every pair's sum is a Frobenius norm of a samples x samples matrix.
    corr_diag = squares.sum(axis=1) / n
    all_corr2 = float(np.sum((x.T @ x) ** 2)) / n**2
    off_corr2 = all_corr2 - float(np.sum(corr_diag**2))
    column_sums = squares.sum(axis=0)
    off_squares = float(column_sums @ column_sums) - float(np.sum(squares**2))
    off_var = (off_squares - n * off_corr2) * n / max(n - 1, 1) ** 3
    # No pairs (one node) or no correlation at all: shrink fully to the diagonal.
    none = off_corr2 <= 1e-12 * max(all_corr2, 1e-300)
    lam = 1.0 if none else float(np.clip(off_var / off_corr2, 0, 1))
    # A node that never erred (an all-zero series) would make the matrix singular.
    floor = 1e-9 * max(float(np.max(variances, initial=0.0)), 1e-12)
    return lam * variances + floor, np.sqrt((1 - lam) / n) * errors


def shrunk_covariance(errors: np.ndarray) -> np.ndarray:
    """The dense ``(n_nodes, n_nodes)`` shrunk covariance of :func:`shrunk_covariance_parts`
    (positive definite); for small trees and tests."""
    diagonal, factor = shrunk_covariance_parts(errors)
    return np.diag(diagonal) + factor @ factor.T


def mint_projection(summing: np.ndarray | sparse.sparray, covariance: np.ndarray) -> np.ndarray:
    """MinT bottom-level weights ``P = (S' W^-1 S)^-1 S' W^-1``, shape ``(n_bottom, n_nodes)``.

    Dense and ``O(n_nodes^3)``: the textbook form, for small trees and tests. Reconciled
    forecasts are ``summing @ P @ base``; :func:`mint_bottom` gives ``P @ base`` without
    any dense matrix.
    """
    dense = sparse.csr_array(summing).toarray() if sparse.issparse(summing) else summing
    w_inv_s = np.linalg.solve(covariance, dense)
    return np.linalg.solve(dense.T @ w_inv_s, w_inv_s.T)


def mint_bottom(
    summing: np.ndarray | sparse.sparray,
    base: np.ndarray,
    diagonal: np.ndarray,
    factor: np.ndarray | None = None,
) -> np.ndarray:
    """MinT's reconciled bottom forecasts ``P @ base`` for ``W = diag(diagonal) + factor
    factor'`` (``factor`` None: diagonal ``W``, e.g. ``wls_struct``), with sparse algebra.

    Constraint form: ``C = [-S_upper, I]``, ``y~ = y - W C' (C W C')^-1 C y``; ``C W C'`` is
    ``C diag C'`` (sparse, ``n_upper x n_upper``) plus ``Q Q'`` with ``Q = C factor``, solved by
    a sparse LU and the Woodbury identity. Memory and time grow with the number of nodes
    times the number of periods (and samples), plus the factorisation of the upper nodes'
    sparse ``C diag C'``.

    Args:
        summing: ``(n_nodes, n_bottom)`` summing matrix whose first ``n_bottom`` rows are the
            identity (as :func:`build_hierarchy` makes it).
        base: ``(n_nodes,)`` or ``(n_nodes, n_periods)`` base forecasts.
        diagonal: ``(n_nodes,)`` positive diagonal of ``W``.
        factor: ``(n_nodes, k)`` low-rank part of ``W``, or None.

    Returns:
        ``(n_bottom,)`` or ``(n_bottom, n_periods)`` reconciled bottom forecasts.
    """
    matrix = sparse.csr_array(summing, dtype=float)
    n_bottom = int(matrix.shape[1])
    values = np.asarray(base, dtype=float)
    flat = values.ndim == 1
    values = values.reshape(len(values), -1)
    if (matrix[:n_bottom] != sparse.eye_array(n_bottom, format="csr")).nnz:
        raise ValueError("summing matrix must start with the bottom nodes (an identity block)")
    upper = matrix[n_bottom:]
    bottom = values[:n_bottom]
    if upper.shape[0] == 0:
        return bottom[:, 0] if flat else bottom.copy()
    d = np.asarray(diagonal, dtype=float)
    d_bottom = d[:n_bottom]
    gap = values[n_bottom:] - upper @ bottom  # C y: how far the base is from coherent
    core = sparse.diags_array(d[n_bottom:]) + upper @ sparse.diags_array(d_bottom) @ upper.T
    lu = splu(sparse.csc_array(core))
    k_inv_gap = lu.solve(np.asfortranarray(gap))
    if factor is None:
        z = k_inv_gap
        out = bottom + d_bottom[:, None] * (upper.T @ z)
    else:
        f = np.asarray(factor, dtype=float)
        q = f[n_bottom:] - upper @ f[:n_bottom]
        k_inv_q = lu.solve(np.asfortranarray(q))
        small = np.eye(q.shape[1]) + q.T @ k_inv_q
        z = k_inv_gap - k_inv_q @ np.linalg.solve(small, q.T @ k_inv_gap)
        out = bottom + d_bottom[:, None] * (upper.T @ z) - f[:n_bottom] @ (q.T @ z)
    return out[:, 0] if flat else out


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
    diagonal, factor = shrunk_covariance_parts(errors.to_numpy(float))
    bottom = mint_bottom(tree.summing, base.to_numpy(float), diagonal, factor)
    values = tree.summing @ bottom
    return _long(tree.nodes, base.columns, values, YHAT)
