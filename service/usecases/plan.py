"""``quotacast plan``: a period's targets for every node and sub-period, with tiers and commits.

The company's amount for the period is given (``company_target``), or derived: ``growth`` over
the revenue of the period just before (of the same length), or the amount the company reaches
with probability ``p_attain``. It is split over the nodes by their outlook (the period's
simulation as of its start: :func:`models.feasibility.plan.split_nodes`) and over quarters and
months by last years' seasonality (:func:`models.feasibility.plan.season_shares`), in cents
that add up in the hierarchy and in time. Three tiers are written, each coherent on its own:

- ``plan``: the company's amount as given;
- ``must_hit``: the company's amount reached with 90% probability (never above the plan);
- ``stretch``: the company's amount reached with 30% probability (never below the plan);

each split over the nodes and months exactly as the plan is. Every row carries ``p_attain``:
the probability, on the simulation of that row's period as of the plan's date, that the node
reaches the row's amount. Bottom-up, when reps committed amounts (the ``commits`` table, or a
file), the plan rows carry ``commit`` (the reps' commits summed up the hierarchy),
``commit_gap`` (commit minus the top-down target) and ``p_attain_commit``.

A plan is made as of the period's start at the latest: rows dated on or after it are not
used, so a plan for a period that has begun is the plan one would have made at its start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine import tracking
from engine.io import Tables
from engine.periods import first_day, period_bounds
from engine.schemas import (
    AMOUNT,
    CATEGORY,
    COMMIT_CATEGORIES,
    COMMITS,
    COMPANY_KEY,
    DS,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REP,
    METRIC,
    METRIC_REVENUE,
    PERIOD,
    REP,
    SUBMITTED_AT,
    TIER,
    TIER_MUST_HIT,
    TIER_PLAN,
    TIER_STRETCH,
)
from features.hierarchy import revenue_events
from models.feasibility import (
    MUST_HIT_QUANTILE,
    P_ATTAIN,
    STRETCH_QUANTILE,
    Simulation,
    attained,
    fit_stage_rates,
    simulate_period,
)
from models.feasibility.plan import (
    PlanMethod,
    eligible_nodes,
    months_of,
    node_cents,
    plan_rows,
    season_shares,
    split_cents,
    split_nodes,
    sub_periods,
    time_cents,
)
from service.usecases.feasibility import champion_churn_scores, champion_win_model
from service.usecases.request import BadRequest

__all__ = [
    "COMMIT",
    "COMMIT_GAP",
    "PLAN_COLUMNS",
    "P_ATTAIN_COMMIT",
    "PlanResult",
    "coherent_sub_periods",
    "company_amount",
    "plot_plan",
    "run_plan",
]

PLAN_COLUMNS = (PERIOD, LEVEL, KEY, AMOUNT, TIER, METRIC, P_ATTAIN)
COMMIT = "commit"
COMMIT_GAP = "commit_gap"
P_ATTAIN_COMMIT = "p_attain_commit"
TIER_ORDER = (TIER_PLAN, TIER_MUST_HIT, TIER_STRETCH)

Progress = Callable[[str], None]
StageRates = Callable[[Tables, pd.Timestamp], tuple[Any, str]]


@dataclass
class PlanResult:
    """A plan: the targets rows, what was used, and the company's numbers per tier.

    Attributes:
        frame: :data:`PLAN_COLUMNS` (then ``commit``, ``commit_gap``, ``p_attain_commit`` when
            there are commits), one row per tier, period and node with a target.
        notes: plain-word remarks: as-of, models, seasonality, how the amount was found.
        as_of: the date the plan was made as of.
        company: the company's amount per tier.
    """

    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    as_of: pd.Timestamp | None = None
    company: dict[str, float] = field(default_factory=dict)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _previous(period: str) -> str:
    """The period of the same length just before ``period``."""
    start, _ = period_bounds(period)
    months = len(months_of(period))
    before = start - pd.DateOffset(months=months)
    if months == 12:
        return f"{before.year}"
    if months == 3:
        return f"{before.year}Q{(before.month - 1) // 3 + 1}"
    return f"{before.year}-{before.month:02d}"


def company_amount(tables: Tables, period: str, as_of: pd.Timestamp, simulation: Simulation,
                   simulate: Callable[[str], Simulation], *, company_target: float | None,
                   growth: float | None, p_attain: float | None) -> tuple[float, str]:
    """The company's amount for ``period`` and a note saying how it was found.

    Args:
        simulation: the period's simulation as of ``as_of`` (for ``p_attain``).
        simulate: simulates another period as of ``as_of`` (the growth base when the period
            before is not over at ``as_of``).

    Raises:
        BadRequest: not exactly one way given, or the amount cannot be found from the data.
    """
    given = [v is not None for v in (company_target, growth, p_attain)]
    if sum(given) != 1:
        raise BadRequest("give exactly one of --company-target, --growth or --p-attain")
    company = simulation.node_index(LEVEL_COMPANY, COMPANY_KEY)
    if company_target is not None:
        if not np.isfinite(company_target) or company_target <= 0:
            raise BadRequest(f"--company-target must be a positive amount, got {company_target}")
        return float(company_target), f"company target: {company_target:,.2f} as given"
    if p_attain is not None:
        if not 0.0 < p_attain < 1.0:
            raise BadRequest(f"--p-attain must be between 0 and 1 (exclusive), got {p_attain}")
        amount = float(np.quantile(simulation.draws[:, company], 1.0 - p_attain))
        if amount <= 0:
            raise BadRequest(f"the company's outlook for {period} reaches no positive amount "
                             f"with probability {p_attain:g}; give --company-target instead")
        return amount, (f"company target: {amount:,.2f}, the revenue the company reaches with "
                        f"probability {p_attain:g} as of {as_of.date()}")
    assert growth is not None
    before = _previous(period)
    since, until = period_bounds(before)
    start = first_day(tables)
    # An export often starts on the first business day: a few days missing are not a gap.
    slack = pd.Timedelta(days=max(3.0, 0.02 * (until - since).days))
    if since < start - slack:
        raise BadRequest(f"--growth needs the revenue of {before}, but the data starts on "
                         f"{start.date()}; give --company-target or --p-attain instead")
    if until <= as_of:
        events = revenue_events(tables, as_of=until, since=since)
        base = float(events[AMOUNT].sum())
        how = f"{before}'s revenue {base:,.2f}" + (
            f" (the data starts on {start.date()})" if since < start else "")
    else:
        other = simulate(before)
        base = float(other.draws[:, other.node_index(LEVEL_COMPANY, COMPANY_KEY)].mean())
        closed = float(other.closed[other.node_index(LEVEL_COMPANY, COMPANY_KEY)])
        how = (f"{before}'s revenue {base:,.2f} ({closed:,.2f} closed before "
               f"{as_of.date()} plus the expected rest: {before} is not over then)")
    amount = base * (1.0 + growth)
    if amount <= 0:
        raise BadRequest(f"{before}'s revenue grown by {growth:+.1%} is {amount:,.2f}, not a "
                         "positive target; give --company-target instead")
    return amount, f"company target: {amount:,.2f}, {how} grown by {growth:+.1%}"


def _monthly_history(tables: Tables, as_of: pd.Timestamp) -> pd.Series:
    """The company's revenue of each complete month before ``as_of``."""
    events = revenue_events(tables, as_of=as_of)
    if events.empty:
        return pd.Series(dtype=float)
    monthly = events.groupby(events[DS].dt.to_period("M").dt.start_time)[AMOUNT].sum()
    first = pd.Timestamp(events[DS].min()).normalize()
    first_full = first if first.day == 1 else first + pd.offsets.MonthBegin(1)
    last_full = as_of.to_period("M").start_time - pd.DateOffset(months=1)
    full = pd.date_range(first_full, last_full, freq="MS")
    return monthly.reindex(full, fill_value=0.0)


