"""The board's trend: feasibility snapshots per node and as-of, and what changed between two.

Snapshots are written by every feasibility computation that a person or a schedule asks for
(``quotacast feasibility``, ``quotacast warnings evaluate``, the service's feasibility, which the
dashboard reads) into the quotacast database (:class:`engine.board_store.BoardStore`); the trend
of a node reads them back, one row per week.

"What changed" between two as-ofs ``since < until`` of a node and period compares the deals as
they stood at each date (:func:`features.funnel.opportunity_state`: only rows dated before each
as-of), in four groups:

- **won** / **lost**: closed won / lost in ``[since, until)``;
- **slipped**: open at both dates, expected at ``since`` to close before the period ends and at
  ``until`` after it (its close date moved out of the period);
- **created**: created in ``[since, until)``, still open at ``until`` and expected to close in
  the period.

Each deal's effect on the expected revenue of the period is its amount times what it changed:
a won deal brings its amount less what was already expected of it (``p`` times its amount when
it was counted at ``since``), a lost or slipped deal takes away ``p`` times its amount, a
created one adds ``p`` times its amount, where ``p`` is the node's average in-period win
probability at ``since`` (expected pipeline / pipeline in period of the ``since`` snapshot).
The P(attain) delta (the two snapshots' difference) is attributed to each group by passing the
group's expected-revenue effect through the ``since`` snapshot's fan taken as a normal (centred
where it gives the snapshot's P(attain), spread (P90 - P10) / 2.563): the group's share is
``Phi(z + effect / sigma) - p_attain(since)``; what the groups do not explain (time passing,
the run rate, deals re-scored) is ``other``.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from scipy.stats import norm

from engine.alerting.store import AlertStore
from engine.board_store import SNAPSHOT_NUMBERS, BoardStore, finite_number
from engine.io import Tables
from engine.periods import period_bounds
from engine.schemas import (
    AMOUNT,
    AS_OF,
    CHANNEL,
    CLOSE_DATE,
    COMPANY_KEY,
    CREATED_AT,
    CUSTOMER_ID,
    DS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    OWNER,
    PERIOD,
    PRODUCT,
    SEGMENT,
    STAGE,
    STATUS,
    STATUS_LOST,
    STATUS_OPEN,
    STATUS_WON,
)
from features.funnel import funnel_notes, opportunity_state
from features.hierarchy import (
    NODE_COLUMNS,
    UNASSIGNED,
    attribute_revenue,
    categorical_columns,
    customer_column,
    hierarchy_nodes,
    opportunity_nodes,
)
from models.feasibility import (
    FEASIBILITY_COLUMNS,
    P_ATTAIN,
    Simulation,
    fit_stage_rates,
    summarise,
)
from service.usecases.feasibility import FeasibilityResult, run_feasibility
from service.usecases.request import (
    NotFound,
    OutsideData,
    resolve_as_of,
    resolve_level,
    resolve_period,
)
from service.usecases.served import Memo, Served

__all__ = [
    "CHANGE_COLUMNS",
    "CHANGE_GROUPS",
    "DEAL_COLUMNS",
    "DIMENSIONS",
    "DIMENSION_DRAWS",
    "MAX_DIMENSION_VALUES",
    "TREND_COLUMNS",
    "Changes",
    "Trend",
    "board_changes",
    "board_store",
    "board_trend",
    "changes_between",
    "closed_path",
    "default_since",
    "dimension_levels",
    "dimension_nodes",
    "dimension_run",
    "dimension_snapshot",
    "every_node",
    "record_run",
    "record_snapshots",
    "resolve_node",
    "snapshot_rows",
    "trend_frame",
]

log = logging.getLogger(__name__)

TREND_COLUMNS = (AS_OF, "target", "closed_to_date", "p10", "p50", "p90", "p_attain",
                 "expected", "must_hit", "stretch", "p_attain_delta", "source")
CHANGE_GROUPS = ("won", "lost", "slipped", "created")
DEAL_COLUMNS = ("change", OPPORTUNITY_ID, OWNER, CUSTOMER_ID, AMOUNT, STAGE, CREATED_AT,
                "close_date_before", "close_date_after", "expected_effect", "p_attain_effect")
CHANGE_COLUMNS = ("change", "deals", AMOUNT, "expected_effect", "p_attain_effect")
# (P90 - P10) of a normal, in standard deviations.
_P10_P90_WIDTH = 2 * float(norm.ppf(0.9))


# --- snapshots ----------------------------------------------------------------------------------


def snapshot_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The snapshot rows of a feasibility frame with an ``as_of`` column (``period, level,
    key`` and the numbers of :data:`engine.board_store.SNAPSHOT_NUMBERS`)."""
    if frame is None or frame.empty or AS_OF not in frame.columns:
        return []
    dated = frame[frame[AS_OF].notna()]
    return [{PERIOD: str(row[PERIOD]), AS_OF: pd.Timestamp(row[AS_OF]).date(),
             LEVEL: str(row[LEVEL]), KEY: str(row[KEY]),
             **{name: row.get(name) for name in SNAPSHOT_NUMBERS}}
            for _, row in dated.iterrows()]


