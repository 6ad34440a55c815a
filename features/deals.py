"""Deals seen at past dates, and whether each was won inside a period: the win model's table.

A deal open at a date ``T'`` is described by its funnel features at ``T'``
(:func:`features.funnel.opportunity_features`, with the expected close falling back to the one
recorded at creation, and the amount features to the list price when the data has them:
:func:`deal_inputs`). :func:`deal_snapshots` stacks those frames over many dates
(:func:`deal_snapshot_dates`: weekly by default, back to the first recorded outcome).

Each snapshot is paired with the periods it can ask about (the current month, quarter and
year, the next month and quarter, and optionally rolling windows of ``h`` days from ``T'``);
:func:`period_features` says where the period lies from ``T'`` and where the deal's expected
close falls in it, and :func:`win_labels` whether the deal was won with its close inside the
period (a deal won after the period ended slipped, and counts 0). A row's label is known once
its period has ended, so :func:`win_training_rows` keeps for a training date ``as_of`` only
the rows whose period ended by then. Rows whose deal is expected, at ``T'``, to close after
the period end are left out: the feasibility simulation never counts such deals (they are the
next period's pipeline), so the model is trained on exactly the rows it is asked about.

Everything here uses rows dated before each snapshot only; the estimators are in
:mod:`models.win`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.periods import period_bounds, period_of
from engine.schemas import (
    AMOUNT,
    AS_OF,
    CLOSE_DATE,
    CREATED_AT,
    LIST_PRICE,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    OWNER,
    PRODUCT,
    SEGMENT,
    STATUS,
    STATUS_OPEN,
    STATUS_WON,
)
from features.funnel import (
    F_AMOUNT_VS_OWNER,
    F_DAYS_TO_CLOSE,
    F_OVERDUE,
    F_STAGE,
    FEATURES,
    opportunity_features,
)

__all__ = [
    "CATEGORICAL_FEATURES",
    "LABEL",
    "LOG_AMOUNT",
    "NUMERIC_FEATURES",
    "ORIGINAL_CLOSE_DATE",
    "PERIOD_END",
    "PERIOD_FEATURES",
    "PERIOD_START",
    "P_CLOSE_KNOWN",
    "P_CLOSE_TO_END",
    "P_CLOSE_TO_START",
    "P_DAYS_LEFT",
    "P_DAYS_TO_START",
    "P_LENGTH",
    "deal_inputs",
    "deal_snapshot_dates",
    "deal_snapshots",
    "period_features",
    "win_labels",
    "win_training_rows",
]

LABEL = "won_in_period"
PERIOD_START = "period_start"
PERIOD_END = "period_end"
# An optional opportunities column (the synthetic company has it): the expected close date
# recorded when the deal was created. Known from creation on, so it is point-in-time safe and
# stands in for the expected close at a past date when stage_history has no close_date column.
ORIGINAL_CLOSE_DATE = "original_close_date"

P_DAYS_TO_START = "period_days_to_start"
P_DAYS_LEFT = "period_days_left"
P_LENGTH = "period_length_days"
P_CLOSE_TO_END = "period_close_to_end"
P_CLOSE_TO_START = "period_close_to_start"
P_CLOSE_KNOWN = "period_close_known"
PERIOD_FEATURES = (
    P_DAYS_TO_START,
    P_DAYS_LEFT,
    P_LENGTH,
    P_CLOSE_TO_END,
    P_CLOSE_TO_START,
    P_CLOSE_KNOWN,
)
LOG_AMOUNT = "log_amount"
CATEGORICAL_FEATURES = (F_STAGE, PRODUCT, SEGMENT)
NUMERIC_FEATURES = (
    *[f for f in FEATURES if f != F_STAGE],
    LOG_AMOUNT,
    *PERIOD_FEATURES,
)
# Current period for each of these frequencies, and the next one for the first two.
CURRENT_FREQS = ("M", "Q", "Y")
NEXT_FREQS = ("M", "Q")
_DAY = pd.Timedelta(days=1)


# --- where the period lies ------------------------------------------------------------------


def period_features(deals: pd.DataFrame, start: Any, end: Any, as_of: Any) -> pd.DataFrame:
    """The period-conditioning features of each deal row (days, relative to ``as_of``).

    Args:
        deals: rows with ``close_date`` (the expected close at ``as_of``, NaT when unknown).
        start: period start (inclusive): a Series aligned to ``deals`` or one Timestamp.
        end: period end (exclusive), likewise.
        as_of: the date the deals are seen at, likewise.
    """
    close = deals[CLOSE_DATE]
    return pd.DataFrame(
        {
            P_DAYS_TO_START: np.maximum((start - as_of) / _DAY, 0.0),
            P_DAYS_LEFT: (end - as_of) / _DAY,
            P_LENGTH: (end - start) / _DAY,
            P_CLOSE_TO_END: (close - end) / _DAY,
            P_CLOSE_TO_START: (close - start) / _DAY,
            P_CLOSE_KNOWN: close.notna().astype(float),
        },
        index=deals.index,
    )


# --- deal frames at a date ------------------------------------------------------------------


def _with_close_fallback(tables: Tables, deals: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Expected close unknown at ``as_of`` -> the creation-time one, when the data has it."""
    opps = tables.get(OPPORTUNITIES)
    if opps is None or ORIGINAL_CLOSE_DATE not in opps.columns:
        return deals
    original = pd.to_datetime(
        deals[OPPORTUNITY_ID].map(opps.set_index(OPPORTUNITY_ID)[ORIGINAL_CLOSE_DATE]),
        errors="coerce",
    )
    close = deals[CLOSE_DATE].fillna(original)
    return deals.assign(
        **{
            CLOSE_DATE: close,
            F_OVERDUE: (close < as_of).astype(float).where(close.notna()),
            F_DAYS_TO_CLOSE: (close - as_of) / _DAY,
        }
    )


