"""Revenue as long series ``level, key, ds, y`` for every node of the hierarchy.

Revenue is what targets measure (README, "Your data"): the sum of ``orders.amount`` by
``order_date`` plus won opportunities that no order carries, on their ``close_date``, attributed
to nodes by :func:`features.hierarchy.attribute_revenue`. Every level is a partition of the same
events, so company = sum of regions = sum of teams = sum of reps for every ``ds``.

A node's series starts at its first revenue and runs, zero-filled, to the last period of the
data (or of ``as_of``); the last period is flagged ``partial`` when it is not complete, so that
a forecaster never mistakes a half month for a bad month.

Where the data ends (:func:`data_end_of`): data with one date per month (or quarter, or week),
always at the same place in its period (the 1st, the 15th, the last day...), is *monthly data*:
each row stands for its whole month, so the month of the last row is complete whatever day it
is dated on. Transaction data (many days per period) is observed up to ``as_of`` (default the
day after its last row), and a period that ends later is partial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.periods import PERIOD_NAMES
from engine.schemas import AMOUNT, COMPANY_KEY, DS, HIERARCHY_LEVELS, KEY, LEVEL, LEVEL_COMPANY, Y
from features.hierarchy import UNASSIGNED, categorical_columns, revenue_events

__all__ = [
    "FREQS",
    "PARTIAL",
    "DataEnd",
    "data_end_of",
    "data_granularity",
    "period_ordinals",
    "period_starts",
    "revenue_series",
]

FREQS = ("D", "W", "M", "Q")
PARTIAL = "partial"
_DAY = np.timedelta64(1, "D")


def _check_freq(freq: str) -> None:
    """Raise ``ValueError`` unless ``freq`` is one of :data:`FREQS`."""
    if freq not in FREQS:
        raise ValueError(f"freq must be one of {', '.join(FREQS)}, got {freq!r}")


def period_ordinals(dates: np.ndarray, freq: str) -> np.ndarray:
    """Integer period number of each date: days, Monday weeks, months or quarters since 1970."""
    _check_freq(freq)
    if freq in ("D", "W"):
        days = dates.astype("datetime64[D]").astype(np.int64)
        # 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
        return days if freq == "D" else (days + 3) // 7
    months = dates.astype("datetime64[M]").astype(np.int64)
    return months if freq == "M" else months // 3


def period_starts(ordinals: np.ndarray, freq: str) -> np.ndarray:
    """First instant (datetime64[ns]) of each period number from :func:`period_ordinals`."""
    _check_freq(freq)
    ordinals = np.asarray(ordinals, dtype=np.int64)
    if freq == "D":
        starts = ordinals.astype("datetime64[D]")
    elif freq == "W":
        starts = (ordinals * 7 - 3).astype("datetime64[D]")
    elif freq == "M":
        starts = ordinals.astype("datetime64[M]")
    else:
        starts = (ordinals * 3).astype("datetime64[M]")
    return starts.astype("datetime64[ns]")


_ORDER = {"D": 0, "W": 1, "M": 2, "Q": 3}
# Share of dates that must sit at the same place of their period (and alone in it) for the
# data to count as one row per period: a stray correction row does not change the verdict.
_CONSISTENT = 0.95


def _position(days: np.ndarray, freq: str) -> np.ndarray:
    """Where each day sits in its ``freq`` period: days since the start, or -1 on its last day."""
    ords = period_ordinals(days, freq)
    start = period_starts(ords, freq).astype("datetime64[D]")
    end = period_starts(ords + 1, freq).astype("datetime64[D]")
    offset = (days - start).astype(np.int64)
    return np.where(days == end - np.timedelta64(1, "D"), -1, offset)


def data_granularity(dates: np.ndarray) -> str:
    """The data's own period: the coarsest of Q, M, W with one date per period, every one at
    the same place of its period (all on the 1st, all on the 15th, all on the last day...);
    else ``D`` (transactions). Fewer than three distinct dates are read as ``D``."""
    days = np.unique(np.asarray(dates).astype("datetime64[D]"))
    if days.size < 3:
        return "D"
    for freq in ("Q", "M", "W"):
        ords = period_ordinals(days, freq)
        alone = np.unique(ords).size >= _CONSISTENT * days.size
        position = _position(days, freq)
        _, counts = np.unique(position, return_counts=True)
        same_place = counts.max() >= _CONSISTENT * days.size
        if alone and same_place:
            return freq
    return "D"


@dataclass(frozen=True)
class DataEnd:
    """Where revenue data ends at one frequency.

    Attributes:
        granularity: the data's own period (:func:`data_granularity`).
        observed_until: the first instant not covered by the data.
        last: period number of the last period holding data (complete or not).
        partial: whether that period is incomplete.
        covered: the share of the last period's days the data covers (1.0 when complete).
        first_covered: the share of the first period's days the data covers (data that starts
            mid-month leaves its first month short, just like a partial last one).
    """

    granularity: str
    observed_until: pd.Timestamp
    last: int
    partial: bool
    covered: float
    first_covered: float = 1.0

    def last_start(self, freq: str) -> pd.Timestamp:
        return pd.Timestamp(period_starts(np.array([self.last]), freq)[0])

    def first_open(self, freq: str) -> pd.Timestamp:
        """The first period not complete in the data: the partial one, else the next."""
        return pd.Timestamp(period_starts(np.array([self.last + (0 if self.partial else 1)]),
                                          freq)[0])


def data_end_of(dates: np.ndarray, freq: str, as_of: pd.Timestamp | None = None) -> DataEnd:
    """The end of the data at ``freq``: see the module docstring.

    Args:
        dates: the revenue event dates (those before ``as_of`` only).
        freq: D, W, M or Q.
        as_of: the day the data was observed to (default the day after the last date).

    Raises:
        ValueError: no dates, or ``freq`` finer than the data's own period (weekly forecasts of
            monthly figures).
    """
    _check_freq(freq)
    dates = np.asarray(dates).astype("datetime64[ns]")
    if dates.size == 0:
        raise ValueError("no revenue before the as-of date")
    native = data_granularity(dates)
    if _ORDER[freq] < _ORDER[native]:
        raise ValueError(
            f"the data holds one row per {PERIOD_NAMES[native]}: forecast at --freq "
            f"{' or '.join(f for f in FREQS if _ORDER[f] >= _ORDER[native])}, not {freq}")
    last_day = dates.max().astype("datetime64[D]")
    until = (np.datetime64(pd.Timestamp(as_of).as_unit("ns")) if as_of is not None
             else (last_day + _DAY).astype("datetime64[ns]"))
    if native != "D":
        # A row of monthly data stands for its whole month, whatever day it is dated on.
        native_last = int(period_ordinals(np.array([last_day]), native)[0])
        until = max(until, period_starts(np.array([native_last + 1]), native)[0])
    last = int(period_ordinals(np.array([until - np.timedelta64(1, "ns")]), freq)[0])
    start, end = period_starts(np.array([last, last + 1]), freq)
    covered = float((until - start) / (end - start))
    first_covered = 1.0
    if native == "D":
        first_day = dates.min().astype("datetime64[D]").astype("datetime64[ns]")
        first = int(period_ordinals(np.array([first_day]), freq)[0])
        begin, stop = period_starts(np.array([first, first + 1]), freq)
        first_covered = float((stop - first_day) / (stop - begin))
    return DataEnd(native, pd.Timestamp(until), last, bool(end > until), min(covered, 1.0),
                   first_covered)


def _level_codes(events: pd.DataFrame, level: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer code of each event's key at ``level`` and the keys (missing -> unassigned)."""
    if level == LEVEL_COMPANY:
        return np.zeros(len(events), dtype=np.int64), np.array([COMPANY_KEY], dtype=object)
    values = events[level]
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy().astype(np.int64)
        keys = values.cat.categories.to_numpy(dtype=object)
    else:
        codes, uniques = pd.factorize(values)
        keys = np.asarray(uniques, dtype=object)
    if (codes < 0).any():
        keys = np.append(keys, UNASSIGNED)
        codes = np.where(codes < 0, len(keys) - 1, codes)
    return _merged_codes(codes, keys)


