"""The review of a period: target against actual, and why the actual differs from the outlook at
the period's start (``quotacast review``).

**The decomposition.** Seen from the period's start, the feasibility simulation expected, per
node, ``expected = pipeline + run rate`` where ``pipeline`` is the sum over the deals open at
the start of ``p * amount`` (``p``: the win model's probability that the deal is won inside the
period; 0 for a deal expected to close after it) and ``run rate`` the revenue not yet in the
pipeline (repeat orders and deals created later). The actual revenue of the period differs from
it by ``actual - expected``, split into six causes that add up to it exactly, on every node:

- ``pipeline_won_vs_expected``: for the deals open at the start that were won in the period,
  the revenue they brought minus their expected ``p * amount`` (more than expected: a bigger
  deal, or one pulled into the period; less: a smaller deal);
- ``deals_slipped``: for the deals open at the start that were neither won nor lost by the
  period's end (won later, lost later or still open), any revenue they brought minus their
  expected ``p * amount``;
- ``deals_lost``: the same for the deals open at the start that were lost in the period;
- ``new_customers``: revenue outside that pipeline from customers whose first purchase was in
  the period;
- ``churned_customers``: minus the previous period's revenue of the customers who bought then
  and bought nothing in this period;
- ``run_rate_vs_expected``: the rest of the revenue outside the opening pipeline (customers who
  bought before), plus what the churned customers brought in the previous period, minus the
  expected run rate: what the customers who stayed bought against what the run rate expected.

The run rate's expectation already holds the usual acquisition and churn, so in a steady
business ``new_customers`` and ``churned_customers`` roughly offset; ``run_rate_vs_expected``
is then how the customers who stayed did. Every cause is a sum over rows placed at their own
node (revenue events where they were booked, deals at their owner's node as the simulation
places them), so a parent's causes are the sums of its children's.

The target enters last: ``gap = target - actual = planning_gap - (actual - expected)`` with
``planning_gap = target - expected``, the part of the gap already known at the start.

**Was it called in time?** :func:`called_on` reads the P(attain) of checkpoints during the period
(each made with the data before it) and says from which checkpoint on it stayed on the side of
0.5 the outcome fell on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.schemas import (
    AMOUNT,
    CLOSE_DATE,
    CUSTOMER_ID,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    REGION,
    REP,
    STATUS,
    STATUS_LOST,
    STATUS_WON,
    TEAM,
)
from features.deals import deal_inputs, period_features
from features.review import deal_rows, node_sums
from models.feasibility import P_ATTAIN
from models.feasibility.simulation import (
    CLOSED_TO_DATE,
    EXPECTED,
    EXPECTED_PIPELINE,
    EXPECTED_RUN_RATE,
)
from models.win import WIN_PROBABILITY

__all__ = [
    "ACTUAL",
    "ATTAINMENT",
    "CALLED_ON",
    "CAUSES",
    "CHECKPOINT",
    "CHURNED",
    "DEALS_LOST",
    "DEALS_SLIPPED",
    "GAP",
    "NEW_CUSTOMERS",
    "OUTCOME_LOST",
    "OUTCOME_SLIPPED",
    "OUTCOME_WON",
    "PIPELINE_WON",
    "PLANNING_GAP",
    "P_ATTAIN_MID",
    "P_ATTAIN_START",
    "RUN_RATE",
    "VS_EXPECTED",
    "attainment",
    "called_on",
    "deal_expectations",
    "deal_outcomes",
    "decompose",
]

# --- output vocabulary ----------------------------------------------------------------------
ACTUAL = "actual"
ATTAINMENT = "attainment"
GAP = "gap"
PLANNING_GAP = "planning_gap"
VS_EXPECTED = "vs_expected"
PIPELINE_WON = "pipeline_won_vs_expected"
DEALS_SLIPPED = "deals_slipped"
DEALS_LOST = "deals_lost"
RUN_RATE = "run_rate_vs_expected"
CHURNED = "churned_customers"
NEW_CUSTOMERS = "new_customers"
CAUSES = (PIPELINE_WON, DEALS_SLIPPED, DEALS_LOST, RUN_RATE, CHURNED, NEW_CUSTOMERS)
CHECKPOINT = "checkpoint"
P_ATTAIN_START = "p_attain_start"
P_ATTAIN_MID = "p_attain_mid"
CALLED_ON = "called_on"
# What became of a deal open at the period's start, by the period's end.
OUTCOME_WON, OUTCOME_SLIPPED, OUTCOME_LOST = "won", "slipped", "lost"
_CAUSE_OF = {OUTCOME_WON: PIPELINE_WON, OUTCOME_SLIPPED: DEALS_SLIPPED,
             OUTCOME_LOST: DEALS_LOST}
_PIPELINE = "_pipeline_expected"


def deal_expectations(tables: Tables, start: pd.Timestamp, end: pd.Timestamp,
                      win_model: Any, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The deals open at ``start`` (seen in ``tables``, which should hold only what was known
    then) with ``p`` (won inside ``[start, end)``), ``amount``, ``expected = p * amount`` and
    their node columns: the pipeline part of the feasibility's expectation at ``start``, deal
    by deal (a deal expected to close after ``end`` has ``p = 0``, as in the simulation)."""
    columns = [OPPORTUNITY_ID, "p", AMOUNT, "expected"]
    if not tables.has(OPPORTUNITIES):
        return pd.DataFrame({c: pd.Series(dtype=object if c == OPPORTUNITY_ID else float)
                             for c in columns})
    deals = deal_inputs(tables, start)
    if deals.empty:
        return deal_rows(tables, deals, extra).assign(
            **{c: pd.Series(dtype=object if c == OPPORTUNITY_ID else float) for c in columns})
    rows = pd.concat([deals, period_features(deals, start, end, start)], axis=1)
    p = np.clip(win_model.predict_frame(rows)[WIN_PROBABILITY].to_numpy(dtype=float), 0, 1)
    p = np.where((deals[CLOSE_DATE] >= end).to_numpy(), 0.0, p)
    amount = deals[AMOUNT].to_numpy(dtype=float)
    out = deal_rows(tables, deals, extra)
    out.insert(0, OPPORTUNITY_ID, deals[OPPORTUNITY_ID].to_numpy())
    return out.assign(p=p, **{AMOUNT: amount, "expected": p * amount}).reset_index(drop=True)


