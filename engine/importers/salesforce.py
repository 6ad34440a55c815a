"""salesforce: the standard objects of a Salesforce org, as the API, Data Loader or Workbench
export them (one CSV per object, ``.csv`` or ``.csv.gz``, file names in any case).

- ``Opportunity`` (required): Id, AccountId, OwnerId, Name, StageName, Amount, CloseDate,
  CreatedDate, IsClosed, IsWon (Probability, ForecastCategoryName kept when present)
  -> ``opportunities``; status from IsClosed/IsWon.
- ``User`` (required): Id, Name (or FirstName/LastName), UserRoleId -> the owners' names.
- ``UserRole`` (optional): Id, Name, ParentRoleId -> ``org``: rep > team (the role above the
  rep's role) > region (the role above that); ``manager`` is the user holding the team role.
- ``OpportunityHistory`` or ``OpportunityFieldHistory`` (optional) -> ``stage_history`` and
  ``original_close_date`` (the first expected close date on record).
- ``Account`` (optional) -> ``customers``, named by the account's Name.
- ``Order`` (optional): AccountId, EffectiveDate, TotalAmount -> ``orders``. Without it, each
  won opportunity with an account becomes one order on its close date (as crm-sales does).

Record ids come in a case-sensitive 15-character form and an 18-character form (the same id
plus a 3-character checksum suffix); both name the same record, so ids are compared by their
first 15 characters. Names, never ids, appear in the output: owners by their user name,
customers by their account name (a name shared by several records gets the id appended).
Header names are matched case-insensitively (Data Loader writes them in capitals).
"""

from __future__ import annotations

from pathlib import Path

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
    MANAGER,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    ORIGINAL_CLOSE_DATE,
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
    "SOURCE",
    "id15",
    "read_salesforce",
    "sf_customers",
    "sf_opportunities",
    "sf_orders",
    "sf_org",
    "sf_stage_history",
    "sf_tables",
    "unique_names",
    "won_orders",
]

# Extra output columns kept from the export.
OPPORTUNITY_NAME = "opportunity_name"
PROBABILITY = "probability"
FORECAST_CATEGORY = "forecast_category"

OPPORTUNITY = "Opportunity"
USER = "User"
ROLE = "UserRole"
ACCOUNT = "Account"
HISTORY = "OpportunityHistory"
FIELD_HISTORY = "OpportunityFieldHistory"
ORDER = "Order"
OBJECTS = (OPPORTUNITY, USER, ROLE, ACCOUNT, HISTORY, FIELD_HISTORY, ORDER)
REQUIRED: dict[str, list[str]] = {
    OPPORTUNITY: ["Id", "OwnerId", "StageName", "Amount", "CloseDate", "CreatedDate"],
    USER: ["Id"],
    ROLE: ["Id", "Name", "ParentRoleId"],
    ACCOUNT: ["Id", "Name"],
    HISTORY: ["OpportunityId", "StageName", "CreatedDate"],
    FIELD_HISTORY: ["OpportunityId", "Field", "OldValue", "NewValue", "CreatedDate"],
    ORDER: ["AccountId", "EffectiveDate", "TotalAmount"],
}
# Every field read, in its API spelling: headers are renamed to these whatever their case.
FIELDS = (
    "Id", "AccountId", "OwnerId", "Name", "StageName", "Amount", "CloseDate", "CreatedDate",
    "IsClosed", "IsWon", "IsDeleted", "Probability", "ForecastCategoryName", "FirstName",
    "LastName", "UserRoleId", "ManagerId", "ParentRoleId", "Industry", "BillingCountry",
    "AnnualRevenue", "NumberOfEmployees", "ParentId", "YearStarted", "OpportunityId", "Field",
    "OldValue", "NewValue", "EffectiveDate", "TotalAmount", "OrderNumber", "CurrencyIsoCode",
)
NO_ROLE = "(no role)"
TRUE = frozenset({"true", "1", "yes"})
FALSE = frozenset({"false", "0", "no", ""})


