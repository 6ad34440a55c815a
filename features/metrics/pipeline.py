"""Pipeline metrics, from the funnel (features.funnel): coverage, conversion, stalled and
slipped deals, days in stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import pandas as pd

from engine.compute import TableRead
from engine.io import Tables
from engine.schemas import (
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    ENTERED_AT,
    KEY,
    LEVEL,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    OWNER,
    PERIOD,
    REGION,
    REP,
    STAGE,
    STAGE_HISTORY,
    STATUS,
    STATUS_OPEN,
    TABLES,
    TARGETS,
    TEAM,
)
from features.funnel import (
    DAYS_IN_STAGE,
    funnel_node_metrics,
    opportunity_state,
    snapshot_date,
)
from features.hierarchy import opportunity_nodes
from features.metrics.base import (
    NODE_SCOPES,
    MetricUnavailable,
    metric_frame,
    money,
    node_labels,
    pct,
    require_tables,
    resolve_period,
    stack,
)
from features.metrics.context import KeyedPart, MetricContext

__all__ = [
    "conversion_drop",
    "deal_days_in_stage",
    "deal_part",
    "open_deal_stages",
    "pipeline_coverage",
    "slipped_deals",
    "slipped_share",
    "stalled_deals",
]


def _funnel(context: MetricContext, as_of: pd.Timestamp, params: Mapping[str, Any]
            ) -> pd.DataFrame:
    period = resolve_period(params.get("period", "quarter"), as_of)
    windows = (int(params.get("stall_days", 30)), int(params.get("trailing_days", 180)),
               int(params.get("baseline_days", 365)))
    key = ("funnel", as_of, period, windows)
    return context.cached(key, lambda: funnel_node_metrics(
        context.tables, as_of, period, stall_days=windows[0], trailing_days=windows[1],
        baseline_days=windows[2]))


def _funnel_metric(context: MetricContext, nodes: pd.DataFrame, value: pd.Series,
                   words: Callable[[pd.Series], str], details: list[str]) -> pd.DataFrame:
    parts = []
    for level in NODE_SCOPES:
        rows = nodes[nodes[LEVEL] == level]
        if rows.empty:
            continue
        keys = rows[KEY].astype(object)
        text = rows.apply(words, axis=1) if len(rows) else pd.Series(dtype=object)
        labels = node_labels(context.tables, level, keys)
        parts.append(metric_frame(level, labels, value.loc[rows.index], text,
                                  {d: rows[d] for d in details}))
    return stack(parts)


def pipeline_coverage(context: MetricContext, as_of: pd.Timestamp,
                      params: Mapping[str, Any]) -> pd.DataFrame:
    """Coverage per node that still has target to reach."""
    require_tables(context.tables, "pipeline_coverage", OPPORTUNITIES, TARGETS)
    nodes = _funnel(context, as_of, params)
    nodes = nodes[nodes["coverage"].notna()]
    return _funnel_metric(
        context, nodes, nodes["coverage"],
        lambda r: f"coverage {r['coverage']:.1f}x: open pipeline {money(r['pipeline_in_period'])}"
                  f" expected in {r[PERIOD]} against {money(r['remaining_target'])} "
                  "remaining target",
        [PERIOD, "pipeline_in_period", "remaining_target", "target", "revenue_to_date"])


def conversion_drop(context: MetricContext, as_of: pd.Timestamp,
                    params: Mapping[str, Any]) -> pd.DataFrame:
    """Per node: the stage whose conversion fell most against its trailing rate."""
    require_tables(context.tables, "conversion_drop", OPPORTUNITIES, STAGE_HISTORY)
    nodes = _funnel(context, as_of, params)
    nodes = nodes[nodes["conversion_drop"].notna()]
    return _funnel_metric(
        context, nodes, nodes["conversion_drop"],
        lambda r: f"conversion out of stage {r['conversion_drop_stage']} fell "
                  f"{r['conversion_drop'] * 100:.0f} points (last {params['trailing_days']}d "
                  f"against the {params['baseline_days']}d before); overall forward conversion "
                  f"{pct(r['conversion'])} vs {pct(r['conversion_baseline'])}",
        ["conversion_drop_stage", "conversion", "conversion_baseline"])


def stalled_deals(context: MetricContext, as_of: pd.Timestamp,
                  params: Mapping[str, Any]) -> pd.DataFrame:
    """Stalled open deals per node."""
    require_tables(context.tables, "stalled_deals", OPPORTUNITIES, STAGE_HISTORY)
    nodes = _funnel(context, as_of, params)
    nodes = nodes[nodes["stalled_deals"].notna()]
    return _funnel_metric(
        context, nodes, nodes["stalled_deals"],
        lambda r: f"{r['stalled_deals']:.0f} of {r['open_deals']:.0f} open deals "
                  f"({money(r['stalled_pipeline'])}) without a stage change for "
                  f"{params['stall_days']}+ days",
        ["stalled_pipeline", "open_deals", "open_pipeline"])


def _slip_nodes(context: MetricContext, as_of: pd.Timestamp, params: Mapping[str, Any],
                metric: str) -> pd.DataFrame:
    """Funnel nodes with their slipped deals; unavailable without recorded close dates."""
    tables = context.tables
    require_tables(tables, metric, OPPORTUNITIES, STAGE_HISTORY)
    if CLOSE_DATE not in tables[STAGE_HISTORY].columns:
        raise MetricUnavailable(metric, "a close_date column in stage_history")
    nodes = _funnel(context, as_of, params)
    return nodes[nodes["slipped_deals"].notna()]


def slipped_deals(context: MetricContext, as_of: pd.Timestamp,
                  params: Mapping[str, Any]) -> pd.DataFrame:
    """Slipped open deals per node."""
    nodes = _slip_nodes(context, as_of, params, "slipped_deals")
    return _funnel_metric(
        context, nodes, nodes["slipped_deals"],
        lambda r: f"{r['slipped_deals']:.0f} of {r['open_deals']:.0f} open deals had their "
                  "close date pushed out",
        ["open_deals", "open_pipeline"])


def slipped_share(context: MetricContext, as_of: pd.Timestamp,
                  params: Mapping[str, Any]) -> pd.DataFrame:
    """Slipped share of the open deals per node (a team that plans optimistically shows it)."""
    nodes = _slip_nodes(context, as_of, params, "slipped_share")
    nodes = nodes[nodes["open_deals"] >= int(params.get("min_open_deals", 10))]
    return _funnel_metric(
        context, nodes, nodes["slipped_deals"] / nodes["open_deals"],
        lambda r: f"{r['slipped_deals']:.0f} of {r['open_deals']:.0f} open deals "
                  f"({r['slipped_deals'] / r['open_deals']:.0%}) had their close date pushed "
                  "out",
        ["slipped_deals", "open_deals", "open_pipeline"])


def open_deal_stages(frames: dict[str, pd.DataFrame], as_of: pd.Timestamp,
                     snapshot: pd.Timestamp) -> pd.DataFrame:
    """Per deal open at ``as_of`` whose stage entry is known (a :class:`KeyedPart`, one bucket
    of deals): ``owner, amount, stage, days_in_stage, close_date`` (expected at ``as_of``);
    ``snapshot`` is the date the whole opportunities table describes."""
    state = opportunity_state(Tables(frames), as_of, snapshot=snapshot)
    deals = state[(state[STATUS] == STATUS_OPEN) & state[DAYS_IN_STAGE].notna()]
    return pd.DataFrame({
        OPPORTUNITY_ID: deals[OPPORTUNITY_ID].to_numpy(dtype=object),
        OWNER: deals[OWNER].to_numpy(dtype=object),
        AMOUNT: deals[AMOUNT].to_numpy(dtype=float),
        STAGE: deals[STAGE].to_numpy(dtype=object),
        DAYS_IN_STAGE: deals[DAYS_IN_STAGE].to_numpy(dtype=float),
        CLOSE_DATE: deals[CLOSE_DATE].to_numpy(dtype="datetime64[ns]"),
    })


def deal_part(as_of: pd.Timestamp, snapshot: pd.Timestamp) -> KeyedPart:
    """:func:`open_deal_stages` as a part computed deal by deal (every column of the deals
    and of their stage changes, rows dated before ``as_of``)."""
    return KeyedPart(
        name=f"open_deal_stages:{pd.Timestamp(snapshot).isoformat()}", key=OPPORTUNITY_ID,
        reads=(TableRead(OPPORTUNITIES, tuple(TABLES[OPPORTUNITIES].columns), CREATED_AT),
               TableRead(STAGE_HISTORY, tuple(TABLES[STAGE_HISTORY].columns), ENTERED_AT)),
        fn=partial(open_deal_stages, as_of=pd.Timestamp(as_of),
                   snapshot=pd.Timestamp(snapshot)))


def deal_days_in_stage(context: MetricContext, as_of: pd.Timestamp,
                       params: Mapping[str, Any]) -> pd.DataFrame:
    """Per open deal: days since it entered its stage."""
    tables = context.tables
    require_tables(tables, "deal_days_in_stage", OPPORTUNITIES, STAGE_HISTORY)
    snapshot = context.cached(("snapshot_date",), lambda: snapshot_date(tables))
    deals = context.by_key(deal_part(as_of, snapshot), as_of)
    nodes = context.cached(("opportunity_nodes",),
                           lambda: opportunity_nodes(tables).set_index(OPPORTUNITY_ID))
    ids = deals[OPPORTUNITY_ID].astype(object)
    labels = pd.DataFrame({c: ids.map(nodes[c]) for c in (REGION, TEAM, REP)})
    labels[OPPORTUNITY_ID] = ids
    words = [f"deal {i} ({money(a)}, owner {o}) in stage {s} for {d:.0f} days"
             for i, a, o, s, d in zip(ids, deals[AMOUNT], deals[OWNER], deals[STAGE],
                                      deals[DAYS_IN_STAGE], strict=True)]
    days = deals[DAYS_IN_STAGE].where(deals[AMOUNT] >= float(params["min_amount"]))
    return metric_frame("opportunity", labels, days, pd.Series(words, dtype=object),
                        {"stage": deals[STAGE], AMOUNT: deals[AMOUNT],
                         CLOSE_DATE: deals[CLOSE_DATE].dt.date.astype(str)})
