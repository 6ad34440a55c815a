"""The period review (``quotacast review``): target against actual per node, why, and whether
the outlook saw it coming.

:func:`run_review` puts together, for a period and a date ``as_of`` (the review is made with the
rows dated before it; after the period it is the final word, during it a review to date):

1. the **outlook at the start**: the feasibility simulation (:func:`service.usecases.feasibility
   .run_feasibility`) as of the period's first day, on the data as an export made that day held
   it (:func:`engine.history.export_at`: later rows gone, deals closed later still open), and
   the same win model's probability for each deal open then (:func:`models.review
   .deal_expectations`);
2. the **actuals** and the gap between them and the outlook split into causes
   (:func:`models.review.decompose`), the target and the attainment rate;
3. the **checkpoints**: the simulation replayed during the period, each on the data before it,
   and when P(attain) called the outcome (:func:`models.review.called_on`);
4. the **process targets** (``metric`` other than revenue) with their actuals
   (:func:`features.review.process_actuals`).

By default every checkpoint fits the historical stage win rates on the data before it and skips
the churn adjustment, so nothing known later leaks into the outlook; ``champions`` uses the
registered champion models instead (they may have been trained on data from after the
checkpoints, which the notes say). :mod:`service.usecases.review_report` writes the review
people read: Markdown or HTML with its charts beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine import tracking
from engine.history import export_at
from engine.io import BadInput, Tables, tier_targets
from engine.io.checks import check_table, cross_table_problems, parse_table
from engine.io.read import read_raw_file
from engine.periods import first_day, period_bounds, period_of
from engine.schemas import (
    AMOUNT,
    CHANNEL,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    METRIC,
    METRIC_REVENUE,
    METRICS,
    OPPORTUNITY_ID,
    PERIOD,
    PRODUCT,
    SEGMENT,
    TABLES,
    TARGETS,
    TIER_MUST_HIT,
    TIER_PLAN,
    TIER_STRETCH,
)
from features.hierarchy import UNASSIGNED, categorical_columns
from features.review import (
    churned_customers,
    first_purchases,
    period_revenue,
    process_actuals,
)
from models.feasibility import P_ATTAIN, TARGET, fit_stage_rates
from models.feasibility.simulation import (
    CLOSED_TO_DATE,
    EXPECTED,
    EXPECTED_PIPELINE,
    EXPECTED_RUN_RATE,
    P10,
    P90,
)
from models.review import (
    ACTUAL,
    ATTAINMENT,
    CALLED_ON,
    CAUSES,
    CHECKPOINT,
    GAP,
    P_ATTAIN_MID,
    P_ATTAIN_START,
    PLANNING_GAP,
    VS_EXPECTED,
    attainment,
    called_on,
    deal_expectations,
    deal_outcomes,
    decompose,
)
from service.usecases.feasibility import run_feasibility

__all__ = [
    "REVIEW_COLUMNS",
    "ReviewResult",
    "checkpoint_dates",
    "read_targets_file",
    "registered_champions",
    "run_review",
]

Progress = Callable[[str], None]

TARGET_MUST_HIT = "target_must_hit"
TARGET_STRETCH = "target_stretch"
REVIEW_COLUMNS = (PERIOD, METRIC, LEVEL, KEY, TARGET, ACTUAL, ATTAINMENT, GAP, EXPECTED,
                  PLANNING_GAP, VS_EXPECTED, *CAUSES, TARGET_MUST_HIT, TARGET_STRETCH,
                  P_ATTAIN_START, P_ATTAIN_MID, CALLED_ON)
# The dimensions reviewed beside the hierarchy when the data has them.
DIMENSIONS = (PRODUCT, CHANNEL, SEGMENT)
TRAIL_COLUMNS = (LEVEL, KEY, CHECKPOINT, P_ATTAIN, EXPECTED, P10, P90)


@dataclass
class ReviewResult:
    """A period's review.

    Attributes:
        frame: :data:`REVIEW_COLUMNS`: revenue rows (``metric`` revenue) for every node, then
            one row per process target of the period.
        trail: :data:`TRAIL_COLUMNS`: the outlook of every node at each checkpoint.
        period, start, end, as_of: what was reviewed, as of when.
        has_targets: whether any revenue target of the period exists.
        notes: plain-word remarks (models used, a period still running, no targets...).
    """

    frame: pd.DataFrame
    trail: pd.DataFrame
    period: str
    start: pd.Timestamp
    end: pd.Timestamp
    as_of: pd.Timestamp
    has_targets: bool
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Whether the period had ended by ``as_of``."""
        return self.as_of >= self.end

    def company(self) -> pd.Series:
        """The company's revenue row."""
        rows = self.frame[(self.frame[METRIC] == METRIC_REVENUE)
                          & (self.frame[LEVEL] == LEVEL_COMPANY)]
        return rows.iloc[0]


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


