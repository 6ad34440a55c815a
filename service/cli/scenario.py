"""``quotacast scenario``: market shocks through the feasibility simulation, baseline beside
scenario, for every node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from service.cli.common import (
    EXIT_BAD_INPUT,
    AsOfOpt,
    DataOpt,
    DrawsOpt,
    JsonOpt,
    OutOpt,
    PeriodOpt,
    check_plot,
    emit,
    err,
    print_frame,
    read_period,
    settings_of,
    use_tracking,
    writing,
)

__all__ = ["scenario"]


def _list() -> None:
    from service.usecases.scenario import scenario_library

    for name, ready in scenario_library().items():
        shocks = "; ".join(shock.describe() for shock in ready.shocks)
        typer.echo(f"{name}: {ready.name} ({shocks})")
        if ready.description:
            typer.echo(f"    {ready.description}")


def _money(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:,.0f}"


def _share(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.1%}"


def _summary(frame: pd.DataFrame, title: str) -> None:
    from models.feasibility.scenario import EXPECTED_DELTA
    from service.usecases.scenario import most_hurt

    company = frame[frame["level"] == "company"]
    if not company.empty:
        row = company.iloc[0]
        base, shocked = row["expected_baseline"], row["expected_scenario"]
        change = (shocked - base) / base if base else float("nan")
        line = (f"{title}: company expected {_money(base)} -> {_money(shocked)} "
                f"({row[EXPECTED_DELTA]:+,.0f}, {_share(change)})")
        if pd.notna(row["p_attain_baseline"]):
            line += (f"; P(attain) {_share(row['p_attain_baseline'])} -> "
                     f"{_share(row['p_attain_scenario'])}")
        err.print(line, markup=False, highlight=False)
    hurt = most_hurt(frame)
    if hurt.empty:
        err.print("no node loses expected revenue under this scenario", markup=False,
                  highlight=False)
        return
    shown = ["level", "key", "expected_baseline", "expected_scenario", EXPECTED_DELTA,
             "p_attain_baseline", "p_attain_scenario"]
    print_frame(hurt[shown], "most hurt nodes", limit=len(hurt))


def scenario(
    ctx: typer.Context,
    data: DataOpt = None,
    period: PeriodOpt = None,
    as_of: AsOfOpt = None,
    scenario_ref: Annotated[str | None, typer.Option(
        "--scenario", "-s", help="A library scenario (see --list) or a scenario YAML file.")]
    = None,
    list_library: Annotated[bool, typer.Option(
        "--list", help="List the ready scenarios and exit.")] = False,
    draws: DrawsOpt = 10_000,
    churn: Annotated[bool, typer.Option(
        "--churn/--no-churn", help="Use the champion churn model's scores.")] = True,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw the change per node to this .png (or .svg, .pdf) file.")]
    = None,
    targets_only: Annotated[bool, typer.Option(
        "--targets-only", help="Only nodes with a target (default: every node).")] = False,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Market shocks (scenario file or library) through the feasibility simulation: every
    node's outlook, baseline beside scenario, same seed."""
    from service.usecases.scenario import (
        ScenarioError,
        plot_scenario,
        resolve_scenario,
        run_scenario_case,
    )

    if list_library:
        _list()
        return
    check_plot(plot)
    if scenario_ref is None:
        raise typer.BadParameter("give a library scenario (see --list) or a YAML file",
                                 param_hint="--scenario")
    try:
        chosen_scenario = resolve_scenario(scenario_ref)
    except ScenarioError as exc:
        for line in str(exc).splitlines():
            typer.echo(line, err=True)
        err.print("[red]the scenario is not valid; nothing was written.[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    tables, when, chosen = read_period(ctx, data, period, as_of)
    use_tracking(ctx)
    with err.status(f"scenario {chosen_scenario.name}: {chosen} as of {when.date()}") as status:
        try:
            result = run_scenario_case(
                tables, chosen, when, chosen_scenario, draws=draws, seed=settings_of(ctx).seed,
                use_churn=churn, all_nodes=not targets_only,
                progress=lambda message: status.update(message))
        except ScenarioError as exc:
            err.print(f"[red]error:[/red] {exc}; nothing was written.", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
    for note in result.notes:
        err.print(f"- {note}", markup=False, highlight=False)
    if result.frame.empty:
        err.print(f"no node to report in {chosen} (try without --targets-only)",
                  markup=False, highlight=False)
    else:
        title = f"scenario {chosen_scenario.name!r}, {chosen} as of {when.date()}"
        _summary(result.frame, title)
        if plot is not None:
            with writing(plot, "--plot"):
                plot_scenario(result.frame, title, plot)
            err.print(f"drew the change per node to {plot}")
    emit(result.frame, out, as_json)
