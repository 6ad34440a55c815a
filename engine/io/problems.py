"""Problems with the input: one per bad cell, line or file, capped and summarised per kind.

A *kind* of problem is its (table, column, check). Every kind found is always named, but a kind
that repeats (a million unparseable dates) lists at most :data:`MAX_EXAMPLES` example lines,
followed by one tally, ``... and 12,345 more of the same (orders: order_date: ...)``. Checks
create at most that many :class:`Problem` objects per kind (:func:`cell_problems`), so bad input
of any size is reported in bounded time and memory.

A tally whose examples show a recognisable pattern carries a hint on what to do
(:func:`hint_for`): amounts with a currency symbol or thousands separators, day-first dates.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from engine.schemas import TABLES

__all__ = ["MAX_EXAMPLES", "BadInput", "Problem", "cell_problems", "hint_for", "line_of"]

# Example lines listed per kind of problem before the rest is counted.
MAX_EXAMPLES = 10

# Where a problem sits: the line in the file (header = 1, whole file = 0) or a SQL row's key.
Line = int | str


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, printed as ``table:line: column: check (value)``.

    A problem with ``more`` > 0 is a tally: that many further problems of the same kind
    (table, column, check) that are not listed one by one; its ``hint`` (if any) says what
    to do about all of them.
    """

    table: str
    line: Line
    column: str
    check: str
    value: str = ""
    more: int = 0
    hint: str = ""

    @property
    def kind(self) -> tuple[str, str, str]:
        return (self.table, self.column, self.check)

    def __str__(self) -> str:
        if self.more:
            hint = f"; hint: {self.hint}" if self.hint else ""
            return (f"... and {self.more:,} more of the same "
                    f"({self.table}: {self.column}: {self.check}){hint}")
        return f"{self.table}:{self.line}: {self.column}: {self.check} ({self.value})"


def line_of(index_value: object) -> Line:
    """A frame's index value as the line to report: a number, else the SQL key as text."""
    if isinstance(index_value, int | float) and not isinstance(index_value, bool):
        return int(index_value)
    text = str(index_value)
    return int(text) if text.isdecimal() else text


def cell_problems(
    table: str,
    column: str,
    check: str,
    values: pd.Series,
    render: Callable[[object], str] = str,
    total: int | None = None,
) -> list[Problem]:
    """Problems for the cells ``values`` (indexed by line): the first examples, then a tally.

    ``total`` counts the cells when ``values`` holds only the first of them.
    """
    shown = values.iloc[:MAX_EXAMPLES]
    problems = [Problem(table, line_of(i), column, check, render(v)) for i, v in shown.items()]
    more = (len(values) if total is None else total) - len(shown)
    if more > 0:
        problems.append(Problem(table, "", column, check, more=more))
    return problems