def record_snapshots(store: BoardStore, frame: pd.DataFrame, source: str) -> int:
    """Store the snapshot of a feasibility frame (same period/as_of/node: replaced); how many
    node rows were written."""
    return store.write_snapshots(snapshot_rows(frame), source)


def every_node(tables: Tables, simulation: Simulation, period: str,
               as_of: pd.Timestamp | date, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The feasibility frame of every simulated node, with a target or not (what a snapshot
    keeps: a node's trend does not need a target).

    ``frame``: the feasibility's own answer, whose ``p_attain`` and range win for the nodes it
    has (a level whose P(attain) and range the pace rule gives there, not the draws), so that
    a snapshot says what the feasibility said."""
    out = summarise(simulation, tables.targets(), period, pd.Timestamp(as_of), all_nodes=True)
    if frame is not None and not frame.empty and P_ATTAIN in frame.columns:
        said = frame.drop_duplicates([LEVEL, KEY]).set_index([LEVEL, KEY])
        keys = pd.MultiIndex.from_arrays([out[LEVEL], out[KEY]])
        known = keys.isin(said.index)
        for column in FEASIBILITY_COLUMNS[3:]:  # after period, level, key
            if column in said.columns:
                found = said[column].reindex(keys).to_numpy(dtype=float)
                out[column] = np.where(known, found, out[column].to_numpy(dtype=float))
    return out


_STORES: weakref.WeakKeyDictionary[AlertStore, BoardStore] = weakref.WeakKeyDictionary()


def board_store(served: Served) -> BoardStore:
    """The board tables of the served workspace, on the alert store's database connection."""
    alerts = served.alerts
    store = _STORES.get(alerts)
    if store is None:
        store = BoardStore(engine=alerts.engine, workspace=alerts.workspace)
        _STORES[alerts] = store
    return store


def record_run(served: Served, result: FeasibilityResult, period: str, as_of: pd.Timestamp,
               source: str = "service") -> int:
    """Snapshot every node of a feasibility the service computed; a database problem is
    logged, never raised (the feasibility answer matters more than its snapshot)."""
    try:
        frame = every_node(served.tables(), result.simulation, period, as_of, result.frame)
        return record_snapshots(board_store(served), frame, source)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("feasibility snapshot not written: %s", str(exc).splitlines()[0][:200])
        return 0


def resolve_node(tables: Tables, level: str, key: str) -> tuple[str, str]:
    """A node of the data: the company, a region, team or rep of its hierarchy, or a value of
    a category column.

    Raises:
        OutsideData: a level the data does not have (404).
        NotFound: no such node (404).
    """
    resolve_level(level, tables)
    if level == LEVEL_COMPANY:
        if key != COMPANY_KEY:
            raise NotFound(f"the company node is {COMPANY_KEY!r}, not {key!r}")
        return level, key
    if level in (LEVEL_REGION, LEVEL_TEAM, LEVEL_REP):
        nodes = hierarchy_nodes(tables)
        known = set(nodes.loc[nodes[LEVEL] == level, KEY].astype(str))
    else:
        known = set()
        for frame in tables.frames.values():
            if level in frame.columns:
                known |= set(frame[level].dropna().astype(str).unique())
    if key not in known:
        raise NotFound(f"no {level} {key!r} in the data")
    return level, key


# --- the data's own dimensions: nodes no target names -------------------------------------------

# The columns a board drills into beside the hierarchy, when the data has them.
DIMENSIONS = (PRODUCT, SEGMENT, CHANNEL)
# A dimension with more values than this is a list, not a drill-down (and would multiply the
# simulation's cells).
MAX_DIMENSION_VALUES = 30
# Draws of the dimensions' simulation: nodes without a target show only P10/P50/P90, whose
# sampling error at 2,000 draws is a fraction of a percent of the spread.
DIMENSION_DRAWS = 2_000


def dimension_levels(tables: Tables, simulated: set[str]) -> list[str]:
    """The data's dimensions (:data:`DIMENSIONS`: product, segment, channel) that are not
    already ``simulated`` levels (a level the period's targets name is), each with between one
    and :data:`MAX_DIMENSION_VALUES` values."""
    found = categorical_columns(tables)
    out = []
    for level in DIMENSIONS:
        if level in simulated or level not in found:
            continue
        values = tables[found[level]][level].dropna().nunique()
        if 1 <= values <= MAX_DIMENSION_VALUES:
            out.append(level)
    return out


def dimension_run(served: Served, period: str, as_of: pd.Timestamp, levels: list[str],
                  models: dict[str, Any]) -> FeasibilityResult:
    """The simulation of ``period`` with the dimension ``levels`` as nodes (under the company,
    beside the hierarchy), with :data:`DIMENSION_DRAWS` draws at most, the same models and the
    same cached stage rates as the period's feasibility; the dimension nodes' snapshots are
    recorded (their trend), like every feasibility the service computes.

    Raises:
        ValueError: the period cannot be simulated (from the engine).
    """
    tables = served.tables()

    def stage_rates(frames: Tables, when: pd.Timestamp) -> tuple[Any, str]:
        return served.feasibility_cache.get(
            ("stage-rates", when), lambda: fit_stage_rates(frames, when))

    result = run_feasibility(tables, period, as_of, draws=min(served.draws, DIMENSION_DRAWS),
                             seed=served.settings.seed, levels=levels, all_nodes=True,
                             models=models, stage_rates=stage_rates, pace_check=False)
    try:
        record_snapshots(board_store(served),
                         dimension_nodes(tables, result, period, as_of, levels), "service")
    except sa.exc.SQLAlchemyError as exc:
        log.warning("dimension snapshot not written: %s", str(exc).splitlines()[0][:200])
    return result


def dimension_nodes(tables: Tables, result: FeasibilityResult, period: str,
                    as_of: pd.Timestamp | date, levels: list[str]) -> pd.DataFrame:
    """The snapshot frame of the dimension ``levels``' nodes of a dimensions' simulation
    (:func:`every_node`, the other levels left out: the period's feasibility snapshots
    them)."""
    frame = every_node(tables, result.simulation, period, as_of, result.frame)
    return frame[frame[LEVEL].isin(levels)]


def dimension_snapshot(tables: Tables, period: str, as_of: pd.Timestamp, simulated: set[str],
                       *, seed: int, models: dict[str, Any] | None = None,
                       draws: int = DIMENSION_DRAWS) -> pd.DataFrame:
    """What the board's dimensions' simulation (:func:`dimension_run`) snapshots, computed
    outside the service (``quotacast feasibility`` and ``warnings evaluate``): the nodes of the
    data's product, segment and channel that none of the ``simulated`` levels covers, from
    :data:`DIMENSION_DRAWS` draws at most, the same seed and ``models`` (the champions by kind;
    None: the registry's), so its trend continues the board's. Empty when the data has no such
    dimension.

    Raises:
        ValueError: the period cannot be simulated (from the engine).
    """
    levels = dimension_levels(tables, simulated)
    if not levels:
        return pd.DataFrame()
    result = run_feasibility(tables, period, as_of, draws=min(draws, DIMENSION_DRAWS),
                             seed=seed, levels=levels, all_nodes=True, models=models,
                             pace_check=False)
    return dimension_nodes(tables, result, period, as_of, levels)


_PERIOD_EVENTS: Memo[tuple[Tables, pd.DataFrame]] = Memo(size=4)


def _period_events(tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """Revenue dated in ``period`` before ``as_of`` with its nodes (rep, team, region and the
    dimensions), attributed as the feasibility's closed to date is; once per tables, period
    and as-of."""
    key = (id(tables), period, as_of)

    def build() -> tuple[Tables, pd.DataFrame]:
        columns = [c for c in DIMENSIONS if c in categorical_columns(tables)]
        events = attribute_revenue(tables, as_of=as_of, columns=columns)
        start, end = period_bounds(period)
        mine = events[(events[DS] >= start) & (events[DS] < min(end, as_of))]
        return tables, mine[[DS, AMOUNT, *NODE_COLUMNS, *columns]]

    found = _PERIOD_EVENTS.get(key, build)
    if found[0] is not tables:  # an id reused by tables loaded anew
        _PERIOD_EVENTS.clear()
        found = _PERIOD_EVENTS.get(key, build)
    return found[1]


def closed_path(tables: Tables, period: str, as_of: pd.Timestamp | date, level: str,
                key: str) -> pd.Series:
    """A node's revenue closed to date, cumulated day by day: indexed by every day from the
    period's start to the day before ``as_of`` (or the period's end), the total at the end of
    that day. Empty before the period starts; its last value is the feasibility's closed to
    date. A level the revenue does not carry: empty."""
    as_of = pd.Timestamp(as_of)
    start, end = period_bounds(period)
    last = min(as_of, end)
    if last <= start:
        return pd.Series(dtype=float)
    events = _period_events(tables, period, as_of)
    if level != LEVEL_COMPANY:
        if level not in events.columns:
            return pd.Series(dtype=float)
        values = events[level].astype(object)
        events = events[values.where(values.notna(), UNASSIGNED).astype(str) == key]
    days = pd.date_range(start, last - pd.Timedelta(days=1), freq="D")
    daily = events.groupby(events[DS].dt.normalize())[AMOUNT].sum()
    return daily.reindex(days, fill_value=0.0).astype(float).cumsum()


# --- trend ---------------------------------------------------------------------------------------


def trend_frame(store: BoardStore, period: str, level: str, key: str, *,
                until: date | None = None, weekly: bool = True) -> pd.DataFrame:
    """The node's snapshots of ``period`` (columns :data:`TREND_COLUMNS`), oldest first.

    Args:
        until: only snapshots as of this date or earlier (point in time).
        weekly: one row per calendar week (Monday to Sunday): its latest as_of.
    """
    frame = store.snapshots(period, level, key, until=until)
    if weekly and not frame.empty:
        week = pd.to_datetime(frame[AS_OF]).dt.to_period("W-SUN")
        frame = frame.assign(_week=week).drop_duplicates("_week", keep="last").drop(
            columns="_week")
    frame = frame.reset_index(drop=True)
    frame["p_attain_delta"] = frame["p_attain"].diff()
    return frame[list(TREND_COLUMNS)]


@dataclass(frozen=True)
class Trend:
    """A node's weekly snapshots of a period."""

    period: str
    level: str
    key: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _period_of(served: Served, period: str | None, as_of: date | None) -> tuple[str, date]:
    span = served.span()
    stamp = resolve_as_of(as_of, span)
    return resolve_period(period, stamp, span), stamp.date()


def board_trend(served: Served, level: str, key: str, period: str | None = None,
                as_of: date | None = None) -> Trend:
    """The weekly trend of one node (service): snapshots as of ``as_of`` or earlier (default
    the data's as-of), period default: the quarter holding it.

    Raises:
        RequestError/OutsideData: bad period or as_of.
    """
    chosen, until = _period_of(served, period, as_of)
    frame = trend_frame(board_store(served), chosen, level, key, until=until)
    notes = []
    if frame.empty:
        notes.append(f"no snapshot of {level} {key} in {chosen} yet: snapshots are written by "
                     "`quotacast feasibility`, `quotacast warnings evaluate` and each "
                     "feasibility the service computes (the dashboard's)")
    elif len(frame) == 1:
        notes.append("one snapshot so far: the trend needs a second week")
    return Trend(chosen, level, key, frame, notes)


# --- what changed --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    """What changed for one node between two as-ofs.

    Attributes:
        since, until: the two as-ofs (only rows dated before each are used).
        p_attain_since, p_attain_until: the node's snapshots' P(attain) (None without one).
        p_attain_delta: their difference (None when either is missing).
        groups: one row per change group and ``other``: :data:`CHANGE_COLUMNS`.
        deals: the deals that changed: :data:`DEAL_COLUMNS`, largest effect first.
        notes: how the numbers were obtained, what is missing.
    """

    period: str
    level: str
    key: str
    since: date
    until: date
    p_attain_since: float | None
    p_attain_until: float | None
    p_attain_delta: float | None
    groups: pd.DataFrame
    deals: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _node_deals(tables: Tables, level: str, key: str) -> pd.Series:
    """The opportunity ids of a node (all for the company)."""
    opps = tables[OPPORTUNITIES]
    ids = opps[OPPORTUNITY_ID].astype(object)
    if level == LEVEL_COMPANY:
        return ids
    if level in (LEVEL_REP, LEVEL_TEAM, LEVEL_REGION):
        nodes = opportunity_nodes(tables)
        return nodes.loc[nodes[level].astype(str) == key, OPPORTUNITY_ID]
    if level in opps.columns:
        return ids[opps[level].astype(str) == key]
    if CUSTOMER_ID in opps.columns:
        values = customer_column(tables, level, opps[CUSTOMER_ID])
        if values.notna().any():
            return ids[values.astype(str) == key]
    raise OutsideData("level", f"the deals have no {level!r} to find {level} {key!r} by")


def _snapshot(store: BoardStore, period: str, level: str, key: str, day: date
              ) -> dict[str, Any] | None:
    found = store.snapshots(period, level, key, since=day, until=day)
    return None if found.empty else {str(k): v for k, v in found.iloc[-1].items()}


def _win_share(snapshot: dict[str, Any] | None) -> tuple[float, str]:
    """The node's average in-period win probability of its open pipeline, and how it was
    found."""
    if snapshot is not None:
        pipeline, expected = snapshot.get("pipeline_in_period"), snapshot.get(
            "expected_pipeline")
        if (pipeline is not None and expected is not None and np.isfinite(pipeline)
                and np.isfinite(expected) and pipeline > 0):
            return float(min(max(expected / pipeline, 0.0), 1.0)), "the since snapshot"
    return 0.5, "none known (no since snapshot with pipeline): 0.5 assumed"


def _p_effect(snapshot: dict[str, Any] | None, effect: np.ndarray) -> np.ndarray:
    """P(attain) change of each expected-revenue effect through the snapshot's fan."""
    effect = np.asarray(effect, dtype=float)
    if snapshot is None:
        return np.full(effect.shape, np.nan)
    p = snapshot.get("p_attain")
    spread = (snapshot.get("p90") or 0.0) - (snapshot.get("p10") or 0.0)
    if p is None or not np.isfinite(p):
        return np.full(effect.shape, np.nan)
    if not np.isfinite(spread) or spread <= 0:
        return np.zeros(effect.shape)
    z = norm.ppf(min(max(p, 1e-4), 1 - 1e-4))
    return np.asarray(norm.cdf(z + effect / (spread / _P10_P90_WIDTH)) - p)


def changes_between(tables: Tables, store: BoardStore, period: str, level: str, key: str,
                    since: date, until: date) -> Changes:
    """The deals of a node won, lost, slipped and created in ``[since, until)`` and the
    P(attain) delta of its snapshots, attributed as the module docstring says.

    Raises:
        OutsideData: ``since`` is not before ``until``, or the node's level is unknown.
    """
    if not since < until:
        raise OutsideData("since", f"since {since} must be before until {until}")
    start, end = period_bounds(period)
    before, after = _snapshot(store, period, level, key, since), _snapshot(
        store, period, level, key, until)
    notes: list[str] = []
    p_since = None if before is None else finite_number(before.get("p_attain"))
    p_until = None if after is None else finite_number(after.get("p_attain"))
    delta = None if p_since is None or p_until is None else p_until - p_since
    for day, found in ((since, before), (until, after)):
        if found is None:
            notes.append(f"no snapshot of {level} {key} in {period} as of {day}: its P(attain) "
                         "is not known")
    if before is not None and after is not None and delta is None:
        notes.append(f"{level} {key} has no target in {period}: its P(attain), and so the "
                     "part of it each group explains, is unknown; the expected effects stand")
    if tables.has(OPPORTUNITIES) and funnel_notes(tables):
        notes.append("slipped deals cannot be seen: the data records no expected close date "
                     "per stage change (stage_history with close_date), so a deal's expected "
                     f"close at {since} is unknown")
    share, how = _win_share(before)
    notes.append(f"expected effects: deals valued at the node's average in-period win "
                 f"probability at {since}, {share:.0%} ({how})")
    deals = _changed_deals(tables, level, key, pd.Timestamp(since), pd.Timestamp(until),
                           start, end, share)
    deals["p_attain_effect"] = _p_effect(before, deals["expected_effect"].to_numpy())
    order = deals["p_attain_effect"].abs().fillna(deals["expected_effect"].abs())
    deals = deals.assign(_o=order).sort_values("_o", ascending=False, kind="stable").drop(
        columns="_o").reset_index(drop=True)
    groups = _groups(deals, before, after, delta)
    return Changes(period, level, key, since, until, p_since, p_until, delta, groups,
                   deals[list(DEAL_COLUMNS)], notes)


_STATES: Memo[tuple[Tables, pd.DataFrame]] = Memo(size=4)


def _state_at(tables: Tables, when: pd.Timestamp) -> pd.DataFrame:
    """Every deal as it stood at ``when`` (:func:`features.funnel.opportunity_state`), computed
    once per tables and date: every node's "what changed" reads the same two dates (0.2-0.3 s
    each at the medium demo company). Read only."""
    key = (id(tables), when)
    found = _STATES.get(key, lambda: (tables, opportunity_state(tables, when)))
    if found[0] is not tables:  # an id reused by tables loaded anew
        _STATES.clear()
        found = _STATES.get(key, lambda: (tables, opportunity_state(tables, when)))
    return found[1]


def _changed_deals(tables: Tables, level: str, key: str, since: pd.Timestamp,
                   until: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp,
                   share: float) -> pd.DataFrame:
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in DEAL_COLUMNS})
    if not tables.has(OPPORTUNITIES):
        return empty
    mine = set(_node_deals(tables, level, key))
    at_since = _state_at(tables, since)
    at_until = _state_at(tables, until)
    at_since = at_since[at_since[OPPORTUNITY_ID].isin(mine)].set_index(OPPORTUNITY_ID)
    at_until = at_until[at_until[OPPORTUNITY_ID].isin(mine)].set_index(OPPORTUNITY_ID)
    close_before = at_since[CLOSE_DATE].reindex(at_until.index)
    open_before = at_since[STATUS].reindex(at_until.index) == STATUS_OPEN
    # Counted at since: open then and not expected after the period (unknown counts).
    counted = open_before & ~(close_before >= end)
    status, close = at_until[STATUS], at_until[CLOSE_DATE]
    closed_now = (status != STATUS_OPEN) & (close >= since) & (close < until)
    change = pd.Series(None, index=at_until.index, dtype=object)
    change[closed_now & (status == STATUS_WON) & (close >= start) & (close < end)] = "won"
    change[closed_now & (status == STATUS_LOST)] = "lost"
    slipped = (open_before & (status == STATUS_OPEN) & (close_before < end)
               & (close_before >= start) & (close >= end))
    change[slipped] = "slipped"
    created = ((at_until[CREATED_AT] >= since) & (status == STATUS_OPEN)
               & ~(close >= end) & ~(close < start))
    change[created] = "created"
    rows = at_until[change.notna()].assign(change=change[change.notna()])
    if rows.empty:
        return empty
    amount = rows[AMOUNT].astype(float)
    was = counted.reindex(rows.index).fillna(False).astype(bool)
    effect = np.select(
        [rows["change"] == "won", rows["change"] == "lost", rows["change"] == "slipped",
         rows["change"] == "created"],
        [amount * np.where(was, 1 - share, 1.0), -amount * np.where(was, share, 0.0),
         -amount * share, amount * share], 0.0)
    out = rows.reset_index().assign(
        close_date_before=close_before.reindex(rows.index).to_numpy(),
        close_date_after=rows[CLOSE_DATE].to_numpy(), expected_effect=effect)
    for column in DEAL_COLUMNS:
        if column not in out.columns:
            out[column] = np.nan
    return out


def _groups(deals: pd.DataFrame, before: dict[str, Any] | None,
            after: dict[str, Any] | None, delta: float | None) -> pd.DataFrame:
    """One row per change group, then ``other``: what the snapshots' change of expected
    revenue and of P(attain) keeps beyond the groups' (time passing, the run rate, deals
    re-scored)."""
    rows: list[dict[str, Any]] = []
    for name in CHANGE_GROUPS:
        mine = deals[deals["change"] == name]
        effect = float(mine["expected_effect"].sum())
        p = float(_p_effect(before, np.array([effect]))[0])
        rows.append({"change": name, "deals": len(mine),
                     AMOUNT: float(mine[AMOUNT].astype(float).sum()),
                     "expected_effect": effect, "p_attain_effect": p})
    explained = float(sum(float(r["p_attain_effect"]) for r in rows))
    other = (delta - explained) if delta is not None and np.isfinite(explained) else np.nan
    moved = np.nan
    if before is not None and after is not None:
        start, end = finite_number(before.get("expected")), finite_number(after.get("expected"))
        if start is not None and end is not None:
            moved = end - start - float(sum(float(r["expected_effect"]) for r in rows))
    rows.append({"change": "other", "deals": 0, AMOUNT: 0.0, "expected_effect": moved,
                 "p_attain_effect": other})
    return pd.DataFrame(rows, columns=list(CHANGE_COLUMNS))


def default_since(store: BoardStore, period: str, level: str, key: str, until: date
                  ) -> date:
    """The snapshot as-of a week or more before ``until`` (the latest such), else the
    previous snapshot, else a week before ``until``."""
    days = [d for d in pd.to_datetime(store.snapshots(period, level, key, until=until)[AS_OF])
            .dt.date if d < until]
    week_ago = [d for d in days if d <= until - timedelta(days=7)]
    if week_ago:
        return max(week_ago)
    if days:
        return max(days)
    return until - timedelta(days=7)


def board_changes(served: Served, level: str, key: str, period: str | None = None,
                  since: date | None = None, until: date | None = None) -> Changes:
    """What changed for a node (service): ``until`` defaults to the node's latest snapshot
    (else the data's as-of), ``since`` to :func:`default_since`.

    Raises:
        RequestError/OutsideData: bad period or dates; NotFound: no deals to compare.
    """
    chosen, as_of = _period_of(served, period, until)
    store = board_store(served)
    if until is None:
        known = store.snapshots(chosen, level, key, until=as_of)
        until = pd.Timestamp(known[AS_OF].iloc[-1]).date() if not known.empty else as_of
    if since is not None:
        since = resolve_as_of(since, served.span(), option="since").date()
    start = since or default_since(store, chosen, level, key, until)
    tables = served.tables()
    if not tables.has(OPPORTUNITIES):
        raise NotFound("the data has no opportunities table: there are no deals to compare")
    return changes_between(tables, store, chosen, level, key, start, until)
