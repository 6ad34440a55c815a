"""quotacast import salesforce: a Salesforce export of a real pipeline -> a valid data directory.

The fixture (tests/fixtures/importers/salesforce) is a slice of the CRM Sales Opportunities
pipeline converted into the shape of a Salesforce org's export by make_salesforce.py beside it;
``source/`` holds the slice as the original files. The truth the import is compared with is
that source, read by the crm-sales importer.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.importers import import_dataset
from engine.importers.salesforce import id15
from engine.io import load_tables, validate_tables
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    CUSTOMER_ID,
    CUSTOMERS,
    MANAGER,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDERS,
    ORG,
    ORIGINAL_CLOSE_DATE,
    OWNER,
    REGION,
    REP,
    STAGE,
    STAGE_HISTORY,
    STATUS,
    TEAM,
)
from service.cli.app import app

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "importers" / "salesforce"
SOURCE = FIXTURE / "source"


@pytest.fixture(scope="module")
def source() -> dict[str, pd.DataFrame]:
    return import_dataset("crm-sales", SOURCE).frames


@pytest.fixture(scope="module")
def imported() -> dict[str, pd.DataFrame]:
    result = import_dataset("salesforce", FIXTURE)
    _, problems = validate_tables(result.frames)
    assert not problems, "\n".join(map(str, problems))
    return result.frames


def _by_owner_quarter(opps: pd.DataFrame) -> pd.Series:
    quarter = pd.to_datetime(opps[CLOSE_DATE]).dt.to_period("Q").astype(str)
    return opps.assign(quarter=quarter).groupby([OWNER, "quarter", STATUS])[AMOUNT].sum().round(2)


def test_id15_treats_the_18_character_form_as_the_same_record() -> None:
    ids = pd.Series(["0065g000000cPLIAA2", "0065g000000cPLI", " 0065g000000cPLI ", None, ""])
    assert id15(ids).tolist() == ["0065g000000cPLI"] * 3 + [None, None]
    # 15-character ids are case-sensitive: a different case is a different record...
    assert id15(pd.Series(["0065g000000cpli"])).iloc[0] != "0065g000000cPLI"
    # ...but an 18-character id's suffix records the case, so a spreadsheet's upper-casing of
    # it is undone.
    assert id15(pd.Series(["0065G000000CPLIAA2", "0065g000000cpliaa2"])).tolist() == [
        "0065g000000cPLI"] * 2


def test_amounts_per_owner_quarter_and_status_equal_the_source(
        imported: dict[str, pd.DataFrame], source: dict[str, pd.DataFrame]) -> None:
    opps = imported[OPPORTUNITIES]
    assert len(opps) == len(source[OPPORTUNITIES]) == 294
    assert opps[STATUS].value_counts().to_dict() == {"won": 145, "lost": 85, "open": 64}
    pd.testing.assert_series_equal(_by_owner_quarter(opps),
                                   _by_owner_quarter(source[OPPORTUNITIES]))
    # Names, not ids: owners are reps of the org, customers are account names.
    assert set(opps[OWNER]) <= set(imported[ORG][REP])
    assert set(opps[CUSTOMER_ID].dropna()) <= set(source[CUSTOMERS][CUSTOMER_ID])
    assert opps[CUSTOMER_ID].isna().sum() == source[OPPORTUNITIES][CUSTOMER_ID].isna().sum()
    assert set(imported[CUSTOMERS][ACCOUNT_MANAGER].dropna()) <= set(imported[ORG][REP])
    # No Order file: one order per won deal with an account, linked to it.
    orders, won = imported[ORDERS], opps[opps[STATUS] == "won"]
    assert len(orders) == won[CUSTOMER_ID].notna().sum() == len(source[ORDERS])
    assert set(orders[OPPORTUNITY_ID]) == set(won.dropna(subset=[CUSTOMER_ID])[OPPORTUNITY_ID])
    assert orders[AMOUNT].sum() == pytest.approx(source[ORDERS][AMOUNT].sum())


def test_hierarchy_comes_from_the_role_tree(imported: dict[str, pd.DataFrame]) -> None:
    teams = pd.read_csv(SOURCE / "sales_teams.csv")
    org = imported[ORG].set_index(REP).sort_index()
    expected = teams.set_index("sales_agent").sort_index()
    assert list(org.index) == list(expected.index)  # every agent, managers are not reps
    assert (org[TEAM] == expected["manager"] + " Team").all()
    assert (org[REGION] == expected["regional_office"]).all()
    assert (org[MANAGER] == expected["manager"]).all()


def test_stage_history_is_carried_over(imported: dict[str, pd.DataFrame]) -> None:
    history, opps = imported[STAGE_HISTORY], imported[OPPORTUNITIES]
    closed = opps[STATUS] != "open"
    by_deal = history.groupby(OPPORTUNITY_ID)
    # One run per stage entered: the first stage, then Won/Lost for closed deals.
    entered = history[STAGE].ne(by_deal[STAGE].shift())
    assert int(entered.sum()) == len(opps) + int(closed.sum()) == 524
    last = by_deal.tail(1).set_index(OPPORTUNITY_ID)
    assert (last[STAGE].reindex(opps[OPPORTUNITY_ID]).to_numpy() == opps[STAGE].to_numpy()).all()
    assert (last[CLOSE_DATE].reindex(opps[OPPORTUNITY_ID]).to_numpy()
            == opps[CLOSE_DATE].to_numpy()).all()
    assert set(by_deal.head(1)[STAGE]) == {"Prospecting", "Engaging"}
    # Open deals whose close date was pushed 4 weeks out: a row of its own (same stage, new
    # close_date), and the first close date as original_close_date.
    open_ = opps[~closed]
    pushed = open_[ORIGINAL_CLOSE_DATE] != open_[CLOSE_DATE]
    assert int(pushed.sum()) == int((~entered).sum()) == 11
    assert ((open_.loc[pushed, CLOSE_DATE] - open_.loc[pushed, ORIGINAL_CLOSE_DATE]).dt.days
            == 28).all()
    moves = history[~entered]
    assert set(moves[OPPORTUNITY_ID]) == set(open_.loc[pushed, OPPORTUNITY_ID])
    # The 20 rows of the export that only changed the amount are left out.
    exported = pd.read_csv(FIXTURE / "opportunityhistory.csv.gz", dtype=str)
    assert len(exported) - len(history) == 20


def test_field_history_gives_the_same_stage_history(
        imported: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    """OpportunityFieldHistory (Field/OldValue/NewValue) instead of OpportunityHistory."""
    src = tmp_path / "export"
    shutil.copytree(FIXTURE, src, ignore=shutil.ignore_patterns("source", "*.py", "opportunity*"))
    shutil.copy(FIXTURE / "Opportunity.csv", src / "OPPORTUNITY.csv")
    with gzip.open(FIXTURE / "opportunityhistory.csv.gz", "rt") as fh:
        hist = pd.read_csv(fh, dtype=str)
    rows = []
    for opp, group in hist.groupby("OpportunityId", sort=False):
        for prev, row in zip(group.iloc[:-1].to_dict("records"), group.iloc[1:].to_dict("records"),
                             strict=True):
            for field in ("StageName", "CloseDate"):
                if prev[field] != row[field]:
                    rows.append({"Id": "017" + row["Id"][3:], "OpportunityId": opp,
                                 "CreatedDate": row["CreatedDate"], "Field": field,
                                 "DataType": "DynamicEnum" if field == "StageName" else "Date",
                                 "OldValue": prev[field], "NewValue": row[field]})
    pd.DataFrame(rows).to_csv(src / "OpportunityFieldHistory.csv", index=False)
    frames = import_dataset("salesforce", src).frames
    _, problems = validate_tables(frames)
    assert not problems
    columns = [OPPORTUNITY_ID, STAGE, CLOSE_DATE]
    got = frames[STAGE_HISTORY].sort_values([OPPORTUNITY_ID, "entered_at"])[columns]
    want = imported[STAGE_HISTORY].sort_values([OPPORTUNITY_ID, "entered_at"])[columns]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    opened = frames[OPPORTUNITIES][STATUS] == "open"
    pd.testing.assert_series_equal(frames[OPPORTUNITIES].loc[opened, ORIGINAL_CLOSE_DATE],
                                   imported[OPPORTUNITIES].loc[opened, ORIGINAL_CLOSE_DATE])


def test_order_file_makes_orders_linked_to_their_deals(tmp_path: Path) -> None:
    src = tmp_path / "export"
    shutil.copytree(FIXTURE, src, ignore=shutil.ignore_patterns("source", "*.py"))
    opps = pd.read_csv(FIXTURE / "Opportunity.csv", dtype=str, keep_default_na=False)
    won = opps[(opps["IsWon"] == "true") & (opps["AccountId"] != "")].head(10)
    pd.DataFrame({
        "Id": ["8015g00000" + f"{i:05d}" for i in range(len(won))],
        "OrderNumber": [f"{i:08d}" for i in range(len(won))],
        "AccountId": won["AccountId"].to_numpy(),
        "OpportunityId": won["Id"].str[:15].to_numpy(),
        "EffectiveDate": won["CloseDate"].to_numpy(),
        "TotalAmount": won["Amount"].to_numpy(), "Status": "Activated",
    }).to_csv(src / "Order.csv", index=False)
    frames = import_dataset("salesforce", src).frames
    _, problems = validate_tables(frames)
    assert not problems
    orders = frames[ORDERS]
    assert len(orders) == 10
    assert set(orders[OPPORTUNITY_ID]) == set(won["Id"].str[:15])
    assert set(orders[CUSTOMER_ID]) <= set(frames[CUSTOMERS][CUSTOMER_ID])
    assert orders[AMOUNT].sum() == pytest.approx(won["Amount"].astype(float).sum())


def test_missing_user_file_and_bad_flags_are_plain_errors(tmp_path: Path) -> None:
    src = tmp_path / "export"
    src.mkdir()
    shutil.copy(FIXTURE / "Opportunity.csv", src / "Opportunity.csv")
    with pytest.raises(ValueError, match=r"User\.csv is missing"):
        import_dataset("salesforce", src)
    shutil.copy(FIXTURE / "User.csv", src / "user.csv")
    text = (src / "Opportunity.csv").read_text().replace('"true","true"', '"yes-ish","true"', 1)
    (src / "Opportunity.csv").write_text(text)
    with pytest.raises(ValueError, match="IsClosed: 1 value"):
        import_dataset("salesforce", src)


def test_import_then_feasibility_in_two_commands(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["import", "salesforce", str(FIXTURE), "--out", "d"])
    assert result.exit_code == 0, result.output
    tables = load_tables(tmp_path / "d")
    assert len(tables[OPPORTUNITIES]) == 294
    assert len(tables[STAGE_HISTORY]) == 535
    result = runner.invoke(app, ["feasibility", "--data", "d"])
    assert result.exit_code == 0, result.output


def test_deleted_records_and_owners_without_a_role(tmp_path: Path) -> None:
    """An "Export All" holds recycle-bin rows (dropped, with a note); an owner with no role still
    gets a place in the org, under '(no role)', so the data validates; several currencies are
    said, not converted."""
    src = tmp_path / "export"
    shutil.copytree(FIXTURE, src, ignore=shutil.ignore_patterns("source", "*.py"))
    opps = pd.read_csv(src / "Opportunity.csv", dtype=str, keep_default_na=False)
    users = pd.read_csv(src / "User.csv", dtype=str, keep_default_na=False)
    integration = users.loc[users["NAME"] == "Integration User", "ID"].iloc[0]
    opps.loc[0, "OwnerId"] = integration
    opps.loc[1, "IsDeleted"] = "true"
    opps["CURRENCYISOCODE"] = ["EUR" if i % 10 == 0 else "USD" for i in range(len(opps))]
    opps.to_csv(src / "Opportunity.csv", index=False)
    result = import_dataset("salesforce", src)
    _, problems = validate_tables(result.frames)
    assert not problems
    frames = result.frames
    assert len(frames[OPPORTUNITIES]) == 293
    assert "Opportunity: dropped 1 deleted record (IsDeleted = true)" in result.notes
    assert any(n.startswith("amounts are in 2 currencies (USD, EUR)") for n in result.notes)
    org = frames[ORG].set_index(REP)
    assert org.loc["Integration User", TEAM] == org.loc["Integration User", REGION] == "(no role)"
    assert frames[OPPORTUNITIES][OWNER].iloc[0] == "Integration User"


@pytest.mark.shared_data
def test_the_whole_pipeline_as_a_salesforce_export(shared_data: Path, tmp_path: Path) -> None:
    """All 8,800 deals, converted by make_salesforce.py: every owner/quarter/status amount of the
    source comes back, and the result validates."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_salesforce",
                                                  FIXTURE / "make_salesforce.py")
    assert spec is not None and spec.loader is not None
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    assert maker.SHARED.parent == shared_data
    maker.main(1, tmp_path / "export")
    frames = import_dataset("salesforce", tmp_path / "export").frames
    _, problems = validate_tables(frames)
    assert not problems
    truth = import_dataset("crm-sales", tmp_path / "export" / "source").frames[OPPORTUNITIES]
    got = _by_owner_quarter(frames[OPPORTUNITIES])
    assert len(got) == 356
    pd.testing.assert_series_equal(got, _by_owner_quarter(truth))