def _merged_codes(codes: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes renumbered to the sorted, de-duplicated keys (``unassigned`` may appear twice)."""
    unique, inverse = np.unique(keys.astype(str), return_inverse=True)
    return inverse[codes], unique.astype(object)


def _zero_filled(codes: np.ndarray, ords: np.ndarray, amounts: np.ndarray, last: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums per (code, period) on a grid from each code's first period to ``last``."""
    first_ord = int(ords.min())
    span = last - first_ord + 1
    cell = codes.astype(np.int64) * span + (ords - first_ord)
    # Hash-factorize and bincount: cheaper than a groupby on millions of rows.
    cell_codes, distinct = pd.factorize(cell)
    totals = np.bincount(cell_codes, weights=amounts, minlength=len(distinct))
    order = np.argsort(distinct)
    cells, sums = distinct[order], totals[order]
    keys, first_cell = np.unique(cells // span, return_index=True)
    starts = cells[first_cell] % span
    counts = span - starts
    key_grid = np.repeat(keys, counts)
    # Offset of each grid row within its key's run, added to that key's first period.
    run_offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    off_grid = np.repeat(starts, counts) + run_offsets
    y = np.zeros(len(key_grid))
    y[np.searchsorted(key_grid * span + off_grid, cells)] = sums
    return key_grid, off_grid + first_ord, y


def _level_series(level: str, events: pd.DataFrame, ords: np.ndarray, amounts: np.ndarray,
                  last: int, freq: str) -> pd.DataFrame:
    """The zero-filled series of every key of ``level``, with period numbers in ``_ord``."""
    codes, keys = _level_codes(events, level)
    key_grid, ord_grid, y = _zero_filled(codes, ords, amounts, last)
    return pd.DataFrame({
        LEVEL: level,
        KEY: keys[key_grid],
        DS: period_starts(ord_grid, freq),
        Y: y,
        "_ord": ord_grid,
    })


def _empty_series() -> pd.DataFrame:
    """No revenue: the series columns with their types."""
    return pd.DataFrame({
        LEVEL: pd.Series(dtype=object), KEY: pd.Series(dtype=object),
        DS: pd.Series(dtype="datetime64[ns]"), Y: pd.Series(dtype=float),
        PARTIAL: pd.Series(dtype=bool),
    })


def _checked_levels(tables: Tables, levels: Sequence[str] | None) -> list[str]:
    """The requested levels (default the hierarchy); ``ValueError`` naming unknown ones."""
    chosen = list(HIERARCHY_LEVELS if levels is None else levels)
    known = set(HIERARCHY_LEVELS) | set(categorical_columns(tables))
    unknown = [level for level in chosen if level not in known]
    if unknown:
        raise ValueError(f"unknown level(s) {', '.join(unknown)}: expected company, region, team, "
                         f"rep or a categorical column of customers/orders")
    return chosen


def revenue_series(tables: Tables, freq: str = "M", levels: Sequence[str] | None = None,
                   as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """Revenue per node and period: ``level, key, ds, y, partial`` (``ds`` = period start).

    ``attrs["data_end"]`` holds the :class:`DataEnd` the series were cut at.

    Args:
        tables: validated tables; ``orders`` is required.
        freq: ``D``, ``W`` (weeks starting Monday), ``M`` or ``Q``.
        levels: hierarchy levels and/or categorical columns (``product``, ``segment``...);
            default company, region, team, rep.
        as_of: when given, only revenue dated before it; the series then run to the period
            holding the day before ``as_of`` (or to the end of the last row's period, for data
            with one row per period).

    Raises:
        ValueError: ``freq`` finer than the data's own period (see :func:`data_end_of`).
    """
    _check_freq(freq)
    chosen = _checked_levels(tables, levels)
    extra = [level for level in chosen if level not in HIERARCHY_LEVELS]
    events = revenue_events(tables, as_of=as_of, columns=extra)
    if events.empty:
        return _empty_series()
    end = data_end_of(events[DS].to_numpy(), freq, as_of)
    last, partial = end.last, end.partial
    ords = period_ordinals(events[DS].to_numpy(), freq)
    amounts = events[AMOUNT].to_numpy(dtype=float)
    parts = [_level_series(lv, events, ords, amounts, last, freq) for lv in chosen]
    series = pd.concat(parts, ignore_index=True)
    series[PARTIAL] = partial & (series.pop("_ord").to_numpy() == last)
    series.attrs["data_end"] = end
    return series
