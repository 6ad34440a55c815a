"""The command line end to end: imports and the demo, through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.io import load_tables
from service.cli.app import app

FIXTURES = Path(__file__).parent / "fixtures" / "importers"
runner = CliRunner()


@pytest.mark.parametrize(
    ("kind", "folder"),
    [("online-retail", "online-retail"), ("crm-sales", "crm-sales"), ("superstore", "superstore")],
)
def test_import_writes_a_valid_data_directory(kind: str, folder: str, tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = runner.invoke(app, ["import", kind, str(FIXTURES / folder), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    tables = load_tables(out)
    assert len(tables.orders) > 0
    check = runner.invoke(app, ["validate", "--data", str(out)])
    assert check.exit_code == 0


def test_import_parquet_format(tmp_path: Path) -> None:
    out = tmp_path / "data"
    args = ["import", "crm-sales", str(FIXTURES / "crm-sales"), "--out", str(out)]
    result = runner.invoke(app, [*args, "--format", "parquet"])
    assert result.exit_code == 0, result.stderr
    assert (out / "opportunities.parquet").is_file()
    assert len(load_tables(out)["opportunities"]) > 0


def test_import_unknown_kind_or_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "data"
    unknown = runner.invoke(app, ["import", "pipedrive", str(tmp_path), "--out", str(out)])
    assert unknown.exit_code == 2 and "unknown kind" in unknown.stderr
    missing = runner.invoke(app, ["import", "superstore", str(tmp_path / "x"), "--out", str(out)])
    assert missing.exit_code == 2
    assert not out.exists()


# --- the default as-of, and data without orders ----------------------------------------------


def _write_dir(root: Path, tables: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (root / f"{name}.csv").write_text(text, encoding="utf-8")
    return root


def _env(tmp_path: Path) -> dict[str, str]:
    return {"QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "QUOTACAST_DATABASE_URL": f"sqlite:///{tmp_path / 'alerts.db'}"}


def _features(data: Path, *extra: str) -> list[dict[str, object]]:
    result = runner.invoke(app, ["features", "--data", str(data), "--json", *extra])
    assert result.exit_code == 0, result.stderr
    records: list[dict[str, object]] = json.loads(result.stdout.strip().splitlines()[-1])
    return records


def test_features_default_as_of_counts_a_row_on_the_last_day(tmp_path: Path) -> None:
    data = _write_dir(tmp_path / "d", {
        "customers": "customer_id\nc1\nc2\n",
        "orders": "customer_id,order_date,amount\nc1,2023-03-01,100\nc2,2023-03-10,50\n",
    })
    by_default = {r["customer_id"]: r for r in _features(data)}
    assert {str(r["as_of"])[:10] for r in by_default.values()} == {"2023-03-11"}
    assert by_default["c2"]["hist_monetary_lifetime"] == 50.0
    assert by_default["c2"]["hist_frequency_lifetime"] == 1.0
    # As of the last day itself, that day's row is not known yet.
    on_last_day = {r["customer_id"]: r for r in _features(data, "--as-of", "2023-03-10")}
    assert "c2" not in on_last_day
    assert on_last_day["c1"]["hist_monetary_lifetime"] == 100.0


CRM_ONLY = {
    "org": "rep,team,region\nana,north-1,north\nben,south-1,south\n",
    "customers": "customer_id,account_manager\nc1,ana\nc2,ben\nc3,ben\n",
    "opportunities": "opportunity_id,owner,created_at,close_date,stage,status,amount,customer_id\n"
    "p1,ben,2023-01-10,2023-03-04,closed,won,900,c2\n"
    "p2,ana,2023-02-10,2023-06-30,proposal,open,400,c1\n",
}


@pytest.mark.parametrize("orders", ["absent", "header only"])
def test_features_and_warnings_answer_on_deals_without_orders(
        orders: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tables = dict(CRM_ONLY)
    if orders == "header only":
        tables["orders"] = "order_id,customer_id,order_date,amount,opportunity_id\n"
    data = _write_dir(tmp_path / "d", tables)
    rows = _features(data)
    # Customers known through their deals; the last dated row is p1's close on 2023-03-04.
    assert sorted(r["customer_id"] for r in rows) == ["c1", "c2"]
    assert {str(r["as_of"])[:10] for r in rows} == {"2023-03-05"}
    assert {r["customer_id"]: r["pipe_open_deals"] for r in rows} == {"c1": 1.0, "c2": 0.0}
    result = runner.invoke(app, ["warnings", "evaluate", "--data", str(data), "--no-deliver"],
                           env=_env(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "at 2023-03-05" in result.stderr
    assert "skipped" in result.stderr  # churn, stage history, targets: said, not crashed


# --- usage errors: the model kinds (models.base) and the request resolver ----------------------


def test_unknown_model_kind_level_period_or_date_are_usage_errors_naming_the_option(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = str(_write_dir(tmp_path / "d", CRM_ONLY))
    env = _env(tmp_path)
    kind = runner.invoke(app, ["promote", "nope"], env=env)
    assert kind.exit_code == 2 and "expected one of churn, forecast, win" in kind.stderr
    level = runner.invoke(app, ["train", "forecast", "--data", data, "--level", "planet"],
                          env=env)
    assert level.exit_code == 2 and "--level" in level.stderr
    assert "unknown level 'planet'" in level.stderr
    period = runner.invoke(app, ["recalibrate", "--data", data, "--period", "2023Q5"], env=env)
    assert period.exit_code == 2 and "--period" in period.stderr
    assert "period must look like" in period.stderr
    date = runner.invoke(app, ["train", "win", "--data", data, "--as-of", "31/12/2023"], env=env)
    assert date.exit_code == 2
    assert "expected an ISO date" in date.stderr
