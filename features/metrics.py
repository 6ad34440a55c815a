"""The metric catalogue: what a warning rule can watch.

A metric is a function ``fn(context, as_of, params) -> DataFrame`` registered under a name. Its
frame has one row per label set: ``scope`` (company, region, team, rep, customer, opportunity),
the scope's label columns (:data:`SCOPE_LABELS`; a node carries its ancestors so inhibition by
hierarchy and grouping by region work), ``value``, ``explanation`` (the numbers behind the value,
in words) and detail columns (numbers the explanation quotes, available to templates as
``details.NAME``).

Metrics that other modules compute are reached through :class:`Providers`; a provider that is
not wired yet raises :class:`MetricUnavailable` naming what is missing, and the engine skips the
rules that use it with a one-line note. :func:`catalogue` lists everything for the README.

Everything is point in time: only rows dated before ``as_of`` are used.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.periods import period_bounds
from engine.schemas import (
    AMOUNT,
    CLOSE_DATE,
    COMPANY_KEY,
    CUSTOMER_ID,
    DS,
    DUE_DATE,
    INTERACTIONS,
    ISSUED_AT,
    KEY,
    KIND,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    OCCURRED_AT,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    OWNER,
    PAID_AT,
    PERIOD,
    RECEIVABLES,
    REGION,
    REP,
    STAGE_HISTORY,
    TARGETS,
    TEAM,
)
from features.customer import KIND_COMPLAINT
from features.hierarchy import customer_nodes, opportunity_nodes, rep_hierarchy

__all__ = [
    "EXPLANATION",
    "METRICS",
    "NODE_SCOPES",
    "SCOPES",
    "SCOPE_COLUMN",
    "SCOPE_LABELS",
    "VALUE",
    "ForecastFromAttainment",
    "MetricContext",
    "MetricSpec",
    "MetricUnavailable",
    "Providers",
    "catalogue",
    "compute_metric",
    "default_providers",
    "resolve_period",
]

SCOPE_COLUMN = "scope"
VALUE = "value"
EXPLANATION = "explanation"
SCOPES = ("company", LEVEL_REGION, LEVEL_TEAM, LEVEL_REP, "customer", "opportunity")
NODE_SCOPES = (LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM, LEVEL_REP)
# Labels of an alert at each scope, ancestors first: the hierarchy is company > region > team >
# rep, and a customer (its account manager) or an opportunity (its owner) hangs below a rep.
SCOPE_LABELS: dict[str, tuple[str, ...]] = {
    LEVEL_COMPANY: (),
    LEVEL_REGION: (REGION,),
    LEVEL_TEAM: (REGION, TEAM),
    LEVEL_REP: (REGION, TEAM, REP),
    "customer": (REGION, TEAM, REP, CUSTOMER_ID),
    "opportunity": (REGION, TEAM, REP, OPPORTUNITY_ID),
}
_LABEL_COLUMNS = (REGION, TEAM, REP, CUSTOMER_ID, OPPORTUNITY_ID)
_PERIOD_WORDS = ("year", "quarter", "month")


class MetricUnavailable(Exception):
    """A metric that cannot be computed here: ``needs`` says what is missing."""

    def __init__(self, metric: str, needs: str):
        super().__init__(f"metric {metric!r} is not available yet: needs {needs}")
        self.metric = metric
        self.needs = needs


# --- providers: metrics computed by other modules ------------------------------------------------

ChurnScores = Callable[[Tables, pd.Timestamp], pd.DataFrame]
PeriodFrame = Callable[[Tables, str, pd.Timestamp], pd.DataFrame]


@dataclass(frozen=True)
class ForecastFromAttainment:
    """A ``period_forecast`` provider that reads ``expected`` off an attainment provider.

    The feasibility simulation's ``expected`` is closed to date plus the mean of the simulated
    rest of the period (open deals won in the period, run rate, churn), which is the period
    forecast the ``forecast_gap`` metric wants. Inside an evaluation, metrics recognise this
    provider and reuse the attainment frame the context already holds for the same (period,
    as_of): the simulation runs once for ``attainment_probability``, ``forecast_gap`` and
    ``pipeline_gap_coverage`` together.
    """

    attainment: PeriodFrame

    def __call__(self, tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
        frame = self.attainment(tables, period, as_of)
        return frame[[LEVEL, KEY, "expected"]]


@dataclass
class Providers:
    """What other modules contribute, as plain callables (None = not wired yet).

    Attributes:
        churn_scores: ``(tables, as_of) -> customer_id, churn_probability, revenue_at_risk``
            (the ``score churn`` output of CONTRACTS.md; ``expected_revenue``, when present,
            enables ``churn_exposure_share``).
        attainment: ``(tables, period, as_of) -> level, key, target, p_attain, expected`` (the
            ``feasibility`` output of CONTRACTS.md; its extra columns ``closed_to_date``,
            ``expected_run_rate`` and ``pipeline_in_period`` enable ``pipeline_gap_coverage``).
        period_forecast: ``(tables, period, as_of) -> level, key, expected``: the period's
            expected revenue, closed to date plus the forecast of the rest of the period.
    """

    churn_scores: ChurnScores | None = None
    attainment: PeriodFrame | None = None
    period_forecast: PeriodFrame | None = None


def _lazy(module: str, name: str) -> Callable[..., Any] | None:
    """A callable that imports ``module.name`` when first called, or None when the module is
    not there (another engineer may still be writing it). Importing late keeps heavy
    dependencies (MLflow) out of evaluations whose rules do not need them."""
    if importlib.util.find_spec(module) is None:
        return None

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


def default_providers(tracking_uri: str | None = None) -> Providers:
    """The providers that exist in this installation, each found when its module exists:

    - churn scores: ``service.usecases.churn.score_churn(tables, as_of=...)`` (without a
      champion churn model its metrics are skipped as unavailable);
    - attainment: ``service.usecases.feasibility.run_feasibility(tables, period, as_of).frame``;
    - period forecast: the same simulation's ``expected`` (:class:`ForecastFromAttainment`),
      computed once per evaluation for both.

    Args:
        tracking_uri: the MLflow registry the champions are loaded from
            (``QUOTACAST_MLFLOW_TRACKING_URI``); it is configured when a provider is first
            called, so evaluations whose rules need no model never import MLflow.
    """
    configure = _lazy("engine.tracking", "configure") if tracking_uri else None

    def configured(call: Callable[..., Any] | None) -> Callable[..., Any] | None:
        """``call`` with the registry configured first (None stays None)."""
        if call is None:
            return None

        def run(*args: Any, **kwargs: Any) -> Any:
            if configure is not None:
                configure(tracking_uri)
            return call(*args, **kwargs)

        return run

    score_churn = configured(_lazy("service.usecases.churn", "score_churn"))
    run_feasibility = configured(_lazy("service.usecases.feasibility", "run_feasibility"))
    churn = None if score_churn is None else (lambda t, as_of: score_churn(t, as_of=as_of))
    attainment = None if run_feasibility is None else (
        lambda t, period, as_of: run_feasibility(t, period, as_of).frame)
    forecast = None if attainment is None else ForecastFromAttainment(attainment)
    return Providers(churn_scores=churn, attainment=attainment, period_forecast=forecast)


# --- the context a metric computes in ------------------------------------------------------------


@dataclass
class MetricContext:
    """Tables, providers and a cache shared by the metrics of one evaluation."""

    tables: Tables
    providers: Providers = field(default_factory=default_providers)
    cache: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key (two rules on one metric compute it once)."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


MetricFn = Callable[[MetricContext, pd.Timestamp, Mapping[str, Any]], pd.DataFrame]


@dataclass(frozen=True)
class MetricSpec:
    """One catalogue entry.

    Attributes:
        name: what rules write in ``metric``.
        scopes: the scopes it has rows for.
        unit: ratio, share, probability, count, amount, days.
        meaning: one sentence for the README.
        params: the parameters it takes, with their defaults.
        needs: the tables or modules it needs, in words.
        fn: the function.
    """

    name: str
    scopes: tuple[str, ...]
    unit: str
    meaning: str
    params: dict[str, Any]
    needs: str
    fn: MetricFn


METRICS: dict[str, MetricSpec] = {}


def _metric(name: str, scopes: tuple[str, ...], unit: str, meaning: str, needs: str,
            params: dict[str, Any] | None = None) -> Callable[[MetricFn], MetricFn]:
    def register(fn: MetricFn) -> MetricFn:
        METRICS[name] = MetricSpec(name, scopes, unit, meaning, dict(params or {}), needs, fn)
        return fn

    return register


def compute_metric(name: str, context: MetricContext, as_of: pd.Timestamp,
                   params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The metric's frame at ``as_of`` (defaults filled in for missing params; cached)."""
    spec = METRICS[name]
    merged = {**spec.params, **(params or {})}
    key = ("metric", name, pd.Timestamp(as_of), tuple(sorted(merged.items())))
    frame: pd.DataFrame = context.cached(key, lambda: spec.fn(context, pd.Timestamp(as_of),
                                                               merged))
    return frame


