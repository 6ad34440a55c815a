"""The alert state machine: metric frames in, alerts and their state changes out (pure).

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

An alert is identified by its labels (:func:`alert_labels`: name, scope, severity, the scope's
labels from the metric catalogue, group and rule labels) through their :func:`fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from engine.alerting.catalogue import EXPLANATION, SCOPE_COLUMN, VALUE, MetricCatalogue
from engine.alerting.rules import ALERTNAME, Group, Rule, compare, format_duration, render
from engine.alerting.store import (
    FIRING,
    NORMAL,
    PENDING,
    RESOLVED,
    AlertInstance,
    Transition,
    json_safe,
)

__all__ = [
    "alert_labels",
    "apply_rule",
    "fingerprint",
    "format_labels",
    "node_name",
    "step",
]


def step(alert: AlertInstance, breached: bool, as_of: date, hold: timedelta,
         keep: timedelta) -> AlertInstance:
    """The alert after one evaluation at ``as_of`` (see the module docstring)."""
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


def alert_labels(group: Group, rule: Rule, scope: str, sample: Mapping[str, Any],
                 catalogue: MetricCatalogue) -> dict[str, str]:
    """An alert's identity: name, scope, severity, the scope's labels, group and rule labels."""
    labels = {ALERTNAME: rule.alert, "scope": scope, "severity": rule.severity}
    for name in catalogue.scope_labels[scope]:
        value = _label_value(sample.get(name))
        if value is not None:
            labels[name] = value
    return {**labels, **group.labels, **rule.labels}


def _details(sample: Mapping[str, Any], catalogue: MetricCatalogue) -> dict[str, Any]:
    known = {SCOPE_COLUMN, VALUE, EXPLANATION, *catalogue.label_columns()}
    return json_safe({k: v for k, v in sample.items() if k not in known})


def _value(sample: Mapping[str, Any] | None) -> float | None:
    if sample is None:
        return None
    value = sample.get(VALUE)
    if value is None or value is pd.NA:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def node_name(labels: Mapping[str, str], catalogue: MetricCatalogue) -> str:
    """The alert's node in words: ``region North``, ``rep Ana``, ``company``."""
    scope = labels.get("scope", "")
    own = catalogue.scope_labels.get(scope, ())
    return f"{scope} {labels.get(own[-1], '?')}" if own else "company"


def _refresh(alert: AlertInstance, rule: Rule, sample: Mapping[str, Any] | None,
             as_of: date, catalogue: MetricCatalogue) -> AlertInstance:
    """Latest value, details, rendered annotations and message (kept when no sample came)."""
    value = _value(sample) if sample is not None else alert.value
    details = _details(sample, catalogue) if sample is not None else alert.details
    explanation = str(sample.get(EXPLANATION) or "") if sample is not None else details.get(
        EXPLANATION, "")
    details = {**details, EXPLANATION: explanation}
    namespace = {
        **details, "value": value, "threshold": rule.threshold, "op": rule.op,
        "alert": rule.alert, ALERTNAME: rule.alert, "severity": rule.severity,
        "metric": rule.metric, "scope": alert.labels.get("scope"), "labels": alert.labels,
        "node": node_name(alert.labels, catalogue), "details": details, "explanation": explanation,
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


_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}


