"""Rule files: durations, matchers, templates, parsing, and bad files reported whole."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from engine.alerting.catalogue import MetricCatalogue
from engine.alerting.mute import Silencer
from engine.alerting.rules import (
    RuleFileError,
    check_template,
    compare,
    format_duration,
    load_rules,
    parse_duration,
    parse_matcher,
    parse_rules,
    render,
)
from engine.alerting.store import AlertInstance, Silence
from features.metrics.alerting import METRIC_CATALOGUE

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("text", "expected"), [
    ("14d", timedelta(days=14)), ("2w", timedelta(days=14)), ("1w3d", timedelta(days=10)),
    ("12h", timedelta(hours=12)), ("0", timedelta(0)), (0, timedelta(0)),
    ("1d12h", timedelta(days=1, hours=12)), ("90s", timedelta(seconds=90)),
])
def test_parse_duration(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["14", "d", "3x", "-1d", "1.5d", 7, True, "", "1d2w"])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration_round_trips() -> None:
    for text in ("14d", "1w3d", "0", "12h", "2w"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
    assert format_duration(timedelta(days=14)) == "2w"


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ('region="North"', {"region": "North"}, True),
    ("region=North", {"region": "South"}, False),
    ("region!=North", {"region": "South"}, True),
    ('rep=~"A.*"', {"rep": "Ana"}, True),
    ('rep=~"A"', {"rep": "Ana"}, False),  # anchored, as in Alertmanager
    ('rep!~"A.*"', {"rep": "Bo"}, True),
    ('team=""', {}, True),  # a missing label matches the empty string
    ('team!=""', {}, False),
    (r'summary="say \"hi\""', {"summary": 'say "hi"'}, True),
])
def test_matchers(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize("bad", ["region", "=North", 'rep=~"("', "1a=b"])
def test_bad_matchers(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_matcher(bad)


def test_a_pathological_regex_matches_in_linear_time() -> None:
    """The finding: `(.|.)*Z` backtracked for minutes on a long label (RE2 does not)."""
    matcher = parse_matcher('customer=~"(.|.)*Z"')
    long = "C" * 40  # 2^40 paths for a backtracking engine
    assert matcher.matches({"customer": long}) is False
    assert matcher.matches({"customer": long + "Z"}) is True
    assert parse_matcher('customer!~"(a*)*b"').matches({"customer": "a" * 10_000}) is True
    silence = Silence("s1", [matcher], date(2026, 11, 1), date(2026, 12, 1), "ana", "why")
    alerts = [AlertInstance("Overdue", f"f{k}", {"customer": f"{long}{k}"}) for k in range(500)]
    assert all(Silencer([silence], date(2026, 11, 16)).mutes(a) == [] for a in alerts)


@pytest.mark.parametrize(("bad", "why"), [
    ('rep=~"(a)\\\\1"', "invalid escape"),  # a backreference
    ('rep=~"(?=A)n"', "perl operator"),  # lookahead
    ('rep!~"a{5000}"', "repetition size"),
    ('rep=~"(("', "missing \\)"),
    ('rep=~"' + "a" * 1001 + '"', "at most 1000"),
])
def test_regexes_re2_cannot_run_in_linear_time_are_refused_plainly(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as refused:
        parse_matcher(bad)
    assert "bad regular expression" in str(refused.value) or "at most" in str(refused.value)
    assert "Traceback" not in str(refused.value)


def test_a_stored_matcher_re2_refuses_matches_nothing() -> None:
    """Silences stored before patterns were checked are read back and never apply."""
    old = parse_matcher('rep=~"(?=A).*"', check=False)
    assert old.matches({"rep": "Ana"}) is False
    assert parse_matcher('rep!~"(?=A).*"', check=False).matches({"rep": "Bo"}) is False


def test_matcher_prints_back() -> None:
    matcher = parse_matcher('rep=~"A.*"')
    assert parse_matcher(str(matcher)) == matcher


def test_compare_treats_missing_as_no_breach() -> None:
    assert compare(1.0, "<", 2.0) and compare(2.0, "<=", 2.0) and compare(3.0, ">", 2.0)
    assert compare(2.0, ">=", 2.0) and compare(2.0, "==", 2.0) and compare(1.0, "!=", 2.0)
    assert not compare(None, "<", 2.0)
    assert not compare(float("nan"), "!=", 2.0)


def test_render_values_labels_and_filters() -> None:
    namespace = {"value": 0.4213, "threshold": 3.0, "labels": {"region": "North"},
                 "details": {"gap": 230000.0}, "name": "x"}
    assert render("{{ value }}", namespace) == "0.4213"
    assert render("{{ threshold }}x", namespace) == "3x"
    assert render("{{ $labels.region }}", namespace) == "North"
    assert render("{{ labels.region | upper }}", namespace) == "NORTH"
    assert render("{{ details.gap | humanize }}", namespace) == "230k"
    assert render("{{ value | humanizePercentage }}", namespace) == "42.1%"
    assert render("{{ value | round:2 }}", namespace) == "0.42"
    assert render("{{ value | mul:100 | round:0 }} points", namespace) == "42 points"
    assert render("{{ labels.team }}", namespace) == "<no value>"
    assert render("{{ labels.team | default:none }}", namespace) == "none"
    assert render("{{ value.__class__ }}", namespace) == "<no value>"  # no attribute access


def test_check_template_names_problems() -> None:
    assert check_template("{{ value | round:2 }} of {{ labels.region }}") == []
    problems = check_template("{{ value | frobnicate }} {{ 1 + 1 }} {{ open")
    assert len(problems) == 3
    assert "unknown filter 'frobnicate'" in problems[0]


GOOD = {
    "groups": [{"name": "g", "rules": [{
        "alert": "PaceBehind", "metric": "pace_against_plan", "scope": "region", "op": "<",
        "threshold": 0.9, "for": "14d", "keep_firing_for": "7d", "severity": "critical",
        "labels": {"owner": "ops"}, "annotations": {"summary": "{{ value }}"},
        "params": {"period": "quarter"},
    }]}],
    "receivers": [{"name": "hook", "webhook_configs": [{"url": "http://127.0.0.1:9/x"}]}],
    "route": {"receiver": "hook", "group_by": ["alertname"],
              "routes": [{"matchers": ['severity="critical"'], "receiver": "hook",
                          "continue": True}]},
    "inhibit_rules": [{"source_matchers": ["severity=critical"],
                       "target_matchers": ["severity=warning"], "equal": ["region"]}],
}


def test_parse_good_file() -> None:
    parsed = parse_rules(GOOD, "good.yaml", catalogue=METRIC_CATALOGUE)
    (_group, rule), = parsed.rules
    assert rule.scope == ["region"] and rule.for_ == timedelta(days=14)
    assert rule.keep_firing_for == timedelta(days=7)
    assert parsed.route is not None and parsed.route.routes[0].continue_
    assert parsed.inhibit_rules[0].source_matchers[0].value == "critical"
    assert parsed.path == "good.yaml"


def _bad_rule(**changes: object) -> dict[str, object]:
    rule = dict(GOOD["groups"][0]["rules"][0])  # type: ignore[index]
    rule.update(changes)
    return {k: v for k, v in rule.items() if v is not None}


def test_bad_file_reports_every_problem_with_file_rule_and_field() -> None:
    raw = {"groups": [{"name": "g", "rules": [
        _bad_rule(alert="UnknownMetric", metric="no_such_metric"),
        _bad_rule(alert="BadDuration", **{"for": "two weeks"}),
        _bad_rule(alert="BadOp", op="=>"),
        _bad_rule(alert="NoThreshold", threshold=None),
        _bad_rule(alert="WrongScope", metric="pipeline_coverage", scope="customer",
                  params={}),
        _bad_rule(alert="BadParam", params={"stall_days": 3}),
        _bad_rule(alert="BadTemplate", annotations={"summary": "{{ value | nope }}"}),
        _bad_rule(alert="BadOp", severity="page"),
        {"metric": "pace_against_plan", "scope": "rep", "op": "<", "threshold": 1},
    ]}], "route": {"receiver": "nobody"}}
    with pytest.raises(RuleFileError) as caught:
        parse_rules(raw, "bad.yaml", catalogue=METRIC_CATALOGUE)
    text = "\n".join(caught.value.problems)
    expected = [
        "bad.yaml: rule 'UnknownMetric' (group 'g' #1): metric: unknown metric 'no_such_metric'",
        "rule 'BadDuration' (group 'g' #2): for: expected a duration like 14d",
        "rule 'BadOp' (group 'g' #3): op:",
        "rule 'NoThreshold' (group 'g' #4): threshold: missing (required)",
        "rule 'WrongScope' (group 'g' #5): scope: customer not available for metric "
        "'pipeline_coverage'",
        "rule 'BadParam' (group 'g' #6): params: unknown stall_days",
        "rule 'BadTemplate' (group 'g' #7): annotations: summary: {{ value | nope }}: unknown "
        "filter 'nope'",
        "rule 'BadOp' (group 'g' #8): severity:",
        "rule (group 'g' #9): alert: missing (required)",
        "rule 'BadOp' (group #1 rule #8): alert: duplicate name",
        "bad.yaml: route.receiver: unknown receiver 'nobody'",
    ]
    for piece in expected:
        assert piece in text, f"missing {piece!r} in:\n{text}"
    assert "(got '=>')" in text
    assert all(line.startswith("bad.yaml") for line in caught.value.problems)


def test_load_rules_reports_yaml_errors_with_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("groups:\n  - name: g\n    rules: [\n", encoding="utf-8")
    with pytest.raises(RuleFileError, match=r"broken.yaml:\d+: not valid YAML"):
        load_rules(path, catalogue=METRIC_CATALOGUE)
    with pytest.raises(RuleFileError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml", catalogue=METRIC_CATALOGUE)


def test_default_pack_parses_and_covers_the_guides() -> None:
    parsed = load_rules(REPO / "rules" / "default.yaml", catalogue=METRIC_CATALOGUE)
    metrics = {rule.metric for _, rule in parsed.rules}
    assert metrics >= {
        "attainment_probability", "pace_against_plan", "pipeline_gap_coverage",
        "conversion_drop", "stalled_deals", "slipped_share", "churn_exposure_share",
        "high_risk_customers", "churn_probability", "complaint_spike",
        "overdue_receivables_ratio", "forecast_gap",
    }
    # Coverage of what the run rate leaves, in multiples of that gap.
    coverage = {rule.threshold for _, rule in parsed.rules
                if rule.metric == "pipeline_gap_coverage"}
    assert coverage == {2.0, 1.0}
    # Every rule names its concern: what inhibition by hierarchy relates across rules.
    for group, rule in parsed.rules:
        assert "concern" in {**group.labels, **rule.labels}, rule.alert
    # Customer and deal alerts are grouped per account manager, not sent one by one.
    assert parsed.route is not None
    child = parsed.route.routes[0]
    assert child.group_by == ["alertname", "rep"]
    assert [str(m) for m in child.matchers] == ['scope=~"customer|opportunity"']


def test_bool_params_take_true_or_false() -> None:
    rule = {"alert": "Late", "metric": "overdue_receivables_ratio", "scope": "customer",
            "op": ">", "threshold": 0.5, "params": {"usual_lateness": True}}
    parsed = parse_rules({"groups": [{"name": "g", "rules": [rule]}]}, catalogue=METRIC_CATALOGUE)
    assert parsed.rules[0][1].params == {"usual_lateness": True}
    with pytest.raises(RuleFileError, match="usual_lateness must be true or false, got 'yes'"):
        parse_rules({"groups": [{"name": "g", "rules": [
            {**rule, "params": {"usual_lateness": "yes"}}]}]}, catalogue=METRIC_CATALOGUE)
    with pytest.raises(RuleFileError, match="grace_days must be a number, got True"):
        parse_rules({"groups": [{"name": "g", "rules": [
            {**rule, "params": {"grace_days": True}}]}]}, catalogue=METRIC_CATALOGUE)


@dataclass(frozen=True)
class _Metric:
    scopes: tuple[str, ...]
    params: dict[str, object]


def test_rules_are_checked_against_the_catalogue_passed_in() -> None:
    catalogue = MetricCatalogue({"m": _Metric(("region",), {"days": 7})}, ("company", "region"),
                                {"company": (), "region": ("region",)})
    rule = {"alert": "A", "metric": "m", "scope": "region", "op": "<", "threshold": 1,
            "params": {"days": 3}}
    parsed = parse_rules({"groups": [{"name": "g", "rules": [rule]}]}, catalogue=catalogue)
    assert parsed.rules[0][1].params == {"days": 3}
    bad = [{**rule, "alert": "B", "metric": "pipeline_coverage"},
           {**rule, "alert": "C", "scope": "team"}, {**rule, "alert": "D", "scope": "company"}]
    with pytest.raises(RuleFileError) as caught:
        parse_rules({"groups": [{"name": "g", "rules": bad}]}, "x.yaml", catalogue=catalogue)
    assert caught.value.problems == [
        "x.yaml: rule 'B' (group 'g' #1): metric: unknown metric 'pipeline_coverage'; known: m",
        "x.yaml: rule 'C' (group 'g' #2): scope: expected one or more of company, region, got "
        "['team']",
        "x.yaml: rule 'D' (group 'g' #3): scope: company not available for metric 'm' (it has: "
        "region)",
    ]
