"""Parsing raw tables into typed frames and checking what their values can be.

Every cell goes through the same parsing whatever the source stored (CSV text, Parquet or SQL
types): a boolean, a date or a word in an amount column is "not a number", a number in a date
column is read as the text it prints as. Then the table's rules (engine.schemas) are checked
column by column with vectorised masks, each kind of problem listing a few example lines and a
count (:func:`engine.io.problems.cell_problems`):

- numbers are finite and within +-MAX_ABS_NUMBER;
- dates lie after EARLIEST_DATE, and event dates (everything but the forward-looking columns,
  and the close date of a deal still open) no later than today + FUTURE_SLACK_DAYS;
- required cells are filled, ids unique, declared pandera checks hold, ordered dates are in
  order (a deal closes after it is created), each child has one parent (a team, one region);
- a column named ``amount.1`` beside ``amount`` (how pandas names a second ``amount``) and NUL
  bytes in text are problems;
- references between tables resolve.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection

import numpy as np
import pandas as pd

from engine.io.problems import MAX_EXAMPLES, Problem, cell_problems
from engine.io.read import own_columns
from engine.io.tables import Tables, empty_table
from engine.schemas import (
    ACCOUNT_MANAGER,
    CLOSE_DATE,
    COMMITS,
    COMPANY_KEY,
    CUSTOMER_ID,
    CUSTOMERS,
    EARLIEST_DATE,
    FORWARD_LOOKING_DATES,
    FUTURE_SLACK_DAYS,
    HIERARCHY_LEVELS,
    INTERACTIONS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    MAX_ABS_NUMBER,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDERS,
    ORG,
    OWNER,
    RECEIVABLES,
    REP,
    SEVERITY,
    SEVERITY_WORDS,
    STAGE_HISTORY,
    STATUS,
    STATUS_OPEN,
    TABLES,
    TARGETS,
    TableSpec,
)

__all__ = [
    "BAD_DATE",
    "MISSING_COLUMN",
    "MISSING_TABLE",
    "NO_SUCH_NODE",
    "cross_table_problems",
    "derive_customers",
    "latest_event_date",
    "parse_table",
    "suspect_cells",
    "validate_tables",
]

BAD_DATE = "unparseable date, expected ISO 8601 like 2017-08-31"
MISSING_COLUMN = "missing required column"
MISSING_TABLE = "required table is missing"
NOT_A_NUMBER = "not a number"
NOT_FINITE = "not a finite number"
TOO_LARGE = f"beyond +-{MAX_ABS_NUMBER:,.0f}, not a plausible amount"
TOO_EARLY = f"date before {EARLIEST_DATE}"
OUT_OF_RANGE = "date out of range"
_NS_RANGE = (pd.Timestamp.min, pd.Timestamp.max)


def latest_event_date(today: pd.Timestamp | None = None) -> pd.Timestamp:
    """The last day an event may be dated: today (UTC) plus the slack."""
    now = pd.Timestamp.now(tz="UTC").tz_localize(None) if today is None else today
    return now.normalize() + pd.Timedelta(days=FUTURE_SLACK_DAYS)


def _future_check(latest: pd.Timestamp) -> str:
    return f"event dated in the future (after {latest:%Y-%m-%d})"


def _shown(value: object) -> str:
    return str(value).replace("\x00", "\\x00")


def _day(value: object) -> str:
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    return f"{stamp:%Y-%m-%d}" if stamp == stamp.normalize() else str(stamp)


# --- parsing cells ---------------------------------------------------------------------------


def _as_text(values: pd.Series) -> pd.Series:
    """Cells as stripped strings, missing as NaN; numbers stored by Parquet/SQL (1.0) -> '1'.

    Clean string columns (the common case, millions of ids) are returned as they are: the
    strip runs as one Arrow kernel and only a column that changes is rebuilt.
    """
    if pd.api.types.is_float_dtype(values):
        whole = values.dropna()
        if (whole == whole.round()).all() and np.isfinite(whole).all():
            values = values.astype("Int64")
    elif values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in (
        "string", "empty"
    ):
        values = values.map(str, na_action="ignore")
    arrow = values.astype("string[pyarrow]")
    stripped = arrow.str.strip()
    blank = (stripped == "").fillna(False)
    changed = (stripped != arrow).fillna(False) | blank
    clean = not changed.any() and pd.api.types.infer_dtype(values, skipna=True) in (
        "string",
        "empty",
    )
    text = values if clean else stripped.mask(blank).astype(object)
    # Missing text is NaN whatever the source (read_csv's convention; SQL drivers give None).
    missing = text.isna()
    return _with_nan(text, missing.to_numpy()) if missing.any() else text


def _with_nan(text: pd.Series, missing: np.ndarray) -> pd.Series:
    """``text`` with NaN where ``missing``: the one ``np.nan`` object in every such cell
    (``Series.where`` would make a float object per cell: 24 bytes each, 0.2 GiB for the 9M
    orders without a deal on the `large` demo company)."""
    cells = text.to_numpy(dtype=object, copy=True)
    cells[missing] = np.nan
    return pd.Series(cells, index=text.index, name=text.name)


def _is_text(values: pd.Series) -> bool:
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in (
        "string", "empty"
    )


def _retry_stripped(
    values: pd.Series, parsed: pd.Series, parse: Callable[[pd.Series], pd.Series]
) -> pd.Series:
    """Parse again, stripped, the cells that failed: most cells parse at once, untouched."""
    failed = values.notna() & parsed.isna()
    if failed.any():
        parsed = parsed.copy()
        parsed[failed] = parse(values[failed].astype(str).str.strip()).to_numpy()
    return parsed


def _to_dates(text: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    return parsed.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")


def _parse_dates(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Dates, and the typed dates beyond what a timestamp holds (years before 1677 or after
    2262)."""
    none = pd.Series(False, index=values.index)
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
        if parsed.dt.tz is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        outside = parsed.notna() & ((parsed < _NS_RANGE[0]) | (parsed > _NS_RANGE[1]))
        if outside.any():
            parsed = parsed.where(~outside)
        return parsed.astype("datetime64[ns]"), outside
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in (
        "date", "datetime"
    ):
        try:
            return _to_dates(values), none
        except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
            values = values.map(str, na_action="ignore")
    text = values if _is_text(values) else _as_text(values)
    return _retry_stripped(text, _to_dates(text), _to_dates), none