def catalogue() -> pd.DataFrame:
    """The catalogue as a table: name, scopes, unit, meaning, params, needs."""
    return pd.DataFrame([
        {"metric": s.name, "scopes": ", ".join(s.scopes), "unit": s.unit, "meaning": s.meaning,
         "params": ", ".join(f"{k}={v}" for k, v in s.params.items()), "needs": s.needs}
        for s in METRICS.values()
    ])


# --- shared helpers ------------------------------------------------------------------------------


def resolve_period(spec: str, as_of: pd.Timestamp) -> str:
    """``year``/``quarter``/``month`` -> the period containing ``as_of``; else ``spec`` itself."""
    as_of = pd.Timestamp(as_of)
    word = str(spec).strip().lower()
    if word == "year":
        return f"{as_of.year}"
    if word == "quarter":
        return f"{as_of.year}Q{as_of.quarter}"
    if word == "month":
        return f"{as_of.year}-{as_of.month:02d}"
    period_bounds(spec)  # raises a clear ValueError on a bad period
    return str(spec).strip()


def _money(value: float) -> str:
    """230000 -> 230k, 1234567 -> 1.23M (explanations are read by people)."""
    if value is None or pd.isna(value):
        return "n/a"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _require(tables: Tables, metric: str, *names: str) -> None:
    missing = [n for n in names if not tables.has(n)]
    if missing:
        raise MetricUnavailable(metric, f"the {', '.join(missing)} table(s) in the data")


def _node_labels(tables: Tables, level: str, keys: pd.Series) -> pd.DataFrame:
    """``region, team, rep`` of each node key at ``level`` (ancestors from the org table)."""
    out = pd.DataFrame(index=keys.index, columns=list(SCOPE_LABELS[level]), dtype=object)
    if level == LEVEL_COMPANY:
        return out
    hierarchy = rep_hierarchy(tables)
    out[level] = keys.astype(object)
    if level == LEVEL_TEAM:
        region_of_team = hierarchy.drop_duplicates(TEAM).set_index(TEAM)[REGION]
        out[REGION] = keys.map(region_of_team)
    elif level == LEVEL_REP:
        by_rep = hierarchy.drop_duplicates(REP).set_index(REP)
        out[TEAM] = keys.map(by_rep[TEAM])
        out[REGION] = keys.map(by_rep[REGION])
    return out


def _frame(scope: str, labels: pd.DataFrame, value: pd.Series, explanation: pd.Series,
           details: Mapping[str, pd.Series | Any]) -> pd.DataFrame:
    """The standard metric frame: scope, label columns, value, explanation, details."""
    frame = pd.DataFrame({SCOPE_COLUMN: scope}, index=value.index)
    for column in _LABEL_COLUMNS:
        frame[column] = labels[column] if column in labels.columns else np.nan
    frame[VALUE] = value.astype(float)
    frame[EXPLANATION] = explanation.astype(object)
    for name, values in details.items():
        frame[name] = values
    return frame.reset_index(drop=True)


def _stack(parts: list[pd.DataFrame]) -> pd.DataFrame:
    columns = [SCOPE_COLUMN, *_LABEL_COLUMNS, VALUE, EXPLANATION]
    kept = [p for p in parts if not p.empty]
    if not kept:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.concat(kept, ignore_index=True)


def _level_key(frame: pd.DataFrame, level: str) -> pd.Series:
    """The node key of each row at a hierarchy level (``all`` for company)."""
    if level == LEVEL_COMPANY:
        return pd.Series(COMPANY_KEY, index=frame.index, dtype=object)
    return frame[level].astype(object)


def _revenue_events(context: MetricContext, as_of: pd.Timestamp) -> pd.DataFrame:
    from features.hierarchy import attribute_revenue

    return context.cached(("revenue", as_of),
                          lambda: attribute_revenue(context.tables, as_of=as_of, columns=[]))


_PERIOD_PARAM = {"period": "quarter"}

# --- pace against plan (computable now) ----------------------------------------------------------


def _months(period: str) -> list[str]:
    """The months of a year or quarter period (``2026Q3`` -> 2026-07, 2026-08, 2026-09)."""
    start, end = period_bounds(period)
    months = pd.period_range(start, end - pd.Timedelta(days=1), freq="M")
    return [] if len(months) < 2 else [str(m) for m in months]


def _planned_share(targets: pd.DataFrame, level: str, keys: pd.Series, period: str,
                   as_of: pd.Timestamp, elapsed: float) -> tuple[pd.Series, pd.Series]:
    """Per key: the share of the period's target planned by ``as_of``, and how it was phased.

    Targets of a quarter or year are rarely flat: when every month of the period has a target
    for the node, the plan to date follows them (the months gone by in full, the current one
    pro rata), so a summer dip or a December push is not mistaken for falling behind.
    Otherwise the plan is linear in time.
    """
    share = pd.Series(elapsed, index=keys.index, dtype=float)
    phasing = pd.Series("linear", index=keys.index, dtype=object)
    months = _months(period)
    if not months:
        return share, phasing
    mine = targets[(targets[LEVEL] == level) & targets[PERIOD].astype(str).isin(months)]
    grid = mine.pivot_table(index=KEY, columns=PERIOD, values=AMOUNT, aggfunc="sum")
    grid = grid.reindex(columns=months)
    complete = grid.notna().all(axis=1) & (grid.sum(axis=1) > 0)
    if not complete.any():
        return share, phasing
    grid = grid[complete]
    done = []
    for month in months:
        first, after = period_bounds(month)
        done.append(float(np.clip((as_of - first) / (after - first), 0.0, 1.0)))
    phased = (grid * np.array(done)).sum(axis=1) / grid.sum(axis=1)
    found = keys.map(phased)
    share = found.where(found.notna(), share).astype(float)
    phasing = phasing.where(found.isna(), "monthly targets")
    return share, phasing