def _tier_amounts(simulation: Simulation, plan: float) -> dict[str, float]:
    """The company's amount per tier: the plan; must-hit, the revenue reached with 90%
    probability (at most the plan); stretch, reached with 30% probability (at least the
    plan)."""
    draws = simulation.draws[:, simulation.node_index(LEVEL_COMPANY, COMPANY_KEY)]
    must = float(np.quantile(draws, MUST_HIT_QUANTILE)) if len(draws) else plan
    stretch = float(np.quantile(draws, STRETCH_QUANTILE)) if len(draws) else plan
    return {TIER_PLAN: plan, TIER_MUST_HIT: max(min(must, plan), 0.0),
            TIER_STRETCH: max(stretch, plan)}


def _p_attain(frame: pd.DataFrame, simulations: Mapping[str, Simulation]) -> np.ndarray:
    """P(reaching each row's amount) on its period's simulation (NaN where a node is absent)."""
    out = np.full(len(frame), np.nan)
    for period, rows in frame.groupby(PERIOD, sort=False).groups.items():
        sim = simulations[str(period)]
        index = pd.MultiIndex.from_frame(sim.nodes[[LEVEL, KEY]].astype(object))
        at = index.get_indexer(pd.MultiIndex.from_frame(
            frame.loc[rows, [LEVEL, KEY]].astype(object)))
        pos = frame.index.get_indexer(rows)
        found = at >= 0
        out[pos[found]] = attained(sim.draws[:, at[found]],
                                   frame.loc[rows, AMOUNT].to_numpy(dtype=float)[found])
    return out


