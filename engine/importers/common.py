"""What every importer shares: the result and source types, reading text CSV files, parsing
cells strictly, dropping rows with a note, picking a dominant value, wording counts.

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
from typing import Any

import pandas as pd

__all__ = [
    "ANNUAL_REVENUE",
    "DECIMALS",
    "EMPLOYEES",
    "ENCODINGS",
    "ENCODING_NAMES",
    "N_LINES",
    "PROFIT",
    "QUANTITY",
    "SHIP_REGION",
    "SUBSIDIARY_OF",
    "SUB_CATEGORY",
    "YEAR_ESTABLISHED",
    "ImportResult",
    "Source",
    "as_id",
    "dominant",
    "drop_rows",
    "examples",
    "find_file",
    "groups_with_several",
    "plural",
    "read_text_csv",
    "require_columns",
    "to_dates",
    "to_iso_dates",
    "to_numbers",
]


# Amounts are rounded to this many decimals after summing, to drop float noise (0.1 + 0.2)
# while keeping the sources' own precision (Superstore has 4 decimals, some unit prices 3).
DECIMALS = 4
# Encodings tried in turn: the files as shipped are UTF-8 (Superstore with a BOM), but widely
# circulated copies of Superstore are Windows-1252.
ENCODINGS = ("utf-8-sig", "cp1252")

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

ENCODING_NAMES = {"utf-8-sig": "UTF-8", "cp1252": "Windows-1252 (not UTF-8)"}


@dataclass
class ImportResult:
    """The tables converted from one public dataset.

    Attributes:
        frames: table name -> frame with the contract's columns (plus useful extra columns).
        notes: plain-English lines for the user: rows read, rows dropped and why, quirks fixed.
    """

    frames: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    """One importable dataset: an entry of the registry (:data:`engine.importers.SOURCES`).

    Attributes:
        name: the KIND of ``quotacast import KIND SRC``.
        description: one line for ``quotacast import --help``: the dataset -> the tables made.
        files: the main file's name, or its alternatives in the order looked for; SRC is this
            file or the folder holding it.
        read: the main file's path -> the tables and notes.
        beside: other files read from the main file's folder (named in the help).
        read_with: for a source that needs options from the user (``mapped``: the mapping),
            (SRC, options by name) -> the tables and notes; used instead of :attr:`read`.
            With no :attr:`files`, SRC is any existing file or folder.
    """

    name: str
    description: str
    files: tuple[str, ...]
    read: Callable[[Path], ImportResult]
    beside: tuple[str, ...] = ()
    read_with: Callable[[Path, dict[str, Any]], ImportResult] | None = None

    def locate(self, src: Path) -> Path:
        """The main file: ``src`` itself, or the first of :attr:`files` inside folder ``src``."""
        if not self.files:
            if src.exists():
                return src
            raise ValueError(f"{src} does not exist (expected the {self.name} source's folder "
                             "or file)")
        return find_file(src, self.files, self.name)

    def load(self, path: Path, options: dict[str, Any] | None = None) -> ImportResult:
        """The tables from the located ``path``, through :attr:`read_with` when it is set."""
        if self.read_with is not None:
            return self.read_with(path, dict(options or {}))
        return self.read(path)

    def files_text(self) -> str:
        """``a.csv.gz or a.csv``; ``main.csv with b.csv, c.csv``: what SRC must hold."""
        if not self.files:
            return "a folder of CSV, Excel or Parquet files, or one such file"
        text = " or ".join(self.files)
        return f"{text} with {', '.join(self.beside)}" if self.beside else text


def find_file(src: Path, names: tuple[str, ...], kind: str) -> Path:
    """The dataset's main file: ``src`` itself, or the first of ``names`` inside folder ``src``."""
    if src.is_file():
        return src
    if src.is_dir():
        for name in names:
            if (src / name).is_file():
                return src / name
        raise ValueError(f"no {' or '.join(names)} in {src} (expected the {kind} dataset)")
    raise ValueError(f"{src} does not exist (expected the {kind} dataset's folder or file)")


def read_text_csv(path: Path) -> tuple[pd.DataFrame, str]:
    """Read a CSV file as text cells (empty -> missing); returns the frame and its encoding."""
    for encoding in ENCODINGS:
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


def require_columns(frame: pd.DataFrame, columns: list[str], file_name: str) -> None:
    """Raise a plain ``ValueError`` naming the columns the source file lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{file_name} lacks column(s) {', '.join(missing)}; "
                         f"found {', '.join(map(str, frame.columns))}")


def examples(values: pd.Series) -> str:
    return ", ".join(repr(v) for v in values.drop_duplicates().head(3))


def to_dates(values: pd.Series, fmt: str, what: str) -> pd.Series:
    """Parse dates with one explicit format; empty cells become NaT, anything else must parse.

    A single explicit format, rather than pandas' guessing, is what keeps ``3/4/2017`` from
    being read as the 3rd of April in one row and March 4th in another.
    """
    parsed = pd.to_datetime(values, format=fmt, errors="coerce")
    bad = values.notna() & parsed.isna()
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum()):,} value(s) are not dates in the format "
                         f"{fmt}, e.g. {examples(values[bad])}")
    return parsed.astype("datetime64[ns]")


def to_iso_dates(values: pd.Series, what: str, written: str = "ISO dates or date-times",
                 hint: str = "") -> pd.Series:
    """ISO 8601 dates or date-times (``2017-03-01``, ``2023-09-13 14:05``,
    ``2017-03-01T14:03:11.000Z``) -> naive timestamps in UTC; empty cells become NaT.

    Args:
        written: how the values should be written, for the message.
        hint: appended to the message (what to do instead).
    """
    text = values.str.strip()
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = text.notna() & parsed.isna()
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum()):,} value(s) are not {written}, "
                         f"e.g. {examples(values[bad])}{hint}")
    return parsed.dt.tz_convert(None).astype("datetime64[ns]")


def to_numbers(values: pd.Series, what: str) -> pd.Series:
    """Parse numbers; empty cells become NaN, anything else must parse."""
    parsed = pd.to_numeric(values.str.strip(), errors="coerce").astype("float64")
    bad = values.notna() & parsed.isna()
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum()):,} value(s) are not numbers, "
                         f"e.g. {examples(values[bad])}")
    return parsed


def drop_rows(frame: pd.DataFrame, reasons: list[tuple[str, pd.Series]], unit: str
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


def dominant(frame: pd.DataFrame, key: str, value: str, weight: str | None = None) -> pd.Series:
    """Per ``key``, the ``value`` with the most rows (or the largest ``weight`` sum).

    Ties go to the alphabetically first value, so the result does not depend on row order.
    """
    grouped = frame.groupby([key, value], observed=True)
    score = grouped.size() if weight is None else grouped[weight].sum()
    ranked = score.rename("_score").reset_index()
    ranked = ranked.sort_values([key, "_score", value], ascending=[True, False, True])
    return ranked.drop_duplicates(key).set_index(key)[value]


def groups_with_several(frame: pd.DataFrame, key: str, value: str) -> int:
    """How many ``key`` groups hold more than one distinct ``value``."""
    return int((frame.groupby(key)[value].nunique() > 1).sum())


def plural(n: int, noun: str) -> str:
    """``1 account``, ``2 accounts``, ``1,234 accounts``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def as_id(values: pd.Series) -> pd.Series:
    """Identifiers as stripped text, missing as ``None`` (never ``nan``, never ``17850.0``)."""
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    out = text.astype(object)
    out[text.isna()] = None
    return out
