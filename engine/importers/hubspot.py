"""hubspot: HubSpot CRM exports (deals, companies, users, teams) -> quotacast tables.

SRC is the folder holding the exports as HubSpot names them, or the deals export itself;
each export may be CSV or XLSX (its first sheet):

- the deals export (``hubspot-crm-exports-all-deals-<date>.csv``, or any ``*deals*.csv``):
  ``Record ID``, ``Deal Stage``, ``Amount``, ``Close Date``, ``Create Date``, ``Deal owner``,
  ``Pipeline``, ``Associated Company`` and/or ``Associated Company IDs``; optionally ``Deal
  Name``, ``Is Closed Won`` and ``Is Deal Closed?`` (or ``Is closed lost``), and the
  ``Date entered "<stage> (<pipeline>)"`` / ``Date exited ...`` columns (quoted with ``"``,
  ``'`` or not at all), which become ``stage_history``;
- the companies export (``*compan*.csv``, optional): ``Record ID``, ``Company name``, and
  ``Industry``, ``Country/Region``, ``Company owner`` when present;
- the users export (``*user*.csv`` or ``*owner*.csv``, optional): ``First Name``, ``Last
  Name`` (or ``Name``), ``Email``, and ``Teams`` (or ``Primary team`` / ``Team``);
- a teams file (``*team*.csv``, optional): ``Team name``, ``Parent team name`` (HubSpot's team
  import layout), whose parent team becomes the region;
- ``quotacast-hubspot.yaml`` (optional): ``won_stages`` and ``lost_stages``, the names of the
  closed stages when they are not ``Closed Won`` / ``Closed Lost``.

The status comes from ``Is Closed Won`` / ``Is Deal Closed?`` when the export has them, else
from the stage's name (``Closed Won`` -> won, ``Closed Lost`` -> lost, case-insensitive; other
names through the ``won_stages`` / ``lost_stages`` options, given to :func:`read_hubspot` or in
``quotacast-hubspot.yaml``). Won deals with a company become
orders, as HubSpot exports no order table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import yaml

from engine.importers.common import (
    ImportResult,
    Source,
    as_id,
    dominant,
    examples,
    plural,
    read_text_csv,
    require_columns,
    to_iso_dates,
    to_numbers,
)
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    ENTERED_AT,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    OWNER,
    REGION,
    REP,
    SEGMENT,
    STAGE,
    STAGE_HISTORY,
    STATUS,
    STATUS_LOST,
    STATUS_OPEN,
    STATUS_WON,
    TEAM,
)

__all__ = [
    "DEFAULT_LOST",
    "DEFAULT_WON",
    "PIPELINE",
    "SOURCE",
    "hubspot_customers",
    "hubspot_opportunities",
    "hubspot_org",
    "hubspot_stage_history",
    "hubspot_status",
    "hubspot_tables",
    "parse_amounts",
    "parse_hubspot_dates",
    "read_hubspot",
    "stage_columns",
]

# Extra output columns: the deal's pipeline and name, and when a stage was left.
PIPELINE = "pipeline"
DEAL_NAME = "deal_name"
EXITED_AT = "exited_at"

OPTIONS_FILE = "quotacast-hubspot.yaml"
DEFAULT_WON = ("closed won",)
DEFAULT_LOST = ("closed lost",)
NO_OWNER = "(no owner)"
NO_TEAM = "(no team)"


class _Hs:
    """Header spellings of HubSpot's exports."""

    ID = "Record ID"
    NAME = "Deal Name"
    STAGE = "Deal Stage"
    AMOUNT = "Amount"
    CLOSE = "Close Date"
    CREATE = "Create Date"
    OWNER = "Deal owner"
    PIPELINE = "Pipeline"
    COMPANY = "Associated Company"
    COMPANY_IDS = "Associated Company IDs"
    IS_WON = ("Is Closed Won",)
    IS_CLOSED = ("Is Deal Closed?", "Is closed", "Is Closed")
    IS_LOST = ("Is closed lost", "Is Closed Lost")
    COMPANY_NAME = "Company name"
    INDUSTRY = "Industry"
    COUNTRY = "Country/Region"
    COMPANY_OWNER = "Company owner"
    FIRST = "First Name"
    LAST = "Last Name"
    FULL = "Name"
    EMAIL = "Email"
    TEAMS = ("Primary team", "Primary Team", "Teams", "Team", "Assigned teams")
    TEAM_NAME = "Team name"
    PARENT_TEAM = "Parent team name"
    REQUIRED: ClassVar[list[str]] = [ID, STAGE, AMOUNT, CLOSE, CREATE, OWNER]


