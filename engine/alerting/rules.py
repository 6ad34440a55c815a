"""Rule files: Prometheus-style alerting rules plus an Alertmanager-style route, parsed and checked.

A rule file is YAML with four sections (only ``groups`` is required)::

    groups:                       # Prometheus: groups of alerting rules
      - name: pipeline
        labels: {owner: sales-ops}        # added to every alert of the group
        rules:
          - alert: PipelineCoverageLow    # the alert's name (label ``alertname``)
            metric: pipeline_coverage     # from the metric catalogue the caller passes
            scope: [region, team]         # one scope or a list; labels come from the scope
            op: "<"                       # <, <=, >, >=, ==, !=
            threshold: 2
            for: 14d                      # breach must hold this long (as_of time) to fire
            keep_firing_for: 7d           # keep firing this long after the breach ends
            severity: critical            # info, warning, critical
            params: {period: quarter}     # passed to the metric
            labels: {team_owner: sales}
            annotations:
              summary: "Coverage {{ value | round:1 }}x in {{ labels.region }}"
    receivers:                    # Alertmanager: where notifications go
      - name: sales-ops
        webhook_configs: [{url: "http://127.0.0.1:9000/hook", timeout: 10s}]
        file_configs: [{path: warnings.jsonl}]
    route:                        # Alertmanager: which receiver, grouped how
      receiver: sales-ops
      group_by: [alertname, region]
      repeat_interval: 7d
      routes: [{matchers: ['severity="critical"'], receiver: leadership, continue: true}]
    inhibit_rules:                # Alertmanager: a firing source mutes matching targets
      - source_matchers: ['severity="critical"']
        target_matchers: ['severity="warning"']
        equal: [alertname, region]
    inhibit_by_hierarchy: true    # a firing node alert mutes the same rule below that node,
                                  # and rules of its `concern` label up to its severity

Templates are deliberately small (no jinja2): ``{{ value }}``, ``{{ labels.region }}``,
``{{ details.remaining_target | humanize }}``; a leading ``$`` is accepted (``{{ $value }}``) so
Prometheus habits work. Filters: ``humanize``, ``humanizePercentage`` (alias ``percent``),
``round:N``, ``mul:X``, ``int``, ``upper``, ``lower``, ``default:TEXT``, applied left to right
(``{{ value | mul:100 | round:0 }}``). Names: ``value``, ``threshold``, ``op``, ``alert``,
``severity``, ``metric``, ``scope``, ``node`` (the node's own name), ``labels.NAME``,
``details.NAME`` (each detail also by its bare name), ``explanation``, ``for``, ``as_of``,
``state``. A name that is not there renders as ``<no value>``, as in Prometheus; nothing is
ever evaluated as code.

:func:`load_rules` reports every problem of a file at once, each naming the file, the rule (by
``alert`` name and position) and the field. Metrics, scopes and params are checked against the
:class:`~engine.alerting.catalogue.MetricCatalogue` its caller passes.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import re2
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.alerting.catalogue import MetricCatalogue

__all__ = [
    "ALERTNAME",
    "MAX_REGEX_LENGTH",
    "OPS",
    "SEVERITIES",
    "Duration",
    "FileConfig",
    "Group",
    "InhibitRule",
    "Matcher",
    "Receiver",
    "Route",
    "Rule",
    "RuleFile",
    "RuleFileError",
    "WebhookConfig",
    "check_template",
    "compare",
    "compile_regex",
    "format_duration",
    "load_rules",
    "matches_all",
    "parse_duration",
    "parse_matcher",
    "parse_rules",
    "render",
]

ALERTNAME = "alertname"
OPS = ("<", "<=", ">", ">=", "==", "!=")
SEVERITIES = ("info", "warning", "critical")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Labels the engine sets itself; a rule may not override them.
_RESERVED_LABELS = frozenset({ALERTNAME, "scope", "severity"})

# --- durations -----------------------------------------------------------------------------------

_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: object) -> timedelta:
    """A Prometheus duration (``14d``, ``2w``, ``1w3d``, ``12h``; ``0`` = none) as a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a duration like 14d, 2w or 12h, got {value!r}")
    text = str(value).strip()
    if text == "0":
        return timedelta(0)
    found = _DURATION.fullmatch(text)
    if not text or found is None:
        raise ValueError(f"expected a duration like 14d, 2w or 12h, got {value!r}")
    seconds = sum(int(n) * s for n, s in zip(found.groups(), _UNITS.values(), strict=True) if n)
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest Prometheus spelling of a duration (``14d``, ``1w3d``, ``0``)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0"
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]

