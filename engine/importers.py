"""Public datasets -> the tables of a quotacast data directory (``quotacast import``).

Three known datasets are converted (their origin, licence and quirks are described in the
SOURCE.md beside each one in ``../shared/data``):

- ``online-retail``: UCI Online Retail invoice lines -> ``orders`` (one per invoice) and
  ``customers``.
- ``crm-sales``: Maven Analytics CRM pipeline -> ``opportunities``, ``orders`` (one per won deal),
  ``customers`` (accounts) and ``org`` (agents, managers, regional offices).
- ``superstore``: Tableau Sample Superstore order lines -> ``orders`` (one per order) and
  ``customers``.

Each importer reads its files in one thin function and hands plain frames to pure transform
functions (Kedro style), so the transforms are tested without touching the disk. Every decision
that changes or drops data is reported in :attr:`ImportResult.notes`; nothing is dropped
silently. A malformed source (missing column, a date in an unexpected format) raises
``ValueError`` with a plain message rather than importing half of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pandas as pd

from engine import schemas
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CHANNEL,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    LIST_PRICE,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    OWNER,
    REP,
    STATUS_LOST,
    STATUS_OPEN,
    STATUS_WON,
    TEAM,
)

__all__ = ["KINDS", "ImportResult", "import_dataset"]

KINDS: tuple[str, ...] = ("online-retail", "crm-sales", "superstore")

# Amounts are rounded to this many decimals after summing, to drop float noise (0.1 + 0.2)
# while keeping the sources' own precision (Superstore has 4 decimals, some unit prices 3).
_DECIMALS = 4
# Encodings tried in turn: the files as shipped are UTF-8 (Superstore with a BOM), but widely
# circulated copies of Superstore are Windows-1252.
_ENCODINGS = ("utf-8-sig", "cp1252")

# --- extra output columns (beyond the contract, kept as possible features) -------------------
QUANTITY = "quantity"
N_LINES = "n_lines"
PROFIT = "profit"
SUB_CATEGORY = "sub_category"
SHIP_REGION = "ship_region"
YEAR_ESTABLISHED = "year_established"
ANNUAL_REVENUE = "annual_revenue"
EMPLOYEES = "employees"
SUBSIDIARY_OF = "subsidiary_of"


@dataclass
class ImportResult:
    """The tables converted from one public dataset.

    Attributes:
        frames: table name -> frame with the contract's columns (plus useful extra columns).
        notes: plain-English lines for the user: rows read, rows dropped and why, quirks fixed.
    """

    frames: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)


def import_dataset(kind: str, src: Path) -> ImportResult:
    """Convert a known public dataset into quotacast tables.

    Args:
        kind: one of :data:`KINDS`.
        src: the dataset's folder (e.g. ``../shared/data/online-retail``) or its main file.

    Returns:
        The frames, ready for ``engine.io.validate_tables``, and notes for the user.

    Raises:
        ValueError: unknown kind, missing file, or a file that is not the expected dataset.
    """
    importer = _IMPORTERS.get(kind)
    if importer is None:
        raise ValueError(f"unknown dataset kind '{kind}': expected one of {', '.join(KINDS)}")
    return importer(Path(src))


# =============================================================================================
# Shared helpers
# =============================================================================================


def _find_file(src: Path, names: tuple[str, ...], kind: str) -> Path:
    """The dataset's main file: ``src`` itself, or the first of ``names`` inside folder ``src``."""
    if src.is_file():
        return src
    if src.is_dir():
        for name in names:
            if (src / name).is_file():
                return src / name
        raise ValueError(f"no {' or '.join(names)} in {src} (expected the {kind} dataset)")
    raise ValueError(f"{src} does not exist (expected the {kind} dataset's folder or file)")


def _read_text_csv(path: Path) -> tuple[pd.DataFrame, str]:
    """Read a CSV file as text cells (empty -> missing); returns the frame and its encoding."""
    for encoding in _ENCODINGS:
        try:
            frame = pd.read_csv(path, dtype=str, encoding=encoding, keep_default_na=False,
                                na_values=[""])
        except UnicodeDecodeError:
            continue
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError) as exc:
            raise ValueError(f"{path.name} is not a readable CSV file: {exc}") from exc
        frame.columns = [str(c).strip() for c in frame.columns]
        return frame, encoding
    raise ValueError(f"{path.name} is neither UTF-8 nor Windows-1252 text")


