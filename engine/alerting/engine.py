"""Evaluation: metric values -> alert state transitions -> muting -> notifications in the outbox.

The state machine is Prometheus's, measured in as_of time (the evaluation date), with a
Resolved state made explicit::

    Normal --breach--> Pending --breach held `for`--> Firing --clear for `keep_firing_for`-->
    Resolved --clear--> Normal            Resolved --breach--> Pending (or Firing when for = 0)
    Pending --clear--> Normal (never notified)

- ``for``: a breach that starts at ``active_at`` fires at the first evaluation with
  ``as_of - active_at >= for`` (``for: 0`` fires at the first breach).
- ``keep_firing_for``: a firing alert whose condition clears keeps firing while
  ``as_of - keep_firing_since < keep_firing_for``, where ``keep_firing_since`` is the first
  evaluation that saw it clear (as Prometheus does); a new breach resets that clock. Meanwhile
  its value, details and message stay those of its last breach.
- A missing or NaN value is "no breach": the alert clears as if the condition were false.

Evaluation is idempotent per (rule, as_of): a rule already evaluated at ``as_of`` is left as is
(nothing recomputed, nothing sent twice). An ``as_of`` earlier than a rule's last evaluation is
refused with :class:`OutOfOrder` before anything is written: alert state only moves forward in
as_of time, so replaying the past needs a fresh database.

Muting follows Alertmanager: silences (matchers + window in as_of time), inhibit rules (a firing
source mutes matching targets with equal labels) and, on by default, inhibition by hierarchy (a
firing alert at a node mutes related alerts below that node: a region mutes its teams, reps,
customers and deals). Related means the same rule, or a rule with the same ``concern`` label
whose severity is not higher (a critical region is still told under a warning company; a
firing company attainment alert keeps the pace alerts of its reps quiet, while its message
names the nodes furthest behind). Muted alerts still change state and history; they are only
not notified. Notifications are grouped per receiver by the route's ``group_by`` labels and
written to the outbox in the same transaction as the state changes.

:func:`run_rule_tests` runs ``promtool test rules``-style unit tests on the same state machine.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from engine.alerting.rules import (
    ALERTNAME,
    FileConfig,
    Group,
    InhibitRule,
    Receiver,
    Route,
    Rule,
    RuleFile,
    RuleFileError,
    WebhookConfig,
    compare,
    format_duration,
    load_rules,
    matches_all,
    parse_duration,
    render,
)
from engine.alerting.store import (
    FIRING,
    NORMAL,
    PENDING,
    RESOLVED,
    AlertInstance,
    AlertStore,
    OutboxMessage,
    Silence,
    Transition,
    json_safe,
)
from features.metrics import (
    EXPLANATION,
    SCOPE_COLUMN,
    SCOPE_LABELS,
    VALUE,
    MetricContext,
    MetricUnavailable,
    compute_metric,
)

__all__ = [
    "CONCERN",
    "EXTRA_RECEIVER",
    "EvaluationReport",
    "OutOfOrder",
    "RuleTestFailure",
    "RuleTestReport",
    "alert_labels",
    "apply_rule",
    "evaluate",
    "fingerprint",
    "format_labels",
    "inhibited",
    "node_name",
    "plan_notifications",
    "route_alert",
    "run_rule_tests",
    "silenced_by",
    "step",
    "with_extra_receiver",
]

EXTRA_RECEIVER = "quotacast-settings"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert
# Depth in the hierarchy: an alert inhibits related alerts at deeper scopes below it.
_DEPTH = {"company": 0, "region": 1, "team": 2, "rep": 3, "customer": 4, "opportunity": 4}
# The label that names what a rule is about (attainment, receivables...): rules sharing it are
# related for inhibition by hierarchy.
CONCERN = "concern"
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


class OutOfOrder(Exception):
    """An as_of earlier than the last evaluation of some rules (nothing was written)."""

    def __init__(self, as_of: date, later: Mapping[str, date]):
        listed = ", ".join(f"{rule} (last {last})" for rule, last in sorted(later.items()))
        super().__init__(
            f"as_of {as_of} is earlier than the last evaluation of: {listed}. Alert state only "
            "moves forward in as_of time; evaluate a later date, or replay history into a fresh "
            "database (QUOTACAST_DATABASE_URL)."
        )
        self.as_of = as_of
        self.later = dict(later)


# --- the state machine ---------------------------------------------------------------------------


def step(alert: AlertInstance, breached: bool, as_of: date, hold: timedelta,
         keep: timedelta) -> AlertInstance:
    """The alert after one evaluation at ``as_of`` (pure; see the module docstring)."""
    state = alert.state
    if breached:
        if state in (NORMAL, RESOLVED):
            alert = replace(alert, state=PENDING, since=as_of, active_at=as_of, fired_at=None,
                            resolved_at=None, keep_firing_since=None)
            state = PENDING
        if state == PENDING and alert.active_at is not None and as_of - alert.active_at >= hold:
            return replace(alert, state=FIRING, since=as_of, fired_at=as_of)
        if state == FIRING:
            return replace(alert, keep_firing_since=None)
        return alert
    if state in (PENDING, RESOLVED):
        return replace(alert, state=NORMAL, since=as_of, active_at=None, keep_firing_since=None)
    if state == FIRING:
        clear_since = alert.keep_firing_since or as_of
        if as_of - clear_since < keep:
            return replace(alert, keep_firing_since=clear_since)
        return replace(alert, state=RESOLVED, since=as_of, resolved_at=as_of,
                       keep_firing_since=None)
    return alert


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable id of a label set (sorted JSON, SHA-256, 16 hex digits like Alertmanager)."""
    text = json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def format_labels(labels: Mapping[str, str], skip: Iterable[str] = (ALERTNAME,)) -> str:
    """``{region="North", team="T1"}``: labels as Prometheus prints them, ``skip`` left out."""
    hidden = set(skip)
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k not in hidden)
    return "{" + inner + "}"


