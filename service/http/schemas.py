"""Request and response bodies of the HTTP API (pydantic).

Field names are the output columns of CONTRACTS.md. Numbers the engine may leave undefined
(``p_attain`` of a node without target, a quantile of an empty simulation) are ``null``, never
``NaN``: JSON has no NaN, and the documented schema says so.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
)

from engine.alerting.rules import parse_matcher
from engine.schemas import PERIOD_PATTERN

__all__ = [
    "AlertList",
    "AlertOut",
    "AtRiskPage",
    "CustomerDetail",
    "CustomerRisk",
    "DataStatus",
    "ErrorOut",
    "EvaluateIn",
    "EvaluationOut",
    "FeasibilityNode",
    "FeasibilityOut",
    "ForecastOut",
    "ForecastPoint",
    "IsoDate",
    "LiveOut",
    "ModelOut",
    "ModelsOut",
    "ReadyOut",
    "RecalibrationNode",
    "RecalibrationOut",
    "RegistryOut",
    "ReloadOut",
    "SilenceIn",
    "SilenceOut",
    "WhatIfIn",
    "WhatIfOut",
]

Number = float | None
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date_text(value: Any) -> Any:
    """Only ``YYYY-MM-DD`` text (or a date): pydantic alone would also take ``0`` as 1970-01-01
    and a midnight datetime as a date, which the documented ``format: date`` does not allow."""
    if isinstance(value, date) or (isinstance(value, str) and _ISO_DATE.fullmatch(value)):
        return value
    raise ValueError("expected an ISO date like 2026-11-15")


IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]
PeriodText = Annotated[str, StringConstraints(pattern=PERIOD_PATTERN, max_length=7)]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorOut(_Out):
    """Every error but 422: a sentence saying what went wrong and what to do."""

    detail: str


# --- health ----------------------------------------------------------------------------------


class LiveOut(_Out):
    status: Literal["ok"] = "ok"


class DataStatus(_Out):
    """The data source and what loading it found."""

    source: str
    ok: bool
    start: date | None = None
    end: date | None = Field(default=None, description="last date in the data: the default as_of")
    tables: dict[str, int] = Field(default_factory=dict, description="rows per table")
    problems: list[str] = Field(default_factory=list)


class ReloadOut(_Out):
    """How the data is kept fresh (``QUOTACAST_RELOAD_SECONDS``)."""

    every_seconds: float = Field(description="0: the data is loaded once, at start-up")
    watched: bool = Field(description="whether the source's files are watched for changes")
    checked_at: datetime | None = None
    loaded_at: datetime | None = Field(default=None, description="when the data served was "
                                       "loaded")
    loads: int = Field(description="loads so far, start-up included")
    problems: list[str] = Field(default_factory=list, description=(
        "why the latest changed data was refused (the data loaded before is still served); "
        "empty: the latest data is served"))
    warmed_in: float | None = Field(default=None, description=(
        "seconds the last background computation of the current period took"))
    warmed_more_in: float | None = Field(default=None, description=(
        "seconds the background computation of the previous quarter and the ready scenarios "
        "took after it, at the lowest priority (null: not done yet)"))


class RegistryOut(_Out):
    uri: str
    reachable: bool


class ModelOut(_Out):
    """A model the service serves."""

    kind: str
    name: str
    version: str
    run_id: str
    metrics: dict[str, Number] = Field(default_factory=dict)


class ReadyOut(_Out):
    """Readiness: ready once the data is loaded; models are reported, not required.

    Without an API key only ``ready`` is answered; the details (the data source and its
    problems, the models served, the registry) need a valid key of any role.
    """

    ready: bool
    data: DataStatus | None = Field(default=None, description="with a key only")
    models: dict[str, ModelOut | None] | None = Field(default=None, description="with a key only")
    model_problems: dict[str, str] | None = Field(default=None, description="with a key only")
    registry: RegistryOut | None = Field(default=None, description="with a key only")
    reload: ReloadOut | None = Field(default=None, description="with a key only")


class ModelsOut(_Out):
    registry: RegistryOut
    models: list[ModelOut]
    missing: dict[str, str] = Field(description="kind -> why it is not (or no longer) loaded")


# --- feasibility -----------------------------------------------------------------------------


class FeasibilityNode(_Out):
    """One node's attainment distribution (the ``quotacast feasibility`` columns)."""

    period: str
    level: str
    key: str
    target: Number
    closed_to_date: Number
    p_attain: Number
    expected: Number
    p10: Number
    p50: Number
    p90: Number
    gap: Number
    must_hit: Number
    stretch: Number
    pipeline_needed_for_p80: Number = None
    expected_pipeline: Number = None
    expected_run_rate: Number = None
    churn_adjustment: Number = None
    pipeline_in_period: Number = None
    deals_in_period: Number = None


