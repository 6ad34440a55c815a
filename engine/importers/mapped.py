"""mapped: any CSV, Excel or Parquet files through a declared YAML mapping.

``quotacast import mapped SRC --mapping M.yaml`` reads, per quotacast table, one file (or one
sheet of a workbook), renames its columns (quotacast column <- source header), translates values
(statuses, stages) and parses dates and amounts the way the source writes them (``13/09/2023``,
``¥1,234.50``, ``€1.234,50``, GBK or Windows-1252 text). ``--suggest`` drafts that mapping from
what it recognises (English or Chinese headers, date order, currency symbol, separators,
encoding), every guess commented, so the user edits rather than writes it.

A mapping::

    tables:
      opportunities:
        file: 商机.csv            # relative to SRC; SRC may also be the file itself
        sheet: null               # the sheet of an Excel workbook
        encoding: gbk             # text files only: utf-8, gbk, cp1252, ...
        date_format: "%d/%m/%Y"   # null: ISO 8601 (2023-09-13)
        decimal: "."
        thousands: ","
        currency_symbol: "¥"      # or a list: ["¥", "CNY"]
        columns: {opportunity_id: 编号, customer_id: 客户, amount: 金额, ...}
        values: {status: {赢单: won, 输单: lost, 跟进中: open}}
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.importers.common import ImportResult, Source, examples, plural, to_dates, to_iso_dates
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    ENTERED_AT,
    KEY,
    LEVEL,
    MANAGER,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    OWNER,
    PERIOD,
    PRODUCT,
    REGION,
    REP,
    SEGMENT,
    STAGE,
    STAGE_HISTORY,
    STATUS,
    STATUS_LOST,
    STATUS_OPEN,
    STATUS_WON,
    TABLES,
    TARGETS,
    TEAM,
)

__all__ = [
    "SOURCE",
    "Mapping",
    "TableMapping",
    "apply_mapping",
    "load_mapping",
    "parse_numbers",
    "read_mapped",
    "suggest_mapping",
]

TEXT_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
PARQUET_SUFFIXES = (".parquet",)
SUFFIXES = TEXT_SUFFIXES + EXCEL_SUFFIXES + PARQUET_SUFFIXES
DECIMAL_MARKS = (".", ",")
THOUSANDS_MARKS = ("", ",", ".", " ", "'")


# --- the mapping ------------------------------------------------------------------------------


def _known_encoding(value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, gbk, cp1252)") from None
    return value


def _a_format(value: str) -> str:
    if "%" not in value:
        raise ValueError(f"{value!r} is not a date format: write it like %d/%m/%Y")
    return value


def _decimal(value: str) -> str:
    if value not in DECIMAL_MARKS:
        raise ValueError(f"{value!r}: expected '.' or ','")
    return value


def _thousands(value: str) -> str:
    if value not in THOUSANDS_MARKS:
        raise ValueError(f"{value!r}: expected ',', '.', ' ', \"'\" or '' (none)")
    return value


Encoding = Annotated[str, AfterValidator(_known_encoding)]
DateFormat = Annotated[str, AfterValidator(_a_format)]
Decimal = Annotated[str, AfterValidator(_decimal)]
Thousands = Annotated[str, AfterValidator(_thousands)]


class TableMapping(BaseModel):
    """Where one quotacast table comes from and how its cells are written."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(min_length=1)
    sheet: str | None = None
    encoding: Encoding | None = None
    date_format: DateFormat | None = None
    decimal: Decimal | None = None
    thousands: Thousands | None = None
    currency_symbol: str | list[str] | None = None
    columns: dict[str, str] = Field(min_length=1)
    values: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("columns")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        empty = [column for column, header in value.items() if not str(header).strip()]
        if empty:
            raise ValueError(f"no source header given for {', '.join(empty)}")
        return value


