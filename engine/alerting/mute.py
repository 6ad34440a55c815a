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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Protocol

from engine.alerting.catalogue import MetricCatalogue
from engine.alerting.rules import InhibitRule, matches_all
from engine.alerting.store import FIRING, AlertInstance, Silence

__all__ = ["CONCERN", "Inhibitor", "Muter", "Silencer", "mute", "mutes_pairwise"]

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

    The firing sources are indexed when the inhibitor is made (by the labels that must be
    equal: the source scope's labels for hierarchy, ``equal`` for each inhibit rule; a source
    changed afterwards is not seen), so each alert looks up its few
    candidate sources instead of comparing itself with every source; the answer is the one
    :func:`mutes_pairwise` gives.

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
    _index: _Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _Index.build(self))

    def mutes(self, alert: AlertInstance) -> list[str]:
        first = self._index.first(self, alert)
        return [] if first is None else [self.sources[first].fingerprint]

    def _below(self, source: AlertInstance, target: AlertInstance) -> bool:
        """``target`` is a related alert (:func:`_related`) at a node under ``source``'s node."""
        labels = self.catalogue.scope_labels
        src, dst = source.labels.get("scope", ""), target.labels.get("scope", "")
        if not _related(source, target) or src not in labels or dst not in labels:
            return False
        if len(labels[src]) >= len(labels[dst]):
            return False
        return all(target.labels.get(k) == source.labels.get(k) for k in labels[src])


def mutes_pairwise(inhibitor: Inhibitor, alert: AlertInstance) -> list[str]:
    """The reference answer of :meth:`Inhibitor.mutes`: every source compared with ``alert``."""
    for source in inhibitor.sources:
        if source.state != FIRING or (source.rule, source.fingerprint) == (
                alert.rule, alert.fingerprint):
            continue
        if inhibitor.by_hierarchy and inhibitor._below(source, alert):
            return [source.fingerprint]
        if any(_inhibits(rule, source, alert) for rule in inhibitor.rules):
            return [source.fingerprint]
    return []


_Key = tuple[str | None, ...]


@dataclass
class _Index:
    """Firing sources (their positions, in order) by the labels a target must share.

    ``node``: (source scope, its scope labels' values) -> per rule name the positions, and per
    non-empty ``concern`` label the positions with their severity rank (hierarchy).
    ``equal``: per inhibit rule, the ``equal`` labels' values -> positions of the sources
    its source matchers match.
    """

    node: dict[tuple[str, _Key], tuple[dict[str, list[int]], dict[str, list[tuple[int, int]]]]]
    equal: list[dict[_Key, list[int]]]

    @staticmethod
    def build(inhibitor: Inhibitor) -> _Index:
        scopes = inhibitor.catalogue.scope_labels
        node: dict[tuple[str, _Key], tuple[dict[str, list[int]],
                                          dict[str, list[tuple[int, int]]]]] = {}
        equal: list[dict[_Key, list[int]]] = [{} for _ in inhibitor.rules]
        for i, source in enumerate(inhibitor.sources):
            if source.state != FIRING:
                continue
            got = source.labels.get
            scope = got("scope", "")
            if inhibitor.by_hierarchy and scope in scopes:
                by_rule, by_concern = node.setdefault(
                    (scope, tuple(got(k) for k in scopes[scope])), ({}, {}))
                by_rule.setdefault(source.rule, []).append(i)
                concern = got(CONCERN)
                if concern:
                    by_concern.setdefault(concern, []).append(
                        (i, _SEVERITY_RANK.get(got("severity", ""), 0)))
            for rule, found in zip(inhibitor.rules, equal, strict=True):
                if matches_all(rule.source_matchers, source.labels):
                    found.setdefault(tuple(got(k) for k in rule.equal), []).append(i)
        return _Index(node, equal)

    def first(self, inhibitor: Inhibitor, alert: AlertInstance) -> int | None:
        """The position of the first firing source that mutes ``alert`` (None: none does)."""
        sources, me = inhibitor.sources, (alert.rule, alert.fingerprint)

        def not_me(positions: Iterable[int]) -> int | None:
            return next((i for i in positions
                         if (sources[i].rule, sources[i].fingerprint) != me), None)

        found: list[int] = []
        got = alert.labels.get
        scopes = inhibitor.catalogue.scope_labels
        scope = got("scope", "")
        if self.node and scope in scopes:
            depth, concern = len(scopes[scope]), got(CONCERN)
            rank = _SEVERITY_RANK.get(got("severity", ""), 0)
            for src, own in scopes.items():
                if len(own) >= depth:
                    continue
                bucket = self.node.get((src, tuple(got(k) for k in own)))
                if bucket is None:
                    continue
                by_rule, by_concern = bucket
                hit = not_me(by_rule.get(alert.rule, []))
                if hit is not None:
                    found.append(hit)
                if concern:
                    hit = not_me(i for i, r in by_concern.get(concern, []) if r >= rank)
                    if hit is not None:
                        found.append(hit)
        for rule, index in zip(inhibitor.rules, self.equal, strict=True):
            if index and matches_all(rule.target_matchers, alert.labels):
                hit = not_me(index.get(tuple(got(k) for k in rule.equal), []))
                if hit is not None:
                    found.append(hit)
        return min(found) if found else None


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
