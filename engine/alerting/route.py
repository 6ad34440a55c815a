"""Routing and grouping, as Alertmanager does it: alerts with news -> outbox messages.

:func:`route_alert` walks the rule file's route tree (the first matching child wins unless it
says ``continue``); :func:`plan_notifications` groups the alerts that have news per receiver by
the route's ``group_by`` labels and builds one Alertmanager-like payload (version 4) per group
and destination. The messages are written to the outbox in the same transaction as the state
changes (:mod:`engine.alerting.evaluate`) and delivered by :mod:`engine.alerting.notify`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from engine.alerting.catalogue import EXPLANATION
from engine.alerting.rules import (
    ALERTNAME,
    FileConfig,
    Receiver,
    Route,
    RuleFile,
    WebhookConfig,
    matches_all,
)
from engine.alerting.state import format_labels
from engine.alerting.store import FIRING, NORMAL, PENDING, RESOLVED, AlertInstance, OutboxMessage

__all__ = ["EXTRA_RECEIVER", "plan_notifications", "route_alert", "with_extra_receiver"]

EXTRA_RECEIVER = "quotacast-settings"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert


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
