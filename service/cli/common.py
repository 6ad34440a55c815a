"""Plumbing shared by every command group of the CLI: console, progress, I/O options.

Command modules (``service/cli/app.py``, sub-apps such as ``service/cli/warnings.py``) import
from here, never from each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.compute import ComputeError
from engine.config import Settings
from engine.io import ROW_IDS, BadInput, Tables, load_tables, write_frame
from engine.periods import default_as_of
from engine.schemas import TABLES
from service.usecases import request
from service.usecases.request import RequestError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "PLOT_FORMATS",
    "AsOfOpt",
    "ChurnOpt",
    "DataOpt",
    "DrawsOpt",
    "JsonOpt",
    "OutOpt",
    "PeriodOpt",
    "WorkspaceDataOpt",
    "bad_input",
    "check_plot",
    "data_source",
    "emit",
    "err",
    "fail",
    "parse_as_of",
    "print_frame",
    "progress",
    "read_data",
    "read_period",
    "settings_of",
    "store_workspace_of",
    "usage_error",
    "use_tracking",
    "workspace_of",
    "writing",
]

_probe = Console(stderr=True)
# Piped or captured stderr has no width to measure: 80 columns would fold every table.
err = _probe if _probe.is_terminal else Console(stderr=True, width=160)

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


def fail(message: str) -> NoReturn:
    """Exit 1 with a plain-words error on stderr (a failure that is not bad input)."""
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(EXIT_FAILURE)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings read once by the root command (``ctx.obj``)."""
    settings: Settings = ctx.find_root().obj
    return settings


def bad_input(problems: BadInput) -> NoReturn:
    """Print every problem, one per line, and exit with status 2."""
    for problem in problems.problems:
        typer.echo(str(problem), err=True)
    err.print(f"[red]{problems.total:,} problem(s); nothing was written.[/red]")
    raise typer.Exit(EXIT_BAD_INPUT)