# --- matchers ------------------------------------------------------------------------------------

_MATCHER = re.compile(
    r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(.*?))\s*$'
)


# Regexes of matchers run on RE2, as Alertmanager's (Go's regexp) do: time linear in the label
# value whatever the pattern, so a silence like `(.|.)*Z` cannot hang an evaluation. RE2 has no
# backreferences or lookaround, and refuses repetitions over 1000; a pattern is also capped in
# length and in the memory of its compiled program.
MAX_REGEX_LENGTH = 1000
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 1 << 20


@functools.lru_cache(maxsize=4096)
def compile_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (linear-time matching); a ValueError saying why it is refused.

    Matchers anchor it at both ends (``fullmatch``), as Alertmanager does.
    """
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ValueError(f"regular expression of {len(pattern)} characters; at most "
                         f"{MAX_REGEX_LENGTH}")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"bad regular expression {pattern!r}: {reason} (RE2 syntax, as in "
                         "Alertmanager: no backreferences or lookaround, repetitions up to "
                         "1000)") from None


@dataclass(frozen=True)
class Matcher:
    """An Alertmanager label matcher: ``name op value`` with op in ``=``, ``!=``, ``=~``, ``!~``.

    Regexes (RE2, :func:`compile_regex`) are anchored at both ends, and a missing label matches
    as the empty string, as in Alertmanager. A regex RE2 refuses (only possible for a matcher
    stored before patterns were checked) matches nothing, with either op: a silence holding one
    never applies.
    """

    name: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        try:
            pattern = compile_regex(self.value)
        except ValueError:
            return False
        found = pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def parse_matcher(value: object, check: bool = True) -> Matcher:
    """``region="North"``, ``team!=T1``, ``rep=~"A.*"``: a matcher, else a ValueError saying why.

    A regex must be one RE2 accepts (:func:`compile_regex`); ``check=False`` skips that, to read
    back matchers stored earlier.
    """
    if isinstance(value, Matcher):
        return value
    found = _MATCHER.fullmatch(str(value)) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"expected a matcher like region=\"North\" or rep=~\"A.*\", got {value!r}")
    name, op, quoted, bare = found.groups()
    text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    if check and op in ("=~", "!~"):
        compile_regex(text)
    return Matcher(name, op, text)


def matches_all(matchers: list[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)


MatcherField = Annotated[Matcher, PlainValidator(parse_matcher), PlainSerializer(str)]

# --- comparison ----------------------------------------------------------------------------------


def compare(value: float | None, op: str, threshold: float) -> bool:
    """Whether ``value op threshold`` holds; a missing or NaN value never breaches."""
    if value is None or math.isnan(value):
        return False
    return {
        "<": value < threshold,
        "<=": value <= threshold,
        ">": value > threshold,
        ">=": value >= threshold,
        "==": value == threshold,
        "!=": value != threshold,
    }[op]


# --- templates -----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
_PATH = re.compile(r"^\$?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
NO_VALUE = "<no value>"


def _plain(value: Any) -> str:
    """A value as text: integers without ``.0``, other floats to 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else NO_VALUE
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _humanize(value: Any) -> str:
    """Prometheus ``humanize``: 230000 -> 230k, 1234567 -> 1.235M."""
    number = _number(value)
    if number is None or math.isnan(number):
        return _plain(value)
    for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            return f"{number / size:.4g}{suffix}"
    return f"{number:.4g}"


def _percent(value: Any) -> str:
    number = _number(value)
    return _plain(value) if number is None else f"{number * 100:.3g}%"


def _rounded(value: Any, digits: str | None) -> str:
    number = _number(value)
    if number is None or math.isnan(number):
        return _plain(value)
    places = int(digits or 0)
    return f"{number:.{places}f}"


def _times(value: Any, factor: str | None) -> Any:
    number, by = _number(value), _number(factor)
    return value if number is None or by is None else number * by


