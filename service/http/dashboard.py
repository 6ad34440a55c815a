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

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from fastapi import status
from markupsafe import Markup

from engine.io import Tables
from engine.periods import period_bounds, period_of
from engine.schemas import (
    COMPANY_KEY,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    ORDER_DATE,
    PERIOD,
)
from models.base import MODEL_KINDS
from models.feasibility import MUST_HIT_QUANTILE, P_ATTAIN, STRETCH_QUANTILE, TARGET, Method
from models.feasibility.scenario import EXPECTED_DELTA
from service.http.auth import Permission, Principal, board_node, names_other_node
from service.http.auth import board_nodes as board_nodes_of
from service.http.charts import (
    fan_svg,
    feasibility_svg,
    money,
    paired_bars_svg,
    risk_colour,
    trend_svg,
)
from service.http.errors import status_of
from service.http.metrics import Yielding
from service.http.routes.customers import at_risk_page
from service.http.routes.deals import DealsOut, deals_for
from service.http.routes.feasibility import feasibility
from service.http.routes.scenario import ScenarioIn, ScenarioNode, post_scenario
from service.http.routes.warnings import alert_list
from service.http.schemas import AlertList, FeasibilityNode, FeasibilityOut
from service.http.state import AppState
from service.usecases.board import (
    DIMENSION_DRAWS,
    board_changes,
    board_store,
    board_trend,
    closed_path,
    dimension_levels,
)
from service.usecases.commits import list_commits, submit_commit
from service.usecases.dimensions import dimension_feasibility
from service.usecases.planning import FeasibilityRun, feasibility_run, recalibration
from service.usecases.request import (
    AS_OF_SLACK,
    DataSpan,
    Refusal,
    parse_as_of,
    resolve_as_of,
    resolve_period,
)
from service.usecases.scenario import most_hurt, scenario_library
from service.usecases.served import Memo, result_of

__all__ = [
    "AT_RISK_ROWS",
    "BOARD_DEALS",
    "SCENARIO_ROWS",
    "BoardNode",
    "BoardNodes",
    "Picker",
    "Section",
    "board_context",
    "board_nodes",
    "board_url",
    "cached_nodes",
    "dashboard_context",
    "default_picker",
    "empty_node_notice",
    "forget_board",
    "last_revenue_day",
    "library_names",
    "money",
    "percent",
    "period_choices",
    "ranked_by_gap",
    "relative_change",
    "scenario_rows",
    "signed_change",
    "submit_board_commit",
    "unknown_scenario",
]

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


@functools.lru_cache(maxsize=1)
def _library() -> dict[str, Any]:
    """The ready scenarios (read from their files once per process)."""
    return scenario_library()


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


def unknown_scenario(picked: str, ready: Mapping[str, Any]) -> str | None:
    """Why ``picked`` is not a ready scenario's name, or None when it is one."""
    if _SCENARIO_NAME.fullmatch(picked) and picked in ready:
        return None
    shown = picked if len(picked) <= 100 else picked[:100] + "..."
    return f"There is no ready scenario named {shown!r}. Pick one of: {', '.join(ready)}."


def _scenario_section(state: AppState, principal: Principal, picked: str | None) -> Section:
    """The scenario picker and, for a picked library scenario, its comparison."""
    if not principal.can(Permission.PLANNING):
        return Section()
    ready = _library()
    picked = picked or None
    section = Section(shown=True, extra={
        "library": [(name, s.name, s.description) for name, s in ready.items()],
        "picked": picked})
    if picked is None:
        return section
    section.problem = unknown_scenario(picked, ready)
    if section.problem:
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


# === the board: /board, one node of the hierarchy at a time ====================================

BOARD_DEALS = 25
BOARD_CHILDREN_CHART = 12
# Per (workspace, data, period, as-of, models): see _cached. Large enough for the few values of
# every node page of the current and the previous period (the warm-up computes them all:
# service.http.reload), a few kB each.
_BOARD: Memo[Any] = Memo(size=8192)
_QUANTILES = (MUST_HIT_QUANTILE, 0.5, STRETCH_QUANTILE, 0.9)


