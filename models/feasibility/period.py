"""The feasibility of one period, from the tables in one call.

:func:`feasibility_with_simulation` takes the win model given (without one it fits historical
stage win rates first: :func:`fit_stage_rates`), builds the inputs as of ``as_of``
(:func:`models.feasibility.inputs.build_inputs`), simulates them
(:func:`models.feasibility.simulation.simulate`) and summarises the draws into the feasibility
frame (:func:`models.feasibility.simulation.summarise`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.periods import period_bounds, period_of
from engine.schemas import (
    CLOSE_DATE,
    DS,
    KEY,
    LEVEL,
    OPPORTUNITIES,
    PERIOD,
    STATUS,
    STATUS_OPEN,
    STATUS_WON,
)
from features.deals import deal_snapshot_dates, deal_snapshots, win_training_rows
from models.feasibility.backtest import earlier_points
from models.feasibility.inputs import build_inputs, revenue_by_node
from models.feasibility.pace import (
    PACE,
    Choice,
    choose,
    elapsed,
    node_totals,
    pace_mean,
    pace_probability,
    pace_quantiles,
    pace_sigmas,
)
from models.feasibility.simulation import (
    CLOSED_TO_DATE,
    EXPECTED,
    GAP,
    MUST_HIT,
    MUST_HIT_QUANTILE,
    P10,
    P50,
    P80_QUANTILE,
    P90,
    P_ATTAIN,
    PIPELINE_NEEDED,
    STRETCH,
    STRETCH_QUANTILE,
    TARGET,
    BlockRunner,
    Simulation,
    simulate,
    summarise,
)
from models.win import COUNT_ROWS, FLAT_WIN_RATE, StageRateWinModel, stage_rate_counts

__all__ = ["BACKTEST_DRAWS", "STAGE_RATE_EVERY_DAYS", "feasibility",
           "feasibility_with_simulation", "fit_stage_rates", "pace_choice", "simulate_period",
           "stage_rate_counts_at", "stage_rate_dates"]

# Draws of each replayed earlier period in the p_attain backtest (a Brier per level needs no
# more).
BACKTEST_DRAWS = 2_000


def simulate_period(tables: Tables, period: str, as_of: pd.Timestamp | str, win_model: Any, *,
                    draws: int = 10_000, seed: int = 42, churn: pd.DataFrame | None = None,
                    levels: Sequence[str] | None = None, threads: int | None = None,
                    rest_backtest: bool = True, blocks: BlockRunner | None = None
                    ) -> Simulation:
    """:func:`build_inputs` then :func:`simulate` (``rest_backtest`` as in
    :func:`build_inputs`; ``blocks`` runs the blocks of draws, as in :func:`simulate`)."""
    inputs = build_inputs(tables, period, as_of, win_model, churn=churn, levels=levels,
                          rest_backtest=rest_backtest)
    return simulate(inputs, draws=draws, seed=seed, threads=threads, blocks=blocks)


def feasibility(tables: Tables, period: str, as_of: pd.Timestamp | str, *,
                draws: int = 10_000, seed: int = 42, win_model: Any = None,
                churn: pd.DataFrame | None = None, levels: Sequence[str] | None = None,
                all_nodes: bool = False, threads: int | None = None,
                pace_check: bool = True) -> pd.DataFrame:
    """Attainment distribution of every node with a target in ``period``, as of ``as_of``.

    The frame of :func:`feasibility_with_simulation` (same arguments); use that one when the
    draws are needed too (:func:`models.feasibility.recalibration.recalibrate`).
    """
    return feasibility_with_simulation(
        tables, period, as_of, draws=draws, seed=seed, win_model=win_model, churn=churn,
        levels=levels, all_nodes=all_nodes, threads=threads, pace_check=pace_check)[0]


def feasibility_with_simulation(
        tables: Tables, period: str, as_of: pd.Timestamp | str, *, draws: int = 10_000,
        seed: int = 42, win_model: Any = None, churn: pd.DataFrame | None = None,
        levels: Sequence[str] | None = None, all_nodes: bool = False,
        threads: int | None = None, pace_check: bool = True,
        blocks: BlockRunner | None = None) -> tuple[pd.DataFrame, Simulation]:
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
        pace_check: during the period, replay the procedure at the same point of earlier
            periods and use the pace rule's ``p_attain`` at the levels where the simulation
            did not beat it there (:func:`pace_choice`), with the pace rule's range too
            (quantiles, expected, gap, must-hit, stretch, pipeline needed); the notes say
            which levels.
        blocks: runs the blocks of draws of the simulation (default: one after another
            here; :func:`service.usecases.feasibility.engine_blocks` on Spark); the draws
            are the same wherever they ran. The pace check's replays stay here.

    Returns:
        The frame (:data:`models.feasibility.simulation.FEASIBILITY_COLUMNS` then
        :data:`models.feasibility.simulation.EXTRA_COLUMNS`; ``attrs["notes"]`` says how each
        component was obtained) and the :class:`Simulation` (for
        :func:`models.feasibility.recalibration.recalibrate`).
    """
    as_of = pd.Timestamp(as_of)
    notes: list[str] = []
    if win_model is None:
        win_model, note = fit_stage_rates(tables, as_of)
        notes.append(note)
    simulation = simulate_period(tables, period, as_of, win_model, draws=draws, seed=seed,
                                 churn=churn, levels=levels, threads=threads, blocks=blocks)
    simulation.notes[:0] = notes
    frame = summarise(simulation, tables.targets(), period, as_of, all_nodes=all_nodes)
    if pace_check and frame[TARGET].notna().any():
        choice, p_pace = pace_choice(tables, period, as_of, frame, win_model, levels=levels,
                                     seed=seed)
        if choice.note:
            paced = frame[LEVEL].map(choice.method).eq(PACE).to_numpy()
            if paced.any():
                frame[P_ATTAIN] = np.where(paced, p_pace, frame[P_ATTAIN].to_numpy(float))
                _pace_range(frame, paced, choice.fraction, choice.sigmas,
                            simulation.conversion)
            simulation.paced = {level: (choice.fraction, choice.sigmas[level])
                                for level, score in choice.levels.items()
                                if score.method == PACE}
            frame.attrs["notes"] = [*frame.attrs.get("notes", []), choice.note]
            simulation.notes.append(choice.note)
    return frame, simulation


