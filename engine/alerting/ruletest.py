"""Rule unit tests, as ``promtool test rules`` runs them: metric values over time in, expected
firing alerts out, on the same state machine as evaluation (:mod:`engine.alerting.state`).

:func:`run_rule_tests` documents the test file format.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from engine.alerting.catalogue import SCOPE_COLUMN, VALUE, MetricCatalogue
from engine.alerting.rules import (
    ALERTNAME,
    Rule,
    RuleFile,
    RuleFileError,
    load_rules,
    parse_duration,
)
from engine.alerting.state import apply_rule
from engine.alerting.store import FIRING, AlertInstance

__all__ = ["RuleTestFailure", "RuleTestReport", "run_rule_tests"]


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
               until: timedelta, catalogue: MetricCatalogue
               ) -> dict[int, dict[str, list[AlertInstance]]]:
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
            new, _ = apply_rule(group, rule, frame, alerts[rule.alert], as_of, catalogue)
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


def _run_test_group(test: Mapping[str, Any], rules: RuleFile, file: str, default_interval: str,
                    catalogue: MetricCatalogue) -> RuleTestReport:
    name = str(test.get("name", "unnamed"))
    where = f"{file}: test {name!r}"
    interval = parse_duration(test.get("interval", default_interval))
    start = date.fromisoformat(str(test.get("start", "2026-01-01")))
    series = _series_frames(test, rules, where)
    cases = test.get("alert_rule_test") or []
    times = [parse_duration(c.get("eval_time", "0")) for c in cases]
    firing = _firing_at(rules, series, start, interval, max(times, default=timedelta(0)),
                        catalogue)
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


def run_rule_tests(path: str | Path, *, catalogue: MetricCatalogue) -> RuleTestReport:
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

    Expected alerts are the firing ones (pending alerts are not listed, as in promtool). The
    rule files are checked against ``catalogue``.

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
            merged.append(load_rules(Path(path).parent / str(name), catalogue=catalogue))
        except RuleFileError as exc:
            problems += exc.problems
    if problems or not merged:
        raise RuleFileError(problems or [f"{file}: rule_files names no rule file"])
    rules = merged[0].model_copy(update={"groups": [g for m in merged for g in m.groups]})
    report = RuleTestReport()
    for test in raw["tests"]:
        part = _run_test_group(test, rules, file, str(raw.get("evaluation_interval", "1d")),
                               catalogue)
        report.checks += part.checks
        report.failures += part.failures
    return report
