"""Churn metrics, from the churn scores provider (a champion churn model)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from engine.io import Tables
from engine.schemas import CUSTOMER_ID, DS
from features.metrics.base import (
    NODE_SCOPES,
    MetricUnavailable,
    frame_or_reason,
    money,
    pct,
    revenue_events,
)
from features.metrics.context import ChurnScores, MetricContext
from features.metrics.customers import customer_rollup, with_top_customers

__all__ = [
    "churn_exposure",
    "churn_exposure_share",
    "churn_probability",
    "high_risk_customers",
]

_CHURN_NEEDS = ("the churn scoring pipeline: service/usecases/churn.py score_churn(tables, "
                "as_of=...) returning customer_id, churn_probability, revenue_at_risk")


def _scores_or_reason(provider: ChurnScores, tables: Tables, as_of: pd.Timestamp
                      ) -> pd.DataFrame | str:
    return frame_or_reason(lambda: provider(tables, as_of), "a churn model")


def _churn(context: MetricContext, as_of: pd.Timestamp, metric: str) -> pd.DataFrame:
    provider = context.providers.churn_scores
    if provider is None:
        raise MetricUnavailable(metric, _CHURN_NEEDS)
    # Cached even when it failed, so three churn rules ask the model registry once.
    scores = context.cached(("churn", as_of),
                            lambda: _scores_or_reason(provider, context.tables, as_of))
    if isinstance(scores, str):
        raise MetricUnavailable(metric, scores)
    return scores.drop_duplicates(CUSTOMER_ID).set_index(CUSTOMER_ID)


def _at_risk(scores: pd.DataFrame) -> Callable[[str], str]:
    """``customer_id -> "C12 250k at 96%"``: a customer named by its revenue at risk."""
    risk = scores["revenue_at_risk"].astype(float).to_dict()
    chance = scores["churn_probability"].astype(float).to_dict()

    def describe(customer: str) -> str:
        return f"{customer} {money(risk[customer])} at {chance[customer]:.0%}"

    return describe


def churn_exposure(context: MetricContext, as_of: pd.Timestamp,
                   params: Mapping[str, Any]) -> pd.DataFrame:
    """Revenue at risk per account manager and region."""
    scores = _churn(context, as_of, "churn_exposure")
    at_risk = scores["churn_probability"] >= float(params["min_probability"])
    sums = pd.DataFrame({"revenue_at_risk": scores["revenue_at_risk"].where(at_risk, 0.0),
                         "customers_at_risk": at_risk.astype(float)})

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        words = [f"revenue at risk {money(r)} across {n:.0f} customers"
                 for r, n in zip(rows["revenue_at_risk"], rows["customers_at_risk"], strict=True)]
        return rows["revenue_at_risk"], pd.Series(words, index=rows.index, dtype=object)

    frame = customer_rollup(context, sums, NODE_SCOPES, finish)
    return with_top_customers(context, frame, sums["revenue_at_risk"], _at_risk(scores))


def churn_exposure_share(context: MetricContext, as_of: pd.Timestamp,
                         params: Mapping[str, Any]) -> pd.DataFrame:
    """Share of each account manager's, team's, region's expected revenue at risk of churn."""
    scores = _churn(context, as_of, "churn_exposure_share")
    if "expected_revenue" not in scores.columns:
        raise MetricUnavailable("churn_exposure_share",
                                "churn scores with an expected_revenue column")
    at_risk = scores["churn_probability"] >= float(params["min_probability"])
    sums = pd.DataFrame({"revenue_at_risk": scores["revenue_at_risk"].where(at_risk, 0.0),
                         "expected_revenue": scores["expected_revenue"].astype(float),
                         "customers": 1.0})

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        book = rows["expected_revenue"]
        value = rows["revenue_at_risk"] / book.where(book > 0)
        words = [f"revenue at risk {money(r)} of {money(b)} expected from {n:.0f} active "
                 f"customers ({pct(v)})" for r, b, n, v in
                 zip(rows["revenue_at_risk"], book, rows["customers"], value, strict=True)]
        return value, pd.Series(words, index=rows.index, dtype=object)

    frame = customer_rollup(context, sums, NODE_SCOPES, finish)
    return with_top_customers(context, frame, sums["revenue_at_risk"], _at_risk(scores))


def high_risk_customers(context: MetricContext, as_of: pd.Timestamp,
                        params: Mapping[str, Any]) -> pd.DataFrame:
    """Count of high-risk customers per account manager, team, region, company."""
    scores = _churn(context, as_of, "high_risk_customers")
    cut, floor = float(params["min_probability"]), float(params["min_revenue_at_risk"])
    risky = (scores["churn_probability"] >= cut) & (scores["revenue_at_risk"] >= floor)
    sums = pd.DataFrame({"high_risk_customers": risky.astype(float),
                         "revenue_at_risk": scores["revenue_at_risk"].where(risky, 0.0)})
    which = f"churn probability >= {cut:.0%}" + (
        f" and revenue at risk >= {money(floor)}" if floor > 0 else "")

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        words = [f"{n:.0f} customers with {which} ({money(r)} revenue at risk)"
                 for n, r in zip(rows["high_risk_customers"], rows["revenue_at_risk"],
                                 strict=True)]
        return rows["high_risk_customers"], pd.Series(words, index=rows.index, dtype=object)

    frame = customer_rollup(context, sums, NODE_SCOPES, finish)
    return with_top_customers(context, frame, sums["revenue_at_risk"], _at_risk(scores))


def churn_probability(context: MetricContext, as_of: pd.Timestamp,
                      params: Mapping[str, Any]) -> pd.DataFrame:
    """Per customer: its churn probability (with the scores' reasons when they give them)."""
    scores = _churn(context, as_of, "churn_probability")
    sums = scores[["churn_probability", "revenue_at_risk"]].astype(float)
    sums["days_silent"] = (as_of - _last_revenue(context, as_of).reindex(sums.index)).dt.days
    reasons = scores["reasons"].astype(str) if "reasons" in scores.columns else None
    floor, silent = float(params["min_revenue_at_risk"]), float(params["max_days_silent"])

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        words = [f"churn probability {p:.0%}, revenue at risk {money(r)}"
                 for p, r in zip(rows["churn_probability"], rows["revenue_at_risk"], strict=True)]
        if reasons is not None:
            words = [f"{w}: {why}" if why else w
                     for w, why in zip(words, reasons.reindex(rows.index).fillna(""),
                                       strict=True)]
        value = rows["churn_probability"].where(rows["revenue_at_risk"] >= floor)
        if silent > 0:
            value = value.where(rows["days_silent"] <= silent)
        return value, pd.Series(words, index=rows.index, dtype=object)

    return customer_rollup(context, sums, ("customer",), finish)




def _last_revenue(context: MetricContext, as_of: pd.Timestamp) -> pd.Series:
    """Per customer: the date of its last revenue before ``as_of``."""
    def compute() -> pd.Series:
        events = revenue_events(context, as_of)
        return events[DS].groupby(events[CUSTOMER_ID].astype(object)).max()

    series: pd.Series = context.cached(("last_revenue", as_of), compute)
    return series