def _require_columns(frame: pd.DataFrame, columns: list[str], file_name: str) -> None:
    """Raise a plain ``ValueError`` naming the columns the source file lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{file_name} lacks column(s) {', '.join(missing)}; "
                         f"found {', '.join(map(str, frame.columns))}")


def _examples(values: pd.Series) -> str:
    return ", ".join(repr(v) for v in values.drop_duplicates().head(3))


def _to_dates(values: pd.Series, fmt: str, what: str) -> pd.Series:
    """Parse dates with one explicit format; empty cells become NaT, anything else must parse.

    A single explicit format, rather than pandas' guessing, is what keeps ``3/4/2017`` from
    being read as the 3rd of April in one row and March 4th in another.
    """
    parsed = pd.to_datetime(values, format=fmt, errors="coerce")
    bad = values.notna() & parsed.isna()
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum()):,} value(s) are not dates in the format "
                         f"{fmt}, e.g. {_examples(values[bad])}")
    return parsed.astype("datetime64[ns]")


def _to_numbers(values: pd.Series, what: str) -> pd.Series:
    """Parse numbers; empty cells become NaN, anything else must parse."""
    parsed = pd.to_numeric(values.str.strip(), errors="coerce").astype("float64")
    bad = values.notna() & parsed.isna()
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum()):,} value(s) are not numbers, "
                         f"e.g. {_examples(values[bad])}")
    return parsed


def _drop_rows(frame: pd.DataFrame, reasons: list[tuple[str, pd.Series]], unit: str
               ) -> tuple[pd.DataFrame, list[str]]:
    """Drop rows matching any reason; one note per reason, each row counted under its first.

    Args:
        frame: the rows.
        reasons: (plain-English reason, boolean mask aligned with ``frame``), in priority order.
        unit: what a row is, for the notes (``invoice lines``).
    """
    dropped = pd.Series(False, index=frame.index)
    notes: list[str] = []
    for reason, mask in reasons:
        new = int((mask & ~dropped).sum())
        also = int((mask & dropped).sum())
        if new or also:
            extra = f"; {also:,} more such lines were already dropped above" if also else ""
            notes.append(f"dropped {new:,} {unit}: {reason}{extra}")
        dropped |= mask
    return frame.loc[~dropped], notes


def _dominant(frame: pd.DataFrame, key: str, value: str, weight: str | None = None) -> pd.Series:
    """Per ``key``, the ``value`` with the most rows (or the largest ``weight`` sum).

    Ties go to the alphabetically first value, so the result does not depend on row order.
    """
    grouped = frame.groupby([key, value], observed=True)
    score = grouped.size() if weight is None else grouped[weight].sum()
    ranked = score.rename("_score").reset_index()
    ranked = ranked.sort_values([key, "_score", value], ascending=[True, False, True])
    return ranked.drop_duplicates(key).set_index(key)[value]


def _several(frame: pd.DataFrame, key: str, value: str) -> int:
    """How many ``key`` groups hold more than one distinct ``value``."""
    return int((frame.groupby(key)[value].nunique() > 1).sum())


def _count(n: int, noun: str) -> str:
    """``1 account``, ``2 accounts``, ``1,234 accounts``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _as_id(values: pd.Series) -> pd.Series:
    """Identifiers as stripped text, missing as ``None`` (never ``nan``, never ``17850.0``)."""
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    out = text.astype(object)
    out[text.isna()] = None
    return out


# =============================================================================================
# online-retail: UCI Online Retail (UK e-retailer, 2010-12 .. 2011-12, GBP)
# =============================================================================================


class _Retail:
    """Column names of online_retail.csv(.gz)."""

    INVOICE = "InvoiceNo"
    STOCK_CODE = "StockCode"
    QUANTITY = "Quantity"
    DATE = "InvoiceDate"
    PRICE = "UnitPrice"
    CUSTOMER = "CustomerID"
    COUNTRY = "Country"
    FILES = ("online_retail.csv.gz", "online_retail.csv")
    DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
    CANCELLATION = "C"  # InvoiceNo prefix of a cancellation (credit note)
    BAD_DEBT = "A"  # InvoiceNo prefix of an "Adjust bad debt" book-keeping entry


def _import_online_retail(src: Path) -> ImportResult:
    path = _find_file(src, _Retail.FILES, "online-retail")
    raw, _ = _read_text_csv(path)
    _require_columns(raw, [_Retail.INVOICE, _Retail.STOCK_CODE, _Retail.QUANTITY, _Retail.DATE,
                           _Retail.PRICE, _Retail.CUSTOMER, _Retail.COUNTRY], path.name)
    return online_retail_tables(raw, path.name)


def online_retail_tables(raw: pd.DataFrame, file_name: str = "online_retail.csv.gz"
                         ) -> ImportResult:
    """Invoice lines (text cells) -> ``orders`` (one per invoice) and ``customers``."""
    lines = retail_lines(raw, file_name)
    notes = [f"read {len(lines):,} invoice lines from {file_name} (amounts in GBP)"]
    kept, drop_notes = _drop_rows(lines, retail_drop_reasons(lines), "invoice lines")
    orders = retail_orders(kept)
    customers = retail_customers(kept)
    notes += drop_notes + retail_vanished_notes(lines, kept)
    notes += retail_order_notes(kept, orders) + retail_customer_notes(kept)
    return ImportResult({ORDERS: orders, CUSTOMERS: customers}, notes)


