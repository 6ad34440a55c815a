"""Warning metrics on process targets (target_attainment) and inventory (inventory_turnover),
on a hand-made company, against values counted by hand.

Reps Ana and Bo (team N1, North), Cy (S1, South); period 2026Q4, as_of 2026-11-16: half of the
quarter elapsed (46 of 92 days). In the period before as_of: 3 orders, all Ana's (C1 once, the
new customer C4 twice; C3's return does not count); 2 visits (C1, C3); pipeline created 300
(Ana) + 200 (Bo) + 500 (Cy). Active in the year before the quarter: C1, C2, C3; still active in
the year before as_of: C1, C3 (C2 last bought 2025-11-01).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from engine.config import Settings
from engine.io import Tables, validate_tables
from features.metrics import METRICS, MetricContext, MetricUnavailable, compute_metric
from features.metrics.alerting import METRIC_CATALOGUE
from service.cli.warnings import warnings_app

AS_OF = pd.Timestamp("2026-11-16")
REPO = Path(__file__).resolve().parents[1]


def frame(columns: str, *rows: str) -> pd.DataFrame:
    return pd.DataFrame([r.split(",") for r in rows], columns=columns.split(","))


TARGET_ROWS = (
    "2026Q4,company,all,1000,plan,revenue",          # the revenue plan: not a process target
    "2026Q4,company,all,10,plan,orders",             # 3 of 5 expected -> 0.6
    "2026Q4,company,all,20,stretch,orders",          # another tier: not measured
    "2026Q4,rep,Ana,4,plan,orders",                  # months 2, 2, 0: 3 of 3 expected -> 1.0
    "2026-10,rep,Ana,2,plan,orders",
    "2026-11,rep,Ana,2,plan,orders",
    "2026-12,rep,Ana,0,plan,orders",
    "2026Q4,rep,Bo,2,plan,new_customers",            # 0 of 1 -> 0.0
    "2026Q4,rep,Ana,2,plan,new_customers",           # C4: 1 of 1 -> 1.0
    "2026Q4,company,all,0.8,plan,retention_rate",    # 2/3 / 0.8
    "2026Q4,region,North,0.5,plan,retention_rate",   # C1 kept, C2 lost: 1/2 / 0.5 = 1.0
    "2026Q4,company,all,4,plan,visits",              # 2 of 2 -> 1.0
    "2026Q4,team,N1,1000,plan,pipeline_created",     # 500 of 500 -> 1.0
)


def raw() -> dict[str, pd.DataFrame]:
    return {
        "org": frame("rep,team,region", "Ana,N1,North", "Bo,N1,North", "Cy,S1,South"),
        "customers": frame("customer_id,account_manager", "C1,Ana", "C2,Bo", "C3,Cy", "C4,Ana"),
        "orders": frame(
            "customer_id,order_date,amount,product",
            "C1,2025-12-01,100,A", "C2,2025-11-01,50,A", "C3,2026-09-15,30,B",
            "C1,2026-10-05,100,A", "C4,2026-10-10,40,B", "C4,2026-11-01,20,A",
            "C3,2026-11-02,-10,B",  # a return: not an order
            "C2,2026-11-20,99,A",   # after as_of
        ),
        "targets": frame("period,level,key,amount,tier,metric", *TARGET_ROWS),
        "interactions": frame(
            "customer_id,occurred_at,kind",
            "C1,2026-10-20,visit", "C3,2026-11-01, Visit", "C1,2026-11-16,visit",
            "C1,2026-09-01,visit", "C2,2026-10-21,call",
        ),
        "opportunities": frame(
            "opportunity_id,owner,created_at,close_date,stage,status,amount,customer_id",
            "O1,Ana,2026-10-03,2026-12-01,proposal,open,300,C1",
            "O2,Bo,2026-11-10,2027-01-01,prospecting,open,200,C2",
            "O3,Cy,2026-10-20,2027-01-01,prospecting,open,500,C3",
            "O4,Ana,2026-11-20,2027-01-01,prospecting,open,999,C1",  # after as_of
            "O5,Ana,2026-09-01,2026-12-01,proposal,open,700,C1",     # before the period
        ),
        "inventory": frame(
            "product,date,on_hand",
            "A,2026-08-01,100", "A,2026-10-17,40", "B,2026-09-01,50",
            "C,2026-11-20,10",  # counted after as_of only
        ),
    }


def tables_of(frames: dict[str, pd.DataFrame], drop: tuple[str, ...] = ()) -> Tables:
    tables, problems = validate_tables({k: v.copy() for k, v in frames.items()
                                        if k not in drop})
    assert problems == []
    return tables


def values(tables: Tables, metric: str, **params: Any) -> dict[tuple[str, str], float]:
    found = compute_metric(metric, MetricContext(tables), AS_OF, params)
    keys = {"company": None, "region": "region", "team": "team", "rep": "rep",
            "product": "product"}
    return {(r["scope"], r[keys[r["scope"]]] if keys[r["scope"]] else "all"): r["value"]
            for r in found.to_dict(orient="records")}


@pytest.fixture(scope="module")
def tables() -> Tables:
    return tables_of(raw())


def test_registered_with_scopes_the_catalogue_knows() -> None:
    assert set(METRICS["target_attainment"].scopes) == {"company", "region", "team", "rep"}
    assert METRICS["inventory_turnover"].scopes == ("product",)
    assert METRIC_CATALOGUE.scope_labels["product"] == ("product",)


def test_orders_pace_with_linear_and_monthly_phasing(tables: Tables) -> None:
    found = values(tables, "target_attainment", target_metric="orders")
    assert found == {("company", "all"): pytest.approx(3 / 5), ("rep", "Ana"): pytest.approx(1.0)}
    frame = compute_metric("target_attainment", MetricContext(tables), AS_OF,
                           {"target_metric": "orders"})
    ana = frame[frame["scope"] == "rep"].iloc[0]
    assert ana["phasing"] == "monthly targets" and ana["expected_to_date"] == pytest.approx(3.0)
    company = frame[frame["scope"] == "company"].iloc[0]
    assert company["explanation"] == (
        "orders to date 3 is 60% of plan: 10 target x 50% of 2026Q4 elapsed = 5 expected by now")


def test_new_customers_visits_pipeline_and_retention(tables: Tables) -> None:
    assert values(tables, "target_attainment", target_metric="new_customers") == {
        ("rep", "Bo"): 0.0, ("rep", "Ana"): pytest.approx(1.0)}
    assert values(tables, "target_attainment", target_metric="visits") == {
        ("company", "all"): pytest.approx(1.0)}
    assert values(tables, "target_attainment", target_metric="pipeline_created") == {
        ("team", "N1"): pytest.approx(1.0)}
    assert values(tables, "target_attainment", target_metric="retention_rate") == {
        ("company", "all"): pytest.approx((2 / 3) / 0.8),
        ("region", "North"): pytest.approx(1.0)}


def test_all_gives_each_node_its_target_furthest_behind(tables: Tables) -> None:
    frame = compute_metric("target_attainment", MetricContext(tables), AS_OF)
    worst = {(r["scope"], next((r[c] for c in ("rep", "team", "region")
                               if isinstance(r[c], str)), "all")): (r["target_metric"], r["value"])
             for r in frame.to_dict(orient="records")}
    assert worst[("company", "all")] == ("orders", pytest.approx(0.6))
    assert worst[("rep", "Bo")] == ("new_customers", 0.0)
    assert worst[("rep", "Ana")][1] == pytest.approx(1.0)
    assert len(frame) == 5  # company, North, N1, Ana, Bo


def test_quiet_without_process_targets_and_early_in_the_period() -> None:
    frames = raw()
    revenue_only = frames["targets"][frames["targets"]["metric"] == "revenue"]
    assert values(tables_of({**frames, "targets": revenue_only}), "target_attainment") == {}
    assert values(tables_of(frames, drop=("targets",)), "target_attainment") == {}
    early = compute_metric("target_attainment", MetricContext(tables_of(frames)),
                           pd.Timestamp("2026-10-05"))
    assert early.empty


def test_unmeasurable_targets_say_what_is_missing() -> None:
    with pytest.raises(MetricUnavailable, match="interactions"):
        compute_metric("target_attainment", MetricContext(tables_of(raw(), ("interactions",))),
                       AS_OF, {"target_metric": "visits"})
    with pytest.raises(ValueError, match="not a process metric"):
        compute_metric("target_attainment", MetricContext(tables_of(raw())), AS_OF,
                       {"target_metric": "revenue"})


def _before(frames: dict[str, pd.DataFrame], when: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Every row dated before ``when`` (the first date column of each table decides)."""
    dates = {"orders": "order_date", "interactions": "occurred_at",
             "opportunities": "created_at", "inventory": "date"}
    return {name: (f[pd.to_datetime(f[dates[name]]) < when] if name in dates else f)
            for name, f in frames.items()}


