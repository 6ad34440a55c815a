"""The deals behind a node's gap (``GET /v1/deals``, the board's deals section).

For one node of a period's feasibility run (the same cached simulation as ``/v1/feasibility``),
every deal open at ``as_of`` under the node with what the simulation counts for it:

- ``win_probability``: its probability of being won inside the period, from the same win model
  the simulation used (the champion, else the cached historical stage rates); a deal expected
  to close after the period end gets 0, as in the simulation;
- ``slip_risk``: the same model's probability that it is won in the *next* period of the same
  length instead (the chance it slips out of this one);
- ``p_attain_if_lost``: the node's P(attain) if the deal were lost, from the node's simulated
  draws: the draws without the deal are approximated by moving the node's draws down by the
  deal's expected amount (``amount x win_probability``) and narrowing them by its share of
  the spread (:func:`loss_effect`); the deals are sorted by that drop (``p_attain_drop``),
  then by ``amount x win_probability``.

The node's simulation is the one it lives in (:func:`service.usecases.dimensions.node_run`):
the period's feasibility for the hierarchy and the levels its targets name, the dimensions'
simulation for a product or segment no target names. A node without a target sorts its deals
by their effect on its expected total (``amount x win_probability``, the drop of the expected
total if the deal is lost). A level the deals do not carry (channel: orders have one, deals do
not) lists no deal and says so (``placed`` False).

The pipeline by stage sums the same deals. Nothing here changes the simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.periods import period_bounds
from engine.schemas import (
    AMOUNT,
    CLOSE_DATE,
    COMPANY_KEY,
    CUSTOMER_ID,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    REGION,
    REP,
    TEAM,
)
from features.deals import deal_inputs, period_features
from features.funnel import F_DAYS_SLIPPED, F_STAGE
from features.hierarchy import UNASSIGNED, customer_column, opportunity_nodes
from models.feasibility import P_ATTAIN, TARGET, fit_stage_rates
from models.win import WIN_PROBABILITY
from service.usecases.dimensions import deals_carry, node_run
from service.usecases.planning import FeasibilityRun
from service.usecases.served import Memo, Served

__all__ = [
    "DEAL_COLUMNS",
    "EFFECT_MEASURE",
    "EFFECT_MEASURE_NO_TARGET",
    "STAGE_COLUMNS",
    "DealsView",
    "deal_frame",
    "deals_behind",
    "loss_effect",
    "unplaced_note",
]

# Per workspace, data, period, as-of, levels and models.
_DEALS: Memo[tuple[Tables, pd.DataFrame]] = Memo(size=8)
SLIP_RISK = "slip_risk"
EXPECTED_AMOUNT = "expected_amount"
P_ATTAIN_IF_LOST = "p_attain_if_lost"
P_ATTAIN_DROP = "p_attain_drop"
STAGE = "stage"
DAYS_SLIPPED = "days_slipped"
IN_PERIOD = "in_period"
DEAL_COLUMNS = (OPPORTUNITY_ID, CUSTOMER_ID, REP, TEAM, REGION, STAGE, AMOUNT, CLOSE_DATE,
                WIN_PROBABILITY, SLIP_RISK, EXPECTED_AMOUNT, DAYS_SLIPPED, P_ATTAIN_IF_LOST,
                P_ATTAIN_DROP)
STAGE_COLUMNS = (STAGE, "deals", AMOUNT, EXPECTED_AMOUNT)
EFFECT_MEASURE = (
    "sorted by p_attain_drop: how much the node's P(attain) falls if the deal is lost, from "
    "the node's simulated draws (the draws without the deal approximated by moving them down "
    "by amount x win probability and narrowing them by the deal's own spread); then by amount "
    "x win probability. slip_risk: the win "
    "model's probability that the deal is won in the next period instead of this one.")
# A node without a target (a product or segment no target names): no P(attain) to drop.
EFFECT_MEASURE_NO_TARGET = (
    "sorted by expected_amount (amount x win probability): how much the node's expected total "
    "falls if the deal is lost (the node has no target, so no P(attain)). slip_risk: the win "
    "model's probability that the deal is won in the next period instead of this one.")


@dataclass(frozen=True)
class DealsView:
    """The deals under one node, with the node's outlook.

    Attributes:
        deals: :data:`DEAL_COLUMNS`, the deals counted in the period, largest effect first.
        stages: :data:`STAGE_COLUMNS`, the same deals by stage (largest expected first).
        later: deals open under the node but expected to close after the period end.
        total: deals counted in the period before ``limit``.
        placed: False when the deals carry no value of the node's level (a channel): none is
            listed, and the notes say why.
    """

    period: str
    as_of: date
    level: str
    key: str
    target: float | None
    expected: float
    p_attain: float | None
    gap: float | None
    deals: pd.DataFrame
    stages: pd.DataFrame
    later: int
    total: int
    notes: list[str] = field(default_factory=list)
    placed: bool = True
    effect_measure: str = EFFECT_MEASURE


def _win_model(served: Served, as_of: pd.Timestamp) -> object:
    """The win model the simulation used: the champion, else the cached stage rates (the very
    cache entry :func:`service.usecases.planning.feasibility_run` fills)."""
    loaded = served.models.get("win")
    if loaded is not None:
        return loaded.estimator
    tables = served.tables()
    model, _ = served.feasibility_cache.get(("stage-rates", as_of),
                                            lambda: fit_stage_rates(tables, as_of))
    return model


def _next_period(start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    months = (end.year - start.year) * 12 + end.month - start.month
    return end, end + pd.DateOffset(months=months)


def deal_frame(served: Served, run: FeasibilityRun) -> pd.DataFrame:
    """Every deal open at the run's as-of with its nodes, in-period win probability and slip
    risk (cached per tables, period, as-of, the run's levels and models)."""
    versions = tuple(sorted((k, str(m.version)) for k, m in served.models.items()))
    tables = served.tables()
    levels = tuple(sorted(str(v) for v in run.simulation.nodes[LEVEL].unique()))
    key = (served.registry_workspace().name, served.data.source, id(tables), run.period,
           run.as_of, levels, versions)
    # Its own cache: the simulations' (a few large entries) keeps its room for them. The
    # tables are kept beside the frame: an id reused by tables loaded anew is not a hit.
    found = _DEALS.get(key, lambda: (tables, _deal_frame(served, run)))
    if found[0] is not tables:
        _DEALS.clear()
        found = _DEALS.get(key, lambda: (tables, _deal_frame(served, run)))
    return found[1]


def _deal_frame(served: Served, run: FeasibilityRun) -> pd.DataFrame:
    tables = served.tables()
    empty = _no_deals()
    if not tables.has(OPPORTUNITIES):
        return empty
    as_of = run.as_of
    start, end = period_bounds(run.period)
    if as_of >= end:
        return empty
    deals = deal_inputs(tables, as_of)
    if deals.empty:
        return empty
    model = _win_model(served, as_of)
    here = pd.concat([deals, period_features(deals, start, end, as_of)], axis=1)
    p = model.predict_frame(here)[WIN_PROBABILITY].to_numpy(dtype=float)  # type: ignore[attr-defined]
    outside = (deals[CLOSE_DATE] >= end).to_numpy()
    p = np.where(outside, 0.0, np.clip(p, 0.0, 1.0))
    after, after_end = _next_period(start, end)
    there = pd.concat([deals, period_features(deals, after, after_end, as_of)], axis=1)
    slip = model.predict_frame(there)[WIN_PROBABILITY].to_numpy(dtype=float)  # type: ignore[attr-defined]
    slip = np.where((deals[CLOSE_DATE] >= after_end).to_numpy(), 0.0, np.clip(slip, 0.0, 1.0))
    nodes = opportunity_nodes(tables).drop_duplicates(OPPORTUNITY_ID).set_index(OPPORTUNITY_ID)
    out = pd.DataFrame({
        OPPORTUNITY_ID: deals[OPPORTUNITY_ID].astype(str),
        CUSTOMER_ID: deals[CUSTOMER_ID] if CUSTOMER_ID in deals.columns else np.nan,
        **{c: deals[OPPORTUNITY_ID].map(nodes[c]).fillna(UNASSIGNED).astype(str)
           for c in (REP, TEAM, REGION)},
        STAGE: deals[F_STAGE].astype(object).where(deals[F_STAGE].notna(), "(unknown)"),
        AMOUNT: deals[AMOUNT].astype(float),
        CLOSE_DATE: deals[CLOSE_DATE],
        WIN_PROBABILITY: p,
        SLIP_RISK: slip,
        EXPECTED_AMOUNT: p * deals[AMOUNT].to_numpy(dtype=float),
        DAYS_SLIPPED: deals[F_DAYS_SLIPPED] if F_DAYS_SLIPPED in deals.columns else np.nan,
        IN_PERIOD: ~outside,
    })
    # Extra levels of the run (product, segment...): the deal's own value, else its customer's.
    extra = [lv for lv in run.simulation.nodes[LEVEL].unique() if lv not in HIERARCHY_LEVELS]
    for level in extra:
        own = deals[level] if level in deals.columns else pd.Series(np.nan, deals.index)
        value = own.where(own.notna(), customer_column(tables, level, deals[CUSTOMER_ID]))
        out[level] = value.astype(object).where(value.notna(), UNASSIGNED).astype(str)
    return out.reset_index(drop=True)


def _no_deals() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in (*DEAL_COLUMNS, IN_PERIOD)})