def retail_lines(raw: pd.DataFrame, file_name: str) -> pd.DataFrame:
    """Typed invoice lines: ids as text, quantity and price as numbers, the timestamp parsed."""
    return raw.assign(**{
        _Retail.INVOICE: _as_id(raw[_Retail.INVOICE]),
        _Retail.CUSTOMER: _as_id(raw[_Retail.CUSTOMER]),
        _Retail.QUANTITY: _to_numbers(raw[_Retail.QUANTITY], f"{file_name}: Quantity"),
        _Retail.PRICE: _to_numbers(raw[_Retail.PRICE], f"{file_name}: UnitPrice"),
        _Retail.DATE: _to_dates(raw[_Retail.DATE], _Retail.DATE_FORMAT,
                                f"{file_name}: InvoiceDate"),
    })


def retail_drop_reasons(lines: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """Why an invoice line cannot become revenue of a known customer, in priority order."""
    invoice = lines[_Retail.INVOICE].fillna("")
    return [
        ("no CustomerID, so they cannot be tied to a customer", lines[_Retail.CUSTOMER].isna()),
        ("'A' invoices, 'Adjust bad debt' book-keeping entries rather than sales",
         invoice.str.startswith(_Retail.BAD_DEBT)),
        # Free items and manual fixes: they carry no revenue, and an invoice made only of them
        # would show up as a zero-value purchase in the customer's history.
        ("unit price 0 (free items and manual fixes, no revenue)", lines[_Retail.PRICE] == 0),
        ("missing InvoiceNo, InvoiceDate, Quantity or UnitPrice",
         lines[[_Retail.INVOICE, _Retail.DATE, _Retail.QUANTITY, _Retail.PRICE]]
         .isna().any(axis=1)),
    ]


def retail_orders(lines: pd.DataFrame) -> pd.DataFrame:
    """One order per invoice; cancellations ('C' invoices) carry negative quantities, so their
    amount is negative, as the contract expects of credit notes."""
    value = lines[_Retail.QUANTITY] * lines[_Retail.PRICE]
    grouped = lines.assign(_value=value).groupby(_Retail.INVOICE, sort=True)
    orders = grouped.agg(
        **{
            CUSTOMER_ID: (_Retail.CUSTOMER, "first"),
            # A few invoices have lines stamped a minute apart: the invoice is when it started.
            ORDER_DATE: (_Retail.DATE, "min"),
            AMOUNT: ("_value", "sum"),
            QUANTITY: (_Retail.QUANTITY, "sum"),
            N_LINES: (_Retail.QUANTITY, "size"),
        }
    ).reset_index(names=ORDER_ID)
    # Dates only: the times are UK local time without a zone, and daily is the finest grain
    # quotacast forecasts at.
    orders[ORDER_DATE] = orders[ORDER_DATE].dt.normalize()
    orders[AMOUNT] = orders[AMOUNT].round(_DECIMALS)
    return orders[[ORDER_ID, CUSTOMER_ID, ORDER_DATE, AMOUNT, QUANTITY, N_LINES]]


def retail_customers(lines: pd.DataFrame) -> pd.DataFrame:
    """One row per CustomerID; region is the country of most of the customer's invoices."""
    invoices = lines.drop_duplicates([_Retail.CUSTOMER, _Retail.INVOICE, _Retail.COUNTRY])
    region = _dominant(invoices, _Retail.CUSTOMER, _Retail.COUNTRY)
    return pd.DataFrame({CUSTOMER_ID: region.index.astype(object),
                         schemas.REGION: region.to_numpy()})


def retail_vanished_notes(lines: pd.DataFrame, kept: pd.DataFrame) -> list[str]:
    """Invoices and customers that had a CustomerID but lost all their lines to the drops."""
    known = lines.dropna(subset=[_Retail.CUSTOMER])
    invoices = known[_Retail.INVOICE].nunique() - kept[_Retail.INVOICE].nunique()
    customers = known[_Retail.CUSTOMER].nunique() - kept[_Retail.CUSTOMER].nunique()
    if not invoices and not customers:
        return []
    return [f"{_count(invoices, 'invoice')} and {_count(customers, 'customer')} with a CustomerID "
            "had only dropped lines and so do not appear"]


def retail_order_notes(lines: pd.DataFrame, orders: pd.DataFrame) -> list[str]:
    """What the user should know about how invoices became orders."""
    cancelled = orders[ORDER_ID].str.startswith(_Retail.CANCELLATION)
    stamps = _several(lines, _Retail.INVOICE, _Retail.DATE)
    return [
        f"orders: {len(orders):,} invoices from {len(lines):,} lines; amount = sum of "
        "Quantity x UnitPrice; order_date = the invoice's day (time of day dropped)",
        f"{int(cancelled.sum()):,} cancellation invoices (InvoiceNo starting with 'C') kept as "
        f"orders with negative amounts (total {orders.loc[cancelled, AMOUNT].sum():,.2f})",
        f"{stamps:,} invoices have lines stamped at different minutes; the earliest is used",
        "non-product lines (postage POST/DOT/C2, manual M, discount D, bank charges, ...) are "
        "kept as part of their invoice's amount",
        f"product left out: an invoice holds {orders[N_LINES].median():.0f} lines (median) of "
        f"~{lines[_Retail.STOCK_CODE].nunique():,} stock codes, so one 'dominant' StockCode per "
        "invoice would misattribute most revenue",
    ]


def retail_customer_notes(lines: pd.DataFrame) -> list[str]:
    """What the user should know about the customers table."""
    several = _several(lines, _Retail.CUSTOMER, _Retail.COUNTRY)
    return [
        f"customers: {lines[_Retail.CUSTOMER].nunique():,} CustomerIDs; region = Country; "
        f"{several:,} customers bought from several countries and get the one of most of their "
        "invoices",
    ]


# =============================================================================================
# crm-sales: Maven Analytics CRM Sales Opportunities (fictitious B2B hardware seller, USD)
# =============================================================================================


class _Crm:
    """File and column names of the CRM Sales Opportunities dataset."""

    PIPELINE = "sales_pipeline.csv"
    ACCOUNTS = "accounts.csv"
    TEAMS = "sales_teams.csv"
    PRODUCTS = "products.csv"
    OPPORTUNITY = "opportunity_id"
    AGENT = "sales_agent"
    PRODUCT = "product"
    ACCOUNT = "account"
    STAGE = "deal_stage"
    ENGAGE = "engage_date"
    CLOSE = "close_date"
    CLOSE_VALUE = "close_value"
    SECTOR = "sector"
    YEAR = "year_established"
    REVENUE = "revenue"
    EMPLOYEES = "employees"
    LOCATION = "office_location"
    PARENT = "subsidiary_of"
    MANAGER = "manager"
    OFFICE = "regional_office"
    PRICE = "sales_price"
    DATE_FORMAT = "%Y-%m-%d"
    STATUS: ClassVar[dict[str, str]] = {
        "Won": STATUS_WON, "Lost": STATUS_LOST,
        "Engaging": STATUS_OPEN, "Prospecting": STATUS_OPEN,
    }
    # Misspellings in accounts.csv, corrected so that segments and regions read right.
    TYPOS: ClassVar[dict[str, str]] = {"technolgy": "technology", "Philipines": "Philippines"}


def _import_crm_sales(src: Path) -> ImportResult:
    pipeline_path = _find_file(src, (_Crm.PIPELINE,), "crm-sales")
    folder = pipeline_path.parent
    frames: dict[str, pd.DataFrame] = {}
    for name, columns in _CRM_FILES.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{name} is missing in {folder} (the crm-sales dataset needs "
                             f"{', '.join(_CRM_FILES)})")
        frames[name], _ = _read_text_csv(path)
        _require_columns(frames[name], columns, name)
    return crm_tables(frames[_Crm.PIPELINE], frames[_Crm.ACCOUNTS], frames[_Crm.TEAMS],
                      frames[_Crm.PRODUCTS])


_CRM_FILES: dict[str, list[str]] = {
    _Crm.PIPELINE: [_Crm.OPPORTUNITY, _Crm.AGENT, _Crm.PRODUCT, _Crm.ACCOUNT, _Crm.STAGE,
                    _Crm.ENGAGE, _Crm.CLOSE, _Crm.CLOSE_VALUE],
    _Crm.ACCOUNTS: [_Crm.ACCOUNT, _Crm.SECTOR, _Crm.LOCATION],
    _Crm.TEAMS: [_Crm.AGENT, _Crm.MANAGER, _Crm.OFFICE],
    _Crm.PRODUCTS: [_Crm.PRODUCT, _Crm.PRICE],
}


def crm_tables(pipeline: pd.DataFrame, accounts: pd.DataFrame, teams: pd.DataFrame,
               products: pd.DataFrame) -> ImportResult:
    """The four CRM files (text cells) -> opportunities, orders, customers and org."""
    notes = [f"read {len(pipeline):,} opportunities, {len(accounts):,} accounts, "
             f"{len(teams):,} sales agents and {len(products):,} products (amounts in USD)"]
    deals = crm_deals(pipeline)
    renamed, product_notes = normalise_products(deals[_Crm.PRODUCT], products[_Crm.PRODUCT])
    deals = deals.assign(**{_Crm.PRODUCT: renamed})
    opportunities = crm_opportunities(deals, crm_list_prices(products))
    orders = crm_orders(opportunities)
    customers = crm_customers(accounts, deals)
    org = crm_org(teams)
    notes += product_notes + crm_opportunity_notes(deals, opportunities)
    notes += crm_order_notes(opportunities, orders) + crm_customer_notes(accounts, customers)
    notes += crm_org_notes(org, opportunities)
    return ImportResult({CUSTOMERS: customers, ORDERS: orders,
                         OPPORTUNITIES: opportunities, ORG: org}, notes)


def crm_deals(pipeline: pd.DataFrame) -> pd.DataFrame:
    """Typed pipeline rows: dates parsed, close_value a number, ids stripped."""
    unknown = ~pipeline[_Crm.STAGE].isin(list(_Crm.STATUS))
    if unknown.any():
        stages = _examples(pipeline.loc[unknown, _Crm.STAGE])
        raise ValueError(f"{_Crm.PIPELINE}: unknown deal_stage {stages}; expected one of "
                         f"{', '.join(_Crm.STATUS)}")
    return pipeline.assign(**{
        _Crm.OPPORTUNITY: _as_id(pipeline[_Crm.OPPORTUNITY]),
        _Crm.ACCOUNT: _as_id(pipeline[_Crm.ACCOUNT]),
        _Crm.PRODUCT: pipeline[_Crm.PRODUCT].str.strip(),
        _Crm.ENGAGE: _to_dates(pipeline[_Crm.ENGAGE], _Crm.DATE_FORMAT,
                               f"{_Crm.PIPELINE}: engage_date"),
        _Crm.CLOSE: _to_dates(pipeline[_Crm.CLOSE], _Crm.DATE_FORMAT,
                              f"{_Crm.PIPELINE}: close_date"),
        _Crm.CLOSE_VALUE: _to_numbers(pipeline[_Crm.CLOSE_VALUE], f"{_Crm.PIPELINE}: close_value"),
    })


def normalise_products(names: pd.Series, known: pd.Series) -> tuple[pd.Series, list[str]]:
    """Map product names that differ from products.csv only by spaces or case to its spelling.

    The pipeline writes ``GTXPro`` where products.csv has ``GTX Pro``; without the fix those
    deals would have no list price and would not group with their product.
    """
    def squash(s: pd.Series) -> pd.Series:
        return s.str.replace(r"\s+", "", regex=True).str.lower()

    spelling = pd.Series(known.str.strip().to_numpy(), index=squash(known.str.strip()))
    fixed = squash(names).map(spelling.groupby(level=0).first()).fillna(names)
    changed = names.notna() & (fixed != names)
    pairs = (pd.DataFrame({"old": names[changed], "new": fixed[changed]})
             .groupby(["old", "new"]).size().reset_index(name="n"))
    notes = [f"product '{old}' renamed to '{new}' as in {_Crm.PRODUCTS} ({n:,} deals)"
             for old, new, n in zip(pairs["old"], pairs["new"], pairs["n"], strict=True)]
    return fixed, notes


def crm_list_prices(products: pd.DataFrame) -> pd.Series:
    """Product name -> list price (products.csv ``sales_price``)."""
    prices = _to_numbers(products[_Crm.PRICE], f"{_Crm.PRODUCTS}: sales_price")
    return pd.Series(prices.to_numpy(), index=products[_Crm.PRODUCT].str.strip())


def snapshot_date(deals: pd.DataFrame) -> pd.Timestamp:
    """The last date in the pipeline: the day the export was taken, as far as we can tell."""
    return pd.Timestamp(max(deals[_Crm.ENGAGE].max(), deals[_Crm.CLOSE].max()))


def median_won_cycle(deals: pd.DataFrame) -> pd.Timedelta:
    """Median time from engage_date to close_date of won deals (whole days)."""
    won = deals[deals[_Crm.STAGE].map(_Crm.STATUS) == STATUS_WON]
    days = (won[_Crm.CLOSE] - won[_Crm.ENGAGE]).dt.days.median()
    return pd.Timedelta(days=round(float(days)))


def crm_opportunities(deals: pd.DataFrame, list_prices: pd.Series) -> pd.DataFrame:
    """One opportunity per pipeline row.

    - created_at is engage_date; Prospecting deals have none and get the snapshot date, the one
      day they are known to exist (an earlier guess would invent history).
    - close_date is the actual one for closed deals; for open deals it is expected:
      created_at + the median won cycle.
    - amount is close_value for won deals, and the product's list price for lost deals (whose
      close_value is always 0: an amount of 0 would give away the outcome and hide the value
      lost) and for open ones.
    """
    status = deals[_Crm.STAGE].map(_Crm.STATUS)
    created = deals[_Crm.ENGAGE].fillna(snapshot_date(deals))
    expected_close = created + median_won_cycle(deals)
    list_price = deals[_Crm.PRODUCT].map(list_prices)
    unknown = list_price.isna()
    if unknown.any():
        raise ValueError(f"{_Crm.PIPELINE}: product(s) not in {_Crm.PRODUCTS}: "
                         f"{_examples(deals.loc[unknown, _Crm.PRODUCT])}")
    won = status == STATUS_WON
    return pd.DataFrame({
        OPPORTUNITY_ID: deals[_Crm.OPPORTUNITY],
        OWNER: deals[_Crm.AGENT].str.strip(),
        CREATED_AT: created,
        CLOSE_DATE: deals[_Crm.CLOSE].where(status != STATUS_OPEN, expected_close),
        schemas.STAGE: deals[_Crm.STAGE],
        schemas.STATUS: status,
        AMOUNT: deals[_Crm.CLOSE_VALUE].where(won, list_price).astype("float64"),
        CUSTOMER_ID: deals[_Crm.ACCOUNT],
        schemas.PRODUCT: deals[_Crm.PRODUCT],
        LIST_PRICE: list_price.astype("float64"),
    }).reset_index(drop=True)


def crm_orders(opportunities: pd.DataFrame) -> pd.DataFrame:
    """One order per won deal that names an account, linked back by opportunity_id.

    A won deal without an account cannot be an order (orders need a customer_id); it stays a
    won opportunity, which the contract counts as revenue on its close_date.
    """
    won = opportunities[(opportunities[schemas.STATUS] == STATUS_WON)
                        & opportunities[CUSTOMER_ID].notna()]
    return pd.DataFrame({
        ORDER_ID: won[OPPORTUNITY_ID],
        CUSTOMER_ID: won[CUSTOMER_ID],
        ORDER_DATE: won[CLOSE_DATE],
        AMOUNT: won[AMOUNT],
        schemas.PRODUCT: won[schemas.PRODUCT],
        OPPORTUNITY_ID: won[OPPORTUNITY_ID],
    }).reset_index(drop=True)


def crm_customers(accounts: pd.DataFrame, deals: pd.DataFrame) -> pd.DataFrame:
    """One customer per account; account_manager is the agent with most deals with it."""
    account = _as_id(accounts[_Crm.ACCOUNT])
    manager = _dominant(deals.dropna(subset=[_Crm.ACCOUNT]), _Crm.ACCOUNT, _Crm.AGENT)

    def optional_number(column: str) -> pd.Series:
        if column not in accounts.columns:
            return pd.Series(float("nan"), index=accounts.index)
        return _to_numbers(accounts[column], f"{_Crm.ACCOUNTS}: {column}")

    def optional_text(column: str) -> pd.Series:
        if column not in accounts.columns:
            return pd.Series(None, index=accounts.index, dtype=object)
        return _as_id(accounts[column])

    return pd.DataFrame({
        CUSTOMER_ID: account,
        ACCOUNT_MANAGER: account.map(manager),
        schemas.REGION: _as_id(accounts[_Crm.LOCATION]).replace(_Crm.TYPOS),
        schemas.SEGMENT: _as_id(accounts[_Crm.SECTOR]).replace(_Crm.TYPOS),
        YEAR_ESTABLISHED: optional_number(_Crm.YEAR),
        # Renamed from `revenue`: it is the account's own annual revenue (USD millions), not
        # revenue that quotacast measures.
        ANNUAL_REVENUE: optional_number(_Crm.REVENUE),
        EMPLOYEES: optional_number(_Crm.EMPLOYEES),
        SUBSIDIARY_OF: optional_text(_Crm.PARENT),
    }).reset_index(drop=True)


def crm_org(teams: pd.DataFrame) -> pd.DataFrame:
    """Agents -> teams (named after their manager) -> regional offices."""
    manager = teams[_Crm.MANAGER].str.strip()
    return pd.DataFrame({
        REP: teams[_Crm.AGENT].str.strip(),
        TEAM: manager,
        schemas.REGION: teams[_Crm.OFFICE].str.strip(),
        schemas.MANAGER: manager,
    }).reset_index(drop=True)


def crm_opportunity_notes(deals: pd.DataFrame, opportunities: pd.DataFrame) -> list[str]:
    """What the user should know about how pipeline rows became opportunities."""
    status = opportunities[schemas.STATUS]
    is_open = status == STATUS_OPEN
    snapshot = snapshot_date(deals)
    overdue = is_open & (opportunities[CLOSE_DATE] < snapshot)
    no_account = opportunities[CUSTOMER_ID].isna()
    counts = status.value_counts()
    return [
        f"opportunities: {len(opportunities):,} ({counts.get(STATUS_WON, 0):,} won, "
        f"{counts.get(STATUS_LOST, 0):,} lost, {int(is_open.sum()):,} open); "
        "stage = deal_stage; Won -> won, Lost -> lost, Engaging/Prospecting -> open",
        f"{int(deals[_Crm.ENGAGE].isna().sum()):,} deals have no engage_date (Prospecting): "
        f"created_at set to {snapshot:%Y-%m-%d}, the last date in the data, the one day they "
        "are known to exist",
        f"close_date of the {int(is_open.sum()):,} open deals is expected, not actual: created_at "
        f"+ {median_won_cycle(deals).days} days, the median engage-to-close time of won deals; "
        f"{int(overdue.sum()):,} of them fall before {snapshot:%Y-%m-%d} (overdue deals)",
        "amount = close_value for won deals; for lost deals (close_value is always 0) and open "
        "deals, the product's list price (products.csv sales_price), so that amount is the "
        "value at stake, not the outcome; list_price is kept as a column for every deal",
        f"{int(no_account.sum()):,} deals have no account ({int((no_account & is_open).sum()):,} "
        "open): kept with an empty customer_id",
    ]


def crm_order_notes(opportunities: pd.DataFrame, orders: pd.DataFrame) -> list[str]:
    """What the user should know about the orders made from won deals."""
    won = opportunities[schemas.STATUS] == STATUS_WON
    orphans = int((won & opportunities[CUSTOMER_ID].isna()).sum())
    return [
        f"orders: {len(orders):,}, one per won deal with an account (order_id = opportunity_id, "
        "order_date = close_date, amount = close_value)",
        f"{_count(orphans, 'won deal')} without an account: no order made for them (orders need a "
        "customer_id); they stay won opportunities, which count as revenue on their close_date",
    ]


def crm_customer_notes(accounts: pd.DataFrame, customers: pd.DataFrame) -> list[str]:
    """What the user should know about the customers made from accounts."""
    fixed = [
        f"'{wrong}' corrected to '{right}' ({_count(n, 'account')})"
        for wrong, right in _Crm.TYPOS.items()
        if (n := int(accounts[[_Crm.SECTOR, _Crm.LOCATION]].isin([wrong]).any(axis=1).sum()))
    ]
    without = _count(int(customers[ACCOUNT_MANAGER].isna().sum()), "account")
    return [
        f"customers: {len(customers):,} accounts; segment = sector, region = office_location; "
        "year_established, annual_revenue (USD millions, was `revenue`), employees and "
        "subsidiary_of kept",
        "account_manager = the sales agent with most deals with the account (ties: first by "
        f"name); {without} without deals get none",
        *(f"accounts.csv: {line}" for line in fixed),
    ]


def crm_org_notes(org: pd.DataFrame, opportunities: pd.DataFrame) -> list[str]:
    """What the user should know about the org table."""
    idle = int((~org[REP].isin(opportunities[OWNER])).sum())
    unknown = opportunities.loc[~opportunities[OWNER].isin(org[REP]), OWNER].nunique()
    notes = [
        f"org: {len(org):,} agents in {org[TEAM].nunique():,} teams (named after their "
        f"manager) and {org[schemas.REGION].nunique():,} regions (regional_office); "
        f"{idle:,} agents "
        "have no deals and are kept",
    ]
    if unknown:
        notes.append(f"{unknown:,} deal owners are not in {_Crm.TEAMS}")
    return notes


# =============================================================================================
# superstore: Tableau Sample - Superstore (US retail, 2016 .. 2019, USD)
# =============================================================================================


class _Store:
    """Column names of Sample - Superstore.csv."""

    FILES = ("Sample - Superstore.csv",)
    ORDER = "Order ID"
    DATE = "Order Date"
    SHIP_MODE = "Ship Mode"
    CUSTOMER = "Customer ID"
    SEGMENT = "Segment"
    REGION = "Region"
    CATEGORY = "Category"
    SUB_CATEGORY = "Sub-Category"
    SALES = "Sales"
    QUANTITY = "Quantity"
    PROFIT = "Profit"
    # US month/day/year, e.g. 11/8/2018 is November 8th.
    DATE_FORMAT = "%m/%d/%Y"


def _import_superstore(src: Path) -> ImportResult:
    path = _find_file(src, _Store.FILES, "superstore")
    raw, encoding = _read_text_csv(path)
    _require_columns(raw, [_Store.ORDER, _Store.DATE, _Store.SHIP_MODE, _Store.CUSTOMER,
                           _Store.SEGMENT, _Store.REGION, _Store.CATEGORY, _Store.SUB_CATEGORY,
                           _Store.SALES, _Store.QUANTITY, _Store.PROFIT], path.name)
    result = superstore_tables(raw, path.name)
    result.notes.insert(1, f"{path.name} was read as {_ENCODING_NAMES[encoding]}")
    return result


_ENCODING_NAMES = {"utf-8-sig": "UTF-8", "cp1252": "Windows-1252 (not UTF-8)"}


def superstore_tables(raw: pd.DataFrame, file_name: str = "Sample - Superstore.csv"
                      ) -> ImportResult:
    """Order lines (text cells) -> ``orders`` (one per Order ID) and ``customers``."""
    lines = superstore_lines(raw, file_name)
    orders = superstore_orders(lines)
    customers = superstore_customers(lines)
    notes = [f"read {len(lines):,} order lines from {file_name} (amounts in USD)"]
    notes += superstore_notes(lines, orders, customers)
    return ImportResult({ORDERS: orders, CUSTOMERS: customers}, notes)


def superstore_lines(raw: pd.DataFrame, file_name: str) -> pd.DataFrame:
    """Typed order lines: US dates parsed explicitly, numbers parsed, ids stripped."""
    lines = raw.assign(**{
        _Store.ORDER: _as_id(raw[_Store.ORDER]),
        _Store.CUSTOMER: _as_id(raw[_Store.CUSTOMER]),
        _Store.DATE: _to_dates(raw[_Store.DATE].str.strip(), _Store.DATE_FORMAT,
                               f"{file_name}: Order Date"),
        _Store.SALES: _to_numbers(raw[_Store.SALES], f"{file_name}: Sales"),
        _Store.QUANTITY: _to_numbers(raw[_Store.QUANTITY], f"{file_name}: Quantity"),
        _Store.PROFIT: _to_numbers(raw[_Store.PROFIT], f"{file_name}: Profit"),
    })
    incomplete = lines[[_Store.ORDER, _Store.CUSTOMER, _Store.DATE, _Store.SALES]].isna()
    if incomplete.any(axis=None):
        raise ValueError(f"{file_name}: {int(incomplete.any(axis=1).sum()):,} line(s) lack an "
                         "Order ID, Customer ID, Order Date or Sales")
    return lines


def superstore_orders(lines: pd.DataFrame) -> pd.DataFrame:
    """One order per Order ID: amount = its Sales; product = the Category with most of them.

    Superstore's Region is where the order ships to (most customers order to several regions),
    so it is kept on the order as ``ship_region`` rather than taken as a customer attribute.
    """
    grouped = lines.groupby(_Store.ORDER, sort=True)
    orders = grouped.agg(
        **{
            CUSTOMER_ID: (_Store.CUSTOMER, "first"),
            ORDER_DATE: (_Store.DATE, "first"),
            AMOUNT: (_Store.SALES, "sum"),
            CHANNEL: (_Store.SHIP_MODE, "first"),
            SHIP_REGION: (_Store.REGION, "first"),
            QUANTITY: (_Store.QUANTITY, "sum"),
            PROFIT: (_Store.PROFIT, "sum"),
            N_LINES: (_Store.SALES, "size"),
        }
    )
    orders[AMOUNT] = orders[AMOUNT].round(_DECIMALS)
    orders[PROFIT] = orders[PROFIT].round(_DECIMALS)
    orders[schemas.PRODUCT] = _dominant(lines, _Store.ORDER, _Store.CATEGORY, _Store.SALES)
    orders[SUB_CATEGORY] = _dominant(lines, _Store.ORDER, _Store.SUB_CATEGORY, _Store.SALES)
    orders = orders.reset_index(names=ORDER_ID)
    return orders[[ORDER_ID, CUSTOMER_ID, ORDER_DATE, AMOUNT, schemas.PRODUCT, CHANNEL,
                   SUB_CATEGORY, SHIP_REGION, QUANTITY, PROFIT, N_LINES]]


def superstore_customers(lines: pd.DataFrame) -> pd.DataFrame:
    """One row per Customer ID with its segment and the region it orders to most."""
    orders = lines.drop_duplicates(_Store.ORDER)
    segment = _dominant(orders, _Store.CUSTOMER, _Store.SEGMENT)
    region = _dominant(orders, _Store.CUSTOMER, _Store.REGION)
    return pd.DataFrame({
        CUSTOMER_ID: segment.index.astype(object),
        schemas.SEGMENT: segment.to_numpy(),
        schemas.REGION: region.reindex(segment.index).to_numpy(),
    })


def superstore_notes(lines: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame
                     ) -> list[str]:
    """What the user should know about how order lines became orders and customers."""
    by_category = lines.groupby([_Store.ORDER, _Store.CATEGORY])[_Store.SALES].sum()
    exact = by_category.groupby(level=0).max().sum() / by_category.sum()
    mixed = _several(lines, _Store.ORDER, _Store.CATEGORY)
    conflicts = max(_several(lines, _Store.ORDER, _Store.CUSTOMER),
                    _several(lines, _Store.ORDER, _Store.DATE))
    notes = [
        f"orders: {len(orders):,} Order IDs; amount = sum of Sales; order_date from the US "
        "M/D/YYYY Order Date; channel = Ship Mode; ship_region = Region",
        f"product = the order's Category with most sales (sub_category likewise); {mixed:,} "
        f"orders mix categories, so revenue by product is exact for {exact:.1%} of sales",
        f"customers: {len(customers):,} Customer IDs with their Segment; region = the Region "
        f"they order to most ({_several(lines, _Store.CUSTOMER, _Store.REGION):,} customers "
        "order to several regions)",
    ]
    if conflicts:
        notes.append(f"{conflicts:,} Order IDs have lines with different customers or dates; "
                     "the first line's are used")
    return notes


_IMPORTERS: dict[str, Callable[[Path], ImportResult]] = {
    "online-retail": _import_online_retail,
    "crm-sales": _import_crm_sales,
    "superstore": _import_superstore,
}
