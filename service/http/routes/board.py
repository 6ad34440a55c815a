"""The board's JSON API: a node's weekly trend, what changed since last week, commits.

Every role may read the board and submit commits; an account manager's key is held to its own
rep node (:func:`service.http.auth.board_node`): naming another node answers 403, and lists
show its own node only.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, Query, status

from engine.schemas import PERIOD_PATTERN
from service.http.auth import Permission, Principal, board_node, board_nodes
from service.http.board_schemas import (
    ChangeDeal,
    ChangeGroup,
    ChangesOut,
    CommitIn,
    CommitOut,
    CommitsOut,
    HistoryOut,
    SubmittedOut,
    TrendOut,
    TrendPoint,
)
from service.http.deps import StateDep, allowed
from service.http.errors import errors
from service.http.jsonbody import StrictJSONRoute
from service.http.present import json_value
from service.http.schemas import IsoDate
from service.usecases.board import board_changes, board_trend, resolve_node
from service.usecases.commits import list_commits, submit_commit

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["board"],
                   responses=errors(400, 401, 403, 404, 429, 503), route_class=StrictJSONRoute)

BoardReader = Annotated[Principal, Depends(allowed(Permission.BOARD))]
CommitWriter = Annotated[Principal, Depends(allowed(Permission.COMMITS_WRITE))]

Period = Annotated[str | None, Query(
    pattern=PERIOD_PATTERN, max_length=7,
    description="`2017`, `2017Q3` or `2017-08`; default: the quarter holding as_of.")]
AsOf = Annotated[IsoDate | None, Query(
    description="Only rows dated before it are used; default: the last date in the data.")]
Level = Annotated[str | None, Query(
    min_length=1, max_length=100, description="company, region, team, rep or a category "
    "column; default: the company (an account manager: its own rep node).")]
Key = Annotated[str | None, Query(min_length=1, max_length=200,
                                  description="the node's name (with level).")]


def _cell(value: Any) -> Any:
    """A frame value as JSON: timestamps as dates or datetimes, NaN/NaT as null."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else _utc(value.to_pydatetime())
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return json_value(value)


def _utc(value: datetime) -> datetime:
    """A stored wall-clock time (naive UTC) as an RFC 3339 date-time."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _day(value: Any) -> date | None:
    value = _cell(value)
    return value.date() if hasattr(value, "date") and callable(value.date) else value


def _rows(frame: pd.DataFrame, fields: Any, days: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    names = [f for f in fields if f in frame.columns]
    return [{n: (_day(v) if n in days else _cell(v)) for n, v in zip(names, row, strict=True)}
            for row in frame[names].itertuples(index=False)]


_TEXTS = ("opportunity_id", "owner", "customer_id", "stage")


def _texts(row: dict[str, Any]) -> dict[str, Any]:
    """Ids and names as text (an id column may hold numbers)."""
    return {k: (str(v) if k in _TEXTS and v is not None else v) for k, v in row.items()}


@router.get("/trend", response_model=TrendOut)
def get_trend(user: BoardReader, state: StateDep, level: Level = None, key: Key = None,
              period: Period = None, as_of: AsOf = None) -> TrendOut:
    """A node's feasibility snapshots of the period, one per week (p_attain, P50, closed)."""
    chosen_level, chosen_key = board_node(user, level, key)
    resolve_node(state.tables(), chosen_level, chosen_key)
    found = board_trend(state, chosen_level, chosen_key, period, as_of)
    until = as_of or state.span().default_as_of.date()
    points = [TrendPoint(**row) for row in _rows(found.frame, TrendPoint.model_fields,
                                                 days=("as_of",))]
    return TrendOut(period=found.period, level=chosen_level, key=chosen_key, as_of=until,
                    points=points, notes=found.notes)


@router.get("/changes", response_model=ChangesOut)
def get_changes(
    user: BoardReader, state: StateDep, level: Level = None, key: Key = None,
    period: Period = None,
    since: Annotated[IsoDate | None, Query(
        description="the earlier as-of; default: the node's snapshot a week before until")]
    = None,
    until: Annotated[IsoDate | None, Query(
        description="the later as-of; default: the node's latest snapshot")] = None,
) -> ChangesOut:
    """Deals of a node won, lost, slipped and created between two as-ofs, and the P(attain)
    delta of its snapshots attributed to them."""
    chosen_level, chosen_key = board_node(user, level, key)
    resolve_node(state.tables(), chosen_level, chosen_key)
    found = board_changes(state, chosen_level, chosen_key, period, since, until)
    days = ("created_at", "close_date_before", "close_date_after")
    return ChangesOut(
        period=found.period, level=found.level, key=found.key, since=found.since,
        until=found.until, p_attain_since=found.p_attain_since,
        p_attain_until=found.p_attain_until, p_attain_delta=found.p_attain_delta,
        groups=[ChangeGroup(**row) for row in _rows(found.groups, ChangeGroup.model_fields)],
        deals=[ChangeDeal.model_validate(_texts(row))
               for row in _rows(found.deals, ChangeDeal.model_fields, days=days)],
        notes=found.notes)


@router.get("/commits", response_model=CommitsOut)
def get_commits(user: BoardReader, state: StateDep, level: Level = None, key: Key = None,
                period: Period = None, as_of: AsOf = None) -> CommitsOut:
    """The latest commit and best case per node beside P(reaching it), and every
    submission."""
    nodes = board_nodes(user, level, key)
    found = list_commits(state, period, as_of, nodes)
    return CommitsOut(
        period=found.period, as_of=found.as_of,
        commits=[CommitOut(**row) for row in _rows(found.commits, CommitOut.model_fields)],
        history=[HistoryOut(**row) for row in _rows(found.history, HistoryOut.model_fields)],
        notes=found.notes)


@router.post("/commits", response_model=SubmittedOut, status_code=status.HTTP_201_CREATED,
             responses=errors(413))
def post_commit(user: CommitWriter, state: StateDep, body: CommitIn) -> SubmittedOut:
    """Submit a commit or best case for a node and period (every submission is kept; the
    latest counts); answered with P(period revenue >= amount)."""
    chosen_level, chosen_key = board_node(user, body.level, body.key)
    resolve_node(state.tables(), chosen_level, chosen_key)
    done = submit_commit(state, chosen_level, chosen_key, float(body.amount), body.category,
                         body.period, body.as_of, submitted_by=user.name, note=body.note)
    record = asdict(done.record) | {"submitted_at": _utc(done.record.submitted_at)}
    return SubmittedOut(**record, p_reach=done.p_reach)
