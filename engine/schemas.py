"""The one vocabulary of quotacast: table names, column names and the table schemas.

Every other module takes column names from here instead of retyping strings. The schemas
follow the data contract (README, "Your data"); each table is described once as a
:class:`TableSpec`: how the loader parses raw text, and what the parsed values must satisfy
(nullability, uniqueness, pandera checks, date order, one parent per child), which
``engine.io`` evaluates column by column so that any number of bad rows is counted cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandera.pandas as pa

__all__ = [
    "ACCOUNT_MANAGER",
    "AMOUNT",
    "AS_OF",
    "CATEGORY",
    "CHANNEL",
    "CLOSE_DATE",
    "COMMITS",
    "COMMIT_CATEGORIES",
    "COMPANY_KEY",
    "CREATED_AT",
    "CUSTOMERS",
    "CUSTOMER_ID",
    "DATE",
    "DS",
    "DTYPES",
    "DUE_DATE",
    "EARLIEST_DATE",
    "ENTERED_AT",
    "FORWARD_LOOKING_DATES",
    "FUTURE_SLACK_DAYS",
    "HIERARCHY_LEVELS",
    "INTERACTIONS",
    "INVENTORY",
    "INVOICE_ID",
    "ISSUED_AT",
    "KEY",
    "KIND",
    "LEVEL",
    "LEVEL_COMPANY",
    "LEVEL_REGION",
    "LEVEL_REP",
    "LEVEL_TEAM",
    "LIST_PRICE",
    "MANAGER",
    "MAX_ABS_NUMBER",
    "METRIC",
    "METRICS",
    "METRIC_REVENUE",
    "OCCURRED_AT",
    "ON_HAND",
    "OPPORTUNITIES",
    "OPPORTUNITY_ID",
    "OPPORTUNITY_STATUSES",
    "ORDERS",
    "ORDER_DATE",
    "ORDER_ID",
    "ORG",
    "ORIGINAL_CLOSE_DATE",
    "OWNER",
    "PAID_AT",
    "PERIOD",
    "PRODUCT",
    "RECEIVABLES",
    "REGION",
    "REP",
    "SEGMENT",
    "SEVERITY",
    "SEVERITY_WORDS",
    "STAGE",
    "STAGE_HISTORY",
    "STATUS",
    "STATUS_LOST",
    "STATUS_OPEN",
    "STATUS_WON",
    "SUBMITTED_AT",
    "TABLES",
    "TARGETS",
    "TEAM",
    "TIER",
    "TIERS",
    "TIER_MUST_HIT",
    "TIER_PLAN",
    "TIER_STRETCH",
    "ColumnSpec",
    "TableSpec",
    "Y",
]

# --- table names -------------------------------------------------------------------------
ORDERS = "orders"
CUSTOMERS = "customers"
OPPORTUNITIES = "opportunities"
STAGE_HISTORY = "stage_history"
INTERACTIONS = "interactions"
ORG = "org"
TARGETS = "targets"
RECEIVABLES = "receivables"
COMMITS = "commits"
INVENTORY = "inventory"

# --- column names ------------------------------------------------------------------------
CUSTOMER_ID = "customer_id"
ORDER_ID = "order_id"
ORDER_DATE = "order_date"
AMOUNT = "amount"
PRODUCT = "product"
CHANNEL = "channel"
OPPORTUNITY_ID = "opportunity_id"
ACCOUNT_MANAGER = "account_manager"
REGION = "region"
SEGMENT = "segment"
CREATED_AT = "created_at"
OWNER = "owner"
CLOSE_DATE = "close_date"
# Optional: the expected close date recorded when the deal was created (lets slips be measured
# without knowing later expectations).
ORIGINAL_CLOSE_DATE = "original_close_date"
# An extra opportunities column some exports carry (the crm-sales import does): the deal's quoted
# (list) value, known from creation. CRMs often rewrite a won deal's amount to its final value at
# close, so the amount of a deal later won is not what was known at a past date; where this
# column exists, the win model's features and cuts of the past use it instead. Not parsed by
# validation (an extra column), so readers convert it with ``pd.to_numeric``.
LIST_PRICE = "list_price"
STAGE = "stage"
STATUS = "status"
ENTERED_AT = "entered_at"
OCCURRED_AT = "occurred_at"
KIND = "kind"
SEVERITY = "severity"
REP = "rep"
TEAM = "team"
MANAGER = "manager"
PERIOD = "period"
LEVEL = "level"
KEY = "key"
INVOICE_ID = "invoice_id"
ISSUED_AT = "issued_at"
DUE_DATE = "due_date"
PAID_AT = "paid_at"
TIER = "tier"
METRIC = "metric"
CATEGORY = "category"
SUBMITTED_AT = "submitted_at"
DATE = "date"
ON_HAND = "on_hand"

# Columns of derived frames (features, series, forecasts).
AS_OF = "as_of"
DS = "ds"
Y = "y"

# --- value vocabularies ------------------------------------------------------------------
STATUS_OPEN, STATUS_WON, STATUS_LOST = "open", "won", "lost"
OPPORTUNITY_STATUSES = (STATUS_OPEN, STATUS_WON, STATUS_LOST)
LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM, LEVEL_REP = "company", "region", "team", "rep"
HIERARCHY_LEVELS = (LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM, LEVEL_REP)
COMPANY_KEY = "all"
# Target tiers: the level that must be hit (reached with 90% probability), the plan, the stretch
# (reached with 30% probability). A targets row without a tier is the plan.
TIER_MUST_HIT, TIER_PLAN, TIER_STRETCH = "must_hit", "plan", "stretch"
TIERS = (TIER_MUST_HIT, TIER_PLAN, TIER_STRETCH)
# What a target measures: revenue (the default) or a process metric, tracked by `review`.
METRIC_REVENUE = "revenue"
METRICS = (METRIC_REVENUE, "new_customers", "orders", "pipeline_created", "visits",
           "retention_rate")
# A rep's own forecast of a period (Salesforce's forecast categories): the amount they commit
# to, or their best case.
COMMIT_CATEGORIES = ("commit", "best_case")
# Interaction severity may be given as a number or as one of these words.
SEVERITY_WORDS = {"low": 1.0, "medium": 2.0, "high": 3.0, "critical": 4.0}
# `2017`, `2017Q3`, `2017-08` (years 1900 to 2999).
PERIOD_PATTERN = r"^(19|2[0-9])[0-9]{2}(Q[1-4]|-(0[1-9]|1[0-2]))?$"

# Dates that lie in the future by design (expected closes, due dates): they do not say how far
# the data reaches.
FORWARD_LOOKING_DATES = frozenset({CLOSE_DATE, ORIGINAL_CLOSE_DATE, DUE_DATE})

# What a sales number or date can be. A number beyond +-MAX_ABS_NUMBER in one row (a thousand
# trillion in any currency) is a unit or export error, and anything larger soon sums to
# infinity; inf and NaN are never amounts. No date lies before EARLIEST_DATE. An event (an
# order, a contact, a stage entered, a deal closed, a payment) cannot have happened after
# today: a date later than today + FUTURE_SLACK_DAYS (time zones, a clock a little behind) is
# an error, except in the forward-looking columns above (an open deal's expected close).
MAX_ABS_NUMBER = 1e15
EARLIEST_DATE = "1900-01-01"
FUTURE_SLACK_DAYS = 2

ColumnKind = Literal["id", "text", "date", "number"]


@dataclass(frozen=True)
class ColumnSpec:
    """How one column is parsed and checked.

    Attributes:
        kind: ``id`` and ``text`` stay strings, ``date`` is parsed as ISO 8601, ``number`` as float.
        required: the column must be present in the table.
        nullable: empty cells are allowed.
        default: for an optional text column, the value of an absent column or empty cell.
    """

    kind: ColumnKind
    required: bool = True
    nullable: bool = False
    # An optional text column's value where the column is absent or a cell is empty.
    default: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """One table of the data directory (README, "Your data")."""

    name: str
    required: bool
    columns: dict[str, ColumnSpec]
    unique: tuple[tuple[str, ...], ...] = ()
    checks: dict[str, tuple[pa.Check, ...]] = field(default_factory=dict)
    # A required table may be absent or empty when this other table has rows (orders, when
    # opportunities exist: won deals are then the revenue).
    optional_with: str | None = None
    # (earlier, later): date columns whose order is fixed (a deal closes after its creation).
    ordered_dates: tuple[tuple[str, str], ...] = ()
    # (child, parent): each child value has one parent (a team lies in one region).
    one_parent: tuple[tuple[str, str], ...] = ()

    @property
    def required_columns(self) -> list[str]:
        return [c for c, spec in self.columns.items() if spec.required]

    def columns_of_kind(self, kind: ColumnKind) -> list[str]:
        return [c for c, spec in self.columns.items() if spec.kind == kind]


def _opt(kind: ColumnKind, default: str | None = None) -> ColumnSpec:
    return ColumnSpec(kind, required=False, nullable=True, default=default)


def _one_of(values: tuple[str, ...], what: str) -> pa.Check:
    return pa.Check.isin(list(values), error=f"unknown {what}, expected one of "
                         f"{', '.join(values)}")


_NON_NEGATIVE = pa.Check.ge(0, error="must not be negative")
_PERIOD_CHECK = pa.Check.str_matches(PERIOD_PATTERN,
                                     error="period must look like 2017, 2017Q3 or 2017-08")

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            ORDERS,
            required=True,
            columns={
                CUSTOMER_ID: ColumnSpec("id"),
                ORDER_DATE: ColumnSpec("date"),
                AMOUNT: ColumnSpec("number"),
                ORDER_ID: _opt("id"),
                PRODUCT: _opt("text"),
                CHANNEL: _opt("text"),
                OPPORTUNITY_ID: _opt("id"),
            },
            unique=((ORDER_ID,),),
            optional_with=OPPORTUNITIES,
        ),
        TableSpec(
            CUSTOMERS,
            required=False,
            columns={
                CUSTOMER_ID: ColumnSpec("id"),
                ACCOUNT_MANAGER: _opt("text"),
                REGION: _opt("text"),
                SEGMENT: _opt("text"),
                CREATED_AT: _opt("date"),
            },
            unique=((CUSTOMER_ID,),),
        ),
        TableSpec(
            OPPORTUNITIES,
            required=False,
            columns={
                OPPORTUNITY_ID: ColumnSpec("id"),
                OWNER: ColumnSpec("text"),
                CREATED_AT: ColumnSpec("date"),
                CLOSE_DATE: ColumnSpec("date"),
                STAGE: ColumnSpec("text"),
                STATUS: ColumnSpec("text"),
                AMOUNT: ColumnSpec("number"),
                CUSTOMER_ID: _opt("id"),
                PRODUCT: _opt("text"),
                ORIGINAL_CLOSE_DATE: _opt("date"),
            },
            unique=((OPPORTUNITY_ID,),),
            checks={
                STATUS: (
                    pa.Check.isin(
                        list(OPPORTUNITY_STATUSES),
                        error=f"unknown status, expected one of {', '.join(OPPORTUNITY_STATUSES)}",
                    ),
                ),
                AMOUNT: (_NON_NEGATIVE,),
            },
            ordered_dates=((CREATED_AT, CLOSE_DATE),),
        ),
        TableSpec(
            STAGE_HISTORY,
            required=False,
            columns={
                OPPORTUNITY_ID: ColumnSpec("id"),
                STAGE: ColumnSpec("text"),
                ENTERED_AT: ColumnSpec("date"),
            },
        ),
        TableSpec(
            INTERACTIONS,
            required=False,
            columns={
                CUSTOMER_ID: ColumnSpec("id"),
                OCCURRED_AT: ColumnSpec("date"),
                KIND: ColumnSpec("text"),
                SEVERITY: _opt("number"),
            },
            checks={SEVERITY: (_NON_NEGATIVE,)},
        ),
        TableSpec(
            ORG,
            required=False,
            columns={
                REP: ColumnSpec("text"),
                TEAM: ColumnSpec("text"),
                REGION: ColumnSpec("text"),
                MANAGER: _opt("text"),
            },
            unique=((REP,),),
            one_parent=((TEAM, REGION),),
        ),
        TableSpec(
            TARGETS,
            required=False,
            columns={
                PERIOD: ColumnSpec("text"),
                LEVEL: ColumnSpec("text"),
                KEY: ColumnSpec("text"),
                AMOUNT: ColumnSpec("number"),
                TIER: _opt("text", TIER_PLAN),
                METRIC: _opt("text", METRIC_REVENUE),
            },
            unique=((PERIOD, LEVEL, KEY, TIER, METRIC),),
            checks={
                PERIOD: (_PERIOD_CHECK,),
                AMOUNT: (_NON_NEGATIVE,),
                TIER: (_one_of(TIERS, "tier"),),
                METRIC: (_one_of(METRICS, "metric"),),
            },
        ),
        TableSpec(
            COMMITS,
            required=False,
            columns={
                PERIOD: ColumnSpec("text"),
                REP: ColumnSpec("text"),
                AMOUNT: ColumnSpec("number"),
                CATEGORY: _opt("text", COMMIT_CATEGORIES[0]),
                SUBMITTED_AT: _opt("date"),
            },
            unique=((PERIOD, REP, CATEGORY, SUBMITTED_AT),),
            checks={
                PERIOD: (_PERIOD_CHECK,),
                AMOUNT: (_NON_NEGATIVE,),
                CATEGORY: (_one_of(COMMIT_CATEGORIES, "category"),),
            },
        ),
        TableSpec(
            INVENTORY,
            required=False,
            columns={
                PRODUCT: ColumnSpec("text"),
                DATE: ColumnSpec("date"),
                ON_HAND: ColumnSpec("number"),
            },
            unique=((PRODUCT, DATE),),
            checks={ON_HAND: (_NON_NEGATIVE,)},
        ),
        TableSpec(
            RECEIVABLES,
            required=False,
            columns={
                INVOICE_ID: ColumnSpec("id"),
                CUSTOMER_ID: ColumnSpec("id"),
                ISSUED_AT: ColumnSpec("date"),
                DUE_DATE: ColumnSpec("date"),
                AMOUNT: ColumnSpec("number"),
                PAID_AT: _opt("date"),
            },
            unique=((INVOICE_ID,),),
        ),
    )
}

DTYPES: dict[ColumnKind, str] = {
    "id": "object",
    "text": "object",
    "date": "datetime64[ns]",
    "number": "float64",
}

