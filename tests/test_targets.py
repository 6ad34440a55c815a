"""Targets: a fillable template for every node, targets that match no node, feasibility without
targets (issue 16).

Runs on the real crm-sales import (tests/fixtures/real/crm-sales: 35 reps in 6 teams and 3
regions, no targets table) through the command line.
"""

from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.io import load_tables
from service.cli.app import app

CRM = Path(__file__).resolve().parent / "fixtures" / "real" / "crm-sales"
runner = CliRunner()


@pytest.fixture()
def crm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of crm-sales (no targets), with the registry and database in ``tmp_path``."""
    monkeypatch.setenv("QUOTACAST_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("QUOTACAST_DATABASE_URL", f"sqlite:///{tmp_path / 'quotacast.db'}")
    data = tmp_path / "crm"
    shutil.copytree(CRM, data)
    return data


def won_in(start: str, end: str) -> dict[str, float]:
    """Won amounts per owner closed in [start, end), straight from the source file."""
    with gzip.open(CRM / "opportunities.csv.gz", "rt") as fh:
        opps = pd.read_csv(fh, parse_dates=["close_date"])
    won = opps[(opps["status"] == "won") & (opps["close_date"] >= start)
               & (opps["close_date"] < end)]
    return won.groupby("owner")["amount"].sum().to_dict()


def test_template_lists_every_node_with_past_actuals(crm: Path, tmp_path: Path) -> None:
    out = tmp_path / "template.csv"
    result = runner.invoke(app, ["targets", "template", "--data", str(crm), "--period",
                                 "2017Q4", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(out)
    # crm-sales has no revenue in 2016Q4: no column of zeros for the year before.
    assert list(frame.columns) == ["period", "level", "key", "amount", "actual_2017Q3"]
    assert frame["amount"].isna().all() and (frame["period"] == "2017Q4").all()
    assert frame["level"].value_counts().to_dict() == {"company": 1, "region": 3, "team": 6,
                                                       "rep": 35}
    org = load_tables(crm)["org"]
    reps = frame[frame["level"] == "rep"].set_index("key")["actual_2017Q3"]
    assert set(reps.index) == set(org["rep"])
    source = won_in("2017-07-01", "2017-10-01")
    assert reps[reps > 0].round(2).to_dict() == {k: round(v, 2) for k, v in source.items()}
    company = frame.loc[frame["level"] == "company", "actual_2017Q3"].item()
    assert company == pytest.approx(sum(source.values()))
    teams = frame[frame["level"] == "team"]["actual_2017Q3"].sum()
    assert teams == pytest.approx(company)


def test_filled_template_validates_and_feeds_feasibility(crm: Path, tmp_path: Path) -> None:
    out = tmp_path / "template.csv"
    runner.invoke(app, ["targets", "template", "--data", str(crm), "--period", "2017Q4",
                        "--out", str(out)])
    filled = pd.read_csv(out)
    filled["amount"] = (filled["actual_2017Q3"] * 1.1).round()
    # Extra columns (the actuals) are tolerated as they are.
    filled.to_csv(crm / "targets.csv", index=False)
    assert runner.invoke(app, ["validate", "--data", str(crm)]).exit_code == 0
    result = runner.invoke(app, ["feasibility", "--data", str(crm), "--period", "2017Q4",
                                 "--as-of", "2017-11-15", "--draws", "200", "--no-churn",
                                 "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 0, result.stderr
    feasibility = pd.read_csv(tmp_path / "f.csv")
    assert len(feasibility) == len(filled)
    assert feasibility["p_attain"].notna().all()


def test_template_refuses_to_overwrite_the_data_targets(crm: Path) -> None:
    result = runner.invoke(app, ["targets", "template", "--data", str(crm), "--period",
                                 "2017Q4", "--out", str(crm / "targets.csv")])
    assert result.exit_code == 1
    assert not (crm / "targets.csv").exists()


def test_a_target_that_matches_no_node_is_a_problem(crm: Path) -> None:
    (crm / "targets.csv").write_text(
        "period,level,key,amount\n2017Q4,company,all,3000000\n2017Q4,rep,Darcel Schlecht,1\n"
        "2017Q4,rep,Darcel Schlect,1\n2017Q4,region,Atlantis,1\n")
    result = runner.invoke(app, ["validate", "--data", str(crm)])
    assert result.exit_code == 2
    assert "targets:4: key: no such node (rep Darcel Schlect)" in result.stderr
    assert "targets:5: key: no such node (region Atlantis)" in result.stderr


def test_feasibility_without_targets_says_how_to_add_them(crm: Path) -> None:
    result = runner.invoke(app, ["feasibility", "--data", str(crm), "--period", "2017Q4",
                                 "--draws", "200", "--no-churn"])
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "no node has a target in 2017Q4 (the data has no targets table)" in said
    assert "quotacast targets template" in said and "--all-nodes" in said
    result = runner.invoke(app, ["recalibrate", "--data", str(crm), "--period", "2017Q4",
                                 "--draws", "200", "--no-churn"])
    assert result.exit_code == 0, result.stderr
    assert "quotacast targets template" in " ".join(result.stderr.split())
    result = runner.invoke(app, ["feasibility", "--data", str(crm), "--period", "2017Q4",
                                 "--draws", "200", "--no-churn", "--all-nodes", "--json"])
    assert result.exit_code == 0, result.stderr
    frame = pd.read_json(io.StringIO(result.stdout))
    assert len(frame) >= 45  # every node, and the unassigned ones
    assert frame["target"].isna().all() and frame["p_attain"].isna().all()
    assert frame["p50"].notna().all()


def test_template_shows_the_same_period_a_year_before(tmp_path: Path) -> None:
    from service.cli.targets import template_frame

    data = tmp_path / "d"
    data.mkdir()
    (data / "org.csv").write_text("rep,team,region\nana,n1,north\nben,s1,south\n")
    (data / "customers.csv").write_text("customer_id,account_manager\nc1,ana\nc2,ben\n")
    (data / "orders.csv").write_text(
        "customer_id,order_date,amount\nc1,2023-04-03,100\nc2,2023-05-01,40\n"
        "c1,2024-02-01,7\nc2,2024-03-30,5\n")
    frame = template_frame(load_tables(data), "2024Q2").set_index(["level", "key"])
    assert list(frame.columns) == ["period", "amount", "actual_2024Q1", "actual_2023Q2"]
    assert frame["actual_2023Q2"].to_dict() == {
        ("company", "all"): 140.0, ("region", "north"): 100.0, ("region", "south"): 40.0,
        ("team", "n1"): 100.0, ("team", "s1"): 40.0, ("rep", "ana"): 100.0,
        ("rep", "ben"): 40.0}
    assert frame.loc[("company", "all"), "actual_2024Q1"] == 12.0
    monthly = template_frame(load_tables(data), "2024-04")
    assert [c for c in monthly.columns if c.startswith("actual_")] == ["actual_2024-03",
                                                                       "actual_2023-04"]