class FeasibilityOut(_Out):
    period: str
    as_of: date
    draws: int
    notes: list[str]
    nodes: list[FeasibilityNode]


class WhatIfIn(_In):
    """A proposed target for one node of the hierarchy."""

    level: str = Field(min_length=1, max_length=100, examples=["region"])
    key: str = Field(min_length=1, max_length=200, examples=["North"])
    target: Annotated[float, Strict()] = Field(gt=0, le=1e15,
                                               description="the proposed target amount")
    period: PeriodText | None = Field(
        default=None, description="`2017`, `2017Q3` or `2017-08`; default: as_of's quarter")
    as_of: IsoDate | None = Field(default=None, description="default: the last date in the data")


class WhatIfOut(_Out):
    period: str
    as_of: date
    level: str
    key: str
    proposed_target: float
    p_attain: float = Field(description="probability of reaching the proposed target")
    current_target: Number
    p_attain_current: Number
    expected: Number
    p10: Number
    p50: Number
    p90: Number
    gap: Number = Field(description="proposed target minus expected revenue")
    must_hit: Number
    stretch: Number


class RecalibrationNode(_Out):
    period: str
    level: str
    key: str
    target: Number
    recalibrated_target: Number
    p_attain_before: Number
    p_attain_after: Number


class RecalibrationOut(_Out):
    period: str
    as_of: date
    method: str
    notes: list[str]
    nodes: list[RecalibrationNode]


# --- customers -------------------------------------------------------------------------------


class CustomerRisk(_Out):
    """One scored customer (the ``quotacast score churn`` columns)."""

    customer_id: str
    account_manager: str | None
    churn_probability: float
    revenue_at_risk: float
    expected_revenue: Number = None
    reasons: list[str]


class AtRiskPage(_Out):
    as_of: date
    owner: str | None
    min_probability: float
    total: int
    page: int
    page_size: int
    items: list[CustomerRisk]


class CustomerDetail(_Out):
    customer_id: str
    account_manager: str | None
    region: str | None = None
    segment: str | None = None
    as_of: date
    scored: bool = Field(description="false for a customer without a purchase in the last year")
    rank: int | None = Field(default=None, description="1 = the riskiest customer of all")
    churn_probability: Number = None
    revenue_at_risk: Number = None
    expected_revenue: Number = None
    reasons: list[str] = Field(default_factory=list)


# --- forecasts -------------------------------------------------------------------------------


class ForecastPoint(_Out):
    level: str
    key: str
    ds: date
    yhat: Number
    yhat_p10: Number
    yhat_p50: Number
    yhat_p90: Number


class ForecastOut(_Out):
    level: str
    freq: str
    horizon: int
    model_version: str
    points: list[ForecastPoint]


# --- warnings --------------------------------------------------------------------------------


class AlertOut(_Out):
    """One alert (the ``quotacast warnings list`` columns, labels as a mapping)."""

    rule: str
    labels: dict[str, str]
    state: str
    severity: str
    value: Number
    threshold: Number
    since: date | None
    as_of: date | None
    message: str
    summary: str
    description: str = Field(description="the explanation: the numbers behind the value")
    silenced: bool
    inhibited: bool


class AlertList(_Out):
    count: int
    alerts: list[AlertOut]


class EvaluateIn(_In):
    as_of: IsoDate | None = Field(default=None, description="default: the last date in the data")


class EvaluationOut(_Out):
    as_of: date
    evaluated: list[str]
    already: list[str] = Field(description="rules already evaluated at as_of (left unchanged)")
    skipped: dict[str, str] = Field(description="rule -> why its metric is not available")
    transitions: int
    notifications: int
    undelivered: int = Field(
        0, description="notifications not delivered after this evaluation (waiting for a retry "
        "with backoff, or given up): `quotacast warnings deliver` sends them")
    alerts: list[AlertOut] = Field(description="alerts not normal after the evaluation")