def _worth_a_look(rows: pd.DataFrame, rule: Rule, group: Group,
                  prior: Mapping[str, AlertInstance], catalogue: MetricCatalogue
                  ) -> pd.DataFrame:
    """The rows of a rule's frame that breach (as :func:`compare` says, on the whole column) or
    whose scope and scope labels are those of a prior alert; :func:`apply_rule` drops the rest
    (a label set that never breached), so they need no dict, labels or fingerprint. A customer
    rule over 200,000 customers builds a few hundred instead.

    ``rows`` is returned whole when the shortcut could differ: values that are not numbers,
    group or rule labels that override an identity label, a scope the catalogue does not
    know, or two rows of one label set (the last one wins, as in :func:`_samples`).
    """
    if rows.empty or VALUE not in rows.columns or rule.op not in _OPS:
        return rows
    scopes = (rows[SCOPE_COLUMN].astype(str) if SCOPE_COLUMN in rows.columns
              else pd.Series(rule.scope[0], index=rows.index))
    present = set(scopes.unique())
    if not present <= set(catalogue.scope_labels):
        return rows
    names = [n for n in dict.fromkeys(n for s in present for n in catalogue.scope_labels[s])
             if n in rows.columns]
    if {**group.labels, **rule.labels}.keys() & {ALERTNAME, "scope", "severity",
                                                   *catalogue.label_columns()}:
        return rows
    try:
        values = pd.to_numeric(rows[VALUE], errors="raise").astype(float)
    except (TypeError, ValueError):
        return rows
    if pd.concat([scopes, rows[names]], axis=1).duplicated().any():
        return rows
    keep = (_OPS[rule.op](values, rule.threshold) & values.notna()).to_numpy(copy=True)
    known: dict[str, set[tuple[str | None, ...]]] = {}
    for alert in prior.values():
        scope = alert.labels.get("scope", "")
        if scope in catalogue.scope_labels:
            known.setdefault(scope, set()).add(
                tuple(alert.labels.get(k) for k in catalogue.scope_labels[scope]))
    for scope, keys in known.items():
        at = (scopes == scope).to_numpy() & ~keep
        if not at.any():
            continue
        columns = [rows.loc[at, k].map(_label_value) if k in rows.columns
                   else pd.Series(None, index=rows.index[at], dtype=object)
                   for k in catalogue.scope_labels[scope]]
        found = [key in keys for key in zip(*columns, strict=True)] if columns else [
            () in keys] * int(at.sum())
        keep[np.flatnonzero(at)] = found
    return rows[keep]


def _samples(rule: Rule, group: Group, frame: pd.DataFrame, catalogue: MetricCatalogue,
             prior: Mapping[str, AlertInstance] | None = None
             ) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    """Per fingerprint: the alert labels and the metric row, for the rule's scopes.

    With ``prior`` (the rule's alerts), only the rows :func:`apply_rule` can use: those that
    breach and those of a label set with a prior alert (see :func:`_worth_a_look`).
    """
    if frame.empty:
        return {}
    rows = frame[frame[SCOPE_COLUMN].isin(rule.scope)] if SCOPE_COLUMN in frame.columns else frame
    if prior is not None:
        rows = _worth_a_look(rows, rule, group, prior, catalogue)
    out = {}
    for record in rows.to_dict(orient="records"):
        sample = {str(k): v for k, v in record.items()}
        scope = str(sample.get(SCOPE_COLUMN, rule.scope[0]))
        labels = alert_labels(group, rule, scope, sample, catalogue)
        out[fingerprint(labels)] = (labels, sample)
    return out


def apply_rule(group: Group, rule: Rule, frame: pd.DataFrame,
               prior: Mapping[str, AlertInstance], as_of: date, catalogue: MetricCatalogue
               ) -> tuple[list[AlertInstance], list[Transition]]:
    """One rule's evaluation: its alerts after ``as_of`` and the state changes (pure).

    Args:
        frame: the metric frame (``scope``, label columns, ``value``, explanation, details).
        prior: the rule's alerts by fingerprint before this evaluation.
        catalogue: the scopes' labels (an alert's identity).
    """
    samples = _samples(rule, group, frame, catalogue, prior)
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
        # made it fire, as Prometheus keeps the last firing sample, not "<no value>x". A known
        # alert whose metric has no value now (a gap the run rate covers) keeps its last words
        # too, also when it resolves.
        kept = (stepped.state == FIRING and not breached) or (
            old is not None and _value(sample) is None)
        new = _refresh(stepped, rule, None if kept else sample, as_of, catalogue)
        alerts.append(new)
        before = old.state if old is not None else NORMAL
        if new.state != before:
            transitions.append(Transition(rule.alert, fp, new.labels, as_of, before, new.state,
                                          new.value, rule.threshold, new.message))
    return alerts, transitions