# === inputs =====================================================================================


def checkpoint_dates(start: pd.Timestamp, end: pd.Timestamp, count: int | None = None
                     ) -> list[pd.Timestamp]:
    """Dates to replay the outlook at: the start, then each month start (a quarter or a year),
    or each week (a month); ``count`` spreads that many dates evenly over the period instead."""
    days = (end - start).days
    if count is not None:
        count = max(1, min(int(count), days))
        return sorted({start + pd.Timedelta(days=int(k * days / count)) for k in range(count)})
    if days > 31:
        return list(pd.date_range(start, end - pd.Timedelta(days=1), freq="MS"))
    return list(pd.date_range(start, end - pd.Timedelta(days=1), freq="7D"))


def read_targets_file(path: Path, tables: Tables) -> pd.DataFrame:
    """A targets file (``.csv`` or ``.parquet``) checked like the data's own targets table.

    Raises:
        BadInput: every problem of the file at once (``targets:line: column: check``).
    """
    raw, problems = read_raw_file(TARGETS, path)
    if raw is None:
        raise BadInput(problems)
    parsed, parse_problems, failed = parse_table(TABLES[TARGETS], raw)
    problems += parse_problems
    if not parse_problems:
        problems += check_table(TABLES[TARGETS], parsed, failed)
        frames = {**tables.frames, TARGETS: parsed}
        problems += [p for p in cross_table_problems(frames, tables.derived)
                     if p.table == TARGETS]
    if problems:
        raise BadInput(problems)
    return parsed.reset_index(drop=True)


def registered_champions() -> dict[str, tracking.LoadedModel]:
    """The win and churn champions registered in the current workspace, those that exist, for
    ``run_review(champions=...)`` (the outlooks' notes say which one each used or missed).

    Not :func:`service.usecases.champions.load_champions`, which (re)loads every kind a running
    service serves into its state and keeps the old ones when the registry does not answer.
    """
    found = {}
    for kind in ("win", "churn"):
        try:
            found[kind] = tracking.load_champion(kind)
        except tracking.ChampionMissingError:
            continue
    return found


def _dimensions(tables: Tables, period: str) -> list[str]:
    """The levels reviewed besides the hierarchy: product, channel, segment where the data has
    them, and any other level the period's targets name."""
    known = categorical_columns(tables)
    dims = [d for d in DIMENSIONS if d in known]
    targets = tables.get(TARGETS)
    if targets is not None:
        named = targets.loc[targets[PERIOD].astype(str) == str(period), LEVEL]
        dims += sorted({str(lv) for lv in named.unique()} - set(HIERARCHY_LEVELS) - set(dims))
    return dims


# === the review =================================================================================


@dataclass
class _Outlook:
    frame: pd.DataFrame
    win_model: Any
    notes: list[str]


def _outlook(tables: Tables, period: str, when: pd.Timestamp, dims: Sequence[str], *,
             draws: int, seed: int, champions: Mapping[str, tracking.LoadedModel] | None
             ) -> _Outlook:
    """The feasibility of ``period`` as an export made on ``when`` saw it, every node."""
    past = export_at(tables, when)
    fitted: dict[str, Any] = {}

    def stage_rates(data: Tables, as_of: pd.Timestamp) -> tuple[Any, str]:
        model, note = fit_stage_rates(data, as_of)
        fitted["win"] = model
        return model, note

    # With champions, a missing one is named by the feasibility notes (win: stage rates; churn:
    # no adjustment); point in time, churn is left out (its scores would come from later data).
    result = run_feasibility(past, period, when, draws=draws, seed=seed, levels=dims,
                             all_nodes=True, use_churn=champions is not None,
                             models=champions or {}, stage_rates=stage_rates)
    win = champions.get("win") if champions else None
    model = win.estimator if win is not None else fitted.get("win")
    return _Outlook(result.frame, model, result.notes)