@pytest.mark.parametrize(("metric", "params"), [
    ("target_attainment", {}), ("target_attainment", {"target_metric": "retention_rate"}),
    ("inventory_turnover", {}), ("inventory_turnover", {"window_days": 60})])
def test_point_in_time_later_rows_change_nothing(metric: str, params: dict[str, Any]) -> None:
    full = compute_metric(metric, MetricContext(tables_of(raw())), AS_OF, params)
    cut = compute_metric(metric, MetricContext(tables_of(_before(raw(), AS_OF))), AS_OF, params)
    pd.testing.assert_frame_equal(full, cut)


def test_inventory_turnover_and_days_of_cover_on_revenue(tables: Tables) -> None:
    frame = compute_metric("inventory_turnover", MetricContext(tables), AS_OF,
                           {"window_days": 60})
    rows = frame.set_index("product")
    assert set(rows.index) == {"A", "B"}  # C counted after as_of only
    # A: 100 on hand for 30 of the 60 days, then 40: 70 on average; sold 100 + 20 revenue
    assert rows.loc["A", "average_on_hand"] == pytest.approx(70.0)
    assert rows.loc["A", "value"] == pytest.approx(120 / 70)
    assert rows.loc["A", "days_of_cover"] == pytest.approx(40 / (120 / 60))
    # B: 50 all along, sold 40 (the return of -10 counts against it)
    assert rows.loc["B", "value"] == pytest.approx(30 / 50)
    assert rows.loc["A", "basis"] == "revenue"
    assert rows.loc["A", "explanation"].startswith("120 revenue sold in the last 60 days")