def _pace_level(context: MetricContext, level: str, targets: pd.DataFrame,
                revenue: pd.DataFrame, period: str, as_of: pd.Timestamp, elapsed: float
                ) -> pd.DataFrame:
    goals = targets[(targets[PERIOD].astype(str) == period) & (targets[LEVEL] == level)]
    keys = goals[KEY].astype(object).reset_index(drop=True)
    target = goals[AMOUNT].astype(float).reset_index(drop=True)
    done = revenue[AMOUNT].groupby(_level_key(revenue, level), observed=True).sum()
    to_date = keys.map(done).astype(float).fillna(0.0)
    share, phasing = _planned_share(targets, level, keys, period, as_of, elapsed)
    expected = target * share
    value = (to_date / expected.where(expected > 0)).astype(float)
    words = [
        (f"revenue to date {_money(r)} is {v:.0%} of plan: {_money(t)} target x {s:.0%} of "
         + (f"{period} elapsed" if how == "linear" else f"{period} planned by now ({how})")
         + f" = {_money(e)} expected by now") if pd.notna(v) else "no plan to date"
        for r, v, t, s, how, e in zip(to_date, value, target, share, phasing, expected,
                                      strict=True)
    ]
    labels = _node_labels(context.tables, level, keys)
    return _frame(level, labels, value, pd.Series(words), {
        "period": period, "revenue_to_date": to_date, "target": target,
        "expected_to_date": expected, "elapsed_share": elapsed, "planned_share": share,
        "phasing": phasing})


@_metric("pace_against_plan", NODE_SCOPES, "ratio",
         "Revenue to date in the period / the plan to date (target x the share of the period "
         "planned by now: from the monthly targets when every month of the period has one, "
         "else the elapsed share of time); 1 = on plan.",
         "orders, targets (and org for regions, teams, reps)",
         {**_PERIOD_PARAM, "min_elapsed_share": 0.1})
def pace_against_plan(context: MetricContext, as_of: pd.Timestamp,
                      params: Mapping[str, Any]) -> pd.DataFrame:
    """Revenue to date against the plan to date, per node with a target."""
    tables = context.tables
    _require(tables, "pace_against_plan", TARGETS)
    period = resolve_period(params["period"], as_of)
    start, end = period_bounds(period)
    elapsed = float(np.clip((as_of - start) / (end - start), 0.0, 1.0))
    if elapsed < float(params["min_elapsed_share"]):
        return _stack([])  # too early in the period for a pace to mean anything
    events = _revenue_events(context, as_of)
    revenue = events[(events[DS] >= start) & (events[DS] < end)]
    return _stack([
        _pace_level(context, level, tables[TARGETS], revenue, period, as_of, elapsed)
        for level in NODE_SCOPES
    ])


# --- funnel metrics (features/funnel.py) ---------------------------------------------------------


def _funnel(context: MetricContext, as_of: pd.Timestamp, params: Mapping[str, Any]
            ) -> pd.DataFrame:
    from features.funnel import funnel_node_metrics

    period = resolve_period(params.get("period", "quarter"), as_of)
    windows = (int(params.get("stall_days", 30)), int(params.get("trailing_days", 180)),
               int(params.get("baseline_days", 365)))
    key = ("funnel", as_of, period, windows)
    return context.cached(key, lambda: funnel_node_metrics(
        context.tables, as_of, period, stall_days=windows[0], trailing_days=windows[1],
        baseline_days=windows[2]))


def _funnel_metric(context: MetricContext, nodes: pd.DataFrame, value: pd.Series,
                   words: Callable[[pd.Series], str], details: list[str]) -> pd.DataFrame:
    parts = []
    for level in NODE_SCOPES:
        rows = nodes[nodes[LEVEL] == level]
        if rows.empty:
            continue
        keys = rows[KEY].astype(object)
        text = rows.apply(words, axis=1) if len(rows) else pd.Series(dtype=object)
        labels = _node_labels(context.tables, level, keys)
        parts.append(_frame(level, labels, value.loc[rows.index], text,
                            {d: rows[d] for d in details}))
    return _stack(parts)


@_metric("pipeline_coverage", NODE_SCOPES, "ratio",
         "Open pipeline expected to close in the period / target still to reach (3 = 3x).",
         "opportunities, orders, targets", dict(_PERIOD_PARAM))
def pipeline_coverage(context: MetricContext, as_of: pd.Timestamp,
                      params: Mapping[str, Any]) -> pd.DataFrame:
    """Coverage per node that still has target to reach."""
    _require(context.tables, "pipeline_coverage", OPPORTUNITIES, TARGETS)
    nodes = _funnel(context, as_of, params)
    nodes = nodes[nodes["coverage"].notna()]
    return _funnel_metric(
        context, nodes, nodes["coverage"],
        lambda r: f"coverage {r['coverage']:.1f}x: open pipeline {_money(r['pipeline_in_period'])}"
                  f" expected in {r[PERIOD]} against {_money(r['remaining_target'])} "
                  "remaining target",
        [PERIOD, "pipeline_in_period", "remaining_target", "target", "revenue_to_date"])


_STAGE_HISTORY_NEEDED = "the stage_history table in the data"


@_metric("conversion_drop", NODE_SCOPES, "share",
         "Largest fall of a stage's conversion, trailing window against the window before "
         "(0.15 = 15 points lower).", "opportunities, stage_history",
         {"trailing_days": 180, "baseline_days": 365})
def conversion_drop(context: MetricContext, as_of: pd.Timestamp,
                    params: Mapping[str, Any]) -> pd.DataFrame:
    """Per node: the stage whose conversion fell most against its trailing rate."""
    _require(context.tables, "conversion_drop", OPPORTUNITIES, STAGE_HISTORY)
    nodes = _funnel(context, as_of, params)
    nodes = nodes[nodes["conversion_drop"].notna()]
    return _funnel_metric(
        context, nodes, nodes["conversion_drop"],
        lambda r: f"conversion out of stage {r['conversion_drop_stage']} fell "
                  f"{r['conversion_drop'] * 100:.0f} points (last {params['trailing_days']}d "
                  f"against the {params['baseline_days']}d before); overall forward conversion "
                  f"{_pct(r['conversion'])} vs {_pct(r['conversion_baseline'])}",
        ["conversion_drop_stage", "conversion", "conversion_baseline"])


def _pct(value: float) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.0%}"


@_metric("stalled_deals", NODE_SCOPES, "count",
         "Open deals with no stage change for stall_days or more.",
         "opportunities, stage_history", {"stall_days": 30})
