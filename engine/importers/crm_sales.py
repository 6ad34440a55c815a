"""crm-sales: Maven Analytics CRM Sales Opportunities (fictitious B2B hardware seller, USD).

The pipeline -> ``opportunities``, ``orders`` (one per won deal), ``customers`` (accounts) and
``org`` (agents, managers, regional offices).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pandas as pd

from engine.importers.common import (
    ANNUAL_REVENUE,
    EMPLOYEES,
    SUBSIDIARY_OF,
    YEAR_ESTABLISHED,
    ImportResult,
    Source,
    as_id,
    dominant,
    examples,
    plural,
    read_text_csv,
    require_columns,
    to_dates,
    to_numbers,
)
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    LIST_PRICE,
    MANAGER,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    OWNER,
    PRODUCT,
    REGION,
    REP,
    SEGMENT,
    STAGE,
    STATUS,
    STATUS_LOST,
    STATUS_OPEN,
    STATUS_WON,
    TEAM,
)

__all__ = [
    "SOURCE",
    "crm_customer_notes",
    "crm_customers",
    "crm_deals",
    "crm_list_prices",
    "crm_opportunities",
    "crm_opportunity_notes",
    "crm_order_notes",
    "crm_orders",
    "crm_org",
    "crm_org_notes",
    "crm_tables",
    "median_won_cycle",
    "normalise_products",
    "read_crm_sales",
    "snapshot_date",
]


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


def read_crm_sales(pipeline_path: Path) -> ImportResult:
    """sales_pipeline.csv and the three files beside it -> the tables (see :func:`crm_tables`)."""
    folder = pipeline_path.parent
    frames: dict[str, pd.DataFrame] = {}
    for name, columns in _CRM_FILES.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{name} is missing in {folder} (the crm-sales dataset needs "
                             f"{', '.join(_CRM_FILES)})")
        frames[name], _ = read_text_csv(path)
        require_columns(frames[name], columns, name)
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
        stages = examples(pipeline.loc[unknown, _Crm.STAGE])
        raise ValueError(f"{_Crm.PIPELINE}: unknown deal_stage {stages}; expected one of "
                         f"{', '.join(_Crm.STATUS)}")
    return pipeline.assign(**{
        _Crm.OPPORTUNITY: as_id(pipeline[_Crm.OPPORTUNITY]),
        _Crm.ACCOUNT: as_id(pipeline[_Crm.ACCOUNT]),
        _Crm.PRODUCT: pipeline[_Crm.PRODUCT].str.strip(),
        _Crm.ENGAGE: to_dates(pipeline[_Crm.ENGAGE], _Crm.DATE_FORMAT,
                              f"{_Crm.PIPELINE}: engage_date"),
        _Crm.CLOSE: to_dates(pipeline[_Crm.CLOSE], _Crm.DATE_FORMAT,
                             f"{_Crm.PIPELINE}: close_date"),
        _Crm.CLOSE_VALUE: to_numbers(pipeline[_Crm.CLOSE_VALUE], f"{_Crm.PIPELINE}: close_value"),
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
    prices = to_numbers(products[_Crm.PRICE], f"{_Crm.PRODUCTS}: sales_price")
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
                         f"{examples(deals.loc[unknown, _Crm.PRODUCT])}")
    won = status == STATUS_WON
    return pd.DataFrame({
        OPPORTUNITY_ID: deals[_Crm.OPPORTUNITY],
        OWNER: deals[_Crm.AGENT].str.strip(),
        CREATED_AT: created,
        CLOSE_DATE: deals[_Crm.CLOSE].where(status != STATUS_OPEN, expected_close),
        STAGE: deals[_Crm.STAGE],
        STATUS: status,
        AMOUNT: deals[_Crm.CLOSE_VALUE].where(won, list_price).astype("float64"),
        CUSTOMER_ID: deals[_Crm.ACCOUNT],
        PRODUCT: deals[_Crm.PRODUCT],
        LIST_PRICE: list_price.astype("float64"),
    }).reset_index(drop=True)


def crm_orders(opportunities: pd.DataFrame) -> pd.DataFrame:
    """One order per won deal that names an account, linked back by opportunity_id.

    A won deal without an account cannot be an order (orders need a customer_id); it stays a
    won opportunity, which the contract counts as revenue on its close_date.
    """
    won = opportunities[(opportunities[STATUS] == STATUS_WON)
                        & opportunities[CUSTOMER_ID].notna()]
    return pd.DataFrame({
        ORDER_ID: won[OPPORTUNITY_ID],
        CUSTOMER_ID: won[CUSTOMER_ID],
        ORDER_DATE: won[CLOSE_DATE],
        AMOUNT: won[AMOUNT],
        PRODUCT: won[PRODUCT],
        OPPORTUNITY_ID: won[OPPORTUNITY_ID],
    }).reset_index(drop=True)


def crm_customers(accounts: pd.DataFrame, deals: pd.DataFrame) -> pd.DataFrame:
    """One customer per account; account_manager is the agent with most deals with it."""
    account = as_id(accounts[_Crm.ACCOUNT])
    manager = dominant(deals.dropna(subset=[_Crm.ACCOUNT]), _Crm.ACCOUNT, _Crm.AGENT)

    def optional_number(column: str) -> pd.Series:
        if column not in accounts.columns:
            return pd.Series(float("nan"), index=accounts.index)
        return to_numbers(accounts[column], f"{_Crm.ACCOUNTS}: {column}")

    def optional_text(column: str) -> pd.Series:
        if column not in accounts.columns:
            return pd.Series(None, index=accounts.index, dtype=object)
        return as_id(accounts[column])

    return pd.DataFrame({
        CUSTOMER_ID: account,
        ACCOUNT_MANAGER: account.map(manager),
        REGION: as_id(accounts[_Crm.LOCATION]).replace(_Crm.TYPOS),
        SEGMENT: as_id(accounts[_Crm.SECTOR]).replace(_Crm.TYPOS),
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
        REGION: teams[_Crm.OFFICE].str.strip(),
        MANAGER: manager,
    }).reset_index(drop=True)


def crm_opportunity_notes(deals: pd.DataFrame, opportunities: pd.DataFrame) -> list[str]:
    """What the user should know about how pipeline rows became opportunities."""
    status = opportunities[STATUS]
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
    won = opportunities[STATUS] == STATUS_WON
    orphans = int((won & opportunities[CUSTOMER_ID].isna()).sum())
    return [
        f"orders: {len(orders):,}, one per won deal with an account (order_id = opportunity_id, "
        "order_date = close_date, amount = close_value)",
        f"{plural(orphans, 'won deal')} without an account: no order made for them (orders need a "
        "customer_id); they stay won opportunities, which count as revenue on their close_date",
    ]


def crm_customer_notes(accounts: pd.DataFrame, customers: pd.DataFrame) -> list[str]:
    """What the user should know about the customers made from accounts."""
    fixed = [
        f"'{wrong}' corrected to '{right}' ({plural(n, 'account')})"
        for wrong, right in _Crm.TYPOS.items()
        if (n := int(accounts[[_Crm.SECTOR, _Crm.LOCATION]].isin([wrong]).any(axis=1).sum()))
    ]
    without = plural(int(customers[ACCOUNT_MANAGER].isna().sum()), "account")
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
        f"manager) and {org[REGION].nunique():,} regions (regional_office); "
        f"{idle:,} agents "
        "have no deals and are kept",
    ]
    if unknown:
        notes.append(f"{unknown:,} deal owners are not in {_Crm.TEAMS}")
    return notes


SOURCE = Source(
    name="crm-sales",
    description="Maven Analytics CRM pipeline -> opportunities, orders (one per won deal), "
    "customers (accounts), org (agents, managers, offices)",
    files=(_Crm.PIPELINE,),
    beside=(_Crm.ACCOUNTS, _Crm.TEAMS, _Crm.PRODUCTS),
    read=read_crm_sales,
)