@dataclass(frozen=True)
class BoardNode:
    """One node as the board shows it (amounts in the data's currency)."""

    level: str
    key: str
    target: float | None
    closed: float
    expected: float
    p_attain: float | None
    p10: float
    p50: float
    p90: float
    must_hit: float
    stretch: float
    deals: float

    @property
    def gap(self) -> float | None:
        """Target minus expected: positive, expected to fall short by that much."""
        return None if self.target is None else self.target - self.expected

    @property
    def name(self) -> str:
        return "company" if self.level == LEVEL_COMPANY else f"{self.level} {self.key}"


@dataclass(frozen=True)
class BoardNodes:
    """Every simulated node of a run, with its parent, as the board reads them."""

    nodes: list[BoardNode]
    parent: list[int]
    index: dict[tuple[str, str], int]

    def children(self, at: int) -> list[int]:
        return [i for i, p in enumerate(self.parent) if p == at]

    def chain(self, at: int) -> list[int]:
        """The node's ancestors from the company down, the node last."""
        out = [at]
        while self.parent[out[-1]] >= 0:
            out.append(self.parent[out[-1]])
        return out[::-1]


def cached_nodes(state: AppState, period: str | None = None) -> list[BoardNode]:
    """Every node of the board's default period (or ``period``, at the default as-of): the
    hierarchy's (and levels the targets name), then the product/segment/channel nodes
    (waiting for their simulation)."""
    picker = _resolve_picker(state, period, None)
    run = feasibility_run(state, picker.period, picker.as_of.date())
    view = _cached(state, "nodes", run.period, run.as_of, lambda: board_nodes(run))
    levels = _dimension_levels(state, run, view)
    extra = _dimensions(state, run, levels, wait=True)[0] if levels else None
    return view.nodes + [n for n in (extra.nodes if extra else []) if n.level in levels]


def default_picker(state: AppState) -> Picker:
    """The period and as-of the board opens on when none is asked."""
    return _resolve_picker(state, None, None)


def library_names() -> list[str]:
    """The names of the ready scenarios the board offers."""
    return list(_library())


def forget_board() -> None:
    """Forget every computed board value (the data changed: see :mod:`service.http.reload`)."""
    _BOARD.clear()
    _BACKGROUND.clear()


class Background:
    """Values computed on one background thread, which a page shows once they are done
    instead of waiting for them (the dimensions' simulation: seconds at a large company)."""

    def __init__(self, size: int = 8):
        self.size = size
        self._futures: OrderedDict[Hashable, Future[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quotacast-board")

    def future(self, key: Hashable, compute: Callable[[], Any]) -> Future[Any]:
        """The computation of ``key``, started when it is not known yet."""
        with self._lock:
            found = self._futures.get(key)
            if found is None:
                found = self._pool.submit(Yielding.inherit(compute))
                self._futures[key] = found
                while len(self._futures) > self.size:
                    self._futures.popitem(last=False)
            else:
                self._futures.move_to_end(key)
            return found

    def forget(self, key: Hashable) -> None:
        """Drop the computation of ``key`` (its result was used)."""
        with self._lock:
            self._futures.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._futures.clear()


_BACKGROUND = Background()


def _versions(state: AppState) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(m.version)) for k, m in state.models.items()))


def _cached(state: AppState, what: str, period: str, as_of: pd.Timestamp,
            compute: Callable[[], T]) -> T:
    """A board value computed once per workspace, data, period, as-of and served models."""
    key = (state.name, state.data.source, state.settings.database_url, what, period, as_of,
           _versions(state))
    return _BOARD.get(key, compute)


