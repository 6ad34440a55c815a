"""Evaluation at an as_of: metric frames -> alert state changes -> muting -> the outbox.

Every rule of a file is applied to its metric frame (:mod:`engine.alerting.state`), its alerts
are muted by silences and inhibition (:mod:`engine.alerting.mute`; inhibition sources are every
firing alert, of this file's rules or any other), and the notifications are grouped and routed
(:mod:`engine.alerting.route`) and written to the outbox in the same transaction as the state
changes.

Evaluation is idempotent per (rule, as_of): a rule already evaluated at ``as_of`` is left as is
(nothing recomputed, nothing sent twice). An ``as_of`` earlier than a rule's last evaluation is
refused with :class:`OutOfOrder` before anything is written: alert state only moves forward in
as_of time, so replaying the past needs a fresh database. A replay that resumes (``resume``)
leaves such rules alone instead: a replay interrupted by a crash is rerun as it was, and the
dates it already covered are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date

import pandas as pd

from engine.alerting.catalogue import MetricCatalogue, MetricSource
from engine.alerting.mute import Inhibitor, Silencer, mute
from engine.alerting.route import plan_notifications
from engine.alerting.rules import RuleFile
from engine.alerting.state import apply_rule
from engine.alerting.store import FIRING, AlertInstance, AlertStore, Transition

__all__ = ["EvaluationReport", "OutOfOrder", "evaluate"]


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


def _metric_frames(rules: RuleFile, source: MetricSource, as_of: date, names: set[str]
                   ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    frames, skipped = {}, {}
    for _, rule in rules.rules:
        if rule.alert not in names:
            continue
        try:
            frames[rule.alert] = source.frame(rule.metric, pd.Timestamp(as_of), rule.params)
        except source.unavailable as exc:
            skipped[rule.alert] = str(exc)
    return frames, skipped


def _apply_all(rules: RuleFile, frames: Mapping[str, pd.DataFrame],
               prior: list[AlertInstance], as_of: date, catalogue: MetricCatalogue
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
                                       by_rule.get(rule.alert, {}), as_of, catalogue)
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


def evaluate(rules: RuleFile, source: MetricSource, store: AlertStore, as_of: date,
             resume: bool = False) -> EvaluationReport:
    """Evaluate every rule at ``as_of``, record the state changes and queue notifications.

    Args:
        source: the metric frames and the catalogue the rules were checked against.
        resume: a rule already evaluated at a later as_of is left alone (listed in
            ``already``) instead of refused: a replay rerun after a crash.

    Raises:
        OutOfOrder: ``as_of`` is before the last evaluation of some rule (nothing written).
        AlreadyEvaluated: a concurrent run recorded the same (rule, as_of) first.
    """
    names = [rule.alert for _, rule in rules.rules]
    last = store.last_evaluated(names)
    later = {rule: day for rule, day in last.items() if day > as_of}
    if later and not resume:
        raise OutOfOrder(as_of, later)
    report = EvaluationReport(as_of, already=[n for n in names if n in last and last[n] >= as_of])
    frames, report.skipped = _metric_frames(rules, source, as_of,
                                            set(names) - set(report.already))
    updated, transitions, counts = _apply_all(rules, frames, store.alerts(rules=list(frames)),
                                              as_of, source.catalogue)
    # Inhibition sources: every firing alert, of this file's rules or any other.
    others = [a for a in store.alerts(states=[FIRING]) if a.rule not in counts]
    firing = [a for a in [*updated, *others] if a.state == FIRING]
    inhibitor = Inhibitor(firing, rules.inhibit_rules, rules.inhibit_by_hierarchy,
                          source.catalogue)
    updated = mute(updated, Silencer(store.silences(), as_of), inhibitor)
    messages, updated = plan_notifications(rules, updated, as_of)
    report.evaluated = list(counts)
    report.transitions = _with_mute_flags(transitions, updated)
    report.notifications = store.commit_evaluation(as_of, counts, updated, report.transitions,
                                                   messages)
    return report
