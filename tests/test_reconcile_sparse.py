"""Sparse reconciliation (models.reconcile, models.forecast.reconciliation) against the dense
textbook formulas it replaced: same numbers (rtol 1e-9), no dense n x n matrix."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from engine.schemas import DS, KEY, LEVEL, LEVEL_COMPANY, REGION, REP, TEAM
from models.backtest import BacktestWindow, Panel
from models.forecast.base import COMBINED
from models.forecast.reconciliation import align_tree, reconciled
from models.metrics import YHAT
from models.reconcile import (
    build_hierarchy,
    mint_bottom,
    mint_projection,
    reconcile_mint,
    shrunk_covariance,
    shrunk_covariance_parts,
)


def uneven_org(n_reps: int, seed: int) -> pd.DataFrame:
    """Reps spread unevenly over teams and regions; keys whose string order differs from
    their numeric order, a team with a single rep, a region with a single team."""
    rng = np.random.default_rng(seed)
    n_teams = max(n_reps // 6, 2)
    team = rng.integers(0, n_teams - 1, n_reps)
    team[-1] = n_teams - 1  # the last team has one rep
    region = np.where(team == n_teams - 1, 99, team % 4)  # ... and a region of its own
    order = rng.permutation(n_reps)
    return pd.DataFrame(
        {
            REP: [f"r{i}" for i in order],
            TEAM: [f"t{t}" for t in team[order]],
            REGION: [f"g{g}" for g in region[order]],
        }
    )


def dense_summing(org: pd.DataFrame, nodes: pd.DataFrame) -> np.ndarray:
    """Row i: 1 for every rep below node i, read straight from the frame."""
    reps = np.sort(org[REP].astype(str).to_numpy())
    rows = []
    for level, key in nodes.itertuples(index=False):
        if level == LEVEL_COMPANY:
            members = set(reps)
        else:
            members = set(org.loc[org[level].astype(str) == key, REP].astype(str))
        rows.append(np.isin(reps, list(members)))
    return np.array(rows, dtype=float)


def dense_shrunk_covariance(errors: np.ndarray) -> np.ndarray:
    """Schäfer-Strimmer shrinkage written with the full n x n matrices (the former code)."""
    n = errors.shape[1]
    cov = errors @ errors.T / n
    std = np.sqrt(np.diag(cov))
    x = errors / np.where(std > 0, std, 1.0)[:, None]
    corr = x @ x.T / n
    squares = x**2
    var_corr = (squares @ squares.T - n * corr**2) * n / max(n - 1, 1) ** 3
    off = ~np.eye(len(cov), dtype=bool)
    denominator = float(np.sum(corr[off] ** 2))
    lam = 1.0 if denominator == 0 else float(np.clip(np.sum(var_corr[off]) / denominator, 0, 1))
    shrunk = (1 - lam) * cov + lam * np.diag(np.diag(cov))
    return shrunk + np.eye(len(cov)) * 1e-9 * max(float(np.max(np.diag(cov))), 1e-12)


def assert_same(actual: np.ndarray, desired: np.ndarray) -> None:
    scale = float(np.max(np.abs(desired)))
    np.testing.assert_allclose(actual, desired, rtol=1e-9, atol=1e-9 * scale)


@pytest.fixture(scope="module")
def org() -> pd.DataFrame:
    return uneven_org(150, seed=3)


def correlated_errors(n_nodes: int, n_samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    errors = rng.normal(size=(n_nodes, n_samples)) + rng.normal(size=(1, n_samples))
    errors *= rng.uniform(0.5, 20, size=(n_nodes, 1))
    errors[3] = 0.0  # a node that never erred
    return errors


def test_summing_matrix_is_sparse_and_matches_the_frame(org: pd.DataFrame) -> None:
    tree = build_hierarchy(org)
    assert sparse.issparse(tree.summing)
    assert tree.summing.nnz == 4 * len(org)  # one entry per rep and level
    np.testing.assert_array_equal(tree.summing.toarray(), dense_summing(org, tree.nodes))
    assert tree.nodes[LEVEL].tolist()[: len(org)] == [REP] * len(org)
    assert tree.nodes[KEY].tolist()[: len(org)] == sorted(org[REP])
    np.testing.assert_array_equal(tree.sizes, tree.summing.toarray().sum(axis=1))


def test_shrunk_covariance_parts_are_the_dense_shrinkage() -> None:
    errors = correlated_errors(40, 18, seed=4)
    diagonal, factor = shrunk_covariance_parts(errors)
    assert factor.shape == errors.shape
    expected = dense_shrunk_covariance(errors)
    assert_same(np.diag(diagonal) + factor @ factor.T, expected)
    assert_same(shrunk_covariance(errors), expected)
    # One node: nothing to correlate, shrunk all the way to its variance.
    one = np.array([[1.0, -2.0, 0.5]])
    assert_same(shrunk_covariance(one), dense_shrunk_covariance(one))


@pytest.mark.parametrize("n_periods", [1, 6])
def test_mint_bottom_equals_the_dense_projection(org: pd.DataFrame, n_periods: int) -> None:
    tree = build_hierarchy(org)
    rng = np.random.default_rng(5)
    base = rng.uniform(0, 100, size=(len(tree.nodes), n_periods))
    errors = correlated_errors(len(tree.nodes), 24, seed=6)
    structural = mint_projection(tree.summing, np.diag(tree.sizes)) @ base
    assert_same(mint_bottom(tree.summing, base, tree.sizes), structural)
    shrunk = mint_projection(tree.summing, dense_shrunk_covariance(errors)) @ base
    assert_same(mint_bottom(tree.summing, base, *shrunk_covariance_parts(errors)), shrunk)
    assert_same(mint_bottom(tree.summing, base[:, 0], tree.sizes), structural[:, 0])


def test_mint_bottom_needs_bottom_nodes_first(org: pd.DataFrame) -> None:
    tree = build_hierarchy(org)
    upside_down = tree.summing[np.arange(len(tree.nodes))[::-1]]
    with pytest.raises(ValueError, match="identity"):
        mint_bottom(upside_down, np.ones(len(tree.nodes)), tree.sizes)


def windows_of(node_errors: list[np.ndarray]) -> list[BacktestWindow]:
    """Windows whose combined forecast misses the actuals by the given errors."""
    out = []
    for i, err in enumerate(node_errors):
        actual = np.full(err.shape, 50.0)
        out.append(BacktestWindow(i, np.ones(len(err), bool), actual, np.ones(len(err)),
                                  {COMBINED: actual - err}))
    return out


def test_reconciled_equals_the_dense_code_for_every_method(org: pd.DataFrame) -> None:
    tree = build_hierarchy(org)
    n = len(tree.nodes)
    rng = np.random.default_rng(7)
    # Three unrelated series first, then the tree nodes in a shuffled panel order.
    rows = 3 + rng.permutation(n)
    base = np.full((3 + n, 6), np.nan)
    base[:3] = rng.uniform(0, 10, size=(3, 6))
    base[rows] = rng.normal(40, 30, size=(n, 6)) * np.sqrt(tree.sizes)[:, None]
    base[rows[5], 2] = np.nan  # a missing forecast counts as zero
    errors = [correlated_errors(3 + n, 6, seed=s) for s in (8, 9)]
    others = windows_of(errors)
    summing = tree.summing.toarray()
    node_base = np.nan_to_num(base[rows], nan=0.0)
    stacked = np.hstack([e[rows] for e in errors])
    dense_bottom = {
        "bottom_up": node_base[: tree.n_bottom],
        "wls_struct": mint_projection(summing, np.diag(summing.sum(axis=1))) @ node_base,
        "mint_shrink": mint_projection(summing, dense_shrunk_covariance(stacked)) @ node_base,
    }
    for method, bottom in dense_bottom.items():
        expected = base.copy()
        expected[rows] = summing @ np.maximum(bottom, 0.0)
        got = reconciled(base, tree, rows, method, others)
        np.testing.assert_array_equal(got[:3], base[:3])  # other series untouched
        assert_same(got, expected)
    assert (dense_bottom["mint_shrink"] < 0).any()  # the clip at zero was exercised


def test_reconcile_mint_equals_the_dense_code(org: pd.DataFrame) -> None:
    tree = build_hierarchy(org)
    rng = np.random.default_rng(10)
    dates = pd.date_range("2025-01-01", periods=3, freq="MS")
    base = pd.concat([tree.nodes.assign(**{DS: ds}) for ds in dates], ignore_index=True)
    base[YHAT] = rng.uniform(10, 100, len(base))
    errors = correlated_errors(len(tree.nodes), 12, seed=11)
    residuals = pd.concat([tree.nodes, pd.DataFrame(errors)], axis=1)
    result = reconcile_mint(base, org, residuals).set_index([LEVEL, KEY, DS])[YHAT]
    wide = base.set_index([LEVEL, KEY, DS])[YHAT].unstack(DS).reindex(
        pd.MultiIndex.from_frame(tree.nodes))
    summing = tree.summing.toarray()
    expected = summing @ mint_projection(summing, dense_shrunk_covariance(errors)) @ wide.to_numpy()
    got = result.unstack(DS).reindex(pd.MultiIndex.from_frame(tree.nodes)).to_numpy()
    assert_same(got, expected)


def test_missing_upper_nodes_get_their_bottom_nodes_history() -> None:
    org = pd.DataFrame({REP: ["a", "b", "c"], TEAM: ["t1", "t1", "t2"], REGION: "g"})
    dates = pd.date_range("2025-01-01", periods=3, freq="MS")
    # Team t2 has no series of its own; regions are not in the series (not reconciled).
    ids = pd.DataFrame({LEVEL: [REP, REP, REP, TEAM, LEVEL_COMPANY],
                        KEY: ["a", "b", "c", "t1", "all"]})
    values = np.array([[np.nan, 1.0, 2.0], [np.nan, 3.0, 4.0], [np.nan, np.nan, 5.0],
                       [np.nan, 4.0, 6.0], [np.nan, 4.0, 11.0]])
    notes: list[str] = []
    tree, panel, rows = align_tree(Panel(ids, dates, values, "MS"), org, None, notes)
    assert tree is not None and tree.levels == [REP, TEAM, LEVEL_COMPANY]
    history = pd.DataFrame(panel.values[rows], index=pd.MultiIndex.from_frame(tree.nodes))
    np.testing.assert_array_equal(history.loc[(TEAM, "t2")], [np.nan, np.nan, 5.0])
    np.testing.assert_array_equal(history.loc[(TEAM, "t1")], [np.nan, 4.0, 6.0])
    assert panel.n_series == 6
    assert any("1 hierarchy node(s) had no series" in note for note in notes)
    assert not any("differs from the sum" in note for note in notes)


def test_a_large_tree_reconciles_without_dense_matrices() -> None:
    # 6,000 reps: the dense summing matrix alone would be 6,161 x 6,000 floats (296 MB) and
    # the covariance 6,161^2 (304 MB); the sparse path stays within a few dozen MB.
    n_reps = 6000
    rng = np.random.default_rng(12)
    team = rng.integers(0, 100, n_reps)
    org = pd.DataFrame({REP: [f"r{i}" for i in range(n_reps)], TEAM: [f"t{t}" for t in team],
                        REGION: [f"g{t % 60}" for t in team]})
    tracemalloc.start()
    try:
        tree = build_hierarchy(org)
        n = len(tree.nodes)
        rows = np.arange(n)
        base = rng.uniform(0, 100, size=(n, 6))
        others = windows_of([rng.normal(size=(n, 6)) for _ in range(3)])
        out = {m: reconciled(base, tree, rows, m, others)
               for m in ("bottom_up", "wls_struct", "mint_shrink")}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"
    company = n - 1
    for values in out.values():
        assert values[company] == pytest.approx(values[:n_reps].sum(axis=0))
