"""The sales funnel as of a date: each deal's reconstructed state, win/slip features, node metrics.

Point in time: as of ``T`` only deals created before ``T``, stage changes entered before ``T``
and final statuses of deals closed before ``T`` are seen; a deal closed on or after ``T`` was
open at ``T``.

What ``stage_history`` makes exact, and what happens without it:

- Stage at ``T`` is the last stage entered before ``T``. Without a history row for the deal, the
  ``opportunities`` row (a snapshot taken at its latest date, :func:`snapshot_date`) is used only
  where it describes ``T``: a deal closed before ``T`` keeps its final stage, an open deal its
  current stage when ``T`` is on or after the snapshot. Otherwise the stage is unknown (NaN), so
  that training snapshots never leak how a deal ended. ``funnel_history_exact`` marks deals whose
  stage came from their history.
- The expected close date at ``T`` is the latest expectation known before ``T``: an optional
  ``close_date`` column of ``stage_history`` (the expected close recorded at each change), else
  the snapshot under the same rule, else an optional ``original_close_date`` column of
  ``opportunities`` (expected at creation). Close-date slips need the history column.
- Stage order (for regressions and forward conversion) is not in the contract: it is inferred
  from the order in which deals first entered their stages before ``T`` (a Copeland ranking of
  pairwise precedence), so skipped stages and rare regressions do not disturb it; stages no
  deal has left (Won, Lost, Closed) come last, and entering them counts as a win or a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.periods import period_bounds
from engine.schemas import (
    AMOUNT,
    AS_OF,
    CLOSE_DATE,
    COMPANY_KEY,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    DS,
    ENTERED_AT,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORG,
    OWNER,
    PERIOD,
    PRODUCT,
    SEGMENT,
    STAGE,
    STAGE_HISTORY,
    STATUS,
    STATUS_OPEN,
    STATUS_WON,
    TABLES,
)
from features.hierarchy import (
    NODE_COLUMNS,
    UNASSIGNED,
    customer_column,
    opportunity_nodes,
    rep_hierarchy,
    revenue_events,
)

__all__ = [
    "CLOSE_HISTORY_MISSING_NOTE",
    "CLOSE_SLIPS",
    "DAYS_IN_STAGE",
    "DAYS_SLIPPED",
    "ENTERED_STAGE_AT",
    "FEATURES",
    "F_AGE",
    "F_AMOUNT_VS_OWNER",
    "F_CLOSE_SLIPS",
    "F_DAYS_IN_STAGE",
    "F_DAYS_SLIPPED",
    "F_DAYS_TO_CLOSE",
    "F_HISTORY_EXACT",
    "F_OVERDUE",
    "F_OWNER_WIN_RATE",
    "F_REGRESSIONS",
    "F_SEGMENT_WIN_RATE",
    "F_STAGE",
    "F_STAGE_CHANGES",
    "F_STAGE_INDEX",
    "HISTORY_EXACT",
    "HISTORY_MISSING_NOTE",
    "MIN_EXITS",
    "NODE_METRICS",
    "ORIGINAL_CLOSE_DATE",
    "PRIOR_STRENGTH",
    "REGRESSIONS",
    "STAGE_CHANGES",
    "STAGE_INDEX",
    "funnel_node_metrics",
    "funnel_notes",
    "open_at_any",
    "opportunity_features",
    "opportunity_state",
    "snapshot_date",
    "stage_conversion",
    "stage_order",
]

# Pseudo-deals of the company-wide win rate that a rep's or segment's rate is shrunk towards:
# with 10, a rep with 2 wins out of 2 gets about (2 + 10 * 0.5) / 12 = 0.58, not 1.0.
PRIOR_STRENGTH = 10.0
# A stage's conversion counts towards a "drop" only with this many exits in both windows.
MIN_EXITS = 5

HISTORY_MISSING_NOTE = (
    "stage_history is missing: a deal's stage at a past date is unknown (its current stage is "
    "used only when the date is on or after the opportunities snapshot), days in stage, stage "
    "changes, regressions, stalled deals, conversion and velocity are unavailable "
    "(funnel_history_exact is False)."
)
CLOSE_HISTORY_MISSING_NOTE = (
    "stage_history has no close_date column: close-date slips are unavailable, and a deal's "
    "expected close date at a date before the opportunities snapshot is the one expected at "
    "creation (original_close_date) or else unknown, which leaves pipeline coverage unknown."
)

# Optional opportunities column beyond the contract (written by engine.synthetic): the expected
# close date recorded when the deal was created. Known at creation, so safe at any later T.
ORIGINAL_CLOSE_DATE = "original_close_date"

# --- derived column names (state and features) ------------------------------------------------
STAGE_INDEX = "stage_index"
ENTERED_STAGE_AT = "entered_stage_at"
DAYS_IN_STAGE = "days_in_stage"
STAGE_CHANGES = "stage_changes"
REGRESSIONS = "regressions"
CLOSE_SLIPS = "close_slips"
DAYS_SLIPPED = "days_slipped"
HISTORY_EXACT = "history_exact"

F_STAGE = "funnel_stage"
F_STAGE_INDEX = "funnel_stage_index"
F_AGE = "funnel_age_days"
F_DAYS_IN_STAGE = "funnel_days_in_stage"
F_STAGE_CHANGES = "funnel_stage_changes"
F_REGRESSIONS = "funnel_regressions"
F_CLOSE_SLIPS = "funnel_close_slips"
F_DAYS_SLIPPED = "funnel_days_slipped"
F_OVERDUE = "funnel_overdue"
F_DAYS_TO_CLOSE = "funnel_days_to_close"
F_AMOUNT_VS_OWNER = "funnel_amount_vs_owner_median"
F_OWNER_WIN_RATE = "funnel_owner_win_rate"
F_SEGMENT_WIN_RATE = "funnel_segment_win_rate"
F_HISTORY_EXACT = "funnel_history_exact"
FEATURES = (
    F_STAGE, F_STAGE_INDEX, F_AGE, F_DAYS_IN_STAGE, F_STAGE_CHANGES, F_REGRESSIONS,
    F_CLOSE_SLIPS, F_DAYS_SLIPPED, F_OVERDUE, F_DAYS_TO_CLOSE, F_AMOUNT_VS_OWNER,
    F_OWNER_WIN_RATE, F_SEGMENT_WIN_RATE, F_HISTORY_EXACT,
)

# --- node metric names ----------------------------------------------------------------------
NODE_METRICS = (
    "open_deals", "open_pipeline", "deals_in_period", "pipeline_in_period", "overdue_deals",
    "stalled_deals", "stalled_pipeline", "slipped_deals", "won_to_date", "revenue_to_date",
    "target", "remaining_target", "coverage", "win_rate", "win_rate_baseline", "conversion",
    "conversion_baseline", "conversion_drop", "conversion_drop_stage", "velocity_days",
)

_SECONDS_PER_DAY = 86_400.0
_EXIT_AT, _FORWARD = "_exit_at", "_forward"


def _days(delta: pd.Series) -> pd.Series:
    """A timedelta series in (fractional) days."""
    return delta.dt.total_seconds() / _SECONDS_PER_DAY


def funnel_notes(tables: Tables) -> list[str]:
    """What the funnel cannot know from these tables, in words the CLI can print."""
    history = tables.get(STAGE_HISTORY)
    if history is None:
        return [HISTORY_MISSING_NOTE]
    return [] if CLOSE_DATE in history.columns else [CLOSE_HISTORY_MISSING_NOTE]


def _opportunities(tables: Tables) -> pd.DataFrame:
    """The opportunities table, or an empty one of the same shape when it is absent."""
    opps = tables.get(OPPORTUNITIES)
    if opps is not None:
        return opps
    spec = TABLES[OPPORTUNITIES]
    dtypes = {"date": "datetime64[ns]", "number": "float64"}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(col.kind, object))
                         for c, col in spec.columns.items()})


def snapshot_date(tables: Tables) -> pd.Timestamp:
    """The date the opportunities table describes: its latest creation or actual close."""
    opps = _opportunities(tables)
    closed = opps[STATUS] != STATUS_OPEN
    dates = pd.concat([opps[CREATED_AT], opps.loc[closed, CLOSE_DATE]])
    return pd.Timestamp(dates.max())


# --- history ----------------------------------------------------------------------------------


def _history_before(tables: Tables, as_of: pd.Timestamp, ids: pd.Series) -> pd.DataFrame:
    """Stage changes of the given deals entered before ``as_of``, in time order per deal."""
    history = tables.get(STAGE_HISTORY)
    if history is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (OPPORTUNITY_ID, STAGE)}
                            | {ENTERED_AT: pd.Series(dtype="datetime64[ns]")})
    seen = (history[ENTERED_AT] < as_of) & history[OPPORTUNITY_ID].isin(ids)
    return history[seen].sort_values([OPPORTUNITY_ID, ENTERED_AT], kind="stable")


def _first_entries(history: pd.DataFrame) -> pd.DataFrame:
    """First entry of each deal into each stage, with its rank among the deal's stages."""
    first = history.drop_duplicates([OPPORTUNITY_ID, STAGE])[[OPPORTUNITY_ID, STAGE]]
    return first.assign(_rank=first.groupby(OPPORTUNITY_ID).cumcount())


