"""Early warnings with the served models (the service's warnings resource): current alerts,
an evaluation of the rules, silences.

The alerting core is :mod:`engine.alerting`; the metrics it watches are the warning metrics of
:mod:`features.metrics`, computed here with the served churn model and the cached feasibility
simulation so that a warning and the feasibility page agree.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from engine.alerting.evaluate import EvaluationReport, OutOfOrder, evaluate
from engine.alerting.notify import DeliveryPolicy, deliver
from engine.alerting.route import with_extra_receiver
from engine.alerting.rules import ALERTNAME, RuleFile, RuleFileError, load_rules, parse_matcher
from engine.alerting.store import (
    ACTIVE_STATES,
    OUTBOX_DELIVERED,
    SEVERITY_ORDER,
    STATE_ORDER,
    STATES,
    AlertInstance,
    AlertStore,
    AlreadyEvaluated,
)
from engine.alerting.store import Silence as StoreSilence
from engine.compute import ComputeEngine
from engine.io import ROW_IDS, Tables, load_tables
from features.metrics import ForecastFromAttainment, MetricContext, Providers
from features.metrics.alerting import METRIC_CATALOGUE, metric_source
from features.metrics.context import keyed_on_engine
from service.usecases.churn import score_churn
from service.usecases.dimensions import record_dimensions
from service.usecases.planning import feasibility_run
from service.usecases.request import (
    BadRequest,
    Conflict,
    NotFound,
    RequestError,
    Unavailable,
    resolve_as_of,
)
from service.usecases.served import Served

__all__ = [
    "Evaluation",
    "add_silence",
    "current_alerts",
    "evaluate_rules",
    "evaluation_context",
    "expire_silence",
    "silences",
    "wanted_states",
    "warning_tables",
    "worst_first",
]

_evaluation_lock = threading.Lock()


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation did, and the alerts of its rules that are not normal afterwards."""

    report: EvaluationReport
    alerts: list[AlertInstance]
    undelivered: int = 0


def worst_first(found: Iterable[AlertInstance]) -> list[AlertInstance]:
    """Alerts by state (firing first), then severity, rule and labels."""
    return sorted(found, key=lambda a: (STATE_ORDER.get(a.state, 9),
                                        SEVERITY_ORDER.get(a.severity, 9), a.rule,
                                        sorted((k, str(v)) for k, v in a.labels.items()
                                               if k != ALERTNAME)))


def wanted_states(wanted: Iterable[str] | None) -> list[str] | None:
    """The alert states a request asks for (None: all of them).

    Args:
        wanted: alert states, ``active`` (pending, firing and resolved; the default) or
            ``all``.

    Raises:
        RequestError: an unknown state.
    """
    chosen = list(wanted or ["active"])
    if "all" in chosen:
        return None
    unknown = [s for s in chosen if s not in (*STATES, "active")]
    if unknown:
        raise RequestError("state", f"expected {', '.join(STATES)}, active or all; got "
                                    f"{', '.join(unknown)}")
    return sorted({s for c in chosen for s in (ACTIVE_STATES if c == "active" else (c,))})


def current_alerts(served: Served, wanted: Iterable[str] | None) -> list[AlertInstance]:
    """Current alerts in the ``wanted`` states (:func:`wanted_states`), worst first."""
    return worst_first(served.alerts.alerts(states=wanted_states(wanted)))


def _rules(served: Served) -> RuleFile:
    try:
        rules = load_rules(served.rules, catalogue=METRIC_CATALOGUE)
    except RuleFileError as exc:
        raise Unavailable(f"the rule file {served.rules} is invalid: "
                          f"{'; '.join(exc.problems[:3])}") from exc
    settings = served.settings
    return with_extra_receiver(rules, getattr(settings, "warnings_webhook_url", None),
                               getattr(settings, "warnings_notify_file", None))


