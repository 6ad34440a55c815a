"""Feasibility in bounded memory: draws made a block at a time, each summed up the hierarchy at
once, the same draws to the last bit whatever the blocks, their order or where they ran; a
float32 node store for large problems with exact float64 means.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest

from engine.schemas import (
    AMOUNT,
    COMPANY_KEY,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    PERIOD,
    REGION,
    REP,
    TEAM,
)
from models.feasibility import CellInputs, RunRate, simulate, summarise
from models.feasibility.simulation import deal_draws, simulate_deals

AS_OF = pd.Timestamp("2026-11-16")


def company(n_reps: int = 40, n_deals: int = 2_500, seed: int = 0) -> CellInputs:
    """Reps in teams of 5 and regions of 20, with pooled-small and lumpy deals, certain and
    impossible deals, a run rate with shared factors, and both company-wide factors on."""
    rng = np.random.default_rng(seed)
    reps = np.array([f"rep{i:04d}" for i in range(n_reps)], dtype=object)
    cells = pd.DataFrame({REP: reps, TEAM: [f"team{i // 5:03d}" for i in range(n_reps)],
                          REGION: [f"region{i // 20:02d}" for i in range(n_reps)]})
    p = rng.beta(1.2, 3.0, n_deals)
    p[:5], p[5:10] = 1.0, 0.0
    amount = np.where(rng.random(n_deals) < 0.05, rng.lognormal(12, 0.5, n_deals),
                      rng.lognormal(7, 0.5, n_deals))
    run_rate = RunRate(
        mean=rng.lognormal(11, 0.5, n_reps), shift=1e3, bias=np.zeros(n_reps),
        sigma=np.full(n_reps, 0.2), bias_common=0.01, sigma_common=0.08,
        active=np.arange(n_reps) % 7 != 0,
        group_codes=(np.arange(n_reps) // 20, np.arange(n_reps) // 5),
        group_sigmas=(0.04, 0.03))
    return CellInputs(
        cells=cells, rep_of_cell=np.arange(n_reps), reps=reps,
        closed_cell=rng.lognormal(11, 0.5, n_reps), deal_cell=rng.integers(0, n_reps, n_deals),
        deal_p=p, deal_amount=amount, run_rate=run_rate, share_cell=np.ones(n_reps),
        churn_rep=-rng.random(n_reps) * 100, levels=list(HIERARCHY_LEVELS), conversion=0.3,
        pipeline_sigma=0.1, rest_scale=0.9, rest_sigma=0.05)


def targets_for(inputs: CellInputs, sim_expected: np.ndarray, nodes: pd.DataFrame
                ) -> pd.DataFrame:
    return pd.DataFrame({LEVEL: nodes[LEVEL], KEY: nodes[KEY], AMOUNT: sim_expected,
                         PERIOD: "2026Q4"})


@pytest.mark.parametrize("mode", [{}, {"exact": True}, {"per_deal_streams": True}])
def test_blocks_give_the_same_draws_to_the_last_bit(mode: dict[str, bool]) -> None:
    """Blocks of 37 draws (and one block of every draw) give identical node draws and an
    identical feasibility frame: every stream is positioned at each block's start."""
    inputs = company()
    whole = simulate(inputs, draws=1_001, seed=3, rows=1_001, **mode)
    blocked = simulate(inputs, draws=1_001, seed=3, rows=37, **mode)
    assert whole.draws.dtype == np.float64 and whole.means is None
    np.testing.assert_array_equal(whole.draws, blocked.draws)
    targets = targets_for(inputs, whole.draws.mean(axis=0) * 1.01, whole.nodes)
    pd.testing.assert_frame_equal(summarise(whole, targets, "2026Q4", AS_OF),
                                  summarise(blocked, targets, "2026Q4", AS_OF), check_exact=True)
    # The draws are not all alike: the run rate, the deals and both factors vary.
    company_column = whole.draws[:, whole.node_index(LEVEL_COMPANY, COMPANY_KEY)]
    assert company_column.std() > 0 and len(np.unique(company_column)) == 1_001


def test_blocks_run_in_any_order_and_elsewhere() -> None:
    """A runner that returns the blocks backwards (as tasks finishing in any order would) and
    runs each on a pickled copy of the plan (as another process would) changes nothing."""
    import pickle

    def backwards(fn: Callable[[int], np.ndarray], n: int) -> Iterator[tuple[int, np.ndarray]]:
        remote = pickle.loads(pickle.dumps(fn))
        for b in reversed(range(n)):
            yield b, remote(b)

    backwards.at_least = 6  # type: ignore[attr-defined]
    inputs = company(seed=1)
    here = simulate(inputs, draws=600, seed=9)
    away = simulate(inputs, draws=600, seed=9, blocks=backwards)
    np.testing.assert_array_equal(here.draws, away.draws)


