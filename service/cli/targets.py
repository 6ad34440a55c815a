"""``quotacast targets``: targets to fill in, one row per node of the hierarchy.

``quotacast targets template --period 2018Q1 --out targets.csv`` writes the targets table's
columns (``period, level, key, amount``) for the company, every region, team and rep, with
``amount`` empty to fill, and beside it what each node sold in the period before and (when the
data has revenue that far back) in the same period a year before, as ``actual_<period>`` columns.
The filled file is a valid ``targets`` table as it is: extra columns are tolerated (read, never
used). Rows left without an amount must be deleted (a blank amount is a missing value).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from engine.io import Tables, is_sql_url, write_frame
from engine.periods import default_as_of, first_day, period_bounds
from engine.schemas import AMOUNT, KEY, LEVEL, PERIOD
from features.hierarchy import node_actuals
from service.cli.common import (
    DataOpt,
    data_source,
    err,
    fail,
    print_frame,
    read_data,
    writing,
)
from service.usecases.request import RequestError, resolve_period

__all__ = ["period_label", "targets_app", "template_frame"]

targets_app = typer.Typer(help="Targets: a fillable targets file for every node.",
                          no_args_is_help=True)

ACTUAL_PREFIX = "actual_"


def period_label(start: pd.Timestamp, like: str) -> str:
    """The period starting at ``start`` written like ``like`` (2017, 2017Q3 or 2017-08)."""
    if "Q" in like:
        return f"{start.year}Q{(start.month - 1) // 3 + 1}"
    if "-" in like:
        return f"{start.year}-{start.month:02d}"
    return f"{start.year}"


def _shifted(period: str, months: int) -> str:
    start, _ = period_bounds(period)
    return period_label(start - pd.DateOffset(months=months), period)


def template_frame(tables: Tables, period: str) -> pd.DataFrame:
    """``period, level, key, amount`` (empty) for every node, then ``actual_<period>`` of the
    period before and, when the data has revenue then, of the same period a year before."""
    start, _ = period_bounds(period)
    months = 3 if "Q" in period else 1 if "-" in period else 12
    earliest = first_day(tables)
    frame: pd.DataFrame | None = None
    last, year_ago = _shifted(period, months), _shifted(period, 12)
    for before in dict.fromkeys((last, year_ago)):
        since, until = period_bounds(before)
        if until <= earliest:
            continue
        actuals = node_actuals(tables, since, until)
        if before != last and not actuals[AMOUNT].any():
            continue  # the data has no revenue a year before: no column of zeros
        if frame is None:
            frame = actuals[[LEVEL, KEY]].copy()
            frame.insert(0, PERIOD, period)
            frame[AMOUNT] = pd.Series(float("nan"), index=frame.index)
        frame[f"{ACTUAL_PREFIX}{before}"] = actuals[AMOUNT].to_numpy()
    if frame is None:
        frame = node_actuals(tables, start, start)[[LEVEL, KEY]]
        frame.insert(0, PERIOD, period)
        frame[AMOUNT] = pd.Series(float("nan"), index=frame.index)
    return frame


@targets_app.command("template")
def template(
    ctx: typer.Context,
    data: DataOpt = None,
    period: Annotated[str | None, typer.Option(
        "--period", help="The period to set targets for: 2018, 2018Q1 or 2018-01 (default: "
        "the quarter after the data).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The targets file to write (.csv "
                                      "or .parquet); fill its amount column.")] = Path(
                                          "targets-template.csv"),
) -> None:
    """Write a fillable targets file: every node, an empty amount, last period's actuals."""
    source = data_source(ctx, data)
    tables = read_data(source)
    try:
        chosen = resolve_period(period, default_as_of(tables) + pd.Timedelta(days=1))
    except RequestError as exc:
        raise typer.BadParameter(str(exc), param_hint="--period") from exc
    if (not is_sql_url(source) and out.name.split(".")[0] == "targets"
            and out.parent.resolve() == Path(source).resolve()):
        fail(f"{out} would replace the data's targets table before it is filled; write the "
             "template elsewhere, fill it, then move it there")
    frame = template_frame(tables, chosen)
    with writing(out, "--out"):
        write_frame(frame, out)
    print_frame(frame.head(12), f"targets to fill for {chosen}", limit=12)
    actual = [c for c in frame.columns if c.startswith(ACTUAL_PREFIX)]
    err.print(f"wrote {len(frame):,} nodes to {out}; fill the amount column (delete rows "
              f"without a target){', beside ' + ', '.join(actual) if actual else ''}, then save "
              "it as targets.csv in the data directory and run `quotacast validate`")