# Checks whose repeated examples may show a pattern (the texts of engine.io.checks).
_NOT_A_NUMBER = "not a number"
_BAD_DATE_PREFIX = "unparseable date"
_SLASHED_DATE = re.compile(r"(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})(?:[ T].*)?")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:([,.' \u00a0])\d{3})+(?:[.,]\d+)?")
_DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d{1,2}")
_CURRENCY_WORD = re.compile(r"[A-Z]{3}|RMB|US|R|元|円|원")


def _has_currency(value: str) -> bool:
    """A number with a currency sign or code around it: ``¥67,118.37``, ``USD 10``, ``10 €``."""
    text = value.strip()
    if not any(c.isdigit() for c in text):
        return False
    rest = re.sub(r"[\d.,'\s\u00a0+\-()]", "", text)
    if not rest:
        return False
    return (all(unicodedata.category(c) == "Sc" for c in rest)
            or _CURRENCY_WORD.fullmatch(rest.replace("$", "")) is not None)


def _mostly(values: Sequence[str], test: Callable[[str], bool]) -> bool:
    return bool(values) and sum(map(test, values)) * 2 >= len(values)


def _date_hint(values: Sequence[str]) -> str:
    found = [m for m in (_SLASHED_DATE.fullmatch(v.strip()) for v in values) if m]
    if not found or len(found) * 2 < len(values):
        return ""
    sep = found[0].group(2)
    year = "%Y" if len(found[0].group(4)) == 4 else "%y"
    day_first = next((m for m in found if int(m.group(1)) > 12), None)
    month_first = next((m for m in found if int(m.group(3)) > 12), None)
    if day_first is not None and month_first is None:
        return (f"dates look day-first ({day_first.group(0)}): use a mapping with "
                f"`date_format: %d{sep}%m{sep}{year}`")
    if month_first is not None and day_first is None:
        return (f"dates look month-first ({month_first.group(0)}): use a mapping with "
                f"`date_format: %m{sep}%d{sep}{year}`")
    return (f"dates are not ISO 8601 ({found[0].group(0)}): use a mapping with `date_format` "
            f"(%d{sep}%m{sep}{year} or %m{sep}%d{sep}{year})")


def _separators(values: Sequence[str]) -> str:
    """The mapping settings for numbers like ``1,234.50`` or ``1.234,50``."""
    found = next(m for m in (_THOUSANDS.fullmatch(v.strip()) for v in values) if m)
    thousands = found.group(1)
    decimal = "," if thousands == "." else "."
    settings = f"`thousands: \"{thousands}\"`"
    if decimal == ",":
        settings += ", `decimal: \",\"`"
    return f"use `quotacast import mapped` with {settings}"


def hint_for(check: str, values: Sequence[str]) -> str:
    """What to do about a repeated problem whose example ``values`` show a known pattern
    ("" when none): currency symbols, thousands separators, decimal commas, day-first dates."""
    if check == _NOT_A_NUMBER:
        if _mostly(values, _has_currency):
            return ("amounts carry a currency symbol: use `quotacast import mapped` with "
                    "`currency_symbol`")
        if _mostly(values, lambda v: _THOUSANDS.fullmatch(v.strip()) is not None):
            return "amounts carry thousands separators: " + _separators(values)
        if _mostly(values, lambda v: _DECIMAL_COMMA.fullmatch(v.strip()) is not None):
            return ("amounts use a decimal comma: use `quotacast import mapped` with "
                    "`decimal: \",\"`")
    if check.startswith(_BAD_DATE_PREFIX):
        return _date_hint(values)
    return ""


def _line_key(line: Line) -> tuple[int, int, str]:
    return (0, line, "") if isinstance(line, int) else (1, 0, line)


def _table_rank(table: str) -> int:
    return list(TABLES).index(table) if table in TABLES else len(TABLES)


def summarise(problems: Iterable[Problem], limit: int = MAX_EXAMPLES) -> tuple[list[Problem], int]:
    """Problems grouped by kind (kinds in table order, then by first line), at most ``limit``
    examples per kind plus one tally for the rest; and the total number of problems."""
    examples: dict[tuple[str, str, str], set[Problem]] = {}
    more: dict[tuple[str, str, str], int] = {}
    for p in problems:
        examples.setdefault(p.kind, set())
        if p.more:
            more[p.kind] = more.get(p.kind, 0) + p.more
        else:
            examples[p.kind].add(p)
    total = sum(len(e) for e in examples.values()) + sum(more.values())
    groups = []
    for kind, found in examples.items():
        ordered = sorted(found, key=lambda p: (_line_key(p.line), p.value))
        extra = more.get(kind, 0) + max(0, len(ordered) - limit)
        shown = ordered[:limit]
        first = _line_key(shown[0].line) if shown else (2, 0, "")
        tally = [Problem(kind[0], "", kind[1], kind[2], more=extra,
                         hint=hint_for(kind[2], [p.value for p in shown]))] if extra else []
        groups.append(((_table_rank(kind[0]), kind[0], first, kind[1], kind[2]), shown + tally))
    groups.sort(key=lambda group: group[0])
    return [p for _, group in groups for p in group], total


class BadInput(Exception):
    """Input that quotacast refuses; carries every kind of problem found (exit status 2).

    Attributes:
        problems: what to show, one line each: per kind at most :data:`MAX_EXAMPLES`
            examples, then a tally of the rest.
        total: how many problems there are in all.
    """

    def __init__(self, problems: Iterable[Problem]):
        self.problems, self.total = summarise(problems)
        super().__init__(f"{self.total:,} problem(s) in the input")

    def report(self) -> str:
        return "\n".join(str(p) for p in self.problems)