# Date entered "Closed Won (Sales Pipeline)": the stage may hold parentheses itself, the
# pipeline is the last parenthesised part; the quotes are ", ' or none depending on the export.
_STAGE_COLUMN = re.compile(r"""^Date (entered|exited) (["']?)(.+) \(([^()]+)\)\2$""")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


@dataclass(frozen=True)
class _Options:
    won: tuple[str, ...] = DEFAULT_WON
    lost: tuple[str, ...] = DEFAULT_LOST

    @classmethod
    def of(cls, options: Mapping[str, Any] | None) -> _Options:
        options = options or {}

        def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = options.get(key)
            if value is None:
                return default
            items = [value] if isinstance(value, str) else list(value)
            return tuple(str(v).strip().lower() for v in items)

        return cls(names("won_stages", DEFAULT_WON), names("lost_stages", DEFAULT_LOST))


def _find(folder: Path, patterns: tuple[str, ...], exclude: Path | None = None) -> Path | None:
    """The file matching the first pattern that matches (``x.csv`` patterns try ``x.xlsx``)."""
    for pattern in patterns:
        for variant in (pattern, pattern.removesuffix(".csv") + ".xlsx"):
            found = sorted(p for p in folder.glob(variant) if p.is_file() and p != exclude)
            if found:
                return found[-1]  # the latest of dated exports
    return None


def _read(path: Path) -> pd.DataFrame:
    """A CSV export (UTF-8 or Windows-1252) or an XLSX one (its first sheet), as text cells."""
    if path.suffix.lower() != ".xlsx":
        return read_text_csv(path)[0]
    try:
        frame = pd.read_excel(path, sheet_name=0, dtype=str, keep_default_na=False,
                              na_values=[""])
    except ImportError as exc:
        raise ValueError(f"{path.name}: reading Excel needs openpyxl (pip install openpyxl)"
                         ) from exc
    except (ValueError, OSError, KeyError) as exc:
        raise ValueError(f"{path.name} is not a readable Excel workbook: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


class _HubSpotSource(Source):
    """The deals export is found by pattern: HubSpot dates its export files."""

    def locate(self, src: Path) -> Path:
        if src.is_file():
            return src
        if src.is_dir():
            found = _find(src, self.files)
            if found is None:
                raise ValueError(f"no deals export ({' or '.join(self.files)}, or .xlsx) in {src} "
                                 "(expected the hubspot export)")
            return found
        raise ValueError(f"{src} does not exist (expected the hubspot export's folder or "
                         "deals export)")


def read_hubspot(deals_path: Path, options: Mapping[str, Any] | None = None) -> ImportResult:
    """The deals export and the exports beside it -> the tables (see :func:`hubspot_tables`).

    ``options`` (``won_stages``, ``lost_stages``) override those of ``quotacast-hubspot.yaml``
    beside the deals export.
    """
    folder = deals_path.parent
    options = {**_options_file(folder / OPTIONS_FILE), **(options or {})}
    deals = _read(deals_path)
    require_columns(deals, _Hs.REQUIRED, deals_path.name)

    def optional(patterns: tuple[str, ...], columns: list[str]) -> pd.DataFrame | None:
        path = _find(folder, patterns, exclude=deals_path)
        if path is None:
            return None
        frame = _read(path)
        require_columns(frame, columns, path.name)
        return frame

    companies = optional(("*compan*.csv", "*Compan*.csv"), [_Hs.ID, _Hs.COMPANY_NAME])
    users = optional(("*user*.csv", "*User*.csv", "*owner*.csv", "*Owner*.csv"), [])
    teams = optional(("*team*.csv", "*Team*.csv"), [_Hs.TEAM_NAME, _Hs.PARENT_TEAM])
    return hubspot_tables(deals, companies, users, teams, options)


def _options_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name} is not readable YAML: {exc}") from exc
    if loaded is None:
        return {}
    unknown = set(loaded) - {"won_stages", "lost_stages"} if isinstance(loaded, dict) else None
    if unknown is None or unknown:
        raise ValueError(f"{path.name} holds won_stages and lost_stages (lists of stage names), "
                         f"found {sorted(unknown) if unknown else type(loaded).__name__}")
    return dict(loaded)


