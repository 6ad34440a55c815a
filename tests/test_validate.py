"""Bad input (CONTRACTS.md section 2): every problem at once, named, exit 2, nothing written.

Each case starts from a small valid data directory, breaks one thing, and runs the real
command line (`quotacast validate --data D --out F`) through typer's runner.
"""

from __future__ import annotations

import gzip
import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.io import BadInput, load_tables, tier_targets, write_data_dir, write_frame
from engine.schemas import (
    AMOUNT,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    DS,
    ORDER_DATE,
    ORDERS,
    REP,
    SEVERITY,
)
from service.cli.app import app

VALID: dict[str, str] = {
    "org": "rep,team,region,manager\nana,north-1,north,maria\nben,south-1,south,sam\n",
    "customers": "customer_id,account_manager,region,segment,created_at\n"
    "c1,ana,north,smb,2023-01-05\nc2,ben,south,enterprise,2023-02-01\n",
    "orders": "order_id,customer_id,order_date,amount,product,opportunity_id\n"
    "o1,c1,2023-03-01,120.50,widget,\n"
    "o2,c2,2023-03-04,900,gadget,p1\n"
    "o3,c1,2023-04-02,-20,widget,\n",
    "opportunities": "opportunity_id,owner,created_at,close_date,stage,status,amount,customer_id\n"
    "p1,ben,2023-01-10,2023-03-04,closed,won,900,c2\n"
    "p2,ana,2023-02-10,2023-06-30,proposal,open,400,c1\n",
    "stage_history": "opportunity_id,stage,entered_at\n"
    "p1,prospecting,2023-01-10\np1,closed,2023-03-04\np2,prospecting,2023-02-10\n",
    "interactions": "customer_id,occurred_at,kind,severity\nc1,2023-03-10,complaint,high\n"
    "c2,2023-03-11,visit,\n",
    "targets": "period,level,key,amount\n2023Q2,company,all,2000\n2023Q2,region,north,800\n"
    "2023Q2,rep,ben,1200\n",
    "receivables": "invoice_id,customer_id,issued_at,due_date,amount,paid_at\n"
    "i1,c1,2023-03-01,2023-03-31,120.5,2023-04-10\ni2,c2,2023-03-04,2023-04-03,900,\n",
}

runner = CliRunner()
BAD_DATE = "unparseable date, expected ISO 8601 like 2017-08-31"


