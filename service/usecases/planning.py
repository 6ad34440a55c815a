"""Feasibility, what-if and recalibration of a period with the served models (the service's
planning resource).

One simulation per (period, as_of, model versions) is computed and cached; the what-if and the
recalibration read the same draws, so a planner's questions about one period agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.schemas import KEY, LEVEL
from models.feasibility import (
    MUST_HIT_QUANTILE,
    P_ATTAIN,
    STRETCH_QUANTILE,
    TARGET,
    Method,
    Simulation,
    attained,
    fit_stage_rates,
    recalibrate,
)
from models.feasibility.pace import pace_mean, pace_probability, pace_quantiles
from service.usecases.board import record_run
from service.usecases.feasibility import run_feasibility
from service.usecases.request import BadRequest, resolve_as_of, resolve_period
from service.usecases.served import Served

__all__ = ["FeasibilityRun", "WhatIf", "feasibility_run", "recalibration", "simulated",
           "what_if"]


@dataclass(frozen=True)
class FeasibilityRun:
    """One simulation of a period as of a date, with the models that went into it."""

    period: str
    as_of: pd.Timestamp
    frame: pd.DataFrame
    simulation: Simulation
    notes: list[str]
    draws: int


@dataclass(frozen=True)
class WhatIf:
    """P(attain) of a proposed target for one node, beside the node's current target."""

    period: str
    as_of: date
    level: str
    key: str
    proposed_target: float
    p_attain: float
    current_target: float | None
    p_attain_current: float | None
    expected: float
    p10: float
    p50: float
    p90: float
    gap: float
    must_hit: float
    stretch: float


def _simulate(served: Served, period: str, as_of: pd.Timestamp,
              models: Mapping[str, Any]) -> FeasibilityRun:
    """``run_feasibility`` with the served models; stage rates fitted once per as_of (~2 s)."""

    def stage_rates(tables: Tables, when: pd.Timestamp) -> tuple[Any, str]:
        return served.feasibility_cache.get(
            ("stage-rates", when), lambda: fit_stage_rates(tables, when))

    try:
        result = run_feasibility(served.tables(), period, as_of, draws=served.draws,
                                 seed=served.settings.seed, models=models,
                                 stage_rates=stage_rates)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    record_run(served, result, period, as_of)  # the board's trend: one snapshot per computation
    return FeasibilityRun(period, as_of, result.frame, result.simulation, result.notes,
                          served.draws)


def feasibility_run(served: Served, period: str | None,
                    as_of: date | None) -> FeasibilityRun:
    """The (cached) simulation of ``period`` as of ``as_of``, defaults resolved.

    Raises:
        RequestError: ``period`` or ``as_of`` cannot be answered.
        Unavailable: the data is not loaded.
    """
    span = served.span()
    stamp = resolve_as_of(as_of, span)
    chosen = resolve_period(period, stamp, span)
    models = dict(served.models)  # a copy: a reload may change the models meanwhile
    key = _key(chosen, stamp, models)
    return served.feasibility_cache.get(key, lambda: _simulate(served, chosen, stamp, models))


def _key(period: str, as_of: pd.Timestamp, models: Mapping[str, Any]) -> tuple[Any, ...]:
    return ("feasibility", period, as_of, tuple(sorted((k, m.version) for k, m in models.items())))


def simulated(served: Served, period: str, as_of: pd.Timestamp) -> bool:
    """Whether the simulation of a resolved ``period`` as of ``as_of`` with the served models
    is cached (:func:`feasibility_run` answers it at once)."""
    return served.feasibility_cache.peek(_key(period, as_of, dict(served.models)))


def _node_row(run: FeasibilityRun, level: str, key: str) -> pd.Series | None:
    match = run.frame[(run.frame[LEVEL] == level) & (run.frame[KEY] == key)]
    return None if match.empty else match.iloc[0]


def what_if(served: Served, level: str, key: str, target: float, period: str | None = None,
            as_of: date | None = None) -> WhatIf:
    """P(attain) of a proposed target for one node, from the same draws as its feasibility
    (from the pace rule's distribution at a level whose feasibility uses it, range included:
    :mod:`models.feasibility.pace`).

    Every simulated node can be asked about, with or without a target of its own: a product,
    segment or channel no target names from the board's simulation of those nodes.

    Raises:
        NotFound: neither simulation has such a node.
    """
    from service.usecases.dimensions import node_run  # dimensions builds on this module

    run = node_run(served, period, as_of, level, key)
    column = run.simulation.node_index(level, key)
    draws = run.simulation.draws[:, column]
    current = _node_row(run, level, key)
    levels = [MUST_HIT_QUANTILE, 0.5, STRETCH_QUANTILE, 0.9]
    paced = run.simulation.paced.get(level)
    closed = np.array([run.simulation.closed[column]])
    if paced is not None:  # the pace rule's distribution, as in the node's feasibility
        quantiles = pace_quantiles(closed, *paced, levels)[:, 0]
        expected = float(pace_mean(closed, *paced)[0])
        p_attain = float(pace_probability(closed, np.array([target]), *paced)[0])
    else:
        quantiles = np.quantile(draws, levels) if len(draws) else np.full(4, np.nan)
        expected = float(draws.mean()) if len(draws) else float(closed[0])
        p_attain = attained(draws, target, expected)
    return WhatIf(
        period=run.period, as_of=run.as_of.date(), level=level, key=key, proposed_target=target,
        p_attain=p_attain,
        current_target=None if current is None else current[TARGET],
        p_attain_current=None if current is None else current[P_ATTAIN],
        expected=expected, p10=quantiles[0], p50=quantiles[1], p90=quantiles[3],
        gap=target - expected, must_hit=quantiles[0], stretch=quantiles[2],
    )


def recalibration(served: Served, period: str | None, as_of: date | None,
                  method: Method) -> tuple[FeasibilityRun, pd.DataFrame]:
    """Revised targets for the rest of the period that keep every parent's total.

    Raises:
        BadRequest: the period cannot be recalibrated (no target to revise).
    """
    run = feasibility_run(served, period, as_of)
    try:
        return run, recalibrate(run.frame, run.simulation, method=method)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