def stalled_deals(context: MetricContext, as_of: pd.Timestamp,
                  params: Mapping[str, Any]) -> pd.DataFrame:
    """Stalled open deals per node."""
    _require(context.tables, "stalled_deals", OPPORTUNITIES, STAGE_HISTORY)
    nodes = _funnel(context, as_of, params)
    nodes = nodes[nodes["stalled_deals"].notna()]
    return _funnel_metric(
        context, nodes, nodes["stalled_deals"],
        lambda r: f"{r['stalled_deals']:.0f} of {r['open_deals']:.0f} open deals "
                  f"({_money(r['stalled_pipeline'])}) without a stage change for "
                  f"{params['stall_days']}+ days",
        ["stalled_pipeline", "open_deals", "open_pipeline"])


def _slip_nodes(context: MetricContext, as_of: pd.Timestamp, params: Mapping[str, Any],
                metric: str) -> pd.DataFrame:
    """Funnel nodes with their slipped deals; unavailable without recorded close dates."""
    tables = context.tables
    _require(tables, metric, OPPORTUNITIES, STAGE_HISTORY)
    if CLOSE_DATE not in tables[STAGE_HISTORY].columns:
        raise MetricUnavailable(metric, "a close_date column in stage_history")
    nodes = _funnel(context, as_of, params)
    return nodes[nodes["slipped_deals"].notna()]


@_metric("slipped_deals", NODE_SCOPES, "count",
         "Open deals whose expected close date was pushed later at least once.",
         "opportunities, stage_history with a close_date column")
def slipped_deals(context: MetricContext, as_of: pd.Timestamp,
                  params: Mapping[str, Any]) -> pd.DataFrame:
    """Slipped open deals per node."""
    nodes = _slip_nodes(context, as_of, params, "slipped_deals")
    return _funnel_metric(
        context, nodes, nodes["slipped_deals"],
        lambda r: f"{r['slipped_deals']:.0f} of {r['open_deals']:.0f} open deals had their "
                  "close date pushed out",
        ["open_deals", "open_pipeline"])


@_metric("slipped_share", NODE_SCOPES, "ratio",
         "Share of a node's open deals whose expected close date was pushed later at least "
         "once (0.3 = 30%); NaN for nodes with fewer than min_open_deals open deals.",
         "opportunities, stage_history with a close_date column", {"min_open_deals": 10})
def slipped_share(context: MetricContext, as_of: pd.Timestamp,
                  params: Mapping[str, Any]) -> pd.DataFrame:
    """Slipped share of the open deals per node (a team that plans optimistically shows it)."""
    nodes = _slip_nodes(context, as_of, params, "slipped_share")
    nodes = nodes[nodes["open_deals"] >= int(params.get("min_open_deals", 10))]
    return _funnel_metric(
        context, nodes, nodes["slipped_deals"] / nodes["open_deals"],
        lambda r: f"{r['slipped_deals']:.0f} of {r['open_deals']:.0f} open deals "
                  f"({r['slipped_deals'] / r['open_deals']:.0%}) had their close date pushed "
                  "out",
        ["slipped_deals", "open_deals", "open_pipeline"])


@_metric("deal_days_in_stage", ("opportunity",), "days",
         "Days an open deal has spent in its current stage; NaN for deals smaller than "
         "min_amount (too small to alert on one by one).", "opportunities, stage_history",
         {"min_amount": 0})
def deal_days_in_stage(context: MetricContext, as_of: pd.Timestamp,
                       params: Mapping[str, Any]) -> pd.DataFrame:
    """Per open deal: days since it entered its stage."""
    from features.funnel import F_DAYS_IN_STAGE, F_STAGE, opportunity_features

    tables = context.tables
    _require(tables, "deal_days_in_stage", OPPORTUNITIES, STAGE_HISTORY)
    deals = opportunity_features(tables, as_of)
    deals = deals[deals[F_DAYS_IN_STAGE].notna()].reset_index(drop=True)
    nodes = opportunity_nodes(tables).set_index(OPPORTUNITY_ID)
    ids = deals[OPPORTUNITY_ID].astype(object)
    labels = pd.DataFrame({c: ids.map(nodes[c]) for c in (REGION, TEAM, REP)})
    labels[OPPORTUNITY_ID] = ids
    words = [f"deal {i} ({_money(a)}, owner {o}) in stage {s} for {d:.0f} days"
             for i, a, o, s, d in zip(ids, deals[AMOUNT], deals[OWNER], deals[F_STAGE],
                                      deals[F_DAYS_IN_STAGE], strict=True)]
    days = deals[F_DAYS_IN_STAGE].where(deals[AMOUNT] >= float(params["min_amount"]))
    return _frame("opportunity", labels, days, pd.Series(words, dtype=object),
                  {"stage": deals[F_STAGE], AMOUNT: deals[AMOUNT],
                   CLOSE_DATE: deals[CLOSE_DATE].dt.date.astype(str)})


# --- customer metrics computed here: complaints and receivables ----------------------------------


def _customer_nodes(context: MetricContext) -> pd.DataFrame:
    """Per customer: ``customer_id, rep, team, region`` (of its account manager)."""
    return context.cached(("customer_nodes",), lambda: customer_nodes(context.tables)
                          .set_index(CUSTOMER_ID))


def _customer_rollup(context: MetricContext, sums: pd.DataFrame, scopes: tuple[str, ...],
                     finish: Callable[[pd.DataFrame], tuple[pd.Series, pd.Series]],
                     ) -> pd.DataFrame:
    """Sum per-customer columns up to each scope and turn each row into (value, explanation).

    Args:
        sums: per customer (index ``customer_id``) additive columns.
        finish: ``rows -> (value, explanation)`` on the summed rows.
    """
    nodes = _customer_nodes(context).reindex(sums.index)
    parts = []
    for scope in scopes:
        if scope == "customer":
            rows = sums.copy()
            labels = nodes.assign(**{CUSTOMER_ID: sums.index.to_series()})
        else:
            key = _level_key(nodes.reset_index(), scope).to_numpy()
            rows = sums.groupby(key).sum()
            labels = _node_labels(context.tables, scope, rows.index.to_series())
        value, words = finish(rows)
        parts.append(_frame(scope, labels.reset_index(drop=True), value.reset_index(drop=True),
                            words.reset_index(drop=True),
                            {c: rows[c].reset_index(drop=True) for c in rows.columns}))
    return _stack(parts)


TOP_CUSTOMERS = "top_customers"