def coherent_sub_periods(simulations: Mapping[str, Simulation], period: str
                         ) -> dict[str, Simulation]:
    """The sub-periods' simulations rescaled, node by node, so that their expected revenues
    add up to the period's (quarters and months each on their own).

    Each sub-period is simulated on its own as of the plan's date; seen months ahead, the run
    rate of a short window is not estimated on the same footing as the whole period's, and
    the twelve months' outlooks need not add up to the year's. The period's outlook is the one
    the split uses (and the one replays check), so each node's sub-period draws are multiplied
    by one factor per node: the period's expected revenue over the sum of its sub-periods'.
    """
    out = dict(simulations)
    main = simulations[period]
    index = pd.MultiIndex.from_frame(main.nodes[[LEVEL, KEY]].astype(object))
    whole = main.draws.mean(axis=0) if len(main.draws) else main.closed
    subs = sub_periods(period)
    for group in ([p for p in subs if "Q" in p], [p for p in subs if "-" in p]):
        if not group:
            continue
        total = np.zeros(len(index))
        at = {}
        for label in group:
            sim = simulations[label]
            at[label] = pd.MultiIndex.from_frame(
                sim.nodes[[LEVEL, KEY]].astype(object)).get_indexer(index)
            means = sim.draws.mean(axis=0) if len(sim.draws) else sim.closed
            total += np.where(at[label] >= 0, means[np.maximum(at[label], 0)], 0.0)
        factor = np.where(total > 0, whole / np.where(total > 0, total, 1.0), 1.0)
        factor = np.clip(factor, 0.0, None)
        for label in group:
            sim = simulations[label]
            scale = np.ones(sim.draws.shape[1])
            found = at[label] >= 0
            scale[at[label][found]] = factor[found]
            out[label] = replace(sim, draws=sim.draws * scale)
    return out


