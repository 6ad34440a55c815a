"""engine.importers.hubspot: a HubSpot export of a real pipeline -> quotacast tables.

The fixture (tests/fixtures/importers/hubspot, made by make_hubspot.py there) is 320 deals of
the real CRM Sales Opportunities pipeline written as HubSpot exports them (two pipelines,
``Date entered "<stage> (<pipeline>)"`` columns, amounts with thousands separators, dates as
``2017-03-01 14:05``), with the slice of the original files beside it in ``source/``. The
HubSpot import must give the same won/lost/open amounts per owner and quarter as the crm-sales
import of the original slice, carry the stage history over, and take the hierarchy from teams.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.importers import KINDS, SOURCES, import_dataset
from engine.importers.hubspot import (
    hubspot_tables,
    parse_amounts,
    parse_hubspot_dates,
    stage_columns,
)
from engine.io import validate_tables
from engine.schemas import (
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    ENTERED_AT,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDERS,
    ORG,
    OWNER,
    REGION,
    REP,
    SEGMENT,
    STAGE,
    STAGE_HISTORY,
    STATUS,
    TEAM,
)
from service.cli.app import app

HERE = Path(__file__).resolve().parent / "fixtures" / "importers" / "hubspot"
EXPORT = HERE / "export"
SOURCE = HERE / "source"
DEALS = EXPORT / "hubspot-crm-exports-all-deals-2017-12-31.csv"


@pytest.fixture(scope="module")
def imported() -> dict[str, pd.DataFrame]:
    result = import_dataset("hubspot", EXPORT)
    _, problems = validate_tables(result.frames)
    assert problems == [], "\n".join(map(str, problems))
    return result.frames


@pytest.fixture(scope="module")
def source() -> dict[str, pd.DataFrame]:
    return import_dataset("crm-sales", SOURCE).frames


def _deals() -> pd.DataFrame:
    return pd.read_csv(DEALS, dtype=str, keep_default_na=False, na_values=[""])


def _by_owner_quarter(opportunities: pd.DataFrame) -> pd.Series:
    quarter = opportunities[CLOSE_DATE].dt.to_period("Q").astype(str)
    return opportunities.groupby([opportunities[OWNER], quarter, opportunities[STATUS]])[
        AMOUNT].sum().round(2).sort_index()


def test_hubspot_is_a_registered_source() -> None:
    assert "hubspot" in KINDS
    assert SOURCES["hubspot"].locate(EXPORT) == DEALS
    assert SOURCES["hubspot"].locate(DEALS) == DEALS
    with pytest.raises(ValueError, match="no deals export"):
        SOURCES["hubspot"].locate(SOURCE)


def test_amounts_per_owner_quarter_and_status_equal_the_source(
        imported: dict[str, pd.DataFrame], source: dict[str, pd.DataFrame]) -> None:
    ours, theirs = imported[OPPORTUNITIES], source[OPPORTUNITIES]
    assert len(ours) == len(theirs) == 320
    assert ours[STATUS].value_counts().to_dict() == {"won": 80, "lost": 80, "open": 160}
    pd.testing.assert_series_equal(_by_owner_quarter(ours), _by_owner_quarter(theirs))
    # Both pipelines are there; Closed Won / Closed Lost are won / lost in each.
    assert set(ours["pipeline"]) == {"Sales Pipeline", "Partner Pipeline"}
    closed = ours[STATUS] != "open"
    assert set(ours.loc[closed, STAGE]) == {"Closed Won", "Closed Lost"}
    # Won deals are the orders, with the same revenue.
    orders = imported[ORDERS]
    won = ours[ours[STATUS] == "won"]
    assert len(orders) == len(won) == 80
    assert orders[AMOUNT].sum() == pytest.approx(source[ORDERS][AMOUNT].sum())
    # Customers by company name, with country and industry from the companies export.
    customers = imported[CUSTOMERS].set_index(CUSTOMER_ID)
    assert set(ours[CUSTOMER_ID].dropna()) <= set(customers.index)
    assert customers.loc["Cancity", REGION] == "United States"
    assert customers.loc["Cancity", SEGMENT] == "retail"


def test_stage_history_is_carried_over(imported: dict[str, pd.DataFrame]) -> None:
    raw = pd.read_csv(SOURCE / "sales_pipeline.csv", dtype=str, keep_default_na=False,
                      na_values=[""])
    history = imported[STAGE_HISTORY]
    opps = imported[OPPORTUNITIES].assign(source_id=raw["opportunity_id"])
    # Prospecting-only deals entered one stage, engaging two, closed ones three.
    expected = {"Prospecting": 1, "Engaging": 2, "Won": 3, "Lost": 3}
    entries = history.groupby(OPPORTUNITY_ID).size()
    assert (opps[OPPORTUNITY_ID].map(entries).to_numpy()
            == raw["deal_stage"].map(expected).to_numpy()).all()
    assert len(history) == 720
    last = history.groupby(OPPORTUNITY_ID).tail(1).set_index(OPPORTUNITY_ID)[STAGE]
    assert (opps[OPPORTUNITY_ID].map(last) == opps[STAGE]).all()
    # The engaging stage was entered on the source's engage_date, the closed one on close_date.
    engaged = history[history[STAGE].isin(["Qualified To Buy", "Partner Engaged"])]
    engage = pd.Series(pd.to_datetime(raw["engage_date"]).to_numpy(), index=opps[OPPORTUNITY_ID])
    assert (engaged[ENTERED_AT].dt.normalize().to_numpy()
            == engaged[OPPORTUNITY_ID].map(engage).to_numpy()).all()
    closed = history[history[STAGE].str.startswith("Closed")]
    close = pd.Series(pd.to_datetime(raw["close_date"]).to_numpy(), index=opps[OPPORTUNITY_ID])
    assert (closed[ENTERED_AT].dt.normalize().to_numpy()
            == closed[OPPORTUNITY_ID].map(close).to_numpy()).all()
    assert history["exited_at"].notna().sum() > 0


def test_hierarchy_comes_from_teams_and_parent_teams(imported: dict[str, pd.DataFrame]) -> None:
    teams = pd.read_csv(SOURCE / "sales_teams.csv", dtype=str)
    org = imported[ORG].set_index(REP)
    assert len(org) == len(teams) == 35
    for agent, manager, office in teams[["sales_agent", "manager", "regional_office"]].itertuples(
            index=False):
        assert org.loc[agent, TEAM] == f"{manager}'s team"
        assert org.loc[agent, REGION] == office


def test_cli_import_validate_feasibility(tmp_path: Path) -> None:
    out = tmp_path / "data"
    env = {"QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "QUOTACAST_DATABASE_URL": f"sqlite:///{tmp_path / 'alerts.db'}",
           "QUOTACAST_N_JOBS": "1"}
    runner = CliRunner()
    result = runner.invoke(app, ["import", "hubspot", str(EXPORT), "--out", str(out)], env=env)
    assert result.exit_code == 0, result.stderr
    assert "stage_history: 720 stage entries" in result.stderr
    assert "org: region = the team's parent team" in result.stderr
    assert "check:" not in result.stderr  # both pipelines have won and lost deals
    assert {p.name for p in out.iterdir()} >= {"opportunities.csv", "stage_history.csv",
                                               "orders.csv", "customers.csv", "org.csv"}
    result = runner.invoke(app, ["validate", "--data", str(out)], env=env)
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["feasibility", "--data", str(out), "--draws", "200"], env=env)
    assert result.exit_code == 0, result.stderr


def test_xlsx_export_imports_like_the_csv_one(tmp_path: Path,
                                             imported: dict[str, pd.DataFrame]) -> None:
    """HubSpot's XLSX export holds real dates and numbers; the result is the same."""
    deals = _deals()
    dates = [c for c in deals.columns if c.endswith("Date") or c.startswith("Date ")]
    typed = deals.assign(**{c: pd.to_datetime(deals[c]) for c in dates},
                         Amount=pd.to_numeric(deals["Amount"].str.replace(",", "")),
                         **{"Record ID": pd.to_numeric(deals["Record ID"])})
    typed.to_excel(tmp_path / "hubspot-crm-exports-all-deals-2017-12-31.xlsx", index=False)
    for other in EXPORT.glob("*.csv"):
        if "deals" not in other.name:
            (tmp_path / other.name).write_bytes(other.read_bytes())
    frames = import_dataset("hubspot", tmp_path).frames
    for table in (OPPORTUNITIES, STAGE_HISTORY, ORDERS, CUSTOMERS, ORG):
        pd.testing.assert_frame_equal(frames[table], imported[table], check_dtype=False)


