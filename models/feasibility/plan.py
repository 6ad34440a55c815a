"""Top-down planning: a period's target split over sub-periods and nodes, coherent to the cent.

A plan starts from one company amount for a period and gives every node of the hierarchy
(company > region > team > rep, and any extra level such as ``product`` hanging under the
company) and every sub-period (a year's quarters and months, a quarter's months) its share:

- **nodes** (:func:`split_nodes`): ``even_probability`` gives every child of a parent the
  amount it reaches with one common probability on the simulated draws of the period (the
  search :func:`models.feasibility.recalibration.recalibrate` does mid-period, here run as of
  the period's start), or ``proportional`` shares each parent's amount in proportion to its
  children's expected revenue;
- **time** (:func:`season_shares`): the company's amount is split over months by last years'
  monthly shares of revenue, shrunk towards an even split per day by the evidence (``k / (k +
  1)`` for ``k`` full years, as :func:`models.forecast.season.observed_season_indices` does);
  without a full year of history the split is even per day;
- **cents** (:func:`split_cents`, :func:`round_table`): amounts are integer cents; each
  parent's cents are shared among its children by largest remainder and each node's months by
  a controlled rounding that keeps both its own total and its parent's months, so every parent
  equals the sum of its children, and every year the sum of its quarters and months, exactly.

Nodes keyed ``unassigned`` (revenue no rep, team or region owns) take no part: their named
siblings share the parent's whole amount.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from engine.periods import period_bounds
from engine.schemas import AMOUNT, COMPANY_KEY, KEY, LEVEL, LEVEL_COMPANY, PERIOD
from models.feasibility.recalibration import recalibrate
from models.feasibility.simulation import LEVEL_ORDER, TARGET, Simulation

__all__ = [
    "PLAN_METHODS",
    "PlanMethod",
    "eligible_nodes",
    "months_of",
    "node_cents",
    "plan_rows",
    "quarter_of",
    "round_table",
    "season_shares",
    "split_cents",
    "split_nodes",
    "sub_periods",
    "time_cents",
]

PlanMethod = Literal["even_probability", "proportional"]
PLAN_METHODS: tuple[str, ...] = ("even_probability", "proportional")
UNASSIGNED_KEY = "unassigned"  # features.hierarchy.UNASSIGNED (models sit above features)


# === periods ==================================================================================


def months_of(period: str) -> list[str]:
    """The months (``2027-01`` ...) a period spans: 12, 3 or 1."""
    start, end = period_bounds(period)
    return [f"{d.year}-{d.month:02d}" for d in pd.date_range(start, end, freq="MS",
                                                               inclusive="left")]


def quarter_of(month: str) -> str:
    """``2027-05`` -> ``2027Q2``."""
    return f"{month[:4]}Q{(int(month[5:7]) - 1) // 3 + 1}"


def sub_periods(period: str) -> list[str]:
    """A year's quarters then months, a quarter's months, nothing for a month."""
    months = months_of(period)
    if len(months) == 1:
        return []
    quarters = list(dict.fromkeys(quarter_of(m) for m in months)) if len(months) == 12 else []
    return [*quarters, *months]


# === seasonality ==============================================================================


def season_shares(monthly: pd.Series, months: Sequence[str], max_years: int = 3
                  ) -> tuple[np.ndarray, str]:
    """Each month's share of the period, from the company's past monthly revenue.

    For each of the last ``k`` (at most ``max_years``) full 12-month years of history, the
    share of each calendar month in that year's revenue (months with negative revenue count
    as 0); their mean is shrunk towards an even split per day by ``k / (k + 1)``: half-way
    with one year, three quarters with three. Less than a full year of history: even per day.

    Args:
        monthly: complete months only, indexed by the month's first day.
        months: the period's months (``2027-01`` ...).
        max_years: most years averaged.

    Returns:
        Shares summing to 1 and a note saying how they were obtained.
    """
    starts = [pd.Timestamp(f"{m}-01") for m in months]
    days = np.array([(s + pd.DateOffset(months=1) - s).days for s in starts], dtype=float)
    even = days / days.sum()
    if len(months) == 1:
        return np.ones(1), "a month has no sub-periods"
    series = monthly.sort_index().astype(float)
    k = min(len(series) // 12, max_years)
    if k == 0:
        return even, (f"seasonality: {len(series)} complete month(s) of history, less than a "
                      "year, so the months are split evenly per day")
    by_month = np.zeros((k, 12))
    last = series.iloc[len(series) - 12 * k:]
    for i in range(k):
        year = last.iloc[12 * i: 12 * (i + 1)].clip(lower=0.0)
        total = float(year.sum())
        if total <= 0:
            by_month[i] = 1.0 / 12
            continue
        calendar_month = pd.DatetimeIndex(year.index).month.to_numpy() - 1
        by_month[i, calendar_month] = year.to_numpy() / total
    observed = by_month.mean(axis=0)
    calendar = np.array([s.month - 1 for s in starts])
    days_year = np.array([31, 28.25, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    weight = k / (k + 1.0)
    shares = weight * observed + (1 - weight) * days_year / days_year.sum()
    chosen = shares[calendar]
    chosen = chosen / chosen.sum() if chosen.sum() > 0 else even
    return chosen, (f"seasonality: each month's share of revenue over the last {k} full "
                    f"year(s), shrunk {1 - weight:.0%} towards an even split per day "
                    f"(k/(k+1) for k={k} year(s) of evidence)")


# === cents ====================================================================================


def split_cents(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` cents shared by ``weights`` (negatives count as 0; all 0: evenly), largest
    remainder first, ties to the earlier position: the parts are integers summing to total."""
    w = np.clip(np.asarray(weights, dtype=float), 0.0, None)
    n = len(w)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.isfinite(w).all() or w.sum() <= 0:
        w = np.ones(n)
    ideal = total * (w / w.sum())
    base = np.floor(ideal).astype(np.int64)
    left = int(total - base.sum())
    order = np.lexsort((np.arange(n), -(ideal - base)))  # largest remainder, then position
    base[order[:left]] += 1
    return base