def _sinks(history: pd.DataFrame) -> set[str]:
    """Stages no deal has left (Won, Lost...): they end the order whatever their votes."""
    following = history.groupby(OPPORTUNITY_ID, sort=False)[STAGE].shift(-1)
    left = following.notna() & following.ne(history[STAGE])
    return set(history[STAGE]) - set(history.loc[left, STAGE])


def _precedence_votes(first: pd.DataFrame, stages: list[str]) -> np.ndarray:
    """``votes[a, b]``: deals that first entered stage ``a`` before stage ``b``.

    A deals x stages matrix of first-entry ranks (absent = never entered) compared stage by
    stage: no pairwise join of every deal's stages with each other.
    """
    deal = pd.factorize(first[OPPORTUNITY_ID])[0]
    stage = pd.Categorical(first[STAGE], categories=stages).codes
    never = np.iinfo(np.int64).max
    rank = np.full((int(deal.max()) + 1 if deal.size else 0, len(stages)), never, np.int64)
    rank[deal, stage] = first["_rank"].to_numpy(dtype=np.int64)
    entered = rank != never
    votes = np.zeros((len(stages), len(stages)), dtype=np.int64)
    for a in range(len(stages)):  # stages, a handful
        votes[a] = ((rank[:, [a]] < rank) & entered[:, [a]] & entered).sum(axis=0)
    return votes