def _with_top_customers(context: MetricContext, frame: pd.DataFrame, weight: pd.Series,
                        describe: Callable[[str], str], n: int = 3) -> pd.DataFrame:
    """Name the ``n`` customers that weigh most under each node row, in its explanation.

    A rollup (an account manager, a team, a region) is explainable when it says which
    customers make it up: ``... ; most: C12 40k overdue (75 days), C7 ...``. Customer rows
    are left alone. The names are also in the detail column ``top_customers``.

    Args:
        weight: per customer (index ``customer_id``) what ranks them; only positive weights
            are named.
        describe: ``customer_id -> short text``.
    """
    frame = frame.copy()
    frame[TOP_CUSTOMERS] = ""
    ranked = weight[weight > 0].sort_values(ascending=False, kind="stable")
    if frame.empty or ranked.empty:
        return frame
    where = _customer_nodes(context).reindex(ranked.index).reset_index()
    where[LEVEL_COMPANY] = COMPANY_KEY
    named: dict[tuple[str, str], str] = {}
    for scope in NODE_SCOPES:
        top = where.groupby(scope, sort=False, observed=True).head(n)
        for key, ids in top.groupby(scope, sort=False, observed=True)[CUSTOMER_ID]:
            named[(scope, str(key))] = ", ".join(describe(str(c)) for c in ids)
    for i, row in frame.iterrows():  # one row per node (tens), not per customer
        scope = str(row[SCOPE_COLUMN])
        if scope not in NODE_SCOPES:
            continue
        key = COMPANY_KEY if scope == LEVEL_COMPANY else str(row[scope])
        text = named.get((scope, key), "")
        if text:
            frame.at[i, TOP_CUSTOMERS] = text
            frame.at[i, EXPLANATION] = f"{row[EXPLANATION]}; most: {text}"
    return frame


def _yearly_revenue(context: MetricContext, as_of: pd.Timestamp) -> pd.Series:
    """Per customer: revenue of the 365 days before ``as_of`` (what makes an account matter)."""
    def compute() -> pd.Series:
        events = _revenue_events(context, as_of)
        recent = events[events[DS] >= as_of - pd.Timedelta(days=365)]
        return recent[AMOUNT].groupby(recent[CUSTOMER_ID].astype(object)).sum()

    series: pd.Series = context.cached(("yearly_revenue", as_of), compute)
    return series


_CUSTOMER_SCOPES = ("company", LEVEL_REGION, LEVEL_TEAM, LEVEL_REP, "customer")


@_metric("complaint_spike", _CUSTOMER_SCOPES, "ratio",
         "Complaints in the last window_days / the usual number per window_days over the "
         "baseline_days before (at least min_rate); NaN below min_complaints. Only customers "
         "with at least min_revenue of revenue in the last 365 days count (0 = all).",
         "interactions (kind = complaint)",
         {"window_days": 30, "baseline_days": 180, "min_complaints": 2, "min_rate": 0.5,
          "min_revenue": 0})
def complaint_spike(context: MetricContext, as_of: pd.Timestamp,
                    params: Mapping[str, Any]) -> pd.DataFrame:
    """Recent complaints against their trailing rate, per customer and per account manager."""
    _require(context.tables, "complaint_spike", INTERACTIONS)
    window, baseline = int(params["window_days"]), int(params["baseline_days"])
    found = context.tables[INTERACTIONS]
    complaints = found[found[KIND].astype(str).str.strip().str.lower() == KIND_COMPLAINT]
    recent_from = as_of - pd.Timedelta(days=window)
    baseline_from = recent_from - pd.Timedelta(days=baseline)
    when = complaints[OCCURRED_AT]
    counts = pd.DataFrame({
        "complaints": (when >= recent_from) & (when < as_of),
        "baseline_complaints": (when >= baseline_from) & (when < recent_from),
    }).astype(float).groupby(complaints[CUSTOMER_ID].to_numpy()).sum()
    counts = counts[counts.sum(axis=1) > 0].rename_axis(CUSTOMER_ID)
    floor = float(params["min_revenue"])
    if floor > 0:
        revenue = _yearly_revenue(context, as_of).reindex(counts.index).fillna(0.0)
        counts = counts[revenue >= floor].assign(revenue_last_year=revenue[revenue >= floor])

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        usual = rows["baseline_complaints"] * window / baseline
        value = rows["complaints"] / usual.clip(lower=float(params["min_rate"]))
        value = value.where(rows["complaints"] >= float(params["min_complaints"]))
        words = [f"{c:.0f} complaints in the last {window} days against {u:.2g} per {window} "
                 f"days over the {baseline} days before" for c, u in
                 zip(rows["complaints"], usual, strict=True)]
        if "revenue_last_year" in rows.columns:
            words = [f"{w} (revenue {_money(r)} in the last 365 days)"
                     for w, r in zip(words, rows["revenue_last_year"], strict=True)]
        return value, pd.Series(words, index=rows.index, dtype=object)

    frame = _customer_rollup(context, counts, _CUSTOMER_SCOPES, finish)
    recent = counts["complaints"]
    return _with_top_customers(context, frame, recent,
                               lambda c: f"{c} ({recent[c]:.0f} complaints)")


def _usual_lateness(invoices: pd.DataFrame, paid_at: pd.Series, as_of: pd.Timestamp
                    ) -> pd.Series:
    """Per customer: the 90th percentile of days late of its invoices paid in the last 365
    days before ``as_of`` (0 when on time or no history)."""
    paid = paid_at.notna() & (paid_at < as_of) & (paid_at >= as_of - pd.Timedelta(days=365))
    late = ((paid_at[paid] - invoices.loc[paid, DUE_DATE]).dt.days.astype(float)
            .clip(lower=0.0))
    return late.groupby(invoices.loc[paid, CUSTOMER_ID].to_numpy()).quantile(0.9)


def _open_invoices(context: MetricContext, as_of: pd.Timestamp, params: Mapping[str, Any]
                   ) -> pd.DataFrame:
    """Invoices outstanding at ``as_of`` with ``days_overdue``, ``allowed`` (days of lateness
    that count as normal) and ``late``; those past ``max_days_overdue`` are left out."""
    invoices = context.tables[RECEIVABLES]
    paid_at = invoices[PAID_AT] if PAID_AT in invoices.columns else pd.Series(
        pd.NaT, index=invoices.index)
    # Outstanding at T: issued before T and not paid before T (a later payment was not known).
    open_ = (invoices[ISSUED_AT] < as_of) & (paid_at.isna() | (paid_at >= as_of))
    allowed = pd.Series(float(params["grace_days"]), index=invoices.index)
    if params["usual_lateness"]:
        usual = _usual_lateness(invoices, paid_at, as_of)
        allowed = allowed + invoices[CUSTOMER_ID].map(usual).astype(float).fillna(0.0)
    days = (as_of - invoices[DUE_DATE]).dt.days.astype(float)
    out = invoices[open_].assign(days_overdue=days[open_], allowed=allowed[open_])
    cap = float(params["max_days_overdue"])
    if cap > 0:  # longer overdue: written off or with collections, no longer news
        out = out[out["days_overdue"] <= cap]
    return out.assign(late=out["days_overdue"] > out["allowed"])


@_metric("overdue_receivables_ratio", _CUSTOMER_SCOPES, "share",
         "Unpaid amount past its due date plus grace_days (plus, with usual_lateness, the "
         "customer's usual lateness: the 90th percentile of its days late over the last 365 "
         "days) / all unpaid receivables at as_of; NaN when the overdue amount is below "
         "min_overdue; invoices more than max_days_overdue past due are left out (0 = none).",
         "receivables", {"grace_days": 0, "usual_lateness": False, "min_overdue": 0,
                         "max_days_overdue": 0})
