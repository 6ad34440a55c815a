"""``quotacast funnel``: stage conversion against the trailing rate, velocity, aging and the
bottleneck stage per node, for one period."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import (
    AsOfOpt,
    DataOpt,
    JsonOpt,
    OutOpt,
    PeriodOpt,
    check_plot,
    emit,
    err,
    fail,
    print_frame,
    read_period,
    writing,
)
from service.usecases.request import BadRequest

__all__ = ["funnel"]

_SHOWN = ["key", "stage", "exits", "conversion", "trailing_conversion", "median_days",
          "open_deals", "open_amount", "open_aged_share", "bottleneck"]


def funnel(
    ctx: typer.Context,
    data: DataOpt = None,
    period: PeriodOpt = None,
    as_of: AsOfOpt = None,
    levels: Annotated[str | None, typer.Option(
        "--levels", help="Comma list of node levels (default company,region,team,rep); "
        "product and segment when the data has them.")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw the company funnel to this .png (or .svg, .pdf) file.")
    ] = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Funnel of a period per node and stage: conversion vs the trailing 4 periods, days in
    stage, open deals and their aging, and each node's bottleneck stage."""
    from service.usecases.funnel import (
        NO_BOTTLENECK,
        bottleneck_lines,
        parse_levels,
        plot_funnel,
        run_funnel,
    )

    check_plot(plot)
    tables, when, chosen = read_period(ctx, data, period, as_of)
    try:
        wanted = parse_levels(levels, tables)
    except BadRequest as exc:
        raise typer.BadParameter(str(exc), param_hint="--levels") from exc
    try:
        report = run_funnel(tables, chosen, when, wanted)
    except BadRequest as exc:
        fail(str(exc))
    for note in report.notes:
        err.print(f"- {note}", markup=False, highlight=False)
    frame = report.frame
    title = f"funnel of {chosen} as of {report.as_of.date()}"
    company = frame[frame["level"] == "company"]
    if company.empty:
        err.print(f"{title}: no deal in any stage")
    else:
        print_frame(company[_SHOWN], title, limit=30)
    lines = bottleneck_lines(frame)
    for line in lines:
        err.print(line, markup=False, highlight=False)
    if not frame.empty and frame["conversion"].isna().all():
        err.print("no bottleneck: no stage exit was measured (conversion needs stage_history)")
    elif not lines and not frame.empty:
        err.print(NO_BOTTLENECK)
    if plot is not None:
        with writing(plot, "--plot"):
            plot_funnel(frame, plot)
        err.print(f"drew the company funnel to {plot}")
    emit(frame, out, as_json)
