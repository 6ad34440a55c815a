"""Metrics against the period's targets from providers: attainment probability (the
feasibility simulation), forecast gap (a period forecast), pipeline gap coverage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from engine.io import tier_targets
from engine.schemas import (
    AMOUNT,
    COMPANY_KEY,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    PERIOD,
    TARGETS,
)
from features.metrics.base import (
    NODE_SCOPES,
    MetricUnavailable,
    frame_or_reason,
    metric_frame,
    money,
    node_labels,
    pct,
    require_tables,
    resolve_period,
    stack,
)
from features.metrics.context import ForecastFromAttainment, MetricContext

__all__ = [
    "attainment_probability",
    "forecast_gap",
    "pipeline_gap_coverage",
]


def _period_frame(context: MetricContext, as_of: pd.Timestamp, params: Mapping[str, Any],
                  metric: str, name: str, needs: str) -> tuple[pd.DataFrame, str]:
    """A provider's frame for the rule's period, computed once per (provider, period, as_of).

    A forecast read off the attainment provider (:class:`ForecastFromAttainment`) shares the
    attainment frame's cache entry: one feasibility simulation serves every metric on it.
    """
    provider = getattr(context.providers, name)
    if provider is None:
        raise MetricUnavailable(metric, needs)
    # == rather than is: a bound method is a new object at each attribute access.
    if (isinstance(provider, ForecastFromAttainment)
            and provider.attainment == context.providers.attainment):
        name, provider = "attainment", provider.attainment
    period = resolve_period(params["period"], as_of)
    frame: pd.DataFrame | str = context.cached(
        (name, as_of, period),
        lambda: frame_or_reason(lambda: provider(context.tables, period, as_of),
                                f"the {name} of {period}"))
    if isinstance(frame, str):
        raise MetricUnavailable(metric, frame)
    return frame, period


def _period_provider(context: MetricContext, as_of: pd.Timestamp, params: Mapping[str, Any],
                     metric: str, name: str, needs: str) -> tuple[pd.DataFrame, str]:
    frame, period = _period_frame(context, as_of, params, metric, name, needs)
    return frame[frame[LEVEL].isin(NODE_SCOPES)], period


def _node_rows(context: MetricContext, frame: pd.DataFrame, value: pd.Series,
               words: pd.Series, details: list[str]) -> pd.DataFrame:
    parts = []
    for level in NODE_SCOPES:
        rows = frame[frame[LEVEL] == level]
        labels = node_labels(context.tables, level, rows[KEY].astype(object))
        parts.append(metric_frame(level, labels, value.loc[rows.index], words.loc[rows.index],
                                  {d: rows[d] for d in details if d in rows.columns}))
    return stack(parts)


_CHILD = {LEVEL_COMPANY: LEVEL_REGION, LEVEL_REGION: LEVEL_TEAM,
          LEVEL_TEAM: LEVEL_REP}


def _parents(context: MetricContext, frame: pd.DataFrame) -> pd.Series:
    """The parent node key of each row (``all`` under the company; NaN for the company)."""
    parent = pd.Series([COMPANY_KEY if lv == LEVEL_REGION else None
                        for lv in frame[LEVEL]], index=frame.index, dtype=object)
    for level, above in ((LEVEL_TEAM, LEVEL_REGION), (LEVEL_REP, LEVEL_TEAM)):
        rows = frame.index[frame[LEVEL] == level]
        if len(rows):
            labels = node_labels(context.tables, level, frame.loc[rows, KEY].astype(object))
            parent.loc[rows] = labels[above].to_numpy()
    return parent


def _shortfalls(context: MetricContext, frame: pd.DataFrame, n: int = 3) -> pd.Series:
    """Per node row: its children furthest short of target, in words (empty when none is).

    ``region South 1.3M short (P 2%)``: what a company alert stands for when hierarchy
    inhibition keeps its regions quiet.
    """
    short = (frame["target"] - frame["expected"]).astype(float)
    chance = frame["p_attain"] if "p_attain" in frame.columns else None
    behind = frame.assign(_short=short, _parent=_parents(context, frame))[short > 0]
    behind = behind.sort_values("_short", ascending=False, kind="stable")
    named: dict[tuple[str, str], list[str]] = {}
    for i, level, key, parent, amount in zip(behind.index, behind[LEVEL], behind[KEY],
                                             behind["_parent"], behind["_short"],
                                             strict=True):
        mine = named.setdefault((str(level), str(parent)), [])
        if len(mine) < n:
            odds = f" (P {pct(float(chance.loc[i]))})" if chance is not None else ""
            mine.append(f"{level} {key} {money(amount)} short{odds}")
    return pd.Series([", ".join(named.get((_CHILD.get(str(level), ""), str(key)), []))
                      for level, key in zip(frame[LEVEL], frame[KEY], strict=True)],
                     index=frame.index, dtype=object)


def _with_shortfalls(words: pd.Series, shortfalls: pd.Series) -> pd.Series:
    return pd.Series([f"{w}; furthest behind: {s}" if s else w
                      for w, s in zip(words, shortfalls, strict=True)], index=words.index,
                     dtype=object)


_FEASIBILITY_NEEDS = ("the feasibility simulation (service/usecases/feasibility.py "
                      "run_feasibility): a provider (tables, period, as_of) -> level, key, "
                      "target, p_attain, expected")


def attainment_probability(context: MetricContext, as_of: pd.Timestamp,
                           params: Mapping[str, Any]) -> pd.DataFrame:
    """P(attain) per node with a target, from the feasibility simulation."""
    frame, period = _period_provider(context, as_of, params, "attainment_probability",
                                     "attainment", _FEASIBILITY_NEEDS)
    # A simulation without an expectation (NaN draws) has no probability either.
    value = frame["p_attain"].where(frame["expected"].notna())
    words = pd.Series([
        f"P(attain) {pct(p)}: expected {money(e)} against {money(t)} target in {period} "
        f"(gap {money(t - e)})"
        for p, e, t in zip(value, frame["expected"], frame["target"], strict=True)
    ], index=frame.index, dtype=object)
    words = _with_shortfalls(words, _shortfalls(context, frame))
    return _node_rows(context, frame.assign(period=period), value, words,
                      ["period", "target", "expected", "p10", "p50", "p90", "gap"])


_FORECAST_NEEDS = ("the revenue forecaster: a provider (tables, period, as_of) -> level, key, "
                   "expected (closed to date plus the forecast of the rest of the period)")


def forecast_gap(context: MetricContext, as_of: pd.Timestamp,
                 params: Mapping[str, Any]) -> pd.DataFrame:
    """The forecast's shortfall against target per node."""
    require_tables(context.tables, "forecast_gap", TARGETS)
    frame, period = _period_provider(context, as_of, params, "forecast_gap", "period_forecast",
                                     _FORECAST_NEEDS)
    targets = tier_targets(context.tables[TARGETS])
    targets = targets[targets[PERIOD].astype(str) == period].set_index([LEVEL, KEY])
    index = pd.MultiIndex.from_frame(frame[[LEVEL, KEY]])
    target = pd.Series(targets[AMOUNT].reindex(index).to_numpy(), index=frame.index)
    gap = (target - frame["expected"]) / target.where(target > 0)
    words = pd.Series([
        f"forecast {money(e)} against {money(t)} target in {period}: gap {money(t - e)} "
        f"({pct(g)})" for e, t, g in zip(frame["expected"], target, gap, strict=True)
    ], index=frame.index, dtype=object)
    frame = frame.assign(target=target, period=period)
    keep = gap.notna()
    words = _with_shortfalls(words[keep], _shortfalls(context, frame[keep]))
    return _node_rows(context, frame[keep], gap[keep], words, ["period", "target",
                                                                "expected"])


