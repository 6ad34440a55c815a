"""Revenue as long series ``level, key, ds, y`` for every node of the hierarchy.

Revenue is what targets measure (CONTRACTS.md section 1): the sum of ``orders.amount`` by
``order_date`` plus won opportunities that no order carries, on their ``close_date``, attributed
to nodes by :func:`features.hierarchy.attribute_revenue`. Every level is a partition of the same
events, so company = sum of regions = sum of teams = sum of reps for every ``ds``.

A node's series starts at its first revenue and runs, zero-filled, to the last period of the
data (or of ``as_of``); the last period is flagged ``partial`` when it is not complete, so that
a forecaster never mistakes a half month for a bad month.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from engine import schemas as S
from engine.io import Tables
from features.hierarchy import UNASSIGNED, categorical_columns, revenue_events

__all__ = [
    "FREQS",
    "PARTIAL",
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


def _last_period(last_date: np.datetime64, freq: str, observed_until: np.datetime64
                 ) -> tuple[int, bool]:
    """The period holding ``last_date`` and whether data stops before that period ends."""
    last = int(period_ordinals(np.array([last_date]), freq)[0])
    period_end = period_starts(np.array([last + 1]), freq)[0]
    return last, bool(period_end > observed_until)


def _end_of_data(events: pd.DataFrame, freq: str, as_of: pd.Timestamp | None
                 ) -> tuple[int, bool]:
    """Last period and its partial flag, from ``as_of`` or else the last event's day."""
    if as_of is not None:
        until = np.datetime64(pd.Timestamp(as_of).as_unit("ns"))
        return _last_period(until - np.timedelta64(1, "ns"), freq, until)
    last_day = np.datetime64(events[S.DS].max().normalize().as_unit("ns"))
    return _last_period(last_day, freq, last_day + _DAY)


def _level_codes(events: pd.DataFrame, level: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer code of each event's key at ``level`` and the keys (missing -> unassigned)."""
    if level == S.LEVEL_COMPANY:
        return np.zeros(len(events), dtype=np.int64), np.array([S.COMPANY_KEY], dtype=object)
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
        S.LEVEL: level,
        S.KEY: keys[key_grid],
        S.DS: period_starts(ord_grid, freq),
        S.Y: y,
        "_ord": ord_grid,
    })


def _empty_series() -> pd.DataFrame:
    """No revenue: the series columns with their types."""
    return pd.DataFrame({
        S.LEVEL: pd.Series(dtype=object), S.KEY: pd.Series(dtype=object),
        S.DS: pd.Series(dtype="datetime64[ns]"), S.Y: pd.Series(dtype=float),
        PARTIAL: pd.Series(dtype=bool),
    })


def _checked_levels(tables: Tables, levels: Sequence[str] | None) -> list[str]:
    """The requested levels (default the hierarchy); ``ValueError`` naming unknown ones."""
    chosen = list(S.HIERARCHY_LEVELS if levels is None else levels)
    known = set(S.HIERARCHY_LEVELS) | set(categorical_columns(tables))
    unknown = [level for level in chosen if level not in known]
    if unknown:
        raise ValueError(f"unknown level(s) {', '.join(unknown)}: expected company, region, team, "
                         f"rep or a categorical column of customers/orders")
    return chosen


def revenue_series(tables: Tables, freq: str = "M", levels: Sequence[str] | None = None,
                   as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """Revenue per node and period: ``level, key, ds, y, partial`` (``ds`` = period start).

    Args:
        tables: validated tables; ``orders`` is required.
        freq: ``D``, ``W`` (weeks starting Monday), ``M`` or ``Q``.
        levels: hierarchy levels and/or categorical columns (``product``, ``segment``...);
            default company, region, team, rep.
        as_of: when given, only revenue dated before it; the series then run to the period
            holding the day before ``as_of``.
    """
    _check_freq(freq)
    chosen = _checked_levels(tables, levels)
    extra = [level for level in chosen if level not in S.HIERARCHY_LEVELS]
    events = revenue_events(tables, as_of=as_of, columns=extra)
    if events.empty:
        return _empty_series()
    last, partial = _end_of_data(events, freq, as_of)
    ords = period_ordinals(events[S.DS].to_numpy(), freq)
    amounts = events[S.AMOUNT].to_numpy(dtype=float)
    parts = [_level_series(lv, events, ords, amounts, last, freq) for lv in chosen]
    series = pd.concat(parts, ignore_index=True)
    series[PARTIAL] = partial & (series.pop("_ord").to_numpy() == last)
    return series
