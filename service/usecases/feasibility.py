"""Feasibility wiring: tables + champion win model + churn scores + run rate -> simulation.

Each ingredient falls back rather than failing, and says so in the notes:

- win / slip probabilities: the registered ``champion`` win model; without one, historical
  in-period win rates by stage and days left (:func:`models.feasibility.fit_stage_rates`);
- churn: the ``champion`` churn model's scores at ``as_of``; without one, no churn adjustment;
- run rate: always estimated from the revenue history (:func:`models.feasibility
  .estimate_run_rate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine import tracking
from engine.compute import ComputeEngine, ComputeError
from engine.io import Tables
from engine.schemas import OPPORTUNITIES, PERIOD
from models.feasibility import (
    CHURN_HORIZON_DAYS,
    BlockRunner,
    Method,
    Simulation,
    feasibility_with_simulation,
    fit_stage_rates,
    recalibrate,
)
from service.usecases import churn as churn_pipeline

__all__ = [
    "ChurnScorer",
    "FeasibilityResult",
    "SparkBlocks",
    "champion_churn_scores",
    "champion_win_model",
    "engine_blocks",
    "run_feasibility",
    "run_recalibration",
    "score_churn_here",
]

Progress = Callable[[str], None]


@dataclass
class FeasibilityResult:
    """A feasibility run: the output frame, the simulation behind it and what was used.

    Attributes:
        frame: :data:`models.feasibility.FEASIBILITY_COLUMNS` then the extra columns.
        simulation: the draws per node (what :func:`models.feasibility.recalibrate` needs).
        notes: plain-word remarks: which models were used, fallbacks, run-rate method.
    """

    frame: pd.DataFrame
    simulation: Simulation
    notes: list[str] = field(default_factory=list)


class SparkBlocks:
    """Blocks of draws as Spark tasks (``--engine spark``): each block of draws is a partition
    that draws its deals and run rates from its own positioned streams and sums its cells up
    the hierarchy (:func:`models.feasibility.simulation.draw_block`); only the ``draws x
    nodes`` block comes back. Blocks go out in waves of ``wave`` tasks, so the driver holds
    the node store plus one wave. The draws are those of the pandas engine to the last bit.

    Args:
        session: the engine's Spark session.
        at_least: blocks the draws are split into at the least (default twice the
            engine's parallelism), so that they spread over the executors.
    """

    def __init__(self, session: Any, at_least: int | None = None) -> None:
        self.session = session
        parallelism = max(1, int(session.sparkContext.defaultParallelism))
        self.wave = 4 * parallelism  # blocks of a few MB each: a wave is well under 1 GiB
        self.at_least = at_least if at_least is not None else 2 * parallelism

    def __call__(self, fn: Callable[[int], np.ndarray], n_blocks: int
                 ) -> Iterator[tuple[int, np.ndarray]]:
        context = self.session.sparkContext
        shared = context.broadcast(fn)  # the plan goes to each executor once, not per task
        try:
            for first in range(0, n_blocks, self.wave):
                wave = list(range(first, min(first + self.wave, n_blocks)))
                try:
                    done = (context.parallelize(wave, len(wave))
                            .map(lambda b: (b, shared.value(b))).collect())
                except Exception as exc:  # a JVM or worker failure: said in one line
                    line = next((x.strip() for x in str(exc).splitlines() if x.strip()),
                                exc.__class__.__name__)
                    raise ComputeError(f"the Spark tasks drawing the simulation failed: "
                                       f"{line[:300]}") from exc
                yield from done
        finally:
            shared.destroy()


def engine_blocks(engine: ComputeEngine) -> BlockRunner | None:
    """Where the blocks of draws run on ``engine``: Spark tasks on the Spark engine's own
    session, ``None`` (one after another here) on pandas."""
    if getattr(engine, "name", "pandas") != "spark":
        return None
    return SparkBlocks(engine.session)  # type: ignore[attr-defined]


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


StageRates = Callable[[Tables, pd.Timestamp], tuple[Any, str]]


def _champion(kind: str, models: Mapping[str, tracking.LoadedModel] | None
              ) -> tracking.LoadedModel | None:
    """The given model of ``kind`` (None when the caller has none), else the registry's."""
    if models is not None:
        return models.get(kind)
    try:
        return tracking.load_champion(kind)
    except tracking.ChampionMissingError:
        return None


def champion_win_model(notes: list[str],
                       models: Mapping[str, tracking.LoadedModel] | None = None) -> Any | None:
    """The champion win model's estimator, or None."""
    loaded = _champion("win", models)
    if loaded is None:
        return None
    notes.append(f"win model: champion v{loaded.version} ({loaded.model_name})")
    return loaded.estimator


# Scores the customers at an as-of with a horizon in days, with the champion given: from the
# tables here (score_churn_here, the default) or on a compute engine (feasibility on Spark).
ChurnScorer = Callable[[Tables, pd.Timestamp, int, tracking.LoadedModel], pd.DataFrame]


def score_churn_here(tables: Tables, as_of: pd.Timestamp, horizon_days: int,
                     loaded: tracking.LoadedModel) -> pd.DataFrame:
    """The default :data:`ChurnScorer`: the champion scores the customers of ``tables``."""
    return churn_pipeline.score_churn(tables, as_of=as_of, horizon_days=horizon_days,
                                      model=loaded.estimator)


def champion_churn_scores(tables: Tables, as_of: pd.Timestamp, notes: list[str],
                          horizon_days: int = CHURN_HORIZON_DAYS,
                          models: Mapping[str, tracking.LoadedModel] | None = None,
                          scorer: ChurnScorer = score_churn_here) -> pd.DataFrame | None:
    """Churn probabilities at ``as_of`` from the champion churn model, or None with a note
    (no champion, or no customer it can score at ``as_of``). ``scorer``: where the customers
    are scored (default: from ``tables`` here)."""
    loaded = _champion("churn", models)
    if loaded is None:
        notes.append("churn: no champion churn model, churn adjustment skipped")
        return None
    try:
        scores = scorer(tables, as_of, horizon_days, loaded)
    except ValueError as exc:
        notes.append(f"churn: not scored at {as_of.date()} ({exc}); churn adjustment skipped")
        return None
    notes.append(f"churn: champion v{loaded.version} scored {len(scores):,} active customers "
                 f"({horizon_days}-day probabilities)")
    return scores


def run_feasibility(tables: Tables, period: str, as_of: pd.Timestamp | str, *,
                    draws: int = 10_000, seed: int = 42, levels: Sequence[str] | None = None,
                    all_nodes: bool = False, use_churn: bool = True,
                    churn_horizon_days: int = CHURN_HORIZON_DAYS,
                    models: Mapping[str, tracking.LoadedModel] | None = None,
                    stage_rates: StageRates = fit_stage_rates,
                    progress: Progress | None = None,
                    blocks: BlockRunner | None = None,
                    pace_check: bool = True,
                    churn_scorer: ChurnScorer = score_churn_here) -> FeasibilityResult:
    """Attainment distribution per node with a target in ``period`` (``quotacast feasibility``).

    Args:
        tables: validated tables.
        period: ``2017``, ``2017Q3`` or ``2017-08``.
        as_of: the date T; only rows dated before it are used.
        draws: Monte Carlo draws.
        seed: random seed.
        levels: extra levels to report besides those with targets.
        all_nodes: also report hierarchy nodes without a target.
        use_churn: apply the champion churn model's scores when there is one.
        churn_horizon_days: horizon of the churn probabilities.
        models: already-loaded champions by kind (``win``, ``churn``), as the service holds
            them; a kind missing there counts as having no champion. ``None`` loads them from
            the registry.
        stage_rates: fits the fallback win model (the service passes a cached one).
        progress: called with a short message at each stage.
        blocks: where the blocks of draws run (:func:`engine_blocks`; default here).
        pace_check: replay earlier periods to choose the pace rule where it did better
            (:func:`models.feasibility.period.pace_choice`); it only changes nodes with a
            target, so a run read for nodes without one (the board's products) skips it.
        churn_scorer: where the champion churn model scores the customers (default: from
            ``tables`` here; on Spark :func:`service.usecases.scaled.engine_churn_scorer`).

    Raises:
        ValueError: the period or ``as_of`` cannot be simulated (from the engine).
        ComputeError: the Spark tasks failed.
    """
    as_of = pd.Timestamp(as_of)
    notes: list[str] = []
    _say(progress, "loading the win model")
    win_model = champion_win_model(notes, models)
    if win_model is None:
        _say(progress, "no champion win model: fitting historical stage win rates")
        win_model, note = stage_rates(tables, as_of)
        notes.append(note)
    if use_churn:
        _say(progress, "scoring churn risk")
    churn = (champion_churn_scores(tables, as_of, notes, churn_horizon_days, models,
                                   churn_scorer) if use_churn else None)
    _say(progress, f"simulating {draws:,} draws")
    frame, simulation = feasibility_with_simulation(
        tables, period, as_of, draws=draws, seed=seed, win_model=win_model, churn=churn,
        levels=levels, all_nodes=all_nodes, blocks=blocks, pace_check=pace_check)
    notes += [n for n in simulation.notes if not n.startswith("churn:") or churn is not None]
    if not tables.has(OPPORTUNITIES):
        # Notes about deals that do not exist help nobody: say once where revenue comes from.
        notes = [n for n in notes if not n.startswith(("win model", "pipeline"))]
        notes.append("pipeline: the data has no opportunities table; the outlook is revenue "
                     "closed to date plus the run rate")
    notes += [n for n in frame.attrs.get("notes", []) if n.startswith("interval check")]
    if frame.empty and not all_nodes:
        notes.append(f"no node has a target in {period}{_periods_given(tables)}: "
                     f"{_how_to_add_targets(tables, period)}, or pass --all-nodes to see every "
                     "node's outlook without one (P10/P50/P90; no P(attain))")
    frame.attrs["notes"] = notes
    return FeasibilityResult(frame, simulation, notes)


def _periods_given(tables: Tables) -> str:
    """`` (targets has 2017Q1, 2017Q2)``: the periods the targets table covers, if any."""
    targets = tables.targets()
    if targets is None or targets.empty:
        return " (the data has no targets table)"
    periods = sorted(map(str, targets[PERIOD].dropna().unique()))
    shown = ", ".join(periods[:6]) + (f" and {len(periods) - 6} more" if len(periods) > 6 else "")
    return f" (targets has {shown})"


def _how_to_add_targets(tables: Tables, period: str) -> str:
    """The command that writes a fillable targets file for ``period``."""
    source = f"--data {tables.source} " if tables.source else ""
    return (f"`quotacast targets template {source}--period {period} --out "
            "targets-to-fill.csv` writes one row per node with past actuals; fill its amount "
            "column and save it as targets.csv in the data directory")


def run_recalibration(tables: Tables, period: str, as_of: pd.Timestamp | str, *,
                      method: Method = "even_probability", draws: int = 10_000,
                      seed: int = 42, use_churn: bool = True, progress: Progress | None = None
                      ) -> tuple[pd.DataFrame, list[str]]:
    """Revised targets for the rest of ``period`` (``quotacast recalibrate``) and the notes."""
    result = run_feasibility(tables, period, as_of, draws=draws, seed=seed,
                             use_churn=use_churn, progress=progress)
    _say(progress, f"recalibrating targets ({method})")
    frame = recalibrate(result.frame, result.simulation, method=method)
    if frame.empty:
        return frame, [*result.notes, f"recalibration: no node has a target in {period}, so "
                       f"there is nothing to recalibrate; {_how_to_add_targets(tables, period)}"]
    return frame, [*result.notes, f"recalibration: {method}"]
