"""The metric catalogue on tiny hand-made tables, against values computed by hand.

The company: reps Ana and Bo (team N1, region North) and Cy (team S1, South); customers C1
(Ana), C2 (Bo), C3 (Cy); period 2026Q4, as_of 2026-11-16, exactly half of the quarter elapsed
(46 of 92 days).
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

import pandas as pd
import pytest

from engine.io import Tables, validate_tables
from engine.warnings.metrics import (
    METRICS,
    MetricContext,
    MetricUnavailable,
    Providers,
    catalogue,
    compute_metric,
    default_providers,
    resolve_period,
)

AS_OF = pd.Timestamp("2026-11-16")


def _raw() -> dict[str, pd.DataFrame]:
    def frame(columns: str, *rows: str) -> pd.DataFrame:
        return pd.DataFrame([r.split(",") for r in rows], columns=columns.split(","))

    return {
        "org": frame("rep,team,region", "Ana,N1,North", "Bo,N1,North", "Cy,S1,South"),
        "customers": frame("customer_id,account_manager", "C1,Ana", "C2,Bo", "C3,Cy"),
        "orders": frame(
            "customer_id,order_date,amount",
            "C1,2026-10-05,100", "C2,2026-10-10,50", "C3,2026-11-01,30",
            "C1,2026-11-20,999",  # after as_of: not seen
            "C1,2026-09-30,500",  # before the period
        ),
        "targets": frame(
            "period,level,key,amount",
            "2026Q4,company,all,1000", "2026Q4,region,North,400", "2026Q4,region,South,200",
            "2026Q4,team,N1,400", "2026Q4,rep,Ana,200", "2026Q4,rep,Bo,200",
            "2026Q4,rep,Cy,100", "2026Q3,rep,Ana,999",
        ),
        "receivables": frame(
            "invoice_id,customer_id,issued_at,due_date,amount,paid_at",
            "I1,C1,2026-10-01,2026-10-31,100,",            # overdue 16 days
            "I2,C1,2026-11-01,2026-12-01,300,",            # outstanding, not due
            "I3,C2,2026-09-01,2026-10-01,200,2026-11-20",  # paid after as_of: overdue at T
            "I4,C2,2026-09-01,2026-10-01,50,2026-10-15",   # paid before: not outstanding
            "I5,C3,2026-11-20,2026-12-20,1000,",           # issued after as_of
            "I6,C3,2026-10-01,2026-11-10,100,",            # overdue 6 days
        ),
        "interactions": frame(
            "customer_id,occurred_at,kind",
            "C1,2026-10-20,complaint", "C1,2026-11-01,complaint", "C1,2026-11-15,Complaint",
            "C1,2026-11-16,complaint",  # on as_of: not before it
            "C1,2026-11-02,ticket",
            "C1,2026-06-01,complaint", "C1,2026-08-01,complaint",
            "C2,2026-11-10,complaint",
            "C3,2026-10-20,complaint", "C3,2026-10-25,complaint",
            *[f"C3,2026-{m:02d}-01,complaint" for m in range(5, 11)],
        ),
        "opportunities": frame(
            "opportunity_id,owner,created_at,close_date,stage,status,amount,customer_id",
            "O1,Ana,2026-09-01,2026-12-01,proposal,open,300,C1",
            "O2,Cy,2026-09-01,2027-02-01,prospecting,open,500,C3",
        ),
        "stage_history": frame(
            "opportunity_id,stage,entered_at",
            "O1,prospecting,2026-09-01", "O1,proposal,2026-09-10", "O2,prospecting,2026-09-01",
        ),
    }


def _tables(drop: tuple[str, ...] = ()) -> Tables:
    raw = {k: v for k, v in _raw().items() if k not in drop}
    tables, problems = validate_tables(raw)
    assert problems == []
    return tables


def _churn(tables: Tables, as_of: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["C1", "C2", "C3"],
                         "churn_probability": [0.8, 0.3, 0.6],
                         "revenue_at_risk": [80.0, 30.0, 60.0]})


def _attainment(tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame({"level": ["company", "region"], "key": ["all", "North"],
                         "target": [1000.0, 400.0], "p_attain": [0.3, 0.6],
                         "expected": [800.0, 420.0]})


def _forecast(tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame({"level": ["company", "region"], "key": ["all", "North"],
                         "expected": [800.0, 500.0]})


@pytest.fixture(scope="module")
def context() -> MetricContext:
    return MetricContext(_tables(), Providers(churn_scores=_churn, attainment=_attainment,
                                              period_forecast=_forecast))


def _values(context: MetricContext, metric: str, **params: Any) -> dict[tuple[str, str], float]:
    frame = compute_metric(metric, context, AS_OF, params)
    keys = {"company": None, "region": "region", "team": "team", "rep": "rep",
            "customer": "customer_id", "opportunity": "opportunity_id"}
    return {(row["scope"], row[keys[row["scope"]]] if keys[row["scope"]] else "all"):
            row["value"] for row in frame.to_dict(orient="records")}


def test_pace_against_plan(context: MetricContext) -> None:
    values = _values(context, "pace_against_plan")
    assert values == pytest.approx({
        ("company", "all"): 180 / 500, ("region", "North"): 150 / 200,
        ("region", "South"): 30 / 100, ("team", "N1"): 150 / 200,
        ("rep", "Ana"): 100 / 100, ("rep", "Bo"): 50 / 100, ("rep", "Cy"): 30 / 50,
    })
    frame = compute_metric("pace_against_plan", context, AS_OF)
    ana = frame[frame["rep"] == "Ana"].iloc[0]
    assert (ana["region"], ana["team"], ana["period"]) == ("North", "N1", "2026Q4")
    assert ana["explanation"] == (
        "revenue to date 100 is 100% of plan: 200 target x 50% of 2026Q4 elapsed = 100 "
        "expected by now")
    team = frame[frame["scope"] == "team"].iloc[0]
    assert team["region"] == "North"  # a team carries its region (for inhibition, grouping)


def test_pace_is_silent_too_early_in_the_period(context: MetricContext) -> None:
    early = compute_metric("pace_against_plan", context, pd.Timestamp("2026-10-05"))
    assert early.empty


def test_overdue_receivables_ratio(context: MetricContext) -> None:
    assert _values(context, "overdue_receivables_ratio") == pytest.approx({
        ("customer", "C1"): 100 / 400, ("customer", "C2"): 1.0, ("customer", "C3"): 1.0,
        ("rep", "Ana"): 0.25, ("rep", "Bo"): 1.0, ("rep", "Cy"): 1.0,
        ("team", "N1"): 300 / 600, ("team", "S1"): 1.0,
        ("region", "North"): 300 / 600, ("region", "South"): 1.0,
        ("company", "all"): 400 / 700,
    })
    graced = _values(context, "overdue_receivables_ratio", grace_days=7)
    assert graced[("customer", "C3")] == 0.0
    assert graced[("company", "all")] == pytest.approx(300 / 700)
    frame = compute_metric("overdue_receivables_ratio", context, AS_OF)
    c1 = frame[frame["customer_id"] == "C1"].iloc[0]
    assert c1["oldest_days_overdue"] == 16 and c1["outstanding"] == 400
    assert c1["explanation"] == "overdue 100 of 400 outstanding (25%), 1 invoices past due"


def test_complaint_spike(context: MetricContext) -> None:
    values = _values(context, "complaint_spike")
    # C1: 3 recent against 2 in 180 days = 0.33 per 30 days, floored at 0.5 -> 6.
    # C3: 2 recent against 6 in 180 days = 1 per 30 days -> 2. C2: 1 recent < 2 -> no value.
    assert values[("customer", "C1")] == pytest.approx(6.0)
    assert values[("customer", "C3")] == pytest.approx(2.0)
    assert pd.isna(values[("customer", "C2")])
    assert values[("rep", "Ana")] == pytest.approx(6.0)
    assert values[("team", "N1")] == pytest.approx(4 / 0.5)  # C1 + C2 summed first
    frame = compute_metric("complaint_spike", context, AS_OF)
    c3 = frame[frame["customer_id"] == "C3"].iloc[0]
    assert c3["explanation"] == ("2 complaints in the last 30 days against 1 per 30 days over "
                                 "the 180 days before")
    assert c3["rep"] == "Cy" and c3["region"] == "South"


def test_churn_metrics_from_the_provider(context: MetricContext) -> None:
    exposure = _values(context, "churn_exposure")
    assert exposure == pytest.approx({
        ("rep", "Ana"): 80, ("rep", "Bo"): 30, ("rep", "Cy"): 60, ("team", "N1"): 110,
        ("team", "S1"): 60, ("region", "North"): 110, ("region", "South"): 60,
        ("company", "all"): 170})
    risky = _values(context, "high_risk_customers")
    assert risky[("rep", "Ana")] == 1 and risky[("rep", "Bo")] == 0
    assert risky[("company", "all")] == 2
    assert _values(context, "churn_probability")[("customer", "C1")] == 0.8


def test_provider_metrics(context: MetricContext) -> None:
    attain = _values(context, "attainment_probability")
    assert attain == {("company", "all"): 0.3, ("region", "North"): 0.6}
    gap = _values(context, "forecast_gap")
    assert gap == pytest.approx({("company", "all"): 0.2, ("region", "North"): -0.25})


def test_funnel_metrics(context: MetricContext) -> None:
    coverage = _values(context, "pipeline_coverage")
    # Ana: 300 of pipeline closing in the quarter / (200 target - 100 done) = 3x.
    assert coverage[("rep", "Ana")] == pytest.approx(3.0)
    assert coverage[("team", "N1")] == pytest.approx(300 / 250)
    assert coverage[("company", "all")] == pytest.approx(300 / 820)
    assert coverage[("rep", "Cy")] == 0.0  # O2 closes after the quarter
    stalled = _values(context, "stalled_deals")
    assert stalled[("rep", "Ana")] == 1 and stalled[("company", "all")] == 2
    assert stalled[("rep", "Bo")] == 0
    days = _values(context, "deal_days_in_stage")
    assert days == {("opportunity", "O1"): 67.0, ("opportunity", "O2"): 76.0}
    frame = compute_metric("pipeline_coverage", context, AS_OF)
    ana = frame[frame["rep"] == "Ana"].iloc[0]
    assert ana["explanation"] == (
        "coverage 3.0x: open pipeline 300 expected in 2026Q4 against 100 remaining target")


def test_unavailable_metrics_say_what_they_need() -> None:
    bare = MetricContext(_tables(drop=("receivables", "stage_history")), Providers())
    cases = {
        "overdue_receivables_ratio": "receivables",
        "stalled_deals": "stage_history",
        "churn_exposure": "engine/pipelines/churn.py score_churn",
        "attainment_probability": "feasibility",
        "forecast_gap": "forecaster",
    }
    for metric, needs in cases.items():
        with pytest.raises(MetricUnavailable, match="not available yet: needs") as caught:
            compute_metric(metric, bare, AS_OF)
        assert needs in str(caught.value)
    with pytest.raises(MetricUnavailable, match="close_date column in stage_history"):
        compute_metric("slipped_deals", MetricContext(_tables(), Providers()), AS_OF)


def test_churn_model_missing_makes_the_metric_unavailable() -> None:
    def no_model(tables: Tables, as_of: pd.Timestamp) -> pd.DataFrame:
        raise LookupError("no champion for quotacast-churn yet")

    context = MetricContext(_tables(), Providers(churn_scores=no_model))
    with pytest.raises(MetricUnavailable, match="a churn model: no champion"):
        compute_metric("churn_exposure", context, AS_OF)


def test_catalogue_documents_every_metric() -> None:
    table = catalogue()
    assert list(table["metric"]) == list(METRICS)
    for column in ("scopes", "unit", "meaning", "needs"):
        assert (table[column].str.len() > 0).all(), column


def test_default_providers_wire_the_modules_that_exist() -> None:
    providers = default_providers()  # nothing is imported or called yet
    for name, module in (("churn_scores", "engine.pipelines.churn"),
                         ("attainment", "engine.pipelines.feasibility")):
        assert (getattr(providers, name) is not None) == (find_spec(module) is not None)
    assert providers.period_forecast is None


@pytest.mark.parametrize(("spec", "expected"), [
    ("quarter", "2026Q4"), ("month", "2026-11"), ("year", "2026"), ("2026Q3", "2026Q3")])
def test_resolve_period(spec: str, expected: str) -> None:
    assert resolve_period(spec, AS_OF) == expected


def test_resolve_period_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="period must look like"):
        resolve_period("next quarter", AS_OF)
