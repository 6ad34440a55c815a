"""superstore: Tableau Sample - Superstore (US retail, 2016 .. 2019, USD).

Order lines -> ``orders`` (one per order) and ``customers``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine.importers.common import (
    DECIMALS,
    ENCODING_NAMES,
    N_LINES,
    PROFIT,
    QUANTITY,
    SHIP_REGION,
    SUB_CATEGORY,
    ImportResult,
    Source,
    as_id,
    dominant,
    groups_with_several,
    read_text_csv,
    require_columns,
    to_dates,
    to_numbers,
)
from engine.schemas import (
    AMOUNT,
    CHANNEL,
    CUSTOMER_ID,
    CUSTOMERS,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    PRODUCT,
    REGION,
    SEGMENT,
)

__all__ = [
    "SOURCE",
    "read_superstore",
    "superstore_customers",
    "superstore_lines",
    "superstore_notes",
    "superstore_orders",
    "superstore_tables",
]


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


def read_superstore(path: Path) -> ImportResult:
    """Sample - Superstore.csv -> the tables (see :func:`superstore_tables`)."""
    raw, encoding = read_text_csv(path)
    require_columns(raw, [_Store.ORDER, _Store.DATE, _Store.SHIP_MODE, _Store.CUSTOMER,
                          _Store.SEGMENT, _Store.REGION, _Store.CATEGORY, _Store.SUB_CATEGORY,
                          _Store.SALES, _Store.QUANTITY, _Store.PROFIT], path.name)
    result = superstore_tables(raw, path.name)
    result.notes.insert(1, f"{path.name} was read as {ENCODING_NAMES[encoding]}")
    return result


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
        _Store.ORDER: as_id(raw[_Store.ORDER]),
        _Store.CUSTOMER: as_id(raw[_Store.CUSTOMER]),
        _Store.DATE: to_dates(raw[_Store.DATE].str.strip(), _Store.DATE_FORMAT,
                              f"{file_name}: Order Date"),
        _Store.SALES: to_numbers(raw[_Store.SALES], f"{file_name}: Sales"),
        _Store.QUANTITY: to_numbers(raw[_Store.QUANTITY], f"{file_name}: Quantity"),
        _Store.PROFIT: to_numbers(raw[_Store.PROFIT], f"{file_name}: Profit"),
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
    orders[AMOUNT] = orders[AMOUNT].round(DECIMALS)
    orders[PROFIT] = orders[PROFIT].round(DECIMALS)
    orders[PRODUCT] = dominant(lines, _Store.ORDER, _Store.CATEGORY, _Store.SALES)
    orders[SUB_CATEGORY] = dominant(lines, _Store.ORDER, _Store.SUB_CATEGORY, _Store.SALES)
    orders = orders.reset_index(names=ORDER_ID)
    return orders[[ORDER_ID, CUSTOMER_ID, ORDER_DATE, AMOUNT, PRODUCT, CHANNEL,
                   SUB_CATEGORY, SHIP_REGION, QUANTITY, PROFIT, N_LINES]]


def superstore_customers(lines: pd.DataFrame) -> pd.DataFrame:
    """One row per Customer ID with its segment and the region it orders to most."""
    orders = lines.drop_duplicates(_Store.ORDER)
    segment = dominant(orders, _Store.CUSTOMER, _Store.SEGMENT)
    region = dominant(orders, _Store.CUSTOMER, _Store.REGION)
    return pd.DataFrame({
        CUSTOMER_ID: segment.index.astype(object),
        SEGMENT: segment.to_numpy(),
        REGION: region.reindex(segment.index).to_numpy(),
    })


def superstore_notes(lines: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame
                     ) -> list[str]:
    """What the user should know about how order lines became orders and customers."""
    by_category = lines.groupby([_Store.ORDER, _Store.CATEGORY])[_Store.SALES].sum()
    exact = by_category.groupby(level=0).max().sum() / by_category.sum()
    mixed = groups_with_several(lines, _Store.ORDER, _Store.CATEGORY)
    travellers = groups_with_several(lines, _Store.CUSTOMER, _Store.REGION)
    conflicts = max(groups_with_several(lines, _Store.ORDER, _Store.CUSTOMER),
                    groups_with_several(lines, _Store.ORDER, _Store.DATE))
    notes = [
        f"orders: {len(orders):,} Order IDs; amount = sum of Sales; order_date from the US "
        "M/D/YYYY Order Date; channel = Ship Mode; ship_region = Region",
        f"product = the order's Category with most sales (sub_category likewise); {mixed:,} "
        f"orders mix categories, so revenue by product is exact for {exact:.1%} of sales",
        f"customers: {len(customers):,} Customer IDs with their Segment; region = the Region "
        f"they order to most ({travellers:,} customers order to several regions)",
    ]
    if conflicts:
        notes.append(f"{conflicts:,} Order IDs have lines with different customers or dates; "
                     "the first line's are used")
    return notes


SOURCE = Source(
    name="superstore",
    description="Tableau Sample Superstore order lines -> orders (one per order), customers",
    files=_Store.FILES,
    read=read_superstore,
)