def board_nodes(run: FeasibilityRun) -> BoardNodes:
    """Every node of the run's simulation (with or without a target) with its outlook: the
    feasibility frame's numbers where the node has a target, else its draws' quantiles."""
    simulation = run.simulation
    draws = simulation.draws
    if len(draws):
        q = np.quantile(draws, _QUANTILES, axis=0)
        expected = draws.mean(axis=0)
    else:
        q = np.tile(simulation.closed, (len(_QUANTILES), 1))
        expected = simulation.closed
    targets = {(lv, k): (t, p) for lv, k, t, p in
               zip(run.frame[LEVEL], run.frame[KEY], run.frame[TARGET], run.frame[P_ATTAIN],
                   strict=True)}
    nodes = []
    for i, (level, key) in enumerate(zip(simulation.nodes[LEVEL], simulation.nodes[KEY],
                                         strict=True)):
        target, p_attain = targets.get((level, key), (None, None))
        nodes.append(BoardNode(
            level=str(level), key=str(key),
            target=None if target is None or pd.isna(target) else float(target),
            closed=float(simulation.closed[i]), expected=float(expected[i]),
            p_attain=None if p_attain is None or pd.isna(p_attain) else float(p_attain),
            p10=float(q[0, i]), p50=float(q[1, i]), p90=float(q[3, i]),
            must_hit=float(q[0, i]), stretch=float(q[2, i]),
            deals=float(simulation.deals_in_period[i])))
    index = {(n.level, n.key): i for i, n in enumerate(nodes)}
    return BoardNodes(nodes, [int(p) for p in simulation.nodes["parent"]], index)


def ranked_by_gap(nodes: list[BoardNode]) -> list[BoardNode]:
    """Largest gap first (furthest short of target); nodes without a target last, largest
    expected first."""
    with_target = sorted((n for n in nodes if n.gap is not None),
                         key=lambda n: -(n.gap or 0.0))
    without = sorted((n for n in nodes if n.gap is None), key=lambda n: -n.expected)
    return with_target + without


@dataclass
class Picker:
    """The period and as-of the board shows, the choices offered, and why (when the board
    did not open where asked)."""

    period: str
    as_of: pd.Timestamp
    default_as_of: pd.Timestamp
    first_as_of: pd.Timestamp
    last_as_of: pd.Timestamp
    periods: list[str]
    notice: str | None = None
    notice_link: str | None = None
    problem: str | None = None


def period_choices(tables: Tables, span: DataSpan, chosen: str) -> list[str]:
    """The periods the picker offers: the last eight quarters of the data and the next one,
    the years and quarters the targets table names within a year of the data, its months of
    the last half year and the next month, and the chosen period."""
    last = pd.Period(span.end, freq="Q")
    quarters = {f"{p.year}Q{p.quarter}" for p in pd.period_range(last - 7, last + 1, freq="Q")
                if p.end_time >= span.start}
    recent = span.end - pd.DateOffset(months=6)
    soon = span.end + pd.DateOffset(months=1)
    targets = tables.targets()
    named = set()
    if targets is not None and not targets.empty:
        for value in targets[PERIOD].dropna().unique():
            text = str(value)
            if not span.start.year - 1 <= int(text[:4]) <= span.end.year + 1:
                continue
            start, end = period_bounds(text)
            if "-" not in text or (end > recent and start <= soon):
                named.add(text)
    every = quarters | named | {chosen}
    return sorted(every, key=lambda p: (period_bounds(p)[0], -period_bounds(p)[1].value))


def last_revenue_day(tables: Tables, as_of: pd.Timestamp) -> pd.Timestamp | None:
    """The last day with an order before ``as_of`` (None: no order before it)."""
    days = tables.orders[ORDER_DATE]
    days = days[days < as_of]
    return None if days.empty else pd.Timestamp(days.max()).normalize()


def board_url(**params: str | None) -> str:
    """``/board?...`` with the given (non-empty) parameters."""
    shown = {k: v for k, v in params.items() if v}
    return "/board" + ("?" + urlencode(shown) if shown else "")


