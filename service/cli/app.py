"""The ``quotacast`` command line (typer + rich): a thin shell over the engine's functions.

Human summaries go to stderr, machine-readable results to ``--out FILE`` or ``--json`` on
stdout. Exit codes: 0 ok, 1 failure, 2 bad input or usage (CONTRACTS.md section 3).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from engine.config import SetupError, get_settings
from engine.importers import KINDS, SOURCES, import_dataset
from engine.importers.mapped import suggest_mapping
from engine.io import BadInput, validate_tables, write_data_dir
from engine.periods import data_end
from engine.summary import table_summary
from service.cli import board
from service.cli.common import (
    EXIT_BAD_INPUT,
    DataOpt,
    JsonOpt,
    OutOpt,
    bad_input,
    data_source,
    emit,
    err,
    print_frame,
    read_data,
    settings_of,
    writing,
)
from service.cli.features import features
from service.cli.funnel import funnel
from service.cli.models import plan_app, promote, score_app, train_app
from service.cli.plan import plan
from service.cli.review import review
from service.cli.scenario import scenario
from service.cli.serve import keys_app, serve
from service.cli.targets import targets_app
from service.cli.warnings import warnings_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="quotacast",
    help="Forecasting and risk warnings for sales planning: is the target achievable, where is "
    "the gap, which customers are slipping away.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", "-w", metavar="NAME",
                     help="The workspace: the models, alerts, silences and API keys of one data "
                          "source (default: QUOTACAST_WORKSPACE, else the data directory's "
                          "name)."),
    ] = None,
) -> None:
    """Read the settings once, at the entry point."""
    settings = get_settings()
    if workspace is not None:
        if not workspace.strip():
            raise typer.BadParameter("expected a name", param_hint="--workspace")
        settings.workspace = workspace
    ctx.obj = settings


# --- commands -------------------------------------------------------------------------------


@app.command()
def validate(
    ctx: typer.Context, data: DataOpt = None, out: OutOpt = None, as_json: JsonOpt = False
) -> None:
    """Check every table of a data directory or database; list every problem at once.

    With --out, the per-table summary (rows, columns, date range) is written there.
    """
    source = data_source(ctx, data)
    tables = read_data(source)
    summary = table_summary(tables)
    print_frame(summary, f"{source}: all tables valid")
    if tables.derived:
        err.print(f"derived (not given): {', '.join(sorted(tables.derived))}")
    if tables.orders.empty:
        err.print("orders has no rows: revenue is the won opportunities, on their close_date")
    emit(summary, out, as_json)


def _import_help() -> str:
    """The import command's help, from the registry: one paragraph per dataset kind."""
    kinds = "\n\n".join(f"{s.name}: {s.description}. SRC: {s.files_text()}"
                        for s in SOURCES.values())
    return f"Convert a known public dataset into a quotacast data directory.\n\n{kinds}"