def _to_numbers(text: pd.Series, words: dict[str, float] | None) -> pd.Series:
    if words:
        text = (
            text.astype(str).str.strip().str.lower().replace({k: str(v) for k, v in words.items()})
        )
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _parse_numbers(values: pd.Series, words: dict[str, float] | None = None) -> pd.Series:
    """Numbers; booleans, dates and words (but ``words``) are not numbers, as in a CSV file."""
    if pd.api.types.is_bool_dtype(values) or not (
        values.dtype == object or pd.api.types.is_numeric_dtype(values)
        or pd.api.types.is_string_dtype(values)
    ):
        return pd.Series(np.nan, index=values.index, dtype="float64")
    if pd.api.types.is_numeric_dtype(values):
        return pd.Series(values.to_numpy(dtype="float64", na_value=np.nan), index=values.index)
    text = values if _is_text(values) else values.map(str, na_action="ignore")
    parsed = _to_numbers(text, words)
    return _retry_stripped(text, parsed, lambda t: _to_numbers(t, words))


def _bad_cells(values: pd.Series, parsed: pd.Series) -> pd.Series:
    """Cells that hold something (not blank) yet did not parse."""
    bad = values.notna() & parsed.isna()
    if bad.any():
        filled = values[bad].astype(str).str.strip() != ""
        bad[bad] = filled.to_numpy(dtype=bool)
    return bad


def _nul_cells(values: pd.Series) -> pd.Series:
    """Text cells holding a NUL byte (CSV files are checked byte by byte when read)."""
    if values.dtype != object:
        return pd.Series(False, index=values.index)
    try:
        found = values.astype("string[pyarrow]").str.contains("\x00", regex=False)
    except (TypeError, ValueError):
        found = values.map(lambda v: isinstance(v, str) and "\x00" in v)
    return found.fillna(False).astype(bool)


def _second_copies(spec: TableSpec, columns: list[str]) -> list[Problem]:
    """``amount.1`` beside ``amount``: a column given twice, renamed by pandas on the way."""
    present = set(columns)
    problems = []
    for name in columns:
        base, dot, number = name.rpartition(".")
        if dot and number.isdecimal() and base in spec.columns and base in present:
            problems.append(Problem(spec.name, 1, name, "second copy of a column",
                                    f"{name} beside {base}"))
    return problems


