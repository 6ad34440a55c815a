"""The data as its export would have looked on an earlier day: for short-history checks.

Real users arrive with young CRMs. To prove that every model answers on three, six or nine
months of history, the shared datasets are cut to their first N months *as an export made on the
cut day would show them*: rows dated on or after the cut are gone, payments not yet made are
unpaid, and deals that closed later are still open at the last stage they had reached.
"""

from __future__ import annotations

import pandas as pd

from engine.io import Tables
from engine.periods import first_day
from engine.schemas import (
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    ENTERED_AT,
    INTERACTIONS,
    ISSUED_AT,
    LIST_PRICE,
    OCCURRED_AT,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDERS,
    PAID_AT,
    RECEIVABLES,
    STAGE,
    STAGE_HISTORY,
    STATUS,
    STATUS_OPEN,
)

__all__ = ["cut_history", "export_at", "first_day", "tables_before"]

_DATED = {ORDERS: ORDER_DATE, INTERACTIONS: OCCURRED_AT, RECEIVABLES: ISSUED_AT,
          OPPORTUNITIES: CREATED_AT, STAGE_HISTORY: ENTERED_AT}




def _reopened(opps: pd.DataFrame, history: pd.DataFrame | None,
              cutoff: pd.Timestamp) -> pd.DataFrame:
    """Deals closed on or after ``cutoff`` are open again, at the stage they had reached."""
    later = (opps[STATUS] != STATUS_OPEN) & (opps[CLOSE_DATE] >= cutoff)
    if not later.any():
        return opps
    opps = opps.copy()
    reached = pd.Series(dtype=object)
    if history is not None and not history.empty:
        reached = (history.sort_values(ENTERED_AT)
                   .drop_duplicates(OPPORTUNITY_ID, keep="last")
                   .set_index(OPPORTUNITY_ID)[STAGE])
    open_stages = opps.loc[opps[STATUS] == STATUS_OPEN, STAGE]
    usual = open_stages.mode().iloc[0] if not open_stages.empty else STATUS_OPEN
    stage = opps.loc[later, OPPORTUNITY_ID].map(reached).fillna(usual)
    opps[STAGE] = opps[STAGE].astype(object)
    opps.loc[later, STAGE] = stage.to_numpy()
    opps.loc[later, STATUS] = STATUS_OPEN
    if LIST_PRICE in opps.columns:
        # The amount at the close (e.g. crm-sales' close value) was not known while the deal
        # was open: an open deal is valued at its quoted price, as the importer values the
        # deals still open in the source.
        quoted = pd.to_numeric(opps.loc[later, LIST_PRICE], errors="coerce")
        opps.loc[later, AMOUNT] = quoted.fillna(opps.loc[later, AMOUNT]).to_numpy()
    return opps


def tables_before(tables: Tables, cutoff: pd.Timestamp | str) -> Tables:
    """The tables as they stood at ``cutoff``: rows dated on or after it are dropped.

    Orders, interactions, receivables (by issue date; a payment on or after the cutoff is not
    known yet), opportunities (by creation) and stage changes are cut. Customers stay whole:
    features only count a customer from its creation or first event before each as_of.
    """
    cutoff = pd.Timestamp(cutoff)
    frames = dict(tables.frames)
    for name, column in _DATED.items():
        frame = frames.get(name)
        if frame is not None and column in frame.columns:
            keep = frame[column] < cutoff
            if not keep.all():  # else the frame itself: no copy of a table kept whole
                frames[name] = frame.loc[keep]
    receivables = frames.get(RECEIVABLES)
    if receivables is not None and PAID_AT in receivables.columns:
        late = receivables[PAID_AT] >= cutoff
        if late.any():
            receivables = receivables.copy()
            receivables.loc[late, PAID_AT] = pd.NaT
            frames[RECEIVABLES] = receivables
    return Tables(frames, tables.source, tables.derived)


def export_at(tables: Tables, cutoff: pd.Timestamp | str) -> Tables:
    """The tables as an export made on ``cutoff`` would hold them: :func:`tables_before`, and
    deals that closed on or after it open again at the stage they had reached."""
    past = tables_before(tables, cutoff)
    frames = dict(past.frames)
    opps = frames.get(OPPORTUNITIES)
    if opps is not None and not opps.empty:
        frames[OPPORTUNITIES] = _reopened(opps, frames.get(STAGE_HISTORY),
                                            pd.Timestamp(cutoff))
    return Tables(frames, past.source, past.derived)


def cut_history(tables: Tables, months: int, start: pd.Timestamp | str | None = None) -> Tables:
    """The first ``months`` months of history (from ``start``, default the data's first day)."""
    begin = first_day(tables) if start is None else pd.Timestamp(start)
    frames = export_at(tables, begin + pd.DateOffset(months=months)).frames
    frames = {name: frame for name, frame in frames.items()}
    for name, column in _DATED.items():
        frame = frames.get(name)
        if frame is not None and column in frame.columns:
            frames[name] = frame.loc[frame[column] >= begin]
    return Tables(frames, tables.source, tables.derived)