class Mapping(BaseModel):
    """A declared mapping: defaults for every table, then one entry per quotacast table."""

    model_config = ConfigDict(extra="forbid")

    encoding: Encoding | None = None
    date_format: DateFormat | None = None
    decimal: Decimal = "."
    thousands: Thousands = ","
    currency_symbol: str | list[str] | None = None
    tables: dict[str, TableMapping] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_tables_and_columns(self) -> Mapping:
        problems: list[str] = []
        for name, table in self.tables.items():
            spec = TABLES.get(name)
            if spec is None:
                problems.append(f"tables.{name}: unknown table, expected one of "
                                f"{', '.join(TABLES)}")
                continue
            missing = [c for c in spec.required_columns if c not in table.columns]
            if missing:
                problems.append(f"tables.{name}.columns: lacks required column(s) "
                                f"{', '.join(missing)}")
            stray = [c for c in table.values if c not in table.columns]
            if stray:
                problems.append(f"tables.{name}.values: {', '.join(stray)} not in columns")
            decimal = table.decimal or self.decimal
            thousands = table.thousands if table.thousands is not None else self.thousands
            if decimal == thousands:
                problems.append(f"tables.{name}: decimal and thousands are both {decimal!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _plain(error: ValidationError) -> list[str]:
    """One ``key.path: message`` line per pydantic error."""
    lines = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        if not item["loc"]:  # the whole-mapping checks: already keyed, '; ' between them
            lines += message.split("; ")
            continue
        where = ".".join(str(part) for part in item["loc"])
        lines.append(f"{where}: {message}")
    return lines


def load_mapping(path: Path) -> Mapping:
    """Read and check a YAML mapping; every problem in one plain ``ValueError``, keys named."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the mapping {path}: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"the mapping {path} is not UTF-8 YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"the mapping {path} must be a YAML mapping with a 'tables' key")
    try:
        return Mapping.model_validate(raw)
    except ValidationError as exc:
        lines = _plain(exc)
        raise ValueError(f"the mapping {path} has {plural(len(lines), 'problem')}:\n"
                         + "\n".join(f"  {line}" for line in lines)) from exc


# --- reading files ----------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in SUFFIXES if name.endswith(s)), path.suffix.lower())


def _read_text(path: Path, encoding: str) -> pd.DataFrame:
    sep = "\t" if _suffix(path) == ".tsv" else ","
    try:
        frame = pd.read_csv(path, dtype=str, encoding=encoding, keep_default_na=False,
                            na_values=[""], sep=sep)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path.name} is not {encoding} text ({exc.reason} at byte "
                         f"{exc.start}): set its encoding in the mapping (e.g. gbk, cp1252)"
                         ) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, EOFError) as exc:
        raise ValueError(f"{path.name} is not a readable CSV file: {exc}") from exc
    return frame


def _read_excel(path: Path, sheet: str | None) -> pd.DataFrame:
    try:
        book = pd.ExcelFile(path)
    except ImportError as exc:
        raise ValueError(f"{path.name}: reading Excel needs openpyxl (pip install openpyxl)"
                         ) from exc
    except (ValueError, OSError, KeyError) as exc:
        raise ValueError(f"{path.name} is not a readable Excel workbook: {exc}") from exc
    with book:
        names = [str(s) for s in book.sheet_names]
        if sheet is None:
            if len(names) > 1:
                raise ValueError(f"{path.name} has several sheets ({', '.join(names)}): "
                                 "name one with 'sheet' in the mapping")
            sheet = names[0]
        if sheet not in names:
            raise ValueError(f"{path.name} has no sheet {sheet!r}; found {', '.join(names)}")
        return book.parse(sheet, dtype=object)


def read_table_file(path: Path, sheet: str | None = None, encoding: str = "utf-8-sig"
                    ) -> pd.DataFrame:
    """One source table as cells (text, or the numbers and dates a workbook or Parquet holds)."""
    suffix = _suffix(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    if suffix in EXCEL_SUFFIXES:
        frame = _read_excel(path, sheet)
    elif suffix in PARQUET_SUFFIXES:
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path.name} is not a readable Parquet file: {exc}") from exc
    else:
        frame = _read_text(path, encoding)
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.astype(object).map(lambda v: None if _missing(v) else v)
    blank = frame.map(lambda v: v is None or str(v).strip() == "").all(axis=1)
    return frame.loc[~blank]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NaT


# --- cells ------------------------------------------------------------------------------------


def _symbols(symbol: str | list[str] | None) -> list[str]:
    if symbol is None:
        return []
    return [symbol] if isinstance(symbol, str) else list(symbol)


def parse_numbers(values: pd.Series, what: str, decimal: str = ".", thousands: str = ",",
                  currency_symbol: str | list[str] | None = None) -> pd.Series:
    """Amounts as written (``¥1,234.50``, ``€1.234,50``, ``(12.00)``) -> floats; empty -> NaN.

    Raises:
        ValueError: one line for every unparseable value, counted, with examples and a hint.
    """
    is_number = values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
    text = values.map(lambda v: None if v is None else str(v)).astype(object)
    cleaned = text.where(~is_number).dropna().astype(str).str.strip()
    for symbol in sorted(_symbols(currency_symbol), key=len, reverse=True):
        cleaned = cleaned.str.replace(symbol, "", regex=False)
    cleaned = cleaned.str.replace(r"[\s\u00a0\u202f]", "", regex=True)
    negative = cleaned.str.match(r"^\(.*\)$")
    cleaned = cleaned.str.replace(r"^\((.*)\)$", r"\1", regex=True)
    if thousands:
        cleaned = cleaned.str.replace(thousands, "", regex=False)
    if decimal != ".":
        cleaned = cleaned.str.replace(decimal, ".", regex=False)
    parsed_text = pd.to_numeric(cleaned.where(cleaned != ""), errors="coerce")
    parsed_text = parsed_text.where(~negative, -parsed_text)
    out = pd.Series(float("nan"), index=values.index, dtype="float64")
    out[is_number] = values[is_number].astype("float64")
    out.loc[parsed_text.index] = parsed_text.astype("float64")
    bad = text.notna() & ~is_number & out.isna() & (text.astype(str).str.strip() != "")
    if bad.any():
        shown = text[bad]
        hint = ""
        marks = shown.astype(str).str.replace(r"[\d.,\s()+-]", "", regex=True)
        found = sorted({m for m in marks if m})
        if found:
            hint = (f"; they carry {', '.join(repr(m) for m in found[:3])}: declare it as "
                    "currency_symbol in the mapping")
        elif shown.astype(str).str.contains(",").any():
            hint = "; check decimal and thousands in the mapping"
        raise ValueError(f"{what}: {int(bad.sum()):,} value(s) are not numbers, "
                         f"e.g. {examples(shown)}{hint}")
    return out


def parse_dates(values: pd.Series, what: str, fmt: str | None) -> pd.Series:
    """Dates as written (one explicit format, or ISO 8601) -> timestamps; cells a workbook
    already holds as dates are kept; empty -> NaT."""
    is_date = values.map(lambda v: isinstance(v, (pd.Timestamp,)) or hasattr(v, "year"))
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    if is_date.any():
        out[is_date] = pd.to_datetime(values[is_date]).astype("datetime64[ns]")
    text = values[~is_date].map(lambda v: None if v is None else str(v).strip())
    text = text.where(text != "")
    if text.notna().any():
        if fmt is None:
            parsed = to_iso_dates(text, what, written="ISO dates (2023-09-13)",
                                  hint="; declare date_format in the mapping (e.g. %d/%m/%Y)")
        else:
            parsed = to_dates(text, fmt, what)
        out.loc[text.index] = parsed.astype("datetime64[ns]")
    return out


def _as_text(values: pd.Series) -> pd.Series:
    def one(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        text = str(v).strip()
        return text or None
    return values.map(one).astype(object)


# --- applying a mapping -----------------------------------------------------------------------


def apply_mapping(mapping: Mapping, name: str, raw: pd.DataFrame, file_name: str
                  ) -> tuple[pd.DataFrame, list[str]]:
    """One source frame -> one quotacast table, through its mapping (a pure function)."""
    table = mapping.tables[name]
    spec = TABLES[name]
    missing = sorted({h for h in table.columns.values() if h not in raw.columns})
    if missing:
        lower = {c.lower(): c for c in raw.columns}
        hints = [f"{h!r} (did you mean {lower[h.lower()]!r}?)" if h.lower() in lower else repr(h)
                 for h in missing]
        raise ValueError(f"{file_name} lacks column(s) {', '.join(hints)} named in "
                         f"tables.{name}.columns; found {', '.join(map(str, raw.columns))}")
    decimal = table.decimal or mapping.decimal
    thousands = table.thousands if table.thousands is not None else mapping.thousands
    symbol = table.currency_symbol if table.currency_symbol is not None else (
        mapping.currency_symbol)
    fmt = table.date_format or mapping.date_format
    notes: list[str] = []
    out: dict[str, pd.Series] = {}
    for column, header in table.columns.items():
        values = raw[header]
        kind = spec.columns[column].kind if column in spec.columns else "text"
        what = f"{file_name}: {header} ({name}.{column})"
        if column in table.values:
            translate = table.values[column]
            text = _as_text(values)
            unmapped = text.notna() & ~text.isin(list(translate))
            if unmapped.any() and column == STATUS:
                raise ValueError(f"{what}: {int(unmapped.sum()):,} value(s) have no entry in "
                                 f"tables.{name}.values.{column}, e.g. {examples(text[unmapped])}")
            if unmapped.any():
                notes.append(f"{name}.{column}: {int(unmapped.sum()):,} value(s) kept as "
                             f"written (not in the value map), e.g. {examples(text[unmapped])}")
            values = text.replace(translate)
        if kind == "number":
            out[column] = parse_numbers(values, what, decimal, thousands, symbol)
        elif kind == "date":
            out[column] = parse_dates(values, what, fmt)
        else:
            out[column] = _as_text(values)
    frame = pd.DataFrame(out, index=raw.index).reset_index(drop=True)
    notes.insert(0, f"{name}: {plural(len(frame), 'row')} from {file_name}")
    return frame, notes


def _resolve(src: Path, file: str) -> Path:
    if src.is_file():
        if file in (src.name, ".", ""):
            return src
        return src.parent / file
    return src / file


def read_mapped(src: Path, options: dict[str, Any]) -> ImportResult:
    """SRC (a folder, or one file) through the mapping given as ``options['mapping']``."""
    mapping_path = options.get("mapping")
    if mapping_path is None:
        raise ValueError(f"no mapping given to read the files in {src}: --mapping M.yaml "
                         "(draft one with --suggest)")
    mapping = load_mapping(Path(mapping_path))
    frames: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for name, table in mapping.tables.items():
        path = _resolve(src, table.file)
        encoding = table.encoding or mapping.encoding or "utf-8-sig"
        raw = read_table_file(path, table.sheet, encoding)
        where = f"{path.name}[{table.sheet}]" if table.sheet else path.name
        frames[name], table_notes = apply_mapping(mapping, name, raw, where)
        notes += table_notes
    return ImportResult(frames, notes)


def _needs_mapping(path: Path) -> ImportResult:
    return read_mapped(path, {})


SOURCE = Source(
    name="mapped",
    description="any CSV, Excel or Parquet files through a YAML mapping (--mapping M.yaml; "
    "draft one with --suggest) -> the tables it declares",
    files=(),
    read=_needs_mapping,
    read_with=read_mapped,
)


# --- suggesting a mapping ---------------------------------------------------------------------

# Recognised headers (lower case, spaces and underscores ignored) -> quotacast column.
_HEADERS: dict[str, tuple[str, ...]] = {
    OPPORTUNITY_ID: ("opportunityid", "opportunity", "dealid", "recordid", "id", "商机编号",
                     "商机id", "商机", "机会编号", "编号", "项目编号"),
    CUSTOMER_ID: ("customerid", "customer", "customername", "account", "accountname",
                  "company", "associatedcompany", "客户", "客户名称", "客户编号", "客户id",
                  "公司", "公司名称"),
    OWNER: ("owner", "dealowner", "opportunityowner", "salesrep", "salesagent", "rep",
            "负责人", "销售", "销售代表", "业务员", "销售负责人"),
    STAGE: ("stage", "dealstage", "stagename", "阶段", "销售阶段", "商机阶段"),
    STATUS: ("status", "dealstatus", "状态", "商机状态", "赢单状态"),
    AMOUNT: ("amount", "value", "dealvalue", "closevalue", "revenue", "sales", "金额",
             "合同金额", "商机金额", "订单金额", "销售额", "目标", "目标金额", "target"),
    CREATED_AT: ("createdat", "created", "createdate", "createddate", "engagedate", "创建日期",
                 "创建时间", "立项日期"),
    CLOSE_DATE: ("closedate", "expectedclosedate", "closedat", "预计成交日期", "成交日期",
                 "结单日期", "关闭日期", "预计签约日期"),
    ORDER_DATE: ("orderdate", "date", "invoicedate", "日期", "下单日期", "订单日期",
                 "交易日期"),
    ORDER_ID: ("orderid", "invoice", "invoiceno", "ordernumber", "订单号", "订单编号"),
    PRODUCT: ("product", "productname", "产品", "产品名称"),
    ACCOUNT_MANAGER: ("accountmanager", "客户经理"),
    REGION: ("region", "regionaloffice", "区域", "地区", "大区"),
    SEGMENT: ("segment", "industry", "sector", "行业", "客户类型", "细分"),
    REP: ("rep", "salesagent", "salesrep", "销售", "销售代表", "负责人", "业务员"),
    TEAM: ("team", "团队", "小组", "销售团队"),
    MANAGER: ("manager", "经理", "主管", "销售经理"),
    ENTERED_AT: ("enteredat", "entered", "dateentered", "进入日期", "变更日期", "进入时间"),
    PERIOD: ("period", "期间", "周期"),
    LEVEL: ("level", "层级"),
    KEY: ("key", "对象"),
}
# File or sheet name hints -> table.
_TABLE_HINTS: dict[str, tuple[str, ...]] = {
    OPPORTUNITIES: ("opportunit", "deal", "pipeline", "商机", "机会"),
    STAGE_HISTORY: ("history", "历史", "阶段变更"),
    ORDERS: ("order", "invoice", "sales", "订单", "销售额"),
    CUSTOMERS: ("customer", "account", "compan", "客户"),
    ORG: ("org", "team", "user", "组织", "团队", "人员"),
    TARGETS: ("target", "quota", "目标", "指标"),
}
_STATUS_WORDS: dict[str, str] = {
    "won": STATUS_WON, "closedwon": STATUS_WON, "win": STATUS_WON, "赢单": STATUS_WON,
    "赢": STATUS_WON, "成交": STATUS_WON, "已成交": STATUS_WON, "签约": STATUS_WON,
    "已签约": STATUS_WON,
    "lost": STATUS_LOST, "closedlost": STATUS_LOST, "lose": STATUS_LOST, "输单": STATUS_LOST,
    "丢单": STATUS_LOST, "失败": STATUS_LOST, "已失败": STATUS_LOST, "流失": STATUS_LOST,
    "open": STATUS_OPEN, "inprogress": STATUS_OPEN, "进行中": STATUS_OPEN,
    "跟进中": STATUS_OPEN, "open deal": STATUS_OPEN,
}
_CURRENCY = ("¥", "￥", "€", "$", "£", "₹", "RMB", "CNY", "EUR", "USD", "元")


def _norm(header: str) -> str:
    return re.sub(r"[\s_\-()（）:：]", "", str(header)).lower()


def _detect_encoding(path: Path) -> tuple[str, str]:
    """(encoding, why) for a text file: UTF-8, else GBK when it reads as Chinese, else cp1252."""
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    try:
        data.decode("utf-8")
        return "utf-8-sig", "decodes as UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gbk")
        first = text.splitlines()[0] if text else ""
        if any(_norm(h) in _all_headers() for h in first.split(",")):
            return "gbk", "not UTF-8; its headers read as Chinese in GBK"
    except UnicodeDecodeError:
        pass
    return "cp1252", "not UTF-8 nor Chinese GBK: guessed Windows-1252 (Western European)"


def _all_headers() -> set[str]:
    return {_norm(h) for names in _HEADERS.values() for h in names}


def _sources(src: Path) -> list[tuple[Path, str | None]]:
    """(file, sheet) of every table-like file in SRC."""
    if src.is_file():
        files = [src]
    elif src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and _suffix(p) in SUFFIXES)
    else:
        raise ValueError(f"{src} does not exist (expected a folder of CSV, Excel or Parquet "
                         "files, or one such file)")
    found: list[tuple[Path, str | None]] = []
    for path in files:
        if _suffix(path) in EXCEL_SUFFIXES:
            try:
                with pd.ExcelFile(path) as book:
                    found += [(path, str(s)) for s in book.sheet_names]
            except ImportError as exc:
                raise ValueError(f"{path.name}: reading Excel needs openpyxl") from exc
        else:
            found.append((path, None))
    if not found:
        raise ValueError(f"no CSV, Excel or Parquet files in {src}")
    return found


def _match_columns(headers: list[str], table: str) -> dict[str, str]:
    columns: dict[str, str] = {}
    used: set[str] = set()
    for column in TABLES[table].columns:
        names = _HEADERS.get(column, ())
        for name in names:  # the vocabulary's order is the preference
            hit = next((h for h in headers if h not in used and _norm(h) == _norm(name)), None)
            if hit is not None:
                columns[column] = hit
                used.add(hit)
                break
    return columns


def _pick_table(label: str, headers: list[str], taken: set[str]) -> tuple[str | None, str]:
    lowered = label.lower()
    for table, hints in _TABLE_HINTS.items():
        if table not in taken and any(h in lowered for h in hints):
            return table, f"the name {label!r} suggests {table}"
    best: tuple[int, str] | None = None
    for table, spec in TABLES.items():
        if table in taken:
            continue
        matched = _match_columns(headers, table)
        if all(c in matched for c in spec.required_columns):
            score = len(matched)
            if best is None or score > best[0]:
                best = (score, table)
    if best is None:
        return None, "no table's required columns recognised"
    return best[1], "its headers fit best"


def _date_format(values: list[str]) -> tuple[str | None, str]:
    samples = [v.strip() for v in values if v and v.strip()]
    if not samples:
        return None, "no dates to look at"
    first = samples[0]
    time = ""
    if re.search(r"\d{1,2}:\d{2}:\d{2}$", first):
        time = " %H:%M:%S"
    elif re.search(r"\d{1,2}:\d{2}$", first):
        time = " %H:%M"
    date_part = first.split(" ")[0]
    sep_match = re.search(r"[/.\-年]", date_part)
    if sep_match is None:
        return None, f"{first!r} not recognised: write the format"
    sep = sep_match.group(0)
    if sep == "年":
        return "%Y年%m月%d日" + time, "Chinese year-month-day"
    parts = [s.split(" ")[0].split(sep) for s in samples]
    parts = [p for p in parts if len(p) == 3 and all(x.isdigit() for x in p)]
    if not parts:
        return None, f"{first!r} not recognised: write the format"
    if len(parts[0][0]) == 4:
        fmt = f"%Y{sep}%m{sep}%d{time}"
        return (None if fmt == "%Y-%m-%d" else fmt), "year first"
    year = "%Y" if len(parts[0][2]) == 4 else "%y"
    if any(int(p[0]) > 12 for p in parts):
        return f"%d{sep}%m{sep}{year}{time}", "day first: a first field is above 12"
    if any(int(p[1]) > 12 for p in parts):
        return f"%m{sep}%d{sep}{year}{time}", "month first: a second field is above 12"
    return (f"%d{sep}%m{sep}{year}{time}",
            "ambiguous (no field above 12): guessed day first, check")


def _number_style(values: list[str]) -> tuple[str, str, list[str], str]:
    """(decimal, thousands, currency symbols, why) seen in amount cells."""
    samples = [v.strip() for v in values if v and v.strip()]
    symbols = sorted({s for s in _CURRENCY for v in samples if s in v}, key=len, reverse=True)
    symbols = [s for s in symbols if not any(s != o and s in o for o in symbols)]
    digits = [re.sub(r"[^\d.,]", "", v) for v in samples]
    comma_decimal = sum(bool(re.search(r",\d{1,2}$", d)) for d in digits)
    dot_decimal = sum(bool(re.search(r"\.\d{1,2}$", d)) for d in digits)
    if comma_decimal > dot_decimal:
        thousands = "." if any("." in d for d in digits) else ""
        if not thousands and any(" " in v for v in samples):
            thousands = " "
        return ",", thousands, symbols, "decimal comma (1.234,50)"
    thousands = "," if any("," in d for d in digits) else ""
    return ".", thousands, symbols, "decimal point (1,234.50)"


def _q(value: object) -> str:
    """A YAML scalar (JSON strings are YAML)."""
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def suggest_mapping(src: Path) -> str:
    """A draft mapping for the files in SRC, as commented YAML (every guess says why)."""
    src = Path(src)
    lines = ["# quotacast mapping drafted by `quotacast import mapped --suggest`.",
             "# Every value is a guess: check the comments, edit, then run",
             "#   quotacast import mapped SRC --mapping THIS.yaml --out DATA",
             "# columns: quotacast column: source header; values: source value: quotacast value",
             "tables:"]
    taken: set[str] = set()
    skipped: list[str] = []
    for path, sheet in _sources(src):
        label = f"{path.name}[{sheet}]" if sheet else path.name
        encoding, why_encoding = (None, "")
        if _suffix(path) in TEXT_SUFFIXES:
            encoding, why_encoding = _detect_encoding(path)
        raw = read_table_file(path, sheet, encoding or "utf-8-sig")
        headers = [str(c) for c in raw.columns]
        table, why_table = _pick_table(sheet or path.stem, headers, taken)
        if table is None:
            skipped.append(f"{label}: {why_table} (headers {', '.join(headers)})")
            continue
        taken.add(table)
        spec = TABLES[table]
        columns = _match_columns(headers, table)
        status_from_stage = STATUS in spec.columns and STATUS not in columns and STAGE in columns
        if status_from_stage:
            columns[STATUS] = columns[STAGE]
        file_name = path.name if src.is_dir() else src.name
        lines += [f"  {table}:  # {label}: {why_table}",
                  f"    file: {_q(file_name)}"]
        if sheet:
            lines.append(f"    sheet: {_q(sheet)}")
        if encoding:
            lines.append(f"    encoding: {_q(encoding.replace('-sig', ''))}  # {why_encoding}")
        text = raw.map(lambda v: None if v is None else str(v))
        dates = [columns[c] for c in columns if spec.columns[c].kind == "date"]
        text_dates = [v for h in dates for v in raw[h].dropna().head(200)
                      if isinstance(v, str)]
        if text_dates:
            fmt, why = _date_format(text_dates)
            lines.append(f"    date_format: {_q(fmt)}  # {why}"
                         + (f", e.g. {text_dates[0]!r}" if text_dates else ""))
        amounts = [columns[c] for c in columns if spec.columns[c].kind == "number"]
        text_amounts = [v for h in amounts for v in text[h].dropna().head(200)]
        if text_amounts:
            decimal, thousands, symbols, why = _number_style(text_amounts)
            lines.append(f"    decimal: {_q(decimal)}  # {why}, e.g. {text_amounts[0]!r}")
            lines.append(f"    thousands: {_q(thousands)}")
            if symbols:
                symbol: object = symbols[0] if len(symbols) == 1 else symbols
                lines.append(f"    currency_symbol: {_q(symbol)}  # seen in the amounts")
        lines.append("    columns:")
        for column, spec_column in spec.columns.items():
            if column == STATUS and status_from_stage:
                lines.append(f"      {column}: {_q(columns[column])}  # no status column: "
                             "the stage, through values.status below")
            elif column in columns:
                lines.append(f"      {column}: {_q(columns[column])}")
            elif spec_column.required:
                lines.append(f"      # {column}: ???  # REQUIRED, not recognised: one of "
                             f"{', '.join(_q(h) for h in headers)}")
        unused = [h for h in headers if h not in columns.values()]
        if unused:
            lines.append(f"      # not mapped (add as extra columns if useful): "
                         f"{', '.join(_q(h) for h in unused)}")
        value_lines = _value_maps(raw, columns)
        if value_lines:
            lines += ["    values:", *value_lines]
    if skipped:
        lines.append("# not mapped: " + "; ".join(skipped))
    if not taken:
        raise ValueError(f"nothing in {src} was recognised as a quotacast table: "
                         + "; ".join(skipped))
    return "\n".join(lines) + "\n"


def _value_maps(raw: pd.DataFrame, columns: dict[str, str]) -> list[str]:
    lines: list[str] = []
    if STATUS in columns:
        found = _as_text(raw[columns[STATUS]]).dropna().drop_duplicates().head(30)
        lines.append(f"      status:  # every value of {columns[STATUS]!r}: won, lost or open")
        for value in found:
            guess = _STATUS_WORDS.get(_norm(value))
            if guess is None:
                lines.append(f"        {_q(value)}: open  # ? not recognised: won, lost or open")
            else:
                lines.append(f"        {_q(value)}: {guess}")
    if STAGE in columns:
        found = _as_text(raw[columns[STAGE]]).dropna().drop_duplicates().head(30)
        lines.append("      stage:  # stages as found; rename them here if you like")
        lines += [f"        {_q(v)}: {_q(v)}" for v in found]
    return lines