def _whole(value: Any) -> str:
    number = _number(value)
    return _plain(value) if number is None or math.isnan(number) else str(round(number))


_FILTERS: dict[str, Any] = {
    "humanize": lambda v, a: _humanize(v),
    "humanizePercentage": lambda v, a: _percent(v),
    "percent": lambda v, a: _percent(v),
    "round": _rounded,
    "mul": _times,
    "int": lambda v, a: _whole(v),
    "upper": lambda v, a: _plain(v).upper(),
    "lower": lambda v, a: _plain(v).lower(),
    "default": lambda v, a: (a or "") if v is None or v == "" else _plain(v),
}


def _parse_placeholder(body: str) -> tuple[str, list[tuple[str, str | None]]]:
    """``path | filter:arg | filter`` -> (path, [(filter, arg)]); ValueError when malformed."""
    path, *filters = (part.strip() for part in body.split("|"))
    if not _PATH.fullmatch(path):
        raise ValueError(f"{{{{{body}}}}}: {path!r} is not a name like value or labels.region")
    parsed = []
    for text in filters:
        name, _, arg = text.partition(":")
        name = name.strip()
        if name not in _FILTERS:
            raise ValueError(
                f"{{{{{body}}}}}: unknown filter {name!r} (known: {', '.join(_FILTERS)})"
            )
        if name == "round" and arg and not arg.strip().isdigit():
            raise ValueError(f"{{{{{body}}}}}: round takes a number of digits, got {arg!r}")
        if name == "mul" and _number(arg) is None:
            raise ValueError(f"{{{{{body}}}}}: mul takes a number, got {arg!r}")
        parsed.append((name, arg.strip() if arg else None))
    return path.lstrip("$"), parsed


def check_template(text: str) -> list[str]:
    """Every syntax problem of a template (empty when it renders)."""
    problems = []
    for found in _PLACEHOLDER.finditer(text):
        try:
            _parse_placeholder(found.group(1))
        except ValueError as exc:
            problems.append(str(exc))
    leftover = _PLACEHOLDER.sub("", text)
    if "{{" in leftover or "}}" in leftover:
        problems.append("unbalanced {{ or }}")
    return problems


def _lookup(namespace: Mapping[str, Any], path: str) -> Any:
    value: Any = namespace
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def render(text: str, namespace: Mapping[str, Any]) -> str:
    """Fill a template's placeholders from ``namespace`` (dotted names, then filters)."""

    def fill(found: re.Match[str]) -> str:
        try:
            path, filters = _parse_placeholder(found.group(1))
        except ValueError:
            return found.group(0)  # checked at load time; leave a bad placeholder visible
        value = _lookup(namespace, path)
        if not filters:
            return _plain(value)
        out: Any = value
        for name, arg in filters:
            out = _FILTERS[name](out, arg)
        return str(out)

    return _PLACEHOLDER.sub(fill, text)


# --- the rule file -------------------------------------------------------------------------------


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _check_label_names(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if not _NAME.fullmatch(name):
            raise ValueError(f"label name {name!r} must look like region or team_owner")
        if name in _RESERVED_LABELS:
            raise ValueError(f"label {name!r} is set by the engine and cannot be overridden")
    return labels


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _catalogue(info: ValidationInfo) -> MetricCatalogue:
    """The catalogue :func:`parse_rules` validates with (a rule is never checked without)."""
    context = info.context if isinstance(info.context, dict) else {}
    catalogue = context.get("catalogue")
    if not isinstance(catalogue, MetricCatalogue):
        raise TypeError("rules are validated with a metric catalogue: use parse_rules")
    return catalogue


class Rule(_Model):
    """One alerting rule: ``metric op threshold`` per label set of ``scope``, held ``for``."""

    alert: str
    metric: str
    scope: Annotated[list[str], BeforeValidator(_as_list)]
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    threshold: float
    for_: Duration = Field(default=timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("alert")
    @classmethod
    def _alert_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("must look like PipelineCoverageLow (letters, digits, _)")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str, info: ValidationInfo) -> str:
        metrics = _catalogue(info).metrics
        if value not in metrics:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(metrics)}")
        return value

    @field_validator("scope")
    @classmethod
    def _known_scopes(cls, value: list[str], info: ValidationInfo) -> list[str]:
        scopes = _catalogue(info).scopes
        unknown = [s for s in value if s not in scopes]
        if unknown or not value:
            raise ValueError(f"expected one or more of {', '.join(scopes)}, got {value!r}")
        return value

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if math.isnan(value):
            raise ValueError("must be a number")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_label_names(value)

    @field_validator("annotations")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        problems = [f"{key}: {p}" for key, text in value.items() for p in check_template(text)]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _fits_metric(self, info: ValidationInfo) -> Rule:
        spec = _catalogue(info).metrics[self.metric]
        wrong = [s for s in self.scope if s not in spec.scopes]
        if wrong:
            raise ValueError(
                f"scope: {', '.join(wrong)} not available for metric {self.metric!r} "
                f"(it has: {', '.join(spec.scopes)})"
            )
        unknown = sorted(set(self.params) - set(spec.params))
        if unknown:
            takes = ", ".join(spec.params) or "no params"
            raise ValueError(
                f"params: unknown {', '.join(unknown)} for metric {self.metric!r} (takes: {takes})"
            )
        for name, given in self.params.items():
            default = spec.params[name]
            if isinstance(default, bool):
                if not isinstance(given, bool):
                    raise ValueError(f"params: {name} must be true or false, got {given!r}")
            elif isinstance(default, int | float) and (
                isinstance(given, bool) or not isinstance(given, int | float)
            ):
                raise ValueError(f"params: {name} must be a number, got {given!r}")
        return self


