"""Plain summaries of loaded tables, for people (the CLI's stderr) and scripts (``--json``)."""

from __future__ import annotations

import pandas as pd

from engine.io import Tables
from engine.schemas import (
    CLOSE_DATE,
    FORWARD_LOOKING_DATES,
    OPPORTUNITIES,
    STATUS,
    STATUS_OPEN,
    TABLES,
    TableSpec,
)

__all__ = ["data_end", "default_as_of", "default_period", "table_summary"]


def _date_range(spec: TableSpec, frame: pd.DataFrame) -> tuple[object, object]:
    dates = [frame[c] for c in spec.columns_of_kind("date") if c in frame.columns]
    if not dates or frame.empty:
        return None, None
    stacked = pd.concat(dates, ignore_index=True).dropna()
    if stacked.empty:
        return None, None
    return stacked.min().date(), stacked.max().date()


def table_summary(tables: Tables) -> pd.DataFrame:
    """One row per table: rows, columns, first and last date, and whether it was derived."""
    rows = []
    for name, spec in TABLES.items():
        frame = tables.get(name)
        if frame is None:
            rows.append(
                {
                    "table": name,
                    "rows": 0,
                    "columns": 0,
                    "first_date": None,
                    "last_date": None,
                    "status": "absent",
                }
            )
            continue
        first, last = _date_range(spec, frame)
        status = "derived" if name in tables.derived else "ok"
        rows.append(
            {
                "table": name,
                "rows": len(frame),
                "columns": frame.shape[1],
                "first_date": first,
                "last_date": last,
                "status": status,
            }
        )
    return pd.DataFrame(rows)


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
    return data_end(tables) + pd.Timedelta(days=1)


def default_period(as_of: pd.Timestamp) -> str:
    """The default ``--period``: the quarter holding the last day before ``as_of`` (the default
    as-of is the day after the data's last row, which may already open the next quarter)."""
    day = pd.Timestamp(as_of) - pd.Timedelta(days=1)
    return f"{day.year}Q{day.quarter}"
