"""The catalogue: every warning metric, one entry each (name, scopes, unit, meaning, default
params, what it needs, the function), in the order ``quotacast warnings metrics`` lists them.

A metric's function lives in the module of its domain (:mod:`~features.metrics.plan`,
:mod:`~features.metrics.pipeline`, :mod:`~features.metrics.customers`,
:mod:`~features.metrics.churn`, :mod:`~features.metrics.targets`); adding one is writing the
function there and one :class:`MetricSpec` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from features.metrics.base import NODE_SCOPES, PERIOD_PARAM
from features.metrics.churn import (
    churn_exposure,
    churn_exposure_share,
    churn_probability,
    high_risk_customers,
)
from features.metrics.context import MetricContext, MetricFn
from features.metrics.customers import (
    CUSTOMER_SCOPES,
    complaint_spike,
    overdue_receivables_ratio,
)
from features.metrics.inventory import inventory_turnover
from features.metrics.pipeline import (
    conversion_drop,
    deal_days_in_stage,
    pipeline_coverage,
    slipped_deals,
    slipped_share,
    stalled_deals,
)
from features.metrics.plan import pace_against_plan
from features.metrics.process import target_attainment
from features.metrics.targets import (
    attainment_probability,
    forecast_gap,
    pipeline_gap_coverage,
)

__all__ = ["METRICS", "MetricSpec", "catalogue", "compute_metric"]


@dataclass(frozen=True)
class MetricSpec:
    """One catalogue entry.

    Attributes:
        name: what rules write in ``metric``.
        scopes: the scopes it has rows for.
        unit: ratio, share, probability, count, amount, days.
        meaning: one sentence for the README.
        params: the parameters it takes, with their defaults.
        needs: the tables or modules it needs, in words.
        fn: the function.
    """

    name: str
    scopes: tuple[str, ...]
    unit: str
    meaning: str
    params: dict[str, Any]
    needs: str
    fn: MetricFn


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec(
        name="pace_against_plan", scopes=NODE_SCOPES, unit="ratio",
        meaning=("Revenue to date in the period / the plan to date (target x the share of the "
                 "period planned by now: from the monthly targets when every month of the period "
                 "has one, else the elapsed share of time); 1 = on plan."),
        params={**PERIOD_PARAM, "min_elapsed_share": 0.1},
        needs="orders, targets (and org for regions, teams, reps)",
        fn=pace_against_plan),
    MetricSpec(
        name="pipeline_coverage", scopes=NODE_SCOPES, unit="ratio",
        meaning="Open pipeline expected to close in the period / target still to reach (3 = 3x).",
        params=dict(PERIOD_PARAM),
        needs="opportunities, orders, targets",
        fn=pipeline_coverage),
    MetricSpec(
        name="conversion_drop", scopes=NODE_SCOPES, unit="share",
        meaning=("Largest fall of a stage's conversion, trailing window against the window before "
                 "(0.15 = 15 points lower)."),
        params={"trailing_days": 180, "baseline_days": 365},
        needs="opportunities, stage_history",
        fn=conversion_drop),
    MetricSpec(
        name="stalled_deals", scopes=NODE_SCOPES, unit="count",
        meaning="Open deals with no stage change for stall_days or more.",
        params={"stall_days": 30},
        needs="opportunities, stage_history",
        fn=stalled_deals),
    MetricSpec(
        name="slipped_deals", scopes=NODE_SCOPES, unit="count",
        meaning="Open deals whose expected close date was pushed later at least once.",
        params={},
        needs="opportunities, stage_history with a close_date column",
        fn=slipped_deals),
    MetricSpec(
        name="slipped_share", scopes=NODE_SCOPES, unit="ratio",
        meaning=("Share of a node's open deals whose expected close date was pushed later at least "
                 "once (0.3 = 30%); NaN for nodes with fewer than min_open_deals open deals."),
        params={"min_open_deals": 10},
        needs="opportunities, stage_history with a close_date column",
        fn=slipped_share),
    MetricSpec(
        name="deal_days_in_stage", scopes=("opportunity",), unit="days",
        meaning=("Days an open deal has spent in its current stage; NaN for deals smaller than "
                 "min_amount (too small to alert on one by one)."),
        params={"min_amount": 0},
        needs="opportunities, stage_history",
        fn=deal_days_in_stage),
    MetricSpec(
        name="target_attainment", scopes=NODE_SCOPES, unit="ratio",
        meaning=("Process targets (targets rows whose metric is new_customers, orders, "
                 "pipeline_created, visits or retention_rate): done to date in the period / the "
                 "plan to date, like pace_against_plan (retention: rate / target rate); 1 = on "
                 "plan. target_metric=all gives each node's target furthest behind; no rows "
                 "without process targets."),
        params={**PERIOD_PARAM, "target_metric": "all", "min_elapsed_share": 0.1},
        needs=("targets with a metric column; orders (new_customers, orders, retention_rate), "
               "opportunities (pipeline_created), interactions of kind visit (visits)"),
        fn=target_attainment),
    MetricSpec(
        name="inventory_turnover", scopes=("product",), unit="ratio",
        meaning=("Sold over the last window_days (units with an orders quantity column, else "
                 "revenue) / the time-weighted average on hand over the same days, per product; "
                 "details.days_of_cover = on hand / sold per day."),
        params={"window_days": 90},
        needs="inventory (product, date, on_hand), orders with a product column",
        fn=inventory_turnover),
    MetricSpec(
        name="complaint_spike", scopes=CUSTOMER_SCOPES, unit="ratio",
        meaning=("Complaints in the last window_days / the usual number per window_days over the "
                 "baseline_days before (at least min_rate); NaN below min_complaints. Only "
                 "customers with at least min_revenue of revenue in the last 365 days count (0 = "
                 "all)."),
        params={"window_days": 30, "baseline_days": 180, "min_complaints": 2, "min_rate": 0.5,
                "min_revenue": 0},
        needs="interactions (kind = complaint)",
        fn=complaint_spike),
    MetricSpec(
        name="overdue_receivables_ratio", scopes=CUSTOMER_SCOPES, unit="share",
        meaning=("Unpaid amount past its due date plus grace_days (plus, with usual_lateness, the "
                 "customer's usual lateness: the 90th percentile of its days late over the last "
                 "365 days) / all unpaid receivables at as_of; NaN when the overdue amount is "
                 "below min_overdue; invoices more than max_days_overdue past due are left out (0 "
                 "= none)."),
        params={"grace_days": 0, "usual_lateness": False, "min_overdue": 0,
                "max_days_overdue": 0},
        needs="receivables",
        fn=overdue_receivables_ratio),
    MetricSpec(
        name="churn_exposure", scopes=NODE_SCOPES, unit="amount",
        meaning=("Revenue at risk (sum of the churn scores' revenue_at_risk) of the customers of "
                 "each account manager (rep), team, region."),
        params={"min_probability": 0.0},
        needs="churn scores (service/usecases/churn.py; a champion churn model)",
        fn=churn_exposure),
    MetricSpec(
        name="churn_exposure_share", scopes=NODE_SCOPES, unit="share",
        meaning=("Revenue at risk of churn / expected revenue of the node's scored customers over "
                 "the same horizon: the share of the book at risk (size-free, unlike "
                 "churn_exposure)."),
        params={"min_probability": 0.0},
        needs=("churn scores with expected_revenue (service/usecases/churn.py; a champion churn "
               "model)"),
        fn=churn_exposure_share),
    MetricSpec(
        name="high_risk_customers", scopes=NODE_SCOPES, unit="count",
        meaning=("Customers whose churn probability is at least min_probability and whose revenue "
                 "at risk is at least min_revenue_at_risk, per node."),
        params={"min_probability": 0.5, "min_revenue_at_risk": 0},
        needs="churn scores (service/usecases/churn.py; a champion churn model)",
        fn=high_risk_customers),
    MetricSpec(
        name="churn_probability", scopes=("customer",), unit="probability",
        meaning=("A customer's churn probability from the churn scores; NaN when its revenue at "
                 "risk is below min_revenue_at_risk (an account too small to alert on by itself) "
                 "or when its last revenue is more than max_days_silent days old (0 = no limit: "
                 "such a customer is lost rather than at risk)."),
        params={"min_revenue_at_risk": 0, "max_days_silent": 0},
        needs="churn scores (service/usecases/churn.py; a champion churn model)",
        fn=churn_probability),
    MetricSpec(
        name="attainment_probability", scopes=NODE_SCOPES, unit="probability",
        meaning="Probability that the period's revenue reaches the node's target (feasibility).",
        params=dict(PERIOD_PARAM),
        needs="feasibility simulation (service/usecases/feasibility.py)",
        fn=attainment_probability),
    MetricSpec(
        name="forecast_gap", scopes=NODE_SCOPES, unit="share",
        meaning=("(target - expected period revenue) / target: the share of the target the "
                 "forecast does not reach (negative = ahead). The default forecast is the "
                 "feasibility simulation's expected revenue (closed to date + expected rest of the "
                 "period)."),
        params=dict(PERIOD_PARAM),
        needs="targets, a period forecast (default: the feasibility simulation)",
        fn=forecast_gap),
    MetricSpec(
        name="pipeline_gap_coverage", scopes=NODE_SCOPES, unit="ratio",
        meaning=("Open pipeline expected to close in the period / the part of the remaining target "
                 "that the run rate is not expected to bring (target - closed to date - expected "
                 "run rate, from the feasibility simulation's backtested run-rate estimate); NaN "
                 "when that gap is below min_gap_share of the target (the run rate covers the "
                 "target)."),
        params={**PERIOD_PARAM, "min_gap_share": 0.02},
        needs="feasibility simulation (service/usecases/feasibility.py)",
        fn=pipeline_gap_coverage),
)}


def compute_metric(name: str, context: MetricContext, as_of: pd.Timestamp,
                   params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The metric's frame at ``as_of`` (defaults filled in for missing params; cached)."""
    spec = METRICS[name]
    merged = {**spec.params, **(params or {})}
    key = ("metric", name, pd.Timestamp(as_of), tuple(sorted(merged.items())))
    frame: pd.DataFrame = context.cached(key, lambda: spec.fn(context, pd.Timestamp(as_of),
                                                               merged))
    return frame


def catalogue() -> pd.DataFrame:
    """The catalogue as a table: name, scopes, unit, meaning, params, needs."""
    return pd.DataFrame([
        {"metric": s.name, "scopes": ", ".join(s.scopes), "unit": s.unit, "meaning": s.meaning,
         "params": ", ".join(f"{k}={v}" for k, v in s.params.items()), "needs": s.needs}
        for s in METRICS.values()
    ])