def parse_hubspot_dates(values: pd.Series, what: str) -> pd.Series:
    """``2023-09-13 14:05``, ``2023-09-13``, ISO 8601 (``...T14:05:00Z``, UTC kept naive)."""
    return to_iso_dates(values, what,
                        written="dates as HubSpot writes them (2023-09-13 14:05 or ISO 8601)")


def parse_amounts(values: pd.Series, what: str) -> pd.Series:
    """Numbers, ``1,054`` and ``12,400.50`` too (thousands separators dropped)."""
    text = values.str.strip()
    grouped = text.fillna("").str.match(_THOUSANDS).astype(bool)
    text = text.where(~grouped, text.str.replace(",", "", regex=False))
    return to_numbers(text, what)


def _column(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in frame.columns}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def _flag(frame: pd.DataFrame, names: tuple[str, ...]) -> tuple[str, pd.Series] | None:
    column = _column(frame, names)
    if column is None:
        return None
    text = frame[column].str.strip().str.lower()
    bad = text.notna() & ~text.isin(_TRUE | _FALSE)
    if bad.any():
        raise ValueError(f"deals export: {column}: {int(bad.sum()):,} value(s) are neither "
                         f"true nor false, e.g. {examples(frame.loc[bad, column])}")
    return column, text.isin(_TRUE)


def hubspot_status(deals: pd.DataFrame, stage: pd.Series, options: _Options
                   ) -> tuple[pd.Series, str]:
    """won/lost/open per deal, and how it was decided (for the notes)."""
    won_flag, closed_flag = _flag(deals, _Hs.IS_WON), _flag(deals, _Hs.IS_CLOSED)
    if won_flag is not None and closed_flag is not None:
        status = pd.Series(STATUS_OPEN, index=deals.index)
        status[closed_flag[1]] = STATUS_LOST
        status[won_flag[1]] = STATUS_WON
        return status, f"status from '{won_flag[0]}' and '{closed_flag[0]}'"
    lost_flag = _flag(deals, _Hs.IS_LOST)
    if won_flag is not None and lost_flag is not None:
        status = pd.Series(STATUS_OPEN, index=deals.index)
        status[lost_flag[1]] = STATUS_LOST
        status[won_flag[1]] = STATUS_WON
        return status, f"status from '{won_flag[0]}' and '{lost_flag[0]}'"
    name = stage.str.lower()
    status = pd.Series(STATUS_OPEN, index=deals.index)
    status[name.isin(options.lost)] = STATUS_LOST
    status[name.isin(options.won)] = STATUS_WON
    how = (f"status from the stage name: {' / '.join(options.won)} -> won, "
           f"{' / '.join(options.lost)} -> lost, any other stage -> open")
    return status, how


def _pipelines_without(status: pd.Series, pipeline: pd.Series, which: str) -> list[str]:
    """Pipelines none of whose deals have status ``which`` (a closed stage name not known)."""
    found = status.groupby(pipeline.fillna("(no pipeline)")).apply(lambda s: (s == which).any())
    return sorted(str(p) for p, any_ in found.items() if not any_)


def _first(values: pd.Series) -> tuple[pd.Series, int]:
    """The first of ``a;b`` lists, and how many cells listed several."""
    text = as_id(values).astype("string")
    several = int(text.str.contains(";", regex=False).fillna(False).sum())
    return as_id(text.str.split(";").str[0]), several


def _owner_names(values: pd.Series) -> pd.Series:
    """``Jane Doe`` from ``Jane Doe`` or ``Jane Doe (jane@x.com)``."""
    text = values.str.strip().str.replace(r"\s*\([^()]*@[^()]*\)$", "", regex=True)
    return text.mask(text == "")


def _company_names(companies: pd.DataFrame | None) -> pd.Series:
    """Company Record ID -> the name used as customer_id (``Name (id)`` when names repeat)."""
    if companies is None:
        return pd.Series(dtype=object)
    ids = as_id(companies[_Hs.ID])
    names = as_id(companies[_Hs.COMPANY_NAME]).fillna(ids)
    repeated = names.duplicated(keep=False)
    names = names.where(~repeated, names + " (" + ids + ")")
    return pd.Series(names.to_numpy(), index=ids.to_numpy())


