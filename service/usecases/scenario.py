"""Scenario wiring (``quotacast scenario``, ``POST /v1/scenario``): the feasibility ingredients
(champion or stage-rate win model, champion churn scores) and a scenario's shocks, pushed
through the same simulation, baseline beside scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from engine import tracking
from engine.io import Tables
from engine.schemas import KEY, LEVEL, LEVEL_COMPANY, LEVEL_REGION, OPPORTUNITIES
from models.feasibility import CHURN_HORIZON_DAYS, fit_stage_rates
from models.feasibility.scenario import (
    EXPECTED_DELTA,
    Scenario,
    ScenarioError,
    library,
    load_scenario,
    parse_scenario,
    run_scenario,
)
from service.usecases.feasibility import champion_churn_scores, champion_win_model
from service.usecases.request import BadRequest, NotFound, resolve_as_of, resolve_period
from service.usecases.served import Served

__all__ = [
    "ScenarioError",
    "ScenarioResult",
    "ServedScenario",
    "most_hurt",
    "plot_scenario",
    "resolve_scenario",
    "run_scenario_case",
    "scenario_library",
    "scenario_simulated",
    "served_scenario",
]

Progress = Callable[[str], None]
StageRates = Callable[[Tables, pd.Timestamp], tuple[Any, str]]


@dataclass
class ScenarioResult:
    """A scenario run: the compared frame (see :func:`models.feasibility.scenario.compare`),
    the scenario and plain-word notes (how the baseline was made, what each shock touched)."""

    frame: pd.DataFrame
    scenario: Scenario
    notes: list[str] = field(default_factory=list)


def scenario_library() -> dict[str, Scenario]:
    """The ready scenarios by name."""
    return library()


def resolve_scenario(reference: str | Path | Mapping[str, Any]) -> Scenario:
    """A library name, a YAML/JSON file path, or the scenario itself as a mapping.

    Raises:
        ScenarioError: unknown name, unreadable file or invalid scenario (``file: field: why``).
    """
    if isinstance(reference, Mapping):
        return parse_scenario(reference, "scenario")
    return load_scenario(reference)


def run_scenario_case(tables: Tables, period: str, as_of: pd.Timestamp | str,
                      scenario: Scenario, *, draws: int = 10_000, seed: int = 42,
                      use_churn: bool = True, churn_horizon_days: int = CHURN_HORIZON_DAYS,
                      levels: Sequence[str] | None = None, all_nodes: bool = True,
                      models: Mapping[str, tracking.LoadedModel] | None = None,
                      stage_rates: StageRates = fit_stage_rates,
                      progress: Progress | None = None) -> ScenarioResult:
    """``scenario`` beside the baseline for every node of ``period`` as of ``as_of``.

    The same ingredients as :func:`service.usecases.feasibility.run_feasibility` (champion win
    model, else historical stage rates; champion churn scores when there are some).

    Raises:
        ScenarioError: the scenario names a stage the data does not have.
        ValueError: the period or ``as_of`` cannot be simulated.
    """
    as_of = pd.Timestamp(as_of)
    notes: list[str] = []
    if progress is not None:
        progress("loading the win model")
    win_model = champion_win_model(notes, models)
    if win_model is None:
        win_model, note = stage_rates(tables, as_of)
        notes.append(note)
    churn = (champion_churn_scores(tables, as_of, notes, churn_horizon_days, models)
             if use_churn else None)
    if progress is not None:
        progress(f"simulating baseline and scenario, {draws:,} draws each")
    run = run_scenario(tables, period, as_of, scenario, win_model, churn=churn, draws=draws,
                       seed=seed, levels=levels, all_nodes=all_nodes,
                       churn_horizon_days=churn_horizon_days)
    notes += [n for n in run.notes if not n.startswith("churn:") or churn is not None]
    if not tables.has(OPPORTUNITIES):
        notes = [n for n in notes if not n.startswith(("win model", "pipeline"))]
        notes.append("pipeline: the data has no opportunities table, so only run_rate, churn "
                     "and lose shocks can change anything")
    return ScenarioResult(run.frame, scenario, notes)


def most_hurt(frame: pd.DataFrame, count: int = 5) -> pd.DataFrame:
    """The nodes below the company that lose the most expected revenue, worst first."""
    below = frame[(frame[LEVEL] != LEVEL_COMPANY) & (frame[EXPECTED_DELTA] < 0)]
    return below.sort_values([EXPECTED_DELTA, LEVEL, KEY], kind="stable").head(count)


@dataclass(frozen=True)
class ServedScenario:
    """A scenario run of the service: what was asked, and the answer."""

    period: str
    as_of: pd.Timestamp
    draws: int
    result: ScenarioResult


def served_scenario(served: Served, reference: str | Scenario, period: str | None = None,
                    as_of: Any = None) -> ServedScenario:
    """A library scenario (by name) or a given one, with the served models (cached per
    scenario, period, as_of and model versions; stage rates shared with feasibility).

    Raises:
        NotFound: no library scenario of that name, or the scenario names a stage the data
            does not have.
        BadRequest: the period cannot be simulated.
        RequestError: ``period`` or ``as_of`` cannot be answered.
    """
    if isinstance(reference, str):
        ready = scenario_library()
        if reference not in ready:
            raise NotFound(f"no library scenario {reference!r}; the library has "
                           f"{', '.join(ready)}")
        scenario = ready[reference]
    else:
        scenario = reference
    span = served.span()
    stamp = resolve_as_of(as_of, span)
    chosen = resolve_period(period, stamp, span)
    models = dict(served.models)

    def stage_rates(tables: Tables, when: pd.Timestamp) -> tuple[Any, str]:
        return served.feasibility_cache.get(
            ("stage-rates", when), lambda: fit_stage_rates(tables, when))

    def compute() -> ScenarioResult:
        try:
            return run_scenario_case(served.tables(), chosen, stamp, scenario,
                                     draws=served.draws, seed=served.settings.seed,
                                     models=models, stage_rates=stage_rates)
        except ScenarioError as exc:  # a stage the data does not have
            raise NotFound(str(exc)) from exc
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc

    result = served.feasibility_cache.get(_key(scenario, chosen, stamp, models), compute)
    return ServedScenario(chosen, stamp, served.draws, result)


def _key(scenario: Scenario, period: str, as_of: pd.Timestamp,
         models: Mapping[str, Any]) -> tuple[Any, ...]:
    return ("scenario", scenario.model_dump_json(), period, as_of,
            tuple(sorted((k, m.version) for k, m in models.items())))


def scenario_simulated(served: Served, name: str, period: str, as_of: pd.Timestamp) -> bool:
    """Whether the library scenario ``name`` of a resolved ``period`` as of ``as_of`` with the
    served models is cached (:func:`served_scenario` answers it at once); an unknown name
    is: it is refused at once."""
    ready = scenario_library()
    return name not in ready or served.feasibility_cache.peek(
        _key(ready[name], period, as_of, dict(served.models)))


def plot_scenario(frame: pd.DataFrame, title: str, path: Path, count: int = 12) -> None:
    """The company, the regions and the most hurt other nodes: the change in expected revenue
    (% of the baseline, the amount beside it) and, where a node has a target, P(attain)
    baseline -> scenario."""
    top = frame[frame[LEVEL].isin([LEVEL_COMPANY, LEVEL_REGION])]
    top = top[top["expected_baseline"].abs() > 0]
    rest = most_hurt(frame[~frame.index.isin(top.index)], max(count - len(top), 0))
    shown = pd.concat([top, rest])
    labels = [f"{lv} {k}" if lv != LEVEL_COMPANY else "company" for lv, k in
              zip(shown[LEVEL], shown[KEY], strict=True)]
    base = shown["expected_baseline"].to_numpy(dtype=float)
    delta = shown[EXPECTED_DELTA].to_numpy(dtype=float)
    change = np.where(base != 0, delta / np.where(base != 0, np.abs(base), 1.0), 0.0) * 100
    y = np.arange(len(shown))
    targeted = shown["p_attain_baseline"].notna().any()
    fig, axes = plt.subplots(1, 2 if targeted else 1, figsize=(11 if targeted else 8,
                                                              1.4 + 0.45 * max(len(y), 1)),
                             sharey=True, squeeze=False)
    left = axes[0][0]
    left.barh(y, change, color=["C3" if c < 0 else "C2" for c in change])
    for i, (c, d) in enumerate(zip(change, delta, strict=True)):
        left.text(c, i, f" {d:+,.0f} ", va="center", ha="left" if c < 0 else "right",
                  fontsize=8, color="white")  # inside the bar, clear of the node names
    left.axvline(0, color="black", linewidth=0.8)
    left.set_xlabel("expected revenue, scenario vs baseline (%)")
    left.set_yticks(y, labels)
    left.invert_yaxis()
    if targeted:
        right = axes[0][1]
        right.scatter(shown["p_attain_baseline"], y, color="C0", label="baseline")
        right.scatter(shown["p_attain_scenario"], y, color="C3", label="scenario")
        right.set_xlim(-0.02, 1.02)
        right.set_xlabel("P(attain target)")
        right.legend(loc="lower right", fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
