"""``quotacast plan``: a period's targets for every node, quarter and month, with tiers.

A thin shell over :func:`service.usecases.plan.run_plan`; the file it writes is a ``targets``
table as it is (``period, level, key, amount, tier, metric`` plus ``p_attain`` and, with
commits, ``commit, commit_gap, p_attain_commit``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from engine.io import BadInput
from engine.io.checks import check_table, parse_table
from engine.io.read import read_raw_file
from engine.periods import default_as_of
from engine.schemas import COMMITS, HIERARCHY_LEVELS, TABLES
from service.cli.common import (
    AsOfOpt,
    ChurnOpt,
    DataOpt,
    DrawsOpt,
    JsonOpt,
    OutOpt,
    bad_input,
    check_plot,
    data_source,
    emit,
    err,
    fail,
    parse_as_of,
    print_frame,
    read_data,
    settings_of,
    use_tracking,
    writing,
)
from service.usecases.request import BadRequest, RequestError, resolve_level, resolve_period

__all__ = ["plan"]


def _commits_file(path: Path) -> pd.DataFrame:
    """A commits file read and checked as the ``commits`` table (bad input: exit 2)."""
    raw, problems = read_raw_file(COMMITS, path)
    if raw is None or problems:
        bad_input(BadInput(problems))
    spec = TABLES[COMMITS]
    frame, problems, failed = parse_table(spec, raw)
    problems += check_table(spec, frame, failed)
    if problems:
        bad_input(BadInput(problems))
    return frame


def plan(
    ctx: typer.Context,
    data: DataOpt = None,
    period: Annotated[str, typer.Option(
        "--period", "-p", help="The period to plan: 2027, 2027Q1 or 2027-01.")] = "",
    company_target: Annotated[float | None, typer.Option(
        "--company-target", help="The company's target for the period (an amount).")] = None,
    growth: Annotated[float | None, typer.Option(
        "--growth", help="Or: growth over the period before (0.12 = +12%).")] = None,
    p_attain: Annotated[float | None, typer.Option(
        "--p-attain", help="Or: the amount the company reaches with this probability.")
    ] = None,
    method: Annotated[str, typer.Option(
        help="even_probability (every parent's children equally likely to hit) or "
             "proportional (to expected revenue).")] = "even_probability",
    levels: Annotated[str | None, typer.Option(
        "--levels", help="Extra levels split from the company too, comma-separated: "
                         "product,segment.")] = None,
    commits: Annotated[Path | None, typer.Option(
        "--commits", help="The reps' commits (period, rep, amount[, category, "
                          "submitted_at]); default the data's commits table.")] = None,
    as_of: AsOfOpt = None,
    draws: DrawsOpt = 10_000,
    churn: ChurnOpt = True,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw the plan to this .png (or .svg, .pdf) file.")] = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Split a period's target over quarters, months and every node (must-hit, plan, stretch).

    The file written is a targets table: save it as targets.csv in the data directory and
    `feasibility`, `recalibrate` and `warnings` use its plan rows.
    """
    from service.usecases.plan import plot_plan, run_plan

    if not period:
        raise typer.BadParameter("give the period to plan, e.g. --period 2027",
                                 param_hint="--period")
    given = sum(v is not None for v in (company_target, growth, p_attain))
    if given != 1:
        raise typer.BadParameter("give exactly one of --company-target X, --growth G or "
                                 "--p-attain Q", param_hint="--company-target")
    check_plot(plot)
    if method not in ("even_probability", "proportional"):
        raise typer.BadParameter("expected even_probability or proportional",
                                 param_hint="--method")
    when = parse_as_of(as_of)
    tables = read_data(data_source(ctx, data))
    try:
        chosen = resolve_period(period, default_as_of(tables))
    except RequestError as exc:
        raise typer.BadParameter(str(exc), param_hint="--period") from exc
    extra = [lv.strip() for lv in (levels or "").split(",") if lv.strip()]
    try:
        for level in extra:
            resolve_level(level, tables)
    except RequestError as exc:
        raise typer.BadParameter(str(exc), param_hint="--levels") from exc
    extra = [lv for lv in extra if lv not in HIERARCHY_LEVELS]
    given_commits = _commits_file(commits) if commits is not None else None
    when = when if when is not None else default_as_of(tables)
    use_tracking(ctx)
    with err.status(f"planning {chosen}") as status:
        try:
            result = run_plan(
                tables, chosen, when, company_target=company_target, growth=growth,
                p_attain=p_attain, method=method,  # type: ignore[arg-type]
                levels=extra, commits=given_commits, draws=draws,
                seed=settings_of(ctx).seed, use_churn=churn,
                progress=lambda message: status.update(message))
        except BadRequest as exc:
            fail(str(exc))
    for note in result.notes:
        err.print(f"- {note}", markup=False, highlight=False)
    frame = result.frame
    shown = frame[(frame["tier"] == "plan") & (frame["period"] == chosen)]
    print_frame(shown.drop(columns=["tier", "metric"]), f"plan for {chosen}", limit=25)
    err.print("(the plan tier of the whole period; its quarters and months and the must_hit "
              "and stretch tiers are in the file)")
    emit(frame, out, as_json)
    if plot is not None:
        with writing(plot, "--plot"):
            plot_plan(frame, chosen, plot)
        err.print(f"drew the plan to {plot}")
    if out is not None:
        err.print(f"save {out.name} as targets.csv in the data directory: feasibility, "
                  "recalibrate and warnings read its plan rows")
