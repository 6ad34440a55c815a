"""``warnings evaluate --engine spark``: the customer- and deal-level parts of the warning
metrics computed on Spark give the alerts pandas gives, fingerprint for fingerprint.

One local[1] Spark session serves the whole module; the in-process path needs no Spark.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.alerting.evaluate import evaluate
from engine.alerting.rules import load_rules
from engine.alerting.store import AlertStore
from engine.compute import PandasEngine
from engine.compute.parquet import write_parquet_dir
from engine.io import Tables, load_tables, validate_tables, write_data_dir
from engine.periods import default_as_of
from engine.synthetic import generate
from features.funnel import snapshot_date
from features.metrics import MetricContext, Providers, compute_metric
from features.metrics.alerting import METRIC_CATALOGUE, metric_source
from features.metrics.context import KeyedPart, keyed_on_engine, keyed_on_tables
from features.metrics.customers import complaint_part, invoice_part
from features.metrics.pipeline import deal_part
from service.usecases.alerts import evaluation_context, warning_tables

pytest.importorskip("pyspark")

RECEIVABLE_PARAMS = {"grace_days": 30.0, "usual_lateness": True, "max_days_overdue": 180.0}
# Rules on the metrics computed key by key, low enough to fire often on the small company,
# with hierarchy and label inhibition between them.
RULES = """
receivers:
  - name: log
    file_configs:
      - path: %(sink)s
route:
  receiver: log
  group_by: [alertname, rep]
inhibit_rules:
  - source_matchers: ['alertname="CustomerOverdue"']
    target_matchers: ['alertname="ComplaintSpike"']
    equal: [customer_id]