def _match_case(spec: TableSpec, columns: list[str]) -> list[str]:
    """Columns named like the contract's but for case (``Amount``) take the contract's name,
    unless that name is also present as written."""
    wanted = {name.casefold(): name for name in spec.columns}
    present = set(columns)
    renamed = []
    for name in columns:
        proper = wanted.get(name.casefold())
        if proper is not None and proper != name and proper not in present:
            present.add(proper)
            name = proper
        renamed.append(name)
    return renamed


def _missing_column(spec: TableSpec, column: str, columns: list[str]) -> Problem:
    """A required column that is absent; "did you mean" a present column spelt nearly so."""
    others = [c for c in columns if c not in spec.columns]
    close = difflib.get_close_matches(column.casefold(), [c.casefold() for c in others], n=1,
                                      cutoff=0.75)
    listed = ", ".join(columns)
    if close:
        match = next(c for c in others if c.casefold() == close[0])
        listed = f"{match}: did you mean {column}? columns: {listed}"
    return Problem(spec.name, 1, column, MISSING_COLUMN, listed)


def parse_table(
    spec: TableSpec,
    raw: pd.DataFrame,
    may_be_empty: bool = False,
    latest: pd.Timestamp | None = None,
    copy: bool = True,
    skipped: Collection[str] = (),
) -> tuple[pd.DataFrame, list[Problem], dict[str, pd.Series]]:
    """Parse the contract's columns of one raw table; report missing columns and bad cells.

    A table without rows is a problem unless ``may_be_empty`` (orders beside opportunities).
    Returns the frame, the problems, and per column the cells that failed (already reported:
    not reported again as missing values). ``copy=False`` parses ``raw`` in place (its columns
    are replaced by the parsed ones): for a caller that drops ``raw`` afterwards, which then
    never holds two copies of a table. Columns in ``skipped`` were left out on purpose (not
    read): not reported missing even when required.
    """
    latest = latest_event_date() if latest is None else latest
    keep, columns, problems = own_columns(spec.name, list(raw.columns))
    columns = _match_case(spec, columns)
    if len(keep) < raw.shape[1] or list(raw.columns) != columns:
        raw = raw.iloc[:, keep].set_axis(columns, axis=1)
    problems += [
        _missing_column(spec, col, columns)
        for col in spec.required_columns
        if col not in raw.columns and col not in skipped
    ]
    problems += _second_copies(spec, columns)
    if raw.empty and not may_be_empty:
        problems.append(Problem(spec.name, 0, "-", "empty table", "no rows"))
    frame = raw.copy() if copy else raw
    failed: dict[str, pd.Series] = {}
    for name in columns:
        nul = _nul_cells(frame[name])
        if nul.any():
            problems += cell_problems(spec.name, name, "NUL byte in the cell", frame[name][nul],
                                      _shown)
            failed[name] = nul
    for name, col in spec.columns.items():
        if col.default is not None:
            frame[name] = (frame[name].where(_as_text(frame[name]).notna(), col.default)
                           if name in frame.columns else col.default)
        if name not in frame.columns:
            continue
        values = frame[name]
        if col.kind == "date":
            parsed, outside = _parse_dates(values)
            bad = _bad_cells(values, parsed) & ~outside
            problems += cell_problems(spec.name, name, BAD_DATE, values[bad])
            problems += cell_problems(spec.name, name, OUT_OF_RANGE, values[outside])
            problems += cell_problems(spec.name, name, TOO_EARLY, parsed[parsed < EARLIEST_DATE],
                                      _day)
            if name not in FORWARD_LOOKING_DATES:
                problems += cell_problems(spec.name, name, _future_check(latest),
                                          parsed[parsed > latest], _day)
            bad = bad | outside
        elif col.kind == "number":
            parsed = _parse_numbers(values, SEVERITY_WORDS if name == SEVERITY else None)
            bad = _bad_cells(values, parsed)
            problems += cell_problems(spec.name, name, NOT_A_NUMBER, values[bad], _shown)
            infinite = parsed.notna() & ~np.isfinite(parsed)
            huge = ~infinite & (parsed.abs() > MAX_ABS_NUMBER)
            problems += cell_problems(spec.name, name, NOT_FINITE, values[infinite], _shown)
            problems += cell_problems(spec.name, name, TOO_LARGE, values[huge], _shown)
            out = infinite | huge
            if out.any():
                parsed = parsed.mask(out)
            bad = bad | out
        else:
            frame[name] = _as_text(values)
            continue
        frame[name] = parsed
        failed[name] = bad | failed[name] if name in failed else bad
    return frame, problems, failed