def hubspot_opportunities(deals: pd.DataFrame, companies: pd.DataFrame | None,
                          options: _Options) -> tuple[pd.DataFrame, list[str]]:
    """One opportunity per deal; the notes say how stages, owners and companies were read."""
    pipeline = (as_id(deals[_Hs.PIPELINE]) if _Hs.PIPELINE in deals.columns
                else pd.Series(None, index=deals.index, dtype=object))
    stage = deals[_Hs.STAGE].str.strip()
    # Some exports write "Closed Won (Sales Pipeline)": the pipeline's name is dropped.
    suffix = " (" + pipeline.fillna("") + ")"
    has_suffix = pd.Series([s.endswith(x) if isinstance(s, str) else False
                            for s, x in zip(stage, suffix, strict=True)], index=deals.index)
    stage = stage.where(~has_suffix, pd.Series(
        [s[: -len(x)] if h else s for s, x, h in zip(stage, suffix, has_suffix, strict=True)],
        index=deals.index))
    if stage.isna().any():
        raise ValueError(f"deals export: {int(stage.isna().sum()):,} deal(s) have no Deal Stage")
    status, how = hubspot_status(deals, stage, options)
    ids = as_id(deals[_Hs.ID])
    if ids.isna().any() or ids.duplicated().any():
        raise ValueError("deals export: Record ID must be present and unique, e.g. "
                         f"{examples(deals.loc[ids.isna() | ids.duplicated(), _Hs.ID])}")
    created = parse_hubspot_dates(deals[_Hs.CREATE], "deals export: Create Date")
    close = parse_hubspot_dates(deals[_Hs.CLOSE], "deals export: Close Date")
    amount = parse_amounts(deals[_Hs.AMOUNT], "deals export: Amount")
    owner = _owner_names(deals[_Hs.OWNER])
    notes: list[str] = []

    # The company: by Associated Company IDs through the companies export, else by name.
    company_names = _company_names(companies)
    customer = pd.Series(None, index=deals.index, dtype=object)
    several = 0
    if _Hs.COMPANY_IDS in deals.columns and companies is not None:
        first_id, several = _first(deals[_Hs.COMPANY_IDS])
        customer = _nones(first_id.map(company_names))
        unknown = first_id.notna() & customer.isna()
        customer = customer.where(~unknown, first_id).astype(object)
        if unknown.any():
            notes.append(f"{plural(int(unknown.sum()), 'deal')}' company IDs are not in the "
                         "companies export: the ID is used as the customer")
    elif _Hs.COMPANY in deals.columns:
        customer, several = _first(deals[_Hs.COMPANY])
    if several:
        notes.append(f"{plural(several, 'deal')} name several companies: the first is the "
                     "customer")
    customer = _nones(customer)

    no_created = created.isna()
    if no_created.any():
        raise ValueError(f"deals export: {int(no_created.sum()):,} deal(s) have no Create Date")
    no_close = close.isna()
    if no_close.any():
        notes.append(f"{plural(int(no_close.sum()), 'deal')} without a Close Date: close_date "
                     "set to the Create Date")
    close = close.fillna(created)
    early = close < created
    if early.any():
        notes.append(f"{plural(int(early.sum()), 'deal')} close before they were created: "
                     "created_at set to the Close Date")
    created = created.where(~early, close)
    no_amount = amount.isna()
    if no_amount.any():
        notes.append(f"{plural(int(no_amount.sum()), 'deal')} without an Amount: amount 0")
    negative = amount < 0
    if negative.any():
        raise ValueError(f"deals export: Amount: {int(negative.sum()):,} negative value(s), e.g. "
                         f"{examples(deals.loc[negative, _Hs.AMOUNT])}")
    no_owner = owner.isna()
    if no_owner.any():
        notes.append(f"{plural(int(no_owner.sum()), 'deal')} without a Deal owner: owner "
                     f"'{NO_OWNER}'")
    opportunities = pd.DataFrame({
        OPPORTUNITY_ID: ids,
        OWNER: owner.fillna(NO_OWNER),
        CREATED_AT: created,
        CLOSE_DATE: close,
        STAGE: stage,
        STATUS: status,
        AMOUNT: amount.fillna(0.0).astype("float64"),
        CUSTOMER_ID: customer,
        PIPELINE: pipeline,
        DEAL_NAME: (as_id(deals[_Hs.NAME]) if _Hs.NAME in deals.columns else None),
    }).reset_index(drop=True)
    counts = status.value_counts()
    pipelines = opportunities[PIPELINE].dropna().nunique()
    notes.insert(0, f"opportunities: {len(opportunities):,} deals in "
                 f"{plural(pipelines, 'pipeline')} ({counts.get(STATUS_WON, 0):,} won, "
                 f"{counts.get(STATUS_LOST, 0):,} lost, {counts.get(STATUS_OPEN, 0):,} open); "
                 f"stage = Deal Stage; {how}; created_at = Create Date, close_date = Close Date "
                 "(expected for open deals)")
    for which in (STATUS_WON, STATUS_LOST):
        for name in _pipelines_without(status, pipeline, which):
            notes.append(f"check: no deal of pipeline '{name}' is {which}; if its closed stages "
                         f"have other names, list them as {which}_stages in {OPTIONS_FILE} "
                         "beside the deals export")
    stages = (opportunities.groupby([PIPELINE, STAGE, STATUS], dropna=False).size()
              .rename("n").reset_index().pipe(_stage_lines))
    notes.insert(1, "stages: " + "; ".join(f"{line} ({n:,})" for line, n in stages))
    return opportunities, notes