@app.command("import", help=_import_help())
def import_(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help=f"{', '.join(KINDS[:-1])} or {KINDS[-1]}")],
    src: Annotated[Path, typer.Argument(help="The dataset's folder or main file.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Data directory to create.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, csv.gz or parquet")] = "csv",
    mapping: Annotated[
        Path | None,
        typer.Option("--mapping", help="mapped: the YAML mapping of tables, columns, values "
                     "and formats."),
    ] = None,
    suggest: Annotated[
        bool,
        typer.Option("--suggest", help="mapped: draft a mapping from the files' headers and "
                     "cells (to stdout, or --mapping-out) instead of importing."),
    ] = False,
    mapping_out: Annotated[
        Path | None,
        typer.Option("--mapping-out", help="mapped: with --suggest, write the draft here."),
    ] = None,
) -> None:
    if kind not in KINDS:
        raise typer.BadParameter(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind != MAPPED:
        for given, name in ((mapping, "--mapping"), (suggest, "--suggest"),
                            (mapping_out, "--mapping-out")):
            if given:
                raise typer.BadParameter(f"only for kind {MAPPED}", param_hint=name)
    if mapping_out is not None and not suggest:
        raise typer.BadParameter("only with --suggest", param_hint="--mapping-out")
    if suggest:
        _suggest_mapping(src, mapping_out)
        return
    if out is None:
        # the message a required --out gave before --suggest existed
        out_param = next(p for p in ctx.command.params if p.name == "out")
        raise _MissingParameter(ctx=ctx, param=out_param)
    if fmt not in ("csv", "csv.gz", "parquet"):
        raise typer.BadParameter("expected csv, csv.gz or parquet", param_hint="--format")
    if kind == MAPPED and mapping is None:
        raise typer.BadParameter("mapped needs --mapping M.yaml (draft one with --suggest)",
                                 param_hint="--mapping")
    try:
        if kind == MAPPED:
            source = SOURCES[kind]
            result = source.load(source.locate(src), {"mapping": mapping})
        else:
            result = import_dataset(kind, src)
    except (ValueError, FileNotFoundError) as exc:
        hint = "--mapping" if kind == MAPPED and str(exc).startswith("the mapping") else "SRC"
        raise typer.BadParameter(str(exc), param_hint=hint) from exc
    for note in result.notes:
        err.print(f"- {note}", markup=False, highlight=False)
    tables, problems = validate_tables(result.frames)
    if problems:
        bad_input(BadInput(problems))
    with writing(out, "--out"):
        write_data_dir(result.frames, out, fmt=fmt)
    print_frame(table_summary(tables), f"imported {kind} into {out}")


MAPPED = "mapped"


# The click typer runs on (its own copy since typer 0.2x): its MissingParameter is what typer
# reports as "Missing option"; click's own class would escape as a crash.
_MissingParameter = importlib.import_module(typer.BadParameter.__module__).MissingParameter


def _suggest_mapping(src: Path, mapping_out: Path | None) -> None:
    """``import mapped SRC --suggest``: the draft mapping to stdout or ``--mapping-out``."""
    try:
        draft = suggest_mapping(src)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc), param_hint="SRC") from exc
    if mapping_out is None:
        typer.echo(draft, nl=False)
        return
    with writing(mapping_out, "--mapping-out"):
        mapping_out.write_text(draft, encoding="utf-8")
    err.print(f"wrote a draft mapping to {mapping_out}: check every commented guess, then run "
              f"quotacast import mapped {src} --mapping {mapping_out} --out DATA",
              markup=False, highlight=False)


DEMO_OUTPUT = Path("demo-output")


def _demo_step(title: str) -> None:
    err.rule(f"[bold]{title}[/bold]")


def _try_promote(ctx: typer.Context, kind: str) -> None:
    """Promote, but a challenger that loses the gate is a normal outcome in a demo re-run."""
    try:
        promote(ctx, kind)
    except typer.Exit:
        err.print(f"the {kind} champion stays in place")


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the demo data.")] = Path(
        "demo-data"
    ),
    size: Annotated[str, typer.Option(help="small, medium or large")] = "medium",
    seed: Annotated[int | None, typer.Option(help="Random seed (default QUOTACAST_SEED).")] = None,
    models: Annotated[
        bool, typer.Option("--models/--data-only", help="Also train, score and warn.")
    ] = True,
) -> None:
    """Generate a realistic company, train every model, score, warn, and show where to look.

    Results go to ./demo-output/ (at-risk customers, feasibility, recalibration, forecasts,
    alerts); models to the MLflow registry (QUOTACAST_MLFLOW_TRACKING_URI); alerts to the
    quotacast database (QUOTACAST_DATABASE_URL).
    """
    from engine.synthetic import SIZES, generate

    if size not in SIZES:
        raise typer.BadParameter(f"expected one of {', '.join(SIZES)}", param_hint="--size")
    settings = settings_of(ctx)
    seed = settings.seed if seed is None else seed
    _demo_step(f"1. a {size} demo company (seed {seed})")
    with err.status(f"generating the {size} demo company"):
        frames = generate(size, seed=seed)
        with writing(out, "--out"):
            write_data_dir(frames, out)
    tables = read_data(str(out))
    print_frame(table_summary(tables), f"demo company written to {out}")
    end = data_end(tables)
    err.print(f"data runs to {end.date()}")
    if not models:
        return
    _run_demo_models(ctx, str(out), end)
    _demo_where_to_look(settings.mlflow_tracking_uri, str(out))


