"""The review people read (``quotacast review --report``): Markdown or HTML with three charts
beside it (attainment by node, the company's waterfall from the outlook at the start to the
actual, P(attain) at each checkpoint), and the top and bottom performers."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from engine.io import atomic_path, write_frame
from engine.schemas import (
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REP,
    METRIC,
    METRIC_REVENUE,
)
from features.hierarchy import UNASSIGNED
from models.feasibility import P_ATTAIN, TARGET
from models.feasibility.simulation import EXPECTED, P10, P90
from models.review import (
    ACTUAL,
    ATTAINMENT,
    CALLED_ON,
    CAUSES,
    CHECKPOINT,
    P_ATTAIN_MID,
    P_ATTAIN_START,
    VS_EXPECTED,
)
from service.usecases.review import ReviewResult

__all__ = ["performers", "write_report"]


def performers(frame: pd.DataFrame, count: int = 3) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The top and bottom nodes (reps, else the lowest level with two or more nodes) by
    attainment, else (no targets) by actual against the outlook at the start; and the measure's
    name."""
    rows = frame[(frame[METRIC] == METRIC_REVENUE) & (frame[KEY] != UNASSIGNED)]
    measure = ATTAINMENT
    if rows[ATTAINMENT].notna().sum() < 2:
        rows = rows.assign(**{ATTAINMENT: rows[ACTUAL] / rows[EXPECTED].where(
            rows[EXPECTED] > 0)})
        measure = "actual / expected"
    for level in (LEVEL_REP, *reversed(HIERARCHY_LEVELS[1:-1])):
        ranked = rows[(rows[LEVEL] == level) & rows[ATTAINMENT].notna()]
        if len(ranked) >= 2:
            break
    ranked = ranked.sort_values(ATTAINMENT, ascending=False, kind="stable")
    spread = len(ranked) >= 2 and ranked[ATTAINMENT].max() > ranked[ATTAINMENT].min()
    shown = min(count, len(ranked) // 2) if spread else 0
    return ranked.head(shown), ranked.tail(shown).iloc[::-1], measure


def _money(value: float) -> str:
    if value is None or pd.isna(value):
        return ""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:,.2f}{suffix}"
    return f"{value:,.0f}"


def _number(value: float) -> str:
    return "" if value is None or pd.isna(value) else f"{value:,.2f}"


def _share(value: float) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.1%}"