class Group(_Model):
    """A named group of rules; its ``labels`` are added to each of its alerts."""

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    rules: list[Rule]

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_label_names(value)


class WebhookConfig(_Model):
    """A JSON POST of the Alertmanager-like payload to ``url``."""

    url: str
    timeout: Duration = timedelta(seconds=10)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://\S+$", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class FileConfig(_Model):
    """One JSON line per notification appended to ``path`` (relative to the working directory)."""

    path: str


class Receiver(_Model):
    """A named destination of notifications."""

    name: str
    webhook_configs: list[WebhookConfig] = Field(default_factory=list)
    file_configs: list[FileConfig] = Field(default_factory=list)


class Route(_Model):
    """Alertmanager-like routing: the first child route that matches wins (unless ``continue``)."""

    receiver: str | None = None
    group_by: list[str] | None = None
    repeat_interval: Duration | None = None
    matchers: list[MatcherField] = Field(default_factory=list)
    continue_: bool = Field(default=False, alias="continue")
    routes: list[Route] = Field(default_factory=list)


class InhibitRule(_Model):
    """While a firing alert matches ``source_matchers``, alerts matching ``target_matchers``
    with the same values of the ``equal`` labels are not notified."""

    source_matchers: list[MatcherField] = Field(default_factory=list)
    target_matchers: list[MatcherField] = Field(default_factory=list)
    equal: list[str] = Field(default_factory=list)


class RuleFile(_Model):
    """A whole rule file."""

    groups: list[Group]
    receivers: list[Receiver] = Field(default_factory=list)
    route: Route | None = None
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    inhibit_by_hierarchy: bool = True
    path: str = Field(default="", exclude=True)

    @property
    def rules(self) -> list[tuple[Group, Rule]]:
        """Every rule with its group, in file order."""
        return [(group, rule) for group in self.groups for rule in group.rules]

    def receiver(self, name: str) -> Receiver:
        return next(r for r in self.receivers if r.name == name)


