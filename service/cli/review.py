"""``quotacast review``: target against actual per node, the gap split into its causes, and
whether the outlook called it in time (a thin shell over :mod:`service.usecases.review`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from engine.io import BadInput, output_format
from engine.schemas import KEY, LEVEL, METRIC, METRIC_REVENUE
from models.review import CAUSES
from service.cli.common import (
    AsOfOpt,
    DataOpt,
    JsonOpt,
    OutOpt,
    bad_input,
    emit,
    err,
    fail,
    print_frame,
    read_period,
    settings_of,
    use_tracking,
    writing,
)

if TYPE_CHECKING:  # pandas and matplotlib are imported only when the command runs
    from service.usecases.review import ReviewResult

__all__ = ["review"]


def _say(notes: list[str]) -> None:
    for note in notes:
        err.print(f"- {note}", markup=False, highlight=False)


def review(
    ctx: typer.Context,
    data: DataOpt = None,
    period: Annotated[str | None, typer.Option(
        "--period", "-p", help="The period to review: 2017, 2017Q3 or 2017-08 (default: the "
        "quarter of the last day before --as-of).")] = None,
    as_of: AsOfOpt = None,
    checkpoints: Annotated[int | None, typer.Option(
        "--checkpoints", min=1, max=60, help="Replay the outlook at N dates spread evenly over "
        "the period (default: each month start, or each week of a month).")] = None,
    targets: Annotated[Path | None, typer.Option(
        "--targets", help="Review against this targets file (.csv or .parquet, the targets "
        "table's columns) instead of the data's targets.")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write a report people read: .md or .html, with PNG charts beside "
        "it.")] = None,
    champions: Annotated[bool, typer.Option(
        "--champions/--point-in-time", help="Use the registered win and churn champions for "
        "the outlooks (they may have been trained on later data) instead of stage win rates "
        "fitted on the data before each checkpoint (the default).")] = False,
    draws: Annotated[int, typer.Option("--draws", min=100, max=1_000_000,
                                       help="Monte Carlo draws per checkpoint.")] = 4_000,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Review a period: target, actual, attainment and the gap's causes per node and dimension;
    when P(attain) called the outcome; top and bottom performers."""
    from service.usecases.review import read_targets_file, registered_champions, run_review
    from service.usecases.review_report import write_report

    if report is not None and report.suffix.lower() not in (".md", ".html", ".htm"):
        raise typer.BadParameter("expected a .md or .html file", param_hint="--report")
    if out is not None:
        try:
            output_format(out)  # refused before the work, not after it
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--out") from exc
    tables, when, chosen = read_period(ctx, data, period, as_of)
    given = None
    if targets is not None:
        if not targets.is_file():
            raise typer.BadParameter(f"{targets} is not a file", param_hint="--targets")
        try:
            given = read_targets_file(targets, tables)
        except BadInput as problems:
            bad_input(problems)
    models = None
    if champions:
        use_tracking(ctx)
        models = registered_champions()
    with err.status(f"reviewing {chosen} as of {when.date()}") as status:
        try:
            result = run_review(tables, chosen, when, checkpoints=checkpoints, draws=draws,
                                seed=settings_of(ctx).seed, targets=given, champions=models,
                                progress=lambda message: status.update(message))
        except ValueError as exc:
            fail(str(exc))
    _say(result.notes)
    _summary(result)
    if report is not None:
        with writing(report, "--report"):
            written = write_report(result, report)
        err.print(f"wrote the report to {report} (beside it: "
                  f"{', '.join(p.name for p in written[1:])})")
    emit(result.frame, out, as_json)


def _summary(result: ReviewResult) -> None:
    """The company line, the nodes table, the top and bottom performers."""
    from service.usecases.review_report import performers

    frame = result.frame
    company = result.company()
    state = "final" if result.finished else f"to date, {result.period} still running"
    if company["target"] == company["target"]:  # the company has a target (not NaN)
        err.print(f"{result.period}: actual {company['actual']:,.0f} ({state}) vs target "
                  f"{company['target']:,.0f}: attainment {company['attainment']:.1%}; "
                  f"expected at the start {company['expected']:,.0f}")
    else:
        which = ("no company target" if result.has_targets
                 else "no targets (pass --targets FILE)")
        err.print(f"{result.period}: actual {company['actual']:,.0f} ({state}); {which}, "
                  f"expected at the start {company['expected']:,.0f}")
    causes = ", ".join(f"{c.replace('_', ' ')} {round(company[c]):+,}" for c in CAUSES)
    err.print(f"why actual - expected = {round(company['vs_expected']):+,}: {causes}",
              markup=False, highlight=False)
    shown = [LEVEL, KEY, "target", "actual", "attainment", "expected", "vs_expected",
             "p_attain_start", "p_attain_mid", "called_on"]
    revenue = frame.loc[frame[METRIC] == METRIC_REVENUE, shown]
    revenue = revenue.assign(called_on=revenue["called_on"].dt.strftime("%Y-%m-%d")
                             .fillna(""))
    print_frame(revenue, f"review of {result.period} as of {result.as_of.date()} (every "
                "cause column is in --out)", limit=40)
    process = frame[frame[METRIC] != METRIC_REVENUE]
    if len(process):
        print_frame(process[[METRIC, LEVEL, KEY, "target", "actual", "attainment"]],
                    "process targets", limit=30)
    top, bottom, measure = performers(frame)
    if len(top):
        err.print(f"top by {measure}: " + ", ".join(
            f"{k} {v:.0%}" for k, v in zip(top[KEY], top["attainment"], strict=True)))
        err.print(f"bottom by {measure}: " + ", ".join(
            f"{k} {v:.0%}" for k, v in zip(bottom[KEY], bottom["attainment"], strict=True)))