# The 18-character id's suffix: one character per 5-character chunk of the 15-character id,
# whose bits say which of the chunk's characters are capitals.
CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def _short(value: object) -> object:
    """One 18-character id -> its 15-character form, letter case restored from the suffix (so
    an id whose case a spreadsheet changed still names its record)."""
    if not isinstance(value, str) or len(value) != 18:
        return value
    head, suffix = value[:15], value[15:].upper()
    if any(c not in CHECKSUM for c in suffix):
        return head
    chars = []
    for i, c in enumerate(head):
        upper = CHECKSUM.index(suffix[i // 5]) >> (i % 5) & 1
        chars.append(c.upper() if upper else c.lower())
    return "".join(chars)


def id15(values: pd.Series) -> pd.Series:
    """Salesforce ids in their 15-character form: an 18-character id loses its checksum suffix."""
    return as_id(values).map(_short)


def unique_names(ids: pd.Series, names: pd.Series) -> pd.Series:
    """Display names per record: the name, ``name (id)`` when several records share it, the id
    when the record has no name."""
    text = as_id(names)
    shared = text.notna() & text.duplicated(keep=False)
    out = text.where(~shared, text + " (" + ids.astype(str) + ")")
    return out.where(out.notna(), ids)


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    known = {f.lower(): f for f in FIELDS}
    return frame.rename(columns={c: known.get(c.lower(), c) for c in frame.columns})


def _flag(values: pd.Series, what: str) -> pd.Series:
    text = values.fillna("").str.strip().str.lower()
    bad = ~text.isin(TRUE | FALSE)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum()):,} value(s) are not true/false, "
                         f"e.g. {examples(values[bad])}")
    return text.isin(TRUE)


def _objects(folder: Path) -> dict[str, Path]:
    """Object name -> its file in ``folder`` (``Opportunity.csv``, ``opportunity.csv.gz``...)."""
    found: dict[str, Path] = {}
    by_lower = {o.lower(): o for o in OBJECTS}
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        for ext in (".csv.gz", ".csv"):
            if name.endswith(ext) and path.is_file():
                obj = by_lower.get(name[: -len(ext)])
                if obj is not None:
                    found.setdefault(obj, path)
    return found


def read_salesforce(opportunity_path: Path) -> ImportResult:
    """Opportunity.csv and the object files beside it -> the tables (see :func:`sf_tables`)."""
    folder = opportunity_path.parent
    paths = _objects(folder)
    paths[OPPORTUNITY] = opportunity_path
    if USER not in paths:
        raise ValueError(f"User.csv is missing in {folder}: the salesforce import needs it to "
                         "name the opportunity owners")
    frames: dict[str, pd.DataFrame] = {}
    for obj, path in paths.items():
        frame, _ = read_text_csv(path)
        frame = _canonical(frame)
        require_columns(frame, REQUIRED[obj], path.name)
        frames[obj] = frame
    return sf_tables(frames)


def _live(frame: pd.DataFrame, obj: str, notes: list[str]) -> pd.DataFrame:
    """Rows not in the recycle bin (an "Export All" includes deleted records)."""
    if "IsDeleted" not in frame.columns:
        return frame
    deleted = _flag(frame["IsDeleted"], f"{obj}: IsDeleted")
    if deleted.any():
        notes.append(f"{obj}: dropped {plural(int(deleted.sum()), 'deleted record')} "
                     "(IsDeleted = true)")
    return frame.loc[~deleted]