def _resolve_picker(state: AppState, period: str | None, as_of: str | None) -> Picker:
    """The period and as-of to show: as asked, else the defaults (the quarter of the data's
    last day, as of the day after it); the default period moves back to the last one with
    revenue when the data's revenue ends before it (and says so).

    Raises:
        RequestError / OutsideData: ``period`` or ``as_of`` cannot be answered.
    """
    tables = state.tables()
    span = state.span()
    stamp = resolve_as_of(parse_as_of(as_of or None), span)
    chosen = resolve_period(period or None, stamp, span)
    picker = Picker(period=chosen, as_of=stamp, default_as_of=span.default_as_of,
                    first_as_of=span.start + pd.Timedelta(days=1),
                    last_as_of=span.end + AS_OF_SLACK, periods=[])
    start, end = period_bounds(chosen)
    last = _cached(state, "last revenue", "", stamp, lambda: last_revenue_day(tables, stamp))
    empty = stamp > start and (last is None or last < start)
    if empty:
        ends = (f"the data's revenue (orders) ends on {last.date()}" if last is not None
                else "the data has no order before this as-of")
        if not period and last is not None:
            moved = period_of(last, "Q")
            picker.notice = (f"No revenue is dated in {chosen} before {stamp.date()} yet: {ends}. "
                             f"The board opens on {moved}, the last quarter with revenue; pick "
                             f"{chosen} above to see its outlook anyway.")
            picker.period = moved
        else:
            picker.notice = f"No revenue is dated in {chosen} before {stamp.date()} yet: {ends}."
            if last is not None:
                picker.notice_link = period_of(last, "Q")
    elif stamp <= start:
        picker.notice = (f"{chosen} starts on {start.date()}, after the as-of {stamp.date()}: "
                         "nothing in it can be closed yet, so its outlook is open pipeline and "
                         "run rate only.")
    elif stamp >= end:
        picker.notice = (f"{chosen} ended on {(end - pd.Timedelta(days=1)).date()}, before the "
                         f"as-of {stamp.date()}: these are its final numbers, nothing is "
                         "simulated.")
    picker.periods = _cached(state, "periods", picker.period, span.end,
                             lambda: period_choices(tables, span, picker.period))
    return picker


def empty_node_notice(node: BoardNode, period: str, as_of: pd.Timestamp) -> str | None:
    """Why a node's numbers are all 0 (nothing closed, nothing expected), or None when they
    are not: the board never shows an empty period without saying why."""
    if node.closed or node.expected or node.p90:
        return None
    _, end = period_bounds(period)
    if as_of >= end:
        return (f"{node.name} closed nothing in {period}: no revenue of it is dated in the "
                "period, which has ended, so every number here is 0.")
    return (f"{node.name} has no revenue dated in {period} before {as_of.date()}, no open deal "
            "expected to close in it and no run rate to carry into it, so every number of its "
            "outlook is 0.")


def _node_section(state: AppState, view: BoardNodes, at: int, picker: Picker
                  ) -> dict[str, Any]:
    node = view.nodes[at]
    start, end = period_bounds(picker.period)
    origin = start
    label = (f"{node.name}, {picker.period} as of {picker.as_of.date()}: closed "
             f"{money(node.closed)} to date; by the period end P10 {money(node.p10)}, median "
             f"{money(node.p50)}, P90 {money(node.p90)}"
             + (f" against a target of {money(node.target)}, P(attain) "
                f"{percent(node.p_attain)}" if node.target is not None else ", no target"))
    tables = state.tables()
    path = _cached(state, f"closed path {node.level} {node.key}", picker.period, picker.as_of,
                   lambda: [float(v) for v in closed_path(tables, picker.period, picker.as_of,
                                                          node.level, node.key)])
    fan = fan_svg(target=node.target, closed=node.closed, p10=node.p10, p50=node.p50,
                  p90=node.p90, stretch=node.stretch, start_day=0.0,
                  as_of_day=float((picker.as_of - origin).days),
                  end_day=float((end - origin).days), label=label, path=path)
    return {"node": node, "fan": Markup(fan), "fan_label": label,
            "node_notice": empty_node_notice(node, picker.period, picker.as_of)}


