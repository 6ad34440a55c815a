"""The funnel report of a period: per node and stage, conversion against the trailing rate,
velocity, the open deals and their aging, and the bottleneck stage of each node.

Built on the funnel of :mod:`features.funnel` (the deals and stage visits reconstructed as of a
date, the inferred stage order, what is exact without ``stage_history``), reconstructed once as
of the report date ``min(as_of, end of the period)``: a finished period is seen as it stood at
its end, a running one as of ``as_of``; only deals created and stage changes entered before that
date count, so appending later rows changes nothing.

Per node (company, region, team, rep, and ``product`` or ``segment`` when asked) and per stage,
in funnel order:

- ``conversion``: of the visits to the stage that ended in the period (up to the report date),
  the share that moved forward or were won (the rest moved back or were lost); ``exits`` counts
  them.
- ``trailing_conversion``: the same over the :data:`TRAILING_PERIODS` periods before it, the
  node's own rate shrunk towards the company's by :data:`~features.funnel.PRIOR_STRENGTH`
  pseudo-exits (a rep with 3 exits gets mostly the company's rate); ``trailing_exits`` counts
  the node's own.
- ``median_days``: median days in the stage of the visits that ended in the period (velocity).
- ``open_deals``, ``open_amount``: deals open at the report date in the stage;
  ``open_median_age_days``: their median days in the stage; ``open_aged_share``: the share
  that has been in the stage longer than ``stage_p90_days``, the company's 90th percentile of
  completed visits to that stage (period and trailing window).
- ``shortfall``: how far the period's conversion is below the trailing rate (points; the
  period's rate shrunk towards the trailing one by the same pseudo-exits, so a stage seen
  twice does not fall 50 points); ``shortfall_z``: the raw drop (trailing minus period rate) in
  binomial standard errors of the trailing rate over the period's exits,
  ``sqrt(p (1 - p) / exits)``; ``bottleneck_score`` = positive shortfall x open amount (the
  value stuck behind a worse conversion).
- ``bottleneck`` marks, per node, the stage with the largest score among those whose shortfall
  is **material** (none when no stage's is): at least :data:`MIN_EXITS` exits in the period, a
  drop of at least :data:`MIN_RELATIVE_DROP` of the trailing rate, and beyond noise, at least
  :data:`MATERIAL_Z` standard errors (a rate that did not change falls that far by chance about
  one time in 40). Two exits fewer than usual out of fifty is not a bottleneck.
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
    COMPANY_KEY,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    OPPORTUNITIES,
    PERIOD,
    PRODUCT,
    SEGMENT,
    STAGE,
    STATUS,
    STATUS_OPEN,
)
from features.funnel import (
    CLOSE_HISTORY_MISSING_NOTE,
    DAYS_IN_STAGE,
    MIN_EXITS,
    PRIOR_STRENGTH,
    STAGE_INDEX,
    _conversion_table,
    _deal_attributes,
    _Funnel,
    _funnel_at,
    _funnel_exits,
    _keys,
    _with_nodes,
    funnel_notes,
)

__all__ = [
    "FUNNEL_COLUMNS",
    "MATERIAL_Z",
    "MIN_EXITS",
    "MIN_RELATIVE_DROP",
    "TRAILING_PERIODS",
    "FunnelReport",
    "funnel_levels",
    "funnel_report",
    "material_shortfall",
    "report_date",
    "trailing_start",
]

# The trailing rate is measured over this many periods before the period (4 quarters for a
# quarter, 4 months for a month, 4 years for a year).
TRAILING_PERIODS = 4
# The quantile of a stage's completed visit durations past which an open deal counts as aged.
AGED_QUANTILE = 0.9
# A shortfall is material (its stage can be a bottleneck) with at least MIN_EXITS exits in the
# period, a drop of at least MIN_RELATIVE_DROP of the trailing rate, and a drop of at least
# MATERIAL_Z binomial standard errors (MIN_EXITS: the funnel's own, a conversion counts towards
# a drop only with that many exits).
MIN_RELATIVE_DROP = 0.10
MATERIAL_Z = 2.0

EXITS, CONVERSION = "exits", "conversion"
TRAILING_EXITS, TRAILING_CONVERSION = "trailing_exits", "trailing_conversion"
MEDIAN_DAYS = "median_days"
OPEN_DEALS, OPEN_AMOUNT = "open_deals", "open_amount"
OPEN_MEDIAN_AGE, OPEN_AGED_SHARE, STAGE_P90 = ("open_median_age_days", "open_aged_share",
                                               "stage_p90_days")
SHORTFALL, SHORTFALL_Z = "shortfall", "shortfall_z"
SCORE, BOTTLENECK = "bottleneck_score", "bottleneck"

FUNNEL_COLUMNS = [
    PERIOD, AS_OF, LEVEL, KEY, STAGE, STAGE_INDEX, EXITS, CONVERSION, TRAILING_EXITS,
    TRAILING_CONVERSION, MEDIAN_DAYS, OPEN_DEALS, OPEN_AMOUNT, OPEN_MEDIAN_AGE, OPEN_AGED_SHARE,
    STAGE_P90, SHORTFALL, SHORTFALL_Z, SCORE, BOTTLENECK,
]

# Exit counts of the windows, as funnel.py's windowed exits name them.
_RECENT, _BASELINE = "_n_recent", "_n_baseline"


@dataclass(frozen=True)
class FunnelReport:
    """The report frame (:data:`FUNNEL_COLUMNS`), the date it describes and what it cannot know.

    Attributes:
        frame: one row per node and stage, stages in funnel order.
        as_of: the report date, ``min(as_of, end of the period)``.
        notes: sentences for the user (missing stage history, deals of unknown stage).
    """

    frame: pd.DataFrame
    as_of: pd.Timestamp
    notes: list[str]


def report_date(period: str, as_of: pd.Timestamp) -> pd.Timestamp:
    """The date the report describes: ``as_of``, or the period's end when it is over."""
    _, end = period_bounds(period)
    return min(pd.Timestamp(as_of), pd.Timestamp(end)).as_unit("ns")