def latest_commits(commits: pd.DataFrame, as_of: pd.Timestamp) -> tuple[pd.DataFrame, int]:
    """Each rep's latest ``commit`` per period submitted before ``as_of`` (rows without
    ``submitted_at`` count), and how many later submissions were left out."""
    frame = commits.copy()
    if CATEGORY in frame.columns:
        frame = frame[frame[CATEGORY].fillna(COMMIT_CATEGORIES[0]) == COMMIT_CATEGORIES[0]]
    later = 0
    if SUBMITTED_AT in frame.columns:
        when = pd.to_datetime(frame[SUBMITTED_AT])
        keep = when.isna() | (when < as_of)
        later = int((~keep).sum())
        frame = frame[keep].assign(_when=when[keep]).sort_values("_when", kind="stable",
                                                                 na_position="first")
    frame = frame.drop_duplicates([PERIOD, REP], keep="last")
    return frame[[PERIOD, REP, AMOUNT]].astype({PERIOD: str, REP: str}), later


def _commit_columns(frame: pd.DataFrame, commits: pd.DataFrame,
                    simulations: Mapping[str, Simulation], nodes: pd.DataFrame
                    ) -> tuple[pd.DataFrame, list[str]]:
    """``commit``, ``commit_gap``, ``p_attain_commit`` on the plan rows: each rep's commit,
    summed up the hierarchy (a node none of whose reps committed has none)."""
    notes: list[str] = []
    parent = nodes["parent"].to_numpy()
    index = {(lv, k): i for i, (lv, k) in enumerate(zip(nodes[LEVEL], nodes[KEY].astype(str),
                                                        strict=True))}
    sums: dict[tuple[str, int], float] = {}
    unknown: set[str] = set()
    for period, rep, amount in commits[[PERIOD, REP, AMOUNT]].itertuples(index=False):
        row = index.get((LEVEL_REP, rep))
        if row is None:
            unknown.add(rep)
            continue
        while row >= 0:  # up the hierarchy: rep, team, region, company
            sums[(period, row)] = sums.get((period, row), 0.0) + float(amount)
            row = int(parent[row])
    if unknown:
        shown = ", ".join(sorted(unknown)[:5]) + (" ..." if len(unknown) > 5 else "")
        notes.append(f"commits: {len(unknown)} rep(s) not in the hierarchy left out ({shown})")
    plan = frame[TIER] == TIER_PLAN
    commit = np.full(len(frame), np.nan)
    for i in map(int, np.flatnonzero(plan.to_numpy())):
        row = index.get((frame[LEVEL].iat[i], str(frame[KEY].iat[i])))
        if row is not None:
            commit[i] = sums.get((str(frame[PERIOD].iat[i]), row), np.nan)
    p_commit = np.full(len(frame), np.nan)
    has = np.isfinite(commit)
    if has.any():
        view = frame.loc[has, [PERIOD, LEVEL, KEY]].assign(**{AMOUNT: commit[has]})
        p_commit[has] = _p_attain(view, simulations)
    gap = np.round(commit - frame[AMOUNT].to_numpy(dtype=float), 2)
    out = frame.assign(**{COMMIT: commit, COMMIT_GAP: gap,
                          P_ATTAIN_COMMIT: p_commit})
    return out, notes


def _coverage_notes(simulation: Simulation) -> list[str]:
    """Where the hierarchy stops (a level the data names no node of) and how much expected
    revenue no named node owns."""
    nodes = simulation.nodes
    ok = eligible_nodes(nodes)
    expected = (simulation.draws.mean(axis=0) if len(simulation.draws)
                else simulation.closed)
    notes = []
    above = LEVEL_COMPANY
    for level in HIERARCHY_LEVELS[1:]:
        if not ok[(nodes[LEVEL] == level).to_numpy()].any():
            notes.append(f"the data names no {level} (org table, account managers, customers' "
                         f"regions): the plan stops at the {above} level")
            break
        above = level
    orphan = float(expected[~ok & (nodes[LEVEL] == above).to_numpy()].clip(min=0).sum())
    if orphan > 0:
        company = float(expected[simulation.node_index(LEVEL_COMPANY, COMPANY_KEY)])
        notes.append(f"revenue no named {above} owns (unassigned; {orphan:,.0f} expected, "
                     f"{orphan / company:.0%} of the company's) takes no target: the named "
                     "nodes share each parent's whole target")
    return notes