def _stage_lines(table: pd.DataFrame) -> list[tuple[str, int]]:
    return [(f"{p if isinstance(p, str) else '(no pipeline)'} / {s} -> {st}", int(n))
            for p, s, st, n in zip(table[PIPELINE], table[STAGE], table[STATUS], table["n"],
                                   strict=True)]


def stage_columns(columns: list[str]) -> list[tuple[str, str, str, str]]:
    """(column, entered|exited, stage, pipeline) for each ``Date entered "S (P)"`` column."""
    found = []
    for column in columns:
        match = _STAGE_COLUMN.match(column)
        if match:
            found.append((column, match.group(1), match.group(3), match.group(4)))
    return found


def hubspot_stage_history(deals: pd.DataFrame, ids: pd.Series) -> pd.DataFrame | None:
    """One row per deal and stage it entered, from the Date entered / Date exited columns."""
    columns = stage_columns(list(deals.columns))
    entered = [c for c in columns if c[1] == "entered"]
    if not entered:
        return None
    exited = {(stage, pipe): col for col, kind, stage, pipe in columns if kind == "exited"}
    parts = []
    # Stages entered at the same moment keep the export's column order, the pipeline's order.
    for position, (column, _, stage, pipe) in enumerate(entered):
        at = parse_hubspot_dates(deals[column], f"deals export: {column}")
        out = exited.get((stage, pipe))
        left = (parse_hubspot_dates(deals[out], f"deals export: {out}") if out
                else pd.Series(pd.NaT, index=deals.index, dtype="datetime64[ns]"))
        keep = at.notna()
        parts.append(pd.DataFrame({
            OPPORTUNITY_ID: ids[keep].to_numpy(),
            STAGE: stage,
            ENTERED_AT: at[keep].to_numpy(),
            EXITED_AT: left[keep].to_numpy(),
            PIPELINE: pipe,
            "_position": position,
        }))
    history = pd.concat(parts, ignore_index=True)
    history = history.sort_values([OPPORTUNITY_ID, ENTERED_AT, "_position"], kind="stable")
    return history.drop(columns="_position").reset_index(drop=True)


def hubspot_customers(companies: pd.DataFrame | None, opportunities: pd.DataFrame
                      ) -> tuple[pd.DataFrame, list[str]]:
    """One customer per company of the export, plus companies only deals name."""
    names = _company_names(companies)
    frame = pd.DataFrame({CUSTOMER_ID: pd.Series(names.to_numpy(), dtype=object)})
    if companies is not None:
        def text(column: str) -> Any:
            return (as_id(companies[column]).to_numpy() if column in companies.columns
                    else None)
        frame[REGION] = text(_Hs.COUNTRY)
        frame[SEGMENT] = text(_Hs.INDUSTRY)
        frame["company_record_id"] = names.index.to_numpy()
        owner = (_owner_names(companies[_Hs.COMPANY_OWNER]).to_numpy()
                 if _Hs.COMPANY_OWNER in companies.columns else None)
        frame[ACCOUNT_MANAGER] = owner
    dealt = opportunities[CUSTOMER_ID].dropna()
    extra = sorted(set(dealt) - set(frame[CUSTOMER_ID]))
    if extra:
        frame = pd.concat([frame, pd.DataFrame({CUSTOMER_ID: extra})], ignore_index=True)
    if ACCOUNT_MANAGER not in frame.columns:
        frame[ACCOUNT_MANAGER] = None
    busiest = dominant(opportunities.dropna(subset=[CUSTOMER_ID]), CUSTOMER_ID, OWNER)
    given = frame[ACCOUNT_MANAGER].notna()
    frame[ACCOUNT_MANAGER] = frame[ACCOUNT_MANAGER].where(
        given, frame[CUSTOMER_ID].map(busiest)).astype(object)
    frame[ACCOUNT_MANAGER] = _nones(frame[ACCOUNT_MANAGER])
    source = "the companies export" if companies is not None else "the deals' companies"
    notes = [f"customers: {len(frame):,} companies from {source} (customer_id = Company name; "
             "region = Country/Region, segment = Industry); account_manager = Company owner, "
             "else the deal owner with most deals with the company"]
    if extra and companies is not None:
        notes.append(f"{plural(len(extra), 'company')} named by deals are not in the companies "
                     "export: added without details")
    return frame.reset_index(drop=True), notes


