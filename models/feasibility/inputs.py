"""The inputs of the simulation, read from the tables as of a date, by cell.

:func:`build_inputs` gathers, for the rest of a period seen from ``as_of``:

1. **closed to date**: revenue dated in the period before ``as_of`` (known, no uncertainty);
2. **open pipeline**: each deal open at ``as_of`` with its probability of being won *inside the
   period* from the win / slip model (:mod:`models.win`); a deal expected to close after the
   period end gets 0 (it is the next period's pipeline);
3. **revenue not yet in the pipeline**: the run rate per rep and its error model
   (:mod:`models.feasibility.run_rate`), shared out over each rep's cells by last year's mix;
4. **churn**, where revenue recurs: the run rate is estimated from history that already
   contains the usual churn, so churn scores enter only as a *deviation* from it — each
   customer's expected loss over the rest of the period minus the revenue-weighted average
   expected loss (which the trailing rate already holds). This moves run rate between reps
   and leaves the company total unchanged; nothing is counted twice (:func:`churn_adjustment`).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.periods import period_bounds
from engine.schemas import (
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    DS,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_REP,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    PERIOD,
    REGION,
    REP,
    STATUS,
    STATUS_WON,
    TEAM,
)
from features.deals import deal_inputs, period_features
from features.hierarchy import (
    UNASSIGNED,
    customer_column,
    customer_nodes,
    opportunity_nodes,
    rep_hierarchy,
    revenue_events,
    unlinked_year_revenue,
)
from features.revenue_nodes import CubeTables, cube_events
from models.churn import CHURN_PROBABILITY
from models.feasibility.backtest import PastPoint, RestScale, earlier_points, rest_scale
from models.feasibility.run_rate import RestOfPeriod, day_number, estimate_run_rate
from models.feasibility.simulation import CellInputs, widening_sigma
from models.win import WIN_PROBABILITY

__all__ = ["CHURN_HORIZON_DAYS", "build_inputs", "churn_adjustment", "revenue_by_node"]

# The horizon churn_probability refers to unless told otherwise (train_churn's default).
CHURN_HORIZON_DAYS = 180


# === churn ====================================================================================


def churn_adjustment(scores: pd.DataFrame, customer_revenue: pd.Series, window_days: int,
                     horizon_days: int = CHURN_HORIZON_DAYS) -> pd.Series:
    """Per customer: the change in expected run-rate revenue that churn scores call for.

    The trailing run rate already contains the usual churn, so only the deviation from it is
    applied: ``-(loss - average loss)`` where ``loss = p_window * revenue_in_window / 2``
    (a customer who leaves somewhere in the window loses on average half of it), ``p_window``
    turns ``churn_probability`` over ``horizon_days`` into the window's length, and the average
    is weighted by revenue. The adjustments sum to zero over all customers.

    Args:
        scores: ``customer_id`` and ``churn_probability``.
        customer_revenue: expected run-rate revenue of each customer in the window, by id.
        window_days: days of the period still to come.
        horizon_days: the horizon ``churn_probability`` refers to.
    """
    p = scores.set_index(CUSTOMER_ID)[CHURN_PROBABILITY].astype(float).clip(0.0, 1.0)
    revenue = customer_revenue[customer_revenue > 0]
    p = p.reindex(revenue.index)
    p = p.fillna(float(p.mean()) if p.notna().any() else 0.0)
    p_window = 1.0 - (1.0 - p) ** (window_days / horizon_days)
    loss = p_window * revenue / 2.0
    if revenue.sum() <= 0:
        return pd.Series(0.0, index=revenue.index)
    average = loss.sum() / revenue.sum()
    return -(loss - average * revenue)



# === building the inputs from tables ============================================================


def _revenue(tables: Tables, as_of: pd.Timestamp, since: pd.Timestamp | None = None,
             columns: Sequence[str] = (), with_created: bool = False) -> pd.DataFrame:
    """:func:`features.hierarchy.revenue_events`, or, for tables whose revenue was summed on a
    compute engine (:class:`features.revenue_nodes.CubeTables`), the same events from those
    sums (:func:`features.revenue_nodes.cube_events`)."""
    if isinstance(tables, CubeTables) and tables.revenue is not None:
        if tables.as_of is not None and pd.Timestamp(as_of) > tables.as_of:
            raise ValueError(f"revenue was summed as of {tables.as_of.date()}, not "
                             f"{pd.Timestamp(as_of).date()}")
        return cube_events(tables.revenue, as_of=as_of, since=since, columns=columns,
                           with_created=with_created)
    return revenue_events(tables, as_of=as_of, since=since, columns=columns,
                          with_created=with_created)



def _extra_levels(targets: pd.DataFrame | None, period: str,
                  levels: Sequence[str] | None) -> list[str]:
    wanted = list(levels or [])
    if targets is not None:
        chosen = targets[targets[PERIOD].astype(str) == str(period)]
        wanted += [lv for lv in chosen[LEVEL].unique() if lv not in HIERARCHY_LEVELS]
    return sorted({lv for lv in wanted if lv not in HIERARCHY_LEVELS})


def _node_columns(extra: Sequence[str]) -> list[str]:
    return [REP, TEAM, REGION, *extra]


def _filled(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for column in columns:
        values = frame[column] if column in frame.columns else pd.Series(np.nan, frame.index)
        out[column] = values.astype(object).where(values.notna(), UNASSIGNED).astype(str)
    return out


def _deal_nodes(tables: Tables, deals: pd.DataFrame, extra: Sequence[str]) -> pd.DataFrame:
    """Node columns of each open deal: its owner's rep/team/region and the extra levels."""
    nodes = opportunity_nodes(tables).drop_duplicates(OPPORTUNITY_ID).set_index(
        OPPORTUNITY_ID)
    out = pd.DataFrame({c: deals[OPPORTUNITY_ID].map(nodes[c]) for c in (REP, TEAM,
                                                                           REGION)},
                       index=deals.index)
    customers = deals.get(CUSTOMER_ID, pd.Series(np.nan, index=deals.index, dtype=object))
    for level in extra:
        own = deals[level] if level in deals.columns else pd.Series(np.nan, deals.index)
        out[level] = own.where(own.notna(), customer_column(tables, level, customers))
    return _filled(out, _node_columns(extra))


