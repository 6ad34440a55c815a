"""Point-in-time customer features: purchase history, interactions, receivables and pipeline.

Every feature at ``as_of`` uses only rows dated strictly before ``as_of``. ``as_of`` is taken
at day resolution (normalized to midnight), so every row dated on the as_of day belongs to the
future, where the churn labels look (``features.labels``).

A *purchase* is an order row with a positive amount; rows with a negative amount are returns or
credit notes. Recency, frequency and the repurchase cycle count distinct purchase *days*, so an
order split into many lines (one per product) counts once.

How it stays fast: customer ids become integer codes once (sorted ids, code = position), and
each dated table is sorted once by (customer, day) into a :class:`Timeline`. A window count or
sum for every customer at once is then two ``np.searchsorted`` calls and a difference of prefix
sums, so :class:`CustomerHistory` is prepared once and answers many snapshots cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    AS_OF,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    DUE_DATE,
    INTERACTIONS,
    ISSUED_AT,
    KIND,
    OCCURRED_AT,
    OPPORTUNITIES,
    ORDER_DATE,
    ORDERS,
    PAID_AT,
    PRODUCT,
    RECEIVABLES,
    REGION,
    SEGMENT,
    SEVERITY,
    STATUS,
    STATUS_LOST,
    STATUS_WON,
)

__all__ = [
    "FEATURE_DESCRIPTIONS",
    "KIND_COMPLAINT",
    "KIND_TICKET",
    "WINDOWS",
    "CustomerHistory",
    "InteractionHistory",
    "OrderHistory",
    "PrefixSums",
    "Timeline",
    "as_of_day",
    "breadth_features",
    "category_features",
    "customer_features",
    "customer_history",
    "customer_index",
    "cycle_features",
    "feature_descriptions",
    "features_at",
    "format_feature",
    "interaction_features",
    "interaction_history",
    "known_customers",
    "lifetime_features",
    "order_features",
    "order_history",
    "pipeline_features",
    "receivable_features",
    "rfm_features",
    "tenure_days",
    "trend_features",
]

WINDOWS: tuple[int, ...] = (30, 90, 180, 365)
TREND_DAYS = 90  # spend in the last TREND_DAYS against the TREND_DAYS before
BREADTH_DAYS = 365  # window of distinct products and of the returns share
SEVERITY_DAYS = 90
PIPELINE_DAYS = 180  # window of recently won and lost deals
# Interaction kinds with their own features; schemas.py names no kinds (the data contract only
# gives examples).
KIND_COMPLAINT = "complaint"
KIND_TICKET = "ticket"

_NS_PER_DAY = 86_400 * 10**9
_GROSS, _RETURNS = "gross", "returns"
_COMPLAINTS, _TICKETS, _SEVERITY, _SEVERITY_N = "complaints", "tickets", "severity", "severity_n"
# customers column -> categorical feature.
_CATEGORIES = {
    SEGMENT: "cat_segment",
    REGION: "cat_region",
    ACCOUNT_MANAGER: "cat_account_manager",
}

Arrays = dict[str, np.ndarray]
_POSITION_CACHE = 16


# --- days and customer codes -------------------------------------------------------------


def as_of_day(as_of: pd.Timestamp | str) -> tuple[pd.Timestamp, int]:
    """The as_of normalized to midnight (naive, UTC for aware input) and its day number."""
    ts = pd.Timestamp(as_of)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    ts = ts.normalize()
    return ts, int(ts.value // _NS_PER_DAY)


def _day_ints(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Days since 1970-01-01 (int64, floored) and whether each date is present."""
    stamps = values.to_numpy(dtype="datetime64[ns]")
    return stamps.view(np.int64) // _NS_PER_DAY, ~np.isnat(stamps)