def sf_tables(objects: dict[str, pd.DataFrame]) -> ImportResult:
    """The object frames (text cells, API field names) -> quotacast tables."""
    notes: list[str] = []
    frames = {obj: _live(frame, obj, notes) for obj, frame in objects.items()}
    read = ", ".join(f"{len(frames[o]):,} {o}" for o in OBJECTS if o in frames)
    notes.insert(0, f"read {read} records")
    long_ids = sum(int(frame[c].fillna("").str.strip().str.len().eq(18).sum())
                   for frame in frames.values()
                   for c in frame.columns if c == "Id" or c.endswith("Id"))
    notes.append(f"ids compared by their 15-character form ({long_ids:,} ids of 18 characters "
                 "shortened: the last 3 characters are a checksum)")
    users = frames[USER].assign(Id=id15(frames[USER]["Id"]))
    if "Name" not in users.columns:
        blank = pd.Series("", index=users.index)
        first = users["FirstName"].fillna("") if "FirstName" in users.columns else blank
        last = users["LastName"].fillna("") if "LastName" in users.columns else blank
        users = users.assign(Name=(first + " " + last).str.strip())
    user_name = pd.Series(unique_names(users["Id"], users["Name"]).to_numpy(), index=users["Id"])
    accounts = frames.get(ACCOUNT)
    account_name = (pd.Series(dtype=object) if accounts is None else
                    pd.Series(unique_names(id15(accounts["Id"]), accounts["Name"]).to_numpy(),
                              index=id15(accounts["Id"])))
    opps, opp_notes = sf_opportunities(frames[OPPORTUNITY], user_name, account_name)
    notes += opp_notes
    out: dict[str, pd.DataFrame] = {}
    history, first_close, history_notes = sf_stage_history(frames, opps)
    notes += history_notes
    if history is not None:
        # No close date on record before the current one: it never moved.
        opps[ORIGINAL_CLOSE_DATE] = opps[OPPORTUNITY_ID].map(first_close).fillna(opps[CLOSE_DATE])
    org, org_notes = sf_org(users, frames.get(ROLE), user_name, opps)
    notes += org_notes
    orders = None
    if ORDER in frames:
        orders, order_notes = sf_orders(frames[ORDER], account_name, opps)
        notes += order_notes
    else:
        orders = won_orders(opps)
        orphans = int(((opps[STATUS] == STATUS_WON) & opps[CUSTOMER_ID].isna()).sum())
        notes.append(f"no Order file: orders = the {len(orders):,} won opportunities with an "
                     "account (order_id = opportunity_id, order_date = close_date, amount = "
                     f"Amount); {plural(orphans, 'won deal')} without an account stay won "
                     "opportunities, which count as revenue on their close date")
    if accounts is not None:
        customers, customer_notes = sf_customers(accounts, account_name, user_name, opps, org,
                                                 orders)
        out[CUSTOMERS] = customers
        notes += customer_notes
    if orders is not None:
        out[ORDERS] = orders
    out[OPPORTUNITIES] = opps
    if history is not None:
        out[STAGE_HISTORY] = history
    if org is not None:
        out[ORG] = org
    return ImportResult(out, notes)


def sf_opportunities(opp: pd.DataFrame, user_name: pd.Series, account_name: pd.Series
                     ) -> tuple[pd.DataFrame, list[str]]:
    """Opportunity rows -> the opportunities table, owners and accounts by name."""
    notes: list[str] = []
    ids = id15(opp["Id"])
    if ids.isna().any() or ids.duplicated().any():
        raise ValueError(f"{OPPORTUNITY}: Id must be set and unique (after shortening 18-character "
                         f"ids), e.g. {examples(opp.loc[ids.isna() | ids.duplicated(), 'Id'])}")
    owner_id = id15(opp["OwnerId"])
    owner = owner_id.map(user_name)
    unknown = owner.isna()
    if unknown.any():
        notes.append(f"{plural(int(owner_id[unknown].nunique()), 'owner')} of "
                     f"{plural(int(unknown.sum()), 'opportunity')} not in {USER}: named by their "
                     f"id, e.g. {examples(owner_id[unknown])}")
    owner = owner.where(~unknown, owner_id)
    account_id = id15(opp["AccountId"]) if "AccountId" in opp.columns else pd.Series(
        None, index=opp.index, dtype=object)
    customer = account_id.map(account_name)
    no_name = account_id.notna() & customer.isna()
    if no_name.any() and len(account_name):
        notes.append(f"{plural(int(account_id[no_name].nunique()), 'account')} named by "
                     f"{plural(int(no_name.sum()), 'opportunity')} not in {ACCOUNT}: named by "
                     f"their id, e.g. {examples(account_id[no_name])}")
    customer = customer.where(~no_name, account_id)
    if "IsClosed" in opp.columns and "IsWon" in opp.columns:
        closed = _flag(opp["IsClosed"], f"{OPPORTUNITY}: IsClosed")
        won = _flag(opp["IsWon"], f"{OPPORTUNITY}: IsWon")
        how = "status from IsClosed/IsWon"
    else:
        stage = opp["StageName"].fillna("").str.strip().str.lower()
        won = stage.eq("closed won")
        closed = won | stage.eq("closed lost")
        how = "no IsClosed/IsWon columns: status from StageName 'Closed Won'/'Closed Lost'"
    status = pd.Series(STATUS_OPEN, index=opp.index).mask(closed, STATUS_LOST).mask(
        closed & won, STATUS_WON)
    amount = to_numbers(opp["Amount"], f"{OPPORTUNITY}: Amount")
    created = to_iso_dates(opp["CreatedDate"], f"{OPPORTUNITY}: CreatedDate").dt.normalize()
    close = to_iso_dates(opp["CloseDate"], f"{OPPORTUNITY}: CloseDate").dt.normalize()
    backdated = close < created
    if backdated.any():
        notes.append(f"{plural(int(backdated.sum()), 'opportunity')} close before their "
                     "CreatedDate (entered after the fact): created_at set to the close date")
    created = created.where(~backdated, close)
    if amount.isna().any():
        notes.append(f"{plural(int(amount.isna().sum()), 'opportunity')} without Amount: "
                     "amount 0")
    if "CurrencyIsoCode" in opp.columns and opp["CurrencyIsoCode"].nunique() > 1:
        codes = opp["CurrencyIsoCode"].value_counts()
        notes.append(f"amounts are in {len(codes)} currencies ({', '.join(codes.index)}): "
                     "kept as exported, not converted; quotacast sums them as one currency")
    counts = status.value_counts()
    notes.append(f"opportunities: {len(opp):,} ({counts.get(STATUS_WON, 0):,} won, "
                 f"{counts.get(STATUS_LOST, 0):,} lost, {counts.get(STATUS_OPEN, 0):,} open); "
                 f"{how}; stage = StageName; owner = the owner's user Name; customer_id = the "
                 "account's Name")
    frame = pd.DataFrame({
        OPPORTUNITY_ID: ids,
        OWNER: owner,
        CREATED_AT: created,
        CLOSE_DATE: close,
        STAGE: opp["StageName"].str.strip(),
        STATUS: status,
        AMOUNT: amount.fillna(0.0),
        CUSTOMER_ID: customer,
        OPPORTUNITY_NAME: opp["Name"].str.strip() if "Name" in opp.columns else None,
    })
    if "Probability" in opp.columns:
        frame[PROBABILITY] = to_numbers(opp["Probability"], f"{OPPORTUNITY}: Probability")
    if "ForecastCategoryName" in opp.columns:
        frame[FORECAST_CATEGORY] = opp["ForecastCategoryName"].str.strip()
    return frame.reset_index(drop=True), notes