def overdue_receivables_ratio(context: MetricContext, as_of: pd.Timestamp,
                              params: Mapping[str, Any]) -> pd.DataFrame:
    """Overdue share of outstanding receivables, per customer, account manager and region."""
    _require(context.tables, "overdue_receivables_ratio", RECEIVABLES)
    invoices = _open_invoices(context, as_of, params)
    late = invoices["late"]
    owner = invoices[CUSTOMER_ID].to_numpy()
    amount = invoices[AMOUNT].astype(float)
    sums = pd.DataFrame({
        "outstanding": amount,
        "overdue": amount.where(late, 0.0),
        "overdue_invoices": late.astype(float),
    }).groupby(owner).sum().rename_axis(CUSTOMER_ID)
    oldest = invoices["days_overdue"].where(late).groupby(owner).max()
    allowed = invoices["allowed"].groupby(owner).max()
    floor = float(params["min_overdue"])

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        share = rows["overdue"] / rows["outstanding"].where(rows["outstanding"] > 0)
        words = [f"overdue {_money(o)} of {_money(t)} outstanding ({_pct(v)}), {n:.0f} invoices "
                 "past due" for o, t, v, n in zip(rows["overdue"], rows["outstanding"], share,
                                                  rows["overdue_invoices"], strict=True)]
        return share.where(rows["overdue"] >= floor), pd.Series(words, index=rows.index,
                                                                 dtype=object)

    frame = _customer_rollup(context, sums, _CUSTOMER_SCOPES, finish)
    is_customer = frame[SCOPE_COLUMN] == "customer"
    customer = frame[CUSTOMER_ID]
    frame["oldest_days_overdue"] = np.where(is_customer, customer.map(oldest).astype(float),
                                            np.nan)
    frame["usual_days_late"] = np.where(is_customer, customer.map(allowed).astype(float)
                                        - float(params["grace_days"]), np.nan)
    if params["usual_lateness"]:
        said = is_customer & frame["oldest_days_overdue"].notna()
        frame.loc[said, EXPLANATION] = [
            f"{w}, oldest {d:.0f} days past due; usually pays {u:.0f} days late"
            for w, d, u in zip(frame.loc[said, EXPLANATION], frame.loc[said, "oldest_days_overdue"],
                               frame.loc[said, "usual_days_late"], strict=True)]
    overdue = sums["overdue"]
    return _with_top_customers(
        context, frame, overdue,
        lambda c: f"{c} {_money(overdue[c])}" + (
            f" ({oldest[c]:.0f} days)" if pd.notna(oldest.get(c)) else ""))


# --- metrics from providers (churn scoring, feasibility, forecaster) -----------------------------

_CHURN_NEEDS = ("the churn scoring pipeline: service/usecases/churn.py score_churn(tables, "
                "as_of=...) returning customer_id, churn_probability, revenue_at_risk")


def _frame_or_reason(compute: Callable[[], pd.DataFrame], what: str) -> pd.DataFrame | str:
    """A provider's frame, or why it cannot give one on this data (a string, cached as such).

    ``LookupError``: no model trained yet (``tracking.ChampionMissingError``); ``ValueError``:
    the data cannot support it (too little history, no orders yet), the pipelines' own words.
    """
    try:
        return compute()
    except (LookupError, ValueError) as exc:
        return f"{what}: {exc}"


def _scores_or_reason(provider: ChurnScores, tables: Tables, as_of: pd.Timestamp
                      ) -> pd.DataFrame | str:
    return _frame_or_reason(lambda: provider(tables, as_of), "a churn model")


def _churn(context: MetricContext, as_of: pd.Timestamp, metric: str) -> pd.DataFrame:
    provider = context.providers.churn_scores
    if provider is None:
        raise MetricUnavailable(metric, _CHURN_NEEDS)
    # Cached even when it failed, so three churn rules ask the model registry once.
    scores = context.cached(("churn", as_of),
                            lambda: _scores_or_reason(provider, context.tables, as_of))
    if isinstance(scores, str):
        raise MetricUnavailable(metric, scores)
    return scores.drop_duplicates(CUSTOMER_ID).set_index(CUSTOMER_ID)


def _at_risk(scores: pd.DataFrame) -> Callable[[str], str]:
    """``customer_id -> "C12 250k at 96%"``: a customer named by its revenue at risk."""
    risk = scores["revenue_at_risk"].astype(float).to_dict()
    chance = scores["churn_probability"].astype(float).to_dict()

    def describe(customer: str) -> str:
        return f"{customer} {_money(risk[customer])} at {chance[customer]:.0%}"

    return describe


@_metric("churn_exposure", NODE_SCOPES, "amount",
         "Revenue at risk (sum of the churn scores' revenue_at_risk) of the customers of each "
         "account manager (rep), team, region.",
         "churn scores (service/usecases/churn.py; a champion churn model)",
         {"min_probability": 0.0})
def churn_exposure(context: MetricContext, as_of: pd.Timestamp,
                   params: Mapping[str, Any]) -> pd.DataFrame:
    """Revenue at risk per account manager and region."""
    scores = _churn(context, as_of, "churn_exposure")
    at_risk = scores["churn_probability"] >= float(params["min_probability"])
    sums = pd.DataFrame({"revenue_at_risk": scores["revenue_at_risk"].where(at_risk, 0.0),
                         "customers_at_risk": at_risk.astype(float)})

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        words = [f"revenue at risk {_money(r)} across {n:.0f} customers"
                 for r, n in zip(rows["revenue_at_risk"], rows["customers_at_risk"], strict=True)]
        return rows["revenue_at_risk"], pd.Series(words, index=rows.index, dtype=object)

    frame = _customer_rollup(context, sums, NODE_SCOPES, finish)
    return _with_top_customers(context, frame, sums["revenue_at_risk"], _at_risk(scores))


@_metric("churn_exposure_share", NODE_SCOPES, "share",
         "Revenue at risk of churn / expected revenue of the node's scored customers over the "
         "same horizon: the share of the book at risk (size-free, unlike churn_exposure).",
         "churn scores with expected_revenue (service/usecases/churn.py; a champion churn "
         "model)", {"min_probability": 0.0})
def churn_exposure_share(context: MetricContext, as_of: pd.Timestamp,
                         params: Mapping[str, Any]) -> pd.DataFrame:
    """Share of each account manager's, team's, region's expected revenue at risk of churn."""
    scores = _churn(context, as_of, "churn_exposure_share")
    if "expected_revenue" not in scores.columns:
        raise MetricUnavailable("churn_exposure_share",
                                "churn scores with an expected_revenue column")
    at_risk = scores["churn_probability"] >= float(params["min_probability"])
    sums = pd.DataFrame({"revenue_at_risk": scores["revenue_at_risk"].where(at_risk, 0.0),
                         "expected_revenue": scores["expected_revenue"].astype(float),
                         "customers": 1.0})

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        book = rows["expected_revenue"]
        value = rows["revenue_at_risk"] / book.where(book > 0)
        words = [f"revenue at risk {_money(r)} of {_money(b)} expected from {n:.0f} active "
                 f"customers ({_pct(v)})" for r, b, n, v in
                 zip(rows["revenue_at_risk"], book, rows["customers"], value, strict=True)]
        return value, pd.Series(words, index=rows.index, dtype=object)

    frame = _customer_rollup(context, sums, NODE_SCOPES, finish)
    return _with_top_customers(context, frame, sums["revenue_at_risk"], _at_risk(scores))


