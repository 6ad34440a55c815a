"""online-retail: UCI Online Retail (UK e-retailer, 2010-12 .. 2011-12, GBP).

Invoice lines -> ``orders`` (one per invoice) and ``customers``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine.importers.common import (
    DECIMALS,
    N_LINES,
    QUANTITY,
    ImportResult,
    Source,
    as_id,
    dominant,
    drop_rows,
    groups_with_several,
    plural,
    read_text_csv,
    require_columns,
    to_dates,
    to_numbers,
)
from engine.schemas import (
    AMOUNT,
    CUSTOMER_ID,
    CUSTOMERS,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    REGION,
)

__all__ = [
    "SOURCE",
    "online_retail_tables",
    "read_online_retail",
    "retail_customer_notes",
    "retail_customers",
    "retail_drop_reasons",
    "retail_lines",
    "retail_order_notes",
    "retail_orders",
    "retail_vanished_notes",
]


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


def read_online_retail(path: Path) -> ImportResult:
    """online_retail.csv(.gz) -> the tables (see :func:`online_retail_tables`)."""
    raw, _ = read_text_csv(path)
    require_columns(raw, [_Retail.INVOICE, _Retail.STOCK_CODE, _Retail.QUANTITY, _Retail.DATE,
                          _Retail.PRICE, _Retail.CUSTOMER, _Retail.COUNTRY], path.name)
    return online_retail_tables(raw, path.name)


def online_retail_tables(raw: pd.DataFrame, file_name: str = "online_retail.csv.gz"
                         ) -> ImportResult:
    """Invoice lines (text cells) -> ``orders`` (one per invoice) and ``customers``."""
    lines = retail_lines(raw, file_name)
    notes = [f"read {len(lines):,} invoice lines from {file_name} (amounts in GBP)"]
    kept, drop_notes = drop_rows(lines, retail_drop_reasons(lines), "invoice lines")
    orders = retail_orders(kept)
    customers = retail_customers(kept)
    notes += drop_notes + retail_vanished_notes(lines, kept)
    notes += retail_order_notes(kept, orders) + retail_customer_notes(kept)
    return ImportResult({ORDERS: orders, CUSTOMERS: customers}, notes)


def retail_lines(raw: pd.DataFrame, file_name: str) -> pd.DataFrame:
    """Typed invoice lines: ids as text, quantity and price as numbers, the timestamp parsed."""
    return raw.assign(**{
        _Retail.INVOICE: as_id(raw[_Retail.INVOICE]),
        _Retail.CUSTOMER: as_id(raw[_Retail.CUSTOMER]),
        _Retail.QUANTITY: to_numbers(raw[_Retail.QUANTITY], f"{file_name}: Quantity"),
        _Retail.PRICE: to_numbers(raw[_Retail.PRICE], f"{file_name}: UnitPrice"),
        _Retail.DATE: to_dates(raw[_Retail.DATE], _Retail.DATE_FORMAT,
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
    orders[AMOUNT] = orders[AMOUNT].round(DECIMALS)
    return orders[[ORDER_ID, CUSTOMER_ID, ORDER_DATE, AMOUNT, QUANTITY, N_LINES]]


def retail_customers(lines: pd.DataFrame) -> pd.DataFrame:
    """One row per CustomerID; region is the country of most of the customer's invoices."""
    invoices = lines.drop_duplicates([_Retail.CUSTOMER, _Retail.INVOICE, _Retail.COUNTRY])
    region = dominant(invoices, _Retail.CUSTOMER, _Retail.COUNTRY)
    return pd.DataFrame({CUSTOMER_ID: region.index.astype(object),
                         REGION: region.to_numpy()})


def retail_vanished_notes(lines: pd.DataFrame, kept: pd.DataFrame) -> list[str]:
    """Invoices and customers that had a CustomerID but lost all their lines to the drops."""
    known = lines.dropna(subset=[_Retail.CUSTOMER])
    invoices = known[_Retail.INVOICE].nunique() - kept[_Retail.INVOICE].nunique()
    customers = known[_Retail.CUSTOMER].nunique() - kept[_Retail.CUSTOMER].nunique()
    if not invoices and not customers:
        return []
    return [f"{plural(invoices, 'invoice')} and {plural(customers, 'customer')} with a CustomerID "
            "had only dropped lines and so do not appear"]


def retail_order_notes(lines: pd.DataFrame, orders: pd.DataFrame) -> list[str]:
    """What the user should know about how invoices became orders."""
    cancelled = orders[ORDER_ID].str.startswith(_Retail.CANCELLATION)
    stamps = groups_with_several(lines, _Retail.INVOICE, _Retail.DATE)
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
    several = groups_with_several(lines, _Retail.CUSTOMER, _Retail.COUNTRY)
    return [
        f"customers: {lines[_Retail.CUSTOMER].nunique():,} CustomerIDs; region = Country; "
        f"{several:,} customers bought from several countries and get the one of most of their "
        "invoices",
    ]


SOURCE = Source(
    name="online-retail",
    description="UCI Online Retail invoice lines -> orders (one per invoice), customers",
    files=_Retail.FILES,
    read=read_online_retail,
)