def sf_stage_history(frames: dict[str, pd.DataFrame], opps: pd.DataFrame
                     ) -> tuple[pd.DataFrame | None, pd.Series, list[str]]:
    """Stage and close-date changes from OpportunityHistory (preferred) or
    OpportunityFieldHistory.

    Returns the stage_history rows: one per change of stage or of expected close date, each
    with the stage and the close date in effect from then on (``close_date``: what lets close
    date slips be measured; a row that changed neither, e.g. an amount change, is left out);
    the first close date on record per opportunity id; and notes. No rows (``None``) without
    either file.
    """
    known = opps[OPPORTUNITY_ID]
    if HISTORY in frames:
        src = frames[HISTORY]
        events = pd.DataFrame({
            OPPORTUNITY_ID: id15(src["OpportunityId"]),
            STAGE: src["StageName"].str.strip(),
            ENTERED_AT: to_iso_dates(src["CreatedDate"], f"{HISTORY}: CreatedDate"),
            CLOSE_DATE: (to_iso_dates(src["CloseDate"], f"{HISTORY}: CloseDate").dt.normalize()
                         if "CloseDate" in src.columns else pd.NaT),
        })
        what = f"{HISTORY} (a row per change of stage, amount or close date)"
    elif FIELD_HISTORY in frames:
        events = _field_events(frames[FIELD_HISTORY], opps)
        what = f"{FIELD_HISTORY} (rows with Field StageName and CloseDate)"
    else:
        return None, pd.Series(dtype="datetime64[ns]"), [
            "no OpportunityHistory or OpportunityFieldHistory file: no stage_history"]
    notes: list[str] = []
    orphan = ~events[OPPORTUNITY_ID].isin(known)
    if orphan.any():
        notes.append(f"stage_history: dropped {plural(int(orphan.sum()), 'row')} of "
                     f"opportunities not in {OPPORTUNITY}")
    rows = events.loc[~orphan].sort_values([OPPORTUNITY_ID, ENTERED_AT], kind="stable")
    by_deal = rows.groupby(OPPORTUNITY_ID, sort=False)
    rows = rows.assign(**{STAGE: by_deal[STAGE].ffill(), CLOSE_DATE: by_deal[CLOSE_DATE].ffill()})
    # Changes saved together (stage and close date in one edit) are one row: the state after it.
    rows = rows.drop_duplicates([OPPORTUNITY_ID, ENTERED_AT], keep="last")
    by_deal = rows.groupby(OPPORTUNITY_ID, sort=False)
    unchanged = (rows[STAGE].eq(by_deal[STAGE].shift())
                 & rows[CLOSE_DATE].eq(by_deal[CLOSE_DATE].shift()))
    rows = rows.loc[~unchanged & rows[STAGE].notna()]
    missing = ~known.isin(rows[OPPORTUNITY_ID])
    if missing.any():
        notes.append(f"{plural(int(missing.sum()), 'opportunity')} without history: their "
                     "current stage entered on their created date")
        rows = pd.concat([rows, pd.DataFrame({OPPORTUNITY_ID: known[missing],
                                              STAGE: opps.loc[missing, STAGE],
                                              ENTERED_AT: opps.loc[missing, CREATED_AT],
                                              CLOSE_DATE: opps.loc[missing, CLOSE_DATE]})],
                         ignore_index=True)
    rows = rows.sort_values([OPPORTUNITY_ID, ENTERED_AT], kind="stable").reset_index(drop=True)
    original = rows.dropna(subset=[CLOSE_DATE]).drop_duplicates(OPPORTUNITY_ID).set_index(
        OPPORTUNITY_ID)[CLOSE_DATE]
    current = pd.Series(opps[CLOSE_DATE].to_numpy(), index=known)
    moved = int((original != current.reindex(original.index)).sum())
    stages = int(rows[STAGE].ne(rows.groupby(OPPORTUNITY_ID)[STAGE].shift()).sum())
    notes.append(f"stage_history: {len(rows):,} rows ({stages:,} stages entered, the rest close "
                 f"date moves), from {what}; close_date = the expected close recorded at each "
                 "change; original_close_date = the first close date on record "
                 f"({moved:,} deals closed or expected on another date since)")
    return rows[[OPPORTUNITY_ID, STAGE, ENTERED_AT, CLOSE_DATE]], original, notes


