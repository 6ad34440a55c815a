"""The service layer: engine calls for the routes, their caches, and the HTTP errors.

Routes stay thin: they parse, call one function here and return its result. This module turns
engine results into response models and engine refusals into ``HTTPException`` (the only layer
that does), and it wires the *served* models into the engine: the champions loaded at start-up,
never a fresh registry lookup per request, so an unreachable registry changes nothing for the
requests that follow.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import HTTPException, status

from engine.alerting.engine import OutOfOrder, evaluate, with_extra_receiver
from engine.alerting.notify import DeliveryPolicy, deliver
from engine.alerting.rules import ALERTNAME, RuleFile, RuleFileError, load_rules, parse_matcher
from engine.alerting.store import FIRING, NORMAL, PENDING, RESOLVED, AlertInstance, AlreadyEvaluated
from engine.alerting.store import Silence as StoreSilence
from engine.io import Tables
from engine.schemas import ACCOUNT_MANAGER, CUSTOMER_ID, DS, KEY, LEVEL, REGION, SEGMENT
from features.metrics import ForecastFromAttainment, MetricContext, Providers
from models.churn import CHURN_PROBABILITY, REASON_SEPARATOR, REASONS
from models.feasibility import (
    MUST_HIT_QUANTILE,
    P_ATTAIN,
    STRETCH_QUANTILE,
    TARGET,
    Method,
    Simulation,
    fit_stage_rates,
    recalibrate,
)
from service.cli.warnings import default_rules_path
from service.http import schemas as api
from service.http.auth import Principal, customer_owner
from service.http.state import MODEL_KINDS, AppState, load_models, probe_registry
from service.usecases import request
from service.usecases.churn import EXPECTED_REVENUE, REVENUE_AT_RISK, score_churn
from service.usecases.feasibility import run_feasibility
from service.usecases.forecast import ServedForecaster
from service.usecases.request import DataSpan, RequestError

__all__ = [
    "ACTIVE_STATES",
    "FeasibilityRun",
    "add_silence",
    "alerts",
    "at_risk",
    "churn_scores",
    "customer",
    "evaluate_warnings",
    "expire_silence",
    "feasibility",
    "feasibility_run",
    "forecasts",
    "models",
    "readiness",
    "recalibration",
    "reload_models",
    "resolve_as_of",
    "silences",
    "what_if",
]

ACTIVE_STATES = (PENDING, FIRING, RESOLVED)
_STATE_ORDER = {FIRING: 0, PENDING: 1, RESOLVED: 2, NORMAL: 3}
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
_evaluation_lock = threading.Lock()


def _fail(code: int, detail: str) -> HTTPException:
    return HTTPException(code, detail=detail)


def _number(value: Any) -> float | None:
    """A JSON-able number: NaN, inf and missing become None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _records(frame: pd.DataFrame, fields: Iterable[str]) -> list[dict[str, Any]]:
    """Rows as dicts of the given fields, numbers cleaned for JSON."""
    names = [f for f in fields if f in frame.columns]
    return [{name: _json_value(v) for name, v in zip(names, row, strict=True)}
            for row in frame[names].itertuples(index=False)]


def _json_value(value: Any) -> Any:
    """Numbers cleaned (:func:`_number`), anything else as it is."""
    is_number = isinstance(value, float | int | np.number) and not isinstance(value, bool)
    return _number(value) if is_number else value


# --- data and dates ----------------------------------------------------------------------------


def tables_of(state: AppState) -> Tables:
    """The loaded tables; 503 when the data could not be loaded."""
    if state.data.tables is None:
        shown = "; ".join(state.data.problems[:3])
        more = len(state.data.problems) - 3
        raise _fail(status.HTTP_503_SERVICE_UNAVAILABLE,
                    f"the data at {state.data.source} is not loaded: {shown}"
                    + (f" (and {more} more problems, see /readyz)" if more > 0 else ""))
    return state.data.tables


def _span(state: AppState) -> DataSpan:
    """The days the loaded data covers (503 when none is loaded)."""
    tables_of(state)
    assert state.data.start is not None and state.data.end is not None  # set with the tables
    return DataSpan(start=state.data.start, end=state.data.end)


def _default_as_of(state: AppState) -> pd.Timestamp:
    """The day after the loaded data's last date, so every row counts (503 when none)."""
    return _span(state).default_as_of