@contextmanager
def engine_failures() -> Iterator[None]:
    """A compute engine's failures in plain words (``--engine``): data it cannot read exits 2
    with every problem, anything else (Spark cannot start, a Delta table Spark cannot read)
    exits 1."""
    try:
        yield
    except BadInput as problems:
        bad_input(problems)
    except ComputeError as exc:
        if exc.exit_code == EXIT_BAD_INPUT:
            err.print(f"[red]bad input:[/red] {exc}", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        fail(str(exc))


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr; yields ``step(label)`` to advance it."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=total)

        def step(label: str) -> None:
            bar.update(task, advance=1, description=f"{description}: {label}")

        yield step


def read_data(source: str, lean: bool = False) -> Tables:
    """Load and validate a data source; bad input exits 2 with every problem listed.

    ``lean``: without the row ids (``order_id``, ``invoice_id``), for a command that never
    reads them (``load_tables(skip=ROW_IDS)``: a Parquet directory's ids are never read)."""
    try:
        with progress("reading tables", total=len(TABLES)) as step:
            return load_tables(source, on_table=step, skip=ROW_IDS if lean else ())
    except BadInput as problems:
        bad_input(problems)


def parse_as_of(value: str | None) -> pd.Timestamp | None:
    """``--as-of`` as a timestamp (:func:`service.usecases.request.parse_as_of`); a clear usage
    error otherwise."""
    try:
        return request.parse_as_of(value)
    except RequestError as exc:
        raise typer.BadParameter(str(exc)) from exc


def usage_error(exc: RequestError) -> typer.BadParameter:
    """A parameter the request resolver refused, as a usage error (exit 2) naming its option."""
    return typer.BadParameter(str(exc), param_hint=exc.option)


def read_period(ctx: typer.Context, data: str | None, period: str | None, as_of: str | None,
                lean: bool = False, engine: Any = None, open_history: bool = False
                ) -> tuple[Tables, pd.Timestamp, str]:
    """The tables, the as-of and the period of a planning command: ``--as-of`` checked before
    the data is read, by default the day after the data's last row (the CLI does not bound it
    to the data, as the service does); ``--period`` by default the quarter holding the day
    before it. A period that cannot be is a usage error (exit 2) naming its option.
    ``engine``: feasibility's tables read on that compute engine (Spark), revenue summed
    there (:func:`service.usecases.scaled_feasibility.feasibility_tables`; wrap the call in
    :func:`engine_failures`); the whole tables when the data has no customers table.
    ``open_history``: with ``engine``, only the stage history of the deals open at the dates
    the feasibility sees deals at (without a champion win model)."""
    when = parse_as_of(as_of)
    read: tuple[Tables, pd.Timestamp] | None = None
    if engine is not None:
        from engine.periods import as_of_after
        from service.usecases.scaled_feasibility import feasibility_dates, feasibility_tables

        source = data_source(ctx, data)
        try:
            when = when if when is not None else as_of_after(engine.data_end(source))
            dates = feasibility_dates(_period(period, when), when) if open_history else []
            read = feasibility_tables(engine, source, when, open_at=dates)
        except ValueError as exc:  # the data holds no dates
            fail(str(exc))
    if read is not None:
        tables, when = read
    else:
        tables = read_data(data_source(ctx, data), lean=lean)
        when = when if when is not None else default_as_of(tables)
    return tables, when, _period(period, when)


def _period(period: str | None, when: pd.Timestamp) -> str:
    """``--period`` checked, by default the quarter holding the day before ``when``."""
    try:
        return request.resolve_period(period, when)
    except RequestError as exc:
        raise usage_error(exc) from exc


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """A write to ``path`` (named ``what`` in messages, e.g. ``--out``) that the file system
    refuses (no permission, a parent that is a file, a full disk) ends in a plain error, exit 1."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        fail(f"cannot write {what} {path}: {reason}{where}; choose a writable location "
             "(nothing was written there)")


def emit(frame: pd.DataFrame, out: Path | None, as_json: bool) -> None:
    """Write results to ``--out`` (atomically) and/or as JSON records on stdout."""
    if out is not None:
        try:
            with writing(out, "--out"):
                write_frame(frame, out)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--out") from exc
        err.print(f"wrote {len(frame):,} rows to {out}")
    if as_json:
        typer.echo(frame.to_json(orient="records", date_format="iso"))


def print_frame(frame: pd.DataFrame, title: str, limit: int = 20) -> None:
    """A frame as a rich table on stderr (the first ``limit`` rows)."""
    table = Table(title=title, title_justify="left")
    for column in frame.columns:
        table.add_column(
            str(column), justify="right" if frame[column].dtype.kind in "if" else "left"
        )
    for row in frame.head(limit).itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    err.print(table)
    if len(frame) > limit:
        err.print(f"... and {len(frame) - limit:,} more rows")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float | int) and abs(value) >= 10_000:
        for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= size:
                return f"{value / size:,.2f}{suffix}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, pd.Timestamp):
        return str(value.date()) if value == value.normalize() else str(value)
    return str(value)


DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Data directory or SQLAlchemy URL (default: QUOTACAST_DATA, else ./demo-data).",
    ),
]
WorkspaceDataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="The data source whose workspace this is (only names the workspace, nothing is "
        "read; default: --workspace, QUOTACAST_WORKSPACE, else QUOTACAST_DATA's).",
    ),
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write results to a .csv or .parquet file.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as JSON records on stdout.")]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="ISO date; only rows dated before it are used (default: the day after the last "
        "dated row, so every row counts).",
    ),
]
PeriodOpt = Annotated[
    str | None,
    typer.Option("--period", "-p", help="2017, 2017Q3 or 2017-08 (default: the quarter of "
                 "the last day before --as-of)."),
]
DrawsOpt = Annotated[int, typer.Option("--draws", min=100, max=1_000_000,
                                       help="Monte Carlo draws.")]
ChurnOpt = Annotated[
    bool, typer.Option("--churn/--no-churn", help="Adjust for churn risk (champion churn model).")
]
# What ``--plot`` may write.
PLOT_FORMATS = (".png", ".svg", ".pdf")


def check_plot(plot: Path | None) -> None:
    """Refuse a ``--plot`` file matplotlib is not asked to write, before any work."""
    if plot is not None and plot.suffix.lower() not in PLOT_FORMATS:
        raise typer.BadParameter(f"expected a {', '.join(PLOT_FORMATS)} file",
                                 param_hint="--plot")


def data_source(ctx: typer.Context, data: str | None) -> str:
    """``--data`` if given, else the ``QUOTACAST_DATA`` setting (remembered as the command's
    data source, whose name gives the default workspace)."""
    source = data if data is not None else settings_of(ctx).data
    ctx.find_root().meta["quotacast.data"] = source
    return source


def workspace_of(ctx: typer.Context, data: str | None = None) -> str:
    """The workspace of this command: ``--workspace``/``QUOTACAST_WORKSPACE``, else derived
    from its data source (``data``, the one :func:`data_source` resolved, else the setting)."""
    if data is None:
        data = ctx.find_root().meta.get("quotacast.data")
    return settings_of(ctx).workspace_of(data)


def store_workspace_of(ctx: typer.Context, data: str | None = None) -> str:
    """The workspace of this command's rows in the quotacast database (alerts, silences,
    outbox, API keys): that of :func:`workspace_of`, ``''`` for the default workspace (which
    keeps the rows of before workspaces)."""
    if data is None:
        data = ctx.find_root().meta.get("quotacast.data")
    return settings_of(ctx).store_workspace(data)


def use_tracking(ctx: typer.Context, trains: bool = False, requires: bool = False) -> None:
    """Point MLflow at ``QUOTACAST_MLFLOW_TRACKING_URI`` (only commands that need it import it),
    for the command's workspace (``--workspace``, else its data directory's name): the models of
    one data source only.

    A registry that does not answer (a server down, a file that is not an MLflow database)
    stops the command with a plain error (exit 1): falling back to "no champion" would quietly
    give other numbers. A registry file that does not exist is said so, loudly: reading
    commands create nothing and go on without models (or stop, when the command ``requires``
    one); training commands (``trains``) create it.
    """
    from engine import tracking

    settings = settings_of(ctx)
    space = workspace_of(ctx)
    tracking.configure(settings.mlflow_tracking_uri, workspace=space,
                       adopt_unscoped=settings.owns_unscoped(space),
                       artifacts=settings.mlflow_artifacts)
    problem = tracking.registry_problem()
    if problem is not None:
        fail(problem.replace("did not answer", "does not answer", 1))
    absent = tracking.missing_registry()
    if absent is None:
        return
    if requires:
        fail(f"there is no model registry at {absent} (QUOTACAST_MLFLOW_TRACKING_URI); nothing "
             "was created. Check the path, or train a model first (`quotacast train ...` "
             "creates the registry)")
    if trains:
        err.print(f"no model registry at {absent} yet (QUOTACAST_MLFLOW_TRACKING_URI): "
                  "creating a new one there", markup=False, highlight=False)
    else:
        err.print(f"[yellow]warning:[/yellow] there is no model registry at {absent} "
                  "(QUOTACAST_MLFLOW_TRACKING_URI); nothing was created. Check the path, or "
                  "train a model first: without one, the fallbacks below are used.",
                  highlight=False)