def _user_names(users: pd.DataFrame) -> pd.Series:
    """``First Name`` + ``Last Name`` (or ``Name``), else the email."""
    if _Hs.FIRST in users.columns and _Hs.LAST in users.columns:
        name = (users[_Hs.FIRST].fillna("").str.strip() + " "
                + users[_Hs.LAST].fillna("").str.strip()).str.strip()
    elif _Hs.FULL in users.columns:
        name = users[_Hs.FULL].fillna("").str.strip()
    else:
        raise ValueError("users export lacks First Name and Last Name (or Name); found "
                         f"{', '.join(users.columns)}")
    name = name.mask(name == "")
    if _Hs.EMAIL in users.columns:
        name = name.fillna(users[_Hs.EMAIL].str.strip())
    return name


def _names_by_email(users: pd.DataFrame | None) -> pd.Series:
    """lower-case email -> the user's name (deal owners are sometimes written as emails)."""
    if users is None or _Hs.EMAIL not in users.columns:
        return pd.Series(dtype=object)
    names = _user_names(users)
    email = users[_Hs.EMAIL].str.strip().str.lower()
    keep = email.notna() & names.notna()
    return pd.Series(names[keep].to_numpy(), index=email[keep].to_numpy()).groupby(
        level=0).first()


def hubspot_org(users: pd.DataFrame | None, teams: pd.DataFrame | None,
                owners: pd.Series) -> tuple[pd.DataFrame | None, list[str]]:
    """rep > team > region from the users export's teams and the teams' parent teams."""
    if users is None:
        return None, ["no hierarchy available: no users export beside the deals (First Name, "
                      "Last Name, Teams), so no org table; feasibility works at company and "
                      "rep level only"]
    name = _user_names(users)
    team_column = _column(users, _Hs.TEAMS)
    if team_column is None:
        team = pd.Series(None, index=users.index, dtype=object)
    else:
        team = as_id(users[team_column].astype("string").str.split(r"[;,]").str[0])
    notes: list[str] = []
    if team_column is None or team.isna().all():
        notes.append("no hierarchy available beyond reps: the users export has no teams; "
                     f"every rep is in team '{NO_TEAM}'")
    team = team.fillna(NO_TEAM)
    region = pd.Series(team.to_numpy(), index=users.index, dtype=object)
    if teams is not None:
        parent = pd.Series(as_id(teams[_Hs.PARENT_TEAM]).to_numpy(),
                           index=as_id(teams[_Hs.TEAM_NAME]).to_numpy())
        parent = parent[parent.notna() & (parent.astype(str) != "N/A")]
        region = team.map(parent).fillna(team).astype(object)
        notes.append(f"org: region = the team's parent team ({parent.nunique():,} parent teams)")
    else:
        notes.append("org: no teams file with parent teams, so each team is its own region")
    org = pd.DataFrame({REP: name, TEAM: team, REGION: region}).dropna(subset=[REP])
    org = org.drop_duplicates(REP).reset_index(drop=True)
    missing = sorted(set(owners) - set(org[REP]))
    if missing:
        org = pd.concat([org, pd.DataFrame({REP: missing, TEAM: NO_TEAM, REGION: NO_TEAM})],
                        ignore_index=True)
        notes.append(f"{plural(len(missing), 'deal owner')} not in the users export: team "
                     f"'{NO_TEAM}', e.g. {', '.join(missing[:3])}")
    notes.insert(0, f"org: {len(org):,} reps in {org[TEAM].nunique():,} teams and "
                 f"{org[REGION].nunique():,} regions (team = the user's first team)")
    return org, notes


