"""One request resolver: the as-of date, the period and the level of a request, with the same
rules for the CLI and the HTTP service.

The base rules live in :mod:`engine.periods` (period bounds, the data's first and last day, the
default as-of and period); this module applies them to what a caller sent and refuses what
cannot be answered with one exception, :class:`RequestError`, naming the parameter. The HTTP
layer answers it with 400, the CLI with a usage error (exit 2).

The other refusals of a use case are here too, plain exceptions that know nothing of HTTP:
:class:`BadRequest` (a well-formed request that cannot be answered), :class:`NotFound`,
:class:`Conflict` and :class:`Unavailable` (the data or a model is not loaded). The HTTP layer
maps each to one status code (``service.http.errors``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import pandas as pd

from engine.io import Tables
from engine.periods import as_of_after, data_end, default_period, first_day, period_bounds
from engine.schemas import CUSTOMERS, HIERARCHY_LEVELS, ORDERS
from features.hierarchy import categorical_columns

__all__ = [
    "AS_OF_SLACK",
    "BadRequest",
    "Conflict",
    "DataSpan",
    "NotFound",
    "OutsideData",
    "Refusal",
    "RequestError",
    "Unavailable",
    "known_levels",
    "parse_as_of",
    "resolve_as_of",
    "resolve_level",
    "resolve_period",
]

# How far past the data's last date an as_of may be: "as of today" on an export a few weeks old.
AS_OF_SLACK = pd.Timedelta(days=31)


class Refusal(Exception):
    """A request a use case refuses, with a sentence saying why and what to do."""


class BadRequest(Refusal, ValueError):
    """A well-formed request that cannot be answered (HTTP 400)."""


class NotFound(Refusal, LookupError):
    """No such resource (HTTP 404)."""


class Conflict(Refusal, RuntimeError):
    """The request conflicts with the stored state (HTTP 409)."""


class Unavailable(Refusal, RuntimeError):
    """The data or a model the request needs is not loaded (HTTP 503)."""


class RequestError(BadRequest):
    """A request parameter that cannot be answered (HTTP 400, CLI exit 2).

    Attributes:
        parameter: the parameter's name as the service spells it (``as_of``, ``period``,
            ``level``); the CLI shows it as ``--as-of``.
    """

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter

    @property
    def option(self) -> str:
        """The parameter as a CLI option (``--as-of``)."""
        return "--" + self.parameter.replace("_", "-")


class OutsideData(NotFound, RequestError):
    """A well-formed parameter that names something this data does not have: a date or period
    outside it, a level it has no column for (HTTP 404, CLI exit 2)."""


@dataclass(frozen=True)
class DataSpan:
    """The days the data covers.

    Attributes:
        start: the first day with an order or a created deal.
        end: the last day holding a dated row.
    """

    start: pd.Timestamp
    end: pd.Timestamp

    @classmethod
    def of(cls, tables: Tables) -> DataSpan:
        """The span of ``tables``."""
        return cls(start=first_day(tables), end=data_end(tables))

    @property
    def default_as_of(self) -> pd.Timestamp:
        """The day after the last dated row, so every row counts."""
        return as_of_after(self.end)


def parse_as_of(value: str | date | pd.Timestamp | None, option: str = "as_of"
                ) -> pd.Timestamp | None:
    """An as-of as a timestamp at midnight (None stays None); an ISO date when given as text.
    ``option`` names the date in the message (``as_of``, ``since``)."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return pd.Timestamp(date.fromisoformat(value))
        return pd.Timestamp(value).normalize()
    except (ValueError, OverflowError) as exc:  # pandas' OutOfBoundsDatetime is a ValueError
        raise RequestError(
            option, f"expected an ISO date like 2017-08-31 after 1677, got {value!r}") from exc


def resolve_as_of(as_of: str | date | pd.Timestamp | None, span: DataSpan, *,
                  bounded: bool = True, option: str = "as_of") -> pd.Timestamp:
    """The as-of of a request: the one given, else the day after the data's last date.

    Args:
        as_of: what the caller sent (an ISO date as text, a date or a timestamp), or None.
        span: the days the data covers.
        bounded: refuse an as_of not after the data's first day or more than
            :data:`AS_OF_SLACK` past its last day, which keeps every simulation inside the
            history it learns from.
        option: the date's name in messages (``since`` for the start of a comparison).

    Raises:
        RequestError: ``as_of`` is not a date; :class:`OutsideData` (``bounded``) outside the
            data.
    """
    stamp = parse_as_of(as_of, option)
    if stamp is None:
        return span.default_as_of
    if bounded and not span.start < stamp <= span.end + AS_OF_SLACK:
        raise OutsideData(
            option, f"{option} {stamp.date()} is outside the data: expected a date after "
            f"{span.start.date()} and at most {AS_OF_SLACK.days} days after {span.end.date()}")
    return stamp


def resolve_period(period: str | None, as_of: pd.Timestamp, span: DataSpan | None = None) -> str:
    """The period of a request: the one given, else the quarter holding the day before as_of.

    Args:
        period: ``2017``, ``2017Q3`` or ``2017-08``, or None.
        as_of: the resolved as-of (the default period depends on it).
        span: when given, a period more than a year away from the data is refused.

    Raises:
        RequestError: ``period`` is malformed; :class:`OutsideData` (``span``) too far from
            the data.
    """
    if period is None:
        return default_period(as_of)
    try:
        period_bounds(period)
    except ValueError as exc:
        raise RequestError("period", str(exc)) from exc
    if span is not None and not span.start.year - 1 <= int(period[:4]) <= span.end.year + 1:
        raise OutsideData("period", f"period {period} is too far from the data "
                                     f"({span.start.year}..{span.end.year})")
    return period


def known_levels(tables: Tables) -> set[str]:
    """The levels a request may name: the hierarchy's and every categorical column's."""
    return {*HIERARCHY_LEVELS, *categorical_columns(tables)}


def resolve_level(level: str | None, tables: Tables | Iterable[str]) -> str | None:
    """The level of a request, checked against the data (None, the company, stays None).

    Args:
        level: ``company``, ``region``, ``team``, ``rep`` or a categorical column, or None.
        tables: the data, or the known levels themselves.

    Raises:
        OutsideData: a level the data does not have (a column of numbers, dates or ids, such
            as ``quantity``, is said to be one).
    """
    known = known_levels(tables) if isinstance(tables, Tables) else set(tables)
    if level is not None and level not in known:
        expected = f"expected one of {', '.join(sorted(known))}"
        where = _column_table(tables, level) if isinstance(tables, Tables) else None
        if where is not None:
            raise OutsideData("level", f"{level!r} is a column of {where} but not a level: it "
                                        "holds numbers, dates or ids, and a level groups rows "
                                        f"by a name such as a product or a segment; {expected}")
        raise OutsideData("level", f"unknown level {level!r}; {expected}")
    return level


def _column_table(tables: Tables, column: str) -> str | None:
    """The table among orders and customers that has ``column``, if any."""
    for table in (ORDERS, CUSTOMERS):
        frame = tables.get(table)
        if frame is not None and column in frame.columns:
            return table
    return None