def deal_outcomes(tables: Tables, deal_ids: pd.Series, end: pd.Timestamp) -> pd.Series:
    """What became of each deal by the period's end (``end``), as ``tables`` know it: ``won``
    (won, closed before ``end``), ``lost`` (lost, closed before ``end``) or ``slipped`` (won or
    lost later, or still open). Indexed by deal id."""
    ids = pd.Index(deal_ids.drop_duplicates())
    opps = tables.get(OPPORTUNITIES)
    if opps is None or ids.empty:
        return pd.Series(OUTCOME_SLIPPED, index=ids, dtype=object)
    state = opps.drop_duplicates(OPPORTUNITY_ID).set_index(OPPORTUNITY_ID)
    status = state[STATUS].reindex(ids)
    closed_in = (state[CLOSE_DATE].reindex(ids) < end).to_numpy()
    outcome = np.where((status == STATUS_WON).to_numpy() & closed_in, OUTCOME_WON,
                       np.where((status == STATUS_LOST).to_numpy() & closed_in, OUTCOME_LOST,
                                OUTCOME_SLIPPED))
    return pd.Series(outcome, index=ids, dtype=object)


def _node_frame(rows: pd.DataFrame, node_columns: Sequence[str]) -> pd.DataFrame:
    return rows.reindex(columns=list(node_columns))