def hubspot_orders(opportunities: pd.DataFrame) -> pd.DataFrame:
    """One order per won deal with a company (HubSpot's deals export holds no orders)."""
    won = opportunities[(opportunities[STATUS] == STATUS_WON)
                        & opportunities[CUSTOMER_ID].notna()]
    return pd.DataFrame({
        ORDER_ID: won[OPPORTUNITY_ID],
        CUSTOMER_ID: won[CUSTOMER_ID],
        ORDER_DATE: won[CLOSE_DATE],
        AMOUNT: won[AMOUNT],
        OPPORTUNITY_ID: won[OPPORTUNITY_ID],
    }).reset_index(drop=True)


def _cells(frame: pd.DataFrame | None) -> Any:
    """Text cells with blank ones missing, as :func:`read_text_csv` reads them."""
    if frame is None:
        return None
    def blank(v: Any) -> bool:
        return v is None or (isinstance(v, str) and not v.strip()) or (
            isinstance(v, float) and v != v)

    return frame.astype(object).map(lambda v: np.nan if blank(v) else str(v)).astype(object)


def _nones(values: pd.Series) -> pd.Series:
    """Missing values as ``None`` (ids and names never ``nan``)."""
    out = values.astype(object).copy()
    out[values.isna()] = None
    return out


def hubspot_tables(deals: pd.DataFrame, companies: pd.DataFrame | None = None,
                   users: pd.DataFrame | None = None, teams: pd.DataFrame | None = None,
                   options: Mapping[str, Any] | None = None) -> ImportResult:
    """The exports (text cells) -> opportunities, stage_history, orders, customers and org."""
    deals, companies, users, teams = (_cells(f) for f in (deals, companies, users, teams))
    read = [plural(len(deals), "deal")]
    read += [f"{len(f):,} {what}" for f, what in ((companies, "companies"), (users, "users"),
                                                   (teams, "teams")) if f is not None]
    notes = [f"read {', '.join(read)} (HubSpot export)"]
    opportunities, opp_notes = hubspot_opportunities(deals, companies, _Options.of(options))
    notes += opp_notes
    by_email = _names_by_email(users)
    emails = opportunities[OWNER].str.lower().isin(list(by_email.index))
    if emails.any():
        opportunities[OWNER] = opportunities[OWNER].where(
            ~emails, opportunities[OWNER].str.lower().map(by_email))
        notes.append(f"{plural(int(emails.sum()), 'deal')} name their owner by email: the "
                     "user's name from the users export is used")
    frames = {OPPORTUNITIES: opportunities}
    history = hubspot_stage_history(deals, opportunities[OPPORTUNITY_ID].set_axis(deals.index))
    if history is None:
        notes.append('no Date entered "<stage> (<pipeline>)" columns: no stage_history')
    else:
        frames[STAGE_HISTORY] = history
        notes.append(f"stage_history: {len(history):,} stage entries of "
                     f"{history[OPPORTUNITY_ID].nunique():,} deals from the Date entered "
                     "columns (Date exited kept as exited_at)")
    customers, customer_notes = hubspot_customers(companies, opportunities)
    orders = hubspot_orders(opportunities)
    orphans = int(((opportunities[STATUS] == STATUS_WON)
                   & opportunities[CUSTOMER_ID].isna()).sum())
    notes += customer_notes
    notes.append(f"orders: {len(orders):,}, one per won deal with a company (order_id = Record "
                 f"ID, order_date = Close Date); {plural(orphans, 'won deal')} without a company "
                 "count as revenue on their close_date")
    frames[CUSTOMERS] = customers
    frames[ORDERS] = orders
    org, org_notes = hubspot_org(users, teams, opportunities[OWNER])
    notes += org_notes
    if org is not None:
        frames[ORG] = org
    return ImportResult(frames, notes)


SOURCE = _HubSpotSource(
    name="hubspot",
    description="HubSpot CRM exports, CSV or XLSX (deals with Date entered stage columns, "
    "companies, users with teams) -> opportunities, stage_history, orders (won deals), "
    "customers, org",
    files=("hubspot-crm-exports-all-deals-*.csv", "*deals*.csv", "*Deals*.csv"),
    beside=("*companies*.csv", "*users*.csv", "*teams*.csv (optional)"),
    read=read_hubspot,
)
