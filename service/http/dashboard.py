"""What the dashboard page shows, per role: built from the same service functions as the API.

A planner, sales ops or admin sees the current period's feasibility (chart and table), the
firing warnings with their explanations and the riskiest customers; an account manager sees
their own at-risk customers. A section whose data or model is missing shows why instead of
failing the page.

The same planning roles may pick a ready scenario of the library (``/?scenario=budget-freeze``):
its section compares the company, the regions and the most hurt nodes, baseline beside
scenario, from the very run ``POST /v1/scenario`` answers (one cached use case).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd
from markupsafe import Markup

from engine.schemas import KEY, LEVEL, LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM
from models.base import MODEL_KINDS
from models.feasibility.scenario import EXPECTED_DELTA
from service.http.auth import Permission, Principal
from service.http.charts import feasibility_svg, risk_colour
from service.http.routes.customers import at_risk_page
from service.http.routes.feasibility import feasibility
from service.http.routes.scenario import ScenarioIn, ScenarioNode, post_scenario
from service.http.routes.warnings import alert_list
from service.http.schemas import AlertList, FeasibilityNode, FeasibilityOut
from service.http.state import AppState
from service.usecases.request import Refusal
from service.usecases.scenario import most_hurt, scenario_library

__all__ = ["AT_RISK_ROWS", "SCENARIO_ROWS", "Section", "dashboard_context", "money", "percent",
           "relative_change", "scenario_rows", "signed_change"]

AT_RISK_ROWS = 20
SCENARIO_ROWS = 15
_SCENARIO_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
# Levels drawn in the chart; reps are many, so they are listed in the table only.
_CHART_LEVELS = (LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM)
T = TypeVar("T")


@dataclass
class Section:
    """One block of the page: its content, or why there is none."""

    shown: bool = False
    content: Any = None
    problem: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def money(value: float | None) -> str:
    """1234567 -> 1.23M: amounts as people read them."""
    if value is None:
        return "n/a"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.0f}"


def percent(value: float | None) -> str:
    """0.623 -> 62%."""
    return "n/a" if value is None else f"{value:.0%}"


def _section(allowed: bool, build: Callable[[], T]) -> Section:
    if not allowed:
        return Section()
    try:
        return Section(shown=True, content=build())
    except Refusal as exc:  # a missing model or data: say so in the section
        return Section(shown=True, problem=str(exc))


def _feasibility_extra(result: FeasibilityOut) -> dict[str, Any]:
    drawn: list[FeasibilityNode] = [n for n in result.nodes if n.level in _CHART_LEVELS]
    title = f"Feasibility of the {result.period} targets as of {result.as_of}"
    return {
        "chart": Markup(feasibility_svg(drawn, title)),  # built from escaped parts only
        "upper": drawn,
        "reps": [n for n in result.nodes if n.level not in _CHART_LEVELS],
    }


def signed_change(value: float | None) -> str:
    """-12345 -> -12.3k, 0.05 -> +0.05: a change with its sign."""
    if value is None:
        return "n/a"
    return money(value) if value < 0 else "+" + money(value)


def relative_change(delta: float | None, base: float | None) -> str:
    """The change as a percent of the baseline (-8%), blank without a baseline."""
    if delta is None or not base:
        return ""
    return f"{delta / abs(base):+.0%}"


def scenario_rows(nodes: list[ScenarioNode], count: int = SCENARIO_ROWS) -> list[ScenarioNode]:
    """The company and the regions (those with a baseline), then the most hurt other nodes
    (:func:`service.usecases.scenario.most_hurt`), ``count`` rows at most."""
    top = [n for n in nodes if n.level in (LEVEL_COMPANY, LEVEL_REGION)
           and n.expected_baseline][:count]
    shown = {(n.level, n.key) for n in top}
    rest = [n for n in nodes if (n.level, n.key) not in shown and n.expected_delta is not None]
    if not rest or len(top) >= count:
        return top
    frame = pd.DataFrame({LEVEL: [n.level for n in rest], KEY: [n.key for n in rest],
                          EXPECTED_DELTA: [n.expected_delta for n in rest]})
    return top + [rest[i] for i in most_hurt(frame, count - len(top)).index]


def _scenario_section(state: AppState, principal: Principal, picked: str | None) -> Section:
    """The scenario picker and, for a picked library scenario, its comparison."""
    if not principal.can(Permission.PLANNING):
        return Section()
    ready = scenario_library()
    picked = picked or None
    section = Section(shown=True, extra={
        "library": [(name, s.name, s.description) for name, s in ready.items()],
        "picked": picked})
    if picked is None:
        return section
    if not _SCENARIO_NAME.fullmatch(picked) or picked not in ready:
        shown = picked if len(picked) <= 100 else picked[:100] + "..."
        section.problem = (f"There is no ready scenario named {shown!r}. Pick one of: "
                           f"{', '.join(ready)}.")
        return section
    try:
        result = post_scenario(principal, state, ScenarioIn(scenario=picked))
    except Refusal as exc:  # no data for the period, a stage the data lacks...
        section.problem = str(exc)
        return section
    section.content = result
    section.extra["rows"] = scenario_rows(result.nodes)
    section.extra["description"] = ready[picked].description
    return section


def dashboard_context(state: AppState, principal: Principal,
                      scenario: str | None = None) -> dict[str, Any]:
    """Template variables of the dashboard for this caller; ``scenario``: the name of a ready
    scenario to compare with the baseline (planning roles only)."""
    planning = principal.can(Permission.PLANNING)
    feasible = _section(planning, lambda: feasibility(state, None, None))
    if isinstance(feasible.content, FeasibilityOut):
        feasible.extra = _feasibility_extra(feasible.content)
    warnings: Section = _section(planning, lambda: alert_list(state, ["firing"]))
    if isinstance(warnings.content, AlertList):
        # Muted alerts (inhibited by one above them, or silenced) are folded away: the page
        # leads with what nobody has been told about yet.
        alerts = warnings.content.alerts
        warnings.extra = {"loud": [a for a in alerts if not (a.silenced or a.inhibited)],
                          "muted": [a for a in alerts if a.silenced or a.inhibited]}
    at_risk: Section = _section(
        principal.can(Permission.CUSTOMERS),
        lambda: at_risk_page(state, principal, None, 0.0, 1, AT_RISK_ROWS))
    return {
        "principal": principal,
        "data": state.data,
        "models": {k: state.model(k) for k in MODEL_KINDS},
        "feasibility": feasible,
        "warnings": warnings,
        "at_risk": at_risk,
        "scenario": _scenario_section(state, principal, scenario),
        "colour": risk_colour,
    }