def _ordered_stages(history: pd.DataFrame) -> list[str]:
    """Stages ranked by how often they come before each other stage (Copeland score)."""
    if history.empty:
        return []
    first = _first_entries(history)
    stages = sorted(first[STAGE].unique())
    votes = _precedence_votes(first, stages)
    beats = np.sign(votes - votes.T).sum(axis=1)
    mean_rank = first.groupby(STAGE)["_rank"].mean().reindex(stages).to_numpy()
    sink = np.isin(stages, list(_sinks(history)))
    # Sinks last (a Lost reached from the first stage only has few votes); then most
    # precedences first, ties by average position, then by name (stages are sorted).
    order = np.lexsort((np.arange(len(stages)), mean_rank, -beats, sink))
    return [stages[i] for i in order]


def stage_order(tables: Tables, as_of: pd.Timestamp | str) -> list[str]:
    """Stages in funnel order, inferred from stage changes entered before ``as_of``."""
    as_of = pd.Timestamp(as_of)
    opps = _opportunities(tables)
    ids = opps.loc[opps[CREATED_AT] < as_of, OPPORTUNITY_ID]
    return _ordered_stages(_history_before(tables, as_of, ids))


def _stage_runs(history: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """One row per uninterrupted stay in a stage: deal, stage, entered_at, stage_index."""
    previous = history.groupby(OPPORTUNITY_ID, sort=False)[STAGE].shift()
    runs = history.loc[history[STAGE].ne(previous), [OPPORTUNITY_ID, STAGE, ENTERED_AT]]
    index = {stage: float(i) for i, stage in enumerate(order)}
    return runs.assign(**{STAGE_INDEX: runs[STAGE].map(index).astype(float)})


def _run_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per deal: stage at T, when it was entered, stage changes and regressions so far."""
    by_deal = runs.groupby(OPPORTUNITY_ID, sort=False)
    went_back = runs[STAGE_INDEX] < by_deal[STAGE_INDEX].shift()
    last = by_deal[[STAGE, ENTERED_AT]].last()
    return last.rename(columns={ENTERED_AT: ENTERED_STAGE_AT}).assign(**{
        STAGE_CHANGES: by_deal.size() - 1.0,
        REGRESSIONS: went_back.groupby(runs[OPPORTUNITY_ID], sort=False).sum().astype(float),
    })


def _recorded_closes(history: pd.DataFrame) -> pd.DataFrame:
    """Per deal: last expected close recorded before T, number of slips, days slipped."""
    dates = pd.to_datetime(history[CLOSE_DATE], errors="coerce", format="ISO8601")
    recorded = pd.DataFrame({OPPORTUNITY_ID: history[OPPORTUNITY_ID], CLOSE_DATE: dates})
    recorded = recorded.dropna(subset=[CLOSE_DATE])
    moved = _days(recorded.groupby(OPPORTUNITY_ID, sort=False)[CLOSE_DATE].diff())
    later = moved.where(moved > 0, 0.0)
    by_deal = recorded.assign(_slip=(later > 0).astype(float), _days=later)
    grouped = by_deal.groupby(OPPORTUNITY_ID, sort=False)
    return pd.DataFrame({
        CLOSE_DATE: grouped[CLOSE_DATE].last(),
        CLOSE_SLIPS: grouped["_slip"].sum(),
        DAYS_SLIPPED: grouped["_days"].sum(),
    })


# --- state at T ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Funnel:
    """Everything reconstructed as of one date."""

    as_of: pd.Timestamp
    state: pd.DataFrame  # one row per deal created before as_of
    runs: pd.DataFrame  # stage visits entered before as_of
    order: list[str]


def _status_at(opps: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """won/lost for deals closed before ``as_of``, open for the rest."""
    closed = (opps[STATUS] != STATUS_OPEN) & (opps[CLOSE_DATE] < as_of)
    return opps[STATUS].where(closed, STATUS_OPEN)


def open_at_any(opps: pd.DataFrame, dates: Sequence[pd.Timestamp]) -> pd.Series:
    """Whether each deal was open at one of ``dates`` at least (created before it and not
    closed before it): the deals whose stage history a state at those dates reads."""
    created = opps[CREATED_AT]
    open_at = pd.Series(False, index=opps.index)
    for date in dates:
        when = pd.Timestamp(date)
        open_at |= (created < when) & (_status_at(opps, when) == STATUS_OPEN)
    return open_at


def _snapshot_describes(opps: pd.DataFrame, status_at: pd.Series, snapshot_ok: bool
                        ) -> pd.Series:
    """Where the opportunities row itself tells the state at T (see module docstring)."""
    closed_before = status_at != STATUS_OPEN
    still_open = (opps[STATUS] == STATUS_OPEN) & snapshot_ok
    return closed_before | still_open


def _close_at(opps: pd.DataFrame, closes: pd.DataFrame | None, status_at: pd.Series,
              describes: pd.Series) -> pd.Series:
    """Actual close of closed deals; expected close at T of open ones (NaT when unknown).

    The latest expectation known before T wins: one recorded in the history, else the snapshot
    where it describes T, else the expectation recorded at creation (``original_close_date``).
    """
    expected = opps[CLOSE_DATE].where(describes)
    if closes is not None:
        recorded = opps[OPPORTUNITY_ID].map(closes[CLOSE_DATE])
        expected = recorded.where(recorded.notna(), expected)
    if ORIGINAL_CLOSE_DATE in opps.columns:
        original = pd.to_datetime(opps[ORIGINAL_CLOSE_DATE], errors="coerce", format="ISO8601")
        expected = expected.where(expected.notna(), original)
    return opps[CLOSE_DATE].where(status_at != STATUS_OPEN, expected)


def _with_history(state: pd.DataFrame, stats: pd.DataFrame, describes: pd.Series,
                  opps: pd.DataFrame, order: dict[str, float]) -> pd.DataFrame:
    """Stage and history counts from the deal's history, else from the snapshot where valid."""
    ids = state[OPPORTUNITY_ID]
    from_history = ids.isin(stats.index)
    for column in (STAGE, ENTERED_STAGE_AT, STAGE_CHANGES, REGRESSIONS):
        state[column] = ids.map(stats[column])
    state[STAGE] = state[STAGE].where(from_history, opps[STAGE].where(describes))
    state[STAGE_INDEX] = state[STAGE].map(order).astype(float)
    state[HISTORY_EXACT] = from_history
    return state


def _slips(state: pd.DataFrame, closes: pd.DataFrame | None) -> pd.DataFrame:
    """Close-date slips and days slipped before T per deal (NaN without recorded closes)."""
    for column in (CLOSE_SLIPS, DAYS_SLIPPED):
        values = closes[column] if closes is not None else pd.Series(dtype=float)
        state[column] = state[OPPORTUNITY_ID].map(values).astype(float)
    return state


def _funnel_at(tables: Tables, as_of: pd.Timestamp | str,
               snapshot: pd.Timestamp | None = None) -> _Funnel:
    """Reconstruct every deal created before ``as_of`` as it stood then (``snapshot``: the
    date of the whole opportunities table when ``tables`` hold only some deals)."""
    as_of = pd.Timestamp(as_of)
    everything = _opportunities(tables)
    opps = everything[everything[CREATED_AT] < as_of].reset_index(drop=True)
    history = _history_before(tables, as_of, opps[OPPORTUNITY_ID])
    order = _ordered_stages(history)
    runs = _stage_runs(history, order)
    closes = _recorded_closes(history) if CLOSE_DATE in history.columns else None
    status_at = _status_at(opps, as_of)
    described = snapshot_date(tables) if snapshot is None else pd.Timestamp(snapshot)
    describes = _snapshot_describes(opps, status_at, as_of >= described)
    keep = [c for c in (OPPORTUNITY_ID, OWNER, CUSTOMER_ID, AMOUNT, CREATED_AT,
                        PRODUCT) if c in opps.columns]
    state = opps[keep].assign(**{STATUS: status_at,
                                 CLOSE_DATE: _close_at(opps, closes, status_at, describes)})
    positions = {stage: float(i) for i, stage in enumerate(order)}
    state = _with_history(state, _run_stats(runs), describes, opps, positions)
    state[DAYS_IN_STAGE] = _days(as_of - state[ENTERED_STAGE_AT])
    return _Funnel(as_of, _slips(state, closes), runs, order)


def opportunity_state(tables: Tables, as_of: pd.Timestamp | str,
                      snapshot: pd.Timestamp | None = None) -> pd.DataFrame:
    """Every deal created before ``as_of`` as it stood then.

    ``snapshot`` is the date the opportunities table describes (:func:`snapshot_date`, the
    default); give it when ``tables`` hold only some of the deals (a bucket of them).

    Columns: ``opportunity_id, owner, customer_id, amount, created_at, [product], status`` (at T),
    ``close_date`` (actual if closed before T, else expected at T), ``stage`` (at T),
    ``entered_stage_at``, ``stage_changes``, ``regressions``, ``stage_index`` (position in
    :func:`stage_order`), ``history_exact``, ``days_in_stage``, ``close_slips``,
    ``days_slipped``. Unknown is NaN.
    """
    return _funnel_at(tables, as_of, snapshot).state


# --- per-deal features -----------------------------------------------------------------------


def _shrunk_win_rates(won: pd.Series, keys: pd.Series, prior: float) -> pd.Series:
    """Win rate per key, pulled towards ``prior`` by :data:`PRIOR_STRENGTH` pseudo-deals."""
    grouped = won.astype(float).groupby(keys).agg(["sum", "count"])
    return (grouped["sum"] + PRIOR_STRENGTH * prior) / (grouped["count"] + PRIOR_STRENGTH)


def _win_rate_of(closed: pd.DataFrame, keys_closed: pd.Series, keys_open: pd.Series) -> pd.Series:
    """Each open deal's key's shrunk win rate on deals closed before T (prior for unseen keys)."""
    won = closed[STATUS] == STATUS_WON
    # Laplace on the company rate too, so a first won or lost deal does not make it 1 or 0.
    prior = (won.sum() + 1.0) / (len(won) + 2.0)
    rates = _shrunk_win_rates(won, keys_closed, prior)
    return keys_open.map(rates).astype(float).fillna(prior)


def _owner_median_ratio(state: pd.DataFrame, open_deals: pd.DataFrame) -> pd.Series:
    """Deal amount / its owner's median won deal (company median when the owner has none)."""
    won = state[state[STATUS] == STATUS_WON]
    medians = won.groupby(OWNER)[AMOUNT].median()
    median = open_deals[OWNER].map(medians).astype(float).fillna(won[AMOUNT].median())
    return open_deals[AMOUNT] / median.where(median > 0)


def _segments(tables: Tables, deals: pd.DataFrame) -> pd.Series:
    """The segment of each deal's customer."""
    return customer_column(tables, SEGMENT, deals.get(CUSTOMER_ID, pd.Series(
        np.nan, index=deals.index, dtype=object)))


def _segment_win_rate(tables: Tables, closed: pd.DataFrame, open_deals: pd.DataFrame
                      ) -> pd.Series:
    """Shrunk win rate of each open deal's customer segment (NaN without segments)."""
    customers = tables.get(CUSTOMERS)
    if customers is None or SEGMENT not in customers.columns:
        return pd.Series(np.nan, index=open_deals.index)
    return _win_rate_of(closed, _segments(tables, closed), _segments(tables, open_deals))


def _overdue(close: pd.Series, as_of: pd.Timestamp) -> pd.Series:
    """1 where the expected close is before ``as_of``, 0 where not, NaN where unknown."""
    return (close < as_of).astype(float).where(close.notna())


def opportunity_features(tables: Tables, as_of: pd.Timestamp | str,
                         snapshot: pd.Timestamp | None = None) -> pd.DataFrame:
    """One row per deal open at ``as_of``: ids, owner, amount, expected ``close_date``, funnel_*.

    Also ``product`` (of the deal) and ``segment`` (of its customer) when the tables have them.
    ``snapshot``: as in :func:`opportunity_state` (a bucket of the deals).
    """
    when = pd.Timestamp(as_of)
    state = opportunity_state(tables, when, snapshot)
    deals = state[state[STATUS] == STATUS_OPEN]
    closed = state[state[STATUS] != STATUS_OPEN]
    base = [c for c in (OPPORTUNITY_ID, OWNER, CUSTOMER_ID, AMOUNT, CLOSE_DATE,
                        PRODUCT) if c in deals.columns]
    features = deals[base].assign(**{
        F_STAGE: deals[STAGE],
        F_STAGE_INDEX: deals[STAGE_INDEX],
        F_AGE: _days(when - deals[CREATED_AT]),
        F_DAYS_IN_STAGE: deals[DAYS_IN_STAGE],
        F_STAGE_CHANGES: deals[STAGE_CHANGES],
        F_REGRESSIONS: deals[REGRESSIONS],
        F_CLOSE_SLIPS: deals[CLOSE_SLIPS],
        F_DAYS_SLIPPED: deals[DAYS_SLIPPED],
        F_OVERDUE: _overdue(deals[CLOSE_DATE], when),
        F_DAYS_TO_CLOSE: _days(deals[CLOSE_DATE] - when),
        F_AMOUNT_VS_OWNER: _owner_median_ratio(state, deals),
        F_OWNER_WIN_RATE: _win_rate_of(closed, closed[OWNER], deals[OWNER]),
        F_SEGMENT_WIN_RATE: _segment_win_rate(tables, closed, deals),
        F_HISTORY_EXACT: deals[HISTORY_EXACT].astype(bool),
    })
    features.insert(1, AS_OF, when)
    if tables.has(CUSTOMERS) and SEGMENT in tables[CUSTOMERS].columns:
        features[SEGMENT] = _segments(tables, deals)
    return features.reset_index(drop=True)


# --- nodes of deals -----------------------------------------------------------------------------


def _deal_attributes(tables: Tables) -> pd.DataFrame:
    """Per deal id: its owner's ``rep, team, region``, its ``product`` and customer ``segment``."""
    opps = _opportunities(tables)
    if not tables.has(OPPORTUNITIES):
        return pd.DataFrame(columns=[*NODE_COLUMNS, SEGMENT], index=pd.Index([], dtype=object))
    attrs = opportunity_nodes(tables).set_index(OPPORTUNITY_ID)
    if PRODUCT in opps.columns:
        attrs[PRODUCT] = opps[PRODUCT].to_numpy()
    customers = opps.get(CUSTOMER_ID, pd.Series(np.nan, index=opps.index, dtype=object))
    attrs[SEGMENT] = customer_column(tables, SEGMENT, customers).to_numpy()
    return attrs


def _with_nodes(frame: pd.DataFrame, attributes: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (keyed by ``opportunity_id``) with the node columns of its deals."""
    new = attributes[[c for c in attributes.columns if c not in frame.columns]]
    return frame.join(new, on=OPPORTUNITY_ID)


def _keys(frame: pd.DataFrame, level: str) -> pd.Series:
    """The node key of each row at ``level`` (``all`` for company, unassigned when missing)."""
    if level == LEVEL_COMPANY:
        return pd.Series(COMPANY_KEY, index=frame.index, dtype=object)
    if level not in frame.columns:
        return pd.Series(UNASSIGNED, index=frame.index, dtype=object)
    keys = frame[level].astype(object)
    return keys.where(keys.notna(), UNASSIGNED)


# --- stage conversion and velocity --------------------------------------------------------------


def _terminal_stages(runs: pd.DataFrame, state: pd.DataFrame) -> set[str]:
    """Stages no deal ever left and no open deal is in (Won, Lost...): they have no exits."""
    open_now = state.loc[state[STATUS] == STATUS_OPEN, STAGE]
    return _sinks(runs) - set(open_now.dropna())


def _stage_exits(funnel: _Funnel) -> pd.DataFrame:
    """Each stage visit that ended before T: when, whether it went forward, how many days."""
    runs, state = funnel.runs, funnel.state.set_index(OPPORTUNITY_ID)
    terminal = _terminal_stages(runs, funnel.state)
    following = runs.groupby(OPPORTUNITY_ID, sort=False)[
        [ENTERED_AT, STAGE, STAGE_INDEX]].shift(-1)
    status = runs[OPPORTUNITY_ID].map(state[STATUS])
    moved = following[ENTERED_AT].notna()
    to_terminal = following[STAGE].isin(terminal)
    # The last visit of a deal closed before T ends at its close; entering Won/Lost is decided by
    # the outcome, not by where the inferred order put those stages.
    closed_at = runs[OPPORTUNITY_ID].map(state[CLOSE_DATE]).where(status != STATUS_OPEN)
    exit_at = following[ENTERED_AT].where(moved, closed_at)
    ahead = (following[STAGE_INDEX] > runs[STAGE_INDEX]) & ~to_terminal
    forward = ahead | ((status == STATUS_WON) & (to_terminal | ~moved))
    exits = runs.assign(**{_EXIT_AT: exit_at, _FORWARD: forward.astype(float),
                           "_days": _days(exit_at - runs[ENTERED_AT])})
    return exits[exits[_EXIT_AT].notna() & ~exits[STAGE].isin(terminal)]


def _windowed(exits: pd.DataFrame, as_of: pd.Timestamp, trailing_days: int, baseline_days: int
              ) -> pd.DataFrame:
    """Exits of the last ``trailing_days`` (recent) or the ``baseline_days`` before, with
    per-window counts (``_n_*``), forward counts (``_f_*``) and recent durations."""
    recent_from = as_of - pd.Timedelta(days=trailing_days)
    baseline_from = recent_from - pd.Timedelta(days=baseline_days)
    recent = (exits[_EXIT_AT] >= recent_from).astype(float)
    baseline = ((exits[_EXIT_AT] >= baseline_from) & (recent == 0)).astype(float)
    return exits.assign(**{
        "_n_recent": recent, "_f_recent": recent * exits[_FORWARD],
        "_n_baseline": baseline, "_f_baseline": baseline * exits[_FORWARD],
        "_days_recent": exits["_days"].where(recent > 0),
    })[(recent + baseline) > 0]


def _funnel_exits(funnel: _Funnel, attributes: pd.DataFrame, windows: tuple[int, int]
                  ) -> pd.DataFrame:
    """Stage exits in the recent or baseline window, with the nodes of their deals."""
    exits = _windowed(_stage_exits(funnel), funnel.as_of, *windows)
    return _with_nodes(exits, attributes)


_COUNTED = {"_n_recent": "sum", "_f_recent": "sum", "_n_baseline": "sum",
            "_f_baseline": "sum", "_days_recent": "median"}


def _rates(counts: pd.DataFrame) -> pd.DataFrame:
    """Exits and forward share per window from summed ``_n_*``/``_f_*`` counts."""
    return pd.DataFrame({
        "exits": counts["_n_recent"].astype(int),
        "conversion": counts["_f_recent"] / counts["_n_recent"].where(counts["_n_recent"] > 0),
        "exits_baseline": counts["_n_baseline"].astype(int),
        "conversion_baseline": counts["_f_baseline"] / counts["_n_baseline"].where(
            counts["_n_baseline"] > 0),
    }, index=counts.index)


def _conversion_table(exits: pd.DataFrame, level: str) -> pd.DataFrame:
    """Per (key, stage): exits and forward share in both windows, median days (recent)."""
    keys = _keys(exits, level).rename(KEY)
    counts = exits.groupby([keys, exits[STAGE]]).agg(_COUNTED)
    table = _rates(counts).assign(median_days_in_stage=counts["_days_recent"])
    return table.reset_index().assign(**{LEVEL: level})


_CONVERSION_COLUMNS = [LEVEL, KEY, STAGE, STAGE_INDEX, "exits", "conversion",
                       "exits_baseline", "conversion_baseline", "median_days_in_stage"]


def stage_conversion(tables: Tables, as_of: pd.Timestamp | str,
                     levels: Sequence[str] | None = None, trailing_days: int = 180,
                     baseline_days: int = 365) -> pd.DataFrame:
    """Stage-to-stage conversion and velocity per node and stage.

    A visit to a stage converts when the deal next enters a later stage or is won; it fails when
    the deal moves back or is lost. Visits count in the window where they ended: the last
    ``trailing_days`` before ``as_of`` (``exits``, ``conversion``, ``median_days_in_stage``) and
    the ``baseline_days`` before that (``*_baseline``). Empty without ``stage_history``.

    Returns:
        ``level, key, stage, stage_index, exits, conversion, exits_baseline,
        conversion_baseline, median_days_in_stage``.
    """
    funnel = _funnel_at(tables, as_of)
    exits = _funnel_exits(funnel, _deal_attributes(tables), (trailing_days, baseline_days))
    chosen = list(HIERARCHY_LEVELS if levels is None else levels)
    table = pd.concat([_conversion_table(exits, lv) for lv in chosen], ignore_index=True)
    index = {stage: float(i) for i, stage in enumerate(funnel.order)}
    table[STAGE_INDEX] = table[STAGE].map(index).astype(float)
    return table.reindex(columns=_CONVERSION_COLUMNS)


# --- node metrics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """What the node metrics are computed over."""

    start: pd.Timestamp
    end: pd.Timestamp
    as_of: pd.Timestamp
    stall_days: int
    windows: tuple[int, int]  # trailing days, baseline days


def _open_measures(deals: pd.DataFrame, scope: _Scope) -> pd.DataFrame:
    """Per deal open at T: what the pipeline metrics add up (NaN where the data cannot tell)."""
    close, in_stage = deals[CLOSE_DATE], deals[DAYS_IN_STAGE]
    in_period = ((close >= scope.start) & (close < scope.end)).astype(float).where(close.notna())
    stalled = (in_stage >= scope.stall_days).astype(float).where(in_stage.notna())
    amount = deals[AMOUNT]
    return pd.DataFrame({
        "open_deals": 1.0,
        "open_pipeline": amount,
        "deals_in_period": in_period,
        "pipeline_in_period": amount * in_period,
        "overdue_deals": _overdue(close, scope.as_of),
        "stalled_deals": stalled,
        "stalled_pipeline": amount * stalled,
        "slipped_deals": (deals[CLOSE_SLIPS] > 0).astype(float).where(deals[CLOSE_SLIPS].notna()),
    }, index=deals.index)


def _closed_measures(deals: pd.DataFrame, scope: _Scope) -> pd.DataFrame:
    """Per deal closed before T: won amount in the period, won (1) or lost (0) per window."""
    close, won = deals[CLOSE_DATE], (deals[STATUS] == STATUS_WON).astype(float)
    recent_from = scope.as_of - pd.Timedelta(days=scope.windows[0])
    baseline_from = recent_from - pd.Timedelta(days=scope.windows[1])
    in_period = (close >= scope.start) & (close < scope.end)
    return pd.DataFrame({
        "won_to_date": (deals[AMOUNT] * won).where(in_period, 0.0),
        "win_rate": won.where(close >= recent_from),
        "win_rate_baseline": won.where((close >= baseline_from) & (close < recent_from)),
    }, index=deals.index)


_RATES = ("win_rate", "win_rate_baseline")


def _deal_measures(deals: pd.DataFrame, scope: _Scope) -> pd.DataFrame:
    """Per deal created before T, every quantity a node metric sums or averages."""
    open_ = deals[STATUS] == STATUS_OPEN
    measures = pd.concat([_open_measures(deals[open_], scope),
                          _closed_measures(deals[~open_], scope)])
    return measures.reindex(deals.index).fillna({"open_deals": 0.0, "open_pipeline": 0.0,
                                                 "won_to_date": 0.0})


def _aggregated(measures: pd.DataFrame, keys: pd.Series) -> pd.DataFrame:
    """Sums (NaN when every value is unknown) and mean rates per key."""
    sums = measures.drop(columns=list(_RATES)).groupby(keys).sum(min_count=1)
    return sums.join(measures[list(_RATES)].groupby(keys).mean())


def _largest_drop(table: pd.DataFrame) -> pd.DataFrame:
    """Per key: the stage whose conversion fell most from baseline, among well-observed stages."""
    enough = (table["exits"] >= MIN_EXITS) & (table["exits_baseline"] >= MIN_EXITS)
    rows = table.assign(_drop=table["conversion_baseline"] - table["conversion"])[enough]
    worst = rows.sort_values("_drop", ascending=False, kind="stable").drop_duplicates(KEY)
    worst = worst.set_index(KEY)[["_drop", STAGE]]
    return worst.rename(columns={"_drop": "conversion_drop", STAGE: "conversion_drop_stage"})


def _conversion_metrics(exits: pd.DataFrame, level: str) -> pd.DataFrame:
    """Per key: forward share of all stage exits (both windows), the worst drop, velocity."""
    table = _conversion_table(exits, level)
    counts = table.assign(
        _n_recent=table["exits"], _f_recent=table["exits"] * table["conversion"].fillna(0.0),
        _n_baseline=table["exits_baseline"],
        _f_baseline=table["exits_baseline"] * table["conversion_baseline"].fillna(0.0),
    ).groupby(KEY)[["_n_recent", "_f_recent", "_n_baseline", "_f_baseline"]].sum()
    velocity = exits["_days_recent"].groupby(_keys(exits, level)).median()
    return pd.concat([
        _rates(counts)[["conversion", "conversion_baseline"]],
        _largest_drop(table),
        velocity.rename("velocity_days"),
    ], axis=1)


def _node_keys(tables: Tables, level: str, targets: pd.DataFrame | None) -> list[str]:
    """Nodes listed even without activity: the hierarchy's, and those with a target."""
    keys: set[str] = set()
    if level == LEVEL_COMPANY:
        keys.add(COMPANY_KEY)
    elif level in (LEVEL_REP, LEVEL_TEAM) or (level == LEVEL_REGION and tables.has(ORG)):
        keys |= set(rep_hierarchy(tables)[level].dropna())
    if targets is not None:
        keys |= set(targets.loc[targets[LEVEL] == level, KEY].dropna())
    return sorted(keys)


def _period_targets(tables: Tables, targets: pd.DataFrame | None, period: str
                    ) -> pd.DataFrame | None:
    """The targets of ``period`` (default: the data's ``targets`` table)."""
    chosen = targets if targets is not None else tables.targets()
    if chosen is None:
        return None
    return chosen[chosen[PERIOD].astype(str) == str(period)]


def _period_revenue(tables: Tables, bounds: tuple[pd.Timestamp, ...], levels: Sequence[str]
                    ) -> pd.DataFrame:
    """Revenue events of the period dated before T."""
    start, end, as_of = bounds
    extra = [lv for lv in levels if lv not in HIERARCHY_LEVELS]
    events = revenue_events(tables, as_of=as_of, columns=extra, since=start)
    return events[events[DS] < end]


_COUNTS = ("open_deals", "open_pipeline", "won_to_date", "revenue_to_date")
# Counts over open deals that are NaN where deals are open but their history cannot tell.
_OPEN_COUNTS = ("deals_in_period", "pipeline_in_period", "overdue_deals", "stalled_deals",
                "stalled_pipeline", "slipped_deals")


def _level_metrics(level: str, measures: pd.DataFrame, deals: pd.DataFrame,
                   exits: pd.DataFrame, revenue: pd.DataFrame) -> pd.DataFrame:
    """One row per key of ``level`` with every node metric except targets."""
    frame = pd.concat([
        _aggregated(measures, _keys(deals, level)),
        revenue[AMOUNT].groupby(_keys(revenue, level)).sum().rename("revenue_to_date"),
        _conversion_metrics(exits, level),
    ], axis=1)
    return frame.rename_axis(KEY).reset_index().assign(**{LEVEL: level})


def _listed(frame: pd.DataFrame, level: str, keys: list[str]) -> pd.DataFrame:
    """``frame`` with a row for each of ``keys`` it lacks; counts of idle nodes are zero."""
    missing = sorted(set(keys) - set(frame[KEY]))
    idle_nodes = pd.DataFrame({LEVEL: [level] * len(missing), KEY: missing})
    frame = pd.concat([frame, idle_nodes], ignore_index=True)
    frame[list(_COUNTS)] = frame[list(_COUNTS)].fillna(0.0)
    idle = frame["open_deals"] == 0
    frame.loc[idle, list(_OPEN_COUNTS)] = frame.loc[idle, list(_OPEN_COUNTS)].fillna(0.0)
    return frame.sort_values(KEY, kind="stable")


def _with_targets(nodes: pd.DataFrame, targets: pd.DataFrame | None) -> pd.DataFrame:
    """Add ``target``, ``remaining_target`` (after revenue to date) and ``coverage``."""
    if targets is None:
        amounts = pd.Series(np.nan, index=nodes.index)
    else:
        lookup = targets.set_index([LEVEL, KEY])[AMOUNT]
        amounts = pd.Series(lookup.reindex(pd.MultiIndex.from_frame(nodes[[LEVEL, KEY]]))
                            .to_numpy(), index=nodes.index)
    remaining = (amounts - nodes["revenue_to_date"]).clip(lower=0.0)
    # Nothing left to cover (target met) or no target: coverage is undefined, not infinite.
    coverage = nodes["pipeline_in_period"] / remaining.where(remaining > 0)
    return nodes.assign(target=amounts, remaining_target=remaining, coverage=coverage)


def funnel_node_metrics(tables: Tables, as_of: pd.Timestamp | str, period: str,
                        targets: pd.DataFrame | None = None, stall_days: int = 30,
                        trailing_days: int = 180, *, baseline_days: int = 365,
                        levels: Sequence[str] | None = None) -> pd.DataFrame:
    """Funnel health per node (company, region, team, rep) for ``period`` as of ``as_of``.

    Args:
        tables: validated tables.
        as_of: the date T; everything uses rows dated before it.
        period: ``2017``, ``2017Q3`` or ``2017-08``.
        targets: ``period, level, key, amount`` rows (default: the data's ``targets`` table).
        stall_days: an open deal with no stage change for this many days is stalled.
        trailing_days: window of the recent win rate, conversion and velocity.
        baseline_days: the window before it, the baseline a drop is measured against.
        levels: node levels (default the hierarchy); categorical columns such as ``product``
            or ``segment`` work too.

    Returns:
        ``period, level, key, as_of`` and :data:`NODE_METRICS`, one row per node.
    """
    funnel = _funnel_at(tables, as_of)
    start, end = period_bounds(period)
    scope = _Scope(start, end, funnel.as_of, stall_days, (trailing_days, baseline_days))
    chosen = list(HIERARCHY_LEVELS if levels is None else levels)
    attributes = _deal_attributes(tables)
    deals = _with_nodes(funnel.state, attributes)
    exits = _funnel_exits(funnel, attributes, scope.windows)
    revenue = _period_revenue(tables, (start, end, funnel.as_of), chosen)
    goals = _period_targets(tables, targets, period)
    measures = _deal_measures(deals, scope)
    parts = [_listed(_level_metrics(lv, measures, deals, exits, revenue), lv,
                     _node_keys(tables, lv, goals)) for lv in chosen]
    nodes = _with_targets(pd.concat(parts, ignore_index=True), goals)
    nodes[PERIOD] = str(period)
    nodes[AS_OF] = funnel.as_of
    return nodes[[PERIOD, LEVEL, KEY, AS_OF, *NODE_METRICS]]