def _children_section(view: BoardNodes, at: int, period: str) -> dict[str, Any]:
    # An empty catch-all (no target, nothing closed or expected) is left out.
    kids = [view.nodes[i] for i in view.children(at)]
    kids = [k for k in kids if k.target is not None or k.expected or k.closed]
    groups: dict[str, list[BoardNode]] = {}
    for kid in kids:
        groups.setdefault(kid.level, []).append(kid)
    ranked = {level: ranked_by_gap(nodes) for level, nodes in groups.items()}
    drawn = [n for nodes in ranked.values() for n in nodes if n.target]
    chart = None
    if drawn:
        rows = [FeasibilityNode(period=period, level=n.level, key=n.key, target=n.target,
                                closed_to_date=n.closed, p_attain=n.p_attain,
                                expected=n.expected, p10=n.p10, p50=n.p50, p90=n.p90,
                                gap=n.gap, must_hit=n.must_hit, stretch=n.stretch)
                for n in drawn[:BOARD_CHILDREN_CHART]]
        chart = Markup(feasibility_svg(rows, "Children against their targets, largest gap "
                                             "first (percent of each one's target)"))
    return {"groups": ranked, "chart": chart, "count": len(kids)}


def _board_scenario(state: AppState, principal: Principal, picked: str | None,
                    picker: Picker, chain: list[BoardNode], kids: list[BoardNode]) -> Section:
    """Baseline beside a ready scenario for the node and its children."""
    section = _scenario_section(state, principal, None)
    if not section.shown or not picked:
        return section
    section.extra["picked"] = picked
    ready = _library()
    section.problem = unknown_scenario(picked, ready)
    if section.problem:
        return section
    try:
        result = post_scenario(principal, state, ScenarioIn(
            scenario=picked, period=picker.period, as_of=picker.as_of.date()))
    except Refusal as exc:
        section.problem = str(exc)
        return section
    by_node = {(n.level, n.key): n for n in result.nodes}
    wanted = [chain[-1], *kids]
    rows = [by_node[(n.level, n.key)] for n in wanted if (n.level, n.key) in by_node]
    section.content = result
    section.extra["rows"] = rows
    section.extra["description"] = ready[picked].description
    pairs = [(("company" if r.level == LEVEL_COMPANY else f"{r.level} {r.key}"),
              float(r.expected_baseline or 0.0), float(r.expected_scenario or 0.0))
             for r in rows[:BOARD_CHILDREN_CHART + 1]]
    section.extra["chart"] = Markup(paired_bars_svg(
        pairs, ("baseline", result.name),
        f"Expected revenue of {chain[-1].name} and its children, baseline beside "
        f"{result.name}"))
    return section


def _board_recalibration(state: AppState, picker: Picker, node: BoardNode,
                         kids: list[BoardNode], method: str) -> Section:
    """The node's children's recalibrated targets (the recalibration use case)."""
    if not kids:
        return Section(shown=True, problem=f"{node.name} has no children to recalibrate.")
    chosen: Method = "proportional_p50" if method == "proportional_p50" else "even_probability"

    def build() -> pd.DataFrame:
        return recalibration(state, picker.period, picker.as_of.date(), chosen)[1]

    try:
        frame = _cached(state, f"recalibration-{chosen}", picker.period, picker.as_of, build)
    except Refusal as exc:
        return Section(shown=True, problem=str(exc), extra={"method": chosen})
    wanted = {(k.level, k.key) for k in kids}
    rows = [row for row in frame.to_dict("records") if (row[LEVEL], row[KEY]) in wanted]
    if not rows:
        return Section(shown=True, extra={"method": chosen}, problem=(
            f"None of {node.name}'s children has a target in {picker.period}, so there is "
            "nothing to recalibrate."))
    return Section(shown=True, content=rows, extra={"method": chosen})


def _board_deals(state: AppState, principal: Principal, picker: Picker, node: BoardNode
                 ) -> Section:
    def build() -> DealsOut:
        scoped = principal.scoped_to is not None
        return _cached(state, f"deals {principal.scoped_to} {node.level} {node.key}",
                       picker.period, picker.as_of, lambda: deals_for(
                           state, principal, picker.period, picker.as_of.date(),
                           None if scoped else node.level, None if scoped else node.key,
                           BOARD_DEALS))

    return _section(True, build)


def _dimension_levels(state: AppState, run: FeasibilityRun, view: BoardNodes) -> list[str]:
    """The data's dimensions no target of the period names (product, segment, channel)."""
    return _cached(state, "dimension levels", run.period, run.as_of, lambda: dimension_levels(
        state.tables(), {str(n.level) for n in view.nodes}))