inhibit_by_hierarchy: true
groups:
  - name: keyed
    labels: {concern: customers}
    rules:
      - alert: CustomerOverdue
        metric: overdue_receivables_ratio
        scope: [rep, customer]
        op: ">"
        threshold: 0.3
        for: 7d
        params: {grace_days: 15, usual_lateness: true}
        annotations: {summary: "{{ node }}: {{ value | humanizePercentage }} overdue"}
      - alert: ComplaintSpike
        metric: complaint_spike
        scope: [customer, rep]
        op: ">"
        threshold: 1.5
        for: 0
        params: {min_complaints: 2}
        annotations: {summary: "{{ node }}: {{ explanation }}"}
      - alert: DealStalled
        metric: deal_days_in_stage
        scope: opportunity
        op: ">"
        threshold: 45
        for: 0
        severity: info
        annotations: {summary: "{{ explanation }}"}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small demo company as a CSV data directory and as a partitioned Parquet one."""
    root = tmp_path_factory.mktemp("demo")
    raw = generate("small", seed=5)
    tables, _ = validate_tables(raw)
    return {"csv": write_data_dir(raw, root / "csv"),
            "parquet": write_parquet_dir(tables.frames, root / "parquet")}


def _parts(tables: Tables, as_of: pd.Timestamp) -> list[KeyedPart]:
    return [complaint_part(as_of, 30, 180), invoice_part(as_of, RECEIVABLE_PARAMS),
            deal_part(as_of, snapshot_date(tables))]


def _grown(tables: Tables, when: pd.Timestamp) -> Tables:
    """``tables`` and rows dated on or after ``when``: a complaint, a large invoice, a new
    deal and a stage change."""
    frames = {n: f.copy() for n, f in tables.frames.items() if n not in tables.derived}
    known = frames["customers"]["customer_id"].iloc[0]
    frames["interactions"] = pd.concat([frames["interactions"], frames["interactions"].iloc[:1]
                                        .assign(customer_id=known, occurred_at=when,
                                                kind="complaint")], ignore_index=True)
    frames["receivables"] = pd.concat([frames["receivables"], frames["receivables"].iloc[:1]
                                       .assign(invoice_id="LATE-1", customer_id=known,
                                               issued_at=when, due_date=when,
                                               amount=1e7)], ignore_index=True)
    deal = frames["opportunities"].iloc[:1].assign(opportunity_id="LATE-D", created_at=when,
                                                   status="open")
    frames["opportunities"] = pd.concat([frames["opportunities"], deal], ignore_index=True)
    history = frames["stage_history"]
    moved = history.iloc[:1].assign(entered_at=when + pd.Timedelta(days=1))
    frames["stage_history"] = pd.concat([history, moved], ignore_index=True)
    grown, _ = validate_tables(frames)
    return grown


def test_parts_on_spark_equal_pandas_and_ignore_later_rows(spark: Any, demo: dict[str, Path],
                                                           tmp_path: Path) -> None:
    """Complaint counts, receivable sums and days in stage: Spark on a Parquet directory
    holding rows dated on or after the as-of gives, to the last bit, what pandas gives on the
    data without them (point in time on both engines)."""
    tables = load_tables(demo["csv"])
    when = default_as_of(tables) - pd.Timedelta(days=45)
    grown = _grown(tables, when)
    source = write_parquet_dir(grown.frames, tmp_path / "grown")
    here, later = keyed_on_tables(tables), keyed_on_tables(grown)
    there = keyed_on_engine(spark, str(source))
    for part in _parts(tables, when):
        expected = here(part, when)
        assert len(expected) > 20, part.name
        pd.testing.assert_frame_equal(later(part, when), expected, check_exact=True)
        pd.testing.assert_frame_equal(there(part, when), expected, check_exact=True)


def test_parts_are_the_metrics_of_the_whole_table(demo: dict[str, Path]) -> None:
    """Bucketing changes no metric: the rows of every scope, values within 1e-12 of one
    computation over all the rows (only the order of a customer's sums differs)."""
    tables = load_tables(demo["csv"])
    as_of = default_as_of(tables)
    context = MetricContext(tables)
    complaints = compute_metric("complaint_spike", context, as_of)
    one = complaints[complaints["scope"] == "customer"].set_index("customer_id")
    interactions = tables["interactions"]
    recent = interactions[(interactions["kind"] == "complaint")
                          & (interactions["occurred_at"] >= as_of - pd.Timedelta(days=30))
                          & (interactions["occurred_at"] < as_of)]
    counted = recent.groupby("customer_id").size()
    assert (one["complaints"].reindex(counted.index) == counted.astype(float)).all()
    overdue = compute_metric("overdue_receivables_ratio", context, as_of)
    company = overdue[overdue["scope"] == "company"].iloc[0]
    assert company["outstanding"] == pytest.approx(
        overdue.loc[overdue["scope"] == "customer", "outstanding"].sum(), rel=1e-12)
    deals = compute_metric("deal_days_in_stage", context, as_of)
    from features.funnel import opportunity_state

    state = opportunity_state(tables, as_of)
    open_ = state[(state["status"] == "open") & state["days_in_stage"].notna()]
    got = deals.set_index("opportunity_id")["value"].sort_index()
    assert got.equals(open_.set_index("opportunity_id")["days_in_stage"].astype(float)
                      .sort_index().rename("value").rename_axis("opportunity_id"))


def _evaluate(tables: Tables, url: str, dates: list[date], engine: Any, source: str,
              rule_file: Path) -> AlertStore:
    rules = load_rules(rule_file, catalogue=METRIC_CATALOGUE)
    store = AlertStore(url)
    for at in dates:
        context = evaluation_context(tables, Providers(), engine, source)
        evaluate(rules, metric_source(context), store, at)
    return store


def _alerts(store: AlertStore) -> list[tuple[Any, ...]]:
    return sorted((a.fingerprint, a.rule, a.state, a.value, a.since, a.message, a.muted)
                  for a in store.alerts())


def _changes(store: AlertStore) -> list[tuple[Any, ...]]:
    return [(t.fingerprint, t.from_state, t.to_state, t.as_of, t.value)
            for t in store.history()]


def test_alerts_on_spark_are_those_of_pandas(spark: Any, demo: dict[str, Path],
                                            tmp_path: Path) -> None:
    """Rules on every keyed metric evaluated a week apart: every alert
    (fingerprint, rule, state, value, since, message, muted) and every state change the same
    on both engines."""
    source = str(demo["parquet"])
    tables = warning_tables(source)
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(RULES % {"sink": tmp_path / "sent.jsonl"}, encoding="utf-8")
    last = default_as_of(tables).date()
    dates = [last - pd.Timedelta(days=7 * k).to_pytimedelta() for k in range(1, -1, -1)]
    on_pandas = _evaluate(tables, f"sqlite:///{tmp_path / 'p.db'}", dates, PandasEngine(),
                          source, rule_file)
    on_spark = _evaluate(tables, f"sqlite:///{tmp_path / 's.db'}", dates, spark, source,
                         rule_file)
    expected = _alerts(on_pandas)
    states = {(a[1], a[2]) for a in expected}
    assert {("CustomerOverdue", "firing"), ("CustomerOverdue", "pending"),
            ("DealStalled", "firing"), ("ComplaintSpike", "firing")} <= states, states
    assert any(a[6] for a in expected)  # some are muted by inhibition
    assert _alerts(on_spark) == expected
    assert _changes(on_spark) == _changes(on_pandas)


def test_cli_engine_spark_prints_the_pandas_alerts(spark: Any, demo: dict[str, Path],
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``warnings evaluate --engine spark`` on a Parquet data directory (with the feasibility
    the rules read) answers with the pandas command's rows; the session is left running."""
    from service.cli.app import app

    monkeypatch.setenv("QUOTACAST_SPARK_MASTER", "local[1]")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("QUOTACAST_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    runner = CliRunner()
    rows = {}
    for name in ("pandas", "spark"):
        monkeypatch.setenv("QUOTACAST_DATABASE_URL", f"sqlite:///{tmp_path / name}.db")
        result = runner.invoke(app, ["warnings", "evaluate", "--data", str(demo["parquet"]),
                                     "--engine", name, "--no-deliver", "--json"])
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        rows[name] = json.loads(result.stdout.strip().splitlines()[-1])
    assert rows["pandas"] and rows["spark"] == rows["pandas"]
    assert not spark.session.sparkContext._jsc.sc().isStopped()
