"""Problems with the input: one per bad cell, line or file, capped and summarised per kind.

A *kind* of problem is its (table, column, check). Every kind found is always named, but a kind
that repeats (a million unparseable dates) lists at most :data:`MAX_EXAMPLES` example lines,
followed by one tally, ``... and 12,345 more of the same (orders: order_date: ...)``. Checks
create at most that many :class:`Problem` objects per kind (:func:`cell_problems`), so bad input
of any size is reported in bounded time and memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from engine.schemas import TABLES

__all__ = ["MAX_EXAMPLES", "BadInput", "Problem", "cell_problems", "line_of"]

# Example lines listed per kind of problem before the rest is counted.
MAX_EXAMPLES = 10

# Where a problem sits: the line in the file (header = 1, whole file = 0) or a SQL row's key.
Line = int | str


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, printed as ``table:line: column: check (value)``.

    A problem with ``more`` > 0 is a tally: that many further problems of the same kind
    (table, column, check) that are not listed one by one.
    """

    table: str
    line: Line
    column: str
    check: str
    value: str = ""
    more: int = 0

    @property
    def kind(self) -> tuple[str, str, str]:
        return (self.table, self.column, self.check)

    def __str__(self) -> str:
        if self.more:
            return (f"... and {self.more:,} more of the same "
                    f"({self.table}: {self.column}: {self.check})")
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
        tally = [Problem(kind[0], "", kind[1], kind[2], more=extra)] if extra else []
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