def write_dir(root: Path, tables: dict[str, str] | None = None) -> Path:
    """A data directory of CSV files, one per table."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (tables if tables is not None else VALID).items():
        (root / f"{name}.csv").write_text(text, encoding="utf-8")
    return root


def with_table(name: str, text: str) -> dict[str, str]:
    return {**VALID, name: text}


def run_validate(data: Path, out: Path) -> tuple[int, list[str]]:
    result = runner.invoke(app, ["validate", "--data", str(data), "--out", str(out)])
    lines = [line for line in result.stderr.splitlines() if re.match(r"^\w+:\d+: ", line)]
    return result.exit_code, lines


def test_valid_directory_loads_typed_tables(tmp_path: Path) -> None:
    tables = load_tables(write_dir(tmp_path / "d"))
    orders = tables.orders
    assert orders[ORDER_DATE].dtype == "datetime64[ns]"
    assert orders[AMOUNT].tolist() == [120.5, 900.0, -20.0]
    assert tables["interactions"][SEVERITY].tolist()[0] == 3.0  # "high" -> 3
    assert tables.derived == frozenset()


def test_validate_command_accepts_valid_data_and_writes_summary(tmp_path: Path) -> None:
    out = tmp_path / "summary.csv"
    code, lines = run_validate(write_dir(tmp_path / "d"), out)
    assert code == 0 and lines == []
    summary = pd.read_csv(out).set_index("table")
    assert summary.loc["orders", "rows"] == 3
    assert summary.loc["orders", "first_date"] == "2023-03-01"


# (table name, file text, expected problem lines)
CASES: dict[str, tuple[str, str, list[str]]] = {
    "missing required column": (
        "orders",
        "customer_id,amount\nc1,10\n",
        ["orders:1: order_date: missing required column (customer_id, amount)"],
    ),
    "unparseable date": (
        "orders",
        "customer_id,order_date,amount\nc1,2023-03-01,1\nc1,31/03/2023,2\nc2,2023-02-30,3\n",
        [
            f"orders:3: order_date: {BAD_DATE} (31/03/2023)",
            f"orders:4: order_date: {BAD_DATE} (2023-02-30)",
        ],
    ),
    "duplicate id": (
        "customers",
        "customer_id,segment\nc1,smb\nc2,smb\nc1,enterprise\n",
        [
            "customers:2: customer_id: duplicate value (c1)",
            "customers:4: customer_id: duplicate value (c1)",
        ],
    ),
    "negative opportunity amount": (
        "opportunities",
        "opportunity_id,owner,created_at,close_date,stage,status,amount\n"
        "p1,ben,2023-01-10,2023-03-04,closed,won,-900\np2,ana,2023-02-10,2023-06-30,proposal,open,1\n",
        ["opportunities:2: amount: must not be negative (-900.0)"],
    ),
    "unknown status": (
        "opportunities",
        "opportunity_id,owner,created_at,close_date,stage,status,amount\n"
        "p1,ben,2023-01-10,2023-03-04,closed,won,900\np2,ana,2023-02-10,2023-06-30,proposal,pending,1\n",
        ["opportunities:3: status: unknown status, expected one of open, won, lost (pending)"],
    ),
    "order for unknown customer": (
        "orders",
        "customer_id,order_date,amount\nc1,2023-03-01,1\nc9,2023-03-02,2\n",
        ["orders:3: customer_id: unknown customer (not in customers) (c9)"],
    ),
    "opportunity for unknown customer": (
        "opportunities",
        "opportunity_id,owner,created_at,close_date,stage,status,amount,customer_id\n"
        "p1,ben,2023-01-10,2023-03-04,closed,won,900,c2\np2,ana,2023-02-10,2023-06-30,x,open,1,zz\n",
        ["opportunities:3: customer_id: unknown customer (not in customers) (zz)"],
    ),
    "empty table": (
        "interactions",
        "customer_id,occurred_at,kind\n",
        ["interactions:0: -: empty table (no rows)"],
    ),
    "empty file": ("interactions", "", ["interactions:0: -: empty file (interactions.csv)"]),
    "missing value": (
        "org",
        "rep,team,region\nana,north-1,north\nben,,south\n",
        ["org:3: team: missing value (empty)"],
    ),
    "unknown target level": (
        "targets",
        "period,level,key,amount\n2023Q2,company,all,2000\n2023Q5,galaxy,x,1\n",
        [
            "targets:3: level: unknown level, expected company, region, team, rep or a column of "
            "customers/orders (galaxy)",
            "targets:3: period: period must look like 2017, 2017Q3 or 2017-08 (2023Q5)",
        ],
    ),
    "target for no node": (
        "targets",
        "period,level,key,amount\n2023Q2,company,all,2000\n2023Q2,rep,zoe,1\n"
        "2023Q2,team,north-9,1\n2023Q2,product,widget,5\n2023Q2,product,sprocket,5\n",
        [
            "targets:3: key: no such node (rep zoe)",
            "targets:4: key: no such node (team north-9)",
            "targets:6: key: no such node (product sprocket)",
        ],
    ),
    "misspelt column": (
        "orders",
        "customer_id,order_date,amuont\nc1,2023-03-01,10\n",
        ["orders:1: amount: missing required column (amuont: did you mean amount? columns: "
         "customer_id, order_date, amuont)"],
    ),
    "unknown tier and metric, a tier given twice": (
        "targets",
        "period,level,key,amount,tier,metric\n2023Q2,company,all,2000,,\n"
        "2023Q2,company,all,1500,must_hit,\n2023Q2,company,all,9,commit,revenue\n"
        "2023Q2,company,all,5,stretch,profit\n2023Q2,company,all,1800,plan,revenue\n",
        [
            "targets:4: tier: unknown tier, expected one of must_hit, plan, stretch (commit)",
            "targets:5: metric: unknown metric, expected one of revenue, new_customers, orders, "
            "pipeline_created, visits, retention_rate (profit)",
            "targets:2: period, level, key, tier, metric: duplicate combination "
            "(2023Q2/company/all/plan/revenue)",
            "targets:6: period, level, key, tier, metric: duplicate combination "
            "(2023Q2/company/all/plan/revenue)",
        ],
    ),
    "commits of no rep, a negative commit, an unknown category": (
        "commits",
        "period,rep,amount,category\n2023Q2,ana,100,commit\n2023Q2,zed,5,\n"
        "2023Q2,ben,-1,best_case\n2023Q2,ben,50,upside\n",
        [
            "commits:3: rep: no such node (a commit is a rep's) (zed)",
            "commits:4: amount: must not be negative (-1.0)",
            "commits:5: category: unknown category, expected one of commit, best_case (upside)",
        ],
    ),
    "inventory on hand below zero": (
        "inventory",
        "product,date,on_hand\nwidget,2023-03-01,10\nwidget,2023-03-02,-4\n",
        ["inventory:3: on_hand: must not be negative (-4.0)"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_names_table_line_column_and_writes_nothing(case: str, tmp_path: Path) -> None:
    table, text, expected = CASES[case]
    data = write_dir(tmp_path / "d", with_table(table, text))
    out = tmp_path / "out.csv"
    code, lines = run_validate(data, out)
    assert code == 2
    assert sorted(lines) == sorted(expected)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [data]  # no temp files either


def test_missing_required_table(tmp_path: Path) -> None:
    tables = {k: v for k, v in VALID.items() if k not in ("orders", "opportunities",
                                                         "stage_history")}
    code, lines = run_validate(write_dir(tmp_path / "d", tables), tmp_path / "o.csv")
    assert code == 2
    assert lines == [
        "orders:0: -: required table is missing (expected orders.csv, orders.csv.gz or "
        "orders.parquet, or rows in opportunities)"
    ]


ORDERS_HEADER = "order_id,customer_id,order_date,amount,product,opportunity_id\n"


@pytest.mark.parametrize("orders", ["absent", "header only"])
def test_orders_are_optional_when_opportunities_have_rows(orders: str, tmp_path: Path) -> None:
    given = {k: v for k, v in VALID.items() if k != "orders"}
    if orders == "header only":
        given["orders"] = ORDERS_HEADER
    data = write_dir(tmp_path / "d", given)
    result = runner.invoke(app, ["validate", "--data", str(data)])
    assert result.exit_code == 0, result.stderr
    assert "revenue is the won opportunities" in result.stderr
    tables = load_tables(data)
    assert tables.orders.empty
    assert tables.orders[ORDER_DATE].dtype == "datetime64[ns]"
    assert tables.orders[AMOUNT].dtype == "float64"
    assert (ORDERS in tables.derived) == (orders == "absent")
    # Customers are still derived from the deals when their table is absent too.
    del given["customers"]
    assert sorted(load_tables(write_dir(tmp_path / "e", given)).customers[CUSTOMER_ID]) == [
        "c1", "c2"]


def test_won_deals_are_the_revenue_without_orders(tmp_path: Path) -> None:
    from features.hierarchy import revenue_events

    tables = load_tables(write_dir(tmp_path / "d", {k: v for k, v in VALID.items()
                                                    if k != "orders"}))
    events = revenue_events(tables, as_of=pd.Timestamp("2023-07-01"))
    assert events[[DS, AMOUNT, REP]].to_dict("records") == [
        {DS: pd.Timestamp("2023-03-04"), AMOUNT: 900.0, REP: "ben"}]


def test_empty_orders_without_deals_is_still_bad_input(tmp_path: Path) -> None:
    header = "opportunity_id,owner,created_at,close_date,stage,status,amount,customer_id\n"
    given = {**VALID, "orders": ORDERS_HEADER, "opportunities": header}
    del given["stage_history"]
    code, lines = run_validate(write_dir(tmp_path / "d", given), tmp_path / "o.csv")
    assert code == 2
    assert "orders:0: -: empty table (no rows)" in lines
    assert "opportunities:0: -: empty table (no rows)" in lines


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    broken = {
        **VALID,
        "orders": "customer_id,order_date,amount\nc1,yesterday,1\nc9,2023-01-01,x\n",
        "opportunities": "opportunity_id,owner,created_at,close_date,stage,status,amount\n"
        "p1,ben,2023-01-10,2023-03-04,closed,maybe,-1\n",
    }
    del broken["stage_history"]
    code, lines = run_validate(write_dir(tmp_path / "d", broken), tmp_path / "o.csv")
    assert code == 2
    assert {line.split(": ")[0] + ": " + line.split(": ")[1] for line in lines} == {
        "orders:2: order_date",
        "orders:3: amount",
        "orders:3: customer_id",
        "opportunities:2: status",
        "opportunities:2: amount",
    }


def test_non_utf8_file_says_which_encoding_was_expected(tmp_path: Path) -> None:
    data = write_dir(tmp_path / "d")
    (data / "customers.csv").write_bytes("customer_id,segment\nc1,smb\nc2,café\n".encode("latin-1"))
    code, lines = run_validate(data, tmp_path / "o.csv")
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("customers:3: -: file is not UTF-8; save it as UTF-8")


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    data = write_dir(tmp_path / "d")
    (data / "customers.csv").write_bytes(b"\xef\xbb\xbf" + VALID["customers"].encode())
    tables = load_tables(data)
    assert CUSTOMER_ID in tables.customers.columns


def test_unknown_extension_and_two_files_for_one_table(tmp_path: Path) -> None:
    data = write_dir(tmp_path / "d")
    (data / "targets.xlsx").write_bytes(b"PK")
    pd.read_csv(data / "org.csv").to_parquet(data / "org.parquet")
    code, lines = run_validate(data, tmp_path / "o.csv")
    assert code == 2
    assert sorted(lines) == [
        "org:0: -: two files for one table (org.csv, org.parquet)",
        "targets:0: -: unknown file extension, expected .csv, .csv.gz or .parquet (targets.xlsx)",
    ]


def test_csv_gz_and_parquet_read_like_csv(tmp_path: Path) -> None:
    data = write_dir(tmp_path / "d")
    orders = (data / "orders.csv").read_text()
    (data / "orders.csv").unlink()
    (data / "orders.csv.gz").write_bytes(gzip.compress(orders.encode()))
    customers = pd.read_csv(data / "customers.csv")
    (data / "customers.csv").unlink()
    customers.to_parquet(data / "customers.parquet")
    tables = load_tables(data)
    assert tables.orders[AMOUNT].sum() == pytest.approx(1000.5)
    assert tables.customers[CREATED_AT].dtype == "datetime64[ns]"


def test_customers_derived_when_absent(tmp_path: Path) -> None:
    tables = load_tables(write_dir(tmp_path / "d", {"orders": VALID["orders"]}))
    assert sorted(tables.customers[CUSTOMER_ID]) == ["c1", "c2"]
    assert tables.derived == frozenset({CUSTOMERS})


def _sqlite(tmp_path: Path, tables: dict[str, str]) -> str:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as con:
        for name, text in tables.items():
            frame = pd.read_csv(pd.io.common.StringIO(text), dtype=str)
            frame.to_sql(name, con, index=False)
    return f"sqlite:///{path}"


def test_sql_source_without_orders_loads_when_deals_exist(tmp_path: Path) -> None:
    url = _sqlite(tmp_path, {k: v for k, v in VALID.items() if k != "orders"})
    tables = load_tables(url)
    assert tables.orders.empty and ORDERS in tables.derived
    assert len(tables["opportunities"]) == 2


def test_sql_source_loads_the_same_tables(tmp_path: Path) -> None:
    url = _sqlite(tmp_path, VALID)
    from_sql = load_tables(url)
    from_dir = load_tables(write_dir(tmp_path / "d"))
    for name in VALID:
        pd.testing.assert_frame_equal(from_sql[name], from_dir[name], check_dtype=False)


def test_sql_source_reports_primary_key_as_line(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as con:
        con.execute(
            "create table orders (order_id text primary key, customer_id text, "
            "order_date text, amount real)"
        )
        con.execute(
            "insert into orders values ('17', 'c1', '2023-01-01', 5), ('42', 'c1', 'not a date', 6)"
        )
    with pytest.raises(BadInput) as info:
        load_tables(f"sqlite:///{path}")
    assert [str(p) for p in info.value.problems] == [
        f"orders:42: order_date: {BAD_DATE} (not a date)"
    ]


def test_missing_data_directory_is_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "--data", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "data directory not found" in result.stderr


def _failing(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    path.write_text("half")
    raise RuntimeError("disk full")


def test_write_frame_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.csv"
    target.write_text("previous\n")
    monkeypatch.setattr("engine.io.write._write", _failing)
    with pytest.raises(RuntimeError):
        write_frame(pd.DataFrame({"a": [1]}), target)
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_write_data_dir_replaces_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "data"
    write_data_dir({"orders": pd.DataFrame({"a": [1]})}, target)
    calls: list[str] = []

    def fail_second(frame: pd.DataFrame, path: Path, fmt: str) -> None:
        calls.append(path.name)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        frame.to_csv(path, index=False)

    monkeypatch.setattr("engine.io.write._write", fail_second)
    with pytest.raises(RuntimeError):
        write_data_dir({"orders": pd.DataFrame({"a": [2]}), "org": pd.DataFrame()}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert pd.read_csv(target / "orders.csv")["a"].tolist() == [1]


def test_unknown_output_format_is_a_usage_error(tmp_path: Path) -> None:
    data = write_dir(tmp_path / "d")
    result = runner.invoke(app, ["validate", "--data", str(data), "--out", str(tmp_path / "x.txt")])
    assert result.exit_code == 2
    assert "unknown output format" in result.stderr


def test_non_utf8_byte_deep_in_a_large_file_names_its_real_line(tmp_path: Path) -> None:
    data = write_dir(tmp_path / "d", {"orders": VALID["orders"]})
    rows = "".join(f"c{i},smb\n" for i in range(50_000))
    text = ("customer_id,segment\n" + rows).encode() + "c_x,café\n".encode("latin-1")
    (data / "customers.csv").write_bytes(text)
    with pytest.raises(BadInput) as info:
        load_tables(data)
    encoding = [p for p in info.value.problems if "UTF-8" in p.check]
    assert [(p.table, p.line) for p in encoding] == [("customers", 50_002)]


# --- what a sales number can be (issue 15) ---------------------------------------------------

FUTURE = "event dated in the future (after {latest})"
ORDERS_CSV = VALID["orders"]
DEALS_CSV = VALID["opportunities"]


def _latest() -> str:
    from engine.io.checks import latest_event_date

    return f"{latest_event_date():%Y-%m-%d}"


SALES_CASES: dict[str, tuple[str, str, list[str]]] = {
    "inf amount": ("orders", ORDERS_CSV.replace("120.50", "inf"),
                   ["orders:2: amount: not a finite number (inf)"]),
    "-inf amount": ("orders", ORDERS_CSV.replace("900", "-inf"),
                    ["orders:3: amount: not a finite number (-inf)"]),
    "1e308 amount": ("orders", ORDERS_CSV.replace("-20", "1e308"),
                     ["orders:4: amount: beyond +-1,000,000,000,000,000, not a plausible "
                      "amount (1e308)"]),
    "order dated 2099": ("orders", ORDERS_CSV.replace("2023-04-02", "2099-04-02"),
                         ["orders:4: order_date: " + FUTURE + " (2099-04-02)"]),
    "won deal closed in 2099": (
        "opportunities", DEALS_CSV.replace("2023-03-04,closed", "2099-03-04,closed"),
        ["opportunities:2: close_date: closed deal dated in the future (after {latest}) "
         "(2099-03-04)"]),
    "close_date before created_at": (
        "opportunities", DEALS_CSV.replace("2023-02-10,2023-06-30", "2023-02-10,2023-01-30"),
        ["opportunities:3: close_date: close_date before created_at (2023-01-30 < 2023-02-10)"]),
    "team under two regions": (
        "org", VALID["org"] + "cy,north-1,south,sam\n",
        ["org:2: region: team under more than one region (north-1: north, south)",
         "org:4: region: team under more than one region (north-1: north, south)"]),
    "a column named twice": (
        "orders", ORDERS_CSV.replace("product,opportunity_id", "amount,opportunity_id"),
        ["orders:1: amount: column named twice in the header (columns 4 and 5)"]),
    "amount.1 beside amount": (
        "orders", ORDERS_CSV.replace("product,opportunity_id", "amount.1,opportunity_id"),
        ["orders:1: amount.1: second copy of a column (amount.1 beside amount)"]),
    "NUL byte": ("customers", VALID["customers"].replace("smb", "s\x00mb"),
                 ["customers:2: segment: NUL byte in the cell (s\\x00mb)"]),
}


@pytest.mark.parametrize("case", list(SALES_CASES))
def test_what_a_sales_number_can_be(case: str, tmp_path: Path) -> None:
    table, text, expected = SALES_CASES[case]
    data = write_dir(tmp_path / "d", with_table(table, text))
    out = tmp_path / "out.csv"
    code, lines = run_validate(data, out)
    assert code == 2
    assert sorted(lines) == sorted(e.format(latest=_latest()) for e in expected)
    assert list(tmp_path.iterdir()) == [data]


def test_a_future_expected_close_of_an_open_deal_is_fine(tmp_path: Path) -> None:
    deals = DEALS_CSV.replace("2023-06-30", "2099-06-30")
    tables = load_tables(write_dir(tmp_path / "d", with_table("opportunities", deals)))
    assert tables["opportunities"]["close_date"].max() == pd.Timestamp("2099-06-30")


def _orders_parquet(data: Path, **columns: object) -> None:
    frame = pd.read_csv(data / "orders.csv", dtype=str)
    for name, values in columns.items():
        frame[name] = values
    (data / "orders.csv").unlink()
    frame.to_parquet(data / "orders.parquet")


def test_typed_parquet_columns_are_checked_like_csv(tmp_path: Path) -> None:
    booleans = write_dir(tmp_path / "b")
    _orders_parquet(booleans, amount=[True, False, True])
    code, lines = run_validate(booleans, tmp_path / "o.csv")
    assert code == 2
    assert lines == ["orders:2: amount: not a number (True)",
                     "orders:3: amount: not a number (False)",
                     "orders:4: amount: not a number (True)"]
    floats = write_dir(tmp_path / "f")
    _orders_parquet(floats, amount=[float("inf"), 1.0, 1e308],
                    order_date=pd.to_datetime(["2023-03-01", "2099-01-01", "2023-04-02"]))
    code, lines = run_validate(floats, tmp_path / "o.csv")
    assert code == 2
    assert sorted(lines) == [
        "orders:2: amount: not a finite number (inf)",
        f"orders:3: order_date: event dated in the future (after {_latest()}) (2099-01-01)",
        "orders:4: amount: beyond +-1,000,000,000,000,000, not a plausible amount (1e+308)",
    ]


def test_sqlite_text_in_a_real_column_is_a_problem_named_by_key(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as con:
        con.execute("create table orders (order_id text primary key, customer_id text, "
                    "order_date text, amount real)")
        con.execute("insert into orders values ('A-1', 'c1', '2023-01-01', 'abc'), "
                    "('B-2', 'c1', '2023-01-02', 1e999), ('C-3', 'c1', '2023-01-03', 5)")
    result = runner.invoke(app, ["validate", "--data", f"sqlite:///{path}"])
    assert result.exit_code == 2, result.output
    problems = [line for line in result.stderr.splitlines() if line.startswith("orders:")]
    assert problems == ["orders:A-1: amount: not a number (abc)",
                        "orders:B-2: amount: not a finite number (inf)"]


def test_missing_sqlite_database_is_a_problem_and_creates_nothing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "--data", f"sqlite:///{tmp_path}/missing.db"])
    assert result.exit_code == 2
    assert "SQLite database not found" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_line_numbers_are_exact_after_quoted_newlines_and_blank_lines(tmp_path: Path) -> None:
    orders = ('order_id,customer_id,order_date,amount,product\n'
              'o1,c1,2023-03-01,1,"two\nlines"\n'
              '\n'
              'o2,c2,2023-03-04,x,gadget\n')
    code, lines = run_validate(write_dir(tmp_path / "d", with_table("orders", orders)),
                               tmp_path / "o.csv")
    assert code == 2
    assert lines == ["orders:5: amount: not a number (x)"]


def test_an_unreadable_orders_file_is_unreadable_not_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_dir(tmp_path / "d")
    real = Path.read_bytes

    def refuse(self: Path) -> bytes:
        if self.name == "orders.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(BadInput) as info:
        load_tables(data)
    assert [str(p) for p in info.value.problems] == [
        "orders:0: -: unreadable file (orders.csv: Permission denied)"]


def test_a_corrupt_gzip_is_not_also_called_missing(tmp_path: Path) -> None:
    without_deals = {k: v for k, v in VALID.items() if k not in ("opportunities", "stage_history")}
    data = write_dir(tmp_path / "d", without_deals)
    (data / "orders.csv").unlink()
    (data / "orders.csv.gz").write_bytes(gzip.compress(ORDERS_CSV.encode())[:30])
    with pytest.raises(BadInput) as info:
        load_tables(data)
    assert [(p.table, p.check) for p in info.value.problems] == [
        ("orders", "not a readable CSV file")]


def test_repeated_problems_are_capped_and_counted(tmp_path: Path) -> None:
    from engine.io import MAX_EXAMPLES

    rows = "".join(f"o{i},c1,day{i},x{i}\n" for i in range(MAX_EXAMPLES + 25))
    orders = "order_id,customer_id,order_date,amount\no1,c1,2023-01-01,1\n" + rows
    data = write_dir(tmp_path / "d", with_table("orders", orders))
    out = tmp_path / "o.csv"
    result = runner.invoke(app, ["validate", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 2
    stderr = result.stderr.splitlines()
    kinds = {line.split(": ")[1] for line in stderr if re.match(r"^orders:\d+: ", line)}
    assert kinds == {"amount", "order_date", "order_id"}  # every kind named
    for column in ("amount", "order_date"):
        examples = [line for line in stderr if re.match(rf"^orders:\d+: {column}: ", line)]
        assert len(examples) == MAX_EXAMPLES
    assert sum("... and 25 more of the same (orders: amount: not a number)" in line
               for line in stderr) == 1
    # The closing count is every problem: the lines shown plus those the tallies stand for.
    shown = sum(bool(re.match(r"^orders:\d+: ", line)) for line in stderr)
    tallied = sum(int(m.group(1).replace(",", "")) for line in stderr
                  if (m := re.match(r"^\.\.\. and ([\d,]+) more of the same", line)))
    assert tallied >= 50
    assert f"{shown + tallied:,} problem(s); nothing was written" in result.stderr
    assert not out.exists()


def test_column_names_match_whatever_their_case(tmp_path: Path) -> None:
    data = write_dir(tmp_path / "d", with_table(
        "orders", "Order_ID,Customer_Id,ORDER_DATE,Amount\no1,c1,2023-03-01,120.5\n"))
    tables = load_tables(data)
    assert tables.orders[AMOUNT].tolist() == [120.5]
    assert tables.orders[ORDER_DATE].dtype == "datetime64[ns]"


def test_targets_without_org_match_owners_and_customer_regions(tmp_path: Path) -> None:
    given = {k: v for k, v in VALID.items() if k != "org"}
    given["targets"] = ("period,level,key,amount\n2023Q2,rep,ana,1\n2023Q2,region,south,1\n"
                        "2023Q2,rep,zed,1\n2023Q2,region,mars,1\n")
    code, lines = run_validate(write_dir(tmp_path / "d", given), tmp_path / "o.csv")
    assert code == 2
    assert lines == ["targets:4: key: no such node (rep zed)",
                     "targets:5: key: no such node (region mars)"]


@pytest.mark.parametrize(("table", "column", "cell", "hint"), [
    ("orders", "amount", "\"¥{n},118.37\"",
     "hint: amounts carry a currency symbol: use `quotacast import mapped` with "
     "`currency_symbol`"),
    ("orders", "amount", "\"{n},118.50\"", "hint: amounts carry thousands separators"),
    ("orders", "order_date", "13/{m:02d}/2023",
     "hint: dates look day-first (13/02/2023): use a mapping with `date_format: %d/%m/%Y`"),
])
def test_a_repeated_pattern_is_counted_once_with_a_hint(
        table: str, column: str, cell: str, hint: str, tmp_path: Path) -> None:
    rows = "".join(
        f"o{n},c1,{'2023-03-01' if column == 'amount' else cell.format(m=n % 12 + 1)},"
        f"{cell.format(n=n) if column == 'amount' else '1'}\n" for n in range(1, 151))
    data = write_dir(tmp_path / "d", with_table(
        table, "order_id,customer_id,order_date,amount\n" + rows))
    result = runner.invoke(app, ["validate", "--data", str(data)])
    assert result.exit_code == 2
    tally = [line for line in result.stderr.splitlines() if line.startswith("... and")]
    assert len(tally) == 1 and "140 more of the same" in tally[0]
    assert hint in tally[0]


def test_no_hint_when_no_pattern_is_recognised(tmp_path: Path) -> None:
    rows = "".join(f"o{n},c1,2023-03-01,lots\n" for n in range(1, 30))
    data = write_dir(tmp_path / "d", with_table(
        "orders", "order_id,customer_id,order_date,amount\n" + rows))
    result = runner.invoke(app, ["validate", "--data", str(data)])
    assert result.exit_code == 2
    assert "hint" not in result.stderr


@pytest.mark.parametrize(("check", "values", "hint"), [
    ("not a number", ["¥67,118.37", "¥1.00"], "`currency_symbol`"),
    ("not a number", ["USD 10", "US$ 3"], "`currency_symbol`"),
    ("not a number", ["1,234.50", "12,000"], 'with `thousands: ","`'),
    ("not a number", ["1.234,50"], '`thousands: "."`, `decimal: ","`'),
    ("not a number", ["1234,50"], 'amounts use a decimal comma: use `quotacast import mapped` '
                                  'with `decimal: ","`'),
    ("not a number", ["lots", "many"], ""),
    (BAD_DATE, ["09/13/2023"], "dates look month-first (09/13/2023): use a mapping with "
                               "`date_format: %m/%d/%Y`"),
    (BAD_DATE, ["13.09.2023"], "`date_format: %d.%m.%Y`"),
    (BAD_DATE, ["01/02/2023"], "dates are not ISO 8601 (01/02/2023)"),
    (BAD_DATE, ["yesterday"], ""),
])
def test_hints_for_recognisable_patterns(check: str, values: list[str], hint: str) -> None:
    from engine.io.problems import hint_for

    found = hint_for(check, values)
    assert (hint in found) if hint else found == ""


def test_table_files_match_whatever_their_case(tmp_path: Path) -> None:
    data = write_dir(tmp_path / "d")
    (data / "orders.csv").rename(data / "Orders.csv")
    assert len(load_tables(data).orders) == 3


def test_a_missing_table_names_a_file_spelt_nearly_like_it(tmp_path: Path) -> None:
    tables = {k: v for k, v in VALID.items() if k not in ("orders", "opportunities",
                                                         "stage_history")}
    data = write_dir(tmp_path / "d", tables)
    (data / "order.csv").write_text(VALID["orders"])
    code, lines = run_validate(data, tmp_path / "o.csv")
    assert code == 2
    assert lines == [
        "orders:0: -: required table is missing (expected orders.csv, orders.csv.gz or "
        "orders.parquet, or rows in opportunities; found order.csv: did you mean orders?)"
    ]


def test_target_tiers_and_metrics_are_separate_targets(tmp_path: Path) -> None:
    given = dict(VALID)
    given["targets"] = ("period,level,key,amount,tier,metric\n2023Q2,company,all,2000,,\n"
                        "2023Q2,company,all,1500,must_hit,\n2023Q2,company,all,2600,stretch,\n"
                        "2023Q2,company,all,12,plan,new_customers\n2023Q2,rep,ben,1200,,\n")
    tables = load_tables(write_dir(tmp_path / "d", given))
    plan = tables.targets()
    assert plan is not None
    assert plan[AMOUNT].tolist() == [2000.0, 1200.0]
    assert tier_targets(tables["targets"], "stretch")[AMOUNT].tolist() == [2600.0]
    assert tier_targets(tables["targets"], metric="new_customers")[AMOUNT].tolist() == [12.0]
    # a file without the columns is all revenue plan, as before
    assert tables["targets"]["tier"].tolist() == ["plan", "must_hit", "stretch", "plan", "plan"]
    assert load_tables(write_dir(tmp_path / "e", VALID)).targets() is not None