def _run_demo_models(ctx: typer.Context, data: str, end: pd.Timestamp) -> None:
    from rules import default_rules_path
    from service.cli.models import (
        feasibility_cmd,
        forecast_cmd,
        recalibrate_cmd,
        score_churn_cmd,
        train_churn_cmd,
        train_forecast_cmd,
        train_win_cmd,
    )
    from service.cli.warnings import evaluate_command

    with writing(DEMO_OUTPUT, "the demo's results folder (in the working directory)"):
        DEMO_OUTPUT.mkdir(exist_ok=True)
    _demo_step("2. churn: train, promote, score the at-risk customers")
    train_churn_cmd(ctx, data=data, as_of=None, horizon_days=180, as_json=False)
    _try_promote(ctx, "churn")
    score_churn_cmd(ctx, data=data, as_of=None, horizon_days=180, owner=None,
                    out=DEMO_OUTPUT / "at_risk.csv", as_json=False)
    _demo_step("3. revenue forecast: backtest the candidates, promote, forecast 6 months")
    train_forecast_cmd(ctx, data=data, freq="M", level=None, horizon=6, as_json=False)
    _try_promote(ctx, "forecast")
    forecast_cmd(ctx, data=data, horizon=6, freq="M", level=None, fit=False,
                 out=DEMO_OUTPUT / "forecast.csv", as_json=False)
    _demo_step("4. win/slip model and this quarter's feasibility")
    train_win_cmd(ctx, data=data, as_of=None, as_json=False)
    _try_promote(ctx, "win")
    feasibility_cmd(ctx, data=data, period=None, as_of=None, draws=10_000, churn=True,
                    all_nodes=False, out=DEMO_OUTPUT / "feasibility.csv", as_json=False)
    recalibrate_cmd(ctx, data=data, period=None, as_of=None, method="even_probability",
                    draws=10_000, churn=True, out=DEMO_OUTPUT / "recalibration.csv",
                    as_json=False)
    _demo_step("5. early warnings (rules/default.yaml), evaluated weekly over the last 5 weeks")

    def evaluate_since(since: str | None) -> None:
        evaluate_command(ctx, data=data, rules=default_rules_path(), as_of=None,
                         out=DEMO_OUTPUT / "alerts.csv", as_json=False, webhook=None,
                         notify_file=None, send=True, deliver_wait=10.0, since=since,
                         every="7d")

    try:
        # Weekly dates let rules with a `for` duration get past pending.
        evaluate_since((end - pd.Timedelta(days=35)).date().isoformat())
    except typer.Exit as exit_:
        if exit_.exit_code != EXIT_BAD_INPUT:
            raise
        # The alert store already holds later evaluations (an earlier demo on other data):
        # states only move forward, so evaluate the last date alone.
        evaluate_since(None)


def _demo_where_to_look(tracking_uri: str, data: str) -> None:
    _demo_step("where to look")
    err.print(f"- results: {DEMO_OUTPUT}/ (at_risk, forecast, feasibility, recalibration, alerts)")
    err.print(f"- models and runs: mlflow ui --backend-store-uri {tracking_uri}")
    err.print(f"- the dashboard: quotacast keys add --role admin, then quotacast serve --data "
              f"{data} and open http://127.0.0.1:8000/?key=THE_KEY")


app.command("features")(features)
app.command("plan")(plan)
app.command("funnel")(funnel)
app.command("scenario")(scenario)
app.command("review")(review)
app.command("commit")(board.commit)
app.command("trend")(board.trend)
app.add_typer(train_app, name="train")
app.add_typer(score_app, name="score")
app.command()(promote)
for _command in plan_app.registered_commands:
    app.registered_commands.append(_command)
app.add_typer(warnings_app, name="warnings")
app.add_typer(keys_app, name="keys")
app.add_typer(targets_app, name="targets")
app.command("serve")(serve)


def main() -> None:
    """Console-script entry point: a Python traceback is never the answer to a user.

    Expected failures exit through ``fail``/``bad_input`` with plain words; a fault of the
    environment (:class:`engine.config.SetupError`: a database URL, a registry file) is told
    the same way, with its own exit code. Anything else is a bug or an unforeseen shape of
    data: the user gets one plain line and exit 1, and the traceback goes to a file for the bug
    report.
    """
    try:
        app()  # standalone: usage errors, exits and Ctrl-C end here with their own exit codes
    except SetupError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # the last line of defence, see the docstring
        report = _write_crash_report()
        err.print(f"[red]error:[/red] quotacast could not finish ({type(exc).__name__}: {exc}). "
                  f"Nothing was written. Details for a bug report: {report}", highlight=False)
        raise SystemExit(1) from None


def _write_crash_report() -> str:
    """Write the current exception's traceback to a temporary file and return its path."""
    import tempfile
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix="quotacast-error-", suffix=".txt",
                                     delete=False) as handle:
        traceback.print_exc(file=handle)
    return handle.name
