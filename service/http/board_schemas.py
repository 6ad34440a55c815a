"""Request and response bodies of the board's JSON API: trend, what changed, commits.

Field names are the columns of :mod:`service.usecases.board` and
:mod:`service.usecases.commits`; undefined numbers are ``null``, never ``NaN``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from engine.schemas import COMMIT_CATEGORIES
from service.http.schemas import IsoDate, PeriodText

__all__ = [
    "ChangeDeal",
    "ChangeGroup",
    "ChangesOut",
    "CommitIn",
    "CommitOut",
    "CommitsOut",
    "SubmittedOut",
    "TrendOut",
    "TrendPoint",
]

Number = float | None
Category = Literal["commit", "best_case"]
assert tuple(Category.__args__) == COMMIT_CATEGORIES  # type: ignore[attr-defined]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TrendPoint(_Out):
    """One week's snapshot of a node (the latest as_of of that week)."""

    as_of: date
    target: Number
    closed_to_date: Number
    p10: Number
    p50: Number
    p90: Number
    p_attain: Number
    expected: Number
    must_hit: Number
    stretch: Number
    p_attain_delta: Number = Field(description="change since the previous point")
    source: str = Field(description="what wrote it: feasibility, warnings or service")


class TrendOut(_Out):
    period: str
    level: str
    key: str
    as_of: date = Field(description="only snapshots as of this date or earlier")
    points: list[TrendPoint]
    notes: list[str]


class ChangeGroup(_Out):
    change: Literal["won", "lost", "slipped", "created", "other"]
    deals: int
    amount: Number
    expected_effect: Number = Field(description="change of the period's expected revenue")
    p_attain_effect: Number = Field(description="the part of the P(attain) delta attributed")


class ChangeDeal(_Out):
    change: Literal["won", "lost", "slipped", "created"]
    opportunity_id: str
    owner: str | None
    customer_id: str | None
    amount: Number
    stage: str | None
    created_at: date | None
    close_date_before: date | None
    close_date_after: date | None
    expected_effect: Number
    p_attain_effect: Number


class ChangesOut(_Out):
    period: str
    level: str
    key: str
    since: date
    until: date
    p_attain_since: Number
    p_attain_until: Number
    p_attain_delta: Number
    groups: list[ChangeGroup]
    deals: list[ChangeDeal]
    notes: list[str]


class CommitOut(_Out):
    """The latest submission of a node and category, beside its probability."""

    period: str
    level: str
    key: str
    category: str
    amount: float
    submitted_by: str
    submitted_at: datetime | None = Field(description="null for a data row without a date")
    source: Literal["data", "submitted"]
    p_reach: Number = Field(description="P(period revenue >= amount), same simulation as "
                                        "p_attain")
    target: Number
    p_attain: Number
    p50: Number
    expected: Number
    submissions: int


class HistoryOut(_Out):
    period: str
    level: str
    key: str
    category: str
    amount: float
    submitted_by: str
    submitted_at: datetime | None
    source: Literal["data", "submitted"]
    note: str


class CommitsOut(_Out):
    period: str
    as_of: date
    commits: list[CommitOut]
    history: list[HistoryOut]
    notes: list[str]


class CommitIn(_In):
    """A commit or best case for a node and period (an account manager: its own rep node,
    the default for its key)."""

    level: str | None = Field(default=None, min_length=1, max_length=100, examples=["rep"])
    key: str | None = Field(default=None, min_length=1, max_length=200,
                            examples=["Darcel Schlecht"])
    amount: Annotated[float, Strict()] = Field(ge=0, le=1e15,
                                               description="the amount committed")
    category: Category = "commit"
    period: PeriodText | None = Field(default=None,
                                      description="default: the quarter holding as_of")
    as_of: IsoDate | None = Field(default=None, description="default: the last date in the data")
    note: str = Field(default="", max_length=2000)


class SubmittedOut(_Out):
    id: int
    period: str
    level: str
    key: str
    category: str
    amount: float
    submitted_by: str
    submitted_at: datetime
    as_of: date | None
    note: str
    p_reach: Number