def _dimensions(state: AppState, run: FeasibilityRun, levels: list[str], wait: bool
                ) -> tuple[BoardNodes | None, str | None]:
    """The dimension ``levels``' nodes: ``(nodes, problem)``. Simulated once per period,
    as-of and models on a background thread
    (:func:`service.usecases.dimensions.dimension_feasibility`);
    without ``wait``, ``nodes`` is None until that is done (and the problem says so)."""
    key = (state.name, state.data.source, state.settings.database_url, "dimensions",
           run.period, run.as_of, tuple(levels), _versions(state))

    def compute() -> BoardNodes:
        # The simulation the deals, commits and API of these nodes read too.
        return board_nodes(dimension_feasibility(state, run, levels))

    future = _BACKGROUND.future(key, compute)
    if not wait and not future.done():
        return None, (f"The {', '.join(levels)} nodes of {run.period} are being simulated in "
                      "the background: reload the page in a few seconds.")
    try:
        return result_of(future), None
    except (Refusal, ValueError) as exc:
        return None, f"The {', '.join(levels)} nodes cannot be simulated: {exc}"


def _dimension_section(state: AppState, levels: list[str], nodes: BoardNodes | None,
                       problem: str | None) -> Section:
    """The company's dimension nodes, per level, largest expected first."""
    if not levels:
        return Section()
    extra = {"levels": levels, "draws": min(state.draws, DIMENSION_DRAWS)}
    if nodes is None:
        return Section(shown=True, problem=problem, extra=extra)
    groups = {level: sorted((n for n in nodes.nodes if n.level == level
                             and (n.expected or n.closed)), key=lambda n: -n.expected)
              for level in levels}
    return Section(shown=True, content={k: v for k, v in groups.items() if v}, extra=extra)