def decompose(*, events: pd.DataFrame, deals: pd.DataFrame, outcomes: pd.Series,
              first_purchase: pd.Series, churned: pd.DataFrame, outlook: pd.DataFrame,
              start: pd.Timestamp, levels: Sequence[str]) -> pd.DataFrame:
    """``level, key, actual, expected, vs_expected`` and the :data:`CAUSES` per node.

    Args:
        events: the period's revenue events (``amount``, ``customer_id``, ``opportunity_id``
            and node columns; :func:`features.review.period_revenue`).
        deals: the deals open at the start with ``expected`` and node columns
            (:func:`deal_expectations`).
        outcomes: ``won``/``slipped``/``lost`` per deal id (:func:`deal_outcomes`).
        first_purchase: day of each customer's first purchase
            (:func:`features.review.first_purchases`).
        churned: the previous period's revenue events of the churned customers
            (:func:`features.review.churned_customers`).
        outlook: the feasibility frame at the start with every node (``level, key,
            closed_to_date, expected_pipeline, expected_run_rate``).
        start: the period's first day.
        levels: the levels to report, hierarchy first.

    Returns:
        One row per node of ``levels`` that the outlook or the rows reach. ``expected`` is
        ``closed_to_date + expected_pipeline + expected_run_rate`` of the outlook (the mean of
        the simulation without its Monte Carlo noise); the causes add up to ``vs_expected``.
    """
    node_columns = [REP, TEAM, REGION, *(lv for lv in levels if lv not in HIERARCHY_LEVELS)]
    values = [ACTUAL, _PIPELINE, *CAUSES]
    opened = set(deals[OPPORTUNITY_ID]) if len(deals) else set()
    in_pipeline = events[OPPORTUNITY_ID].isin(opened).to_numpy()
    first = events[CUSTOMER_ID].map(first_purchase)
    is_new = (~in_pipeline) & (first >= start).to_numpy()
    cause = np.where(is_new, NEW_CUSTOMERS, RUN_RATE).astype(object)
    linked = events.loc[in_pipeline, OPPORTUNITY_ID].map(outcomes).map(_CAUSE_OF)
    cause[in_pipeline] = linked.to_numpy(dtype=object)
    amount = events[AMOUNT].to_numpy(dtype=float)
    event_rows = _node_frame(events, node_columns).assign(**{ACTUAL: amount})
    for name in CAUSES:
        event_rows[name] = np.where(cause == name, amount, 0.0)
    deal_cause = deals[OPPORTUNITY_ID].map(outcomes).map(_CAUSE_OF).to_numpy(dtype=object)
    expected = deals["expected"].to_numpy(dtype=float) if len(deals) else np.zeros(0)
    deal_part = _node_frame(deals, node_columns).assign(**{_PIPELINE: expected})
    for name in CAUSES:
        deal_part[name] = np.where(deal_cause == name, -expected, 0.0)
    lost = churned[AMOUNT].to_numpy(dtype=float)
    churn_part = _node_frame(churned, node_columns).assign(**{CHURNED: -lost, RUN_RATE: lost})
    parts = [part for part in (event_rows, deal_part, churn_part) if len(part)]
    rows = (pd.concat(parts, ignore_index=True) if parts
            else event_rows.reindex(columns=[*node_columns, *values]))
    rows = rows.reindex(columns=[*node_columns, *values])
    rows[values] = rows[values].astype(float).fillna(0.0)
    sums = node_sums(rows, values, levels)
    seen = outlook[[LEVEL, KEY]].astype({KEY: str}).assign(
        **{EXPECTED: (outlook[CLOSED_TO_DATE] + outlook[EXPECTED_PIPELINE]
                      + outlook[EXPECTED_RUN_RATE]).to_numpy(dtype=float)})
    seen = seen[seen[LEVEL].isin(levels)]
    frame = sums.merge(seen, on=[LEVEL, KEY], how="outer")
    frame[values] = frame[values].fillna(0.0)
    frame[EXPECTED] = frame[EXPECTED].fillna(0.0)
    # The run rate expected at the start: the outlook's expectation less its deals.
    frame[RUN_RATE] -= frame[EXPECTED] - frame[_PIPELINE]
    frame[VS_EXPECTED] = frame[ACTUAL] - frame[EXPECTED]
    order = frame[LEVEL].map({lv: i for i, lv in enumerate(levels)}).fillna(len(levels))
    frame = (frame.assign(_order=order).sort_values(["_order", KEY], kind="stable")
             .drop(columns=["_order", _PIPELINE]).reset_index(drop=True))
    return frame[[LEVEL, KEY, ACTUAL, EXPECTED, VS_EXPECTED, *CAUSES]]


def attainment(actual: pd.Series, target: pd.Series) -> pd.Series:
    """``actual / target`` (达成率); NaN where there is no target or it is not positive."""
    return actual / target.where(target > 0)


def called_on(trail: pd.DataFrame, hit: pd.Series) -> pd.Series:
    """When P(attain) called the outcome: the first checkpoint from which it stayed on the side
    of 0.5 the outcome fell on (at least 0.5 for a hit, below for a miss) up to the last one.

    Args:
        trail: ``level, key, checkpoint, p_attain`` (NaN where the node had no target).
        hit: whether each node reached its target, indexed by ``(level, key)``; NaN where
            it had none.

    Returns:
        The checkpoint date per ``(level, key)``; NaT where the last checkpoint still had it
        wrong (never called) or there is no target.
    """
    if trail.empty:
        return pd.Series(pd.NaT, index=hit.index, dtype="datetime64[ns]")
    ordered = trail.sort_values(CHECKPOINT, kind="stable")
    index = pd.MultiIndex.from_frame(ordered[[LEVEL, KEY]])
    outcome = hit.reindex(index).to_numpy(dtype=float)
    p = ordered[P_ATTAIN].to_numpy(dtype=float)
    right = np.where(np.isnan(outcome) | np.isnan(p), False,
                     np.where(outcome == 1.0, p >= 0.5, p < 0.5))
    found: dict[Any, Any] = {}
    for node, group in pd.DataFrame({"right": right, CHECKPOINT: ordered[CHECKPOINT].to_numpy()},
                                    index=index).groupby(level=[0, 1], sort=False):
        flags = group["right"].to_numpy()
        if not flags.any() or not flags[-1]:
            found[node] = pd.NaT
            continue
        wrong = np.flatnonzero(~flags)
        first = 0 if wrong.size == 0 else int(wrong[-1]) + 1
        found[node] = group[CHECKPOINT].iloc[first]
    out = pd.Series(found, dtype="datetime64[ns]")
    return out.reindex(hit.index)