def suspect_cells(table: str, frame: pd.DataFrame, latest: pd.Timestamp | None = None) -> list[str]:
    """The columns of an already-typed frame (a pruned read of Parquet, Delta or SQL, which
    skips the loader) holding a value :func:`parse_table` would refuse: a number not finite or
    beyond :data:`MAX_ABS_NUMBER`, a date before :data:`EARLIEST_DATE` or, for an event, in the
    future. Cheap and vectorised; the caller then reads the source through the loader to name
    every problem with its line."""
    latest = latest_event_date() if latest is None else latest
    spec = TABLES[table]
    found = []
    for name in frame.columns:
        column = spec.columns.get(name)
        if column is None:
            continue
        values = frame[name]
        if column.kind == "number":
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            present = ~np.isnan(numbers)
            if (~np.isfinite(numbers[present]) | (np.abs(numbers[present]) > MAX_ABS_NUMBER)).any():
                found.append(name)
        elif column.kind == "date" and pd.api.types.is_datetime64_any_dtype(values):
            refused = values < pd.Timestamp(EARLIEST_DATE)
            if name not in FORWARD_LOOKING_DATES:
                refused |= values > latest
            if refused.any():
                found.append(name)
    return found


# --- checking parsed tables ------------------------------------------------------------------


def check_table(
    spec: TableSpec,
    frame: pd.DataFrame,
    failed: dict[str, pd.Series],
    latest: pd.Timestamp | None = None,
) -> list[Problem]:
    """The table's rules on its parsed values: filled, unique, declared checks, date order,
    one parent per child. Cells in ``failed`` (not parsed) are not reported again."""
    latest = latest_event_date() if latest is None else latest
    problems: list[Problem] = []
    for name, col in spec.columns.items():
        if name not in frame.columns:
            continue
        values = frame[name]
        if not col.nullable:
            empty = values.isna()
            if name in failed:
                empty &= ~failed[name]
            problems += cell_problems(spec.name, name, "missing value", values[empty],
                                      lambda _: "empty")
        if (name,) in spec.unique:
            duplicated = values.notna() & values.duplicated(keep=False)
            problems += cell_problems(spec.name, name, "duplicate value", values[duplicated])
        for check in spec.checks.get(name, ()):
            result = check(values).check_output
            failing = result.index[~result.to_numpy(dtype=bool)]
            problems += cell_problems(spec.name, name, str(check.error), values.loc[failing])
    for columns in (u for u in spec.unique if len(u) > 1):
        if all(c in frame.columns for c in columns):
            rows = frame[list(columns)]
            repeated = rows.index[(rows.notna().all(axis=1) & rows.duplicated(keep=False))
                                  .to_numpy()]
            head = rows.loc[repeated[:MAX_EXAMPLES]]
            combos = pd.Series(["/".join(map(str, r)) for r in head.itertuples(index=False)],
                               index=head.index, dtype=object)
            problems += cell_problems(spec.name, ", ".join(columns), "duplicate combination",
                                      combos, total=len(repeated))
    for earlier, later in spec.ordered_dates:
        if earlier in frame.columns and later in frame.columns:
            wrong = frame.index[(frame[later] < frame[earlier]).to_numpy()]
            head = frame.loc[wrong[:MAX_EXAMPLES]]
            pairs = pd.Series([f"{_day(a)} < {_day(b)}" for a, b in
                               zip(head[later], head[earlier], strict=True)], index=head.index,
                              dtype=object)
            problems += cell_problems(spec.name, later, f"{later} before {earlier}", pairs,
                                      total=len(wrong))
    if spec.name == OPPORTUNITIES and {CLOSE_DATE, STATUS} <= set(frame.columns):
        closed = frame[STATUS].notna() & (frame[STATUS] != STATUS_OPEN)
        future = closed & (frame[CLOSE_DATE] > latest)
        problems += cell_problems(spec.name, CLOSE_DATE,
                                  f"closed deal dated in the future (after {latest:%Y-%m-%d})",
                                  frame.loc[future, CLOSE_DATE], _day)
    for child, parent in spec.one_parent:
        problems += _parent_problems(spec.name, frame, child, parent)
    return problems


