"""The metric catalogue on tiny hand-made tables, against values computed by hand.

The company: reps Ana and Bo (team N1, region North) and Cy (team S1, South); customers C1
(Ana), C2 (Bo), C3 (Cy); period 2026Q4, as_of 2026-11-16, exactly half of the quarter elapsed
(46 of 92 days).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from engine.io import Tables, validate_tables
from features.metrics import (
    METRICS,
    SCOPES,
    ForecastFromAttainment,
    MetricContext,
    MetricUnavailable,
    Providers,
    catalogue,
    compute_metric,
    resolve_period,
)
from service.usecases.providers import model_providers

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


def test_slipped_deals_and_their_share_from_recorded_close_dates() -> None:
    raw = _raw()
    raw["stage_history"] = pd.DataFrame({
        "opportunity_id": ["O1", "O1", "O2", "O2"],
        "stage": ["prospecting", "proposal", "prospecting", "prospecting"],
        "entered_at": ["2026-09-01", "2026-09-10", "2026-09-01", "2026-11-20"],
        # O1 pushed from October to December; O2's push comes after as_of: not seen.
        "close_date": ["2026-10-15", "2026-12-01", "2027-01-15", "2027-02-01"]})
    tables, problems = validate_tables(raw)
    assert problems == []
    context = MetricContext(tables, Providers())
    slipped = _values(context, "slipped_deals")
    assert slipped[("rep", "Ana")] == 1 and slipped[("rep", "Cy")] == 0
    assert slipped[("company", "all")] == 1
    share = _values(context, "slipped_share", min_open_deals=1)
    assert share[("rep", "Ana")] == 1.0 and share[("company", "all")] == 0.5
    assert ("rep", "Bo") not in share  # no open deals: no share
    # Only the company has two open deals: smaller nodes are too small to judge a share.
    assert _values(context, "slipped_share", min_open_deals=2) == {("company", "all"): 0.5}


def test_unavailable_metrics_say_what_they_need() -> None:
    bare = MetricContext(_tables(drop=("receivables", "stage_history")), Providers())
    cases = {
        "overdue_receivables_ratio": "receivables",
        "stalled_deals": "stage_history",
        "churn_exposure": "service/usecases/churn.py score_churn",
        "attainment_probability": "feasibility",
        "forecast_gap": "forecaster",
    }
    for metric, needs in cases.items():
        with pytest.raises(MetricUnavailable, match="not available yet: needs") as caught:
            compute_metric(metric, bare, AS_OF)
        assert needs in str(caught.value)
    for slips in ("slipped_deals", "slipped_share"):
        with pytest.raises(MetricUnavailable, match="close_date column in stage_history"):
            compute_metric(slips, MetricContext(_tables(), Providers()), AS_OF)


def test_churn_model_missing_makes_the_metric_unavailable() -> None:
    def no_model(tables: Tables, as_of: pd.Timestamp) -> pd.DataFrame:
        raise LookupError("no champion for quotacast-churn yet")

    context = MetricContext(_tables(), Providers(churn_scores=no_model))
    with pytest.raises(MetricUnavailable, match="a churn model: no champion"):
        compute_metric("churn_exposure", context, AS_OF)


def test_a_provider_that_cannot_answer_on_this_data_makes_the_metric_unavailable() -> None:
    calls: list[str] = []

    def young(*args: Any) -> pd.DataFrame:
        calls.append("called")
        raise ValueError("the orders table is empty: nothing to learn churn from")

    context = MetricContext(_tables(), Providers(churn_scores=young, attainment=young))
    for metric in ("churn_exposure", "high_risk_customers"):
        with pytest.raises(MetricUnavailable, match="a churn model: the orders table is empty"):
            compute_metric(metric, context, AS_OF)
    with pytest.raises(MetricUnavailable, match="the attainment of 2026Q4: the orders table"):
        compute_metric("attainment_probability", context, AS_OF)
    assert len(calls) == 2  # asked once per provider, the refusal cached like an answer


def test_catalogue_documents_every_metric() -> None:
    table = catalogue()
    assert list(table["metric"]) == list(METRICS)
    for column in ("scopes", "unit", "meaning", "needs"):
        assert (table[column].str.len() > 0).all(), column


UNITS = {"ratio", "share", "probability", "count", "amount", "days"}
DOMAINS = {"plan", "pipeline", "customers", "churn", "targets", "process", "inventory"}


@pytest.mark.parametrize("name", list(METRICS))
def test_every_catalogue_entry_is_well_formed(name: str) -> None:
    """One entry per metric: known scopes and unit, its function in a domain module."""
    spec = METRICS[name]
    assert spec.name == name
    assert spec.scopes and set(spec.scopes) <= set(SCOPES)
    assert spec.unit in UNITS
    module = spec.fn.__module__.split(".")
    assert module[:2] == ["features", "metrics"] and module[2] in DOMAINS, spec.fn.__module__


def test_catalogue_order_is_the_listed_order() -> None:
    """``quotacast warnings metrics`` and rule errors list the metrics in this order."""
    assert list(METRICS)[:3] == ["pace_against_plan", "pipeline_coverage", "conversion_drop"]
    assert list(METRICS)[-3:] == ["attainment_probability", "forecast_gap",
                                  "pipeline_gap_coverage"]
    assert len(METRICS) == 18


def test_model_providers_wire_churn_and_feasibility() -> None:
    providers = model_providers("sqlite:///unused.db")  # nothing is imported or called yet
    assert providers.churn_scores is not None and providers.attainment is not None
    # The period forecast is the feasibility simulation's expected revenue.
    assert isinstance(providers.period_forecast, ForecastFromAttainment)
    assert providers.period_forecast.attainment is providers.attainment


@pytest.mark.parametrize(("spec", "expected"), [
    ("quarter", "2026Q4"), ("month", "2026-11"), ("year", "2026"), ("2026Q3", "2026Q3")])
def test_resolve_period(spec: str, expected: str) -> None:
    assert resolve_period(spec, AS_OF) == expected


def test_resolve_period_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="period must look like"):
        resolve_period("next quarter", AS_OF)


# --- the catalogue's newer parts --------------------------------------------------------------


def _feasibility(tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """A feasibility frame: the company short of target, North covered by its run rate,
    South short with a thin pipeline, and a simulation that produced no expectation (NaN)."""
    return pd.DataFrame({
        "level": ["company", "region", "region", "team"],
        "key": ["all", "North", "South", "N1"],
        "target": [1000.0, 400.0, 200.0, 400.0], "p_attain": [0.3, 0.9, 0.1, 0.0],
        "expected": [800.0, 420.0, 150.0, np.nan],
        "closed_to_date": [300.0, 150.0, 30.0, 150.0],
        "expected_run_rate": [500.0, 245.0, 70.0, 245.0],
        "pipeline_in_period": [400.0, 300.0, 50.0, 300.0],
    })


def _counting(calls: list[str]) -> Any:
    def provider(tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
        calls.append(period)
        return _feasibility(tables, period, as_of)

    return provider


def test_one_feasibility_run_serves_attainment_forecast_gap_and_gap_coverage() -> None:
    calls: list[str] = []
    attainment = _counting(calls)
    context = MetricContext(_tables(), Providers(
        attainment=attainment, period_forecast=ForecastFromAttainment(attainment)))
    probability = _values(context, "attainment_probability")
    gap = _values(context, "forecast_gap")
    coverage = _values(context, "pipeline_gap_coverage")
    assert calls == ["2026Q4"]  # cached per (period, as_of) in the evaluation's context
    assert probability[("company", "all")] == 0.3
    assert pd.isna(probability[("team", "N1")])  # no expectation, no probability
    # forecast_gap takes its targets from the data: company 1000, North 400, South 200; N1
    # has no expectation, so no gap.
    assert gap == pytest.approx({("company", "all"): 0.2, ("region", "North"): -0.05,
                                 ("region", "South"): 0.25})
    assert coverage[("company", "all")] == pytest.approx(400 / (1000 - 300 - 500))
    assert coverage[("region", "South")] == pytest.approx(50 / 100)
    # North: 400 - 150 - 245 = 5 left, under 2% of its target: the run rate covers it.
    assert pd.isna(coverage[("region", "North")])


def test_gap_coverage_and_attainment_explain_their_numbers() -> None:
    context = MetricContext(_tables(), Providers(attainment=_feasibility))
    frame = compute_metric("pipeline_gap_coverage", context, AS_OF)
    south = frame[frame["region"] == "South"].iloc[0]
    assert south["explanation"] == (
        "pipeline 50 expected to close in 2026Q4 covers 0.5x the 100 the run rate leaves: "
        "target 200 - closed 30 - expected run rate 70")
    assert south["pipeline_gap"] == 100.0
    north = frame[(frame["scope"] == "region") & (frame["region"] == "North")].iloc[0]
    assert north["explanation"] == (
        "the expected run rate 245 and closed 150 cover the 400 target within 2%")
    company = compute_metric("attainment_probability", context, AS_OF).iloc[0]
    assert company["explanation"] == (
        "P(attain) 30%: expected 800 against 1k target in 2026Q4 (gap 200); furthest behind: "
        "region South 50 short (P 10%)")
    narrow = MetricContext(_tables(), Providers(attainment=_attainment))
    with pytest.raises(MetricUnavailable, match="closed_to_date, expected_run_rate"):
        compute_metric("pipeline_gap_coverage", narrow, AS_OF)


def test_pace_follows_monthly_targets_when_every_month_has_one() -> None:
    raw = _raw()
    months = pd.DataFrame({"period": ["2026-10", "2026-11", "2026-12"], "level": "rep",
                           "key": "Ana", "amount": ["100", "50", "50"]})
    raw["targets"] = pd.concat([raw["targets"], months], ignore_index=True)
    tables, problems = validate_tables(raw)
    assert problems == []
    frame = compute_metric("pace_against_plan", MetricContext(tables, Providers()), AS_OF)
    ana = frame[frame["rep"] == "Ana"].iloc[0]
    # October in full and half of November: (100 + 25) / 200 = 62.5% of the 200 planned.
    assert ana["planned_share"] == pytest.approx(0.625)
    assert ana["value"] == pytest.approx(100 / 125)
    assert ana["explanation"] == (
        "revenue to date 100 is 80% of plan: 200 target x 62% of 2026Q4 planned by now "
        "(monthly targets) = 125 expected by now")
    bo = frame[frame["rep"] == "Bo"].iloc[0]
    assert (bo["phasing"], bo["planned_share"]) == ("linear", 0.5)


def test_overdue_floors_caps_and_usual_lateness(context: MetricContext) -> None:
    floored = _values(context, "overdue_receivables_ratio", min_overdue=150)
    assert pd.isna(floored[("customer", "C1")]) and floored[("customer", "C2")] == 1.0
    assert floored[("company", "all")] == pytest.approx(400 / 700)
    capped = _values(context, "overdue_receivables_ratio", max_days_overdue=30)
    assert ("customer", "C2") not in capped  # I3, 46 days past due, is written off
    assert capped[("company", "all")] == pytest.approx(200 / 500)
    # C2 paid I4 14 days late: with a 35-day grace, I3 (46 days) is within its habits.
    usual = _values(context, "overdue_receivables_ratio", grace_days=35, usual_lateness=True)
    assert usual[("customer", "C2")] == 0.0
    assert _values(context, "overdue_receivables_ratio", grace_days=35)[
        ("customer", "C2")] == 1.0
    frame = compute_metric("overdue_receivables_ratio", context, AS_OF,
                           {"usual_lateness": True})
    c2 = frame[frame["customer_id"] == "C2"].iloc[0]
    assert c2["explanation"] == ("overdue 200 of 200 outstanding (100%), 1 invoices past due, "
                                 "oldest 46 days past due; usually pays 14 days late")
    company = frame[frame["scope"] == "company"].iloc[0]
    assert company["explanation"].endswith(
        "; most: C2 200 (46 days), C1 100 (16 days), C3 100 (6 days)")
    assert company["top_customers"] == "C2 200 (46 days), C1 100 (16 days), C3 100 (6 days)"


def test_complaint_spike_can_keep_to_accounts_that_matter(context: MetricContext) -> None:
    # Revenue in the 365 days before as_of: C1 600, C2 50, C3 30.
    values = _values(context, "complaint_spike", min_revenue=100)
    assert values[("customer", "C1")] == pytest.approx(6.0)
    assert ("customer", "C2") not in values and ("rep", "Bo") not in values
    frame = compute_metric("complaint_spike", context, AS_OF, {"min_revenue": 100})
    c1 = frame[frame["customer_id"] == "C1"].iloc[0]
    assert c1["explanation"].endswith("(revenue 600 in the last 365 days)")
    ana = frame[frame["rep"] == "Ana"].iloc[0]
    assert ana["explanation"].endswith("; most: C1 (3 complaints)")


def test_churn_share_counts_floors_and_silence() -> None:
    def scores(tables: Tables, as_of: pd.Timestamp) -> pd.DataFrame:
        return _churn(tables, as_of).assign(expected_revenue=[200.0, 100.0, 60.0])

    context = MetricContext(_tables(), Providers(churn_scores=scores))
    share = _values(context, "churn_exposure_share")
    assert share == pytest.approx({
        ("rep", "Ana"): 0.4, ("rep", "Bo"): 0.3, ("rep", "Cy"): 1.0, ("team", "N1"): 110 / 300,
        ("team", "S1"): 1.0, ("region", "North"): 110 / 300, ("region", "South"): 1.0,
        ("company", "all"): 170 / 360})
    frame = compute_metric("churn_exposure_share", context, AS_OF)
    north = frame[(frame["scope"] == "region") & (frame["region"] == "North")].iloc[0]
    assert north["explanation"] == (
        "revenue at risk 110 of 300 expected from 2 active customers (37%); most: C1 80 at "
        "80%, C2 30 at 30%")
    assert _values(context, "high_risk_customers", min_revenue_at_risk=70)[
        ("company", "all")] == 1  # C1 (80 at risk); C3 (60) is under the floor
    # Last revenue: C1 2026-10-05 (42 days before as_of), C2 10-10 (37), C3 11-01 (15).
    chance = _values(context, "churn_probability", max_days_silent=40, min_revenue_at_risk=50)
    assert pd.isna(chance[("customer", "C1")]) and pd.isna(chance[("customer", "C2")])
    assert chance[("customer", "C3")] == 0.6
    bare = MetricContext(_tables(), Providers(churn_scores=_churn))
    with pytest.raises(MetricUnavailable, match="expected_revenue"):
        compute_metric("churn_exposure_share", bare, AS_OF)


def test_deal_days_in_stage_skips_small_deals(context: MetricContext) -> None:
    days = _values(context, "deal_days_in_stage", min_amount=400)
    assert pd.isna(days[("opportunity", "O1")]) and days[("opportunity", "O2")] == 76.0


def test_a_bound_method_provider_is_shared_too() -> None:
    class Feasibility:
        calls = 0

        def run(self, tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
            self.calls += 1
            return _feasibility(tables, period, as_of)

    source = Feasibility()
    # Two attribute accesses, two bound-method objects: still one provider.
    context = MetricContext(_tables(), Providers(
        attainment=source.run, period_forecast=ForecastFromAttainment(source.run)))
    compute_metric("attainment_probability", context, AS_OF)
    compute_metric("forecast_gap", context, AS_OF)
    assert source.calls == 1