def _field_events(src: pd.DataFrame, opps: pd.DataFrame) -> pd.DataFrame:
    """OpportunityFieldHistory rows -> events (stage or close date changed, the other empty),
    plus each deal's state at creation: the old values of its first changes, else its current
    values."""
    opp_id = id15(src["OpportunityId"])
    at = to_iso_dates(src["CreatedDate"], f"{FIELD_HISTORY}: CreatedDate")
    field = src["Field"].str.strip()
    is_stage, is_close = field.eq("StageName"), field.eq("CloseDate")
    stage_rows = pd.DataFrame({OPPORTUNITY_ID: opp_id[is_stage], ENTERED_AT: at[is_stage],
                               "old": src.loc[is_stage, "OldValue"].str.strip(),
                               "new": src.loc[is_stage, "NewValue"].str.strip()})
    close_rows = pd.DataFrame({
        OPPORTUNITY_ID: opp_id[is_close], ENTERED_AT: at[is_close],
        "old": to_iso_dates(src.loc[is_close, "OldValue"],
                            f"{FIELD_HISTORY}: OldValue").dt.normalize(),
        "new": to_iso_dates(src.loc[is_close, "NewValue"],
                            f"{FIELD_HISTORY}: NewValue").dt.normalize(),
    })

    def first_old(rows: pd.DataFrame) -> pd.Series:
        first = rows.sort_values(ENTERED_AT, kind="stable").drop_duplicates(OPPORTUNITY_ID)
        return pd.Series(first["old"].to_numpy(), index=first[OPPORTUNITY_ID])

    ids = opps[OPPORTUNITY_ID]
    initial = pd.DataFrame({
        OPPORTUNITY_ID: ids,
        STAGE: ids.map(first_old(stage_rows)).fillna(opps[STAGE]),
        ENTERED_AT: opps[CREATED_AT],
        CLOSE_DATE: ids.map(first_old(close_rows)).fillna(opps[CLOSE_DATE]),
    })
    return pd.concat([
        initial,
        pd.DataFrame({OPPORTUNITY_ID: stage_rows[OPPORTUNITY_ID], STAGE: stage_rows["new"],
                      ENTERED_AT: stage_rows[ENTERED_AT], CLOSE_DATE: pd.NaT}),
        pd.DataFrame({OPPORTUNITY_ID: close_rows[OPPORTUNITY_ID], STAGE: None,
                      ENTERED_AT: close_rows[ENTERED_AT], CLOSE_DATE: close_rows["new"]}),
    ], ignore_index=True)


