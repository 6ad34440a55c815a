"""The feasibility of one period, from the tables in one call.

:func:`feasibility_with_simulation` takes the win model given (without one it fits historical
stage win rates first: :func:`fit_stage_rates`), builds the inputs as of ``as_of``
(:func:`models.feasibility.inputs.build_inputs`), simulates them
(:func:`models.feasibility.simulation.simulate`) and summarises the draws into the feasibility
frame (:func:`models.feasibility.simulation.summarise`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from engine.io import Tables
from engine.schemas import CLOSE_DATE, OPPORTUNITIES, STATUS, STATUS_OPEN, STATUS_WON
from features.deals import LABEL, deal_snapshot_dates, deal_snapshots, win_training_rows
from models.feasibility.inputs import build_inputs
from models.feasibility.simulation import Simulation, simulate, summarise
from models.win import FLAT_WIN_RATE, StageRateWinModel

__all__ = ["feasibility", "feasibility_with_simulation", "fit_stage_rates", "simulate_period"]


def simulate_period(tables: Tables, period: str, as_of: pd.Timestamp | str, win_model: Any, *,
                    draws: int = 10_000, seed: int = 42, churn: pd.DataFrame | None = None,
                    levels: Sequence[str] | None = None, threads: int | None = None,
                    rest_backtest: bool = True) -> Simulation:
    """:func:`build_inputs` then :func:`simulate` (``rest_backtest`` as in
    :func:`build_inputs`)."""
    inputs = build_inputs(tables, period, as_of, win_model, churn=churn, levels=levels,
                          rest_backtest=rest_backtest)
    return simulate(inputs, draws=draws, seed=seed, threads=threads)


def feasibility(tables: Tables, period: str, as_of: pd.Timestamp | str, *,
                draws: int = 10_000, seed: int = 42, win_model: Any = None,
                churn: pd.DataFrame | None = None, levels: Sequence[str] | None = None,
                all_nodes: bool = False, threads: int | None = None) -> pd.DataFrame:
    """Attainment distribution of every node with a target in ``period``, as of ``as_of``.

    The frame of :func:`feasibility_with_simulation` (same arguments); use that one when the
    draws are needed too (:func:`models.feasibility.recalibration.recalibrate`).
    """
    return feasibility_with_simulation(
        tables, period, as_of, draws=draws, seed=seed, win_model=win_model, churn=churn,
        levels=levels, all_nodes=all_nodes, threads=threads)[0]


def feasibility_with_simulation(
        tables: Tables, period: str, as_of: pd.Timestamp | str, *, draws: int = 10_000,
        seed: int = 42, win_model: Any = None, churn: pd.DataFrame | None = None,
        levels: Sequence[str] | None = None, all_nodes: bool = False,
        threads: int | None = None) -> tuple[pd.DataFrame, Simulation]:
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
                                 churn=churn, levels=levels, threads=threads)
    simulation.notes[:0] = notes
    frame = summarise(simulation, tables.targets(), period, as_of, all_nodes=all_nodes)
    return frame, simulation


def _won_and_lost(tables: Tables, as_of: pd.Timestamp) -> bool:
    """Whether deals were both won and lost before ``as_of`` (rates need both)."""
    opps = tables.get(OPPORTUNITIES)
    if opps is None:
        return False
    closed = opps.loc[(opps[STATUS] != STATUS_OPEN) & (opps[CLOSE_DATE] < as_of), STATUS]
    return bool((closed == STATUS_WON).any() and (closed != STATUS_WON).any())


def fit_stage_rates(tables: Tables, as_of: pd.Timestamp, every_days: int = 28
                    ) -> tuple[StageRateWinModel, str]:
    """Historical in-period win rates by stage (the fallback win model) and a note saying so.

    Without won and lost deals before ``as_of`` there is nothing to learn rates from: every
    open deal gets :data:`models.win.FLAT_WIN_RATE` (and the note says so).
    """
    dates = deal_snapshot_dates(tables, as_of, every_days=every_days)
    rows = (win_training_rows(deal_snapshots(tables, dates), tables[OPPORTUNITIES], as_of)
            if dates and _won_and_lost(tables, as_of) else pd.DataFrame())
    if rows.empty or LABEL not in rows.columns:
        return StageRateWinModel().fit(pd.DataFrame()), (
            "win model: no champion and no won and lost deals before "
            f"{pd.Timestamp(as_of).date()}; every open deal expected in the period is counted "
            f"at a flat {FLAT_WIN_RATE:.0%} win rate")
    return StageRateWinModel().fit(rows), (
        "win model: no champion registered (a trained win model becomes champion only when "
        "it beats stage rates on its holdout); historical in-period win rates by stage and "
        "days left "
        f"({len(rows):,} deal snapshots) are used instead")