def _label_value(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return str(value)


def alert_labels(group: Group, rule: Rule, scope: str, sample: Mapping[str, Any]
                 ) -> dict[str, str]:
    """An alert's identity: name, scope, severity, the scope's labels, group and rule labels."""
    labels = {ALERTNAME: rule.alert, "scope": scope, "severity": rule.severity}
    for name in SCOPE_LABELS[scope]:
        value = _label_value(sample.get(name))
        if value is not None:
            labels[name] = value
    return {**labels, **group.labels, **rule.labels}


def _details(sample: Mapping[str, Any]) -> dict[str, Any]:
    known = {SCOPE_COLUMN, VALUE, EXPLANATION, *{c for s in SCOPE_LABELS.values() for c in s}}
    return json_safe({k: v for k, v in sample.items() if k not in known})


def _value(sample: Mapping[str, Any] | None) -> float | None:
    if sample is None:
        return None
    value = sample.get(VALUE)
    if value is None or value is pd.NA:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def node_name(labels: Mapping[str, str]) -> str:
    """The alert's node in words: ``region North``, ``rep Ana``, ``company``."""
    scope = labels.get("scope", "")
    own = SCOPE_LABELS.get(scope, ())
    return f"{scope} {labels.get(own[-1], '?')}" if own else "company"


def _refresh(alert: AlertInstance, rule: Rule, sample: Mapping[str, Any] | None,
             as_of: date) -> AlertInstance:
    """Latest value, details, rendered annotations and message (kept when no sample came)."""
    value = _value(sample) if sample is not None else alert.value
    details = _details(sample) if sample is not None else alert.details
    explanation = str(sample.get(EXPLANATION) or "") if sample is not None else details.get(
        EXPLANATION, "")
    details = {**details, EXPLANATION: explanation}
    namespace = {
        **details, "value": value, "threshold": rule.threshold, "op": rule.op,
        "alert": rule.alert, ALERTNAME: rule.alert, "severity": rule.severity,
        "metric": rule.metric, "scope": alert.labels.get("scope"), "labels": alert.labels,
        "node": node_name(alert.labels), "details": details, "explanation": explanation,
        "for": format_duration(rule.for_),
        "as_of": as_of.isoformat(), "state": alert.state,
    }
    annotations = {k: render(v, namespace) for k, v in rule.annotations.items()}
    summary = annotations.get("summary", "")
    if not summary:
        shown = "n/a" if value is None else f"{value:.4g}"
        summary = f"{rule.metric} {shown} {rule.op} {rule.threshold:g}"
    message = summary if not explanation or explanation in summary else f"{summary}: {explanation}"
    return replace(alert, value=value, details=details, annotations=annotations, message=message,
                   threshold=rule.threshold, op=rule.op, severity=rule.severity,
                   last_eval_at=as_of)


def _samples(rule: Rule, group: Group, frame: pd.DataFrame
             ) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    """Per fingerprint: the alert labels and the metric row, for the rule's scopes."""
    if frame.empty:
        return {}
    rows = frame[frame[SCOPE_COLUMN].isin(rule.scope)] if SCOPE_COLUMN in frame.columns else frame
    out = {}
    for record in rows.to_dict(orient="records"):
        sample = {str(k): v for k, v in record.items()}
        scope = str(sample.get(SCOPE_COLUMN, rule.scope[0]))
        labels = alert_labels(group, rule, scope, sample)
        out[fingerprint(labels)] = (labels, sample)
    return out


def apply_rule(group: Group, rule: Rule, frame: pd.DataFrame,
               prior: Mapping[str, AlertInstance], as_of: date
               ) -> tuple[list[AlertInstance], list[Transition]]:
    """One rule's evaluation: its alerts after ``as_of`` and the state changes (pure).

    Args:
        frame: the metric frame (``scope``, label columns, ``value``, explanation, details).
        prior: the rule's alerts by fingerprint before this evaluation.
    """
    samples = _samples(rule, group, frame)
    alerts, transitions = [], []
    for fp in sorted(set(samples) | set(prior)):
        labels, sample = samples.get(fp, (None, None))
        old = prior.get(fp)
        breached = compare(_value(sample), rule.op, rule.threshold)
        if old is None and (not breached or labels is None):
            continue  # nothing to remember about a label set that never breached
        base = old if old is not None else AlertInstance(rule.alert, fp, labels or {})
        stepped = step(base, breached, as_of, rule.for_, rule.keep_firing_for)
        # Kept firing after the breach cleared (keep_firing_for): the alert still says what
        # made it fire, as Prometheus keeps the last firing sample, not "<no value>x".
        kept = stepped.state == FIRING and not breached
        new = _refresh(stepped, rule, None if kept else sample, as_of)
        alerts.append(new)
        before = old.state if old is not None else NORMAL
        if new.state != before:
            transitions.append(Transition(rule.alert, fp, new.labels, as_of, before, new.state,
                                          new.value, rule.threshold, new.message))
    return alerts, transitions


# --- muting --------------------------------------------------------------------------------------


def silenced_by(labels: Mapping[str, str], silences: Iterable[Silence], as_of: date) -> list[str]:
    """Ids of the silences active at ``as_of`` that match ``labels``."""
    return [s.id for s in silences if s.active_at(as_of) and s.matches(labels)]


def _related(source: AlertInstance, target: AlertInstance) -> bool:
    """Same rule, or the same ``concern`` label at a severity no higher than the source's."""
    if source.rule == target.rule:
        return True
    concern = source.labels.get(CONCERN)
    return bool(concern) and target.labels.get(CONCERN) == concern and (
        _SEVERITY_RANK.get(target.labels.get("severity", ""), 0)
        <= _SEVERITY_RANK.get(source.labels.get("severity", ""), 0))


def _below(source: AlertInstance, target: AlertInstance) -> bool:
    """``target`` is a related alert (:func:`_related`) at a node under ``source``'s node."""
    src, dst = source.labels.get("scope", ""), target.labels.get("scope", "")
    if not _related(source, target) or src not in _DEPTH or dst not in _DEPTH:
        return False
    if _DEPTH[src] >= _DEPTH[dst]:
        return False
    return all(target.labels.get(k) == source.labels.get(k) for k in SCOPE_LABELS[src])


def _inhibits(rule: InhibitRule, source: AlertInstance, target: AlertInstance) -> bool:
    return (matches_all(rule.source_matchers, source.labels)
            and matches_all(rule.target_matchers, target.labels)
            and all(source.labels.get(k) == target.labels.get(k) for k in rule.equal))


def inhibited(target: AlertInstance, firing: Iterable[AlertInstance],
              rules: Iterable[InhibitRule], by_hierarchy: bool) -> bool:
    """Whether a firing alert mutes ``target`` (an alert never inhibits itself)."""
    rules = list(rules)
    for source in firing:
        if source.state != FIRING or (source.rule, source.fingerprint) == (
                target.rule, target.fingerprint):
            continue
        if by_hierarchy and _below(source, target):
            return True
        if any(_inhibits(rule, source, target) for rule in rules):
            return True
    return False


def _muted(alerts: list[AlertInstance], others: list[AlertInstance], rules: RuleFile,
           silences: list[Silence], as_of: date) -> list[AlertInstance]:
    """``alerts`` with their silences and inhibition set (sources: every firing alert)."""
    firing = [a for a in [*alerts, *others] if a.state == FIRING]
    return [replace(a, silenced_by=silenced_by(a.labels, silences, as_of),
                    inhibited=inhibited(a, firing, rules.inhibit_rules, rules.inhibit_by_hierarchy))
            for a in alerts]


# --- routing and notifications -------------------------------------------------------------------


@dataclass(frozen=True)
class _RouteMatch:
    receiver: str
    group_by: tuple[str, ...]
    repeat_interval: timedelta | None


def _settings(route: Route, parent: _RouteMatch | None) -> _RouteMatch:
    return _RouteMatch(
        receiver=route.receiver or (parent.receiver if parent else ""),
        group_by=tuple(route.group_by) if route.group_by is not None else (
            parent.group_by if parent else ()),
        repeat_interval=route.repeat_interval if route.repeat_interval is not None else (
            parent.repeat_interval if parent else None),
    )


def route_alert(route: Route, labels: Mapping[str, str],
                parent: _RouteMatch | None = None) -> list[_RouteMatch]:
    """Alertmanager routing: the deepest matching routes (first match wins unless continue)."""
    here = _settings(route, parent)
    found: list[_RouteMatch] = []
    for child in route.routes:
        if matches_all(child.matchers, labels):
            found.extend(route_alert(child, labels, here))
            if not child.continue_:
                break
    return found or [here]


def _news(alert: AlertInstance, as_of: date, repeat: timedelta | None) -> bool:
    """Whether this evaluation has something to tell about the alert."""
    if alert.muted:
        return False
    if alert.state == FIRING:
        if alert.notified_state != FIRING:
            return True
        last = alert.last_notified_at
        return repeat is not None and last is not None and as_of - last >= repeat
    return alert.state == RESOLVED and alert.since == as_of and alert.notified_state == FIRING


def _iso(day: date | None) -> str:
    return _ZERO_TIME if day is None else f"{day.isoformat()}T00:00:00Z"


def _alert_payload(alert: AlertInstance) -> dict[str, Any]:
    return {
        "status": FIRING if alert.state == FIRING else RESOLVED,
        "labels": alert.labels,
        "annotations": {**alert.annotations,
                        "explanation": str(alert.details.get(EXPLANATION, ""))},
        "startsAt": _iso(alert.fired_at or alert.active_at),
        "endsAt": _iso(alert.resolved_at if alert.state == RESOLVED else None),
        "generatorURL": "",
        "fingerprint": alert.fingerprint,
        "value": alert.value,
        "threshold": alert.threshold,
        "message": alert.message,
    }


def _common(dicts: list[Mapping[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def _group_labels(labels: Mapping[str, str], group_by: tuple[str, ...]) -> dict[str, str]:
    if "..." in group_by:  # Alertmanager: group by every label
        return dict(labels)
    return {k: labels[k] for k in group_by if k in labels}


def _payload(receiver: str, group: dict[str, str], alerts: list[AlertInstance],
             as_of: date) -> dict[str, Any]:
    items = [_alert_payload(a) for a in alerts]
    return {
        "version": "4",
        "groupKey": f"{receiver}:{format_labels(group, skip=())}",
        "truncatedAlerts": 0,
        "status": FIRING if any(i["status"] == FIRING for i in items) else RESOLVED,
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": _common([i["labels"] for i in items]),
        "commonAnnotations": _common([i["annotations"] for i in items]),
        "externalURL": "",
        "asOf": as_of.isoformat(),
        "alerts": items,
    }


def _destinations(receiver: Receiver) -> list[tuple[str, str, dict[str, Any]]]:
    hooks = [("webhook", w.url, {"timeout": w.timeout.total_seconds(), "headers": w.headers})
             for w in receiver.webhook_configs]
    return hooks + [("file", f.path, {}) for f in receiver.file_configs]


def _dedup_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:40]


def plan_notifications(rules: RuleFile, alerts: list[AlertInstance], as_of: date
                       ) -> tuple[list[OutboxMessage], list[AlertInstance]]:
    """Group the alerts that have news per receiver and ``group_by`` labels.

    A group is notified when one of its alerts has news (newly firing, newly resolved, or due a
    repeat); its payload then lists every unmuted firing alert of the group too, as
    Alertmanager does.

    Returns:
        the outbox messages, and ``alerts`` with ``notified_state``/``last_notified_at`` updated.
    """
    if rules.route is None:
        return [], [_settle(a, False, as_of) for a in alerts]
    groups: dict[tuple[str, str], tuple[dict[str, str], list[AlertInstance], list[bool]]] = {}
    told: set[tuple[str, str]] = set()
    for alert in alerts:
        if alert.state not in (FIRING, RESOLVED) or alert.muted:
            continue
        for match in route_alert(rules.route, alert.labels):
            news = _news(alert, as_of, match.repeat_interval)
            if alert.state == RESOLVED and not news:
                continue
            labels = _group_labels(alert.labels, match.group_by)
            key = (match.receiver, format_labels(labels, skip=()))
            entry = groups.setdefault(key, (labels, [], []))
            entry[1].append(alert)
            entry[2].append(news)
    messages = []
    for (receiver, _), (labels, members, news_flags) in sorted(groups.items()):
        if not any(news_flags):
            continue
        told.update((a.rule, a.fingerprint) for a in members)
        payload = _payload(receiver, labels, members, as_of)
        for kind, target, options in _destinations(rules.receiver(receiver)):
            statuses = sorted((a.rule, a.fingerprint, a.state) for a in members)
            dedup = _dedup_key(receiver, kind, target, payload["groupKey"], as_of, statuses)
            messages.append(OutboxMessage(dedup, receiver, kind, target, payload, as_of, options))
    return messages, [_settle(a, (a.rule, a.fingerprint) in told, as_of) for a in alerts]


def _settle(alert: AlertInstance, notified: bool, as_of: date) -> AlertInstance:
    """Remember what was told: a notified alert's state, or forget it once it stops firing."""
    if notified:
        return replace(alert, notified_state=alert.state, last_notified_at=as_of)
    if alert.state in (RESOLVED, NORMAL, PENDING) and alert.notified_state is not None:
        return replace(alert, notified_state=None)
    return alert


def with_extra_receiver(rules: RuleFile, webhook_url: str | None, file_path: str | None
                        ) -> RuleFile:
    """Also notify a webhook and/or file given by settings or CLI options (every alert)."""
    if not webhook_url and not file_path:
        return rules
    receiver = Receiver(
        name=EXTRA_RECEIVER,
        webhook_configs=[WebhookConfig(url=webhook_url)] if webhook_url else [],
        file_configs=[FileConfig(path=file_path)] if file_path else [],
    )
    if rules.route is None:
        route = Route(receiver=EXTRA_RECEIVER, group_by=[ALERTNAME])
    else:
        # A new root: the extra receiver first (continue), then the file's own route tree as a
        # catch-all child, so the file's routing is unchanged.
        extra = Route.model_validate({"receiver": EXTRA_RECEIVER, "continue": True,
                                      "group_by": rules.route.group_by or [ALERTNAME]})
        route = Route(receiver=EXTRA_RECEIVER, routes=[extra, rules.route])
    return rules.model_copy(update={"receivers": [*rules.receivers, receiver], "route": route})


# --- the evaluation ------------------------------------------------------------------------------


@dataclass
class EvaluationReport:
    """What one evaluation did.

    Attributes:
        as_of: the evaluation date.
        evaluated: rules evaluated now.
        already: rules already evaluated at this as_of (left unchanged: idempotence).
        skipped: rule -> why it was skipped (its metric is not available yet).
        transitions: the state changes recorded.
        notifications: outbox messages written.
    """

    as_of: date
    evaluated: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    notifications: int = 0


def _metric_frames(rules: RuleFile, context: MetricContext, as_of: date, names: set[str]
                   ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    frames, skipped = {}, {}
    for _, rule in rules.rules:
        if rule.alert not in names:
            continue
        try:
            frames[rule.alert] = compute_metric(rule.metric, context, pd.Timestamp(as_of),
                                                rule.params)
        except MetricUnavailable as exc:
            skipped[rule.alert] = str(exc)
    return frames, skipped


def _apply_all(rules: RuleFile, frames: Mapping[str, pd.DataFrame],
               prior: list[AlertInstance], as_of: date
               ) -> tuple[list[AlertInstance], list[Transition], dict[str, int]]:
    """Every evaluated rule applied to its frame: alerts, transitions, alerts per rule."""
    by_rule: dict[str, dict[str, AlertInstance]] = {}
    for alert in prior:
        by_rule.setdefault(alert.rule, {})[alert.fingerprint] = alert
    updated: list[AlertInstance] = []
    transitions: list[Transition] = []
    counts: dict[str, int] = {}
    for group, rule in rules.rules:
        if rule.alert in frames:
            alerts, moves = apply_rule(group, rule, frames[rule.alert],
                                       by_rule.get(rule.alert, {}), as_of)
            updated += alerts
            transitions += moves
            counts[rule.alert] = len(alerts)
    return updated, transitions, counts


def _with_mute_flags(transitions: list[Transition], alerts: list[AlertInstance]
                     ) -> list[Transition]:
    """History records whether a change happened while silenced or inhibited."""
    by_key = {(a.rule, a.fingerprint): a for a in alerts}
    return [replace(t, silenced=bool(by_key[(t.rule, t.fingerprint)].silenced_by),
                    inhibited=by_key[(t.rule, t.fingerprint)].inhibited) for t in transitions]


def evaluate(rules: RuleFile, context: MetricContext, store: AlertStore, as_of: date
             ) -> EvaluationReport:
    """Evaluate every rule at ``as_of``, record the state changes and queue notifications.

    Raises:
        OutOfOrder: ``as_of`` is before the last evaluation of some rule (nothing written).
        AlreadyEvaluated: a concurrent run recorded the same (rule, as_of) first.
    """
    names = [rule.alert for _, rule in rules.rules]
    last = store.last_evaluated(names)
    later = {rule: day for rule, day in last.items() if day > as_of}
    if later:
        raise OutOfOrder(as_of, later)
    report = EvaluationReport(as_of, already=[n for n in names if last.get(n) == as_of])
    frames, report.skipped = _metric_frames(rules, context, as_of,
                                            set(names) - set(report.already))
    updated, transitions, counts = _apply_all(rules, frames, store.alerts(rules=list(frames)),
                                              as_of)
    # Inhibition sources: every firing alert, of this file's rules or any other.
    others = [a for a in store.alerts(states=[FIRING]) if a.rule not in counts]
    updated = _muted(updated, others, rules, store.silences(), as_of)
    messages, updated = plan_notifications(rules, updated, as_of)
    report.evaluated = list(counts)
    report.transitions = _with_mute_flags(transitions, updated)
    report.notifications = store.commit_evaluation(as_of, counts, updated, report.transitions,
                                                   messages)
    return report


# --- rule unit tests (promtool test rules) -------------------------------------------------------


def _expand(values: str) -> list[float | None]:
    """promtool's expanding notation: ``1+2x3`` -> 1 3 5 7, ``5x2`` -> 5 5 5, ``_`` = missing,
    ``_x3`` -> 3 missing."""
    out: list[float | None] = []
    for token in str(values).split():
        base, _, times = token.partition("x")
        count = int(times) if times else 0
        if base == "_":
            out += [None] * (count if times else 1)
            continue
        start, delta = _start_delta(base)
        out += [start + delta * i for i in range(count + 1)]
    return out


def _start_delta(text: str) -> tuple[float, float]:
    for sign in ("+", "-"):
        at = text.find(sign, 1)
        if at > 0:
            delta = float(text[at + 1:])
            return float(text[:at]), delta if sign == "+" else -delta
    return float(text), 0.0


def _series_labels(text: str) -> tuple[str, dict[str, str]]:
    """``pipeline_coverage{scope="region", region="North"}`` -> (metric, labels)."""
    name, _, rest = str(text).strip().partition("{")
    labels: dict[str, str] = {}
    body = rest.rstrip().removesuffix("}")
    for part in filter(None, (p.strip() for p in _split_labels(body))):
        key, _, value = part.partition("=")
        labels[key.strip()] = value.strip().strip('"')
    return name.strip(), labels


def _split_labels(body: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in body:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


@dataclass
class RuleTestFailure:
    """One failing expectation, with a readable diff."""

    file: str
    test: str
    alertname: str
    eval_time: str
    diff: str

    def __str__(self) -> str:
        return (f"FAILED {self.file}: test {self.test!r}, alertname {self.alertname}, "
                f"eval_time {self.eval_time}:\n{self.diff}")


@dataclass
class RuleTestReport:
    """Outcome of ``warnings test``: checks run and failures."""

    checks: int = 0
    failures: list[RuleTestFailure] = field(default_factory=list)


def _series_frames(test: Mapping[str, Any], rules: RuleFile, where: str
                   ) -> dict[str, list[tuple[dict[str, str], list[float | None]]]]:
    """Per metric: (labels, values at each interval) of every input series."""
    known = {rule.metric for _, rule in rules.rules}
    series: dict[str, list[tuple[dict[str, str], list[float | None]]]] = {}
    for item in test.get("input_series") or []:
        metric, labels = _series_labels(item.get("series", ""))
        if metric not in known:
            raise RuleFileError([f"{where}: series {item.get('series')!r}: no rule uses metric "
                                 f"{metric!r}"])
        series.setdefault(metric, []).append((labels, _expand(item.get("values", ""))))
    return series


def _frame_at(series: list[tuple[dict[str, str], list[float | None]]], index: int, rule: Rule
              ) -> pd.DataFrame:
    rows = []
    for labels, values in series:
        value = values[index] if index < len(values) else None
        if value is None:
            continue
        scope = labels.get("scope", rule.scope[0])
        rows.append({**labels, SCOPE_COLUMN: scope, VALUE: value})
    return pd.DataFrame(rows, columns=[SCOPE_COLUMN, VALUE]) if not rows else pd.DataFrame(rows)


def _firing_at(rules: RuleFile, series: Mapping[str, Any], start: date, interval: timedelta,
               until: timedelta) -> dict[int, dict[str, list[AlertInstance]]]:
    """Run every rule at each interval from ``start``; firing alerts per step and rule."""
    alerts: dict[str, dict[str, AlertInstance]] = {r.alert: {} for _, r in rules.rules}
    steps = int(until / interval) if interval > timedelta(0) else 0
    out: dict[int, dict[str, list[AlertInstance]]] = {}
    for index in range(steps + 1):
        as_of = start + interval * index
        for group, rule in rules.rules:
            if rule.metric not in series and not alerts[rule.alert]:
                continue  # no values, no alerts: nothing can change
            frame = _frame_at(series.get(rule.metric, []), index, rule)
            new, _ = apply_rule(group, rule, frame, alerts[rule.alert], as_of)
            alerts[rule.alert] = {a.fingerprint: a for a in new}
        out[index] = {name: [a for a in found.values() if a.state == FIRING]
                      for name, found in alerts.items()}
    return out


def _lines(alerts: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted(json.dumps(a, sort_keys=True, ensure_ascii=False) for a in alerts)


def _check_case(case: Mapping[str, Any], got: list[AlertInstance], failure: RuleTestFailure
                ) -> RuleTestFailure | None:
    expected = case.get("exp_alerts") or []
    want = [{"labels": {k: str(v) for k, v in (e.get("exp_labels") or {}).items()},
             "annotations": {k: str(v) for k, v in (e.get("exp_annotations") or {}).items()}}
            for e in expected]
    # Annotations are compared only where the test states them: the keys its expected alert
    # with the same labels names.
    named = {_lines([w["labels"]])[0]: set(w["annotations"]) for w in want}
    have = []
    for alert in got:
        labels = {k: v for k, v in alert.labels.items() if k != ALERTNAME}
        keys = named.get(_lines([labels])[0], set())
        have.append({"labels": labels,
                     "annotations": {k: v for k, v in alert.annotations.items() if k in keys}})
    if _lines(want) == _lines(have):
        return None
    diff = "\n".join(difflib.unified_diff(_lines(want), _lines(have), "expected", "got",
                                          lineterm=""))
    return replace(failure, diff=diff)


def _run_test_group(test: Mapping[str, Any], rules: RuleFile, file: str, default_interval: str
                    ) -> RuleTestReport:
    name = str(test.get("name", "unnamed"))
    where = f"{file}: test {name!r}"
    interval = parse_duration(test.get("interval", default_interval))
    start = date.fromisoformat(str(test.get("start", "2026-01-01")))
    series = _series_frames(test, rules, where)
    cases = test.get("alert_rule_test") or []
    times = [parse_duration(c.get("eval_time", "0")) for c in cases]
    firing = _firing_at(rules, series, start, interval, max(times, default=timedelta(0)))
    report = RuleTestReport()
    names = {r.alert for _, r in rules.rules}
    for case, at in zip(cases, times, strict=True):
        alertname = str(case.get("alertname", ""))
        if alertname not in names:
            raise RuleFileError([f"{where}: alertname {alertname!r} is not a rule of the file"])
        index = int(at / interval) if interval > timedelta(0) else 0
        report.checks += 1
        failure = RuleTestFailure(file, name, alertname, str(case.get("eval_time", "0")), "")
        failed = _check_case(case, firing[index][alertname], failure)
        if failed is not None:
            report.failures.append(failed)
    return report


def run_rule_tests(path: str | Path) -> RuleTestReport:
    """Run a ``promtool test rules``-style file against the rule files it names.

    Format (durations in as_of time; ``start`` is the date of step 0)::

        rule_files: [../default.yaml]      # relative to the test file
        evaluation_interval: 1d
        tests:
          - name: coverage drops
            interval: 1d
            start: 2026-01-01
            input_series:
              - series: 'pipeline_coverage{scope="region", region="North"}'
                values: '3.5 2.5x20'        # promtool expanding notation; _ = no value
            alert_rule_test:
              - eval_time: 14d
                alertname: PipelineCoverageLow
                exp_alerts:
                  - exp_labels: {scope: region, region: North, severity: warning}
                    exp_annotations: {summary: "..."}   # only the keys given are compared

    Expected alerts are the firing ones (pending alerts are not listed, as in promtool).

    Raises:
        RuleFileError: the test file or a rule file it names is malformed.
    """
    file = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RuleFileError([f"{file}: cannot read the test file: {exc}"]) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tests"), list):
        raise RuleFileError([f"{file}: expected a mapping with rule_files and a tests list"])
    rule_files = raw.get("rule_files") or []
    problems, merged = [], []
    for name in rule_files:
        try:
            merged.append(load_rules(Path(path).parent / str(name)))
        except RuleFileError as exc:
            problems += exc.problems
    if problems or not merged:
        raise RuleFileError(problems or [f"{file}: rule_files names no rule file"])
    rules = merged[0].model_copy(update={"groups": [g for m in merged for g in m.groups]})
    report = RuleTestReport()
    for test in raw["tests"]:
        part = _run_test_group(test, rules, file, str(raw.get("evaluation_interval", "1d")))
        report.checks += part.checks
        report.failures += part.failures
    return report