def deal_inputs(tables: Tables, as_of: pd.Timestamp | str,
                snapshot: pd.Timestamp | None = None) -> pd.DataFrame:
    """Every deal open at ``as_of`` with its funnel features (see :mod:`features.funnel`).

    The expected close date falls back to ``original_close_date`` where the funnel cannot
    reconstruct it (no close dates in ``stage_history``). ``snapshot``: the date the whole
    opportunities table describes, when ``tables`` hold a bucket of the deals
    (:func:`features.funnel.opportunity_state`).
    """
    as_of = pd.Timestamp(as_of)
    deals = opportunity_features(tables, as_of, snapshot)
    deals = _with_close_fallback(tables, deals, as_of)
    deals = _with_creation_amounts(tables, deals, as_of)
    value = deals[_AMOUNT_FEATURE_SOURCE] if _AMOUNT_FEATURE_SOURCE in deals.columns else deals[
        AMOUNT]
    return deals.drop(columns=[_AMOUNT_FEATURE_SOURCE], errors="ignore").assign(
        **{LOG_AMOUNT: np.log1p(value.clip(lower=0.0))})


_AMOUNT_FEATURE_SOURCE = "_amount_known"


def _with_creation_amounts(tables: Tables, deals: pd.DataFrame, as_of: pd.Timestamp
                           ) -> pd.DataFrame:
    """With :data:`engine.schemas.LIST_PRICE` in the data, the amount features use it:
    ``log_amount`` and the ratio to the owner's median value of deals won before ``as_of``."""
    opps = tables.get(OPPORTUNITIES)
    if opps is None or LIST_PRICE not in opps.columns or deals.empty:
        return deals
    value = pd.to_numeric(opps.set_index(OPPORTUNITY_ID)[LIST_PRICE], errors="coerce")
    value = value[~value.index.duplicated()]
    known = deals[OPPORTUNITY_ID].map(value).astype(float)
    known = known.where(known.notna(), deals[AMOUNT])
    won = opps[(opps[STATUS] == STATUS_WON) & (opps[CLOSE_DATE] < as_of)]
    won_value = pd.to_numeric(won[LIST_PRICE], errors="coerce")
    medians = won_value.groupby(won[OWNER]).median()
    median = deals[OWNER].map(medians).astype(float).fillna(won_value.median())
    return deals.assign(**{_AMOUNT_FEATURE_SOURCE: known,
                           F_AMOUNT_VS_OWNER: known / median.where(median > 0)})