def board_context(state: AppState, principal: Principal, *, period: str | None = None,
                  as_of: str | None = None, level: str | None = None, key: str | None = None,
                  scenario: str | None = None, method: str | None = None,
                  wait_dimensions: bool = False) -> tuple[int, dict[str, Any]]:
    """The status code and template variables of the board for this caller.

    ``wait_dimensions``: the company page waits for its dimension nodes (product, segment,
    channel) instead of saying they are being computed (the warm-up does).

    An account manager sees its own rep node, deals and customers only; naming another node
    answers 403 with a plain "not yours" section and nothing of that node.
    """
    # A period or date is a few characters; longer text is wrong anyway (and said so, shortly).
    period, as_of = (period or "")[:40] or None, (as_of or "")[:40] or None
    context: dict[str, Any] = {
        "principal": principal, "data": state.data, "colour": risk_colour,
        "planning": principal.can(Permission.PLANNING), "board_url": board_url,
        "picked_scenario": scenario or "", "method": method or "even_probability"}
    if names_other_node(principal, level, key):
        context["not_yours"] = (f"{(level or 'that level')[:100]} {(key or '')[:100]} is not "
                                "yours: an account "
                                "manager's board shows their own rep node, deals and customers "
                                "only.")
        return status.HTTP_403_FORBIDDEN, context
    try:
        picker = _resolve_picker(state, period, as_of)
    except Refusal as exc:
        context["problem"] = str(exc)
        return status_of(exc), context
    context["picker"] = picker
    context["url"] = lambda **extra: board_url(**{"period": picker.period,
                                                 "as_of": str(picker.as_of.date()), **extra})
    try:
        run = feasibility_run(state, picker.period, picker.as_of.date())
    except Refusal as exc:
        context["problem"] = str(exc)
        return status_of(exc), context
    view = _cached(state, "nodes", run.period, run.as_of, lambda: board_nodes(run))
    mine = principal.scoped_to
    wanted = (LEVEL_REP, mine) if mine else (level or LEVEL_COMPANY, key or COMPANY_KEY)
    at = view.index.get(wanted)
    dimensions = [] if mine else _dimension_levels(state, run, view)
    context["dimensions"] = Section()
    if at is None and wanted[0] in dimensions:  # a product, segment or channel node
        found, why = _dimensions(state, run, dimensions, wait=True)
        if found is not None and wanted in found.index:
            view, at = found, found.index[wanted]
        elif why:
            context["problem"] = why
            return status.HTTP_503_SERVICE_UNAVAILABLE, context
    elif at == view.index.get((LEVEL_COMPANY, COMPANY_KEY)) and dimensions:
        context["dimensions"] = _dimension_section(
            state, dimensions, *_dimensions(state, run, dimensions, wait=wait_dimensions))
    if at is None:
        shown = [w if len(w) <= 100 else w[:100] + "..." for w in wanted]
        context["problem"] = (
            f"No node {shown[0]} {shown[1]!r} in the simulation of {run.period} as of "
            f"{run.as_of.date()}" + (": nothing is recorded in your name" if mine else "")
            + "." + (f" Give the {shown[0]} too (node=NAME), or pick it from its parent's "
                     "list." if level and not key and not mine else ""))
        code = status.HTTP_200_OK if mine else status.HTTP_404_NOT_FOUND
        if mine:
            context["deals"] = Section()
            context["at_risk"] = _section(True, lambda: at_risk_page(
                state, principal, None, 0.0, 1, AT_RISK_ROWS))
        return code, context
    chain = [view.nodes[i] for i in view.chain(at)]
    if mine:
        chain = chain[-1:]  # never the company's or the team's numbers
    node = chain[-1]
    kids = [] if mine else [k for k in (view.nodes[i] for i in view.children(at))
                            if k.target is not None or k.expected or k.closed]
    context.update(_node_section(state, view, at, picker))
    context["crumbs"] = chain
    context["children"] = (_children_section(view, at, run.period) if not mine
                           else {"groups": {}, "chart": None, "count": 0})
    context["targets_missing"] = not any(n.target is not None for n in view.nodes)
    context["notes"] = run.notes
    context["trend"] = _board_trend(state, picker, node)
    context["changes"] = _board_changes(state, picker, node, context["trend"])
    if node.level in dimensions:  # simulated beside the hierarchy: outlook, deals, commits
        context["draws"] = min(state.draws, DIMENSION_DRAWS)
        context["deals"] = _board_deals(state, principal, picker, node)
        context["commits"] = _board_commits(state, principal, picker, node, [])
        context["scenario"] = context["recalibration"] = Section()
        context["at_risk"] = Section()
        return status.HTTP_200_OK, context
    context["draws"] = run.draws
    context["deals"] = _board_deals(state, principal, picker, node)
    context["scenario"] = _board_scenario(state, principal, scenario, picker, chain,
                                          ranked_by_gap(kids))
    context["recalibration"] = (
        _board_recalibration(state, picker, node, kids, method or "even_probability")
        if principal.can(Permission.PLANNING) else Section())
    context["commits"] = _board_commits(state, principal, picker, node, kids)
    context["at_risk"] = _section(mine is not None, lambda: at_risk_page(
        state, principal, None, 0.0, 1, AT_RISK_ROWS))
    return status.HTTP_200_OK, context


def _board_trend(state: AppState, picker: Picker, node: BoardNode) -> Section:
    """The node's weekly snapshots of the period as a chart and a table (board data's use
    case), as of the picked date or earlier."""
    def build() -> list[dict[str, Any]]:
        trend = board_trend(state, node.level, node.key, picker.period, picker.as_of.date())
        section.extra["notes"] = trend.notes
        return [{str(k): (None if isinstance(v, float) and not np.isfinite(v) else v)
                 for k, v in row.items()} for row in trend.frame.to_dict("records")]

    section = Section(shown=True)
    try:
        points = build()
    except Refusal as exc:
        section.problem = str(exc)
        return section
    section.content = points
    if not points:
        section.extra["empty"] = (
            f"No snapshot of {node.name} in {picker.period} up to {picker.as_of.date()} yet: "
            "each `quotacast warnings evaluate`, `quotacast feasibility` and feasibility the "
            "service computes writes one, so the trend fills week by week.")
        return section
    drawn = [(str(p["as_of"])[5:10], p.get("p_attain"), p.get("p50"), p.get("closed_to_date"))
             for p in points]
    label = (f"Trend of {node.name} in {picker.period}: "
             + "; ".join(f"{d} P(attain) {percent(a)}, P50 {money(m)}, closed {money(c)}"
                         for d, a, m, c in drawn))
    section.extra["chart"] = Markup(trend_svg(drawn, node.target, label))
    return section