def _pace_range(frame: pd.DataFrame, paced: np.ndarray, fraction: float,
                sigmas: dict[str, float], conversion: float) -> None:
    """At the ``paced`` rows of ``frame``, the pace rule's range in place of the simulation's:
    the distribution its ``p_attain`` comes from (:mod:`models.feasibility.pace`)."""
    closed = frame.loc[paced, CLOSED_TO_DATE].to_numpy(dtype=float)
    sigma = frame.loc[paced, LEVEL].map(sigmas).to_numpy(dtype=float)
    target = frame.loc[paced, TARGET].to_numpy(dtype=float)
    q = pace_quantiles(closed, fraction, sigma,
                       [MUST_HIT_QUANTILE, P80_QUANTILE, 0.5, STRETCH_QUANTILE, 0.9])
    expected = pace_mean(closed, fraction, sigma)
    p_attain = frame.loc[paced, P_ATTAIN].to_numpy(dtype=float)
    won_share = conversion if conversion > 0 else np.nan
    needed = np.where(p_attain >= 0.8, 0.0, np.maximum(target - q[1], 0.0) / won_share)
    for column, values in ((EXPECTED, expected), (P10, q[0]), (P50, q[2]), (P90, q[4]),
                           (GAP, target - expected), (MUST_HIT, q[0]), (STRETCH, q[3]),
                           (PIPELINE_NEEDED, needed)):
        frame.loc[paced, column] = values


def pace_choice(tables: Tables, period: str, as_of: pd.Timestamp | str, frame: pd.DataFrame,
                win_model: Any, *, levels: Sequence[str] | None = None, seed: int = 42,
                draws: int = BACKTEST_DRAWS) -> tuple[Choice, np.ndarray]:
    """Which ``p_attain`` each level of ``frame`` should use, and the pace rule's per row.

    The procedure (:func:`feasibility_with_simulation` without this check, ``win_model`` and
    no churn) is replayed at the same point of the last few periods of the same length
    (:func:`models.feasibility.backtest.earlier_points`, only rows dated before each point),
    and so is the pace rule (:mod:`models.feasibility.pace`); both are scored against whether
    each node with a target then reached it (:func:`models.feasibility.pace.choose`). Nothing
    is judged (an empty note) before the period starts or once it is over: then there is no
    pace. Only rows dated before ``as_of`` are read.
    """
    as_of = pd.Timestamp(as_of)
    fraction = elapsed(period, as_of)
    empty = np.full(len(frame), np.nan)
    if not 0.0 < fraction < 1.0:
        return Choice(), empty
    events = revenue_by_node(tables, as_of, levels=[*(levels or []), *frame[LEVEL].unique()])
    if events.empty:
        return Choice(), empty
    first = events[DS].min()
    asked = [str(level) for level in frame[LEVEL].unique()]
    targets = tables.targets()
    cases, used = [], []
    for point in earlier_points(period, as_of):
        if targets is None or not (targets[PERIOD].astype(str) == point.period).any():
            continue
        if point.start < first:  # the data starts inside it: its revenue is not whole
            continue
        past, _ = feasibility_with_simulation(
            tables, point.period, point.as_of, draws=draws, seed=seed, win_model=win_model,
            levels=levels, pace_check=False)
        if past.empty:
            continue
        share = elapsed(point.period, point.as_of)
        if share <= 0.0:
            continue
        sigmas = pace_sigmas(events[events[DS] < point.as_of],
                             _whole_periods(point.period, point.as_of, first), share, asked)
        totals = {str(level): node_totals(events, str(level), point.start, point.end)
                  for level in past[LEVEL].unique()}
        actual = np.array([totals[str(level)].get(key, 0.0)
                           for level, key in zip(past[LEVEL], past[KEY], strict=True)])
        target = past[TARGET].to_numpy(dtype=float)
        cases.append(pd.DataFrame({
            "level": past[LEVEL].astype(str).to_numpy(),
            "p_simulation": past[P_ATTAIN].to_numpy(dtype=float),
            "p_pace": pace_probability(past[CLOSED_TO_DATE].to_numpy(dtype=float), target,
                                       share, past[LEVEL].map(sigmas).to_numpy(dtype=float)),
            "outcome": (actual >= target - 1e-9 * np.maximum(np.abs(target), 1.0)).astype(float),
        }))
        used.append(point.period)
    if not used:
        return choose(pd.DataFrame(), asked, used), empty
    choice = choose(pd.concat(cases, ignore_index=True), asked, used)
    sigmas = pace_sigmas(events, _whole_periods(period, as_of, first), fraction, asked)
    p_pace = pace_probability(frame[CLOSED_TO_DATE].to_numpy(dtype=float),
                              frame[TARGET].to_numpy(dtype=float), fraction,
                              frame[LEVEL].map(sigmas).to_numpy(dtype=float))
    return replace(choice, fraction=fraction, sigmas=sigmas), p_pace


