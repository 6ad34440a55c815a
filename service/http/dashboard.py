"""What the dashboard page shows, per role: built from the same service functions as the API.

A planner, sales ops or admin sees the current period's feasibility (chart and table), the
firing warnings with their explanations and the riskiest customers; an account manager sees
their own at-risk customers. A section whose data or model is missing shows why instead of
failing the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from markupsafe import Markup

from engine.schemas import LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM
from models.base import MODEL_KINDS
from service.http.auth import Permission, Principal
from service.http.charts import feasibility_svg, risk_colour
from service.http.routes.customers import at_risk_page
from service.http.routes.feasibility import feasibility
from service.http.routes.warnings import alert_list
from service.http.schemas import AlertList, FeasibilityNode, FeasibilityOut
from service.http.state import AppState
from service.usecases.request import Refusal

__all__ = ["AT_RISK_ROWS", "Section", "dashboard_context", "money", "percent"]

AT_RISK_ROWS = 20
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


def dashboard_context(state: AppState, principal: Principal) -> dict[str, Any]:
    """Template variables of the dashboard for this caller."""
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
        "colour": risk_colour,
    }