def _targets(tables: Tables, period: str, tier: str, metric: str = METRIC_REVENUE
             ) -> pd.Series:
    """The period's targets of one tier and metric, summed by ``(level, key)``."""
    rows = tier_targets(tables.get(TARGETS), tier, metric)
    if rows is None or rows.empty:
        return pd.Series(dtype=float)
    rows = rows[rows[PERIOD].astype(str) == str(period)]
    return rows.groupby([LEVEL, KEY])[AMOUNT].sum()


def _lookup(frame: pd.DataFrame, values: pd.Series) -> np.ndarray:
    index = pd.MultiIndex.from_frame(frame[[LEVEL, KEY]].astype(object))
    if values.empty:
        return np.full(len(frame), np.nan)
    return values.reindex(index).to_numpy(dtype=float)


def _trail(outlooks: Mapping[pd.Timestamp, _Outlook]) -> pd.DataFrame:
    """Every node's outlook at each checkpoint; ``expected`` as in :func:`models.review
    .decompose` (closed to date + pipeline + run rate, without Monte Carlo noise)."""
    parts = []
    for when, outlook in outlooks.items():
        frame = outlook.frame
        part = frame[[LEVEL, KEY, P_ATTAIN, P10, P90]].copy()
        part[CHECKPOINT] = when
        part[EXPECTED] = (frame[CLOSED_TO_DATE] + frame[EXPECTED_PIPELINE]
                          + frame[EXPECTED_RUN_RATE]).to_numpy(dtype=float)
        parts.append(part)
    trail = pd.concat(parts, ignore_index=True)
    trail[KEY] = trail[KEY].astype(str)
    return trail[list(TRAIL_COLUMNS)]


def _mid(dates: Sequence[pd.Timestamp], start: pd.Timestamp, end: pd.Timestamp
         ) -> pd.Timestamp:
    """The checkpoint nearest the period's middle (the earlier one on a tie)."""
    middle = start + (end - start) / 2
    return min(dates, key=lambda d: (abs(d - middle), d))


def _called(frame: pd.DataFrame, trail: pd.DataFrame, dates: Sequence[pd.Timestamp],
            result_start: pd.Timestamp, end: pd.Timestamp, finished: bool) -> pd.DataFrame:
    """``p_attain_start``, ``p_attain_mid`` and ``called_on`` beside each node."""
    p = trail.set_index([LEVEL, KEY, CHECKPOINT])[P_ATTAIN]
    index = pd.MultiIndex.from_frame(frame[[LEVEL, KEY]].astype(object))

    def at(when: pd.Timestamp) -> np.ndarray:
        if when not in set(dates):
            return np.full(len(frame), np.nan)
        return p.xs(when, level=CHECKPOINT).reindex(index).to_numpy(dtype=float)

    out = frame.assign(**{P_ATTAIN_START: at(result_start),
                          P_ATTAIN_MID: at(_mid(dates, result_start, end))})
    if not finished:
        return out.assign(**{CALLED_ON: pd.Series(pd.NaT, index=frame.index,
                                                  dtype="datetime64[ns]")})
    target = frame[TARGET]
    tolerance = 1e-9 * np.maximum(np.abs(target), 1.0)
    hit = pd.Series(np.where(target.isna(), np.nan, (frame[ACTUAL] >= target - tolerance)
                             .astype(float)), index=index)
    calls = called_on(trail, hit)
    return out.assign(**{CALLED_ON: calls.to_numpy()})