def _parent_problems(table: str, frame: pd.DataFrame, child: str, parent: str) -> list[Problem]:
    """Rows of a child (team) that is given more than one parent (region)."""
    if child not in frame.columns or parent not in frame.columns:
        return []
    pairs = frame[[child, parent]].dropna()
    parents = pairs.groupby(child)[parent].unique()
    several = parents[parents.map(len) > 1]
    if several.empty:
        return []
    named = several.map(lambda p: ", ".join(sorted(map(str, p))))
    rows = pairs[pairs[child].isin(several.index)]
    shown = rows[child].astype(str) + ": " + rows[child].map(named)
    return cell_problems(table, parent, f"{child} under more than one {parent}", shown)


def _reference_problems(
    child: str, frame: pd.DataFrame, column: str, parent: str, known: pd.Series, what: str
) -> list[Problem]:
    if column not in frame.columns:
        return []
    values = frame[column]
    bad = values.notna() & ~values.isin(set(known.dropna()))
    return cell_problems(child, column, f"unknown {what} (not in {parent})", values[bad])


NO_SUCH_NODE = "no such node"


def _node_names(frames: dict[str, pd.DataFrame], level: str) -> set[object]:
    """The keys a target at ``level`` may name: the hierarchy's nodes of that level (from
    ``org``; without it, reps are the deals' owners and account managers and regions the
    customers' regions), or the values of a column of customers/orders."""
    found: set[object] = set()
    if level in (LEVEL_REGION, LEVEL_TEAM, LEVEL_REP):
        if ORG in frames:
            return set(pd.unique(frames[ORG][level].dropna()))
        sources = {LEVEL_REP: ((OPPORTUNITIES, OWNER), (CUSTOMERS, ACCOUNT_MANAGER)),
                   LEVEL_REGION: ((CUSTOMERS, LEVEL_REGION),), LEVEL_TEAM: ()}[level]
    else:
        sources = ((ORDERS, level), (CUSTOMERS, level))
    for table, column in sources:
        if table in frames and column in frames[table].columns:
            found.update(pd.unique(frames[table][column].dropna()))
    return found


def _target_problems(frames: dict[str, pd.DataFrame]) -> list[Problem]:
    """Levels that exist, the company's key, and a node for every target: a target that
    matches no node is a problem, never dropped silently."""
    targets = frames[TARGETS]
    allowed = set(HIERARCHY_LEVELS)
    for table in (CUSTOMERS, ORDERS):
        if table in frames:
            allowed |= set(frames[table].columns)
    levels = targets[LEVEL]
    problems = cell_problems(
        TARGETS,
        LEVEL,
        "unknown level, expected company, region, team, rep or a column of customers/orders",
        levels[levels.notna() & ~levels.isin(allowed)],
    )
    wrong_key = (levels == LEVEL_COMPANY) & (targets[KEY] != COMPANY_KEY)
    problems += cell_problems(TARGETS, KEY, f"company targets use key '{COMPANY_KEY}'",
                              targets.loc[wrong_key, KEY])
    unmatched = pd.Series(False, index=targets.index)
    for level in pd.unique(levels[levels.isin(allowed - {LEVEL_COMPANY})]):
        rows = levels == level
        unmatched |= rows & targets[KEY].notna() & ~targets[KEY].isin(_node_names(frames, level))
    shown = (levels[unmatched].astype(str) + " " + targets.loc[unmatched, KEY].astype(str))
    problems += cell_problems(TARGETS, KEY, NO_SUCH_NODE, shown)
    return problems