@_metric("high_risk_customers", NODE_SCOPES, "count",
         "Customers whose churn probability is at least min_probability and whose revenue at "
         "risk is at least min_revenue_at_risk, per node.",
         "churn scores (service/usecases/churn.py; a champion churn model)",
         {"min_probability": 0.5, "min_revenue_at_risk": 0})
def high_risk_customers(context: MetricContext, as_of: pd.Timestamp,
                        params: Mapping[str, Any]) -> pd.DataFrame:
    """Count of high-risk customers per account manager, team, region, company."""
    scores = _churn(context, as_of, "high_risk_customers")
    cut, floor = float(params["min_probability"]), float(params["min_revenue_at_risk"])
    risky = (scores["churn_probability"] >= cut) & (scores["revenue_at_risk"] >= floor)
    sums = pd.DataFrame({"high_risk_customers": risky.astype(float),
                         "revenue_at_risk": scores["revenue_at_risk"].where(risky, 0.0)})
    which = f"churn probability >= {cut:.0%}" + (
        f" and revenue at risk >= {_money(floor)}" if floor > 0 else "")

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        words = [f"{n:.0f} customers with {which} ({_money(r)} revenue at risk)"
                 for n, r in zip(rows["high_risk_customers"], rows["revenue_at_risk"],
                                 strict=True)]
        return rows["high_risk_customers"], pd.Series(words, index=rows.index, dtype=object)

    frame = _customer_rollup(context, sums, NODE_SCOPES, finish)
    return _with_top_customers(context, frame, sums["revenue_at_risk"], _at_risk(scores))


@_metric("churn_probability", ("customer",), "probability",
         "A customer's churn probability from the churn scores; NaN when its revenue at risk "
         "is below min_revenue_at_risk (an account too small to alert on by itself) or when "
         "its last revenue is more than max_days_silent days old (0 = no limit: such a "
         "customer is lost rather than at risk).",
         "churn scores (service/usecases/churn.py; a champion churn model)",
         {"min_revenue_at_risk": 0, "max_days_silent": 0})
def churn_probability(context: MetricContext, as_of: pd.Timestamp,
                      params: Mapping[str, Any]) -> pd.DataFrame:
    """Per customer: its churn probability (with the scores' reasons when they give them)."""
    scores = _churn(context, as_of, "churn_probability")
    sums = scores[["churn_probability", "revenue_at_risk"]].astype(float)
    sums["days_silent"] = (as_of - _last_revenue(context, as_of).reindex(sums.index)).dt.days
    reasons = scores["reasons"].astype(str) if "reasons" in scores.columns else None
    floor, silent = float(params["min_revenue_at_risk"]), float(params["max_days_silent"])

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        words = [f"churn probability {p:.0%}, revenue at risk {_money(r)}"
                 for p, r in zip(rows["churn_probability"], rows["revenue_at_risk"], strict=True)]
        if reasons is not None:
            words = [f"{w}: {why}" if why else w
                     for w, why in zip(words, reasons.reindex(rows.index).fillna(""),
                                       strict=True)]
        value = rows["churn_probability"].where(rows["revenue_at_risk"] >= floor)
        if silent > 0:
            value = value.where(rows["days_silent"] <= silent)
        return value, pd.Series(words, index=rows.index, dtype=object)

    return _customer_rollup(context, sums, ("customer",), finish)


def _last_revenue(context: MetricContext, as_of: pd.Timestamp) -> pd.Series:
    """Per customer: the date of its last revenue before ``as_of``."""
    def compute() -> pd.Series:
        events = _revenue_events(context, as_of)
        return events[DS].groupby(events[CUSTOMER_ID].astype(object)).max()

    series: pd.Series = context.cached(("last_revenue", as_of), compute)
    return series


def _period_frame(context: MetricContext, as_of: pd.Timestamp, params: Mapping[str, Any],
                  metric: str, name: str, needs: str) -> tuple[pd.DataFrame, str]:
    """A provider's frame for the rule's period, computed once per (provider, period, as_of).

    A forecast read off the attainment provider (:class:`ForecastFromAttainment`) shares the
    attainment frame's cache entry: one feasibility simulation serves every metric on it.
    """
    provider = getattr(context.providers, name)
    if provider is None:
        raise MetricUnavailable(metric, needs)
    # == rather than is: a bound method is a new object at each attribute access.
    if (isinstance(provider, ForecastFromAttainment)
            and provider.attainment == context.providers.attainment):
        name, provider = "attainment", provider.attainment
    period = resolve_period(params["period"], as_of)
    frame: pd.DataFrame | str = context.cached(
        (name, as_of, period),
        lambda: _frame_or_reason(lambda: provider(context.tables, period, as_of),
                                 f"the {name} of {period}"))
    if isinstance(frame, str):
        raise MetricUnavailable(metric, frame)
    return frame, period


def _period_provider(context: MetricContext, as_of: pd.Timestamp, params: Mapping[str, Any],
                     metric: str, name: str, needs: str) -> tuple[pd.DataFrame, str]:
    frame, period = _period_frame(context, as_of, params, metric, name, needs)
    return frame[frame[LEVEL].isin(NODE_SCOPES)], period


def _node_rows(context: MetricContext, frame: pd.DataFrame, value: pd.Series,
               words: pd.Series, details: list[str]) -> pd.DataFrame:
    parts = []
    for level in NODE_SCOPES:
        rows = frame[frame[LEVEL] == level]
        labels = _node_labels(context.tables, level, rows[KEY].astype(object))
        parts.append(_frame(level, labels, value.loc[rows.index], words.loc[rows.index],
                            {d: rows[d] for d in details if d in rows.columns}))
    return _stack(parts)


_CHILD = {LEVEL_COMPANY: LEVEL_REGION, LEVEL_REGION: LEVEL_TEAM,
          LEVEL_TEAM: LEVEL_REP}


def _parents(context: MetricContext, frame: pd.DataFrame) -> pd.Series:
    """The parent node key of each row (``all`` under the company; NaN for the company)."""
    parent = pd.Series([COMPANY_KEY if lv == LEVEL_REGION else None
                        for lv in frame[LEVEL]], index=frame.index, dtype=object)
    for level, above in ((LEVEL_TEAM, LEVEL_REGION), (LEVEL_REP, LEVEL_TEAM)):
        rows = frame.index[frame[LEVEL] == level]
        if len(rows):
            labels = _node_labels(context.tables, level, frame.loc[rows, KEY].astype(object))
            parent.loc[rows] = labels[above].to_numpy()
    return parent


