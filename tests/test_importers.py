"""engine.importers: public datasets -> tables that validate with zero problems.

The fixtures in tests/fixtures/importers are small slices of the real files (a few hundred rows,
raw lines copied byte for byte), cut by rule with:

    .venv/bin/python tests/fixtures/importers/make_fixtures.py

The numbers asserted below (rows dropped, orders made) were counted in those slices by hand, so
a change in the importers' rules shows up as a failing test. The tests marked ``shared_data``
import the full datasets from ../shared/data.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.importers import KINDS, SOURCES, ImportResult, Source, import_dataset
from engine.io import load_tables, validate_tables, write_data_dir
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CHANNEL,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    MANAGER,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    PRODUCT,
    REGION,
    REP,
    SEGMENT,
    STAGE,
    STATUS,
    TEAM,
)
from service.cli.app import app

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "importers"
RETAIL = FIXTURES / "online-retail"
CRM = FIXTURES / "crm-sales"
STORE = FIXTURES / "superstore"
STORE_FILE = STORE / "Sample - Superstore.csv"


def _valid(result: ImportResult) -> dict[str, pd.DataFrame]:
    """The result's frames after validation; fails the test listing every problem."""
    tables, problems = validate_tables(result.frames)
    assert problems == [], "\n".join(map(str, problems))
    return tables.frames


def _note(result: ImportResult, start: str) -> str:
    found = [n for n in result.notes if n.startswith(start)]
    assert len(found) == 1, f"no single note starting {start!r} in {result.notes}"
    return found[0]


def test_kinds_are_the_three_known_datasets() -> None:
    assert KINDS[:3] == ("online-retail", "crm-sales", "superstore")


def test_every_source_is_one_registry_entry_with_its_files() -> None:
    assert tuple(SOURCES) == KINDS
    for name, source in SOURCES.items():
        assert source.name == name
        assert source.description and "\n" not in source.description
        assert source.files or source.read_with  # mapped reads what its mapping names
        assert all(f.endswith((".csv", ".csv.gz")) for f in source.files)
    assert SOURCES["crm-sales"].files_text() == ("sales_pipeline.csv with accounts.csv, "
                                                 "sales_teams.csv, products.csv")
    assert SOURCES["online-retail"].files_text() == "online_retail.csv.gz or online_retail.csv"