def round_table(ideal: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Integers near ``ideal`` (rows x cols, non-negative) whose row sums are ``rows`` and
    column sums ``cols`` exactly (controlled rounding).

    Every cell is its floor or its floor plus one: the extra units of each row go to the
    columns that still miss the most (ties: the larger fractional part, then position), row
    by row, rows missing most first (Ryser's construction, which always succeeds when, as
    here, a table with these margins and cells in ``[floor, floor + 1]`` exists).
    """
    ideal = np.clip(np.asarray(ideal, dtype=float), 0.0, None)
    base = np.floor(ideal).astype(np.int64)
    frac = ideal - base
    row_need = np.asarray(rows, dtype=np.int64) - base.sum(axis=1)
    col_need = np.asarray(cols, dtype=np.int64) - base.sum(axis=0)
    if row_need.sum() != col_need.sum() or (row_need < 0).any() or (col_need < 0).any():
        raise ValueError("round_table: margins do not match the table")
    n_cols = base.shape[1]
    for r in np.lexsort((np.arange(len(row_need)), -row_need)):
        need = int(row_need[r])
        if need == 0:
            continue
        order = np.lexsort((np.arange(n_cols), -frac[r], -col_need))[:need]
        if need > n_cols or (col_need[order] <= 0).any():
            raise ValueError("round_table: no table with these margins")
        base[r, order] += 1
        col_need[order] -= 1
    return base


# === nodes ====================================================================================


def eligible_nodes(nodes: pd.DataFrame) -> np.ndarray:
    """Nodes that take a target: the company and every named node under a named parent."""
    named = (nodes[KEY].astype(str) != UNASSIGNED_KEY).to_numpy()
    parent = nodes["parent"].to_numpy()
    ok = named.copy()
    for level in sorted(nodes[LEVEL].unique(), key=lambda lv: LEVEL_ORDER.get(lv, 99)):
        rows = np.flatnonzero((nodes[LEVEL] == level).to_numpy())
        above = parent[rows]
        ok[rows] &= np.where(above >= 0, ok[np.maximum(above, 0)], True)
    return ok


def _groups(nodes: pd.DataFrame, ok: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(parent row, eligible child rows) per parent and child level, parents top-down."""
    frame = nodes.assign(_row=np.arange(len(nodes)))[(nodes["parent"] >= 0).to_numpy() & ok]
    depth = nodes[LEVEL].map(LEVEL_ORDER).fillna(len(LEVEL_ORDER)).to_numpy()
    out = [(int(rows["parent"].iloc[0]), rows["_row"].to_numpy())
           for _, rows in frame.groupby(["parent", LEVEL], sort=False)]
    return sorted(out, key=lambda g: (depth[g[1][0]], g[0]))


def split_nodes(simulation: Simulation, total: float, method: PlanMethod = "even_probability",
                period: str = "") -> np.ndarray:
    """Each node's share of the company's ``total`` (floats; NaN for nodes without a target).

    ``proportional``: every parent's amount goes to its named children in proportion to their
    expected revenue (the mean of their draws; negatives count as 0). ``even_probability``:
    those proportional amounts are the starting point of
    :func:`models.feasibility.recalibration.recalibrate`, which re-shares each parent's amount
    so that its children reach theirs with one common probability on the draws.
    """
    if method not in PLAN_METHODS:
        raise ValueError(f"unknown method {method!r}: {' or '.join(PLAN_METHODS)}")
    nodes = simulation.nodes
    ok = eligible_nodes(nodes)
    expected = simulation.mean()
    amount = np.full(len(nodes), np.nan)
    root = np.flatnonzero(((nodes[LEVEL] == LEVEL_COMPANY)
                           & (nodes[KEY] == COMPANY_KEY)).to_numpy())
    if root.size == 0:
        raise ValueError("the simulation has no company node")
    amount[root[0]] = total
    for parent, rows in _groups(nodes, ok):
        w = np.clip(expected[rows], 0.0, None)
        w = w / w.sum() if w.sum() > 0 else np.full(len(rows), 1.0 / len(rows))
        amount[rows] = amount[parent] * w
    if method == "proportional":
        return amount
    frame = pd.DataFrame({PERIOD: period, LEVEL: nodes[LEVEL], KEY: nodes[KEY],
                          TARGET: amount})
    revised = recalibrate(frame, simulation, method="even_probability")
    return np.where(ok, revised["recalibrated_target"].to_numpy(dtype=float), np.nan)


def node_cents(nodes: pd.DataFrame, amounts: np.ndarray, total_cents: int) -> np.ndarray:
    """Integer cents per node (-1 for nodes without a target): the company's ``total_cents``,
    and top-down each parent's cents shared among its named children by their ``amounts``
    (largest remainder), so every parent is the sum of its children to the cent."""
    ok = eligible_nodes(nodes) & np.isfinite(amounts)
    cents = np.full(len(nodes), -1, dtype=np.int64)
    root = np.flatnonzero(((nodes[LEVEL] == LEVEL_COMPANY)
                           & (nodes[KEY] == COMPANY_KEY)).to_numpy())[0]
    cents[root] = total_cents
    for parent, rows in _groups(nodes, ok):
        cents[rows] = split_cents(int(cents[parent]), amounts[rows])
    return cents


def time_cents(nodes: pd.DataFrame, year_cents: np.ndarray, company_months: np.ndarray
               ) -> np.ndarray:
    """``nodes x months`` cents: the company's months given, and top-down each parent's
    (node x month) table shared among its children by their own totals
    (:func:`round_table`), so each node's months add up to its total and the children's
    months to their parent's months. Rows of nodes without a target are -1."""
    ok = year_cents >= 0
    out = np.full((len(nodes), len(company_months)), -1, dtype=np.int64)
    root = np.flatnonzero(((nodes[LEVEL] == LEVEL_COMPANY)
                           & (nodes[KEY] == COMPANY_KEY)).to_numpy())[0]
    out[root] = company_months
    for parent, rows in _groups(nodes, ok):
        months = out[parent]
        total = int(year_cents[parent])
        share = (months / total) if total > 0 else np.zeros(len(months))
        ideal = year_cents[rows, None] * share[None, :]
        out[rows] = round_table(ideal, year_cents[rows], months)
    return out


def plan_rows(nodes: pd.DataFrame, period: str, year_cents: np.ndarray,
              month_cents: np.ndarray, months: Sequence[str]) -> pd.DataFrame:
    """``period, level, key, amount`` (in currency units, from cents) for the period, its
    quarters (the sums of their months) and months, for every node with a target."""
    ok = year_cents >= 0
    keyed = nodes.loc[ok, [LEVEL, KEY]].reset_index(drop=True)

    def block(label: str, cents: np.ndarray) -> pd.DataFrame:
        out = keyed.copy()
        out.insert(0, PERIOD, label)
        out[AMOUNT] = np.asarray(cents, dtype=np.int64) / 100.0
        return out

    blocks = [block(period, year_cents[ok])]
    subs = sub_periods(period)
    if subs:
        monthly = month_cents[ok]
        for quarter in (q for q in subs if "Q" in q):
            cols = [i for i, m in enumerate(months) if quarter_of(m) == quarter]
            blocks.append(block(quarter, monthly[:, cols].sum(axis=1)))
        for i, month in enumerate(months):
            blocks.append(block(month, monthly[:, i]))
    return pd.concat(blocks, ignore_index=True)[[PERIOD, LEVEL, KEY, AMOUNT]]