def loss_effect(draws: np.ndarray, target: float, amount: np.ndarray, p: np.ndarray
                ) -> np.ndarray:
    """P(attain) minus P(attain if the deal is lost), per deal, from one node's draws.

    With ``X = Y + A B`` (``Y``: the node without the deal, ``B``: the deal won, probability
    ``p``), the drop is ``p * (S_Y(T - A) - S_Y(T))``. ``S_Y`` is read off the node's draws
    moved to ``Y``'s mean and spread: mean ``E[X] - p A``, variance ``Var X - p (1 - p) A^2``
    (the deal's own share of the spread taken out).
    """
    if len(draws) == 0 or not np.isfinite(target):
        return np.full(len(amount), np.nan)
    ordered = np.sort(draws)
    n = len(ordered)
    mean, sd = float(ordered.mean()), float(ordered.std())
    tolerance = 1e-9 * max(abs(target), 1.0)
    mean_y = mean - p * amount
    sd_y = np.sqrt(np.maximum(sd**2 - p * (1 - p) * amount**2, 0.0))

    def survival_y(level: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(sd_y > 0, mean + (level - mean_y) * sd / sd_y,
                              np.where(mean_y >= level - tolerance, -np.inf, np.inf))
        return 1.0 - np.searchsorted(ordered, scaled - tolerance, side="left") / n

    drop = p * (survival_y(target - amount) - survival_y(np.full(len(amount), target)))
    return np.clip(drop, 0.0, 1.0)


def _node_row(run: FeasibilityRun, level: str, key: str) -> tuple[int, pd.Series | None]:
    column = run.simulation.node_index(level, key)  # node_run found it there
    match = run.frame[(run.frame[LEVEL] == level) & (run.frame[KEY] == key)]
    return column, (None if match.empty else match.iloc[0])


def _under(frame: pd.DataFrame, level: str, key: str) -> pd.Series:
    if level == LEVEL_COMPANY:
        return pd.Series(True, index=frame.index)
    if level not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[level] == key


def deals_behind(served: Served, period: str | None, as_of: date | None,
                 level: str = LEVEL_COMPANY, key: str = COMPANY_KEY, *,
                 owner: str | None = None, limit: int = 50) -> DealsView:
    """The open deals of one node, largest effect on its P(attain) first, and its pipeline by
    stage.

    Args:
        level, key: the node (default: the company).
        owner: only the deals this rep owns (an account manager's own).
        limit: the most deals returned (the stages count them all).

    Raises:
        RequestError / OutsideData: the period or as-of cannot be answered.
        NotFound: the simulation has no such node.
    """
    run = node_run(served, period, as_of, level, key)
    column, row = _node_row(run, level, key)
    draws = run.simulation.draws[:, column]
    expected = float(draws.mean()) if len(draws) else float(run.simulation.closed[column])
    target = None if row is None or pd.isna(row[TARGET]) else float(row[TARGET])
    p_attain = None if row is None or pd.isna(row[P_ATTAIN]) else float(row[P_ATTAIN])
    tables = served.tables()
    placed = level in HIERARCHY_LEVELS or deals_carry(tables, level)
    every = deal_frame(served, run) if placed else _no_deals()
    mine = every[_under(every, level, key)]
    if owner is not None:
        mine = mine[mine[REP] == owner]
    counted = mine[mine[IN_PERIOD].astype(bool)].copy()
    amount = counted[AMOUNT].to_numpy(dtype=float)
    p = counted[WIN_PROBABILITY].to_numpy(dtype=float)
    drop = loss_effect(draws, target if target is not None else np.nan, amount, p)
    if p_attain is not None:  # the approximation never takes more than there is
        drop = np.minimum(drop, p_attain)
    counted[P_ATTAIN_DROP] = drop
    counted[P_ATTAIN_IF_LOST] = (p_attain - drop) if p_attain is not None else np.nan
    counted = counted.sort_values([P_ATTAIN_DROP, EXPECTED_AMOUNT], ascending=False,
                                  na_position="last", kind="stable")
    stages = (counted.groupby(STAGE, sort=False)
              .agg(deals=(OPPORTUNITY_ID, "size"), amount=(AMOUNT, "sum"),
                   expected_amount=(EXPECTED_AMOUNT, "sum"))
              .reset_index().sort_values(EXPECTED_AMOUNT, ascending=False, kind="stable"))
    measure = EFFECT_MEASURE if target is not None else EFFECT_MEASURE_NO_TARGET
    notes = [measure]
    if target is None:
        notes.append(f"{level} {key} has no target in {run.period}: deals are sorted by "
                     "amount x win probability, the drop of its expected total if the deal "
                     "is lost")
    if not tables.has(OPPORTUNITIES):
        notes.append("the data has no opportunities table: there are no deals to show")
    elif not placed:
        notes.append(unplaced_note(level, key))
    return DealsView(
        period=run.period, as_of=run.as_of.date(), level=level, key=key, target=target,
        expected=expected, p_attain=p_attain,
        gap=None if target is None else target - expected,
        deals=counted[list(DEAL_COLUMNS)].head(limit).reset_index(drop=True),
        stages=stages[list(STAGE_COLUMNS)].reset_index(drop=True),
        later=int((~mine[IN_PERIOD].astype(bool)).sum()), total=len(counted), notes=notes,
        placed=placed, effect_measure=measure)


def unplaced_note(level: str, key: str) -> str:
    """Why a node of a level the deals do not carry lists no deal."""
    return (f"deals carry no {level}: neither the opportunities nor the customers table has a "
            f"{level} column, so the simulation counts every open deal under "
            f"{level} {UNASSIGNED} and no deal can be placed under {level} {key}; the company's "
            "page lists them all")
