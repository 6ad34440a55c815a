"""The funnel report of a period (wiring only): checks the data, builds the report with
:func:`features.funnel_report.funnel_report`, words the bottleneck of each node and draws the
company funnel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from engine.io import Tables
from engine.periods import period_bounds
from engine.schemas import KEY, LEVEL, LEVEL_COMPANY, OPPORTUNITIES, STAGE
from features.funnel_report import (
    MATERIAL_Z,
    MIN_EXITS,
    MIN_RELATIVE_DROP,
    FunnelReport,
    funnel_levels,
    funnel_report,
)
from service.usecases.request import BadRequest

__all__ = ["NO_BOTTLENECK", "NO_DEALS", "bottleneck_lines", "parse_levels", "plot_funnel",
           "run_funnel"]

NO_BOTTLENECK = (f"no bottleneck: no stage with value in it converts materially below its "
                 f"trailing rate (at least {MIN_EXITS} exits, {MIN_RELATIVE_DROP:.0%} below "
                 f"and {MATERIAL_Z:g} binomial standard errors)")
NO_DEALS = ("no opportunities table: the funnel needs deals (an opportunities table, and "
            "stage_history for conversion and velocity); this data has orders only")


def parse_levels(text: str | None, tables: Tables) -> list[str] | None:
    """``company,region,product`` -> the levels, checked against the data (None = default)."""
    if text is None:
        return None
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    known = funnel_levels(tables)
    unknown = [lv for lv in wanted if lv not in known]
    if unknown or not wanted:
        raise BadRequest(f"unknown level {', '.join(unknown) or repr(text)}; expected a comma "
                         f"list of {', '.join(known)}")
    return list(dict.fromkeys(wanted))


def run_funnel(tables: Tables, period: str, as_of: pd.Timestamp,
               levels: Sequence[str] | None = None) -> FunnelReport:
    """The funnel report of ``period`` as of ``as_of``.

    Raises:
        BadRequest: the data has no opportunities, or the period starts after ``as_of``.
    """
    if not tables.has(OPPORTUNITIES):
        raise BadRequest(NO_DEALS)
    start, _ = period_bounds(period)
    if start >= pd.Timestamp(as_of):
        raise BadRequest(f"period {period} starts on or after as_of {pd.Timestamp(as_of).date()}: "
                         "no deal has moved in it yet; choose an earlier period or a later "
                         "--as-of")
    return funnel_report(tables, period, as_of, levels)


def _pct(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.0%}"


def _money(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _errors(z: float) -> str:
    return "no noise in the trailing rate" if np.isinf(z) else f"{z:.1f} standard errors below"


def bottleneck_lines(frame: pd.DataFrame) -> list[str]:
    """One line per node with a bottleneck: the stage, its conversion against the trailing
    rate and by how many standard errors, and the value stuck in it."""
    rows = frame[frame["bottleneck"].astype(bool)]
    return [
        f"{r[LEVEL]} {r[KEY]}: bottleneck {r[STAGE]}: conversion {_pct(r['conversion'])} "
        f"({int(r['exits'])} exits) vs trailing {_pct(r['trailing_conversion'])} "
        f"({_errors(r['shortfall_z'])}), "
        f"{_money(float(r['open_amount']))} in {int(r['open_deals'])} open deals, "
        f"{_pct(r['open_aged_share'])} aged past the stage's p90"
        for _, r in rows.iterrows()
    ]


def plot_funnel(frame: pd.DataFrame, path: Path) -> None:
    """The company funnel: conversion against the trailing rate per stage, and the open amount
    in each stage (the bottleneck in red)."""
    company = frame[frame[LEVEL] == LEVEL_COMPANY]
    stages = company[STAGE].astype(str).tolist()
    y = np.arange(len(stages))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 1.2 + 0.6 * max(len(stages), 1)),
                                      sharey=True)
    left.barh(y - 0.2, company["conversion"].fillna(0.0), height=0.4, label="this period")
    left.barh(y + 0.2, company["trailing_conversion"].fillna(0.0), height=0.4, alpha=0.5,
              label="trailing 4 periods")
    left.set_xlim(0, 1)
    left.set_xlabel("conversion (moved forward or won)")
    left.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=8, frameon=False)
    colours = ["C3" if b else "C0" for b in company["bottleneck"].astype(bool)]
    right.barh(y, company["open_amount"], color=colours)
    for i, (deals, amount) in enumerate(zip(company["open_deals"], company["open_amount"],
                                            strict=True)):
        right.text(float(amount), i, f" {int(deals)} deals", va="center", fontsize=8)
    right.set_xlabel("open amount (red: bottleneck)")
    left.set_yticks(y, stages)
    left.invert_yaxis()
    if len(company):
        when = pd.Timestamp(company["as_of"].iloc[0]).date()
        fig.suptitle(f"company funnel {company['period'].iloc[0]} as of {when}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
