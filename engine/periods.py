"""Periods and as-of rules, written once: period labels and bounds, the data's first and last
day, and the default ``--as-of`` and ``--period`` every entry point uses.

A result as of T uses only rows dated before T; the default as-of is therefore the day after the
last dated row, so every row counts.
"""

from __future__ import annotations

import re

import pandas as pd

from engine.io import Tables
from engine.schemas import (
    CLOSE_DATE,
    CREATED_AT,
    FORWARD_LOOKING_DATES,
    OPPORTUNITIES,
    ORDER_DATE,
    PERIOD_PATTERN,
    STATUS,
    STATUS_OPEN,
    TABLES,
)

__all__ = [
    "PERIOD_NAMES",
    "as_of_after",
    "data_end",
    "default_as_of",
    "default_period",
    "first_day",
    "period_bounds",
    "period_of",
]

# The word for one period of each forecast frequency, in messages.
PERIOD_NAMES = {"D": "day", "W": "week", "M": "month", "Q": "quarter"}


def period_bounds(period: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Start and exclusive end of a period written ``2017``, ``2017Q3`` or ``2017-08``."""
    text = str(period).strip()
    if re.fullmatch(PERIOD_PATTERN, text) is None:
        raise ValueError(f"period must look like 2017, 2017Q3 or 2017-08, got {period!r}")
    year = int(text[:4])
    if "Q" in text:
        start, months = pd.Timestamp(year, 3 * int(text[5]) - 2, 1), 3
    elif "-" in text:
        start, months = pd.Timestamp(year, int(text[5:7]), 1), 1
    else:
        start, months = pd.Timestamp(year, 1, 1), 12
    return start, start + pd.DateOffset(months=months)


def period_of(date: pd.Timestamp, freq: str, ahead: int = 0) -> str:
    """The period label (``2017``, ``2017Q3``, ``2017-08``) holding ``date``, ``ahead`` later."""
    stamp = pd.Period(pd.Timestamp(date), freq={"Y": "Y", "Q": "Q", "M": "M"}[freq]) + ahead
    return (
        str(stamp.year)
        if freq == "Y"
        else (f"{stamp.year}Q{stamp.quarter}" if freq == "Q" else f"{stamp.year}-{stamp.month:02d}")
    )


def data_end(tables: Tables) -> pd.Timestamp:
    """The last day that holds a dated row (forward-looking dates such as expected closes aside)."""
    ends = [
        frame[c].max()
        for name, frame in tables.frames.items()
        for c in TABLES[name].columns_of_kind("date")
        if c in frame.columns and not frame.empty and c not in FORWARD_LOOKING_DATES
    ]
    opps = tables.get(OPPORTUNITIES)
    if opps is not None and not opps.empty:
        # A closed deal's close date is an event that happened, not an expectation.
        ends.append(opps.loc[opps[STATUS] != STATUS_OPEN, CLOSE_DATE].max())
    ends = [e for e in ends if pd.notna(e)]
    if not ends:
        raise ValueError("the data holds no dates")
    return pd.Timestamp(max(ends)).normalize()


def default_as_of(tables: Tables) -> pd.Timestamp:
    """The default ``--as-of`` of every command: the day after the last dated row.

    A result as of T uses only rows dated before T, so this default lets every row count.
    """
    return as_of_after(data_end(tables))


def as_of_after(last_day: pd.Timestamp) -> pd.Timestamp:
    """The as-of at which every row up to ``last_day`` counts: the next day."""
    return pd.Timestamp(last_day).normalize() + pd.Timedelta(days=1)


def default_period(as_of: pd.Timestamp) -> str:
    """The default ``--period``: the quarter holding the last day before ``as_of`` (the default
    as-of is the day after the data's last row, which may already open the next quarter)."""
    day = pd.Timestamp(as_of) - pd.Timedelta(days=1)
    return f"{day.year}Q{day.quarter}"


def first_day(tables: Tables) -> pd.Timestamp:
    """The first day with an order or a created deal."""
    starts = [tables.orders[ORDER_DATE].min()]
    opps = tables.get(OPPORTUNITIES)
    if opps is not None and not opps.empty:
        starts.append(opps[CREATED_AT].min())
    return pd.Timestamp(min(s for s in starts if pd.notna(s))).normalize()