# The longest silence the API records (ten years of as_of dates).
MAX_SILENCE_DAYS = 3660

# A matcher as the API takes it, stated exactly by a pattern so that every matcher the OpenAPI
# document allows is one the service accepts: ``label=value``/``label!=value`` with any text,
# and ``label=~regex``/``label!~regex`` (quoted or bare) whose regex is a subset of RE2 that
# always compiles: literals, ``.``, classes like ``[A-Z0-9_]`` or ``[^a-z]``, escapes (bare
# only: ``\d \w \s \.``...), one level of groups, alternation, and the quantifiers ``* + ?
# {n} {n,}`` (n a digit; lazy with ``?``). The CLI's silences take any RE2 expression.
_LITERAL = r'[^\\^$.\[\]|()?*+{}"\x00-\x1f\x7f]'
_ESCAPE = r"\\[dDsSwW.\\^$\[\]|()?*+{}]"
_CLASS = r'\[\^?(?:a-z|A-Z|0-9|[^\\\[\]\-^"\x00-\x1f\x7f])+\]'
_QUANTIFIER = r"(?:[*+?]|\{[0-9],?\})\??"


def _regex_grammar(escapes: bool) -> str:
    atom = f"(?:{_LITERAL}|\\.|{_CLASS}{'|' + _ESCAPE if escapes else ''})"
    group = rf"\((?:\?:)?(?:{atom}(?:{_QUANTIFIER})?|\|)*\)"
    return rf"\^?(?:(?:{atom}|{group})(?:{_QUANTIFIER})?|\|)*\$?"


MATCHER_PATTERN = (
    r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=(?:[^~\x00-\x1f\x7f][^\x00-\x1f\x7f]*)?"
    r"|!=[^\x00-\x1f\x7f]*|(?:=~|!~)\s*"
    rf'(?:"{_regex_grammar(False)}"|{_regex_grammar(True)}))\s*$')
_MATCHER_RE = re.compile(MATCHER_PATTERN)


def _api_matcher(value: str) -> str:
    """A matcher within the API's grammar (said in words, not as the pattern), RE2-checked."""
    if not _MATCHER_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a matcher the API takes: label=value, label!=value, "
            "label=~regex or label!~regex, the regex built from literals, ., classes like "
            "[A-Z0-9], escapes like \\d (unquoted), one level of (groups), | and the "
            "quantifiers * + ? {n} {n,} with n one digit (the CLI takes any RE2 expression)")
    parse_matcher(value)  # a ValueError saying why: 422
    return value


MAX_MATCHER_LENGTH = 200
MatcherText = Annotated[str, StringConstraints(max_length=MAX_MATCHER_LENGTH),
                        AfterValidator(_api_matcher),
                        WithJsonSchema({"type": "string", "maxLength": MAX_MATCHER_LENGTH,
                                        "pattern": MATCHER_PATTERN})]
CommentText = Annotated[str, StringConstraints(
    pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+$", min_length=1, max_length=1000)]


class SilenceIn(_In):
    """Mute notifications of matching alerts for ``days`` as_of dates from ``starts_at``.

    The window is a start and a length and the matchers' regexes keep to a grammar stated in
    the schema (:data:`MATCHER_PATTERN`), so every request the schema allows is one the service
    accepts (``ends_at`` = ``starts_at`` + ``days`` is in the answer).
    """

    matchers: list[MatcherText] = Field(
        min_length=1, max_length=20, examples=[['alertname="PaceBehindPlan"', 'region="North"']],
        description='label=value, label!=value, label=~regex or label!~regex; all must match')
    starts_at: IsoDate
    days: int = Field(ge=1, le=MAX_SILENCE_DAYS, examples=[14],
                      description="how many as_of dates it applies to, from starts_at")
    comment: CommentText

    @property
    def ends_at(self) -> date:
        """The first as_of date the silence no longer applies to."""
        return self.starts_at + timedelta(days=self.days)


class SilenceOut(_Out):
    id: str
    matchers: list[str]
    starts_at: date
    ends_at: date
    created_by: str
    comment: str
    expired: bool
