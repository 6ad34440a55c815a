"""The Monte Carlo of a period's revenue for every node: P(attain), quantiles, must-hit, stretch.

Everything is drawn for bottom *cells* (a rep, with its team, region and any extra target level
such as ``product``: :class:`CellInputs`), and every node's draws are sums of its cells' draws (a
sparse matrix product), so every node's distribution is coherent with its children's: the
parent's draws are the sum of the children's draws, never a sum of quantiles. Deals are
simulated with 16-bit uniforms in float32 chunks on a few threads (:func:`simulate_deals`);
there is no Python loop over deals or reps. :func:`summarise` turns the draws into the
feasibility frame (:data:`FEASIBILITY_COLUMNS`): the probability of reaching the target
(:func:`attained`), the quantiles, the must-hit and stretch levels and the pipeline needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, overload

import numpy as np
import pandas as pd
from scipy import sparse

from engine.schemas import (
    AMOUNT,
    AS_OF,
    COMPANY_KEY,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    PERIOD,
)
from models.feasibility.run_rate import RunRate

__all__ = [
    "BLOCK_ELEMENTS",
    "EXTRA_COLUMNS",
    "FEASIBILITY_COLUMNS",
    "FLOAT64_STORE",
    "LEVEL_ORDER",
    "MUST_HIT_QUANTILE",
    "P_ATTAIN",
    "STRETCH_QUANTILE",
    "TARGET",
    "BlockRunner",
    "CellInputs",
    "DealDraws",
    "DrawPlan",
    "Simulation",
    "attained",
    "block_rows",
    "deal_draws",
    "draw_block",
    "draw_plan",
    "interval_problems",
    "local_blocks",
    "node_quantiles",
    "scaled_odds",
    "set_part_wrapper",
    "simulate",
    "simulate_deals",
    "simulate_deals_per_deal",
    "store_dtype",
    "summarise",
    "widening_sigma",
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

MUST_HIT_QUANTILE = 0.10  # reached with 90% probability
STRETCH_QUANTILE = 0.70  # reached with 30% probability
P80_QUANTILE = 0.20  # the revenue reached with 80% probability
# Hierarchy levels top-down (company first); extra levels come after them.
LEVEL_ORDER = {level: i for i, level in enumerate(HIERARCHY_LEVELS)}


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


def _uint16s(seed: np.random.SeedSequence, start: int, count: int) -> np.ndarray:
    """Positions ``start .. start + count`` of the 16-bit stream of ``seed``: four per 64-bit
    word of its PCG64, jumped to (``advance``) instead of drawn, so any slice of a stream costs
    only its own length."""
    bits = np.random.PCG64(seed)
    if start >= 4:
        bits.advance(start // 4)
    skip = start % 4
    return bits.random_raw((skip + count + 3) // 4).view(np.uint16)[skip: skip + count]


def _normal_states(rng: np.random.Generator, width: int, bounds: Sequence[tuple[int, int]]
                   ) -> list[dict[str, Any]]:
    """The state of ``rng`` at the start of each block of rows of a ``draws x width`` array of
    standard normals drawn from it, leaving ``rng`` after the whole array (the normals are
    drawn and dropped a few million at a time: a normal takes a varying number of words, so
    the stream cannot be jumped)."""
    states = []
    step = max(1, 1_000_000 // max(width, 1))
    for lo, hi in bounds:
        states.append(dict(rng.bit_generator.state))
        for row in range(lo, hi, step):
            rng.standard_normal((min(step, hi - row), width))
    return states


def _normals_at(state: dict[str, Any], rows: int, width: int) -> np.ndarray:
    """``rows x width`` standard normals from a saved PCG64 state."""
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state
    return rng.standard_normal((rows, width))


def _as_is(part: Callable[[], None]) -> Callable[[], None]:
    return part


# How a part handed to a worker thread runs: made on the calling thread, run on the worker
# (see :func:`set_part_wrapper`).
_WRAP: list[Callable[[Callable[[], None]], Callable[[], None]]] = [_as_is]


def set_part_wrapper(wrap: Callable[[Callable[[], None]], Callable[[], None]] | None) -> None:
    """How each part of the draws handed to a worker thread is run: ``wrap(part)``, called on
    the thread that asked for the draws (None: as it is). The service makes the parts of its
    background work step aside for requests on the workers too, as the asking thread does
    (:meth:`service.http.metrics.Yielding.inherit`); the draws do not depend on it."""
    _WRAP[0] = wrap or _as_is


def _run_parts(parts: Sequence[Callable[[], None]], threads: int | None) -> None:
    workers = threads or min(2, os.cpu_count() or 1)
    if workers == 1 or len(parts) <= 1:
        for part in parts:
            part()
    else:
        wrap = _WRAP[0]
        wrapped = [wrap(part) for part in parts]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda part: part(), wrapped))


@dataclass
class DealDraws:
    """Wins of independent deals summed per cell, for any block of draws (rows) on its own.

    Made by :func:`deal_draws`; :meth:`rows` gives rows ``lo .. hi`` of the ``draws x cells``
    array of :func:`simulate_deals` (or :func:`simulate_deals_per_deal`) to the last bit, for
    blocks in any order, so that blocks can be drawn one at a time (memory bounded by the
    block) or on different machines. Picklable.
    """

    draws: int
    n_cells: int
    certain: np.ndarray | None = None  # per cell: deals won in every draw
    normal_mean: np.ndarray | None = None  # per used cell (pooled small deals)
    normal_sd: np.ndarray | None = None
    normal_used: np.ndarray | None = None
    normal_states: list[dict[str, Any]] = field(default_factory=list)
    normal_bounds: list[tuple[int, int]] = field(default_factory=list)
    # Bernoulli deals, sorted by cell (one stream per chunk of ``chunk_rows`` draws).
    thr16: np.ndarray | None = None
    amount32: np.ndarray | None = None
    starts: np.ndarray | None = None
    targets: np.ndarray | None = None
    chunk_rows: int = 1
    streams: list[np.random.SeedSequence] = field(default_factory=list)
    # Per-deal streams (common random numbers): deal i draws from its own stream.
    per_deal: bool = False
    deal_thr: np.ndarray | None = None
    deal_amount: np.ndarray | None = None
    deal_cell: np.ndarray | None = None
    deal_streams: list[np.random.SeedSequence] = field(default_factory=list)
    deal_width: int = 1
    threads: int | None = None

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo .. hi`` (draws) x cells, float64."""
        out = np.zeros((hi - lo, self.n_cells))
        if hi <= lo:
            return out
        if self.per_deal:
            self._per_deal(out, lo, hi)
            return out
        if self.certain is not None:
            out += self.certain
        if self.normal_used is not None and self.normal_used.size:
            assert self.normal_mean is not None and self.normal_sd is not None
            used = self.normal_used
            if (lo, hi) not in self.normal_bounds:
                raise ValueError(f"draws {lo}..{hi} are not one of the blocks planned")
            state = self.normal_states[self.normal_bounds.index((lo, hi))]
            z = _normals_at(state, hi - lo, used.size)
            out[:, used] += self.normal_mean[used] + z * self.normal_sd[used]
        if self.thr16 is not None:
            self._bernoulli(out, lo, hi)
        return out

    def _bernoulli(self, out: np.ndarray, lo: int, hi: int) -> None:
        assert self.thr16 is not None and self.amount32 is not None
        assert self.starts is not None and self.targets is not None
        n, size = len(self.thr16), self.chunk_rows
        thr16, amount, starts, targets = self.thr16, self.amount32, self.starts, self.targets

        def part(i: int, a: int, b: int) -> Callable[[], None]:
            def run() -> None:
                uniforms = _uint16s(self.streams[i], (a - i * size) * n,
                                    (b - a) * n).reshape(b - a, n)
                won = np.multiply(uniforms < thr16, amount, dtype=np.float32)
                out[a - lo: b - lo, targets] += np.add.reduceat(won, starts, axis=1)
            return run

        parts = []
        for i in range(lo // size, (hi - 1) // size + 1):
            a, b = max(lo, i * size), min(hi, (i + 1) * size)
            parts.append(part(i, a, b))
        _run_parts(parts, self.threads)

    def _per_deal(self, out: np.ndarray, lo: int, hi: int) -> None:
        assert self.deal_thr is not None and self.deal_amount is not None
        assert self.deal_cell is not None
        thr, amount, cell, rows = self.deal_thr, self.deal_amount, self.deal_cell, hi - lo
        for first in range(0, len(thr), self.deal_width):
            last = min(first + self.deal_width, len(thr))
            live = [j for j in range(first, last) if thr[j] > 0]
            if not live:
                continue
            uniforms = np.empty((rows, len(live)), dtype=np.uint16)
            for column, j in enumerate(live):
                uniforms[:, column] = _uint16s(self.deal_streams[j], lo, rows)
            won = (uniforms < thr[live]) * amount[live]
            onehot = sparse.csr_matrix((np.ones(len(live)),
                                        (np.arange(len(live)), cell[live])),
                                       shape=(len(live), self.n_cells))
            out += np.asarray((onehot.T @ won.T).T)


def deal_draws(p: np.ndarray, amount: np.ndarray, cell: np.ndarray, n_cells: int,
               draws: int, seed: int, *, blocks: Sequence[tuple[int, int]] | None = None,
               threads: int | None = None, chunk_elements: int = 4_000_000,
               clt_max_share: float = 0.2, clt_min_count: int = 50,
               per_deal_streams: bool = False) -> DealDraws:
    """The deals' draws, ready to be made block by block (``blocks``: the row ranges that
    :meth:`DealDraws.rows` will be asked for; default one block of every draw). See
    :func:`simulate_deals` and :func:`simulate_deals_per_deal` for what is drawn."""
    bounds = list(blocks) if blocks is not None else ([(0, draws)] if draws else [])
    p = np.asarray(p, dtype=float)
    amount = np.asarray(amount, dtype=float)
    cell = np.asarray(cell)
    if per_deal_streams:
        p = np.clip(p, 0.0, 1.0)
        return DealDraws(draws, n_cells, per_deal=True,
                         deal_thr=np.round(p * 65536.0).astype(np.uint32), deal_amount=amount,
                         deal_cell=cell,
                         deal_streams=np.random.SeedSequence(seed).spawn(len(p)),
                         deal_width=max(1, chunk_elements // max(draws, 1)))
    plan = DealDraws(draws, n_cells, threads=threads)
    thr = np.round(p * 65536.0)
    certain = thr >= 65536
    if certain.any():
        plan.certain = np.bincount(cell[certain], weights=amount[certain], minlength=n_cells)
    keep = (thr > 0) & ~certain
    small = keep & _clt_deals(p, amount, cell, n_cells, clt_max_share, clt_min_count)
    normal_seed, bernoulli_seed = np.random.SeedSequence(seed).spawn(2)
    if small.any():
        plan.normal_mean = np.bincount(cell[small], p[small] * amount[small], n_cells)
        plan.normal_sd = np.sqrt(np.bincount(cell[small], (p * (1 - p) * amount**2)[small],
                                             n_cells))
        plan.normal_used = np.flatnonzero(plan.normal_sd > 0)
        plan.normal_bounds = bounds
        plan.normal_states = _normal_states(np.random.default_rng(normal_seed),
                                            plan.normal_used.size, bounds)
    keep &= ~small
    if not keep.any() or draws == 0:
        return plan
    order = np.argsort(cell[keep], kind="stable")
    cells = cell[keep][order]
    plan.thr16 = thr[keep][order].astype(np.uint16)
    plan.amount32 = np.asarray(amount, dtype=np.float32)[keep][order]
    plan.starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    plan.targets = cells[plan.starts]
    n = len(plan.thr16)
    plan.chunk_rows = max(1, min(draws, chunk_elements // n))
    plan.streams = bernoulli_seed.spawn(-(-draws // plan.chunk_rows))
    return plan


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
    return deal_draws(p, amount, cell, n_cells, draws, seed, threads=threads,
                      chunk_elements=chunk_elements, clt_max_share=clt_max_share,
                      clt_min_count=clt_min_count).rows(0, draws)


def simulate_deals_per_deal(p: np.ndarray, amount: np.ndarray, cell: np.ndarray, n_cells: int,
                            draws: int, seed: int, chunk_elements: int = 4_000_000
                            ) -> np.ndarray:
    """Wins of independent deals summed per cell, every deal on its own random stream.

    The same distribution as :func:`simulate_deals` with ``clt_max_share=0``, but deal ``i``'s
    uniforms depend only on ``seed`` and ``i``: changing one deal's probability or amount never
    moves another deal's draws, and lowering a probability only removes wins, draw by draw
    (common random numbers, what a scenario compared with its baseline needs).
    """
    return deal_draws(p, amount, cell, n_cells, draws, seed, chunk_elements=chunk_elements,
                      per_deal_streams=True).rows(0, draws)


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
        rest_scale: factor on the rest of the period, from how far the same outlook erred
            at the same point of earlier periods (:mod:`models.feasibility.backtest`): it
            multiplies the run rate and the odds of every deal's win (:func:`scaled_odds`: a
            certain deal stays certain); 1 leaves both as estimated.
        rest_sigma: spread of a company-wide factor of mean 1 on the rest of the period
            (:func:`widening_sigma`): what widens it to the spread those earlier periods
            showed around the corrected outlook (0: no widening).
        deal_frame: the open deals as the win model was asked about them (one row per entry
            of ``deal_p``, same order), what a scenario's shocks select from; ``None`` when
            the inputs were made by hand.
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
    rest_scale: float = 1.0
    rest_sigma: float = 0.0
    deal_frame: pd.DataFrame | None = None


@dataclass
class Simulation:
    """Simulated period revenue for every node.

    Attributes:
        nodes: ``level``, ``key`` and ``parent`` (row number of the parent node, -1 for the
            company) of each node; hierarchy levels nest (rep > team > region > company),
            extra levels hang directly under the company.
        draws: ``draws x nodes`` total period revenue (closed to date included); float64,
            or float32 for stores over :data:`FLOAT64_STORE` numbers.
        closed: closed-to-date revenue per node.
        expected_pipeline, expected_run_rate, churn: mean of each component per node.
        pipeline_in_period, deals_in_period: open deals counted (probability > 0) per node.
        conversion: historical share of pipeline won in the rest of the period.
        notes: how each component was obtained.
        lowest: the lowest revenue each node's draws may take: closed to date plus its reps'
            run-rate floors (below closed to date only where returns made past windows
            negative); ``None`` for simulations made without it.
        paced: the levels whose p_attain is the pace rule's, not the share of these draws
            (:mod:`models.feasibility.pace`): level -> (share of the period elapsed, log
            spread), what :func:`models.feasibility.pace.pace_probability` needs for another
            target of the same node.
        means: mean of each node's draws summed in float64 block by block (set by
            :func:`simulate` when the store is float32; a copy made with other draws drops
            it); ``None``: the mean of ``draws``.
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
    paced: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Not an init field: a copy with other draws (dataclasses.replace) does not keep it.
    means: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def mean(self) -> np.ndarray:
        """Mean of each node's draws (closed to date when there are none)."""
        if not len(self.draws):
            return self.closed
        if self.means is not None:
            return self.means
        if self.draws.dtype == np.float64:
            return self.draws.mean(axis=0)
        return self.draws.mean(axis=0, dtype=np.float64)

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


def scaled_odds(p: np.ndarray, factor: float) -> np.ndarray:
    """Win probabilities whose odds are multiplied by ``factor``: 0 and 1 stay put, small
    probabilities scale by about ``factor``."""
    p = np.asarray(p, dtype=float)
    if factor == 1.0:
        return p
    return np.where(p >= 1.0, 1.0, p * factor / np.maximum(1.0 - p + p * factor, 1e-12))


def widening_sigma(inputs: CellInputs, sigma: float, draws: int = 400) -> float:
    """The spread of a company-wide factor (mean 1) that widens the company's rest of period
    (pipeline wins plus run rate, after ``rest_scale``) to log spread ``sigma``; 0 when its
    own spread is already as wide.

    Its own spread is worked out from the inputs, not from a simulation's draws, so that a
    shocked copy of the inputs keeps the same widening (a scenario moves only what it shocks):
    deals as independent Bernoulli amounts times the pipeline's common factor, the run rate
    from a few hundred draws of a fixed stream.
    """
    if sigma <= 0:
        return 0.0
    p, amount = scaled_odds(inputs.deal_p, inputs.rest_scale), inputs.deal_amount
    pipeline = float(np.sum(p * amount))
    common = math.expm1(inputs.pipeline_sigma**2)
    var_deals = (float(np.sum(p * (1 - p) * amount**2)) * (1 + common) + pipeline**2 * common)
    rates = inputs.run_rate.draw(draws, np.random.default_rng(0)).sum(axis=1)
    mean = pipeline + inputs.rest_scale * float(rates.mean())
    if mean <= 0:
        return 0.0
    var = var_deals + inputs.rest_scale**2 * float(rates.var())
    own = math.log1p(var / mean**2)  # lognormal log-variance
    return math.sqrt(max(sigma**2 - own, 0.0))


# Draws per block: a block's arrays (cells, reps, nodes wide) hold about this many numbers, so
# the memory of a simulation is its per-node store plus a few blocks, whatever the draws.
BLOCK_ELEMENTS = 2_000_000
# Node stores up to this many numbers are float64 (1 GiB); larger ones float32 (half of it;
# every quantile within float32 rounding, about 6e-8 of the value).
FLOAT64_STORE = 2**27

BlockRunner = Callable[[Callable[[int], np.ndarray], int], Iterable[tuple[int, np.ndarray]]]


def local_blocks(fn: Callable[[int], np.ndarray], n_blocks: int
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """Blocks one after another in this process (the pandas engine)."""
    for b in range(n_blocks):
        yield b, fn(b)


@dataclass
class DrawPlan:
    """Everything a block of draws needs (:func:`draw_block`), independent of the other
    blocks and picklable, so blocks are drawn one at a time or on other machines.

    Every random stream of :func:`simulate` is positioned at the start of every block
    (:class:`DealDraws`, the run rate's normals from saved generator states, the company-wide
    factors precomputed per draw): block ``b`` holds exactly rows ``lo .. hi`` of the draws
    made all at once, so the result does not depend on the blocks or on where they ran.
    """

    bounds: list[tuple[int, int]]
    matrix: sparse.csr_matrix
    deals: DealDraws
    run_rate: RunRate
    rate_widths: list[int]
    rate_states: list[list[dict[str, Any]]]  # per block, per normal block of the run rate
    churn_rep: np.ndarray
    floor: np.ndarray
    rep_of_cell: np.ndarray
    share_cell: np.ndarray
    closed_cell: np.ndarray
    scale: float
    pipeline_factor: np.ndarray | None  # per draw (draws x 1)
    rest_factor: np.ndarray | None


def block_rows(n_wide: int, draws: int, elements: int = BLOCK_ELEMENTS) -> int:
    """Draws per block when a row is ``n_wide`` numbers."""
    return max(1, min(max(draws, 1), elements // max(n_wide, 1)))


def draw_plan(inputs: CellInputs, draws: int, seed: int = 42, *, threads: int | None = None,
              exact: bool = False, per_deal_streams: bool = False,
              rows: int | None = None, at_least: int = 1,
              matrix: sparse.csr_matrix | None = None) -> DrawPlan:
    """The plan of :func:`simulate` in blocks of ``rows`` draws (default: about
    :data:`BLOCK_ELEMENTS` numbers per array of a block, and ``at_least`` blocks)."""
    n_cells = len(inputs.cells)
    if matrix is None:
        matrix = _node_matrix(inputs.cells, inputs.levels)[1]
    if rows is None:
        rows = min(block_rows(max(n_cells, matrix.shape[0], len(inputs.reps)), draws),
                   max(1, -(-draws // max(at_least, 1))))
    bounds = [(lo, min(lo + rows, draws)) for lo in range(0, draws, rows)]
    deal_seed, rate_seed, common_seed, rest_seed = np.random.SeedSequence(seed).spawn(4)
    scale = float(inputs.rest_scale)
    deal_p = scaled_odds(inputs.deal_p, scale)
    deals = deal_draws(deal_p, inputs.deal_amount, inputs.deal_cell, n_cells, draws,
                       int(deal_seed.generate_state(1)[0]), blocks=bounds, threads=threads,
                       clt_max_share=0.0 if exact else 0.2, per_deal_streams=per_deal_streams)
    pipeline = None
    if inputs.pipeline_sigma > 0:
        sigma = inputs.pipeline_sigma
        shared = np.random.default_rng(common_seed).standard_normal((draws, 1))
        pipeline = np.exp(sigma * shared - sigma**2 / 2)  # mean 1: the expectation stays
    rate_rng = np.random.default_rng(rate_seed)
    widths = inputs.run_rate.normal_widths()
    per_width = [_normal_states(rate_rng, width, bounds) for width in widths]
    rest = None
    if inputs.rest_sigma > 0:
        extra = float(inputs.rest_sigma)
        z = np.random.default_rng(rest_seed).standard_normal((draws, 1))
        rest = np.exp(extra * z - extra**2 / 2)  # mean 1: the expectation stays
    floor = np.broadcast_to(np.asarray(inputs.run_rate.floor, dtype=float),
                            (len(inputs.run_rate.mean),))
    return DrawPlan(bounds, matrix, deals, inputs.run_rate, widths,
                    [list(states) for states in zip(*per_width, strict=True)]
                    if bounds else [], np.asarray(inputs.churn_rep, dtype=float), floor,
                    inputs.rep_of_cell, inputs.share_cell, np.asarray(inputs.closed_cell),
                    scale, pipeline, rest)


def draw_block(plan: DrawPlan, b: int) -> np.ndarray:
    """Block ``b`` of the draws: ``rows x nodes`` revenue (float64), every node the sum of its
    cells."""
    lo, hi = plan.bounds[b]
    deals = plan.deals.rows(lo, hi)
    if plan.pipeline_factor is not None:
        deals *= plan.pipeline_factor[lo:hi]
    normals = [_normals_at(state, hi - lo, width)
               for state, width in zip(plan.rate_states[b], plan.rate_widths, strict=True)]
    rates = plan.run_rate.from_normals(normals)
    # Churn moves run rate between reps; it cannot take a rep below its floor.
    rates = np.maximum(rates + plan.churn_rep, plan.floor)
    rest = deals + plan.scale * rates[:, plan.rep_of_cell] * plan.share_cell
    if plan.rest_factor is not None:
        rest *= plan.rest_factor[lo:hi]
    totals = rest + plan.closed_cell
    return np.asarray((plan.matrix @ totals.T).T)


def store_dtype(draws: int, n_nodes: int) -> np.dtype[Any]:
    """float64 for a node store of up to :data:`FLOAT64_STORE` numbers, else float32."""
    return np.dtype(np.float64 if draws * n_nodes <= FLOAT64_STORE else np.float32)


def simulate(inputs: CellInputs, draws: int = 10_000, seed: int = 42,
             threads: int | None = None, exact: bool = False,
             per_deal_streams: bool = False, *, blocks: BlockRunner | None = None,
             rows: int | None = None, dtype: Any = None) -> Simulation:
    """Draw the period's revenue for every cell and sum the cells into every node.

    ``exact`` draws every deal as a Bernoulli (no normal pooling of small deals, see
    :func:`simulate_deals`); ``per_deal_streams`` also gives every deal its own random stream
    (:func:`simulate_deals_per_deal`), so that two simulations of the same deals with other
    probabilities or amounts differ only where those deals are.

    The draws are made in blocks of ``rows`` draws (:func:`draw_plan`, :func:`draw_block`),
    each summed up the hierarchy at once and written into the per-node store, so memory is
    that store (``draws x nodes``, ``dtype``: default :func:`store_dtype`) plus a block,
    never ``draws x cells``. ``blocks`` runs the blocks (default :func:`local_blocks`; the
    Spark engine runs them as tasks, and its ``at_least`` attribute, if any, is the fewest
    blocks to cut the draws into). The draws are the same to the last bit whatever the
    blocks and wherever they ran; with a float32 store the means (``expected``) are still
    summed in float64 from the blocks.
    """
    n_cells = len(inputs.cells)
    nodes, matrix = _node_matrix(inputs.cells, inputs.levels)
    plan = draw_plan(inputs, draws, seed, threads=threads, exact=exact,
                     per_deal_streams=per_deal_streams, rows=rows, matrix=matrix,
                     at_least=int(getattr(blocks, "at_least", 1)))
    kind = store_dtype(draws, len(nodes)) if dtype is None else np.dtype(dtype)
    # Node-major (each node's draws contiguous): a node's column is read whole, and means
    # are summed pairwise along it.
    node_draws = np.empty((len(nodes), draws), dtype=kind).T
    sums = None if kind == np.float64 else np.zeros(len(nodes))
    for b, block in (blocks or local_blocks)(partial(draw_block, plan), len(plan.bounds)):
        lo, hi = plan.bounds[b]
        node_draws[lo:hi] = block
        if sums is not None:
            sums += block.sum(axis=0)
    scale = plan.scale
    deal_p = scaled_odds(inputs.deal_p, scale)
    expected_rate = ((inputs.run_rate.expected() + inputs.churn_rep)[inputs.rep_of_cell]
                     * inputs.share_cell)
    counted = inputs.deal_p > 0
    per_cell = {
        "pipeline": np.bincount(inputs.deal_cell, deal_p * inputs.deal_amount, n_cells),
        "rate": scale * expected_rate,
        "churn": scale * inputs.churn_rep[inputs.rep_of_cell] * inputs.share_cell,
        "amount": np.bincount(inputs.deal_cell[counted], inputs.deal_amount[counted], n_cells),
        "count": np.bincount(inputs.deal_cell[counted], minlength=n_cells).astype(float),
    }
    sums_of = {k: matrix @ v for k, v in per_cell.items()}
    lowest = matrix @ (inputs.closed_cell
                       + scale * plan.floor[inputs.rep_of_cell] * inputs.share_cell)
    simulation = Simulation(nodes, node_draws, matrix @ inputs.closed_cell,
                            sums_of["pipeline"], sums_of["rate"], sums_of["churn"],
                            sums_of["amount"], sums_of["count"], inputs.conversion,
                            list(inputs.notes), lowest)
    if sums is not None and draws:
        simulation.means = sums / draws
    return simulation


# === summary ==================================================================================


def _targets_of(nodes: pd.DataFrame, targets: pd.DataFrame | None, period: str) -> np.ndarray:
    if targets is None or targets.empty:
        return np.full(len(nodes), np.nan)
    chosen = targets[targets[PERIOD].astype(str) == str(period)]
    lookup = chosen.groupby([LEVEL, KEY])[AMOUNT].sum()
    index = pd.MultiIndex.from_frame(nodes[[LEVEL, KEY]].astype(object))
    return lookup.reindex(index).to_numpy(dtype=float)


@overload
def attained(draws: np.ndarray, target: float, expected: float | None = None) -> float: ...


@overload
def attained(draws: np.ndarray, target: np.ndarray, expected: np.ndarray | None = None
             ) -> np.ndarray: ...


def attained(draws: np.ndarray, target: Any, expected: Any = None) -> Any:
    """P(attain): the share of draws reaching the target (a relative tolerance absorbs float
    sums).

    Args:
        draws: ``draws x nodes``, or the draws of one node.
        target: per node (NaN: no target, and NaN comes back), or one number for one node.
        expected: what each node reaches when there are no draws (then 1 where it reaches the
            target, else 0); without it, no draws give NaN.

    Returns:
        One share per node, or a float for one node.
    """
    target = np.asarray(target, dtype=float)
    if len(draws) == 0 and expected is not None:
        p = (np.asarray(expected, dtype=float) >= target).astype(float)
    else:
        # float32 draws (large stores) are rounded to about 6e-8 of their value.
        relative = max(1e-9, 4.0 * float(np.finfo(draws.dtype).eps))
        tolerance = relative * np.maximum(np.abs(target), 1.0)
        with np.errstate(invalid="ignore"):
            if draws.ndim == 2 and target.ndim == 1:
                p = np.empty(draws.shape[1])
                for a, b in _column_blocks(draws):
                    p[a:b] = (draws[:, a:b] >= target[a:b] - tolerance[a:b]).mean(axis=0)
            else:
                p = (draws >= target - tolerance).mean(axis=0)
    p = np.where(np.isnan(target), np.nan, p)
    return float(p) if p.ndim == 0 else p


def _column_blocks(draws: np.ndarray, elements: int = BLOCK_ELEMENTS
                   ) -> Iterator[tuple[int, int]]:
    """Column ranges of ``draws`` of about ``elements`` numbers each."""
    width = max(1, elements // max(len(draws), 1))
    for a in range(0, draws.shape[1], width):
        yield a, min(a + width, draws.shape[1])


def node_quantiles(draws: np.ndarray, quantiles: Sequence[float], n_nodes: int) -> np.ndarray:
    """``len(quantiles) x nodes`` quantiles of each node's draws (float64; NaN without
    draws), a block of nodes at a time, so the copy sorting needs is a block, not the
    store."""
    out = np.full((len(quantiles), n_nodes), np.nan)
    if len(draws):
        for a, b in _column_blocks(draws, BLOCK_ELEMENTS // 4):
            out[:, a:b] = np.quantile(draws[:, a:b], quantiles, axis=0)
    return out


def summarise(simulation: Simulation, targets: pd.DataFrame | None, period: str,
              as_of: pd.Timestamp, *, all_nodes: bool = False) -> pd.DataFrame:
    """The feasibility frame (:data:`FEASIBILITY_COLUMNS` then :data:`EXTRA_COLUMNS`).

    ``gap`` is ``target - expected``: positive means the node is expected to fall short by
    that much, negative that it is expected to beat its target.
    """
    nodes, draws = simulation.nodes, simulation.draws
    target = _targets_of(nodes, targets, period)
    q = node_quantiles(draws, [MUST_HIT_QUANTILE, P80_QUANTILE, 0.5, STRETCH_QUANTILE, 0.9],
                       len(nodes))
    expected = simulation.mean()
    p_attain = attained(draws, target)
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
    order = frame[LEVEL].map(LEVEL_ORDER).fillna(len(LEVEL_ORDER))
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