def run_plan(tables: Tables, period: str, as_of: pd.Timestamp | str, *,
             company_target: float | None = None, growth: float | None = None,
             p_attain: float | None = None, method: PlanMethod = "even_probability",
             levels: Sequence[str] | None = None, commits: pd.DataFrame | None = None,
             draws: int = 10_000, seed: int = 42, use_churn: bool = True,
             models: Mapping[str, tracking.LoadedModel] | None = None,
             stage_rates: StageRates = fit_stage_rates,
             progress: Progress | None = None) -> PlanResult:
    """Targets for every node and sub-period of ``period`` (``quotacast plan``).

    Args:
        tables: validated tables.
        period: ``2027``, ``2027Q1`` or ``2027-01``.
        as_of: the plan's date (rows dated on or after it are not used); a date inside or
            after the period is taken back to the period's start.
        company_target, growth, p_attain: exactly one: the company's amount, its growth over
            the period before, or the probability with which the company reaches it.
        method: ``even_probability`` or ``proportional`` (to expected revenue).
        levels: extra levels (``product``, ``segment``...) split from the company too.
        commits: the reps' commits (``period, rep, amount``, optional ``category`` and
            ``submitted_at``); default the data's ``commits`` table.
        draws, seed: the simulations' draws and seed.
        use_churn: apply the champion churn model's scores when there is one.
        models: already-loaded champions (``win``, ``churn``); ``None`` reads the registry.
        stage_rates: fits the fallback win model.
        progress: called with a short message at each stage.

    Raises:
        BadRequest: the amount cannot be found, or there is nothing to plan from.
    """
    start, _ = period_bounds(period)
    asked = pd.Timestamp(as_of)
    when = min(asked, start)
    notes: list[str] = []
    if asked > start:
        notes.append(f"as of {start.date()}, the start of {period}: a plan uses only rows "
                     f"dated before its period (for targets revised mid-period, use "
                     f"`quotacast recalibrate`)")
    else:
        notes.append(f"as of {when.date()} ({(start - when).days} day(s) before {period} "
                     "starts)")
    if revenue_events(tables, as_of=when).empty:
        if revenue_events(tables).empty:
            raise BadRequest("the data has no revenue yet (no orders and no won deals): a plan "
                             "is split by past revenue and its outlook; plan once some revenue "
                             "has closed")
        raise BadRequest(f"the data has no revenue dated before {when.date()}: there is "
                         f"nothing to plan {period} from; plan a later period")
    _say(progress, "loading the win model")
    win_model = champion_win_model(notes, models)
    if win_model is None:
        _say(progress, "no champion win model: fitting historical stage win rates")
        win_model, note = stage_rates(tables, when)
        notes.append(note)
    churn = champion_churn_scores(tables, when, notes, models=models) if use_churn else None
    cache: dict[str, Simulation] = {}

    def simulate(label: str) -> Simulation:
        if label not in cache:
            _say(progress, f"simulating {label} as of {when.date()}")
            cache[label] = simulate_period(tables, label, when, win_model, draws=draws,
                                           seed=seed, churn=churn, levels=levels)
        return cache[label]

    main = simulate(period)
    notes += [n for n in main.notes if not n.startswith("churn:") or churn is not None]
    amount, how = company_amount(tables, period, when, main, simulate,
                                 company_target=company_target, growth=growth,
                                 p_attain=p_attain)
    notes.append(how)
    months = months_of(period)
    shares, season_note = season_shares(_monthly_history(tables, when), months)
    if sub_periods(period):
        notes.append(season_note)
    tiers = _tier_amounts(main, amount)
    nodes = main.nodes
    blocks = []
    for tier in TIER_ORDER:
        _say(progress, f"splitting the {tier} tier ({method})")
        total = round(tiers[tier] * 100)
        cents = node_cents(nodes, split_nodes(main, tiers[tier], method, period), total)
        company_months = split_cents(total, shares)
        monthly = time_cents(nodes, cents, company_months)
        blocks.append(plan_rows(nodes, period, cents, monthly, months).assign(
            **{TIER: tier, METRIC: METRIC_REVENUE}))
    frame = pd.concat(blocks, ignore_index=True)
    simulations = coherent_sub_periods({p: simulate(p) for p in [period, *sub_periods(period)]},
                                       period)
    if sub_periods(period):
        notes.append("p_attain of quarters and months: each simulated as of the plan's date, "
                     "rescaled per node so that their outlooks add up to the period's")
    frame[P_ATTAIN] = _p_attain(frame, simulations)
    frame = frame[list(PLAN_COLUMNS)]
    notes += _coverage_notes(main)
    notes.append(f"split over the nodes: {method.replace('_', ' ')}"
                 + (" (each parent's children reach their targets with one common "
                    "probability as of the plan's date)" if method == "even_probability"
                    else " (to each node's expected revenue)"))
    notes.append(f"tiers: must_hit {tiers[TIER_MUST_HIT]:,.2f} (reached with 90% probability), "
                 f"plan {tiers[TIER_PLAN]:,.2f}, stretch {tiers[TIER_STRETCH]:,.2f} (30%), "
                 "each split like the plan")
    chosen = commits if commits is not None else tables.get(COMMITS)
    if chosen is not None and not chosen.empty:
        latest, later = latest_commits(chosen, when)
        if later:
            notes.append(f"commits: {later} submitted on or after {when.date()} left out")
        frame, commit_notes = _commit_columns(frame, latest, simulations, nodes)
        notes += commit_notes
        if not frame[COMMIT].notna().any():
            notes.append(f"commits: none for {period} or its sub-periods")
    return PlanResult(frame, notes, when, tiers)