def trailing_start(period: str) -> pd.Timestamp:
    """The first day of the :data:`TRAILING_PERIODS` periods before ``period``."""
    start, end = period_bounds(period)
    months = round((end - start).days / 30.4)
    return start - pd.DateOffset(months=TRAILING_PERIODS * months)


def funnel_levels(tables: Tables) -> list[str]:
    """The levels a funnel can be cut by: the hierarchy, ``product`` of the deals and the
    customers' ``segment`` when the data has them."""
    extra = []
    opps = tables.get(OPPORTUNITIES)
    if opps is not None and PRODUCT in opps.columns and opps[PRODUCT].notna().any():
        extra.append(PRODUCT)
    if _deal_attributes(tables).get(SEGMENT, pd.Series(dtype=object)).notna().any():
        extra.append(SEGMENT)
    return [*HIERARCHY_LEVELS, *extra]


def _conversions(exits: pd.DataFrame, levels: Sequence[str]) -> pd.DataFrame:
    """Per (level, key, stage): period and trailing exits and rates, the trailing rate shrunk
    towards the company's, median days in the stage."""
    table = pd.concat([_conversion_table(exits, lv) for lv in levels], ignore_index=True)
    company = _conversion_table(exits, LEVEL_COMPANY).set_index(STAGE)["conversion_baseline"]
    prior = table[STAGE].map(company).astype(float)
    forward = table["exits_baseline"] * table["conversion_baseline"].fillna(0.0)
    n = table["exits_baseline"].astype(float)
    shrunk = (forward + PRIOR_STRENGTH * prior) / (n + PRIOR_STRENGTH)
    own = forward / n.where(n > 0)
    trailing = shrunk.where(prior.notna(), own)
    return pd.DataFrame({
        LEVEL: table[LEVEL], KEY: table[KEY].astype(object), STAGE: table[STAGE],
        EXITS: table["exits"].astype(int), CONVERSION: table["conversion"].astype(float),
        TRAILING_EXITS: table["exits_baseline"].astype(int),
        TRAILING_CONVERSION: trailing.astype(float),
        MEDIAN_DAYS: table["median_days_in_stage"].astype(float),
    })