def sf_org(users: pd.DataFrame, roles: pd.DataFrame | None, user_name: pd.Series,
           opps: pd.DataFrame) -> tuple[pd.DataFrame | None, list[str]]:
    """The org table from the role hierarchy: rep > team (role above) > region (role above)."""
    if roles is None or "UserRoleId" not in users.columns:
        return None, ["no UserRole file (or no UserRoleId in User): no org table"]
    role_ids = id15(roles["Id"])
    role_name = dict(zip(role_ids, unique_names(role_ids, roles["Name"]), strict=True))
    parent: dict[str, str | None] = dict(zip(role_ids, id15(roles["ParentRoleId"]),
                                             strict=True))
    names: dict[str, str] = {str(k): str(v) for k, v in user_name.items()}
    user_role: dict[str, str | None] = dict(zip(users["Id"], id15(users["UserRoleId"]),
                                                strict=True))
    leaf_roles = set(role_name) - {p for p in parent.values() if p is not None}
    owners = set(opps[OWNER])
    holders: dict[str, str] = {}
    for uid, rid in sorted(user_role.items(), key=lambda item: names[item[0]]):
        if rid is not None:
            holders.setdefault(rid, names[uid])
    manager_of: dict[str, str | None] = (
        dict(zip(users["Id"], id15(users["ManagerId"]).map(names), strict=True))
        if "ManagerId" in users.columns else {})
    rows: list[tuple[str, str, str, str | None]] = []
    for uid, rid in user_role.items():
        if names[uid] not in owners and rid not in leaf_roles:
            continue
        if rid is None or rid not in role_name:
            rows.append((names[uid], NO_ROLE, NO_ROLE, manager_of.get(uid)))
            continue
        team = parent.get(rid) or rid
        team = team if team in role_name else rid
        region = parent.get(team) or team
        region = region if region in role_name else team
        manager = holders.get(team) if team != rid else None
        rows.append((names[uid], role_name[team], role_name[region],
                     manager or manager_of.get(uid)))
    org = pd.DataFrame(rows, columns=[REP, TEAM, REGION, MANAGER])
    # Owners with no User record at all (named by id) still need a place in the org.
    strangers = sorted(owners - set(org[REP]))
    if strangers:
        org = pd.concat([org, pd.DataFrame({REP: strangers, TEAM: NO_ROLE, REGION: NO_ROLE,
                                            MANAGER: None})], ignore_index=True)
    org = org.sort_values(REP).drop_duplicates(REP).reset_index(drop=True)
    no_role = int((org[TEAM] == NO_ROLE).sum())
    notes = [f"org: {len(org):,} reps (opportunity owners and users in roles with no role "
             f"below) in {org[TEAM].nunique():,} teams and {org[REGION].nunique():,} regions; "
             "team = the UserRole above the rep's role, region = the role above that, "
             "manager = the user holding the team role"]
    if no_role:
        notes.append(f"{plural(no_role, 'rep')} without a known role: team and region "
                     f"'{NO_ROLE}'")
    return org, notes


def sf_orders(order: pd.DataFrame, account_name: pd.Series, opps: pd.DataFrame
              ) -> tuple[pd.DataFrame, list[str]]:
    """Order rows -> orders, by account name, linked to their opportunity when it is known."""
    account_id = id15(order["AccountId"])
    customer = account_id.map(account_name)
    customer = customer.where(customer.notna(), account_id)
    opp_id = (id15(order["OpportunityId"]) if "OpportunityId" in order.columns
              else pd.Series(None, index=order.index, dtype=object))
    unknown = opp_id.notna() & ~opp_id.isin(opps[OPPORTUNITY_ID])
    opp_id = opp_id.mask(unknown)
    number = order["OrderNumber"] if "OrderNumber" in order.columns else order.get("Id")
    frame = pd.DataFrame({
        ORDER_ID: as_id(number) if number is not None else None,
        CUSTOMER_ID: customer,
        ORDER_DATE: to_iso_dates(order["EffectiveDate"], f"{ORDER}: EffectiveDate").dt.normalize(),
        AMOUNT: to_numbers(order["TotalAmount"], f"{ORDER}: TotalAmount").fillna(0.0),
        OPPORTUNITY_ID: opp_id,
    })
    no_account = frame[CUSTOMER_ID].isna()
    notes = [f"orders: {int((~no_account).sum()):,} from {ORDER} (order_date = EffectiveDate, "
             "amount = TotalAmount)"]
    if no_account.any():
        notes.append(f"{ORDER}: dropped {plural(int(no_account.sum()), 'order')} without "
                     "AccountId")
    if unknown.any():
        notes.append(f"{plural(int(unknown.sum()), 'order')} name an opportunity not in "
                     f"{OPPORTUNITY}: kept unlinked")
    return frame.loc[~no_account].reset_index(drop=True), notes


