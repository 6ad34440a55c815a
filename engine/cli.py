"""The ``quotacast`` command line (typer + rich): a thin shell over the engine's functions.

Human summaries go to stderr, machine-readable results to ``--out FILE`` or ``--json`` on
stdout. Exit codes: 0 ok, 1 failure, 2 bad input or usage (CONTRACTS.md section 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine import schemas as S
from engine.config import Settings, get_settings
from engine.io import BadInput, Tables, load_tables, validate_tables, write_data_dir, write_frame
from engine.summary import data_end, table_summary

__all__ = ["app", "main"]

app = typer.Typer(
    name="quotacast",
    help="Forecasting and risk warnings for sales planning: is the target achievable, where is "
    "the gap, which customers are slipping away.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


# --- shared plumbing ------------------------------------------------------------------------


class Failure(click.ClickException):
    """A plain-words failure of a command: click prints ``Error: message`` and exits 1."""

    exit_code = EXIT_FAILURE


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


@app.callback()
def _root(ctx: typer.Context) -> None:
    """Read the settings once, at the entry point."""
    ctx.obj = get_settings()


def bad_input(problems: BadInput) -> NoReturn:
    """Print every problem, one per line, and exit with status 2."""
    for problem in problems.problems:
        typer.echo(str(problem), err=True)
    err.print(f"[red]{len(problems.problems)} problem(s); nothing was written.[/red]")
    raise typer.Exit(EXIT_BAD_INPUT)


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


def read_data(source: str) -> Tables:
    """Load and validate a data source; bad input exits 2 with every problem listed."""
    try:
        with progress("reading tables", total=len(S.TABLES)) as step:
            return load_tables(source, on_table=step)
    except BadInput as problems:
        bad_input(problems)


def parse_as_of(value: str | None) -> pd.Timestamp | None:
    """``--as-of`` as a timestamp; a clear usage error otherwise."""
    if value is None:
        return None
    try:
        return pd.Timestamp(date.fromisoformat(value))
    except ValueError as exc:
        raise typer.BadParameter(f"expected an ISO date like 2017-08-31, got {value!r}") from exc


def emit(frame: pd.DataFrame, out: Path | None, as_json: bool) -> None:
    """Write results to ``--out`` (atomically) and/or as JSON records on stdout."""
    if out is not None:
        try:
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
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Data directory or SQLAlchemy URL (default: QUOTACAST_DATA, else ./demo-data).",
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
        help="ISO date; default: the last date in the data. Only rows dated before it are used.",
    ),
]


def _data(ctx: typer.Context, data: str | None) -> str:
    return data if data is not None else _settings(ctx).data


# --- commands -------------------------------------------------------------------------------


@app.command()
def validate(
    ctx: typer.Context, data: DataOpt = None, out: OutOpt = None, as_json: JsonOpt = False
) -> None:
    """Check every table of a data directory or database; list every problem at once.

    With --out, the per-table summary (rows, columns, date range) is written there.
    """
    source = _data(ctx, data)
    tables = read_data(source)
    summary = table_summary(tables)
    print_frame(summary, f"{source}: all tables valid")
    if tables.derived:
        err.print(f"derived (not given): {', '.join(sorted(tables.derived))}")
    emit(summary, out, as_json)


@app.command("import")
def import_(
    kind: Annotated[str, typer.Argument(help="online-retail, crm-sales or superstore")],
    src: Annotated[Path, typer.Argument(help="The dataset's folder or main file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Data directory to create.")],
    fmt: Annotated[str, typer.Option("--format", help="csv, csv.gz or parquet")] = "csv",
) -> None:
    """Convert a known public dataset into a quotacast data directory."""
    from engine.importers import KINDS, import_dataset

    if kind not in KINDS:
        raise typer.BadParameter(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if fmt not in ("csv", "csv.gz", "parquet"):
        raise typer.BadParameter("expected csv, csv.gz or parquet", param_hint="--format")
    try:
        result = import_dataset(kind, src)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc), param_hint="SRC") from exc
    for note in result.notes:
        err.print(f"- {note}", markup=False, highlight=False)
    tables, problems = validate_tables(result.frames)
    if problems:
        bad_input(BadInput(problems))
    write_data_dir(result.frames, out, fmt=fmt)
    print_frame(table_summary(tables), f"imported {kind} into {out}")


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the demo data.")] = Path(
        "demo-data"
    ),
    size: Annotated[str, typer.Option(help="small, medium or large")] = "medium",
    seed: Annotated[int | None, typer.Option(help="Random seed (default QUOTACAST_SEED).")] = None,
) -> None:
    """Generate a realistic demo company, check it and show what is there."""
    from engine.synthetic import SIZES, generate

    if size not in SIZES:
        raise typer.BadParameter(f"expected one of {', '.join(SIZES)}", param_hint="--size")
    settings = _settings(ctx)
    seed = settings.seed if seed is None else seed
    with err.status(f"generating the {size} demo company (seed {seed})"):
        frames = generate(size, seed=seed)
        write_data_dir(frames, out)
    tables = read_data(str(out))
    print_frame(table_summary(tables), f"demo company written to {out}")
    err.print(f"data runs to {data_end(tables).date()}; try: quotacast validate --data {out}")


def main() -> None:
    """Console-script entry point."""
    app()