def _shortfalls(context: MetricContext, frame: pd.DataFrame, n: int = 3) -> pd.Series:
    """Per node row: its children furthest short of target, in words (empty when none is).

    ``region South 1.3M short (P 2%)``: what a company alert stands for when hierarchy
    inhibition keeps its regions quiet.
    """
    short = (frame["target"] - frame["expected"]).astype(float)
    chance = frame["p_attain"] if "p_attain" in frame.columns else None
    behind = frame.assign(_short=short, _parent=_parents(context, frame))[short > 0]
    behind = behind.sort_values("_short", ascending=False, kind="stable")
    named: dict[tuple[str, str], list[str]] = {}
    for i, level, key, parent, amount in zip(behind.index, behind[LEVEL], behind[KEY],
                                             behind["_parent"], behind["_short"],
                                             strict=True):
        mine = named.setdefault((str(level), str(parent)), [])
        if len(mine) < n:
            odds = f" (P {_pct(float(chance.loc[i]))})" if chance is not None else ""
            mine.append(f"{level} {key} {_money(amount)} short{odds}")
    return pd.Series([", ".join(named.get((_CHILD.get(str(level), ""), str(key)), []))
                      for level, key in zip(frame[LEVEL], frame[KEY], strict=True)],
                     index=frame.index, dtype=object)


def _with_shortfalls(words: pd.Series, shortfalls: pd.Series) -> pd.Series:
    return pd.Series([f"{w}; furthest behind: {s}" if s else w
                      for w, s in zip(words, shortfalls, strict=True)], index=words.index,
                     dtype=object)


_FEASIBILITY_NEEDS = ("the feasibility simulation (service/usecases/feasibility.py "
                      "run_feasibility): a provider (tables, period, as_of) -> level, key, "
                      "target, p_attain, expected")


@_metric("attainment_probability", NODE_SCOPES, "probability",
         "Probability that the period's revenue reaches the node's target (feasibility).",
         "feasibility simulation (service/usecases/feasibility.py)", dict(_PERIOD_PARAM))
def attainment_probability(context: MetricContext, as_of: pd.Timestamp,
                           params: Mapping[str, Any]) -> pd.DataFrame:
    """P(attain) per node with a target, from the feasibility simulation."""
    frame, period = _period_provider(context, as_of, params, "attainment_probability",
                                     "attainment", _FEASIBILITY_NEEDS)
    # A simulation without an expectation (NaN draws) has no probability either.
    value = frame["p_attain"].where(frame["expected"].notna())
    words = pd.Series([
        f"P(attain) {_pct(p)}: expected {_money(e)} against {_money(t)} target in {period} "
        f"(gap {_money(t - e)})"
        for p, e, t in zip(value, frame["expected"], frame["target"], strict=True)
    ], index=frame.index, dtype=object)
    words = _with_shortfalls(words, _shortfalls(context, frame))
    return _node_rows(context, frame.assign(period=period), value, words,
                      ["period", "target", "expected", "p10", "p50", "p90", "gap"])


_FORECAST_NEEDS = ("the revenue forecaster: a provider (tables, period, as_of) -> level, key, "
                   "expected (closed to date plus the forecast of the rest of the period)")


@_metric("forecast_gap", NODE_SCOPES, "share",
         "(target - expected period revenue) / target: the share of the target the forecast "
         "does not reach (negative = ahead). The default forecast is the feasibility "
         "simulation's expected revenue (closed to date + expected rest of the period).",
         "targets, a period forecast (default: the feasibility simulation)",
         dict(_PERIOD_PARAM))
def forecast_gap(context: MetricContext, as_of: pd.Timestamp,
                 params: Mapping[str, Any]) -> pd.DataFrame:
    """The forecast's shortfall against target per node."""
    _require(context.tables, "forecast_gap", TARGETS)
    frame, period = _period_provider(context, as_of, params, "forecast_gap", "period_forecast",
                                     _FORECAST_NEEDS)
    targets = context.tables[TARGETS]
    targets = targets[targets[PERIOD].astype(str) == period].set_index([LEVEL, KEY])
    index = pd.MultiIndex.from_frame(frame[[LEVEL, KEY]])
    target = pd.Series(targets[AMOUNT].reindex(index).to_numpy(), index=frame.index)
    gap = (target - frame["expected"]) / target.where(target > 0)
    words = pd.Series([
        f"forecast {_money(e)} against {_money(t)} target in {period}: gap {_money(t - e)} "
        f"({_pct(g)})" for e, t, g in zip(frame["expected"], target, gap, strict=True)
    ], index=frame.index, dtype=object)
    frame = frame.assign(target=target, period=period)
    keep = gap.notna()
    words = _with_shortfalls(words[keep], _shortfalls(context, frame[keep]))
    return _node_rows(context, frame[keep], gap[keep], words, ["period", "target",
                                                                "expected"])


_GAP_COLUMNS = ("target", "closed_to_date", "expected_run_rate", "pipeline_in_period")


@_metric("pipeline_gap_coverage", NODE_SCOPES, "ratio",
         "Open pipeline expected to close in the period / the part of the remaining target "
         "that the run rate is not expected to bring (target - closed to date - expected "
         "run rate, from the feasibility simulation's backtested run-rate estimate); NaN when "
         "that gap is below min_gap_share of the target (the run rate covers the target).",
         "feasibility simulation (service/usecases/feasibility.py)",
         {**_PERIOD_PARAM, "min_gap_share": 0.02})
def pipeline_gap_coverage(context: MetricContext, as_of: pd.Timestamp,
                          params: Mapping[str, Any]) -> pd.DataFrame:
    """Coverage of the pipeline's part of the target, per node with a target.

    Most revenue of a business with repeat customers is run rate (unlinked repeat orders and
    deals not yet in the pipeline): pipeline / remaining target is far below 3x everywhere
    without anything being wrong. Planners mean the part the pipeline must bring: remaining
    target minus expected run rate.
    """
    frame, period = _period_provider(context, as_of, params, "pipeline_gap_coverage",
                                     "attainment", _FEASIBILITY_NEEDS)
    missing = [c for c in _GAP_COLUMNS if c not in frame.columns]
    if missing:
        raise MetricUnavailable("pipeline_gap_coverage", "an attainment provider with the "
                                f"columns {', '.join(missing)} (run_feasibility has them)")
    target = frame["target"].astype(float)
    gap = target - frame["closed_to_date"] - frame["expected_run_rate"]
    covered = gap < float(params["min_gap_share"]) * target
    value = (frame["pipeline_in_period"] / gap.where(~covered)).astype(float)
    words = pd.Series([
        f"pipeline {_money(p)} expected to close in {period} covers {v:.1f}x the {_money(g)} "
        f"the run rate leaves: target {_money(t)} - closed {_money(c)} - expected run rate "
        f"{_money(r)}" if pd.notna(v) else
        f"the expected run rate {_money(r)} and closed {_money(c)} cover the {_money(t)} "
        f"target within {float(params['min_gap_share']):.0%}"
        for p, v, g, t, c, r in zip(frame["pipeline_in_period"], value, gap, target,
                                    frame["closed_to_date"], frame["expected_run_rate"],
                                    strict=True)
    ], index=frame.index, dtype=object)
    words = _with_shortfalls(words, _shortfalls(context, frame))
    frame = frame.assign(period=period, pipeline_gap=gap)
    return _node_rows(context, frame, value, words,
                      ["period", "target", "closed_to_date", "expected_run_rate",
                       "pipeline_in_period", "pipeline_gap"])