def _board_changes(state: AppState, picker: Picker, node: BoardNode, trend: Section
                   ) -> Section:
    """What changed since the snapshot a week before (board data's use case); cached per
    node and the node's weekly snapshots (a new snapshot is a new answer)."""
    until = None if picker.as_of == picker.default_as_of else picker.as_of.date()
    weeks = tuple(str(p["as_of"]) for p in trend.content or ())

    def build() -> Any:
        return board_changes(state, node.level, node.key, picker.period, until=until)

    try:
        changes = _cached(state, f"changes {node.level} {node.key} {weeks}", picker.period,
                          picker.as_of, build)
    except Refusal as exc:
        return Section(shown=True, problem=str(exc))
    groups = [{str(k): (None if isinstance(v, float) and not np.isfinite(v) else v)
               for k, v in row.items()} for row in changes.groups.to_dict("records")]
    return Section(shown=True, content={
        "since": changes.since, "until": changes.until, "p_attain_since": changes.p_attain_since,
        "p_attain_until": changes.p_attain_until, "p_attain_delta": changes.p_attain_delta,
        "groups": groups, "notes": changes.notes})


def _board_commits(state: AppState, principal: Principal, picker: Picker, node: BoardNode,
                   kids: list[BoardNode]) -> Section:
    """The latest commit and best case of the node (and its children) beside the probability
    of reaching each (board data's use case); an account manager: its own node only."""
    wanted = [(node.level, node.key)] + [(k.level, k.key) for k in kids]
    section = Section(shown=True, extra={"can_submit": principal.can(Permission.COMMITS_WRITE)})
    try:
        nodes = (board_nodes_of(principal, LEVEL_REP, principal.scoped_to)
                 if principal.scoped_to else wanted)
        # Reused while the stored submissions of these nodes are the same (one small query).
        stored = tuple(r.id for r in board_store(state).commits(picker.period, nodes))
        found = _cached(state, f"commits {nodes} {stored}", picker.period, picker.as_of,
                        lambda: list_commits(state, picker.period, picker.as_of.date(), nodes))
    except Refusal as exc:
        section.problem = str(exc)
        return section
    rows = [{str(k): (None if (isinstance(v, float) and not np.isfinite(v)) or v is pd.NaT
                      else v)
             for k, v in row.items()} for row in found.commits.to_dict("records")]
    order = {n: i for i, n in enumerate(wanted)}
    rows.sort(key=lambda r: (order.get((str(r["level"]), str(r["key"])), len(order)),
                             str(r["category"])))
    section.content = rows
    return section


def submit_board_commit(state: AppState, principal: Principal, *, period: str, as_of: str,
                        level: str, key: str, category: str, amount: str, note: str
                        ) -> tuple[int, str]:
    """Store a commit from the board's form: (status, a sentence for the page).

    Raises:
        HTTPException: 403 for an account manager naming another node.
    """
    node_level, node_key = board_node(principal, level or None, key or None)
    try:
        value = float(amount)
    except ValueError:
        return status.HTTP_400_BAD_REQUEST, f"The amount {amount[:40]!r} is not a number."
    try:
        stamp = parse_as_of(as_of or None)
        saved = submit_commit(state, node_level, node_key, value, category, period or None,
                              None if stamp is None else stamp.date(), principal.name,
                              note[:200])
    except Refusal as exc:
        return status_of(exc), str(exc)
    chance = "n/a" if saved.p_reach is None else f"{saved.p_reach:.0%}"
    return status.HTTP_200_OK, (
        f"Saved: {saved.record.category.replace('_', ' ')} of {money(saved.record.amount)} "
        f"for {node_level} {node_key} in {saved.record.period}; quotacast's probability of "
        f"reaching it as of {saved.as_of}: {chance}.")