def _process_rows(tables: Tables, period: str, start: pd.Timestamp, end: pd.Timestamp,
                  as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per process target (``metric`` other than revenue) of the period."""
    parts = []
    for metric in METRICS:
        if metric == METRIC_REVENUE:
            continue
        target = _targets(tables, period, TIER_PLAN, metric)
        if target.empty:
            continue
        levels = list(dict.fromkeys([*HIERARCHY_LEVELS, *target.index.get_level_values(0)]))
        actual = process_actuals(tables, metric, start, end, as_of, levels)
        rows = target.rename(TARGET).reset_index()
        rows[KEY] = rows[KEY].astype(str)
        rows = rows.merge(actual, on=[LEVEL, KEY], how="left")
        rows[ACTUAL] = rows[ACTUAL].fillna(0.0) if metric != "retention_rate" else rows[ACTUAL]
        rows[TARGET_MUST_HIT] = _lookup(rows, _targets(tables, period, TIER_MUST_HIT, metric))
        rows[TARGET_STRETCH] = _lookup(rows, _targets(tables, period, TIER_STRETCH, metric))
        parts.append(rows.assign(**{METRIC: metric}))
    if not parts:
        return pd.DataFrame(columns=list(REVIEW_COLUMNS))
    rows = pd.concat(parts, ignore_index=True)
    rows[ATTAINMENT] = attainment(rows[ACTUAL], rows[TARGET])
    rows[GAP] = rows[TARGET] - rows[ACTUAL]
    return rows.assign(**{PERIOD: period})


def _drop_empty(frame: pd.DataFrame) -> pd.DataFrame:
    """Without the nodes where nothing was targeted, expected or booked (reps who left, an
    empty ``unassigned``); the company always stays."""
    money = [ACTUAL, EXPECTED, *CAUSES]
    empty = ((frame[money].abs() < 0.005).all(axis=1) & frame[TARGET].isna()
             & (frame[LEVEL] != LEVEL_COMPANY))
    return frame[~empty].reset_index(drop=True)


def run_review(tables: Tables, period: str, as_of: pd.Timestamp | str, *,
               checkpoints: int | None = None, draws: int = 4_000, seed: int = 42,
               targets: pd.DataFrame | None = None,
               champions: Mapping[str, tracking.LoadedModel] | None = None,
               progress: Progress | None = None) -> ReviewResult:
    """Review ``period`` as of ``as_of`` (see the module docstring).

    Args:
        tables: validated tables.
        period: ``2017``, ``2017Q3`` or ``2017-08``.
        as_of: only rows dated before it are used; on or after the period's end the review
            is final, before it a review to date.
        checkpoints: how many outlooks to replay evenly over the period (default: each month
            start, or each week for a month).
        draws: Monte Carlo draws of each outlook.
        seed: random seed.
        targets: a targets table to use instead of the data's (already validated).
        champions: registered models to use (``win``, ``churn``); None fits the historical
            stage win rates at each checkpoint on the data before it.
        progress: called with a short message at each stage.

    Raises:
        ValueError: the period has not started by ``as_of``, or is malformed.
    """
    as_of = pd.Timestamp(as_of)
    start, end = period_bounds(period)
    if as_of <= start:
        raise ValueError(f"{period} starts on {start.date()}, on or after --as-of "
                         f"{as_of.date()}: there is nothing to review yet; review an earlier "
                         "period or use `quotacast feasibility` for the outlook")
    first = first_day(tables)
    if end <= first:
        raise ValueError(f"{period} ended before the data starts ({first.date()}): there is "
                         f"nothing to review; review {period_of(first, _freq(period))} or "
                         "later")
    now = export_at(tables, as_of)
    if targets is not None:
        now = Tables({**now.frames, TARGETS: targets}, now.source, now.derived)
    notes: list[str] = []
    if champions:
        notes.append("champions: the registered models may have been trained on data from "
                     "after the checkpoints, so the outlook may know more than it did then")
    dims = _dimensions(now, period)
    levels = [*HIERARCHY_LEVELS, *dims]
    dates = [d for d in checkpoint_dates(start, end, checkpoints) if d < as_of]
    outlooks: dict[pd.Timestamp, _Outlook] = {}
    for i, when in enumerate(dates, 1):
        _say(progress, f"replaying the outlook as of {when.date()} ({i}/{len(dates)})")
        outlooks[when] = _outlook(now, period, when, dims, draws=draws, seed=seed,
                                  champions=champions)
    opening = outlooks[start]
    notes += [f"outlook at the start: {n}" for n in opening.notes
              if not n.startswith(("no node has a target", "interval check"))]
    _say(progress, "splitting the gap into causes")
    deals = deal_expectations(export_at(now, start), start, end, opening.win_model, dims)
    frame = decompose(
        events=period_revenue(now, start, end, as_of, dims),
        deals=deals,
        outcomes=deal_outcomes(now, deals[OPPORTUNITY_ID], end),
        first_purchase=first_purchases(now, as_of),
        churned=churned_customers(now, start, end, as_of, dims),
        outlook=opening.frame, start=start, levels=levels)
    notes += _pipeline_check(frame, opening.frame, deals)
    notes += _unplaced(frame, dims)
    plan = _targets(now, period, TIER_PLAN)
    frame.insert(0, METRIC, METRIC_REVENUE)
    frame.insert(0, PERIOD, period)
    frame[TARGET] = _lookup(frame, plan)
    frame[ATTAINMENT] = attainment(frame[ACTUAL], frame[TARGET])
    frame[GAP] = frame[TARGET] - frame[ACTUAL]
    frame[PLANNING_GAP] = frame[TARGET] - frame[EXPECTED]
    frame[TARGET_MUST_HIT] = _lookup(frame, _targets(now, period, TIER_MUST_HIT))
    frame[TARGET_STRETCH] = _lookup(frame, _targets(now, period, TIER_STRETCH))
    trail = _trail(outlooks)
    frame = _called(frame, trail, dates, start, end, as_of >= end)
    frame = _drop_empty(frame)
    _say(progress, "process targets")
    process = _process_rows(now, period, start, end, as_of)
    frame = pd.concat([frame, process], ignore_index=True) if len(process) else frame
    frame = frame.reindex(columns=list(REVIEW_COLUMNS))
    has_targets = not plan.empty
    notes += _notes(has_targets, as_of, start, end, period, process, dims)
    return ReviewResult(frame, trail, period, start, end, as_of, has_targets, notes)


def _freq(period: str) -> str:
    """``Q``, ``M`` or ``Y``: how ``period`` is written."""
    return "Q" if "Q" in period else "M" if "-" in period else "Y"


def _pipeline_check(frame: pd.DataFrame, outlook: pd.DataFrame, deals: pd.DataFrame
                    ) -> list[str]:
    """Say if the deals' expectations do not add up to the simulation's pipeline."""
    company = outlook[outlook[LEVEL] == LEVEL_COMPANY]
    simulated = float(company["expected_pipeline"].sum())
    mine = float(deals["expected"].sum()) if len(deals) else 0.0
    if abs(simulated - mine) > 0.005 * max(abs(simulated), 1.0):
        return [f"pipeline check: the deals open at the start add up to {mine:,.0f} expected, "
                f"the simulation's pipeline to {simulated:,.0f}; the difference is counted in "
                "run_rate_vs_expected"]
    return []


def _unplaced(frame: pd.DataFrame, dims: Sequence[str]) -> list[str]:
    """Say where a dimension's expectation sat at ``unassigned`` (deals without that column)
    while the revenue was booked under named keys."""
    company = frame.loc[frame[LEVEL] == LEVEL_COMPANY, EXPECTED].sum()
    notes = []
    for dim in dims:
        row = frame[(frame[LEVEL] == dim) & (frame[KEY] == UNASSIGNED)]
        expected = float(row[EXPECTED].sum())
        if company > 0 and expected > 0.05 * company and float(row[ACTUAL].sum()) < 0.5 * expected:
            notes.append(f"{dim}: {expected / company:.0%} of the outlook at the start sat at "
                         f"{dim} {UNASSIGNED} (open deals without a {dim}) while their revenue "
                         f"was booked under named {dim}s; read that level's deal causes as a "
                         "whole")
    return notes


def _notes(has_targets: bool, as_of: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp,
           period: str,
           process: pd.DataFrame, dims: Sequence[str]) -> list[str]:
    notes = []
    if not has_targets:
        notes.append(f"no revenue targets for {period}: target, attainment and the planning gap "
                     "are empty; actuals and the causes are measured against the outlook at the "
                     "start (pass --targets FILE to review against a targets file)")
    if as_of < end:
        before = period_of(start, _freq(period), ahead=-1)
        notes.append(f"{period} is still running (as of {as_of.date()}): actuals are to date, "
                     "deals_slipped holds the deals still open, and called_on waits for the "
                     f"end; --period {before} reviews the last finished one")
    if len(process):
        shown = ", ".join(sorted(process[METRIC].unique()))
        notes.append(f"process targets reviewed: {shown}")
    if dims:
        notes.append(f"dimensions reviewed beside the hierarchy: {', '.join(dims)}")
    return notes