def _whole_periods(period: str, as_of: pd.Timestamp, first: pd.Timestamp) -> list[str]:
    """Earlier periods of ``period``'s length over by ``as_of`` that the data covers whole."""
    text = str(period).strip()
    freq = "Y" if len(text) == 4 else ("Q" if "Q" in text else "M")
    start = period_bounds(period)[0]
    out = []
    for back in range(1, 10_000):
        label = period_of(start, freq, -back)
        k_start, k_end = period_bounds(label)
        if k_start < first:
            break
        if k_end <= as_of:
            out.append(label)
    return out


def _won_and_lost(tables: Tables, as_of: pd.Timestamp) -> bool:
    """Whether deals were both won and lost before ``as_of`` (rates need both)."""
    opps = tables.get(OPPORTUNITIES)
    if opps is None:
        return False
    closed = opps.loc[(opps[STATUS] != STATUS_OPEN) & (opps[CLOSE_DATE] < as_of), STATUS]
    return bool((closed == STATUS_WON).any() and (closed != STATUS_WON).any())


# Days between the snapshots the stage rates are learned from.
STAGE_RATE_EVERY_DAYS = 28


def stage_rate_dates(tables: Tables, as_of: pd.Timestamp,
                     every_days: int = STAGE_RATE_EVERY_DAYS) -> list[pd.Timestamp]:
    """The dates the deals are seen at to learn the stage rates as of ``as_of``: none without
    won and lost deals before it (:func:`features.deals.deal_snapshot_dates` otherwise)."""
    if not _won_and_lost(tables, pd.Timestamp(as_of)):
        return []
    return deal_snapshot_dates(tables, as_of, every_days=every_days)


def stage_rate_counts_at(tables: Tables, dates: Sequence[pd.Timestamp], as_of: pd.Timestamp,
                         snapshot: pd.Timestamp | None = None) -> pd.DataFrame:
    """The stage-rate model's sums (:func:`models.win.stage_rate_counts`) of the deals in
    ``tables`` seen at ``dates``, labelled as of ``as_of``. Each deal's rows depend on that
    deal alone, so the sums over buckets of the deals (``snapshot``: the date the whole
    opportunities table describes) add up to the sums over all of them
    (:func:`models.win.add_counts`)."""
    opportunities = tables.get(OPPORTUNITIES)
    if not len(dates) or opportunities is None or opportunities.empty:
        return stage_rate_counts(pd.DataFrame())
    rows = win_training_rows(deal_snapshots(tables, dates, snapshot=snapshot),
                             opportunities, as_of)
    return stage_rate_counts(rows)


def fit_stage_rates(tables: Tables, as_of: pd.Timestamp,
                    every_days: int = STAGE_RATE_EVERY_DAYS,
                    counts: pd.DataFrame | None = None) -> tuple[StageRateWinModel, str]:
    """Historical in-period win rates by stage (the fallback win model) and a note saying so.

    Without won and lost deals before ``as_of`` there is nothing to learn rates from: every
    open deal gets :data:`models.win.FLAT_WIN_RATE` (and the note says so). ``counts``: the
    sums of the deals' snapshots (:func:`stage_rate_counts_at` summed over buckets of the
    deals, on a compute engine), else they are built here from ``tables``.
    """
    if counts is None:
        counts = stage_rate_counts_at(tables, stage_rate_dates(tables, as_of, every_days),
                                      as_of)
    rows = int(counts[COUNT_ROWS].sum()) if len(counts) else 0
    model = StageRateWinModel().fit_counts(counts)
    if not rows:
        return model, (
            "win model: no champion and no won and lost deals before "
            f"{pd.Timestamp(as_of).date()}; every open deal expected in the period is counted "
            f"at a flat {FLAT_WIN_RATE:.0%} win rate")
    return model, (
        "win model: no champion registered (a trained win model becomes champion only when "
        "it beats stage rates on its holdout); historical in-period win rates by stage and "
        "days left "
        f"({rows:,} deal snapshots) are used instead")