def _providers(served: Served) -> Providers:
    """The metrics of other modules, computed with the served models (and cached)."""
    churn = served.model("churn")

    def churn_scores_at(tables: Tables, as_of: pd.Timestamp) -> pd.DataFrame:
        assert churn is not None
        return score_churn(tables, as_of=as_of, model=churn.estimator)

    def attainment(tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
        return feasibility_run(served, period, pd.Timestamp(as_of).date()).frame

    return Providers(churn_scores=churn_scores_at if churn is not None else None,
                     attainment=attainment,
                     period_forecast=ForecastFromAttainment(attainment))


def warning_tables(source: str) -> Tables:
    """The tables an evaluation reads in this process (the node metrics, the providers):
    every table validated, without the row ids (``order_id``, ``invoice_id``), which no
    metric reads; a Parquet data directory's ids are never read
    (:func:`engine.io.load_tables` with ``skip``). Every other column is kept, the schema's and the
    file's own (a target's ``tier`` and ``metric``, a stage change's ``close_date``), so the
    metrics see what the loader gives any other command.

    Raises:
        BadInput: the data does not validate (the loader's problems).
    """
    return load_tables(source, skip=ROW_IDS)


def evaluation_context(tables: Tables, providers: Providers, engine: ComputeEngine | None = None,
                       source: str | None = None) -> MetricContext:
    """The metrics' context of one evaluation: the customer- and deal-level parts of the
    metrics (complaint counts, receivable sums, days in stage) computed bucket by bucket on
    ``engine`` from ``source`` (Spark: read there, never loaded here), or in this process on
    ``tables`` when ``engine`` is None or pandas; the rollups, the node metrics, the rules,
    muting and the alert store stay here. Both engines give the same parts to the last bit."""
    if engine is None or engine.name == "pandas" or source is None:
        return MetricContext(tables, providers)
    return MetricContext(tables, providers, keyed=keyed_on_engine(engine, source))


def evaluate_rules(served: Served, as_of: date | None) -> Evaluation:
    """Evaluate the rules at ``as_of``: alert states, history, notifications (one attempt).

    Raises:
        RequestError: ``as_of`` is outside the data.
        Conflict: ``as_of`` is before the last evaluation of a rule.
        Unavailable: the data is not loaded or the rule file is invalid.
    """
    tables = served.tables()
    stamp = resolve_as_of(as_of, served.span())
    rules = _rules(served)
    with _evaluation_lock:
        try:
            report = evaluate(rules, metric_source(MetricContext(tables, _providers(served))),
                              served.alerts, stamp.date())
        except (OutOfOrder, AlreadyEvaluated) as exc:
            raise Conflict(str(exc)) from exc
        if served.deliver_notifications:
            deliver(served.alerts, DeliveryPolicy(max_wait=timedelta(0)))
    # The board's trend of the product, segment and channel nodes, beside the hierarchy's.
    record_dimensions(served, stamp.date())
    names = [rule.alert for _, rule in rules.rules]
    now = worst_first(served.alerts.alerts(rules=names, states=ACTIVE_STATES))
    return Evaluation(report=report, alerts=now, undelivered=undelivered(served.alerts))


def undelivered(store: AlertStore) -> int:
    """Notifications not delivered yet: waiting for a retry, being sent, or given up on."""
    counts = store.outbox_counts()
    return sum(n for status, n in counts.items() if status != OUTBOX_DELIVERED)


def silences(served: Served, include_expired: bool) -> list[StoreSilence]:
    """Silences, oldest first."""
    return served.alerts.silences(include_expired)


def add_silence(served: Served, matchers: Iterable[str], starts_at: date, ends_at: date,
                author: str, comment: str) -> StoreSilence:
    """Record a silence of the alerts all ``matchers`` (``label=value``, ``!=``, ``=~``,
    ``!~``) match, from ``starts_at`` to ``ends_at`` (as_of dates).

    Raises:
        BadRequest: a matcher does not parse or the window is empty.
    """
    try:
        parsed = [parse_matcher(m) for m in matchers]
        return served.alerts.add_silence(parsed, starts_at, ends_at, author, comment)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def expire_silence(served: Served, silence_id: str) -> None:
    """Expire a silence now.

    Raises:
        NotFound: there is no active silence with that id.
    """
    if not served.alerts.expire_silence(silence_id):
        raise NotFound(f"no active silence with id {silence_id!r}")