def won_orders(opps: pd.DataFrame) -> pd.DataFrame:
    """One order per won opportunity that names an account, linked back by opportunity_id."""
    won = opps[(opps[STATUS] == STATUS_WON) & opps[CUSTOMER_ID].notna()]
    return pd.DataFrame({
        ORDER_ID: won[OPPORTUNITY_ID],
        CUSTOMER_ID: won[CUSTOMER_ID],
        ORDER_DATE: won[CLOSE_DATE],
        AMOUNT: won[AMOUNT],
        OPPORTUNITY_ID: won[OPPORTUNITY_ID],
    }).reset_index(drop=True)


def sf_customers(accounts: pd.DataFrame, account_name: pd.Series, user_name: pd.Series,
                 opps: pd.DataFrame, org: pd.DataFrame | None, orders: pd.DataFrame | None
                 ) -> tuple[pd.DataFrame, list[str]]:
    """Account rows -> customers named by account name; accounts referenced but not exported
    are added by id."""
    ids = id15(accounts["Id"])
    reps = set(org[REP]) if org is not None else set(opps[OWNER])
    by_deals = dominant(opps.dropna(subset=[CUSTOMER_ID]), CUSTOMER_ID, OWNER)
    name = account_name.reindex(ids).to_numpy()
    owner = (id15(accounts["OwnerId"]).map(user_name) if "OwnerId" in accounts.columns
             else pd.Series(None, index=accounts.index, dtype=object))
    owner = owner.where(owner.isin(reps), pd.Series(name, index=accounts.index).map(by_deals))

    def optional(column: str, number: bool = False) -> pd.Series:
        if column not in accounts.columns:
            return pd.Series(float("nan") if number else None, index=accounts.index)
        if number:
            return to_numbers(accounts[column], f"{ACCOUNT}: {column}")
        return as_id(accounts[column])

    parent = optional("ParentId")
    customers = pd.DataFrame({
        CUSTOMER_ID: name,
        ACCOUNT_MANAGER: owner.to_numpy(),
        REGION: optional("BillingCountry").to_numpy(),
        SEGMENT: optional("Industry").to_numpy(),
        YEAR_ESTABLISHED: optional("YearStarted", number=True).to_numpy(),
        ANNUAL_REVENUE: optional("AnnualRevenue", number=True).to_numpy(),
        EMPLOYEES: optional("NumberOfEmployees", number=True).to_numpy(),
        SUBSIDIARY_OF: id15(parent).map(account_name).to_numpy(),
    })
    named = [opps[CUSTOMER_ID]] + ([orders[CUSTOMER_ID]] if orders is not None else [])
    extra = sorted(set(pd.concat(named).dropna()) - set(customers[CUSTOMER_ID]))
    notes = [f"customers: {len(customers):,} accounts by Name; segment = Industry, region = "
             "BillingCountry, annual_revenue, employees, year_established and subsidiary_of "
             "kept; account_manager = the account owner when a rep, else the rep with most "
             "deals with it"]
    if extra:
        customers = pd.concat([customers, pd.DataFrame({CUSTOMER_ID: extra})], ignore_index=True)
        notes.append(f"{plural(len(extra), 'account')} named by opportunities or orders but "
                     f"not in {ACCOUNT}: added by id")
    return customers, notes


SOURCE = Source(
    name="salesforce",
    description="Salesforce standard objects (API / Data Loader CSV exports) -> opportunities "
    "(status from IsClosed/IsWon), stage_history (OpportunityHistory or "
    "OpportunityFieldHistory), customers (Account), org (User and UserRole hierarchy), orders "
    "(Order, else one per won deal)",
    files=("Opportunity.csv", "Opportunity.csv.gz", "opportunity.csv", "opportunity.csv.gz",
           "OPPORTUNITY.csv"),
    beside=("User.csv", "optionally UserRole.csv", "Account.csv",
            "OpportunityHistory.csv or OpportunityFieldHistory.csv", "Order.csv (any case, "
            ".csv or .csv.gz)"),
    read=read_salesforce,
)