@pytest.mark.shared_data
def test_the_whole_pipeline_as_a_hubspot_export(shared_data: Path, tmp_path: Path) -> None:
    """All 8,800 deals through make_hubspot.py: every owner/quarter/status amount matches."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_hubspot", HERE / "make_hubspot.py")
    assert spec is not None and spec.loader is not None
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    assert maker.SHARED.parent == shared_data
    maker.write_source(None, tmp_path)
    maker.write_export(tmp_path)
    ours = import_dataset("hubspot", tmp_path / "export").frames
    theirs = import_dataset("crm-sales", shared_data / "crm-sales-opportunities").frames
    assert len(ours[OPPORTUNITIES]) == 8800
    ours_sums = _by_owner_quarter(ours[OPPORTUNITIES])
    assert len(ours_sums) == 356
    pd.testing.assert_series_equal(ours_sums, _by_owner_quarter(theirs[OPPORTUNITIES]))
    assert len(ours[STAGE_HISTORY]) == 23811


# --- the export's variants, on small frames ---------------------------------------------------

def _small(**extra: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({
        "Record ID": ["1", "2", "3"],
        "Deal Stage": ["Renewed", "Churned (Renewals)", "Renewal Due"],
        "Amount": ["12,400.50", "800", ""],
        "Close Date": ["2023-09-13T14:05:00Z", "2023-09-20 10:00", "2023-12-01"],
        "Create Date": ["2023-01-02 09:00", "2023-02-01 09:00", "2023-03-01 09:00"],
        "Deal owner": ["Ann Lee (ann@example.com)", "Bo Ng", ""],
        "Associated Company": ["Acme;Globex", "", "Initech"],
        "Pipeline": ["Renewals", "Renewals", "Renewals"],
        "Date entered 'Renewal Due (Renewals)'": ["2023-01-02 09:00", "2023-02-01 09:00",
                                                  "2023-03-01 09:00"],
        "Date entered 'Renewed (Renewals)'": ["2023-09-13 14:05", "", ""],
    })
    for key, values in extra.items():
        frame[key] = values
    return frame


def test_closed_stages_are_configurable_and_flags_win() -> None:
    by_default = hubspot_tables(_small()).frames[OPPORTUNITIES]
    assert list(by_default[STATUS]) == ["open", "open", "open"]
    named = hubspot_tables(_small(), options={"won_stages": ["Renewed"],
                                              "lost_stages": "churned"})
    opps = named.frames[OPPORTUNITIES]
    assert list(opps[STATUS]) == ["won", "lost", "open"]
    flagged = hubspot_tables(_small(**{"Is Closed Won": ["true", "false", "false"],
                                      "Is Deal Closed?": ["true", "true", "false"]}))
    assert list(flagged.frames[OPPORTUNITIES][STATUS]) == ["won", "lost", "open"]
    assert any("status from 'Is Closed Won'" in n for n in flagged.notes)
    lost = hubspot_tables(_small(**{"Is Closed Won": ["true", "false", "false"],
                                   "Is closed lost": ["false", "true", "false"]}))
    assert list(lost.frames[OPPORTUNITIES][STATUS]) == ["won", "lost", "open"]


def test_closed_stage_names_from_the_options_file(tmp_path: Path) -> None:
    _small().to_csv(tmp_path / "deals.csv", index=False)
    result = import_dataset("hubspot", tmp_path)
    assert list(result.frames[OPPORTUNITIES][STATUS]) == ["open", "open", "open"]
    assert any(n.startswith("check: no deal of pipeline 'Renewals' is won") for n in result.notes)
    (tmp_path / "quotacast-hubspot.yaml").write_text(
        "won_stages: [Renewed]\nlost_stages: [Churned]\n", encoding="utf-8")
    result = import_dataset("hubspot", tmp_path)
    assert list(result.frames[OPPORTUNITIES][STATUS]) == ["won", "lost", "open"]
    assert not any(n.startswith("check:") for n in result.notes)
    (tmp_path / "quotacast-hubspot.yaml").write_text("won: [Renewed]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds won_stages and lost_stages"):
        import_dataset("hubspot", tmp_path)


def test_formats_owners_companies_and_missing_hierarchy() -> None:
    result = hubspot_tables(_small(), options={"won_stages": ["renewed"]})
    opps = result.frames[OPPORTUNITIES]
    assert list(opps[AMOUNT]) == [12400.5, 800.0, 0.0]
    assert list(opps[OWNER]) == ["Ann Lee", "Bo Ng", "(no owner)"]
    assert list(opps[CUSTOMER_ID]) == ["Acme", None, "Initech"]
    assert opps[CLOSE_DATE].iloc[0] == pd.Timestamp("2023-09-13 14:05")
    assert opps[CREATED_AT].dtype == "datetime64[ns]"
    assert ORG not in result.frames
    assert any(n.startswith("no hierarchy available") for n in result.notes)
    assert any("name several companies" in n for n in result.notes)
    history = result.frames[STAGE_HISTORY]
    assert list(history[STAGE]) == ["Renewal Due", "Renewed", "Renewal Due", "Renewal Due"]
    _, problems = validate_tables(result.frames)
    assert problems == []


def test_users_without_parent_teams_and_unknown_owners() -> None:
    users = pd.DataFrame({"First Name": ["Ann"], "Last Name": ["Lee"],
                          "Email": ["ann@example.com"], "Teams": ["East; Renewals"]})
    result = hubspot_tables(_small(), users=users)
    org = result.frames[ORG].set_index(REP)
    assert org.loc["Ann Lee", TEAM] == "East"
    assert org.loc["Ann Lee", REGION] == "East"
    assert org.loc["Bo Ng", TEAM] == "(no team)"
    by_email = hubspot_tables(_small(**{"Deal owner": ["ANN@example.com", "Bo Ng", ""]}),
                              users=users)
    assert list(by_email.frames[OPPORTUNITIES][OWNER]) == ["Ann Lee", "Bo Ng", "(no owner)"]
    assert any("name their owner by email" in n for n in by_email.notes)
    assert any("not in the users export" in n for n in result.notes)
    _, problems = validate_tables(result.frames)
    assert problems == []


def test_stage_columns_and_bad_cells() -> None:
    columns = ['Date entered "Unit 3 (Final) In Production (Plans Pipeline)"',
               "Date exited 'Closed Won (Sales Pipeline)'",
               "Date entered Closed Lost (Sales Pipeline)",
               "Date entered current stage", "Close Date"]
    assert stage_columns(columns) == [
        (columns[0], "entered", "Unit 3 (Final) In Production", "Plans Pipeline"),
        (columns[1], "exited", "Closed Won", "Sales Pipeline"),
        (columns[2], "entered", "Closed Lost", "Sales Pipeline"),
    ]
    with pytest.raises(ValueError, match="not numbers"):
        parse_amounts(pd.Series(["1,2,3"]), "Amount")
    with pytest.raises(ValueError, match="not dates as HubSpot writes them"):
        parse_hubspot_dates(pd.Series(["13/09/2023"]), "Close Date")
    with pytest.raises(ValueError, match="lacks column"):
        import_dataset("hubspot", SOURCE / "sales_pipeline.csv")