def resolve_as_of(state: AppState, as_of: date | None) -> pd.Timestamp:
    """``as_of`` as a timestamp (default: the day after the data's last date); 400 when outside.

    The rules are :func:`service.usecases.request.resolve_as_of`'s.
    """
    span = _span(state)
    try:
        return request.resolve_as_of(as_of, span)
    except RequestError as exc:
        raise _fail(status.HTTP_400_BAD_REQUEST, str(exc)) from exc


def _resolve_period(state: AppState, period: str | None, as_of: pd.Timestamp) -> str:
    try:
        return request.resolve_period(period, as_of, _span(state))
    except RequestError as exc:
        raise _fail(status.HTTP_400_BAD_REQUEST, str(exc)) from exc


# --- feasibility -------------------------------------------------------------------------------


class FeasibilityRun:
    """One simulation of a period as of a date, with the models that went into it."""

    def __init__(self, period: str, as_of: pd.Timestamp, frame: pd.DataFrame,
                 simulation: Simulation, notes: list[str], draws: int):
        self.period = period
        self.as_of = as_of
        self.frame = frame
        self.simulation = simulation
        self.notes = notes
        self.draws = draws


def _simulate(state: AppState, period: str, as_of: pd.Timestamp,
              served: Mapping[str, Any]) -> FeasibilityRun:
    """``run_feasibility`` with the served models; stage rates fitted once per as_of (~2 s)."""
    tables = tables_of(state)

    def stage_rates(tables: Tables, when: pd.Timestamp) -> tuple[Any, str]:
        return state.feasibility_cache.get(
            ("stage-rates", when), lambda: fit_stage_rates(tables, when))

    draws = state.options.draws
    try:
        result = run_feasibility(tables, period, as_of, draws=draws, seed=state.settings.seed,
                                 models=served, stage_rates=stage_rates)
    except ValueError as exc:
        raise _fail(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return FeasibilityRun(period, as_of, result.frame, result.simulation, result.notes, draws)


def feasibility_run(state: AppState, period: str | None, as_of: date | None) -> FeasibilityRun:
    """The (cached) simulation of ``period`` as of ``as_of``, defaults resolved."""
    stamp = resolve_as_of(state, as_of)
    chosen = _resolve_period(state, period, stamp)
    served = dict(state.models)  # a copy: a reload may change the models meanwhile
    versions = tuple(sorted((k, m.version) for k, m in served.items()))
    key = ("feasibility", chosen, stamp, versions)
    return state.feasibility_cache.get(key, lambda: _simulate(state, chosen, stamp, served))


_NODE_FIELDS = tuple(api.FeasibilityNode.model_fields)


def feasibility(state: AppState, period: str | None, as_of: date | None) -> api.FeasibilityOut:
    """Attainment distribution of every node with a target in the period."""
    run = feasibility_run(state, period, as_of)
    nodes = [api.FeasibilityNode(**row) for row in _records(run.frame, _NODE_FIELDS)]
    return api.FeasibilityOut(period=run.period, as_of=run.as_of.date(), draws=run.draws,
                              notes=run.notes, nodes=nodes)


def _node_row(run: FeasibilityRun, level: str, key: str) -> pd.Series | None:
    match = run.frame[(run.frame[LEVEL] == level) & (run.frame[KEY] == key)]
    return None if match.empty else match.iloc[0]


def what_if(state: AppState, body: api.WhatIfIn) -> api.WhatIfOut:
    """P(attain) of a proposed target for one node, from the same draws as its feasibility.

    Every simulated node can be asked about, with or without a target of its own; an unknown
    node is a 404.
    """
    run = feasibility_run(state, body.period, body.as_of)
    try:
        column = run.simulation.node_index(body.level, body.key)
    except KeyError as exc:
        raise _fail(status.HTTP_404_NOT_FOUND,
                    f"no node {body.level}={body.key!r} in the simulation of {run.period}") from exc
    draws = run.simulation.draws[:, column]
    current = _node_row(run, body.level, body.key)
    quantiles = (np.quantile(draws, [MUST_HIT_QUANTILE, 0.5, STRETCH_QUANTILE, 0.9])
                 if len(draws) else np.full(4, np.nan))
    expected = float(draws.mean()) if len(draws) else float(run.simulation.closed[column])
    return api.WhatIfOut(
        period=run.period, as_of=run.as_of.date(), level=body.level, key=body.key,
        proposed_target=body.target, p_attain=_attained(draws, body.target, expected),
        current_target=None if current is None else _number(current[TARGET]),
        p_attain_current=None if current is None else _number(current[P_ATTAIN]),
        expected=_number(expected), p10=_number(quantiles[0]), p50=_number(quantiles[1]),
        p90=_number(quantiles[3]), gap=_number(body.target - expected),
        must_hit=_number(quantiles[0]), stretch=_number(quantiles[2]),
    )


def _attained(draws: np.ndarray, target: float, expected: float) -> float:
    """Share of draws reaching ``target``, with the engine's float tolerance for sums."""
    if not len(draws):
        return float(expected >= target)
    tolerance = 1e-9 * max(abs(target), 1.0)
    return float((draws >= target - tolerance).mean())


def recalibration(state: AppState, period: str | None, as_of: date | None,
                  method: Method) -> api.RecalibrationOut:
    """Revised targets for the rest of the period that keep every parent's total."""
    run = feasibility_run(state, period, as_of)
    try:
        frame = recalibrate(run.frame, run.simulation, method=method)
    except ValueError as exc:
        raise _fail(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    nodes = [api.RecalibrationNode(**row)
             for row in _records(frame, api.RecalibrationNode.model_fields)]
    return api.RecalibrationOut(period=run.period, as_of=run.as_of.date(), method=method,
                                notes=[*run.notes, f"recalibration: {method}"], nodes=nodes)


# --- customers ---------------------------------------------------------------------------------


def churn_scores(state: AppState) -> pd.DataFrame:
    """Every active customer scored as of the default as-of (cached per model version)."""
    tables = tables_of(state)
    model = state.model("churn")
    if model is None:
        raise _fail(status.HTTP_503_SERVICE_UNAVAILABLE,
                    "no churn model is served: run `quotacast train churn` and "
                    "`quotacast promote churn`, then POST /v1/models/reload")
    end = _default_as_of(state)
    return state.scores_cache.get(
        ("scores", model.version, end),
        lambda: score_churn(tables, as_of=end, model=model.estimator))


def _reasons(value: Any) -> list[str]:
    text = _text(value)
    return [r for r in text.split(REASON_SEPARATOR) if r] if text else []


def _risk(row: Mapping[Any, Any]) -> api.CustomerRisk:
    return api.CustomerRisk(
        customer_id=str(row[CUSTOMER_ID]), account_manager=_text(row[ACCOUNT_MANAGER]),
        churn_probability=_number(row[CHURN_PROBABILITY]) or 0.0,
        revenue_at_risk=_number(row[REVENUE_AT_RISK]) or 0.0,
        expected_revenue=_number(row.get(EXPECTED_REVENUE)), reasons=_reasons(row[REASONS]))


def _known_managers(state: AppState) -> set[str]:
    customers = tables_of(state).customers
    if ACCOUNT_MANAGER not in customers.columns:
        return set()
    return {str(m) for m in customers[ACCOUNT_MANAGER].dropna().unique()}


def at_risk(state: AppState, principal: Principal, owner: str | None, min_probability: float,
            page: int, page_size: int) -> api.AtRiskPage:
    """Scored customers, riskiest first (by revenue at risk), one page of them."""
    chosen = customer_owner(principal, owner)
    if chosen is not None and principal.scoped_to is None and chosen not in _known_managers(state):
        raise _fail(status.HTTP_400_BAD_REQUEST, f"unknown owner {chosen!r}: no customer has "
                    "this account manager")
    scores = churn_scores(state)
    keep = scores[CHURN_PROBABILITY] >= min_probability
    if chosen is not None:
        keep &= scores[ACCOUNT_MANAGER] == chosen
    selected = scores.loc[keep]
    start = (page - 1) * page_size
    rows = selected.iloc[start:start + page_size].to_dict("records")
    return api.AtRiskPage(as_of=_default_as_of(state).date(), owner=chosen,
                          min_probability=min_probability, total=len(selected),
                          page=page, page_size=page_size, items=[_risk(r) for r in rows])


def customer(state: AppState, principal: Principal, customer_id: str) -> api.CustomerDetail:
    """One customer's score and reasons; 404 for an unknown customer or another manager's."""
    customers = tables_of(state).customers
    found = customers.loc[customers[CUSTOMER_ID].astype(str) == customer_id]
    manager = (_text(found.iloc[0][ACCOUNT_MANAGER])
               if len(found) and ACCOUNT_MANAGER in found.columns else None)
    mine = principal.scoped_to
    # Another manager's customer answers exactly as an unknown one: a key cannot probe ids.
    if found.empty or (mine is not None and manager != mine):
        raise _fail(status.HTTP_404_NOT_FOUND, f"no customer {customer_id!r}")
    scores = churn_scores(state)
    row = found.iloc[0]
    detail = api.CustomerDetail(
        customer_id=customer_id, account_manager=manager,
        region=_text(row.get(REGION)), segment=_text(row.get(SEGMENT)),
        as_of=_default_as_of(state).date(), scored=False)
    position = np.flatnonzero((scores[CUSTOMER_ID].astype(str) == customer_id).to_numpy())
    if position.size == 0:
        return detail
    risk = _risk(scores.iloc[position[0]].to_dict())
    return detail.model_copy(update={
        "scored": True, "rank": int(position[0]) + 1,
        "churn_probability": risk.churn_probability, "revenue_at_risk": risk.revenue_at_risk,
        "expected_revenue": risk.expected_revenue, "reasons": risk.reasons})


# --- forecasts ---------------------------------------------------------------------------------


def _forecaster(state: AppState) -> tuple[ServedForecaster, str]:
    loaded = state.model("forecast")
    if loaded is None:
        raise _fail(status.HTTP_503_SERVICE_UNAVAILABLE,
                    "no forecast model is served: run `quotacast train forecast` and "
                    "`quotacast promote forecast`, then POST /v1/models/reload")
    if not isinstance(loaded.estimator, ServedForecaster):
        raise _fail(status.HTTP_503_SERVICE_UNAVAILABLE,
                    f"the forecast champion v{loaded.version} is a "
                    f"{type(loaded.estimator).__name__}, not a ServedForecaster: retrain it")
    return loaded.estimator, loaded.version


def forecasts(state: AppState, level: str, horizon: int | None,
              freq: str | None) -> api.ForecastOut:
    """The champion forecaster's forecasts of one level, from the end of its history.

    The checks are the CLI's (``ServedForecaster.cannot_answer``), on the model loaded at
    start-up rather than a fresh registry lookup.
    """
    served, version = _forecaster(state)
    problem = served.cannot_answer(freq, level, horizon)
    if problem is not None:
        raise _fail(status.HTTP_400_BAD_REQUEST,
                    f"{problem}; train and promote a forecaster with that --freq, --level or "
                    "--horizon to ask for it")
    steps = int(served.forecaster.horizon) if horizon is None else horizon
    frame = served.predict(steps, level)
    points = [api.ForecastPoint(**{**r, DS: pd.Timestamp(r[DS]).date()})
              for r in _records(frame, api.ForecastPoint.model_fields)]
    return api.ForecastOut(level=level, freq=served.freq, horizon=steps, model_version=version,
                           points=points)


# --- warnings ----------------------------------------------------------------------------------


def _alert(alert: AlertInstance) -> api.AlertOut:
    labels = {k: str(v) for k, v in alert.labels.items()}
    return api.AlertOut(
        rule=alert.rule, labels=labels, state=alert.state, severity=alert.severity,
        value=_number(alert.value), threshold=_number(alert.threshold), since=alert.since,
        as_of=alert.last_eval_at, message=alert.message,
        summary=alert.annotations.get("summary", alert.message),
        description=alert.annotations.get("description", ""),
        silenced=bool(alert.silenced_by), inhibited=alert.inhibited)


def _worst_first(found: Iterable[AlertInstance]) -> list[AlertInstance]:
    return sorted(found, key=lambda a: (_STATE_ORDER.get(a.state, 9),
                                        _SEVERITY_ORDER.get(a.severity, 9), a.rule,
                                        sorted((k, str(v)) for k, v in a.labels.items()
                                               if k != ALERTNAME)))


def _states(wanted: Iterable[str] | None) -> list[str] | None:
    chosen = list(wanted or ["active"])
    if "all" in chosen:
        return None
    return sorted({s for c in chosen for s in (ACTIVE_STATES if c == "active" else (c,))})


def alerts(state: AppState, wanted: Iterable[str] | None) -> api.AlertList:
    """Current alerts, worst first (default: pending, firing and resolved)."""
    found = _worst_first(state.alerts.alerts(states=_states(wanted)))
    return api.AlertList(count=len(found), alerts=[_alert(a) for a in found])


def _rules(state: AppState) -> RuleFile:
    path = Path(state.options.rules) if state.options.rules else default_rules_path()
    try:
        rules = load_rules(path)
    except RuleFileError as exc:
        raise _fail(status.HTTP_503_SERVICE_UNAVAILABLE,
                    f"the rule file {path} is invalid: {'; '.join(exc.problems[:3])}") from exc
    settings = state.settings
    return with_extra_receiver(rules, getattr(settings, "warnings_webhook_url", None),
                               getattr(settings, "warnings_notify_file", None))


def _providers(state: AppState) -> Providers:
    """The metrics of other modules, computed with the served models (and cached)."""
    churn = state.model("churn")

    def churn_scores_at(tables: Tables, as_of: pd.Timestamp) -> pd.DataFrame:
        assert churn is not None
        return score_churn(tables, as_of=as_of, model=churn.estimator)

    def attainment(tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
        return feasibility_run(state, period, pd.Timestamp(as_of).date()).frame

    return Providers(churn_scores=churn_scores_at if churn is not None else None,
                     attainment=attainment,
                     period_forecast=ForecastFromAttainment(attainment))


def evaluate_warnings(state: AppState, as_of: date | None) -> api.EvaluationOut:
    """Evaluate the rules at ``as_of``: alert states, history, notifications (one attempt)."""
    tables = tables_of(state)
    stamp = resolve_as_of(state, as_of)
    rules = _rules(state)
    with _evaluation_lock:
        try:
            report = evaluate(rules, MetricContext(tables, _providers(state)), state.alerts,
                              stamp.date())
        except (OutOfOrder, AlreadyEvaluated) as exc:
            raise _fail(status.HTTP_409_CONFLICT, str(exc)) from exc
        if state.options.deliver_notifications:
            deliver(state.alerts, DeliveryPolicy(max_wait=timedelta(0)))
    names = [rule.alert for _, rule in rules.rules]
    now = _worst_first(state.alerts.alerts(rules=names, states=ACTIVE_STATES))
    return api.EvaluationOut(
        as_of=report.as_of, evaluated=report.evaluated, already=report.already,
        skipped=report.skipped, transitions=len(report.transitions),
        notifications=report.notifications, alerts=[_alert(a) for a in now])


def _silence(silence: StoreSilence) -> api.SilenceOut:
    return api.SilenceOut(id=silence.id, matchers=[str(m) for m in silence.matchers],
                          starts_at=silence.starts_at, ends_at=silence.ends_at,
                          created_by=silence.created_by, comment=silence.comment,
                          expired=silence.expired_at is not None)


def silences(state: AppState, include_expired: bool) -> list[api.SilenceOut]:
    """Silences, oldest first."""
    return [_silence(s) for s in state.alerts.silences(include_expired)]


def add_silence(state: AppState, principal: Principal, body: api.SilenceIn) -> api.SilenceOut:
    """Record a silence authored by the caller."""
    try:
        matchers = [parse_matcher(m) for m in body.matchers]
        made = state.alerts.add_silence(matchers, body.starts_at, body.ends_at, principal.name,
                                        body.comment)
    except ValueError as exc:
        raise _fail(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return _silence(made)


def expire_silence(state: AppState, silence_id: str) -> None:
    """Expire a silence now; 404 when there is no active one with that id."""
    if not state.alerts.expire_silence(silence_id):
        raise _fail(status.HTTP_404_NOT_FOUND, f"no active silence with id {silence_id!r}")


# --- models and health ------------------------------------------------------------------------


def _model(kind: str, state: AppState) -> api.ModelOut | None:
    loaded = state.model(kind)
    if loaded is None:
        return None
    return api.ModelOut(kind=kind, name=loaded.model_name, version=loaded.version,
                        run_id=loaded.run_id,
                        metrics={k: _number(v) for k, v in sorted(loaded.metrics.items())})


def _registry(state: AppState, max_age: float | None = None) -> api.RegistryOut:
    return api.RegistryOut(uri=state.registry.uri, reachable=probe_registry(state, max_age))


def models(state: AppState) -> api.ModelsOut:
    """The models served, with versions and holdout metrics."""
    served = [m for m in (_model(k, state) for k in MODEL_KINDS) if m is not None]
    return api.ModelsOut(registry=_registry(state), models=served,
                         missing=dict(sorted(state.model_problems.items())))


def reload_models(state: AppState) -> api.ModelsOut:
    """Load the champions again; what is served stays when the registry does not answer."""
    load_models(state)
    return models(state)


def readiness(state: AppState) -> api.ReadyOut:
    """What /readyz reports: data, models and registry."""
    data = state.data
    tables = {} if data.tables is None else {n: len(f) for n, f in data.tables.frames.items()}
    return api.ReadyOut(
        ready=data.ok,
        data=api.DataStatus(source=data.source, ok=data.ok, tables=tables,
                            problems=data.problems[:200],
                            start=None if data.start is None else data.start.date(),
                            end=None if data.end is None else data.end.date()),
        models={k: _model(k, state) for k in MODEL_KINDS},
        model_problems=dict(sorted(state.model_problems.items())),
        registry=_registry(state),
    )
