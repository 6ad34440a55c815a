"""Muting, as Alertmanager does it: a :class:`Silencer` and an :class:`Inhibitor` behind one
:class:`Muter`.

- Silences: matchers and a window in as_of time; an alert that matches an active silence is
  silenced (its ``silenced_by`` lists the silences).
- Inhibition: a firing source mutes matching targets with equal labels (the rule file's
  ``inhibit_rules``) and, on by default, by hierarchy: a firing alert at a node mutes related
  alerts below that node (a region mutes its teams, reps, customers and deals). Related means the
  same rule, or a rule with the same ``concern`` label whose severity is not higher (a critical
  region is still told under a warning company; a firing company attainment alert keeps the pace
  alerts of its reps quiet, while its message names the nodes furthest behind).

Muted alerts still change state and history; they are only not notified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Protocol

from engine.alerting.catalogue import MetricCatalogue
from engine.alerting.rules import InhibitRule, matches_all
from engine.alerting.store import FIRING, AlertInstance, Silence

__all__ = ["CONCERN", "Inhibitor", "Muter", "Silencer", "mute"]

# The label that names what a rule is about (attainment, receivables...): rules sharing it are
# related for inhibition by hierarchy.
CONCERN = "concern"
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


class Muter(Protocol):
    """What Alertmanager's ``notify.Muter`` is: whether something mutes an alert."""

    def mutes(self, alert: AlertInstance) -> list[str]:
        """The ids of what mutes ``alert`` at this evaluation; empty when nothing does."""
        ...


@dataclass(frozen=True)
class Silencer:
    """Mutes the alerts that match a silence active at ``as_of`` (ids: the silences')."""

    silences: Sequence[Silence]
    as_of: date

    def mutes(self, alert: AlertInstance) -> list[str]:
        return [s.id for s in self.silences if s.active_at(self.as_of) and s.matches(alert.labels)]


@dataclass(frozen=True)
class Inhibitor:
    """Mutes the alerts a firing source inhibits (id: the first such source's fingerprint).

    Attributes:
        sources: candidate sources (only firing ones inhibit; an alert never inhibits itself).
        rules: the rule file's ``inhibit_rules``.
        by_hierarchy: the rule file's ``inhibit_by_hierarchy``.
        catalogue: the scopes' labels, whose number is a scope's depth in the hierarchy.
    """

    sources: Sequence[AlertInstance]
    rules: Sequence[InhibitRule]
    by_hierarchy: bool
    catalogue: MetricCatalogue

    def mutes(self, alert: AlertInstance) -> list[str]:
        for source in self.sources:
            if source.state != FIRING or (source.rule, source.fingerprint) == (
                    alert.rule, alert.fingerprint):
                continue
            if self.by_hierarchy and self._below(source, alert):
                return [source.fingerprint]
            if any(_inhibits(rule, source, alert) for rule in self.rules):
                return [source.fingerprint]
        return []

    def _below(self, source: AlertInstance, target: AlertInstance) -> bool:
        """``target`` is a related alert (:func:`_related`) at a node under ``source``'s node."""
        labels = self.catalogue.scope_labels
        src, dst = source.labels.get("scope", ""), target.labels.get("scope", "")
        if not _related(source, target) or src not in labels or dst not in labels:
            return False
        if len(labels[src]) >= len(labels[dst]):
            return False
        return all(target.labels.get(k) == source.labels.get(k) for k in labels[src])


def _related(source: AlertInstance, target: AlertInstance) -> bool:
    """Same rule, or the same ``concern`` label at a severity no higher than the source's."""
    if source.rule == target.rule:
        return True
    concern = source.labels.get(CONCERN)
    return bool(concern) and target.labels.get(CONCERN) == concern and (
        _SEVERITY_RANK.get(target.labels.get("severity", ""), 0)
        <= _SEVERITY_RANK.get(source.labels.get("severity", ""), 0))


def _inhibits(rule: InhibitRule, source: AlertInstance, target: AlertInstance) -> bool:
    return (matches_all(rule.source_matchers, source.labels)
            and matches_all(rule.target_matchers, target.labels)
            and all(source.labels.get(k) == target.labels.get(k) for k in rule.equal))


def mute(alerts: Sequence[AlertInstance], silencer: Muter, inhibitor: Muter
         ) -> list[AlertInstance]:
    """``alerts`` with ``silenced_by`` and ``inhibited`` set by the two muters."""
    return [replace(a, silenced_by=silencer.mutes(a), inhibited=bool(inhibitor.mutes(a)))
            for a in alerts]