def _reps(tables: Tables, events: pd.DataFrame, deal_nodes: pd.DataFrame,
          targets: pd.DataFrame | None) -> np.ndarray:
    named = [rep_hierarchy(tables)[REP], events[REP], deal_nodes[REP]]
    if targets is not None:
        named.append(targets.loc[targets[LEVEL] == LEVEL_REP, KEY])
    values = pd.concat(named, ignore_index=True).astype(object)
    values = values.where(values.notna(), UNASSIGNED).astype(str)
    return np.array(sorted(set(values) | {UNASSIGNED}), dtype=object)


def _home_cells(tables: Tables, reps: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
    """Each rep's own cell: its team and region from the hierarchy, extra levels unassigned."""
    hierarchy = rep_hierarchy(tables).drop_duplicates(REP).set_index(REP)
    base = pd.DataFrame({REP: reps})
    base[TEAM] = base[REP].map(hierarchy[TEAM])
    base[REGION] = base[REP].map(hierarchy[REGION])
    return _filled(base, columns)


def _cells(frames: Sequence[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    """Distinct node combinations of the given frames, sorted."""
    stacked = pd.concat([f[list(columns)] for f in frames], ignore_index=True)
    return stacked.drop_duplicates().sort_values(list(columns), kind="stable").reset_index(
        drop=True)


def _distinct_nodes(events: pd.DataFrame, columns: Sequence[str]
                    ) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct node combinations of ``events`` (``_filled``) and each event's row there.

    Millions of events hold a few thousand combinations: they are found on the columns' codes,
    and only they are written as text and matched to cells."""
    codes = [pd.factorize(events[c], use_na_sentinel=True)[0].astype(np.int64) + 1
             for c in columns]
    sizes = [int(c.max(initial=0)) + 1 for c in codes]
    if float(np.prod(np.array(sizes, dtype=float))) >= 2.0**62:  # too many to pack: as text
        filled = _filled(events, columns)
        return filled, np.arange(len(filled))
    key = np.zeros(len(events), dtype=np.int64)
    for column_codes, size in zip(codes, sizes, strict=True):
        key = key * size + column_codes
    inverse, uniques = pd.factorize(key)
    one = np.zeros(len(uniques), dtype=np.int64)
    one[inverse] = np.arange(len(inverse))  # an event of each combination (any: all alike)
    return _filled(events.iloc[one], columns).reset_index(drop=True), inverse


def _cell_codes(cells: pd.DataFrame, frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    index = pd.MultiIndex.from_frame(cells[list(columns)])
    codes = index.get_indexer(pd.MultiIndex.from_frame(frame[list(columns)]))
    if (codes < 0).any():
        raise AssertionError("a row has no cell")  # cannot happen: cells come from the rows
    return codes


def _run_rate_shares(n_cells: int, cell_rep: np.ndarray, home: np.ndarray,
                     recent_cell: np.ndarray, recent_amount: np.ndarray) -> np.ndarray:
    """Share of each rep's run rate per cell: its last year's revenue mix, else its home cell.

    Args:
        n_cells: number of cells.
        cell_rep: rep index of each cell.
        home: home cell of each rep.
        recent_cell: cell of each revenue event of the last year.
        recent_amount: amount of each of those events.
    """
    weights = np.bincount(recent_cell, np.maximum(recent_amount, 0.0), n_cells)
    totals = np.bincount(cell_rep, weights, len(home))
    safe = np.where(totals > 0, totals, 1.0)
    share = np.where(totals[cell_rep] > 0, weights / safe[cell_rep], 0.0)
    share[home[totals <= 0]] = 1.0
    return share


def _open_deals(tables: Tables, as_of: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp,
                win_model: Any) -> pd.DataFrame:
    """Deals open at ``as_of`` with their in-period win probability (0 when not countable)."""
    if not tables.has(OPPORTUNITIES) or as_of >= end:
        return pd.DataFrame({OPPORTUNITY_ID: pd.Series(dtype=object),
                             AMOUNT: pd.Series(dtype=float), "p": pd.Series(dtype=float)})
    deals = deal_inputs(tables, as_of)
    deals = pd.concat([deals, period_features(deals, start, end, as_of)], axis=1)
    p = (win_model.predict_frame(deals)[WIN_PROBABILITY].to_numpy(dtype=float)
         if len(deals) else np.zeros(0))
    # Expected after the period end: next period's pipeline, never counted here.
    outside = (deals[CLOSE_DATE] >= end).to_numpy()
    return deals.assign(p=np.where(outside, 0.0, np.clip(p, 0.0, 1.0)))


def _customer_run_rate(tables: Tables, as_of: pd.Timestamp, window_days: int) -> pd.Series:
    """Each customer's unlinked revenue of the last year before ``as_of``
    (:func:`features.hierarchy.unlinked_year_revenue`), scaled to the window; summed tables
    carry it, summed where they were read, for their own as-of only."""
    if isinstance(tables, CubeTables):
        if tables.customer_revenue is None or tables.as_of != pd.Timestamp(as_of):
            raise ValueError("churn scores need each customer's revenue of the last year, "
                             "which these tables hold summed per node")
        return tables.customer_revenue * window_days / 365.0
    return unlinked_year_revenue(tables, as_of) * window_days / 365.0


def _churn_by_rep(tables: Tables, churn: pd.DataFrame | None, as_of: pd.Timestamp,
                  window: RestOfPeriod, reps: np.ndarray, horizon_days: int) -> np.ndarray:
    if churn is None or window.length <= 0:
        return np.zeros(len(reps))
    revenue = _customer_run_rate(tables, as_of, window.length)
    adjust = churn_adjustment(churn, revenue, window.length, horizon_days)
    owner = customer_nodes(tables).drop_duplicates(CUSTOMER_ID).set_index(CUSTOMER_ID)[REP]
    rep = adjust.index.to_series().map(owner).fillna(UNASSIGNED).astype(str)
    codes = pd.Index(reps).get_indexer(pd.Index(rep))
    ok = codes >= 0
    return np.bincount(codes[ok], adjust.to_numpy()[ok], len(reps))


def _pipeline_matured(tables: Tables, as_of: pd.Timestamp, quantile: float = 0.9) -> int:
    """First day whose revenue no longer depends on deals created before the data starts.

    An export that starts with its first opportunity has no pipeline from before it, so early
    on nearly every win comes from a deal created "after" any date: counted as run rate, it
    would inflate the rate. Windows start once the usual sales cycle (``quantile`` of the
    created-to-won days of deals won before ``as_of``) has passed since the first deal.
    """
    opps = tables.get(OPPORTUNITIES)
    if opps is None or opps.empty:
        return -(2**62)
    won = opps[(opps[STATUS] == STATUS_WON) & (opps[CLOSE_DATE] < as_of)]
    cycle = ((won[CLOSE_DATE] - won[CREATED_AT]).dt.days.quantile(quantile)
             if len(won) else 0.0)
    first = opps.loc[opps[CREATED_AT] < as_of, CREATED_AT].min()
    if pd.isna(first) or pd.isna(cycle):
        return -(2**62)
    return day_number(first) + int(max(cycle, 0.0))


def revenue_by_node(tables: Tables, as_of: pd.Timestamp | str,
                    levels: Sequence[str] | None = None) -> pd.DataFrame:
    """Revenue events dated before ``as_of`` with ``ds``, ``amount`` and the node of every
    level but company (rep, team, region and ``levels``), keys written as the simulation's
    nodes are (missing: ``unassigned``)."""
    extra = sorted({lv for lv in (levels or []) if lv not in HIERARCHY_LEVELS})
    events = _revenue(tables, pd.Timestamp(as_of), columns=extra)
    return pd.concat([events[[DS, AMOUNT]], _filled(events, _node_columns(extra))], axis=1)


def rest_of_period_scale(tables: Tables, period: str, as_of: pd.Timestamp | str,
                         win_model: Any) -> RestScale:
    """The company-wide factor on the rest of ``period`` (:mod:`models.feasibility.backtest`).

    At the same point of each earlier period (:func:`models.feasibility.backtest
    .earlier_points`), the open pipeline's expected wins (``win_model`` on the deals open
    then) plus the run rate estimated from the revenue known then (its central value,
    :meth:`models.feasibility.run_rate.RunRate.central`) are compared with the revenue the
    rest of that period brought. Only rows dated before ``as_of`` are used: the
    earlier periods ended by then. Pipeline and run rate are judged together: on a young
    history the run rate's own backtest has too few windows to correct its bias, and what one
    misses the other often holds (a deal created and won in the window is run rate, one created
    a day earlier pipeline). (The win model was trained on outcomes up to ``as_of``, so on the
    periods it learned from it errs less than it will ahead: the factor rather under-corrects.)

    Each point depends only on the tables, the model and the point itself (not on ``as_of``),
    so it is worked out once per tables and model (:data:`_REST_CACHE`).

    Only once the period has started: before it (a plan, a plan check) the factor is 1.

    Args:
        tables: validated tables.
        period: the period simulated.
        as_of: the date T.
        win_model: the model the simulation uses.
    """
    as_of = pd.Timestamp(as_of)
    if as_of <= period_bounds(period)[0]:
        # Before the period starts (a plan check, a plan): replayed on past quarters the
        # correction made crm-sales plans miss their stated probabilities by 0.17 instead of
        # 0.11 (benchmarks/plan_replay.py), so plans and plan checks are left as estimated.
        return RestScale(1.0)
    realised, expected, used = [], [], []
    for point in earlier_points(period, as_of):
        key = (id(tables), id(win_model), point.period, point.as_of)
        cached = _REST_CACHE.get(key)
        if cached is not None and cached[0]() is tables and cached[1]() is win_model:
            outcome = cached[2]
        else:
            outcome = _rest_at(tables, point, win_model)
            _remember(key, tables, win_model, outcome)
        if outcome is None:
            continue
        realised.append(outcome[0])
        expected.append(outcome[1])
        used.append(point.period)
    return rest_scale(np.array(realised), np.array(expected), used,
                      deals=tables.has(OPPORTUNITIES))


# Realised and expected rest of an earlier period, by (tables, win model, period, point): the
# same points come back whenever a period is simulated again as of a date of the same point
# (a scenario or a what-if after its feasibility, the service asked again) and in the p_attain
# backtest, whose replays of earlier periods look at the same earlier points. Weak references
# to the tables and the model are kept with the entry and compared by identity, so another
# object never hits and nothing is kept alive; tables are taken as unchanged once built
# (every step derives new frames).
_REST_CACHE: dict[tuple[int, int, str, pd.Timestamp],
                  tuple[weakref.ref[Any], weakref.ref[Any], tuple[float, float] | None]] = {}
_REST_CACHE_SIZE = 64


def _remember(key: tuple[int, int, str, pd.Timestamp], tables: Tables, win_model: Any,
              outcome: tuple[float, float] | None) -> None:
    try:
        refs = weakref.ref(tables), weakref.ref(win_model)
    except TypeError:  # an object without weak references is simply not cached
        return
    _REST_CACHE[key] = (*refs, outcome)
    while len(_REST_CACHE) > _REST_CACHE_SIZE:
        _REST_CACHE.pop(next(iter(_REST_CACHE)))


def _rest_at(tables: Tables, point: PastPoint, win_model: Any) -> tuple[float, float] | None:
    """Realised and expected rest of ``point``'s period seen from its date; None when that
    says nothing (no revenue before it, or no run-rate history yet).

    The expectation reads the revenue as known at the point (rows dated before it), the
    realisation the revenue of the period as known at its end: neither depends on the later
    date the point is looked at from."""
    past = _revenue(tables, point.as_of, with_created=True)
    if past.empty:
        return None
    codes, names = pd.factorize(past[REP])  # by first appearance, as of the reps' names
    window = RestOfPeriod(day_number(point.as_of), day_number(point.start),
                          day_number(point.end))
    data_start = max(day_number(past[DS].min()), _pipeline_matured(tables, point.as_of))
    if window.as_of <= data_start:  # no run-rate history then: the outlook was a floor
        return None
    run_rate = estimate_run_rate(past, codes, len(names), window, data_start)
    deals = _open_deals(tables, point.as_of, point.start, point.end, win_model)
    pipeline = float((deals["p"] * deals[AMOUNT]).sum())
    rest = _revenue(tables, point.end, since=max(point.as_of, point.start))
    return float(rest[AMOUNT].sum()), pipeline + float(run_rate.central().sum())


def build_inputs(tables: Tables, period: str, as_of: pd.Timestamp | str, win_model: Any, *,
                 churn: pd.DataFrame | None = None, levels: Sequence[str] | None = None,
                 churn_horizon_days: int = CHURN_HORIZON_DAYS,
                 rest_backtest: bool = True) -> CellInputs:
    """Closed revenue, open deals, run rate and churn of ``period`` as of ``as_of``, by cell.

    Args:
        tables: validated tables.
        period: ``2017``, ``2017Q3`` or ``2017-08``.
        as_of: the date T; only rows dated before it are used.
        win_model: anything with ``predict_frame`` returning ``win_probability``.
        churn: optional ``customer_id, churn_probability`` scores at ``as_of``.
        levels: extra levels to simulate besides those the period's targets use.
        churn_horizon_days: horizon of ``churn_probability``.
        rest_backtest: scale the rest of the period by how far the same outlook erred at
            the same point of earlier periods (:func:`rest_of_period_scale`).
    """
    as_of = pd.Timestamp(as_of)
    start, end = period_bounds(period)
    targets = tables.targets()
    extra = _extra_levels(targets, period, levels)
    columns = _node_columns(extra)
    window = RestOfPeriod(day_number(as_of), day_number(start), day_number(end))
    events = _revenue(tables, as_of, columns=extra, with_created=True)
    events_nodes, event_row = _distinct_nodes(events, columns)
    scale = (rest_of_period_scale(tables, period, as_of, win_model) if rest_backtest
             else RestScale(1.0))
    deals = _open_deals(tables, as_of, start, end, win_model)
    deal_nodes = _deal_nodes(tables, deals, extra) if len(deals) else _filled(deals, columns)
    reps = _reps(tables, events_nodes, deal_nodes, targets)
    home_cells = _home_cells(tables, reps, columns)
    cells = _cells([home_cells, events_nodes, deal_nodes], columns)
    cell_rep = pd.Index(reps).get_indexer(pd.Index(cells[REP]))
    home = _cell_codes(cells, home_cells, columns)
    event_cell = _cell_codes(cells, events_nodes, columns)[event_row]
    in_period = ((events[DS] >= start) & (events[DS] < end)).to_numpy()
    closed = np.bincount(event_cell[in_period], events[AMOUNT].to_numpy()[in_period],
                         len(cells))
    rep_of_event = cell_rep[event_cell]
    data_start = (max(day_number(events[DS].min()), _pipeline_matured(tables, as_of))
                  if len(events) else window.as_of)
    groups = [pd.factorize(home_cells[level])[0] for level in (REGION, TEAM)]
    run_rate = estimate_run_rate(events, rep_of_event, len(reps), window, data_start, groups)
    recent = (events[DS] >= as_of - pd.Timedelta(days=365)).to_numpy()
    share = _run_rate_shares(len(cells), cell_rep, home, event_cell[recent],
                             events[AMOUNT].to_numpy()[recent])
    churn_rep = _churn_by_rep(tables, churn, as_of, window, reps, churn_horizon_days)
    days_left = window.end - max(window.as_of, window.start)
    conversion = (win_model.conversion_at(days_left)
                  if hasattr(win_model, "conversion_at") and days_left > 0 else float("nan"))
    notes = list(run_rate.notes) + ([scale.note] if scale.note else [])
    pipeline_sigma = (float(win_model.period_spread()) if hasattr(win_model, "period_spread")
                      else 0.0)
    measured = (win_model.period_spread_measured()
                if hasattr(win_model, "period_spread_measured") else True)
    if pipeline_sigma > 0 and measured:
        notes.append(f"pipeline: the period's deal wins share a company-wide factor of spread "
                     f"{pipeline_sigma:.2f}, measured on past periods' won vs expected amounts")
    elif pipeline_sigma > 0:
        notes.append(f"pipeline: too few past periods to measure how far a period's deal wins "
                     f"stray from their expectation; a wide default spread of "
                     f"{pipeline_sigma:.2f} is used (intervals widened)")
    if churn is None:
        notes.append("churn: no churn scores given, no churn adjustment")
    inputs = CellInputs(
        cells=cells, rep_of_cell=cell_rep, reps=reps, closed_cell=closed,
        deal_cell=(_cell_codes(cells, deal_nodes, columns) if len(deals)
                   else np.zeros(0, dtype=np.int64)),
        deal_p=deals["p"].to_numpy(dtype=float), deal_amount=deals[AMOUNT].to_numpy(float),
        run_rate=run_rate, share_cell=share, churn_rep=churn_rep,
        levels=[*HIERARCHY_LEVELS, *extra], conversion=conversion or float("nan"),
        notes=notes, pipeline_sigma=pipeline_sigma, rest_scale=scale.factor,
        deal_frame=deals.reset_index(drop=True),
    )
    inputs.rest_sigma = widening_sigma(inputs, scale.sigma)
    return inputs