def _attainment_chart(result: ReviewResult, path: Path) -> None:
    rows = result.frame[(result.frame[METRIC] == METRIC_REVENUE)
                        & (result.frame[LEVEL].isin(HIERARCHY_LEVELS))
                        & (result.frame[KEY] != UNASSIGNED)]
    value = rows[ATTAINMENT] if result.has_targets else rows[ACTUAL] / rows[EXPECTED].where(
        rows[EXPECTED] > 0)
    shown = rows.assign(_v=value).dropna(subset=["_v"]).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(shown) + 1)))
    colors = ["C2" if v >= 1 else "C3" for v in shown["_v"]]
    ax.barh([f"{lv} {k}" for lv, k in zip(shown[LEVEL], shown[KEY], strict=True)],
            shown["_v"], color=colors)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xlabel("attainment (actual / target)" if result.has_targets
                  else "actual / expected at the start (no targets)")
    ax.set_title(f"{result.period}: attainment by node")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def _waterfall_chart(result: ReviewResult, path: Path) -> None:
    company = result.company()
    steps = [(c.replace("_", " "), float(company[c])) for c in CAUSES]
    fig, ax = plt.subplots(figsize=(9, 4))
    level = float(company[EXPECTED])
    labels = ["expected at start"]
    ax.bar(0, level, color="C0")
    for i, (name, value) in enumerate(steps, 1):
        ax.bar(i, value, bottom=level, color="C2" if value >= 0 else "C3")
        level += value
        labels.append(name)
    ax.bar(len(steps) + 1, float(company[ACTUAL]), color="C7")
    labels.append("actual")
    levels = np.cumsum([float(company[EXPECTED]), *(v for _, v in steps)])
    for i, (_, value) in enumerate(steps, 1):
        ax.annotate(_money(value), (i, max(levels[i - 1], levels[i])), ha="center",
                    va="bottom", fontsize=8)
    marks = [*levels, float(company[ACTUAL])]
    if not pd.isna(company[TARGET]):
        ax.axhline(float(company[TARGET]), color="black", ls="--", lw=1, label="target")
        ax.legend(loc="upper right")
        marks.append(float(company[TARGET]))
    low, high = min(marks), max(marks)
    if low > 0 and high > low:
        # Zoom on the steps: on a zero-based axis they are slivers of the whole.
        ax.set_ylim(max(0.0, low - 0.6 * (high - low)), high + 0.15 * (high - low))
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_title(f"{result.period}: from the outlook at the start to the actual (company)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def _revenue_rows(result: ReviewResult) -> pd.DataFrame:
    return result.frame[result.frame[METRIC] == METRIC_REVENUE]


def _outcome(rows: pd.DataFrame, level: Any, key: Any, result: ReviewResult) -> str:
    """`` (hit 104%)`` or `` (missed 96%)`` once the period is over, else nothing."""
    if not result.finished or (level, key) not in rows.index:
        return ""
    value: Any = rows.loc[(level, key), ATTAINMENT]
    share = float(value)
    return "" if np.isnan(share) else f" ({'hit' if share >= 1 else 'missed'} {share:.0%})"


def _trail_chart(result: ReviewResult, path: Path) -> None:
    trail = result.trail[result.trail[LEVEL].isin([LEVEL_COMPANY, "region"])
                         & (result.trail[KEY] != UNASSIGNED)]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    if result.has_targets and trail[P_ATTAIN].notna().any():
        rows_of = _revenue_rows(result).set_index([LEVEL, KEY])
        for (level, key), rows in trail.groupby([LEVEL, KEY], sort=False):
            if rows[P_ATTAIN].notna().any():
                ax.plot(rows[CHECKPOINT], rows[P_ATTAIN], marker="o",
                        lw=2.2 if level == LEVEL_COMPANY else 1.2,
                        label=f"{level} {key}{_outcome(rows_of, level, key, result)}")
        ax.axhline(0.5, color="black", lw=0.8, ls=":")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("P(attain)")
    else:
        company = trail[trail[LEVEL] == LEVEL_COMPANY]
        ax.plot(company[CHECKPOINT], company[EXPECTED], marker="o", label="expected")
        ax.fill_between(company[CHECKPOINT], company[P10], company[P90], alpha=0.25,
                        label="P10-P90")
        ax.axhline(float(result.company()[ACTUAL]), color="black", ls="--", lw=1,
                   label="actual")
        ax.set_ylabel("period revenue")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title(f"{result.period}: the outlook at each checkpoint")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


Column = tuple[str, str, Callable[[Any], str]]


def _table(rows: pd.DataFrame, columns: Sequence[Column]) -> list[list[str]]:
    head = [title for _, title, _ in columns]
    body = [[fmt(row[col]) for col, _, fmt in columns] for _, row in rows.iterrows()]
    return [head, *body]


def _markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |"
              for row in table[1:]]
    return "\n".join(lines)