def plot_plan(frame: pd.DataFrame, period: str, path: Path) -> None:
    """The plan in one picture: the company's target per month (or per sub-period) in each
    tier, and the period's plan-tier target of every node of the lowest level planned, with
    its p_attain."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    company = frame[frame[LEVEL] == LEVEL_COMPANY]
    subs = [p for p in sub_periods(period) if "-" in p] or [period]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(subs))
    for tier, colour in ((TIER_MUST_HIT, "C3"), (TIER_PLAN, "C0"), (TIER_STRETCH, "C2")):
        rows = company[company[TIER] == tier].set_index(PERIOD).reindex(subs)
        left.plot(x, rows[AMOUNT], marker="o", color=colour, label=tier)
        if tier == TIER_PLAN:
            for i, p in enumerate(rows[P_ATTAIN]):
                if np.isfinite(p):
                    left.annotate(f"{p:.0%}", (i, rows[AMOUNT].iloc[i]), fontsize=7,
                                  textcoords="offset points", xytext=(0, 6), ha="center")
    left.set_xticks(x, [s[-2:] if "-" in s else s for s in subs])
    left.set_title(f"company target of {period} by month (labels: P(attain) of the plan)",
                   fontsize=9)
    left.legend(fontsize=8, frameon=False)
    plan = frame[(frame[TIER] == TIER_PLAN) & (frame[PERIOD] == period)]
    levels = [lv for lv in HIERARCHY_LEVELS[1:] if lv in set(plan[LEVEL])]
    lowest = plan[plan[LEVEL] == levels[-1]] if levels else plan
    lowest = lowest.sort_values(AMOUNT).tail(40)
    y = np.arange(len(lowest))
    right.barh(y, lowest[AMOUNT], color="C0")
    for i, (amount, p) in enumerate(zip(lowest[AMOUNT], lowest[P_ATTAIN], strict=True)):
        right.text(float(amount), i, f" {p:.0%}", va="center", fontsize=7)
    right.set_yticks(y, lowest[KEY].astype(str), fontsize=7)
    right.set_title(f"{period} plan per {levels[-1] if levels else 'node'} "
                    "(labels: P(attain) as of the plan's date)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