def _stage_p90(exits: pd.DataFrame) -> pd.Series:
    """Per stage: the 90th percentile of completed visit durations (both windows, company)."""
    return exits.groupby(STAGE)["_days"].quantile(AGED_QUANTILE).astype(float)


def _open_table(deals: pd.DataFrame, levels: Sequence[str], p90: pd.Series) -> pd.DataFrame:
    """Per (level, key, stage): open deals at the report date, amount and aging."""
    open_ = deals[(deals[STATUS] == STATUS_OPEN) & deals[STAGE].notna()]
    aged = (open_[DAYS_IN_STAGE] > open_[STAGE].map(p90)).astype(float).where(
        open_[DAYS_IN_STAGE].notna() & open_[STAGE].map(p90).notna())
    measures = pd.DataFrame({OPEN_DEALS: 1.0, OPEN_AMOUNT: open_[AMOUNT].astype(float),
                             "_age": open_[DAYS_IN_STAGE].astype(float), "_aged": aged},
                            index=open_.index)
    parts = []
    for level in levels:
        grouped = measures.groupby([_keys(open_, level).rename(KEY), open_[STAGE]])
        part = grouped.agg(**{OPEN_DEALS: (OPEN_DEALS, "sum"), OPEN_AMOUNT: (OPEN_AMOUNT, "sum"),
                              OPEN_MEDIAN_AGE: ("_age", "median"),
                              OPEN_AGED_SHARE: ("_aged", "mean")})
        parts.append(part.reset_index().assign(**{LEVEL: level}))
    if not parts:
        return pd.DataFrame(columns=[LEVEL, KEY, STAGE, OPEN_DEALS, OPEN_AMOUNT,
                                     OPEN_MEDIAN_AGE, OPEN_AGED_SHARE])
    return pd.concat(parts, ignore_index=True)


def _stages(funnel: _Funnel, rows: pd.DataFrame) -> list[str]:
    """The report's stages in funnel order: the inferred order, restricted to stages with a
    row (no Won or Lost), then stages only open deals name (no history), by name."""
    seen = set(rows[STAGE].dropna())
    ordered = [s for s in funnel.order if s in seen]
    return ordered + sorted(seen - set(ordered))