def deal_snapshot_dates(
    tables: Tables, as_of: pd.Timestamp | str, every_days: int = 7, warmup_days: int = 28
) -> list[pd.Timestamp]:
    """Dates to see the deals at: ``as_of - k * every_days`` back to the first recorded outcome.

    That start is ``warmup_days`` after the first deal was created, and not before the first
    deal was closed: before it, an export usually holds only the deals that were still open
    later, whose labels would all be "not won yet".
    """
    as_of = pd.Timestamp(as_of).normalize()
    opps = tables.get(OPPORTUNITIES)
    if opps is None or opps.empty:
        return []
    closed = opps.loc[
        (opps[STATUS] != STATUS_OPEN) & (opps[CLOSE_DATE] < as_of), CLOSE_DATE
    ]
    first = pd.Timestamp(opps[CREATED_AT].min()).normalize() + pd.Timedelta(days=warmup_days)
    if len(closed):
        first = max(first, pd.Timestamp(closed.min()).normalize())
    count = max(int((as_of - first) / _DAY) // every_days, 0)
    return [as_of - pd.Timedelta(days=every_days * k) for k in range(count, 0, -1)]


def deal_snapshots(
    tables: Tables, dates: Sequence[pd.Timestamp], progress: Callable[[str], None] | None = None,
    snapshot: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """:func:`deal_inputs` at each date, stacked (``as_of`` tells them apart; ``snapshot`` as
    there).

    Features at a date use only rows dated before it, so a stack built once over the whole
    history serves every later training as_of (the replay benchmark relies on it).
    """
    frames = []
    for date in dates:
        frames.append(deal_inputs(tables, date, snapshot))
        if progress is not None:
            progress(f"deals at {pd.Timestamp(date).date()}")
    if not frames:
        return deal_inputs(tables, pd.Timestamp("1970-01-01")).iloc[:0]
    frames = [f for f in frames if not f.empty] or frames[:1]
    return pd.concat(frames, ignore_index=True)


# --- labels and training rows ---------------------------------------------------------------


def win_labels(
    opportunities: pd.DataFrame, ids: pd.Series, start: pd.Series, end: pd.Series
) -> pd.Series:
    """1 when the deal was won with its close inside ``[start, end)``, else 0.

    A won deal whose close falls after ``end`` slipped and counts 0. Valid only for rows whose
    ``end`` is before the date the opportunities table describes (the caller keeps those).
    """
    final = opportunities.set_index(OPPORTUNITY_ID)
    status = ids.map(final[STATUS])
    close = ids.map(final[CLOSE_DATE])
    won = (status == STATUS_WON) & (close >= start) & (close < end)
    return won.astype(np.int8)


def _period_pairs(dates: pd.Series, windows: Sequence[int] = ()) -> pd.DataFrame:
    """For each distinct snapshot date: the periods it is paired with and their bounds.

    Calendar periods (current month, quarter and year, next month and quarter), and with
    ``windows`` also rolling windows ``[T', T' + h)`` of ``h`` days: a young CRM has few
    calendar periods that have ended, but a week or a month after each snapshot is known.
    """
    rows = []
    for date in pd.Series(dates.unique()):
        wanted = [(f, 0) for f in CURRENT_FREQS] + [(f, 1) for f in NEXT_FREQS]
        for freq, ahead in wanted:
            start, end = period_bounds(period_of(date, freq, ahead))
            rows.append({AS_OF: date, PERIOD_START: start, PERIOD_END: end})
        for days in windows:
            day = pd.Timestamp(date).normalize()
            rows.append({AS_OF: date, PERIOD_START: day,
                         PERIOD_END: day + pd.Timedelta(days=int(days))})
    return pd.DataFrame(rows).drop_duplicates([AS_OF, PERIOD_START, PERIOD_END])


def win_training_rows(
    snapshots: pd.DataFrame, opportunities: pd.DataFrame, as_of: pd.Timestamp | str,
    windows: Sequence[int] = (),
) -> pd.DataFrame:
    """Snapshot deals x periods whose outcome is known before ``as_of``, with their label.

    Args:
        snapshots: :func:`deal_snapshots` output.
        opportunities: the opportunities table (final statuses and actual close dates).
        as_of: training date; only periods that ended on or before it are kept, so no label
            uses an outcome that was unknown at ``as_of``.
        windows: lengths in days of rolling windows ``[T', T' + h)`` paired with each
            snapshot besides the calendar periods; ``()`` for calendar periods only.

    Returns:
        The snapshot columns plus ``period_start``, ``period_end``, the period features and
        ``won_in_period``.
    """
    as_of = pd.Timestamp(as_of)
    seen = snapshots[snapshots[AS_OF] < as_of]
    if seen.empty:
        return _empty_rows(snapshots)
    pairs = _period_pairs(seen[AS_OF], windows)
    pairs = pairs[pairs[PERIOD_END] <= as_of]
    # A block of snapshot rows at a time: each row's pairs, features and label depend on that
    # row alone (the merge keeps the snapshot rows' order), so the blocks stacked are the whole
    # at once, without ever holding every row x period pair (about five per row) before the
    # filter drops most of them.
    parts = [_training_block(seen.iloc[start:start + _BLOCK_ROWS], pairs, opportunities)
             for start in range(0, len(seen), _BLOCK_ROWS)]
    kept = [p for p in parts if len(p)] or parts[:1]
    return kept[0] if len(kept) == 1 else pd.concat(kept, ignore_index=True)


# Snapshot rows paired with their periods at a time (win_training_rows).
_BLOCK_ROWS = 100_000


def _training_block(seen: pd.DataFrame, pairs: pd.DataFrame, opportunities: pd.DataFrame
                    ) -> pd.DataFrame:
    """:func:`win_training_rows` of some snapshot rows, with the periods ``pairs`` offers."""
    rows = seen.merge(pairs, on=AS_OF, how="inner")
    rows = pd.concat(
        [rows, period_features(rows, rows[PERIOD_START], rows[PERIOD_END], rows[AS_OF])], axis=1
    )
    # Feasibility never counts a deal expected after the period end: train on what it asks.
    rows = rows[~(rows[CLOSE_DATE] >= rows[PERIOD_END])].reset_index(drop=True)
    rows[LABEL] = win_labels(
        opportunities, rows[OPPORTUNITY_ID], rows[PERIOD_START], rows[PERIOD_END]
    ).to_numpy()
    return rows


def _empty_rows(snapshots: pd.DataFrame) -> pd.DataFrame:
    extra = {
        PERIOD_START: pd.Series(dtype="datetime64[ns]"),
        PERIOD_END: pd.Series(dtype="datetime64[ns]"),
        **{c: pd.Series(dtype=float) for c in PERIOD_FEATURES},
        LABEL: pd.Series(dtype=np.int8),
    }
    return snapshots.iloc[:0].assign(**extra)