def test_a_new_source_slots_in_as_one_entry(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """What adding an importer takes: a read function and its Source in the registry."""
    (tmp_path / "deals.csv").write_text("id,customer,day,value\nD1,C1,2026-01-05,120\n")

    def read(path: Path) -> ImportResult:
        raw = pd.read_csv(path, dtype=str)
        orders = pd.DataFrame({ORDER_ID: raw["id"], CUSTOMER_ID: raw["customer"],
                               ORDER_DATE: pd.to_datetime(raw["day"]),
                               AMOUNT: raw["value"].astype(float)})
        return ImportResult({ORDERS: orders}, [f"read {len(raw)} deals from {path.name}"])

    monkeypatch.setitem(SOURCES, "toy", Source("toy", "a toy export -> orders", ("deals.csv",),
                                               read))
    result = import_dataset("toy", tmp_path)
    assert result.notes == ["read 1 deals from deals.csv"]
    assert _valid(result)[ORDERS][AMOUNT].tolist() == [120.0]


def test_import_help_is_written_from_the_registry() -> None:
    result = CliRunner().invoke(app, ["import", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for source in SOURCES.values():
        assert f"{source.name}: {source.description}" in text
        assert source.files_text() in text
    assert f"{', '.join(KINDS[:-1])} or {KINDS[-1]}" in text


# --- online-retail ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retail() -> ImportResult:
    return import_dataset("online-retail", RETAIL)


def test_online_retail_fixture_validates(retail: ImportResult) -> None:
    frames = _valid(retail)
    assert set(frames) == {ORDERS, CUSTOMERS}
    # 30 invoices in the slice: 2 without a customer and 3 bad-debt 'A' entries are dropped.
    assert len(frames[ORDERS]) == 25
    assert len(frames[CUSTOMERS]) == 11


def test_online_retail_drop_notes_count_exactly(retail: ImportResult) -> None:
    assert _note(retail, "read ") == (
        "read 207 invoice lines from online_retail.csv (amounts in GBP)")
    assert _note(retail, "dropped 5 invoice lines: no CustomerID")
    # The 3 'A' lines also lack a CustomerID: counted once, under the first reason.
    assert _note(retail, "dropped 0 invoice lines: 'A' invoices").endswith(
        "3 more such lines were already dropped above")
    assert _note(retail, "dropped 3 invoice lines: unit price 0")


def test_online_retail_cancellations_are_negative(retail: ImportResult) -> None:
    orders = retail.frames[ORDERS].set_index(ORDER_ID)
    assert orders.loc["C536379", AMOUNT] == pytest.approx(-27.5)  # Quantity -1 x 27.50
    assert (orders.loc[orders.index.str.startswith("C"), AMOUNT] < 0).all()
    assert (orders.loc[~orders.index.str.startswith("C"), AMOUNT] > 0).all()
    assert _note(retail, "9 cancellation invoices")


def test_online_retail_order_is_invoice_total_on_its_day(retail: ImportResult) -> None:
    raw = pd.read_csv(RETAIL / "online_retail.csv", dtype={"InvoiceNo": str})
    lines = raw[raw["InvoiceNo"] == "536591"]
    orders = retail.frames[ORDERS].set_index(ORDER_ID)
    expected = (lines["Quantity"] * lines["UnitPrice"]).sum()
    assert orders.loc["536591", AMOUNT] == pytest.approx(expected)
    # Its 40 lines are stamped at two different minutes; the order is the invoice's day.
    assert orders.loc["536591", ORDER_DATE] == pd.Timestamp("2010-12-01")
    assert orders.loc["536591", CUSTOMER_ID] == "14606"
    assert _note(retail, "1 invoices have lines stamped")


def test_online_retail_region_is_the_usual_country(retail: ImportResult) -> None:
    customers = retail.frames[CUSTOMERS].set_index(CUSTOMER_ID)
    # 12457 has 6 invoices shipped from Switzerland and 2 from Cyprus.
    assert customers.loc["12457", REGION] == "Switzerland"
    assert customers.loc["12583", REGION] == "France"


def test_online_retail_accepts_the_file_itself() -> None:
    by_file = import_dataset("online-retail", RETAIL / "online_retail.csv")
    assert len(by_file.frames[ORDERS]) == 25


# --- crm-sales -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crm() -> ImportResult:
    return import_dataset("crm-sales", CRM)


def _pipeline() -> pd.DataFrame:
    return pd.read_csv(CRM / "sales_pipeline.csv", dtype=str, keep_default_na=False)


def test_crm_fixture_validates(crm: ImportResult) -> None:
    frames = _valid(crm)
    assert set(frames) == {OPPORTUNITIES, ORDERS, CUSTOMERS, ORG}
    assert len(frames[OPPORTUNITIES]) == 246
    assert len(frames[ORDERS]) == 66  # every won deal in the slice has an account
    assert len(frames[CUSTOMERS]) == 85
    assert len(frames[ORG]) == 35


def test_crm_gtxpro_is_normalised(crm: ImportResult) -> None:
    products = set(crm.frames[OPPORTUNITIES][PRODUCT]) | set(crm.frames[ORDERS][PRODUCT])
    assert "GTXPro" not in products
    assert "GTX Pro" in products
    renamed = int((_pipeline()["product"] == "GTXPro").sum())
    assert renamed > 0
    assert _note(crm, "product 'GTXPro' renamed to 'GTX Pro'").endswith(f"({renamed} deals)")


def test_crm_status_amount_and_dates(crm: ImportResult) -> None:
    opps = crm.frames[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    pipeline = _pipeline().set_index("opportunity_id")
    expected_status = pipeline["deal_stage"].map(
        {"Won": "won", "Lost": "lost", "Engaging": "open", "Prospecting": "open"})
    pd.testing.assert_series_equal(opps[STATUS], expected_status, check_names=False)
    won, lost, is_open = (opps[STATUS] == s for s in ("won", "lost", "open"))
    close_value = pd.to_numeric(pipeline["close_value"])
    assert (opps.loc[won, AMOUNT] == close_value[won]).all()
    # Lost deals are worth their list price, not their close_value of 0.
    assert (opps.loc[lost | is_open, AMOUNT] == opps.loc[lost | is_open, "list_price"]).all()
    assert (opps.loc[lost, AMOUNT] > 0).all()
    # Prospecting deals have no engage_date: created on the last day in the data (the slice
    # holds the deals of the first months only).
    prospecting = opps[STAGE] == "Prospecting"
    assert (opps.loc[prospecting, CREATED_AT] == pd.Timestamp("2017-03-31")).all()
    # Open deals close, as expected, one median won cycle after they were created.
    cycle = (opps.loc[won, CLOSE_DATE] - opps.loc[won, CREATED_AT]).dt.days.median()
    assert (opps.loc[is_open, CLOSE_DATE] - opps.loc[is_open, CREATED_AT]
            == pd.Timedelta(days=round(cycle))).all()
    assert _note(crm, "close_date of the 120 open deals is expected")


def test_crm_missing_account_is_kept_open_without_customer(crm: ImportResult) -> None:
    opps = crm.frames[OPPORTUNITIES]
    no_account = opps[CUSTOMER_ID].isna()
    assert int(no_account.sum()) == 74  # 39 Engaging + 35 Prospecting in the slice
    assert (opps.loc[no_account, STATUS] == "open").all()
    assert _note(crm, "74 deals have no account")


def test_crm_won_deal_without_account_stays_an_opportunity(tmp_path: Path) -> None:
    for path in CRM.iterdir():
        shutil.copyfile(path, tmp_path / path.name)
    pipeline = _pipeline()
    first_won = pipeline.index[pipeline["deal_stage"] == "Won"][0]
    orphan = pipeline.loc[first_won, "opportunity_id"]
    pipeline.loc[first_won, "account"] = ""
    pipeline.to_csv(tmp_path / "sales_pipeline.csv", index=False)

    result = import_dataset("crm-sales", tmp_path / "sales_pipeline.csv")
    frames = _valid(result)
    opps = frames[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    assert opps.loc[orphan, STATUS] == "won"
    assert pd.isna(opps.loc[orphan, CUSTOMER_ID])
    assert orphan not in set(frames[ORDERS][OPPORTUNITY_ID])
    assert len(frames[ORDERS]) == 65
    assert _note(result, "1 won deal without an account: no order made")


def test_crm_orders_customers_and_org(crm: ImportResult) -> None:
    frames = crm.frames
    orders, opps = frames[ORDERS], frames[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    linked = opps.loc[orders[OPPORTUNITY_ID]]
    assert (linked[STATUS] == "won").all()
    assert (orders[ORDER_DATE].to_numpy() == linked[CLOSE_DATE].to_numpy()).all()
    assert (orders[AMOUNT].to_numpy() == linked[AMOUNT].to_numpy()).all()
    customers = frames[CUSTOMERS].set_index(CUSTOMER_ID)
    assert "technolgy" not in set(customers[SEGMENT])
    assert customers.loc["Acme Corporation", SEGMENT] == "technology"
    managers = customers[ACCOUNT_MANAGER].dropna()
    assert set(managers) <= set(frames[ORG][REP])
    org = frames[ORG].set_index(REP)
    assert org.loc["Moses Frase", [TEAM, REGION, MANAGER]].tolist() == [
        "Dustin Brinkmann", "Central", "Dustin Brinkmann"]


# --- superstore ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store() -> ImportResult:
    return import_dataset("superstore", STORE)


def test_superstore_fixture_validates(store: ImportResult) -> None:
    frames = _valid(store)
    assert set(frames) == {ORDERS, CUSTOMERS}
    assert len(frames[ORDERS]) == 150
    assert frames[ORDERS][CUSTOMER_ID].isin(frames[CUSTOMERS][CUSTOMER_ID]).all()


def test_superstore_us_dates_are_month_first(store: ImportResult) -> None:
    orders = store.frames[ORDERS].set_index(ORDER_ID)
    assert orders.loc["CA-2018-152156", ORDER_DATE] == pd.Timestamp("2018-11-08")  # 11/8/2018
    assert orders.loc["US-2017-108966", ORDER_DATE] == pd.Timestamp("2017-10-11")  # 10/11/2017
    assert orders.loc["CA-2019-114412", ORDER_DATE] == pd.Timestamp("2019-04-15")  # 4/15/2019


def test_superstore_orders_aggregate_their_lines(store: ImportResult) -> None:
    orders = store.frames[ORDERS].set_index(ORDER_ID)
    first = orders.loc["CA-2018-152156"]
    assert first[AMOUNT] == pytest.approx(261.96 + 731.94)
    assert (first[PRODUCT], first[CHANNEL], first["n_lines"]) == (
        "Furniture", "Second Class", 2)
    # 7 lines over three categories; Furniture and Technology lines hold most of the sales.
    mixed = orders.loc["CA-2016-115812"]
    assert mixed["n_lines"] == 7
    assert mixed[PRODUCT] in {"Furniture", "Technology"}
    customers = store.frames[CUSTOMERS].set_index(CUSTOMER_ID)
    assert customers.loc["CG-12520", [SEGMENT, REGION]].tolist() == ["Consumer", "South"]


def test_superstore_reads_windows_1252_copies(tmp_path: Path) -> None:
    text = STORE_FILE.read_text(encoding="utf-8-sig")
    assert "\xa0" in text  # a byte that is not valid UTF-8 once written as cp1252
    (tmp_path / STORE_FILE.name).write_bytes(text.encode("cp1252"))
    result = import_dataset("superstore", tmp_path)
    _valid(result)
    assert _note(result, "Sample - Superstore.csv was read as Windows-1252")


def test_superstore_rejects_day_first_dates(tmp_path: Path) -> None:
    text = STORE_FILE.read_text(encoding="utf-8-sig").replace("4/15/2019", "15/4/2019")
    (tmp_path / STORE_FILE.name).write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"Order Date: 2 value\(s\) are not dates .*'15/4/2019'"):
        import_dataset("superstore", tmp_path)


# --- writing and bad arguments ---------------------------------------------------------------


@pytest.mark.parametrize("kind, src", [("online-retail", RETAIL), ("crm-sales", CRM),
                                       ("superstore", STORE)])
def test_written_data_dir_loads_back(kind: str, src: Path, tmp_path: Path) -> None:
    result = import_dataset(kind, src)
    out = write_data_dir(result.frames, tmp_path / "data")
    tables = load_tables(out)  # raises BadInput on any problem
    for name, frame in result.frames.items():
        assert len(tables[name]) == len(frame)


def test_unknown_kind_is_a_plain_value_error() -> None:
    with pytest.raises(ValueError, match="unknown dataset kind 'retail': expected one of "
                                         "online-retail, crm-sales, superstore"):
        import_dataset("retail", RETAIL)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_path_is_a_plain_value_error(kind: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        import_dataset(kind, tmp_path / "nowhere")
    with pytest.raises(ValueError, match=f"no .* in {re.escape(str(tmp_path))}"):
        import_dataset(kind, tmp_path)


def test_crm_needs_its_side_files(tmp_path: Path) -> None:
    shutil.copyfile(CRM / "sales_pipeline.csv", tmp_path / "sales_pipeline.csv")
    with pytest.raises(ValueError, match=r"accounts\.csv is missing"):
        import_dataset("crm-sales", tmp_path)


def test_wrong_file_names_the_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks column"):
        import_dataset("online-retail", STORE_FILE)


# --- the full public datasets ----------------------------------------------------------------


def _import_full(kind: str, src: Path) -> dict[str, pd.DataFrame]:
    started = time.perf_counter()
    frames = _valid(import_dataset(kind, src))
    assert time.perf_counter() - started < 20
    return frames


@pytest.mark.shared_data
def test_full_online_retail(shared_data: Path) -> None:
    frames = _import_full("online-retail", shared_data / "online-retail")
    orders = frames[ORDERS]
    # SOURCE.md: 22,190 invoices and 4,372 customers with a CustomerID; 4 invoices (1 customer)
    # hold only zero-price lines.
    assert len(orders) == 22_186
    assert len(frames[CUSTOMERS]) == 4_371
    assert int(orders[ORDER_ID].str.startswith("C").sum()) == 3_654
    assert orders[ORDER_DATE].min() == pd.Timestamp("2010-12-01")
    assert orders[ORDER_DATE].max() == pd.Timestamp("2011-12-09")


@pytest.mark.shared_data
def test_full_crm_sales(shared_data: Path) -> None:
    frames = _import_full("crm-sales", shared_data / "crm-sales-opportunities")
    opps = frames[OPPORTUNITIES]
    assert opps[STATUS].value_counts().to_dict() == {"won": 4_238, "lost": 2_473, "open": 2_089}
    assert int(opps[CUSTOMER_ID].isna().sum()) == 1_425
    assert len(frames[ORDERS]) == 4_238
    assert len(frames[CUSTOMERS]) == 85
    assert len(frames[ORG]) == 35
    # SOURCE.md: won close_value by quarter, 2017 Q1..Q4 = 1.13M, 3.09M, 2.98M, 2.80M.
    quarterly = frames[ORDERS].groupby(frames[ORDERS][ORDER_DATE].dt.quarter)[AMOUNT].sum()
    assert (quarterly / 1e6).round(2).tolist() == [1.13, 3.09, 2.98, 2.80]


@pytest.mark.shared_data
def test_full_superstore(shared_data: Path) -> None:
    frames = _import_full("superstore", shared_data / "superstore-sales")
    orders = frames[ORDERS]
    assert len(orders) == 5_009
    assert len(frames[CUSTOMERS]) == 793
    assert orders[ORDER_DATE].min() == pd.Timestamp("2016-01-03")
    assert orders[ORDER_DATE].max() == pd.Timestamp("2019-12-30")