def cross_table_problems(frames: dict[str, pd.DataFrame], derived: frozenset[str]) -> list[Problem]:
    """References between tables: customers, opportunities and reps that must exist."""
    problems: list[Problem] = []
    if CUSTOMERS in frames and CUSTOMERS not in derived:
        known = frames[CUSTOMERS][CUSTOMER_ID]
        for child in (ORDERS, OPPORTUNITIES, INTERACTIONS, RECEIVABLES):
            if child in frames:
                problems += _reference_problems(
                    child, frames[child], CUSTOMER_ID, CUSTOMERS, known, "customer"
                )
    if OPPORTUNITIES in frames:
        known = frames[OPPORTUNITIES][OPPORTUNITY_ID]
        for child in (ORDERS, STAGE_HISTORY):
            if child in frames:
                problems += _reference_problems(
                    child, frames[child], OPPORTUNITY_ID, OPPORTUNITIES, known, "opportunity"
                )
    if ORG in frames:
        reps = frames[ORG][REP]
        if OPPORTUNITIES in frames:
            problems += _reference_problems(
                OPPORTUNITIES, frames[OPPORTUNITIES], OWNER, ORG, reps, "rep"
            )
        if CUSTOMERS in frames and CUSTOMERS not in derived:
            problems += _reference_problems(
                CUSTOMERS, frames[CUSTOMERS], ACCOUNT_MANAGER, ORG, reps, "rep"
            )
    if TARGETS in frames:
        problems += _target_problems(frames)
    if COMMITS in frames:
        reps = frames[COMMITS][REP]
        unknown = reps.notna() & ~reps.isin(_node_names(frames, LEVEL_REP))
        problems += cell_problems(COMMITS, REP, f"{NO_SUCH_NODE} (a commit is a rep's)",
                                  reps[unknown])
    return problems


def derive_customers(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The customers table when it is absent: every customer id named by another table."""
    ids = [
        frames[t][CUSTOMER_ID]
        for t in (ORDERS, OPPORTUNITIES, INTERACTIONS, RECEIVABLES)
        if t in frames and CUSTOMER_ID in frames[t].columns
    ]
    unique = pd.unique(pd.concat(ids, ignore_index=True).dropna()) if ids else []
    return pd.DataFrame({CUSTOMER_ID: pd.Series(unique, dtype=object)})


def _stands_in(spec: TableSpec, raw: dict[str, pd.DataFrame]) -> bool:
    """True when the table ``spec`` may be absent or empty: its stand-in table has rows."""
    other = raw.get(spec.optional_with) if spec.optional_with else None
    return other is not None and not other.empty


def _missing_table(name: str, spec: TableSpec) -> Problem:
    expected = f"expected {name}.csv, {name}.csv.gz or {name}.parquet"
    if spec.optional_with:
        expected += f", or rows in {spec.optional_with}"
    return Problem(name, 0, "-", MISSING_TABLE, expected)


def validate_tables(
    raw: dict[str, pd.DataFrame], today: pd.Timestamp | None = None, consume: bool = False,
    skipped: Collection[str] = (),
) -> tuple[Tables, list[Problem]]:
    """Parse and check raw tables; returns the typed tables and every problem found.

    ``orders`` may be absent or empty when ``opportunities`` has rows (won deals are then the
    revenue): an absent one becomes an empty typed frame, listed in ``derived``. ``today``
    (default: the clock, UTC) bounds event dates. ``consume`` empties ``raw`` as it goes, each
    raw table parsed in place and let go once parsed (the loader's raw frames are its own): a
    large table is then never held both raw and parsed. Columns in ``skipped`` were not read
    on purpose: not reported missing (:func:`parse_table`).
    """
    latest = latest_event_date(today)
    stands_in = {name: _stands_in(spec, raw) for name, spec in TABLES.items()}
    given = set(raw)
    problems = [
        _missing_table(name, spec)
        for name, spec in TABLES.items()
        if spec.required and name not in given and not stands_in[name]
    ]
    frames: dict[str, pd.DataFrame] = {}
    for name in list(raw):
        frame = raw.pop(name) if consume else raw[name]
        spec = TABLES[name]
        if not frame.index.is_unique:  # frames built in memory (importers): number the rows
            frame = frame.set_axis(pd.RangeIndex(2, len(frame) + 2))
        parsed, parse_problems, failed = parse_table(
            spec, frame, may_be_empty=stands_in[name], latest=latest, copy=not consume,
            skipped=skipped,
        )
        del frame
        problems += parse_problems
        if any(p.check == MISSING_COLUMN for p in parse_problems):
            continue
        problems += check_table(spec, parsed, failed, latest)
        frames[name] = parsed
    derived: set[str] = set()
    if ORDERS not in given and stands_in[ORDERS]:
        frames[ORDERS] = empty_table(ORDERS)
        derived.add(ORDERS)
    if CUSTOMERS not in given and ORDERS in frames:
        frames[CUSTOMERS] = derive_customers(frames)
        derived.add(CUSTOMERS)
    problems += cross_table_problems(frames, frozenset(derived))
    for frame in frames.values():  # rows numbered from 0, in place: no copy of any table
        frame.index = pd.RangeIndex(len(frame))
    return Tables(frames, derived=frozenset(derived)), problems
