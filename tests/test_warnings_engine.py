"""The pure engine: state machine, for / keep_firing_for, muting, grouping, rule unit tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.alerting.mute import Inhibitor, Muter, Silencer, mute
from engine.alerting.route import (
    EXTRA_RECEIVER,
    plan_notifications,
    route_alert,
    with_extra_receiver,
)
from engine.alerting.rules import InhibitRule, RuleFile, parse_matcher, parse_rules
from engine.alerting.ruletest import _expand, run_rule_tests
from engine.alerting.state import apply_rule, fingerprint, step
from engine.alerting.store import FIRING, NORMAL, PENDING, RESOLVED, AlertInstance, Silence
from features.metrics.alerting import METRIC_CATALOGUE

REPO = Path(__file__).resolve().parents[1]
D0 = date(2026, 1, 1)
DAY = timedelta(days=1)


def _alert(state: str = NORMAL, **fields: Any) -> AlertInstance:
    return replace(AlertInstance("R", "fp", {"alertname": "R"}, state=state), **fields)


# --- the state machine ---------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "breached", "hold", "expected"), [
    (NORMAL, True, 14, PENDING),
    (NORMAL, True, 0, FIRING),
    (NORMAL, False, 14, NORMAL),
    (RESOLVED, True, 14, PENDING),
    (RESOLVED, True, 0, FIRING),
    (RESOLVED, False, 14, NORMAL),
])
def test_step_from_rest(start: str, breached: bool, hold: int, expected: str) -> None:
    after = step(_alert(start), breached, D0, timedelta(days=hold), timedelta(0))
    assert after.state == expected
    if expected != start:
        assert after.since == D0


def test_pending_fires_once_for_has_elapsed_in_as_of_time() -> None:
    hold = timedelta(days=14)
    alert = step(_alert(), True, D0, hold, timedelta(0))
    assert (alert.state, alert.active_at) == (PENDING, D0)
    alert = step(alert, True, D0 + 13 * DAY, hold, timedelta(0))
    assert alert.state == PENDING  # 13 days < 14
    alert = step(alert, True, D0 + 14 * DAY, hold, timedelta(0))
    assert (alert.state, alert.fired_at, alert.since, alert.active_at) == (
        FIRING, D0 + 14 * DAY, D0 + 14 * DAY, D0)


def test_pending_that_clears_goes_back_to_normal() -> None:
    alert = step(_alert(), True, D0, timedelta(days=14), timedelta(0))
    alert = step(alert, False, D0 + DAY, timedelta(days=14), timedelta(0))
    assert (alert.state, alert.active_at, alert.since) == (NORMAL, None, D0 + DAY)
    # A new breach starts the `for` clock again.
    alert = step(alert, True, D0 + 2 * DAY, timedelta(days=14), timedelta(0))
    assert (alert.state, alert.active_at) == (PENDING, D0 + 2 * DAY)


def test_firing_resolves_at_once_without_keep_firing_for() -> None:
    alert = step(_alert(FIRING, fired_at=D0, active_at=D0), False, D0 + DAY, timedelta(0),
                 timedelta(0))
    assert (alert.state, alert.resolved_at) == (RESOLVED, D0 + DAY)
    alert = step(alert, False, D0 + 2 * DAY, timedelta(0), timedelta(0))
    assert alert.state == NORMAL


def test_keep_firing_for_counts_from_the_first_clear_evaluation() -> None:
    keep = timedelta(days=7)
    firing = _alert(FIRING, fired_at=D0, active_at=D0, since=D0)
    alert = step(firing, False, D0 + DAY, timedelta(0), keep)
    assert (alert.state, alert.keep_firing_since) == (FIRING, D0 + DAY)
    alert = step(alert, False, D0 + 7 * DAY, timedelta(0), keep)
    assert alert.state == FIRING  # 6 days since it cleared
    # A new breach resets the clock; the alert never stopped firing.
    again = step(alert, True, D0 + 7 * DAY, timedelta(0), keep)
    assert (again.state, again.keep_firing_since, again.since) == (FIRING, None, D0)
    alert = step(alert, False, D0 + 8 * DAY, timedelta(0), keep)
    assert (alert.state, alert.resolved_at) == (RESOLVED, D0 + 8 * DAY)


@settings(max_examples=200, deadline=None)
@given(breaches=st.lists(st.booleans(), max_size=40), hold=st.integers(0, 6),
       keep=st.integers(0, 4))
def test_daily_evaluations_match_a_reference(breaches: list[bool], hold: int, keep: int) -> None:
    """Evaluated every day: firing iff the breach run has lasted `hold` days, or the alert was
    firing and is breached again, or its breach ended at most `keep` days ago."""
    alert, run, fired, clear = _alert(), 0, False, 0
    for day, breached in enumerate(breaches):
        alert = step(alert, breached, D0 + day * DAY, timedelta(days=hold),
                     timedelta(days=keep))
        run = run + 1 if breached else 0
        clear = 0 if breached else clear + 1
        fired = (breached and (fired or run - 1 >= hold)) or (
            fired and not breached and clear <= keep)
        assert (alert.state == FIRING) == fired, (day, alert)


def test_firing_stays_firing_while_breached() -> None:
    alert = step(_alert(FIRING, fired_at=D0, since=D0), True, D0 + DAY, timedelta(0),
                 timedelta(0))
    assert (alert.state, alert.since) == (FIRING, D0)


# --- one rule over metric frames -----------------------------------------------------------------

RULES = {
    "groups": [{"name": "plan", "labels": {"owner": "ops"}, "rules": [{
        "alert": "PaceBehind", "metric": "pace_against_plan", "scope": ["region", "team"],
        "op": "<", "threshold": 0.9, "for": "14d", "keep_firing_for": "0",
        "labels": {"concern": "pace"},
        "annotations": {"summary": "{{ node }} at {{ value | humanizePercentage }}",
                        "description": "{{ details.target | humanize }} in {{ labels.region }}"},
    }]}],
}


def _rules(extra: dict[str, Any] | None = None) -> RuleFile:
    return parse_rules({**RULES, **(extra or {})}, "test.yaml", catalogue=METRIC_CATALOGUE)


def _frame(*rows: tuple[str, str, str | None, float]) -> pd.DataFrame:
    return pd.DataFrame([
        {"scope": scope, "region": region, "team": team, "value": value,
         "explanation": f"pace {value}", "target": 230000.0}
        for scope, region, team, value in rows
    ])


def _run(rules: RuleFile, frames: list[pd.DataFrame], days: list[int]
         ) -> tuple[dict[str, AlertInstance], list[list[tuple[str, str]]]]:
    group, rule = rules.rules[0]
    alerts: dict[str, AlertInstance] = {}
    moves = []
    for frame, day in zip(frames, days, strict=True):
        new, transitions = apply_rule(group, rule, frame, alerts, D0 + day * DAY,
                                      METRIC_CATALOGUE)
        alerts = {a.fingerprint: a for a in new}
        moves.append([(t.from_state, t.to_state) for t in transitions])
    return alerts, moves


def test_apply_rule_labels_rendering_and_for() -> None:
    rules = _rules()
    low = _frame(("region", "North", None, 0.5), ("team", "North", "N1", 0.95))
    alerts, moves = _run(rules, [low, low, low], [0, 7, 14])
    assert moves == [[(NORMAL, PENDING)], [], [(PENDING, FIRING)]]
    (alert,) = alerts.values()
    assert alert.labels == {"alertname": "PaceBehind", "scope": "region", "severity": "warning",
                            "region": "North", "owner": "ops", "concern": "pace"}
    assert alert.fingerprint == fingerprint(alert.labels)
    assert alert.annotations == {"summary": "region North at 50%",
                                 "description": "230k in North"}
    assert alert.message == "region North at 50%: pace 0.5"  # the explanation is appended
    assert alert.details["target"] == 230000.0 and alert.value == 0.5


def test_missing_or_nan_sample_clears_the_alert() -> None:
    rules = _rules()
    low = _frame(("region", "North", None, 0.5))
    nan = _frame(("region", "North", None, float("nan")))
    empty = _frame()
    alerts, moves = _run(rules, [low, low, nan, low, low, empty], [0, 14, 15, 16, 30, 31])
    assert moves == [[(NORMAL, PENDING)], [(PENDING, FIRING)], [(FIRING, RESOLVED)],
                     [(RESOLVED, PENDING)], [(PENDING, FIRING)], [(FIRING, RESOLVED)]]
    (alert,) = alerts.values()
    assert alert.value == 0.5  # the last value seen is kept when no sample came


def test_an_alert_kept_firing_still_says_what_made_it_fire() -> None:
    rules = _rules()
    group, rule = rules.rules[0]
    kept = rule.model_copy(update={"for_": timedelta(0), "keep_firing_for": timedelta(days=14)})
    rules = rules.model_copy(update={"groups": [group.model_copy(update={"rules": [kept]})]})
    low = _frame(("region", "North", None, 0.5))
    nan = _frame(("region", "North", None, float("nan")))
    fine = _frame(("region", "North", None, 0.95))
    alerts, moves = _run(rules, [low, nan, fine, fine], [0, 7, 14, 21])
    assert moves == [[(NORMAL, FIRING)], [], [], [(FIRING, RESOLVED)]]
    alerts, _ = _run(rules, [low, nan, fine], [0, 7, 14])
    (alert,) = alerts.values()
    assert (alert.state, alert.keep_firing_since) == (FIRING, D0 + 7 * DAY)
    # Not "<no value>" nor "95%": the last breach, as Prometheus keeps the last firing sample.
    assert (alert.value, alert.message) == (0.5, "region North at 50%: pace 0.5")
    assert alert.last_eval_at == D0 + 14 * DAY


def test_an_alert_resolving_on_a_missing_value_keeps_its_last_words() -> None:
    # keep_firing_for over: it resolves on a sample without a value (e.g. a gap the run rate
    # covers), and its message still names the last breach, never "<no value>".
    rules = _rules()
    group, rule = rules.rules[0]
    kept = rule.model_copy(update={"for_": timedelta(0), "keep_firing_for": timedelta(days=7)})
    rules = rules.model_copy(update={"groups": [group.model_copy(update={"rules": [kept]})]})
    low = _frame(("region", "North", None, 0.5))
    nan = _frame(("region", "North", None, float("nan")))
    alerts, moves = _run(rules, [low, nan, nan], [0, 7, 14])
    assert moves == [[(NORMAL, FIRING)], [], [(FIRING, RESOLVED)]]
    (alert,) = alerts.values()
    assert (alert.state, alert.value, alert.message) == (
        RESOLVED, 0.5, "region North at 50%: pace 0.5")
    assert "<no value>" not in alert.message


def test_scopes_outside_the_rule_are_ignored() -> None:
    rules = _rules()
    frame = _frame(("rep", "North", "N1", 0.1))
    alerts, moves = _run(rules, [frame], [0])
    assert alerts == {} and moves == [[]]


# --- muting --------------------------------------------------------------------------------------


def inhibited(target: AlertInstance, sources: list[AlertInstance], rules: list[InhibitRule],
              by_hierarchy: bool) -> bool:
    return bool(Inhibitor(sources, rules, by_hierarchy, METRIC_CATALOGUE).mutes(target))


def _node(scope: str, state: str = FIRING, rule: str = "R", **labels: str) -> AlertInstance:
    full = {"alertname": rule, "scope": scope, "severity": "warning", **labels}
    return AlertInstance(rule, fingerprint(full), full, state=state)


def test_hierarchy_inhibition_mutes_the_same_rule_below_the_node() -> None:
    north = _node("region", region="North")
    team = _node("team", region="North", team="N1")
    rep = _node("rep", region="North", team="N1", rep="Ana")
    south = _node("team", region="South", team="S1")
    other_rule = _node("team", rule="Other", region="North", team="N1")
    assert inhibited(team, [north], [], by_hierarchy=True)
    assert inhibited(rep, [north], [], by_hierarchy=True)
    assert not inhibited(south, [north], [], by_hierarchy=True)
    assert not inhibited(other_rule, [north], [], by_hierarchy=True)
    assert not inhibited(north, [team], [], by_hierarchy=True)  # never upwards
    assert not inhibited(team, [north], [], by_hierarchy=False)
    assert not inhibited(team, [replace(north, state=PENDING)], [], by_hierarchy=True)
    company = _node("company")
    assert inhibited(north, [company], [], by_hierarchy=True)


def test_hierarchy_inhibition_relates_rules_of_one_concern_up_to_their_severity() -> None:
    def alert(scope: str, rule: str, severity: str, concern: str = "plan",
              **labels: str) -> AlertInstance:
        found = _node(scope, rule=rule, concern=concern, **labels)
        found.labels["severity"] = severity
        return found

    company_low = alert("company", "AttainmentLow", "warning")
    company_critical = alert("company", "AttainmentCritical", "critical")
    region_pace = alert("region", "Pace", "warning", region="North")
    region_critical = alert("region", "AttainmentCritical", "critical", region="North")
    region_churn = alert("region", "Churn", "warning", concern="churn", region="North")
    # Same concern, no higher severity, below: muted.
    assert inhibited(region_pace, [company_low], [], by_hierarchy=True)
    # A critical region is still told under a warning company...
    assert not inhibited(region_critical, [company_low], [], by_hierarchy=True)
    # ...and muted under a critical one (the same rule, too).
    assert inhibited(region_critical, [company_critical], [], by_hierarchy=True)
    # Another concern, or the same node, or no concern at all: not related.
    assert not inhibited(region_churn, [company_low], [], by_hierarchy=True)
    same_node = alert("company", "Pace", "warning")
    assert not inhibited(same_node, [company_low], [], by_hierarchy=True)
    bare = _node("region", rule="Other", region="North")
    assert not inhibited(bare, [_node("company", rule="Another")], [], by_hierarchy=True)


def test_inhibit_rules_need_equal_labels() -> None:
    rules = _rules({"inhibit_rules": [{"source_matchers": ['severity="critical"'],
                                      "target_matchers": ['severity="warning"'],
                                      "equal": ["region"]}]})
    critical = _node("region", region="North")
    critical.labels["severity"] = "critical"
    north = _node("team", rule="Other", region="North", team="N1")
    south = _node("team", rule="Other", region="South", team="S1")
    assert inhibited(north, [critical], rules.inhibit_rules, by_hierarchy=False)
    assert not inhibited(south, [critical], rules.inhibit_rules, by_hierarchy=False)
    assert not inhibited(critical, [critical], rules.inhibit_rules, by_hierarchy=False)


def test_silences_match_labels_within_their_window() -> None:
    silence = Silence("s1", [parse_matcher("region=North"), parse_matcher('alertname=~"Pace.*"')],
                      D0, D0 + 7 * DAY, "ana", "quarter-end cleanup")
    alert = _alert(labels={"alertname": "PaceBehind", "region": "North"})
    assert Silencer([silence], D0).mutes(alert) == ["s1"]
    assert Silencer([silence], D0 + 6 * DAY).mutes(alert) == ["s1"]
    assert Silencer([silence], D0 + 7 * DAY).mutes(alert) == []  # ends is exclusive
    assert Silencer([silence], D0 - DAY).mutes(alert) == []
    south = replace(alert, labels={**alert.labels, "region": "South"})
    assert Silencer([silence], D0).mutes(south) == []
    expired = replace(silence, expired_at=pd.Timestamp("2026-01-02").to_pydatetime())
    assert Silencer([expired], D0).mutes(alert) == []


def test_mute_sets_the_flags_of_both_muters() -> None:
    north = _node("region", region="North")
    team = _node("team", region="North", team="N1")
    silence = Silence("s1", [parse_matcher("region=North")], D0, D0 + DAY, "ana", "why")
    muters: list[Muter] = [Silencer([silence], D0),
                           Inhibitor([north], [], True, METRIC_CATALOGUE)]
    assert muters[1].mutes(team) == [north.fingerprint]  # the inhibiting source
    muted = mute([north, team], *muters)
    assert [(a.silenced_by, a.inhibited, a.muted) for a in muted] == [
        (["s1"], False, True), (["s1"], True, True)]
    quiet = mute([team], Silencer([], D0), Inhibitor([], [], True, METRIC_CATALOGUE))
    assert not quiet[0].muted


# --- routing and grouping ------------------------------------------------------------------------

ROUTED = {
    "receivers": [{"name": "ops", "file_configs": [{"path": "ops.jsonl"}]},
                  {"name": "boss", "webhook_configs": [{"url": "http://127.0.0.1:9/boss"}]}],
    "route": {"receiver": "ops", "group_by": ["alertname", "region"], "repeat_interval": "7d",
              "routes": [{"matchers": ['severity="critical"'], "receiver": "boss",
                          "continue": True},
                         {"matchers": ['region=~".+"'], "receiver": "ops"}]},
}


def _firing(region: str, team: str, severity: str = "warning", **fields: Any) -> AlertInstance:
    alert = _node("team", region=region, team=team)
    alert.labels["severity"] = severity
    return replace(alert, state=FIRING, fired_at=D0, since=D0, severity=severity, **fields)


def test_route_alert_follows_matchers_and_continue() -> None:
    rules = _rules(ROUTED)
    assert rules.route is not None
    warning = route_alert(rules.route, {"severity": "warning"})
    assert [m.receiver for m in warning] == ["ops"]
    critical = route_alert(rules.route, {"severity": "critical"})
    assert [m.receiver for m in critical] == ["boss"]  # a matching child replaces the root
    assert critical[0].group_by == ("alertname", "region")  # inherited
    both = route_alert(rules.route, {"severity": "critical", "region": "North"})
    assert [m.receiver for m in both] == ["boss", "ops"]  # continue: true goes on


def test_notifications_grouped_by_group_by_labels() -> None:
    rules = _rules(ROUTED)
    alerts = [_firing("North", "N1"), _firing("North", "N2"), _firing("South", "S1"),
              _firing("South", "S2", silenced_by=["s1"])]
    messages, settled = plan_notifications(rules, alerts, D0)
    assert [(m.receiver, m.payload["groupLabels"]["region"], len(m.payload["alerts"]))
            for m in messages] == [("ops", "North", 2), ("ops", "South", 1)]
    payload = messages[0].payload
    assert payload["version"] == "4" and payload["status"] == "firing"
    assert payload["commonLabels"]["region"] == "North" and "team" not in payload["commonLabels"]
    assert payload["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert [a.notified_state for a in settled] == [FIRING, FIRING, FIRING, None]
    # Nothing new: nothing sent. After the repeat interval: sent again.
    assert plan_notifications(rules, settled, D0 + DAY)[0] == []
    again, _ = plan_notifications(rules, settled, D0 + 7 * DAY)
    assert len(again) == 2


def test_group_payload_lists_other_firing_alerts_and_resolutions() -> None:
    rules = _rules(ROUTED)
    told = replace(_firing("North", "N1"), notified_state=FIRING, last_notified_at=D0)
    resolved = replace(_firing("North", "N2"), state=RESOLVED, since=D0 + DAY,
                       resolved_at=D0 + DAY, notified_state=FIRING)
    messages, settled = plan_notifications(rules, [told, resolved], D0 + DAY)
    (message,) = messages
    statuses = sorted(a["status"] for a in message.payload["alerts"])
    assert statuses == ["firing", "resolved"]
    assert message.payload["alerts"][1]["endsAt"].startswith("2026-01-02")
    assert settled[1].notified_state == RESOLVED


def test_continue_sends_to_both_receivers_and_no_route_sends_nothing() -> None:
    rules = _rules(ROUTED)
    messages, _ = plan_notifications(rules, [_firing("North", "N1", severity="critical")], D0)
    assert sorted((m.receiver, m.kind) for m in messages) == [("boss", "webhook"),
                                                             ("ops", "file")]
    assert plan_notifications(_rules(), [_firing("North", "N1")], D0)[0] == []


def test_extra_receiver_keeps_the_files_routing() -> None:
    rules = with_extra_receiver(_rules(ROUTED), "http://127.0.0.1:9/extra", None)
    assert rules.route is not None
    warning = route_alert(rules.route, {"severity": "warning"})
    assert [m.receiver for m in warning] == [EXTRA_RECEIVER, "ops"]
    messages, _ = plan_notifications(rules, [_firing("North", "N1")], D0)
    assert sorted(m.target for m in messages) == ["http://127.0.0.1:9/extra", "ops.jsonl"]
    bare = with_extra_receiver(_rules(), None, "all.jsonl")
    assert [m.target for m in plan_notifications(bare, [_firing("North", "N1")], D0)[0]] == [
        "all.jsonl"]


# --- rule unit tests (promtool-like) -------------------------------------------------------------


def test_expanding_notation() -> None:
    assert _expand("1+2x3") == [1, 3, 5, 7]
    assert _expand("5x2 _ 1-1x1") == [5, 5, 5, None, 1, 0]
    assert _expand("_x2 3") == [None, None, 3]


def test_default_pack_unit_tests_pass() -> None:
    report = run_rule_tests(REPO / "rules" / "tests" / "default_test.yaml",
                            catalogue=METRIC_CATALOGUE)
    assert report.checks >= 20
    assert report.failures == [], "\n".join(str(f) for f in report.failures)


def test_failing_rule_test_shows_a_diff(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        "groups:\n- name: g\n  rules:\n  - alert: PaceBehind\n    metric: pace_against_plan\n"
        "    scope: region\n    op: '<'\n    threshold: 0.9\n    for: 2d\n"
        "    annotations: {summary: 'at {{ value }}'}\n", encoding="utf-8")
    (tmp_path / "test.yaml").write_text(
        "rule_files: [rules.yaml]\ntests:\n- name: pace\n  interval: 1d\n  input_series:\n"
        "  - series: 'pace_against_plan{region=\"North\"}'\n    values: '0.5x5'\n"
        "  alert_rule_test:\n  - eval_time: 1d\n    alertname: PaceBehind\n"
        "    exp_alerts:\n    - exp_labels: {region: North, scope: region, severity: warning}\n"
        "  - eval_time: 2d\n    alertname: PaceBehind\n"
        "    exp_alerts:\n    - exp_labels: {region: North, scope: region, severity: warning}\n"
        "      exp_annotations: {summary: at 0.4}\n", encoding="utf-8")
    report = run_rule_tests(tmp_path / "test.yaml", catalogue=METRIC_CATALOGUE)
    assert report.checks == 2
    first, second = report.failures
    assert first.eval_time == "1d" and "-{" in first.diff  # expected but still pending
    assert '+{"annotations": {"summary": "at 0.5"}' in second.diff
    assert "FAILED" in str(second) and "PaceBehind" in str(second)
