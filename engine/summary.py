"""Plain summaries of loaded tables, for people (the CLI's stderr) and scripts (``--json``)."""

from __future__ import annotations

import pandas as pd

from engine.io import Tables
from engine.schemas import (
    TABLES,
    TableSpec,
)

__all__ = ["table_summary"]


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