def _html_table(table: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _date(value: Any) -> str:
    return "" if value is None or pd.isna(value) else str(pd.Timestamp(value).date())


def _prob(value: Any) -> str:
    return "" if value is None or pd.isna(value) else f"{float(value):.2f}"


def _sections(result: ReviewResult, charts: Sequence[Path]
              ) -> list[tuple[str, str | list[list[str]] | Path]]:
    """The report's content: (title, text | table | picture), in reading order."""
    company = result.company()
    state = "final" if result.finished else f"to date (as of {result.as_of.date()})"
    if not pd.isna(company[TARGET]):
        headline = (f"Revenue {_money(company[ACTUAL])} ({state}) against a target of "
                    f"{_money(company[TARGET])}: attainment {_share(company[ATTAINMENT])}. ")
    elif result.has_targets:
        headline = (f"Revenue {_money(company[ACTUAL])} ({state}). The company has no target "
                    f"of its own for {result.period}; the nodes' attainment is below. ")
    else:
        headline = (f"Revenue {_money(company[ACTUAL])} ({state}). There are no revenue "
                    f"targets for {result.period}, so it is read against the outlook at the "
                    "start. ")
    headline += (f"At the start {_money(company[EXPECTED])} was expected; the difference, "
                 f"{_money(company[VS_EXPECTED])}, splits into the causes below.")
    if not pd.isna(company[P_ATTAIN_START]):
        called = company[CALLED_ON]
        headline += (f" P(attain) was {company[P_ATTAIN_START]:.2f} at the start and "
                     f"{_prob(company[P_ATTAIN_MID])} mid-period; "
                     + (f"the outcome was called on {_date(called)}." if not pd.isna(called)
                        else "the outcome was not called by the last checkpoint."
                        if result.finished else "the period is not over."))
    causes: list[Column] = [(c, c.replace("_", " "), _money)
                            for c in (EXPECTED, *CAUSES, ACTUAL)]
    nodes = result.frame[result.frame[METRIC] == METRIC_REVENUE]
    top, bottom, measure = performers(result.frame)
    node_cols: list[Column] = [
        (LEVEL, "level", str), (KEY, "key", str), (TARGET, "target", _money),
        (ACTUAL, "actual", _money), (ATTAINMENT, "attainment", _share),
        (EXPECTED, "expected at start", _money), (VS_EXPECTED, "vs expected", _money),
        (P_ATTAIN_START, "P(attain) start", _prob), (CALLED_ON, "called on", _date)]
    sections: list[tuple[str, str | list[list[str]] | Path]] = [
        (f"Review of {result.period}", headline),
        ("Attainment by node", charts[0]),
        ("From the outlook at the start to the actual", charts[1]),
        ("Company: the causes", _table(company.to_frame().T, causes)),
        ("Was it called in time?", charts[2]),
    ]
    if len(top):
        rank_cols: list[Column] = [(LEVEL, "level", str), (KEY, "key", str),
                                   (ACTUAL, "actual", _money), (ATTAINMENT, measure, _share)]
        sections += [("Top performers", _table(top, rank_cols)),
                     ("Bottom performers", _table(bottom, rank_cols))]
    sections.append(("Every node", _table(nodes, node_cols)))
    process = result.frame[result.frame[METRIC] != METRIC_REVENUE]
    if len(process):
        process_cols: list[Column] = [
            (METRIC, "metric", str), (LEVEL, "level", str), (KEY, "key", str),
            (TARGET, "target", _number), (ACTUAL, "actual", _number),
            (ATTAINMENT, "attainment", _share)]
        sections.append(("Process targets", _table(process, process_cols)))
    sections.append(("How to read it", "\n".join(f"- {n}" for n in [
        "expected: the mean of the feasibility simulation at the period's start, with only "
        "the data known then; the causes add up to actual - expected on every node, and "
        "gap = target - actual = planning gap (target - expected) - (actual - expected)",
        "pipeline won vs expected / deals slipped / deals lost: the deals open at the start, "
        "by what became of them by the period's end (their revenue minus their expected "
        "p x amount)",
        "new customers: revenue from first-time buyers; churned customers: minus the previous "
        "period's revenue of customers who bought nothing this period; run rate vs expected: "
        "what the other customers bought against the expected run rate",
        "called on: the first checkpoint from which P(attain) stayed on the side of 0.5 the "
        "outcome fell on",
        *result.notes])))
    return sections


def write_report(result: ReviewResult, path: Path) -> list[Path]:
    """Write the review as Markdown (``.md``) or HTML (``.html``) with three PNG charts beside
    it (``<name>_attainment.png``, ``<name>_waterfall.png``, ``<name>_checkpoints.png``) and
    the outlook of every node at each checkpoint (``<name>_checkpoints.csv``); returns every
    path written, the report first.

    Raises:
        ValueError: ``path`` is neither ``.md`` nor ``.html``.
    """
    suffix = path.suffix.lower()
    if suffix not in (".md", ".html", ".htm"):
        raise ValueError(f"unknown report format for {path.name}: use .md or .html")
    path.parent.mkdir(parents=True, exist_ok=True)
    charts = [path.with_name(f"{path.stem}_{name}.png")
              for name in ("attainment", "waterfall", "checkpoints")]
    for draw, chart in zip((_attainment_chart, _waterfall_chart, _trail_chart), charts,
                           strict=True):
        with atomic_path(chart) as tmp:
            draw(result, tmp)
    trail = path.with_name(f"{path.stem}_checkpoints.csv")
    write_frame(result.trail, trail)
    sections = _sections(result, charts)
    sections.insert(5, ("Every checkpoint", f"P(attain), expected, P10 and P90 of every node at "
                                            f"each checkpoint: {trail.name}"))
    text = _render_html(sections) if suffix != ".md" else _render_markdown(sections)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return [path, *charts, trail]


def _render_markdown(sections: Sequence[tuple[str, str | list[list[str]] | Path]]) -> str:
    out = []
    for i, (title, body) in enumerate(sections):
        out.append(f"{'#' if i == 0 else '##'} {title}\n")
        if isinstance(body, Path):
            out.append(f"![{title}]({body.name})\n")
        elif isinstance(body, list):
            out.append(_markdown(body) + "\n")
        else:
            out.append(body + "\n")
    return "\n".join(out)


def _render_html(sections: Sequence[tuple[str, str | list[list[str]] | Path]]) -> str:
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>{html.escape(str(sections[0][0]))}</title>",
           "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
           "text-align:right}</style></head><body>"]
    for i, (title, body) in enumerate(sections):
        tag = "h1" if i == 0 else "h2"
        out.append(f"<{tag}>{html.escape(title)}</{tag}>")
        if isinstance(body, Path):
            out.append(f"<img src='{html.escape(body.name)}' alt='{html.escape(title)}'>")
        elif isinstance(body, list):
            out.append(_html_table(body))
        elif body.startswith("- "):
            items = "".join(f"<li>{html.escape(line[2:])}</li>" for line in body.splitlines())
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{html.escape(body)}</p>")
    out.append("</body></html>")
    return "\n".join(out)