def test_inventory_turnover_in_units_with_a_quantity_column() -> None:
    frames = raw()
    frames["orders"] = frames["orders"].assign(quantity=["9", "9", "9", "5", "4", "2", "-1",
                                                         "9"])
    frame = compute_metric("inventory_turnover", MetricContext(tables_of(frames)), AS_OF,
                           {"window_days": 60})
    rows = frame.set_index("product")
    assert rows.loc["A", "value"] == pytest.approx(7 / 70)
    assert rows.loc["B", "value"] == pytest.approx(3 / 50)
    assert rows.loc["A", "basis"] == "units"


def test_inventory_turnover_needs_the_table_and_products() -> None:
    with pytest.raises(MetricUnavailable, match="the inventory table"):
        compute_metric("inventory_turnover", MetricContext(tables_of(raw(), ("inventory",))),
                       AS_OF)
    frames = raw()
    frames["orders"] = frames["orders"].drop(columns="product")
    with pytest.raises(MetricUnavailable, match="product column in orders"):
        compute_metric("inventory_turnover", MetricContext(tables_of(frames)), AS_OF)


RULES = """
receivers:
  - name: log
    file_configs: [{path: "%(sink)s"}]
route: {receiver: log, group_by: [alertname]}
groups:
  - name: inventory
    rules:
      - alert: SlowStock
        metric: inventory_turnover
        scope: product
        op: "<"
        threshold: 1.0
        params: {window_days: 60}
        annotations: {summary: "{{ node }} turns {{ value | round:2 }}"}
"""


def _cli(tmp_path: Path) -> Any:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'alerts.db'}",
                        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    app = typer.Typer()

    @app.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = settings

    app.add_typer(warnings_app, name="warnings")
    return lambda *args: CliRunner().invoke(app, ["warnings", *args], catch_exceptions=False)


def _data_dir(tmp_path: Path, frames: dict[str, pd.DataFrame]) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name, f in frames.items():
        f.to_csv(folder / f"{name}.csv", index=False)
    return folder


def test_a_product_rule_fires_per_product(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES % {"sink": tmp_path / "sent.jsonl"}, encoding="utf-8")
    result = _cli(tmp_path)("evaluate", "--data", str(_data_dir(tmp_path, raw())), "--rules",
                            str(rules), "--as-of", "2026-11-16", "--json")
    assert result.exit_code == 0, result.output
    assert '"rule":"SlowStock"' in result.stdout
    assert 'product=\\"B\\"' in result.stdout and 'product=\\"A\\"' not in result.stdout


def test_default_rules_stay_quiet_without_process_targets_or_inventory(tmp_path: Path) -> None:
    frames = raw()
    frames["targets"] = frames["targets"][frames["targets"]["metric"] == "revenue"]
    del frames["inventory"]
    result = _cli(tmp_path)("evaluate", "--data", str(_data_dir(tmp_path, frames)), "--rules",
                            str(REPO / "rules" / "default.yaml"), "--as-of", "2026-11-16")
    assert result.exit_code == 0, result.output
    assert "ProcessTarget" not in result.output
    assert "inventory" not in result.stderr.lower()


def test_default_rules_watch_process_targets(tmp_path: Path) -> None:
    result = _cli(tmp_path)("evaluate", "--data", str(_data_dir(tmp_path, raw())), "--rules",
                            str(REPO / "rules" / "default.yaml"), "--as-of", "2026-11-16",
                            "--json")
    assert result.exit_code == 0, result.output
    assert '"rule":"ProcessTargetBehind"' in result.stdout