class RuleFileError(Exception):
    """A rule file that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# --- loading and reporting -----------------------------------------------------------------------


def _at(raw: Any, loc: tuple[Any, ...]) -> Any:
    """The raw YAML value at a pydantic error location (None when the path is not there)."""
    value = raw
    for part in loc:
        in_dict = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if not (in_dict or in_list):
            return None
        value = value[part]
    return value


def _where(raw: Any, loc: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """Who a problem belongs to (``rule 'X' (group 'g' #2)``) and the rest of the location."""
    if len(loc) >= 4 and loc[0] == "groups" and loc[2] == "rules" and isinstance(loc[3], int):
        rule = _at(raw, loc[:4])
        group = _at(raw, loc[:2])
        gname = group.get("name") if isinstance(group, dict) else None
        name = rule.get("alert") if isinstance(rule, dict) else None
        label = f"rule {name!r}" if isinstance(name, str) else "rule"
        return f"{label} (group {gname or loc[1]!r} #{loc[3] + 1})", loc[4:]
    if len(loc) >= 2 and loc[0] == "groups" and isinstance(loc[1], int):
        group = _at(raw, loc[:2])
        gname = group.get("name") if isinstance(group, dict) else None
        return f"group {gname or '#' + str(loc[1] + 1)!r}", loc[2:]
    return "", loc


def _field_name(rest: tuple[Any, ...]) -> str:
    names = ["for" if p == "for_" else "continue" if p == "continue_" else p for p in rest]
    text = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in names)
    return text.replace(".[", "[")


def _problem_lines(path: str, raw: Any, exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        who, rest = _where(raw, tuple(error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "missing (required)"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "literal_error" and "input" in error:
            message = f"{message} (got {error['input']!r})"
        field = _field_name(rest)
        parts = [p for p in (who, field) if p]
        lines.append(f"{path}: {': '.join(parts)}: {message}" if parts else f"{path}: {message}")
    return lines


def _raw_rules(raw: Any) -> Iterator[tuple[int, int, dict[str, Any]]]:
    groups = raw.get("groups") if isinstance(raw, dict) else None
    for gi, group in enumerate(groups if isinstance(groups, list) else []):
        rules = group.get("rules") if isinstance(group, dict) else None
        for ri, rule in enumerate(rules if isinstance(rules, list) else []):
            if isinstance(rule, dict):
                yield gi, ri, rule


def _duplicate_names(path: str, raw: Any) -> list[str]:
    seen: dict[str, str] = {}
    problems = []
    for gi, ri, rule in _raw_rules(raw):
        name = rule.get("alert")
        where = f"group #{gi + 1} rule #{ri + 1}"
        if isinstance(name, str) and name in seen:
            problems.append(
                f"{path}: rule {name!r} ({where}): alert: duplicate name (first at {seen[name]}); "
                "alert names identify alert state and must be unique"
            )
        elif isinstance(name, str):
            seen[name] = where
    return problems


def _route_receivers(route: Any, where: str = "route") -> Iterator[tuple[str, Any]]:
    if not isinstance(route, dict):
        return
    yield where, route.get("receiver")
    children = route.get("routes")
    for i, child in enumerate(children if isinstance(children, list) else []):
        yield from _route_receivers(child, f"{where}.routes[{i}]")


def _unknown_receivers(path: str, raw: Any) -> list[str]:
    if not isinstance(raw, dict):
        return []
    receivers = raw.get("receivers")
    known = {r.get("name") for r in receivers if isinstance(r, dict)} if isinstance(
        receivers, list) else set()
    problems = []
    for where, name in _route_receivers(raw.get("route")):
        if name is not None and name not in known:
            problems.append(f"{path}: {where}.receiver: unknown receiver {name!r}")
    route = raw.get("route")
    if isinstance(route, dict) and route.get("receiver") is None:
        problems.append(f"{path}: route.receiver: missing (the root route needs a receiver)")
    return problems


def parse_rules(raw: Any, path: str = "<rules>", *, catalogue: MetricCatalogue) -> RuleFile:
    """A parsed YAML document as a :class:`RuleFile`; :class:`RuleFileError` lists all problems.

    Args:
        catalogue: the metrics, scopes and params the rules may use.
    """
    if not isinstance(raw, dict):
        raise RuleFileError([f"{path}: expected a mapping with a 'groups' list"])
    problems = _duplicate_names(path, raw) + _unknown_receivers(path, raw)
    try:
        parsed = RuleFile.model_validate(raw, context={"catalogue": catalogue})
    except ValidationError as exc:
        raise RuleFileError(_problem_lines(path, raw, exc) + problems) from None
    if problems:
        raise RuleFileError(problems)
    return parsed.model_copy(update={"path": path})


def load_rules(path: str | Path, *, catalogue: MetricCatalogue) -> RuleFile:
    """Read and check a rule file (against ``catalogue``); :class:`RuleFileError` names every
    problem at once."""
    text_path = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuleFileError([f"{text_path}: cannot read: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise RuleFileError([f"{text_path}{line}: not valid YAML: {exc}"]) from None
    return parse_rules(raw, text_path, catalogue=catalogue)