def _grid(rows: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    """Every stage for every node that has a row: an idle stage shows 0 open deals."""
    nodes = rows[[LEVEL, KEY]].drop_duplicates()
    grid = nodes.merge(pd.DataFrame({STAGE: pd.Series(stages, dtype=object)}), how="cross")
    out = grid.merge(rows, on=[LEVEL, KEY, STAGE], how="left")
    counts = [EXITS, TRAILING_EXITS, OPEN_DEALS, OPEN_AMOUNT]
    out[counts] = out[counts].fillna(0.0)
    out[[EXITS, TRAILING_EXITS, OPEN_DEALS]] = out[[EXITS, TRAILING_EXITS, OPEN_DEALS]].astype(int)
    return out


def material_shortfall(exits: pd.Series, conversion: pd.Series, trailing: pd.Series
                       ) -> tuple[pd.Series, pd.Series]:
    """The drop below the trailing rate in binomial standard errors, and whether it is material
    (:data:`MIN_EXITS`, :data:`MIN_RELATIVE_DROP`, :data:`MATERIAL_Z`; see the module
    docstring). A trailing rate of 1 has no noise: any drop of 10% on 5 exits is material."""
    n = exits.astype(float)
    p = trailing.astype(float)
    drop = (p - conversion.astype(float)).where(n > 0)
    error = (p * (1.0 - p) / n.where(n > 0)).pow(0.5)
    z = drop / error.where(error > 0)
    exact = drop.notna() & (error == 0)  # a trailing rate of 0 or 1: any drop is beyond noise
    z[exact] = np.sign(drop[exact]) * np.inf
    material = ((n >= MIN_EXITS) & (drop >= MIN_RELATIVE_DROP * p) & (z >= MATERIAL_Z)
                & (p > 0)).fillna(False).astype(bool)
    return z.astype(float), material


def _bottlenecks(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``shortfall``, ``shortfall_z``, ``bottleneck_score`` and ``bottleneck`` (one stage
    per node at most, among those whose shortfall is material)."""
    n = frame[EXITS].astype(float)
    trailing = frame[TRAILING_CONVERSION]
    shrunk = (n * frame[CONVERSION].fillna(0.0) + PRIOR_STRENGTH * trailing) / (n + PRIOR_STRENGTH)
    shortfall = (trailing - shrunk).where(n > 0)
    score = shortfall.clip(lower=0.0) * frame[OPEN_AMOUNT]
    z, material = material_shortfall(frame[EXITS], frame[CONVERSION], trailing)
    frame = frame.assign(**{SHORTFALL: shortfall, SHORTFALL_Z: z, SCORE: score})
    ranked = frame[material & (frame[SCORE] > 0)].sort_values(SCORE, ascending=False,
                                                              kind="stable")
    worst = ranked.drop_duplicates([LEVEL, KEY]).index
    frame[BOTTLENECK] = frame.index.isin(worst)
    return frame


def funnel_report(tables: Tables, period: str, as_of: pd.Timestamp | str,
                  levels: Sequence[str] | None = None) -> FunnelReport:
    """The funnel of ``period`` per node and stage as of ``as_of`` (see the module docstring).

    Args:
        tables: validated tables with ``opportunities``.
        period: ``2017``, ``2017Q3`` or ``2017-08``.
        as_of: only deals created and stage changes entered before it count.
        levels: node levels (default the hierarchy); ``product`` and ``segment`` work too.

    Returns:
        The report (:data:`FUNNEL_COLUMNS`, nodes in level order then by key, stages in funnel
        order), its date and notes.
    """
    when = report_date(period, pd.Timestamp(as_of))
    start, _ = period_bounds(period)
    chosen = list(HIERARCHY_LEVELS if levels is None else levels)
    funnel = _funnel_at(tables, when)
    attributes = _deal_attributes(tables)
    elapsed = max((when - start).days, 0)
    trailing = (start - trailing_start(period)).days
    exits = _funnel_exits(funnel, attributes, (elapsed, trailing))
    deals = _with_nodes(funnel.state, attributes)
    conversions = _conversions(exits, chosen)
    p90 = _stage_p90(exits)
    keys = {LEVEL: object, KEY: object, STAGE: object}  # empty frames come out as float
    rows = conversions.astype(keys).merge(_open_table(deals, chosen, p90).astype(keys),
                                          on=[LEVEL, KEY, STAGE], how="outer")
    stages = _stages(funnel, rows)
    frame = _grid(rows, stages)
    frame[STAGE_P90] = frame[STAGE].map(p90).astype(float)
    frame[STAGE_INDEX] = frame[STAGE].map({s: float(i) for i, s in enumerate(stages)})
    frame = _bottlenecks(frame)
    frame[PERIOD] = str(period)
    frame[AS_OF] = when
    order = {lv: i for i, lv in enumerate(chosen)}
    frame = frame.assign(_lv=frame[LEVEL].map(order), _co=frame[KEY] != COMPANY_KEY)
    frame = frame.sort_values(["_lv", "_co", KEY, STAGE_INDEX], kind="stable")
    frame = frame.reindex(columns=FUNNEL_COLUMNS).reset_index(drop=True)
    return FunnelReport(frame, when, _notes(tables, deals))


def _notes(tables: Tables, deals: pd.DataFrame) -> list[str]:
    """What the report cannot know: the funnel's notes, and open deals of unknown stage."""
    # Expected close dates play no part in the report: their note would only confuse.
    notes = [n for n in funnel_notes(tables) if n != CLOSE_HISTORY_MISSING_NOTE]
    unknown = int(((deals[STATUS] == STATUS_OPEN) & deals[STAGE].isna()).sum())
    if unknown:
        notes.append(f"{unknown:,} deals open at the report date have no known stage then (no "
                     "stage history for them, and the opportunities snapshot is later): they "
                     "are left out of the stages' open deals.")
    return notes