def test_deal_blocks_are_slices_of_the_whole_draw() -> None:
    """A block of deal draws is that slice of :func:`simulate_deals`, including blocks that
    start inside a 64-bit word of the 16-bit uniform stream and inside a stream chunk."""
    rng = np.random.default_rng(4)
    p, amount, cell = rng.random(301), rng.lognormal(5, 1, 301), rng.integers(0, 9, 301)
    whole = simulate_deals(p, amount, cell, 9, 997, seed=11, chunk_elements=30_000,
                           clt_max_share=0.0)
    plan = deal_draws(p, amount, cell, 9, 997, 11, chunk_elements=30_000, clt_max_share=0.0,
                      blocks=[(0, 3), (3, 101), (101, 997)])
    for lo, hi in [(0, 3), (3, 101), (101, 997)]:
        np.testing.assert_array_equal(plan.rows(lo, hi), whole[lo:hi])


def test_run_rate_from_normals_is_draw() -> None:
    rate = company().run_rate
    draws = rate.draw(50, np.random.default_rng(2))
    rng = np.random.default_rng(2)
    normals = [rng.standard_normal((50, width)) for width in rate.normal_widths()]
    np.testing.assert_array_equal(rate.from_normals(normals), draws)
    assert rate.normal_widths() == [1, 40, 2, 8]


def test_float32_store_keeps_means_exact_and_answers_within_rounding() -> None:
    """Past :data:`FLOAT64_STORE` numbers the store is float32 (half the memory): means are
    still the float64 ones, quantiles within float32 rounding, P(attain) the same; a node whose
    revenue is exactly its target (all closed, nothing to come) still attains it."""
    inputs = company()
    # One rep has closed exactly its target and has nothing else to come.
    inputs.run_rate.active[3] = False
    inputs.deal_p[inputs.deal_cell == 3] = 0.0
    inputs.closed_cell[3] = 1_234_567.891
    wide = simulate(inputs, draws=2_000, seed=5)
    narrow = simulate(inputs, draws=2_000, seed=5, dtype=np.float32, rows=128)
    assert narrow.draws.dtype == np.float32 and narrow.means is not None
    np.testing.assert_allclose(narrow.means, wide.draws.mean(axis=0), rtol=1e-12)
    # A copy with other draws (as the plan's rescaling makes) does not keep stale means.
    doubled = dataclasses.replace(narrow, draws=narrow.draws * 2)
    np.testing.assert_allclose(doubled.mean(), 2 * narrow.means, rtol=1e-6)
    np.testing.assert_allclose(narrow.draws, wide.draws, rtol=2e-7)
    targets = targets_for(inputs, wide.draws.mean(axis=0), wide.nodes)
    rep3 = (targets[LEVEL] == LEVEL_REP) & (targets[KEY] == "rep0003")
    targets.loc[rep3, AMOUNT] = 1_234_567.891
    a = summarise(wide, targets, "2026Q4", AS_OF).set_index([LEVEL, KEY])
    b = summarise(narrow, targets, "2026Q4", AS_OF).set_index([LEVEL, KEY])
    assert a.loc[(LEVEL_REP, "rep0003"), "p_attain"] == 1.0
    assert b.loc[(LEVEL_REP, "rep0003"), "p_attain"] == 1.0
    np.testing.assert_allclose(b["p_attain"], a["p_attain"], atol=1e-3)
    for column in ("expected", "p10", "p50", "p90", "must_hit", "stretch"):
        np.testing.assert_allclose(b[column], a[column], rtol=2e-7)
    for level in (LEVEL_TEAM, LEVEL_REGION):
        assert (a.loc[level, "p_attain"].between(0.3, 0.7)).all()


def test_memory_is_the_node_store_plus_a_block() -> None:
    """Peak memory of simulate + summarise stays near the node store (draws x nodes) however
    many cells the draws sum: the old path held several draws x cells float64 arrays at once
    (deals, run rates, the rest, the totals) besides the store."""
    inputs = company(n_reps=1_500, n_deals=6_000)
    inputs = dataclasses.replace(inputs, levels=[LEVEL_COMPANY, LEVEL_REGION, LEVEL_REP])
    draws = 2_000
    simulate(company(n_reps=20, n_deals=100), draws=50)  # warm-up: imports, caches
    tracemalloc.start()
    simulation = simulate(inputs, draws=draws, seed=1, rows=64)
    simulated = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    frame = summarise(simulation, None, "2026Q4", AS_OF, all_nodes=True)
    summarised = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    store = simulation.draws.nbytes
    one_cells_array = draws * len(inputs.cells) * 8
    assert store >= one_cells_array  # the store is the biggest array either way
    assert simulated < store + 0.6 * one_cells_array, (simulated / 2**20, store / 2**20)
    assert summarised < store + 0.6 * one_cells_array, (summarised / 2**20, store / 2**20)
    assert frame["p50"].notna().all()
