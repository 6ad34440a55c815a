"""Reconciliation of the combined forecasts across the hierarchy given to ``fit``.

The combined forecasts of every backtest window are reconciled bottom-up, with MinT's
structural diagonal (``wls_struct``: needs no errors) and with MinT (shrink, covariance of
earlier windows' errors); the method with the lowest backtest MASE, averaged over levels, is
kept. Without evidence (the first window, or no window) ``wls_struct`` is used: bottom-up sums
the noisiest forecasts (the reps'), which made the demo company's top levels far worse than
their own combined forecasts. See :mod:`models.reconcile` for what is coherent (``yhat``) and
what is not (quantiles).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from engine.schemas import COMPANY_KEY, KEY, LEVEL, LEVEL_COMPANY
from models.backtest import BacktestWindow, Panel, known_before
from models.forecast.base import COMBINED, RECONCILED, nanmean
from models.reconcile import Hierarchy, build_hierarchy, mint_bottom, shrunk_covariance_parts

__all__ = [
    "DEFAULT_RECONCILIATION",
    "RECONCILIATIONS",
    "align_tree",
    "reconcile_windows",
    "reconciled",
]

# Reconciliation methods, and the one used without backtest evidence.
RECONCILIATIONS = ("bottom_up", "wls_struct", "mint_shrink")
DEFAULT_RECONCILIATION = "wls_struct"


def _reconciled_levels(
    panel: Panel, hierarchy: pd.DataFrame, levels_to_reconcile: Sequence[str] | None
) -> list[str]:
    columns = [*hierarchy.columns, LEVEL_COMPANY]
    wanted = columns if levels_to_reconcile is None else list(levels_to_reconcile)
    present = set(panel.ids[LEVEL])
    return [lv for lv in dict.fromkeys(wanted) if lv in present and lv in columns]


def align_tree(
    panel: Panel,
    hierarchy: pd.DataFrame | None,
    levels_to_reconcile: Sequence[str] | None,
    notes: list[str],
) -> tuple[Hierarchy | None, Panel, np.ndarray]:
    """The hierarchy restricted to the series' levels, and the panel rows of its nodes.

    Tree nodes missing from the series get a history summed from their bottom nodes;
    bottom nodes without a series are dropped (they never had revenue).

    Args:
        panel: the series.
        hierarchy: one row per bottom node, one column per level; None for none.
        levels_to_reconcile: levels kept coherent (default every hierarchy level, plus
            ``company``, present in the series).
        notes: where what was left out is said.

    Returns:
        The tree (None when there is nothing to reconcile), the panel with a row for every
        tree node, and the panel row of each node in tree order.
    """
    if hierarchy is None:
        return None, panel, np.empty(0, dtype=int)
    levels = _reconciled_levels(panel, hierarchy, levels_to_reconcile)
    if len(levels) < 2:
        notes.append(
            "hierarchy given but fewer than two of its levels are in the series: not reconciled"
        )
        return None, panel, np.empty(0, dtype=int)
    frame = hierarchy.copy()
    if LEVEL_COMPANY not in frame:
        frame[LEVEL_COMPANY] = COMPANY_KEY
    bottom_level = build_hierarchy(frame, levels).levels[0]
    have = set(panel.ids.loc[panel.ids[LEVEL] == bottom_level, KEY].astype(str))
    kept = frame[frame[bottom_level].astype(str).isin(have)]
    if len(kept) < len(frame):
        notes.append(
            f"{len(frame) - len(kept)} {bottom_level} node(s) of the hierarchy have no "
            "series: left out"
        )
    tree = build_hierarchy(kept, levels)
    panel, rows = _panel_with_nodes(panel, tree, notes)
    return tree, panel, rows


def _panel_with_nodes(panel: Panel, tree: Hierarchy, notes: list[str]) -> tuple[Panel, np.ndarray]:
    """Panel with a row for every tree node (missing ones summed from the bottom), and the
    panel row of each node in tree order."""
    index = {
        (str(lv), str(k)): i
        for i, (lv, k) in enumerate(zip(panel.ids[LEVEL], panel.ids[KEY], strict=True))
    }
    bottom_rows = [
        index[(str(lv), str(k))]
        for lv, k in tree.nodes.iloc[: tree.n_bottom].itertuples(index=False)
    ]
    bottom = np.nan_to_num(panel.values[bottom_rows], nan=0.0)
    started_bottom = (~np.isnan(panel.values[bottom_rows])).astype(float)
    extra_ids, missing, rows = [], [], []
    for i, (lv, k) in enumerate(tree.nodes.itertuples(index=False)):
        key = (str(lv), str(k))
        if key in index:
            rows.append(index[key])
            continue
        missing.append(i)
        extra_ids.append({LEVEL: lv, KEY: k})
        rows.append(panel.n_series + len(extra_ids) - 1)
    if extra_ids:
        members = tree.summing[missing]
        started = (members @ started_bottom) > 0
        extra_values = np.where(started, members @ bottom, np.nan)
        notes.append(
            f"{len(extra_ids)} hierarchy node(s) had no series: history summed from their "
            "bottom nodes"
        )
        ids = pd.concat([panel.ids, pd.DataFrame(extra_ids)], ignore_index=True)
        panel = Panel(
            ids, panel.dates, np.vstack([panel.values, extra_values]), panel.freq
        )
    _note_incoherent_history(panel, tree, np.array(rows), notes)
    return panel, np.array(rows)


def _note_incoherent_history(
    panel: Panel, tree: Hierarchy, rows: np.ndarray, notes: list[str]
) -> None:
    """Say so when the history itself does not add up (e.g. revenue not assigned to a rep)."""
    values = np.nan_to_num(panel.values[rows], nan=0.0)
    implied = tree.summing @ values[: tree.n_bottom]
    gap = np.abs(values - implied).sum(axis=1)
    size = np.abs(values).sum(axis=1)
    bad = gap > 1e-6 * np.maximum(size, 1.0)
    if bad.any():
        notes.append(
            f"history of {int(bad.sum())} node(s) differs from the sum of their bottom nodes "
            "(forecasts are made coherent with the bottom level)"
        )


def reconcile_windows(
    tree: Hierarchy,
    rows: np.ndarray,
    windows: list[BacktestWindow],
    final: BacktestWindow,
    levels: np.ndarray,
    notes: list[str],
) -> str:
    """Reconcile every window and the final forecasts (``preds[RECONCILED]``); returns the
    method kept.

    Every method is run in every window. The one a window publishes as ``reconciled`` is
    the one with the lowest MASE on the errors known at its cutoff (``wls_struct`` when
    none are), and MinT's covariance too comes only from those errors (``wls_struct``'s
    structural diagonal without any), so reconciled backtests
    never see past their cutoff either. The final forecasts use the method that did best
    over all windows.
    """
    if not windows:
        final.preds[RECONCILED] = reconciled(final.preds[COMBINED], tree, rows,
                                             DEFAULT_RECONCILIATION, windows)
        return DEFAULT_RECONCILIATION
    methods = [*RECONCILIATIONS[:2], *(RECONCILIATIONS[2:] if len(windows) > 1 else [])]
    for w in windows:
        known = known_before(windows, w.cutoff)
        for method in methods:
            w.preds[f"{RECONCILED}:{method}"] = reconciled(
                w.preds[COMBINED], tree, rows, method, known
            )
    for w in windows:
        best = _best_reconciliation(known_before(windows, w.cutoff), methods, rows, levels)
        w.preds[RECONCILED] = w.preds[f"{RECONCILED}:{best}"]
    scores = _reconciliation_scores(windows, methods, rows, levels)
    chosen = min(methods, key=lambda m: scores[m])
    published = _level_averaged_mase(windows, [w.preds[RECONCILED] for w in windows],
                                     rows, levels)
    notes.append(
        "reconciliation: backtest MASE averaged over levels "
        + ", ".join(f"{m} {scores[m]:.3f}" for m in methods)
        + f"; kept {chosen}. The backtest's `reconciled` rows ({published:.3f}) reconcile "
        "each window with the method that did best in the windows before it "
        f"({DEFAULT_RECONCILIATION} in the first)"
    )
    for w in windows:
        for method in methods:
            del w.preds[f"{RECONCILED}:{method}"]
    final.preds[RECONCILED] = reconciled(final.preds[COMBINED], tree, rows, chosen, windows)
    return chosen


def reconciled(
    base: np.ndarray,
    tree: Hierarchy,
    rows: np.ndarray,
    method: str,
    others: Sequence[BacktestWindow],
) -> np.ndarray:
    """Reconciled forecasts of all series: tree nodes made coherent, other series unchanged.

    Bottom forecasts are clipped at zero before summing so that every level stays
    non-negative and coherent. MinT (shrink) takes its covariance from ``others``' errors
    (the structural diagonal without any). Sparse throughout (see :mod:`models.reconcile`):
    no ``n_nodes x n_nodes`` matrix at any size, so tens of thousands of reps fit.
    """
    out = base.copy()
    node_base = np.nan_to_num(base[rows], nan=0.0)
    bottom = node_base[: tree.n_bottom]
    if method == "wls_struct" or (method == "mint_shrink" and not others):
        # MinT with the structural diagonal (each node's variance proportional to its number
        # of bottom nodes): needs no errors at all (Athanasopoulos et al. 2017).
        bottom = mint_bottom(tree.summing, node_base, tree.sizes)
    elif method == "mint_shrink":
        errors = np.hstack(
            [
                np.nan_to_num(w.actual[rows], nan=0.0)
                - np.nan_to_num(w.preds[COMBINED][rows], nan=0.0)
                for w in others
            ]
        )
        bottom = mint_bottom(tree.summing, node_base, *shrunk_covariance_parts(errors))
    out[rows] = tree.summing @ np.maximum(bottom, 0.0)
    return out


def _reconciliation_scores(
    windows: list[BacktestWindow], methods: list[str], rows: np.ndarray, levels: np.ndarray
) -> dict[str, float]:
    """Each method's backtest MASE over ``windows``, averaged within and then across levels."""
    return {
        m: _level_averaged_mase(
            windows, [w.preds[f"{RECONCILED}:{m}"] for w in windows], rows, levels
        )
        for m in methods
    }


def _best_reconciliation(
    known: list[BacktestWindow], methods: list[str], rows: np.ndarray, levels: np.ndarray
) -> str:
    """The method with the lower MASE on the known errors; ``wls_struct`` without any."""
    if not known or len(methods) == 1:
        return DEFAULT_RECONCILIATION
    scores = _reconciliation_scores(known, methods, rows, levels)
    return min(methods, key=lambda m: scores[m])


def _level_averaged_mase(
    windows: list[BacktestWindow], preds: list[np.ndarray], rows: np.ndarray, levels: np.ndarray
) -> float:
    """Backtest MASE of the tree nodes, averaged within each level and then across levels."""
    per_window = []
    for w, pred in zip(windows, preds, strict=True):
        scale = np.where(w.scale > 0, w.scale, np.nan)
        per_window.append(nanmean(np.abs(w.actual - pred), axis=1) / scale)
    mase = nanmean(np.stack(per_window), axis=0)[rows]
    node_levels = levels[rows]
    return float(np.nanmean([np.nanmean(mase[node_levels == lv]) for lv in np.unique(node_levels)]))