def _day_numbers(values: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 as float64 (NaN for missing dates)."""
    days, present = _day_ints(values)
    return np.where(present, days, np.nan)


def customer_index(columns: Sequence[pd.Series]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted distinct customer ids over ``columns`` and each column's codes (-1 for missing).

    Strings are hashed once per column (``pd.factorize``); only the distinct ids are sorted.
    """
    factorized = [pd.factorize(column) for column in columns]
    distinct = [np.asarray(uniques, dtype=object) for _, uniques in factorized]
    # Hash first, then sort only the distinct ids: sorting strings is slow, np.unique sorts all.
    ids = np.sort(pd.unique(np.concatenate(distinct))) if distinct else np.array([], object)
    index = pd.Index(ids)
    codes = []
    for (column_codes, _), uniques in zip(factorized, distinct, strict=True):
        # The appended -1 makes code -1 (a missing id) map to -1.
        to_id = np.append(index.get_indexer(pd.Index(uniques)), -1)
        codes.append(to_id[column_codes])
    return ids, codes


# --- sorted events ---------------------------------------------------------------------------


def _sort_events(codes: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Row order by (customer, day), the sorted keys ``code * span + day - day0``, day0, span."""
    if len(days) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 1
    day0 = int(days.min())
    span = int(days.max()) - day0 + 1
    keys = codes.astype(np.int64) * span
    keys += np.asarray(days, dtype=np.int64)
    keys -= day0
    order = _lexsort_packed((keys,), 1)  # a single column: the radix plays no part
    return order, keys[order], day0, span


def _lexsort_packed(columns: Sequence[np.ndarray], radix: int) -> np.ndarray:
    """Row order sorting by ``columns`` (first is most significant), each in [0, radix).

    The first column may be any non-negative int. When all fit in 62 bits with the row number,
    one SIMD-accelerated ``np.sort`` of packed keys replaces ``np.lexsort``, which is several
    times slower; the row number rides along in the low bits.
    """
    n = len(columns[0])
    row_bits = max(n.bit_length(), 1)
    top = int(columns[0].max()) + 1 if n else 1
    if top.bit_length() + (len(columns) - 1) * radix.bit_length() + row_bits > 62:
        return np.lexsort(tuple(reversed(columns)))
    key = columns[0].astype(np.int64)  # a copy, so the shifts below may work in place
    for column in columns[1:]:
        key <<= radix.bit_length()
        key |= column
    key <<= row_bits
    key |= np.arange(n, dtype=np.int64)
    key.sort()
    key &= (1 << row_bits) - 1
    return key


@dataclass(frozen=True)
class PrefixSums:
    """Running sums with a leading zero, so the sum over rows [lo, hi) is two lookups.

    Attributes:
        high: ``np.cumsum`` of the values.
        low: running sum of the rounding errors of ``high`` (None when the sums are exact,
            e.g. counts). Over millions of amounts ``high`` drifts by ~1e-5 of a currency
            unit; adding ``low`` back makes a window's sum accurate to the last bit or two.
    """

    high: np.ndarray
    low: np.ndarray | None = None

    @classmethod
    def of(cls, values: np.ndarray, compensated: bool = False) -> PrefixSums:
        high = np.zeros(len(values) + 1)
        np.cumsum(values, out=high[1:])
        if not compensated:
            return cls(high)
        before, after = high[:-1], high[1:]
        # TwoSum: the exact error of each addition after[i] = before[i] + values[i], that is
        # (before - (after - added)) + (values - added) with added = after - before.
        added = after - before
        error = after - added
        np.subtract(before, error, out=error)
        np.subtract(values, added, out=added)
        error += added
        low = np.zeros_like(high)
        np.cumsum(error, out=low[1:])
        return cls(high, low)

    def between(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The sums over rows [lo, hi), elementwise."""
        out = self.high[hi] - self.high[lo]
        if self.low is not None:
            out += self.low[hi] - self.low[lo]
        return out


def _int_dtype(top: int) -> type[np.signedinteger]:
    """int32 when values up to ``top`` fit, else int64 (half the memory for the common case)."""
    return np.int32 if top < np.iinfo(np.int32).max else np.int64


def _segment_starts(keys: np.ndarray) -> np.ndarray:
    """Positions where a new key starts in sorted ``keys``."""
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else keys[:0]


@dataclass(frozen=True)
class Timeline:
    """Dated events of all customers on one sorted axis, answering window queries per customer.

    Attributes:
        keys: ``code * span + (day - day0)``, ascending; a customer's events are contiguous.
        day0: first day number; span: number of days covered.
        n_customers: number of customer codes.
        sums: value name -> running sums of that value over the events.
    """

    keys: np.ndarray
    day0: int
    span: int
    n_customers: int
    sums: dict[str, PrefixSums] = field(default_factory=dict)
    # Recent positions by query day: one snapshot asks for the same few days many times.
    _positions: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, keys: np.ndarray, day0: int, span: int, n_customers: int,
           sums: dict[str, PrefixSums] | None = None) -> Timeline:
        """A timeline over sorted ``keys``, stored as int32 when every key fits."""
        # Half the bytes per key makes the many searchsorted calls about twice as fast.
        return cls(keys.astype(_int_dtype((n_customers + 1) * span)), day0, span, n_customers,
                   sums or {})

    @cached_property
    def _base(self) -> np.ndarray:
        # The keys' own dtype: searchsorted would otherwise convert all keys on every call.
        return np.arange(self.n_customers, dtype=self.keys.dtype) * self.keys.dtype.type(self.span)

    @cached_property
    def _starts(self) -> np.ndarray:
        return np.searchsorted(self.keys, self._base)

    def positions(self, day: int) -> np.ndarray:
        """Per customer, the index of its first event on or after ``day``."""
        # Clipping keeps a query inside the customer's own key range: offset span is the
        # start of the next customer, which is this customer's end.
        offset = min(max(day - self.day0, 0), self.span)
        found = self._positions.get(offset)
        if found is None:
            if len(self._positions) >= _POSITION_CACHE:
                del self._positions[next(iter(self._positions))]
            found = self._positions[offset] = np.searchsorted(self.keys, self._base + offset)
        return found

    def count(self, lo: int, hi: int) -> np.ndarray:
        """Per customer, the number of events with day in [lo, hi)."""
        return (self.positions(hi) - self.positions(lo)).astype(np.float64)

    def total(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Per customer, the sum of value ``name`` over events with day in [lo, hi)."""
        return self.sums[name].between(self.positions(lo), self.positions(hi))

    def any_before(self, day: int) -> np.ndarray:
        """Per customer, whether it has an event before ``day``."""
        return self.positions(day) > self._starts

    def last_before(self, day: int) -> np.ndarray:
        """Per customer, the day of its last event before ``day`` (NaN if none)."""
        end = self.positions(day)
        return self._day_at(end - 1, end > self._starts)

    def first_before(self, day: int) -> np.ndarray:
        """Per customer, the day of its first event if it is before ``day`` (NaN if none)."""
        return self._day_at(self._starts, self.any_before(day))

    def _day_at(self, index: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if len(self.keys) == 0:
            return np.full(self.n_customers, np.nan)
        safe = np.clip(index, 0, len(self.keys) - 1)
        offsets = self.keys[safe].astype(np.int64) - self._base
        return np.where(valid, offsets + self.day0, np.nan)

    def subset(self, mask: np.ndarray) -> Timeline:
        """The events where ``mask`` holds (sums are not carried over)."""
        return Timeline(self.keys[mask], self.day0, self.span, self.n_customers)

    def customer_codes(self) -> np.ndarray:
        """The customer code of every event (int64)."""
        return self.keys.astype(np.int64) // self.span

    def day_offsets(self) -> np.ndarray:
        """The day of every event, as an offset from ``day0`` (int64)."""
        return self.keys.astype(np.int64) % self.span


def _segment_max(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per customer, the max of ``values[lo:hi]`` ignoring NaN (NaN for empty segments)."""
    if len(values) == 0:
        return np.full(len(lo), np.nan)
    bounds = np.empty(2 * len(lo), dtype=np.int64)
    bounds[0::2], bounds[1::2] = lo, hi
    # reduceat over [lo, hi) pairs; the padding keeps hi == len(values) a valid index.
    out = np.fmax.reduceat(np.append(values, np.nan), bounds)[0::2]
    return np.where(hi > lo, out, np.nan)


# --- repurchase cycle and product breadth ---------------------------------------------------


@dataclass(frozen=True)
class _Gaps:
    """Gaps between consecutive purchase days, ordered by (customer, gap) once for all as_ofs."""

    codes: np.ndarray
    gaps: np.ndarray
    ends: np.ndarray  # day offset of the later purchase of each gap
    day0: int
    n_customers: int

    @classmethod
    def of(cls, purchases: Timeline) -> _Gaps:
        codes, days = purchases.customer_codes(), purchases.day_offsets()
        same = codes[1:] == codes[:-1]
        code, gap, end = codes[1:][same], (days[1:] - days[:-1])[same], days[1:][same]
        bits = purchases.span.bit_length()
        if int(code.max(initial=0)).bit_length() + 2 * bits > 63:
            order = np.lexsort((end, gap, code))
            return cls(code[order], gap[order], end[order], purchases.day0,
                       purchases.n_customers)
        # Sorting the packed values needs no permutation: all three unpack from the key.
        packed = np.sort((((code << bits) | gap) << bits) | end)
        mask = (1 << bits) - 1
        small = _int_dtype(max(purchases.n_customers, purchases.span))
        return cls((packed >> (2 * bits)).astype(small), ((packed >> bits) & mask).astype(small),
                   (packed & mask).astype(small), purchases.day0, purchases.n_customers)

    def quantiles(self, day: int, qs: Sequence[float]) -> list[np.ndarray]:
        """Per customer, linear-interpolated quantiles of its gaps ending before ``day``."""
        keep = self.ends < day - self.day0
        gaps = np.append(self.gaps[keep], 0).astype(np.float64)  # padding for the masked
        counts = np.bincount(self.codes[keep], minlength=self.n_customers)
        first = np.cumsum(counts) - counts
        out = []
        for q in qs:
            # numpy's default (linear) quantile; customers without gaps point at the padding.
            at = np.where(counts > 0, first + q * (counts - 1), len(gaps) - 1)
            lo, hi = np.floor(at).astype(np.int64), np.ceil(at).astype(np.int64)
            value = gaps[lo] + (gaps[hi] - gaps[lo]) * (at - lo)
            out.append(np.where(counts > 0, value, np.nan))
        return out


@dataclass(frozen=True)
class _ProductDays:
    """Distinct (customer, product, day) purchases, each knowing the pair's next purchase day."""

    codes: np.ndarray
    days: np.ndarray
    next_days: np.ndarray
    n_customers: int

    def distinct(self, lo: int, hi: int) -> np.ndarray:
        """Per customer, the number of distinct products bought with day in [lo, hi)."""
        # Counting only a pair's last purchase in the window counts each pair once.
        last = (self.days >= lo) & (self.days < hi) & (self.next_days >= hi)
        return np.bincount(self.codes[last], minlength=self.n_customers).astype(np.float64)


def _product_days(keys: np.ndarray, span: int, day0: int, product_codes: np.ndarray,
                  n_customers: int) -> _ProductDays:
    """Purchases as sorted event ``keys`` with their product codes (-1: no product)."""
    ok = product_codes >= 0
    width = int(product_codes.max(initial=0)) + 1
    pair = keys[ok] // span * width  # in-place steps below: this runs on millions of rows
    pair += product_codes[ok]
    owner = None
    if (n_customers * width * span).bit_length() > 62:
        pair, uniques = pd.factorize(pair)  # dense pair ids always fit beside the day
        owner = np.asarray(uniques) // width
    pair *= span
    pair += keys[ok] % span
    pair.sort()
    pair = pair[_segment_starts(pair)]  # one entry per (pair, day), pair-major
    pair_of, day_of = np.divmod(pair, span)
    del pair
    never = np.iinfo(np.int32).max  # day numbers stay far below it until the year 5.8 million
    next_days = np.where(pair_of[1:] == pair_of[:-1], day_of[1:] + day0, never)
    code_of = pair_of // width if owner is None else owner[pair_of]
    return _ProductDays(code_of.astype(_int_dtype(n_customers)), (day_of + day0).astype(np.int32),
                        np.append(next_days, never).astype(np.int32)[: len(day_of)], n_customers)


# --- prepared histories ------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderHistory:
    """Orders prepared for point-in-time queries.

    Attributes:
        days: every customer-day with an order row; sums ``gross`` (positive amounts) and
            ``returns`` (negated negative amounts).
        purchases: the customer-days with a purchase (a positive amount).
        products: distinct product purchases, or None when orders have no ``product``.
    """

    days: Timeline
    purchases: Timeline
    products: _ProductDays | None = None

    @cached_property
    def gaps(self) -> _Gaps:
        """Gaps between purchase days, prepared on first use (RFM alone never needs them)."""
        return _Gaps.of(self.purchases)


def _daily_sums(keys: np.ndarray, amounts: np.ndarray, day0: int, span: int,
                n_customers: int) -> tuple[Timeline, np.ndarray]:
    """Order rows sorted by ``keys`` summed per customer-day; and which days had a purchase."""
    starts = _segment_starts(keys)
    if len(keys):
        gross = np.add.reduceat(np.maximum(amounts, 0.0), starts)
        returns = np.add.reduceat(np.maximum(-amounts, 0.0), starts)
    else:
        gross = returns = amounts
    sums = {_GROSS: PrefixSums.of(gross, compensated=True),
            _RETURNS: PrefixSums.of(returns, compensated=True)}
    return Timeline.of(keys[starts], day0, span, n_customers, sums), gross > 0


def order_history(orders: pd.DataFrame, codes: np.ndarray, n_customers: int) -> OrderHistory:
    """Sort the orders once by (customer, day) and sum them per customer-day."""
    days, known = _day_ints(orders[ORDER_DATE])
    known &= codes >= 0
    order, keys, day0, span = _sort_events(codes[known], days[known])
    del days  # the keys carry them now; at ten million rows every copy counts
    amounts = orders[AMOUNT].to_numpy(dtype=np.float64)[known][order]
    daily, bought_days = _daily_sums(keys, amounts, day0, span, n_customers)
    bought = amounts > 0
    del amounts
    products = None
    if PRODUCT in orders.columns:
        rows = np.flatnonzero(known)[order[bought]]
        del order
        product_codes = pd.factorize(orders[PRODUCT])[0][rows]
        products = _product_days(keys[bought], span, day0, product_codes, n_customers)
    return OrderHistory(daily, daily.subset(bought_days), products)


@dataclass(frozen=True)
class InteractionHistory:
    """Interactions prepared for point-in-time queries.

    Attributes:
        events: all interactions; sums ``complaints``, ``tickets``, ``severity`` and
            ``severity_n`` (interactions with a severity).
        complaints: the complaints alone.
        severity: severity of each event in ``events`` order (NaN when not given).
    """

    events: Timeline
    complaints: Timeline
    severity: np.ndarray


def _is_kind(kinds: pd.Series, kind: str) -> np.ndarray:
    """Whether each interaction is of ``kind``, ignoring case and surrounding blanks."""
    # Normalizing the few distinct kinds is far cheaper than every row's string.
    codes, uniques = pd.factorize(kinds)
    normalized = pd.Index(uniques).astype(str).str.strip().str.lower()
    return np.append(np.asarray(normalized == kind), False)[codes]


def interaction_history(interactions: pd.DataFrame, codes: np.ndarray,
                        n_customers: int) -> InteractionHistory:
    """Sort the interactions once by (customer, day) and flag complaints and tickets."""
    days, known = _day_ints(interactions[OCCURRED_AT])
    known &= codes >= 0
    order, keys, day0, span = _sort_events(codes[known], days[known])
    complaint, ticket = (_is_kind(interactions[KIND], kind)[known][order]
                         for kind in (KIND_COMPLAINT, KIND_TICKET))
    severity = (interactions[SEVERITY].to_numpy(dtype=np.float64)[known][order]
                if SEVERITY in interactions.columns else np.full(len(keys), np.nan))
    sums = {
        _COMPLAINTS: PrefixSums.of(complaint.astype(np.float64)),
        _TICKETS: PrefixSums.of(ticket.astype(np.float64)),
        _SEVERITY: PrefixSums.of(np.nan_to_num(severity), compensated=True),
        _SEVERITY_N: PrefixSums.of((~np.isnan(severity)).astype(np.float64)),
    }
    events = Timeline.of(keys, day0, span, n_customers, sums)
    return InteractionHistory(events, events.subset(complaint), severity)


@dataclass(frozen=True)
class _Receivables:
    codes: np.ndarray
    issued: np.ndarray
    due: np.ndarray
    paid: np.ndarray  # NaN while unpaid
    amount: np.ndarray


def _receivables(frame: pd.DataFrame, codes: np.ndarray) -> _Receivables:
    known = codes >= 0
    paid = (_day_numbers(frame[PAID_AT]) if PAID_AT in frame.columns
            else np.full(len(frame), np.nan))
    return _Receivables(codes[known], _day_numbers(frame[ISSUED_AT])[known],
                        _day_numbers(frame[DUE_DATE])[known], paid[known],
                        frame[AMOUNT].to_numpy(dtype=np.float64)[known])


@dataclass(frozen=True)
class _Opportunities:
    codes: np.ndarray
    created: np.ndarray
    close: np.ndarray
    won: np.ndarray
    lost: np.ndarray
    amount: np.ndarray


def _opportunities(frame: pd.DataFrame, codes: np.ndarray) -> _Opportunities:
    known = codes >= 0
    status = frame[STATUS].to_numpy()[known]
    amount = frame[AMOUNT].to_numpy(dtype=np.float64)[known]
    return _Opportunities(codes[known], _day_numbers(frame[CREATED_AT])[known],
                          _day_numbers(frame[CLOSE_DATE])[known], status == STATUS_WON,
                          status == STATUS_LOST, amount)


@dataclass(frozen=True)
class CustomerHistory:
    """Everything known about every customer, prepared once for many as_of snapshots.

    Attributes:
        ids: sorted customer ids; a customer's code is its position here.
        created: ``customers.created_at`` as a day number per customer (NaN when unknown).
        orders: the prepared orders.
        interactions, receivables, opportunities: None when the table (or, for
            opportunities, its ``customer_id`` column) is absent.
        attributes: customers column -> value per customer, for the ``cat_`` features.
    """

    ids: np.ndarray
    created: np.ndarray
    orders: OrderHistory
    interactions: InteractionHistory | None = None
    receivables: _Receivables | None = None
    opportunities: _Opportunities | None = None
    attributes: dict[str, np.ndarray] = field(default_factory=dict)


def _customer_columns(tables: Tables) -> dict[str, pd.Series]:
    """Every ``customer_id`` column, by table, that names customers."""
    names = (CUSTOMERS, ORDERS, INTERACTIONS, RECEIVABLES, OPPORTUNITIES)
    return {
        name: frame[CUSTOMER_ID]
        for name in names
        if (frame := tables.get(name)) is not None and CUSTOMER_ID in frame.columns
    }


def _attributes(customers: pd.DataFrame | None, codes: np.ndarray, n: int
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``created_at`` days and the categorical columns of ``customers``, aligned to codes."""
    created = np.full(n, np.nan)
    attributes = {column: np.full(n, None, dtype=object) for column in _CATEGORIES}
    if customers is None:
        return created, attributes
    if CREATED_AT in customers.columns:
        created[codes] = _day_numbers(customers[CREATED_AT])
    for column, values in attributes.items():
        if column in customers.columns:
            values[codes] = customers[column].to_numpy(dtype=object)
    return created, attributes


def customer_history(tables: Tables) -> CustomerHistory:
    """Prepare every table once: integer customer codes, sorted timelines, plain arrays."""
    columns = _customer_columns(tables)
    ids, code_list = customer_index(list(columns.values()))
    codes = dict(zip(columns, code_list, strict=True))
    n = len(ids)
    created, attributes = _attributes(tables.get(CUSTOMERS), codes.get(CUSTOMERS,
                                      np.zeros(0, np.int64)), n)
    interactions = tables.get(INTERACTIONS)
    receivables = tables.get(RECEIVABLES)
    opportunities = tables.get(OPPORTUNITIES)
    return CustomerHistory(
        ids=ids,
        created=created,
        orders=order_history(tables.orders, codes[ORDERS], n),
        interactions=(interaction_history(interactions, codes[INTERACTIONS], n)
                      if interactions is not None else None),
        receivables=(_receivables(receivables, codes[RECEIVABLES])
                     if receivables is not None else None),
        opportunities=(_opportunities(opportunities, codes[OPPORTUNITIES])
                       if OPPORTUNITIES in codes and opportunities is not None else None),
        attributes=attributes,
    )


# --- feature families: each returns feature name -> value per customer code -----------------


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is zero."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def rfm_features(orders: OrderHistory, day: int, windows: Sequence[int] = WINDOWS) -> Arrays:
    """Recency, and frequency (purchase days) and monetary (net amount) per window."""
    out = {"hist_recency_days": day - orders.purchases.last_before(day)}
    for w in windows:
        out[f"hist_frequency_{w}d"] = orders.purchases.count(day - w, day)
        out[f"hist_monetary_{w}d"] = _net(orders.days, day - w, day)
    return out


def _net(days: Timeline, lo: int, hi: int) -> np.ndarray:
    return days.total(_GROSS, lo, hi) - days.total(_RETURNS, lo, hi)


def lifetime_features(orders: OrderHistory, day: int) -> Arrays:
    """Lifetime frequency, net value, average order value and days since the first purchase."""
    begin = orders.days.day0
    frequency = orders.purchases.count(begin, day)
    return {
        "hist_frequency_lifetime": frequency,
        "hist_monetary_lifetime": _net(orders.days, begin, day),
        "hist_avg_order_value": _ratio(orders.days.total(_GROSS, begin, day), frequency),
        "hist_days_since_first_order": day - orders.purchases.first_before(day),
    }


def cycle_features(orders: OrderHistory, day: int, recency: np.ndarray) -> Arrays:
    """The customer's own repurchase cycle and how overdue the next purchase is against it."""
    q25, median, q75 = orders.gaps.quantiles(day, (0.25, 0.5, 0.75))
    return {
        "hist_cycle_median_days": median,
        "hist_cycle_iqr_days": q75 - q25,
        "hist_overdue_ratio": recency / median,  # median >= 1: gaps join distinct days
        "hist_overdue_days": recency - median,
    }


def trend_features(orders: OrderHistory, day: int) -> Arrays:
    """Purchase spend in the last 90 days against the 90 days before."""
    last = orders.days.total(_GROSS, day - TREND_DAYS, day)
    prior = orders.days.total(_GROSS, day - 2 * TREND_DAYS, day - TREND_DAYS)
    both = last + prior  # gross spend is never negative
    return {
        # Bounded in [-1, 1] and defined everywhere: 0 when nothing was bought in either.
        f"hist_spend_trend_{TREND_DAYS}d": np.where(both > 0, _ratio(last - prior, both), 0.0),
        f"hist_spend_change_{TREND_DAYS}d": _ratio(last - prior, prior),
    }


def breadth_features(orders: OrderHistory, day: int) -> Arrays:
    """Distinct products bought and the share of gross spend returned, over 365 days."""
    lo = day - BREADTH_DAYS
    n = orders.days.n_customers
    products = orders.products.distinct(lo, day) if orders.products else np.full(n, np.nan)
    returned = _ratio(orders.days.total(_RETURNS, lo, day), orders.days.total(_GROSS, lo, day))
    return {
        f"hist_products_{BREADTH_DAYS}d": products,
        f"hist_returns_share_{BREADTH_DAYS}d": returned,
    }


def order_features(orders: OrderHistory, day: int, windows: Sequence[int] = WINDOWS) -> Arrays:
    """Every ``hist_`` feature derived from orders alone."""
    out = rfm_features(orders, day, windows)
    out |= lifetime_features(orders, day)
    out |= cycle_features(orders, day, out["hist_recency_days"])
    out |= trend_features(orders, day)
    return out | breadth_features(orders, day)


def tenure_days(history: CustomerHistory, day: int) -> np.ndarray:
    """Days since the customer was first seen: created, first order or first interaction."""
    seen = [history.created, history.orders.days.first_before(day)]
    if history.interactions is not None:
        seen.append(history.interactions.events.first_before(day))
    stacked = np.vstack(seen)
    stacked[stacked >= day] = np.nan  # a creation date on or after as_of is not known yet
    first = np.fmin.reduce(stacked, axis=0)
    return day - first


def interaction_features(interactions: InteractionHistory | None, day: int, n: int,
                         windows: Sequence[int] = WINDOWS) -> Arrays:
    """Interactions, complaints and tickets per window; last complaint; recent severity."""
    names = _interaction_names(windows)
    if interactions is None:
        return dict.fromkeys(names, np.full(n, np.nan))
    events = interactions.events
    out: Arrays = {}
    for w in windows:
        out[f"cx_interactions_{w}d"] = events.count(day - w, day)
        out[f"cx_complaints_{w}d"] = events.total(_COMPLAINTS, day - w, day)
        out[f"cx_tickets_{w}d"] = events.total(_TICKETS, day - w, day)
    out["cx_days_since_last_interaction"] = day - events.last_before(day)
    out["cx_days_since_last_complaint"] = day - interactions.complaints.last_before(day)
    lo = day - SEVERITY_DAYS
    severity, rated = events.total(_SEVERITY, lo, day), events.total(_SEVERITY_N, lo, day)
    out[f"cx_severity_mean_{SEVERITY_DAYS}d"] = _ratio(severity, rated)
    out[f"cx_severity_max_{SEVERITY_DAYS}d"] = _segment_max(
        interactions.severity, events.positions(lo), events.positions(day))
    return out


def _interaction_names(windows: Sequence[int]) -> list[str]:
    per_window = [f"cx_{what}_{w}d" for w in windows
                  for what in ("interactions", "complaints", "tickets")]
    return [*per_window, "cx_days_since_last_interaction", "cx_days_since_last_complaint",
            f"cx_severity_mean_{SEVERITY_DAYS}d", f"cx_severity_max_{SEVERITY_DAYS}d"]


def _group_sum(codes: np.ndarray, values: np.ndarray | None, mask: np.ndarray, n: int
               ) -> np.ndarray:
    """Per customer, the sum of ``values`` (or the count) over rows where ``mask`` holds."""
    weights = None if values is None else values[mask]
    return np.bincount(codes[mask], weights=weights, minlength=n).astype(np.float64)


def _group_max(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per customer, the max of ``values`` (NaN for customers without rows)."""
    out = np.full(n, np.nan)
    np.fmax.at(out, codes, values)
    return out


_RECEIVABLE_NAMES = ("ar_unpaid_amount", "ar_overdue_amount", "ar_overdue_invoices",
                     "ar_max_days_late", "ar_paid_late_share")


def receivable_features(receivables: _Receivables | None, day: int, n: int) -> Arrays:
    """Receivables as of the day: unpaid, overdue, how late, and the history of late payment."""
    if receivables is None:
        return dict.fromkeys(_RECEIVABLE_NAMES, np.full(n, np.nan))
    r = receivables
    issued = r.issued < day  # a row created on or after as_of is not known yet, whatever it says
    paid = issued & (r.paid < day)  # NaN (unpaid) compares False
    unpaid = issued & ~paid
    overdue = unpaid & (r.due < day)
    late = _group_max(r.codes[overdue], day - r.due[overdue], n)
    paid_late = paid & (r.paid > r.due)
    return {
        "ar_unpaid_amount": _group_sum(r.codes, r.amount, unpaid, n),
        "ar_overdue_amount": _group_sum(r.codes, r.amount, overdue, n),
        "ar_overdue_invoices": _group_sum(r.codes, None, overdue, n),
        "ar_max_days_late": np.nan_to_num(late, nan=0.0),
        "ar_paid_late_share": _ratio(_group_sum(r.codes, None, paid_late, n),
                                     _group_sum(r.codes, None, paid, n)),
    }


_PIPELINE_NAMES = ("pipe_open_value", "pipe_open_deals", f"pipe_won_{PIPELINE_DAYS}d",
                   f"pipe_lost_{PIPELINE_DAYS}d")


def pipeline_features(opportunities: _Opportunities | None, day: int, n: int) -> Arrays:
    """Deals open at the day (created before, not closed before) and recent wins and losses."""
    if opportunities is None:
        return dict.fromkeys(_PIPELINE_NAMES, np.full(n, np.nan))
    o = opportunities
    created = o.created < day  # a deal created on or after as_of is not known yet
    closed_before = (o.won | o.lost) & (o.close < day)
    is_open = created & ~closed_before
    recent = created & (o.close >= day - PIPELINE_DAYS) & (o.close < day)
    return {
        "pipe_open_value": _group_sum(o.codes, o.amount, is_open, n),
        "pipe_open_deals": _group_sum(o.codes, None, is_open, n),
        f"pipe_won_{PIPELINE_DAYS}d": _group_sum(o.codes, None, o.won & recent, n),
        f"pipe_lost_{PIPELINE_DAYS}d": _group_sum(o.codes, None, o.lost & recent, n),
    }


def known_customers(history: CustomerHistory, day: int) -> np.ndarray:
    """Codes of customers known before the day: created, ordered, interacted or in a deal
    created before it (a young CRM may hold deals and no order yet)."""
    known = (history.created < day) | history.orders.days.any_before(day)
    if history.interactions is not None:
        known |= history.interactions.events.any_before(day)
    deals = history.opportunities
    if deals is not None:
        known[deals.codes[deals.created < day]] = True
    return np.flatnonzero(known)


def category_features(history: CustomerHistory, rows: np.ndarray) -> dict[str, pd.Categorical]:
    """Segment, region and account manager of the given customers, as categoricals.

    The categories are the values among these customers, so a value first seen after as_of
    does not leak into the dtype; ``features.table`` unions them across snapshots.
    """
    return {
        name: pd.Categorical(history.attributes[column][rows])
        for column, name in _CATEGORIES.items()
    }


def features_at(history: CustomerHistory, as_of: pd.Timestamp | str,
                windows: Sequence[int] = WINDOWS, rows: np.ndarray | None = None
                ) -> pd.DataFrame:
    """The feature table at one as_of from a prepared history (see :func:`customer_features`).

    Args:
        rows: ascending customer codes (positions in ``history.ids``) to return; default the
            customers known before as_of.
    """
    stamp, day = as_of_day(as_of)
    n = len(history.ids)
    numeric = order_features(history.orders, day, windows)
    numeric["hist_tenure_days"] = tenure_days(history, day)
    numeric |= interaction_features(history.interactions, day, n, windows)
    numeric |= receivable_features(history.receivables, day, n)
    numeric |= pipeline_features(history.opportunities, day, n)
    rows = known_customers(history, day) if rows is None else rows
    columns: dict[str, object] = {
        CUSTOMER_ID: history.ids[rows],
        AS_OF: np.full(len(rows), stamp.to_datetime64(), dtype="datetime64[ns]"),
    }
    columns |= {name: values[rows].astype(np.float64) for name, values in numeric.items()}
    columns |= category_features(history, rows)
    return pd.DataFrame(columns)


def customer_features(tables: Tables, as_of: pd.Timestamp,
                      windows: tuple[int, ...] = WINDOWS) -> pd.DataFrame:
    """Point-in-time feature table: one row per customer known before ``as_of``.

    A customer is known when created before ``as_of`` or with an order or interaction before
    it. Every feature uses only rows dated strictly before ``as_of`` (taken at midnight).

    Returns:
        ``customer_id``, ``as_of``, then float64 features prefixed ``hist_``, ``cx_``, ``ar_``,
        ``pipe_`` and categorical ``cat_`` columns; rows sorted by ``customer_id``. Features of
        an absent optional table are NaN.
    """
    return features_at(customer_history(tables), as_of, windows)


# --- descriptions, for churn reasons -----------------------------------------------------------

_DAYS, _COUNT, _MONEY, _SHARE = "{:.0f} days", "{:.0f}", "{:,.0f}", "{:.0%}"
_SEVERITY_SCALE = "1 low to 4 critical"


def _windowed_descriptions(windows: Sequence[int]) -> dict[str, str]:
    """Descriptions of the features computed per window."""
    out: dict[str, str] = {}
    for w in windows:
        out[f"hist_frequency_{w}d"] = f"Days with a purchase in the last {w} days [{_COUNT}]"
        out[f"hist_monetary_{w}d"] = f"Net spend (after returns) in the last {w} days [{_MONEY}]"
        out[f"cx_interactions_{w}d"] = f"Interactions in the last {w} days [{_COUNT}]"
        out[f"cx_complaints_{w}d"] = f"Complaints in the last {w} days [{_COUNT}]"
        out[f"cx_tickets_{w}d"] = f"Support tickets in the last {w} days [{_COUNT}]"
    return out


def feature_descriptions(windows: Sequence[int] = WINDOWS) -> dict[str, str]:
    """Feature name -> plain-English description ending in a ``[format]`` hint."""
    trend, breadth, severity = TREND_DAYS, BREADTH_DAYS, SEVERITY_DAYS
    fixed = {
        "hist_recency_days": f"Days since the last purchase [{_DAYS}]",
        "hist_frequency_lifetime": f"Days with a purchase, ever [{_COUNT}]",
        "hist_monetary_lifetime": f"Net spend, ever [{_MONEY}]",
        "hist_avg_order_value": f"Average spend per purchase day [{_MONEY}]",
        "hist_days_since_first_order": f"Days since the first purchase [{_DAYS}]",
        "hist_cycle_median_days": f"Usual days between purchases (median gap) [{_DAYS}]",
        "hist_cycle_iqr_days": f"Spread of the days between purchases (IQR) [{_DAYS}]",
        "hist_overdue_ratio": "Days since the last purchase over the usual gap [{:.1f}x]",
        "hist_overdue_days": f"Days past the usual gap (negative: not yet due) [{_DAYS}]",
        f"hist_spend_trend_{trend}d":
            f"Spend trend, last {trend} days vs the {trend} before (-1 stop, +1 new) [{{:+.2f}}]",
        f"hist_spend_change_{trend}d":
            f"Change in spend, last {trend} days vs the {trend} before [{{:+.0%}}]",
        f"hist_products_{breadth}d":
            f"Distinct products bought in the last {breadth} days [{_COUNT}]",
        f"hist_returns_share_{breadth}d":
            f"Share of spend returned in the last {breadth} days [{_SHARE}]",
        "hist_tenure_days": f"Days since the customer was first seen [{_DAYS}]",
        "cx_days_since_last_interaction": f"Days since the last interaction [{_DAYS}]",
        "cx_days_since_last_complaint": f"Days since the last complaint [{_DAYS}]",
        f"cx_severity_mean_{severity}d":
            f"Mean severity in the last {severity} days, {_SEVERITY_SCALE} [{{:.1f}}]",
        f"cx_severity_max_{severity}d":
            f"Worst severity in the last {severity} days, {_SEVERITY_SCALE} [{{:.0f}}]",
        "ar_unpaid_amount": f"Invoiced and not yet paid [{_MONEY}]",
        "ar_overdue_amount": f"Unpaid past the due date [{_MONEY}]",
        "ar_overdue_invoices": f"Invoices unpaid past the due date [{_COUNT}]",
        "ar_max_days_late": f"Days the most overdue unpaid invoice is late [{_DAYS}]",
        "ar_paid_late_share": f"Share of paid invoices that were paid late [{_SHARE}]",
        "pipe_open_value": f"Value of open deals [{_MONEY}]",
        "pipe_open_deals": f"Open deals [{_COUNT}]",
        f"pipe_won_{PIPELINE_DAYS}d": f"Deals won in the last {PIPELINE_DAYS} days [{_COUNT}]",
        f"pipe_lost_{PIPELINE_DAYS}d": f"Deals lost in the last {PIPELINE_DAYS} days [{_COUNT}]",
        "cat_segment": "Segment [{}]",
        "cat_region": "Region [{}]",
        "cat_account_manager": "Account manager [{}]",
    }
    return _windowed_descriptions(windows) | fixed


FEATURE_DESCRIPTIONS: dict[str, str] = feature_descriptions()


def format_feature(name: str, value: object,
                   descriptions: dict[str, str] | None = None) -> str:
    """``Description: value`` with the value in its format, e.g. ``Days since ...: 47 days``."""
    text = (descriptions or FEATURE_DESCRIPTIONS)[name]
    label, _, hint = text.rpartition(" [")
    shown: Callable[[object], str] = hint.rstrip("]").format
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return f"{label}: unknown"
    return f"{label}: {shown(value)}"