_GAP_COLUMNS = ("target", "closed_to_date", "expected_run_rate", "pipeline_in_period")


def pipeline_gap_coverage(context: MetricContext, as_of: pd.Timestamp,
                          params: Mapping[str, Any]) -> pd.DataFrame:
    """Coverage of the pipeline's part of the target, per node with a target.

    Most revenue of a business with repeat customers is run rate (unlinked repeat orders and
    deals not yet in the pipeline): pipeline / remaining target is far below 3x everywhere
    without anything being wrong. Planners mean the part the pipeline must bring: remaining
    target minus expected run rate.
    """
    frame, period = _period_provider(context, as_of, params, "pipeline_gap_coverage",
                                     "attainment", _FEASIBILITY_NEEDS)
    missing = [c for c in _GAP_COLUMNS if c not in frame.columns]
    if missing:
        raise MetricUnavailable("pipeline_gap_coverage", "an attainment provider with the "
                                f"columns {', '.join(missing)} (run_feasibility has them)")
    target = frame["target"].astype(float)
    gap = target - frame["closed_to_date"] - frame["expected_run_rate"]
    covered = gap < float(params["min_gap_share"]) * target
    value = (frame["pipeline_in_period"] / gap.where(~covered)).astype(float)
    words = pd.Series([
        f"pipeline {money(p)} expected to close in {period} covers {v:.1f}x the {money(g)} "
        f"the run rate leaves: target {money(t)} - closed {money(c)} - expected run rate "
        f"{money(r)}" if pd.notna(v) else
        f"the expected run rate {money(r)} and closed {money(c)} cover the {money(t)} "
        f"target within {float(params['min_gap_share']):.0%}"
        for p, v, g, t, c, r in zip(frame["pipeline_in_period"], value, gap, target,
                                    frame["closed_to_date"], frame["expected_run_rate"],
                                    strict=True)
    ], index=frame.index, dtype=object)
    words = _with_shortfalls(words, _shortfalls(context, frame))
    frame = frame.assign(period=period, pipeline_gap=gap)
    return _node_rows(context, frame, value, words,
                      ["period", "target", "closed_to_date", "expected_run_rate",
                       "pipeline_in_period", "pipeline_gap"])
