"""Model commands: ``train``, ``promote`` and ``score`` (thin shells over service/usecases)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pandas as pd
import typer

from engine.io import Tables
from engine.schemas import OPPORTUNITIES
from models.base import FORECAST, MODEL_KINDS
from service.cli.board import champions, record_simulation
from service.cli.common import (
    AsOfOpt,
    ChurnOpt,
    DataOpt,
    DrawsOpt,
    JsonOpt,
    OutOpt,
    PeriodOpt,
    check_plot,
    data_source,
    emit,
    engine_failures,
    err,
    fail,
    parse_as_of,
    print_frame,
    read_data,
    read_period,
    settings_of,
    usage_error,
    use_tracking,
    workspace_of,
    writing,
)
from service.cli.features import EngineOpt
from service.usecases.request import BadRequest, RequestError, resolve_level

if TYPE_CHECKING:  # mlflow is imported only by the commands that need it
    from contextlib import ExitStack

    from engine import tracking
    from engine.config import Settings
    from models.forecast.local import LocalRunner
    from service.usecases.train import Trained

__all__ = ["plan_app", "promote", "score_app", "train_app"]

train_app = typer.Typer(help="Train a model, log it to MLflow and register it as challenger.",
                        no_args_is_help=True)
score_app = typer.Typer(help="Score with the champion model.", no_args_is_help=True)
# Planning commands (feasibility, recalibrate) are top-level; this app only collects them.
plan_app = typer.Typer()

HorizonOpt = Annotated[
    int | None,
    typer.Option("--horizon-days", min=7, max=730,
                 help="Churn horizon H in days (default: train picks the longest of "
                      "180/90/60/30 the history allows; score uses the model's)."),
]


@train_app.command("churn")
def train_churn_cmd(
    ctx: typer.Context,
    data: DataOpt = None,
    as_of: AsOfOpt = None,
    horizon_days: HorizonOpt = None,
    as_json: JsonOpt = False,
    engine: EngineOpt = None,
) -> None:
    """Train LightGBM and BG/NBD on weekly snapshots, evaluate on a later one, register the best."""
    from engine.compute import open_engine
    from service.usecases.scaled import train_churn_on
    from service.usecases.train import train

    settings = settings_of(ctx)
    name = engine or settings.engine
    when = parse_as_of(as_of)
    source = data_source(ctx, data)
    tables = read_data(source, lean=True) if name == "pandas" else None
    use_tracking(ctx, trains=True)
    where = f" on Spark {settings.spark_master}" if name == "spark" else ""
    with err.status(f"training the churn model{where}") as status:
        def step(message: str) -> None:
            status.update(f"churn: {message}")

        try:
            if tables is not None:
                result = train("churn", tables, as_of=when, seed=settings.seed, progress=step,
                               horizon_days=horizon_days)
            else:
                with engine_failures(), open_engine(name, settings.spark_master) as compute:
                    result = train_churn_on(compute, source, as_of=when, seed=settings.seed,
                                            progress=step, horizon_days=horizon_days)
        except ValueError as exc:
            fail(str(exc))
    _notes(ctx, result.notes)
    baselines = result.baselines.rename_axis("model").reset_index()
    print_frame(baselines, "holdout metrics (ours against the baselines)")
    _registered(result, as_json)


def promote(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="churn, forecast or win")],
    version: Annotated[str | None, typer.Option(help="Promote this version instead.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Skip the holdout comparison.")] = False,
    freq: Annotated[str, typer.Option("--freq", help="forecast only: the frequency of the "
                                      "forecaster (D, W, M or Q).")] = "M",
    level: Annotated[str | None, typer.Option("--level", help="forecast only: the level it "
                                              "was trained for (product, segment...).")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", "-d", help="The data the model was trained on: its workspace's champion moves "
        "(default: --workspace, QUOTACAST_WORKSPACE, else QUOTACAST_DATA).")] = None,
) -> None:
    """Move the champion alias to the challenger if it is at least as good on the same holdout."""

    if model not in MODEL_KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(MODEL_KINDS)}", param_hint="MODEL")
    kind = model
    if model == FORECAST.name:
        from service.usecases.forecast import forecast_kind

        kind = forecast_kind(_freq(freq), level)
    if data is not None:
        data_source(ctx, data)
    use_tracking(ctx, requires=True)
    decision = _promote_and_say(kind, version=version, force=force)
    if not decision.promoted and not decision.reason.endswith("already the champion"):
        raise typer.Exit(1)


def _promote_and_say(kind: str, version: str | None = None,
                     force: bool = False) -> tracking.PromotionDecision:
    """Promote ``kind``'s challenger (or ``version``) through the gate and say what happened."""
    from engine import tracking

    try:
        decision = tracking.promote(kind, version=version, force=force)
    except tracking.ChampionMissingError as exc:
        fail(str(exc))
    verb = "promoted" if decision.promoted else "kept the champion; did not promote"
    err.print(f"{verb} {tracking.model_name(kind)} v{decision.version}: {decision.reason}",
              highlight=False)
    return decision


@score_app.command("churn")
def score_churn_cmd(
    ctx: typer.Context,
    data: DataOpt = None,
    as_of: AsOfOpt = None,
    horizon_days: HorizonOpt = None,
    owner: Annotated[str | None, typer.Option(help="Only this account manager's customers.")]
    = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    engine: EngineOpt = None,
) -> None:
    """At-risk customers, riskiest first by revenue at risk, with the reasons in plain words."""
    from engine import tracking
    from engine.compute import open_engine
    from service.usecases.churn import score_churn, score_churn_fallback
    from service.usecases.scaled import score_churn_on

    settings = settings_of(ctx)
    name = engine or settings.engine
    when = parse_as_of(as_of)
    source = data_source(ctx, data)
    if name == "spark":
        use_tracking(ctx)
        try:
            with engine_failures(), open_engine(name, settings.spark_master) as compute, \
                    err.status(f"scoring churn risk on Spark {settings.spark_master}"):
                run = score_churn_on(compute, source, as_of=when, horizon_days=horizon_days,
                                     owner=owner)
        except BadRequest as exc:
            raise typer.BadParameter(str(exc)) from exc
        except ValueError as exc:
            fail(str(exc))
        scores = run.frame
        if run.fallback is not None:
            err.print(f"{run.fallback}; computed on the driver from the features Spark "
                      "computed", markup=False, highlight=False)
        else:
            err.print(f"features on Spark {settings.spark_master}, champion scored there "
                      "through its spark_udf", markup=False, highlight=False)
    else:
        tables = read_data(source, lean=True)
        if tables.orders.empty:
            fail("the orders table is empty: no customer has bought yet, so there is no churn "
                 "risk to score")
        use_tracking(ctx)
        with err.status("scoring churn risk"):
            try:
                try:
                    scores = score_churn(tables, as_of=when, horizon_days=horizon_days,
                                         owner=owner)
                except tracking.ChampionMissingError:
                    scores, fallback = score_churn_fallback(tables, as_of=when,
                                                            horizon_days=horizon_days,
                                                            owner=owner)
                    err.print(fallback, markup=False, highlight=False)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from exc
    at_risk = scores["revenue_at_risk"].sum()
    err.print(f"{len(scores):,} active customers; revenue at risk {at_risk:,.0f}")
    print_frame(scores.head(10), "riskiest customers", limit=10)
    emit(scores, out, as_json)


def _registered(result: Trained, as_json: bool) -> None:
    """Say what a training run registered; ``--json`` prints run id, version and metrics."""
    err.print(f"run id {result.run_id}")
    err.print(f"registered {result.model_name} version {result.version} as challenger")
    if as_json:
        summary = {"run_id": result.run_id, "version": result.version, **result.metrics}
        typer.echo(pd.Series(summary).to_json())


def _no_champion_note(ctx: typer.Context, kind: str, notes: list[str]) -> None:
    """Say when a command ran without ``kind``'s champion: which workspace had none, and how
    to train one (a champion of another workspace is never used)."""
    if any(note.startswith(f"{kind} model: champion") for note in notes):
        return
    space = workspace_of(ctx)
    data = ctx.find_root().meta.get("quotacast.data", "DATA")
    line = (f"no {kind} champion in workspace {space} (champions of other data sources are "
            f"never used): `quotacast train {kind} --data {data}` then "
            f"`quotacast promote {kind} --data {data}` trains one")
    if _first_time(ctx, line):
        err.print(line, markup=False, highlight=False, soft_wrap=True)


def _notes(ctx: typer.Context, notes: list[str]) -> None:
    """The notes, each once per run (``quotacast demo`` runs several commands in one)."""
    for note in notes:
        if _first_time(ctx, note):
            err.print(f"- {note}", markup=False, highlight=False)


def _first_time(ctx: typer.Context, line: str) -> bool:
    """Whether ``line`` was not said yet in this run (it counts as said now)."""
    said: set[str] = ctx.find_root().meta.setdefault("quotacast.said", set())
    if line in said:
        return False
    said.add(line)
    return True


@train_app.command("win")
def train_win_cmd(
    ctx: typer.Context, data: DataOpt = None, as_of: AsOfOpt = None, as_json: JsonOpt = False
) -> None:
    """Train the win/slip model (won AND closed inside the period) on past pipeline snapshots."""
    from features.funnel import funnel_notes
    from service.usecases.train import train

    when = parse_as_of(as_of)
    tables = read_data(data_source(ctx, data))
    if not tables.has(OPPORTUNITIES):
        fail("the data has no opportunities table: there is no pipeline to learn from")
    use_tracking(ctx, trains=True)
    _notes(ctx, funnel_notes(tables))
    with err.status("training the win/slip model") as status:
        try:
            result = train(
                "win", tables, as_of=when, seed=settings_of(ctx).seed,
                progress=lambda message: status.update(f"win: {message}"),
            )
        except ValueError as exc:
            fail(str(exc))
    _notes(ctx, result.notes)
    print_frame(result.comparison.rename_axis("model").reset_index(), "holdout metrics")
    _registered(result, as_json)




@plan_app.command("feasibility")
def feasibility_cmd(
    ctx: typer.Context,
    data: DataOpt = None,
    period: PeriodOpt = None,
    as_of: AsOfOpt = None,
    draws: DrawsOpt = 10_000,
    churn: ChurnOpt = True,
    all_nodes: Annotated[bool, typer.Option("--all-nodes",
                                            help="Also nodes without a target.")] = False,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    engine: EngineOpt = None,
) -> None:
    """Is the target achievable? P(attain), P10/P50/P90, gap, must-hit and stretch per node."""
    from engine.compute import open_engine
    from models.feasibility import fit_stage_rates
    from service.usecases.feasibility import engine_blocks, run_feasibility, score_churn_here
    from service.usecases.scaled import engine_churn_scorer
    from service.usecases.scaled_feasibility import (
        engine_stage_rates,
        snapshot_tables,
        with_customer_revenue,
    )

    settings = settings_of(ctx)
    name = engine or settings.engine
    where = f" on Spark {settings.spark_master}" if name == "spark" else ""
    with engine_failures(), open_engine(name, settings.spark_master) as compute:
        if name == "spark":
            # Revenue summed on the executors (the orders never reach this process), the
            # stage rates counted there, and a churn champion scores the customers there:
            # the champions first, of the workspace the data source names.
            source = data_source(ctx, data)
            use_tracking(ctx)
            models = champions(ctx)  # loaded once: the snapshot's too
            tables, when, chosen = read_period(ctx, data, period, as_of, lean=True,
                                               engine=compute, open_history="win" not in models)
            stage_rates = engine_stage_rates(compute, tables)
            scorer = engine_churn_scorer(compute, source)
            if churn and "churn" in models:
                with err.status(f"summing each customer's revenue{where}"):
                    tables = with_customer_revenue(compute, tables)
        else:
            # One machine reads the whole tables, as the board, the plan and the service do,
            # so their P(attain) is the command's to the last digit (the summed tables hand
            # the deals over in id order: other draws, the same answer within Monte Carlo
            # error).
            tables, when, chosen = read_period(ctx, data, period, as_of, lean=True)
            use_tracking(ctx)
            models = champions(ctx)
            stage_rates, scorer = fit_stage_rates, score_churn_here
        with err.status(f"simulating {chosen} as of {when.date()}{where}") as status:
            status.update("loading the win model")
            result = run_feasibility(
                tables, chosen, when, draws=draws, seed=settings.seed, use_churn=churn,
                all_nodes=all_nodes, progress=lambda message: status.update(message),
                blocks=engine_blocks(compute), models=models, stage_rates=stage_rates,
                churn_scorer=scorer)
    _notes(ctx, result.notes)
    if tables.has(OPPORTUNITIES):  # no deals: no win model to train either
        _no_champion_note(ctx, "win", result.notes)
    # the board's trend
    record_simulation(ctx, snapshot_tables(tables), result.simulation, chosen, when,
                      frame=result.frame)
    shown = ["level", "key", "target", "closed_to_date", "p_attain", "p10", "p50", "p90",
             "must_hit", "stretch"]
    if not result.frame.empty:
        print_frame(result.frame[shown], f"feasibility of {chosen} as of {when.date()}",
                    limit=30)
    emit(result.frame, out, as_json)


@plan_app.command("recalibrate")
def recalibrate_cmd(
    ctx: typer.Context,
    data: DataOpt = None,
    period: PeriodOpt = None,
    as_of: AsOfOpt = None,
    method: Annotated[str, typer.Option(
        help="even_probability (children end with the same chance) or proportional_p50.")]
    = "even_probability",
    draws: DrawsOpt = 10_000,
    churn: ChurnOpt = True,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw the original and recalibrated targets to this .png "
                       "(or .svg, .pdf) file.")] = None,
) -> None:
    """Revised targets for the rest of the period; every parent's total still holds."""
    from service.usecases.feasibility import run_recalibration

    if method not in ("even_probability", "proportional_p50"):
        raise typer.BadParameter("expected even_probability or proportional_p50",
                                 param_hint="--method")
    check_plot(plot)
    tables, when, chosen = read_period(ctx, data, period, as_of)
    use_tracking(ctx)
    with err.status(f"recalibrating {chosen} as of {when.date()}") as status:
        frame, notes = run_recalibration(
            tables, chosen, when, method=method,  # type: ignore[arg-type]
            draws=draws, seed=settings_of(ctx).seed, use_churn=churn,
            progress=lambda message: status.update(message),
        )
    _notes(ctx, notes)
    print_frame(frame, f"recalibrated targets for {chosen} as of {when.date()}", limit=30)
    emit(frame, out, as_json)
    if plot is not None:
        _plot_recalibration(frame, chosen, when, method, plot)


def _plot_recalibration(frame: pd.DataFrame, period: str, when: pd.Timestamp, method: str,
                        plot: Path) -> None:
    """``recalibrate --plot``: the picture, or a note saying why there is none."""
    from service.usecases.recalibration_plot import plot_recalibration, plotted_nodes

    if plotted_nodes(frame)[0].empty:
        err.print(f"no node has a target in {period}: no picture drawn ({plot} not written)")
        return
    with writing(plot, "--plot"):
        plot_recalibration(frame, period, when, plot, method=method)
    err.print(f"drew the original and recalibrated targets to {plot}")


FreqOpt = Annotated[str, typer.Option("--freq", help="D, W, M or Q.")]
LevelOpt = Annotated[
    str | None,
    typer.Option("--level", help="company (default), region, team, rep, or a column such as "
                 "product or segment."),
]


def _freq(freq: str) -> str:
    if freq not in ("D", "W", "M", "Q"):
        raise typer.BadParameter("expected D, W, M or Q", param_hint="--freq")
    return freq


def _level(tables: Tables, level: str | None) -> None:
    try:
        resolve_level(level, tables)
    except RequestError as exc:
        raise usage_error(exc) from exc


def _forecast_data(stack: ExitStack, settings: Settings, engine: str | None, source: str,
                   when: pd.Timestamp | None, level: str | None
                   ) -> tuple[Tables, pd.Timestamp | None, LocalRunner | None]:
    """The tables of a forecast command, its as-of and where its per-series candidates are
    fitted: loaded here for pandas (no runner: fitted here); read on Spark with the runner
    that fits there (the engine stays open until ``stack`` closes)."""
    from service.usecases.scaled_forecast import engine_data

    name = engine or settings.engine
    if name != "spark":
        return read_data(source, lean=True), when, None
    try:
        with engine_failures(), \
                err.status(f"reading revenue rows on Spark {settings.spark_master}"):
            on = stack.enter_context(engine_data(name, settings.spark_master, source, when,
                                                 level))
    except ValueError as exc:  # the data holds no dates
        fail(str(exc))
    return on.tables, on.as_of, on.runner


@train_app.command("forecast")
def train_forecast_cmd(
    ctx: typer.Context,
    data: DataOpt = None,
    freq: FreqOpt = "M",
    level: LevelOpt = None,
    horizon: Annotated[int | None, typer.Option(min=1, help="Periods ahead.")] = None,
    as_json: JsonOpt = False,
    as_of: AsOfOpt = None,
    promote_now: Annotated[bool, typer.Option(
        "--promote", help="Promote it at once if it passes the gate (as `quotacast promote "
        "forecast --freq F --level L` would).")] = False,
    engine: EngineOpt = None,
) -> None:
    """Backtest the candidate forecasters, log them to MLflow, register the challenger.

    Each frequency and level set has its own registered model and champion, so a weekly or a
    product forecaster is trained beside the monthly one. With --engine spark the series'
    rows are read on Spark and the per-series candidates fitted there (the same forecaster).
    """
    from contextlib import ExitStack

    from service.cli.common import progress
    from service.usecases.forecast import forecast_kind
    from service.usecases.train import train

    freq = _freq(freq)
    when = parse_as_of(as_of)
    settings = settings_of(ctx)
    source = data_source(ctx, data)
    with ExitStack() as stack:
        tables, when, runner = _forecast_data(stack, settings, engine, source, when, level)
        _level(tables, level)
        use_tracking(ctx, trains=True)
        with progress("backtesting forecasters") as step:
            try:
                with engine_failures():
                    result = train("forecast", tables, as_of=when, seed=settings.seed,
                                   progress=step, freq=freq, level=level, horizon=horizon,
                                   n_jobs=settings.n_jobs, runner=runner)
            except ValueError as exc:
                fail(str(exc))
    _notes(ctx, result.notes)
    table = result.table.sort_values(["level", "mase"])
    print_frame(table[["model", "level", "mase", "wape", "coverage_80"]],
                "backtest accuracy per model and level", limit=40)
    _registered(result, as_json)
    kind = forecast_kind(freq, level)
    if promote_now:
        _promote_and_say(kind)
    elif kind != "forecast":
        err.print(f"to serve it: `quotacast promote forecast --freq {freq}"
                  f"{'' if level is None else ' --level ' + level}`", highlight=False)


@plan_app.command("forecast")
def forecast_cmd(
    ctx: typer.Context,
    data: DataOpt = None,
    horizon: Annotated[int, typer.Option(min=1, help="Periods ahead.")] = 6,
    freq: FreqOpt = "M",
    level: LevelOpt = None,
    fit: Annotated[bool, typer.Option("--fit", help="Fit fresh instead of loading the "
                                      "champion.")] = False,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    as_of: AsOfOpt = None,
    engine: EngineOpt = None,
) -> None:
    """Revenue forecast per node of a level, with P10/P50/P90 (champion model, or --fit).

    Forecasts start with the first period not complete in the data before --as-of: an
    incomplete last period is forecast whole (never below what it already booked). With
    --engine spark the series' rows are read on Spark and --fit fits the per-series candidates
    there (the same forecasts as pandas).
    """
    from contextlib import ExitStack

    from engine import tracking
    from service.usecases.forecast import forecast_champion, forecast_fresh

    freq = _freq(freq)
    when = parse_as_of(as_of)
    settings = settings_of(ctx)
    source = data_source(ctx, data)
    with ExitStack() as stack:
        tables, when, runner = _forecast_data(stack, settings, engine, source, when, level)
        _level(tables, level)
        why_fresh = None
        if not fit:
            use_tracking(ctx)
            try:
                frame, version, notes = forecast_champion(tables, freq, horizon, level,
                                                          as_of=when)
                err.print(f"forecast by champion v{version}")
            except (tracking.ChampionMissingError, ValueError) as exc:
                why_fresh = str(exc)
        if fit or why_fresh is not None:
            if why_fresh is not None:
                err.print(f"{why_fresh}; fitting a fresh forecaster on this data instead (as "
                          "--fit)", markup=False, highlight=False)
            try:
                with engine_failures(), err.status("fitting forecasters"):
                    frame, notes = forecast_fresh(tables, freq=freq, horizon=horizon,
                                                  level=level, n_jobs=settings.n_jobs,
                                                  seed=settings.seed, as_of=when, runner=runner)
            except ValueError as exc:
                fail(str(exc))
    _notes(ctx, notes)
    print_frame(frame, f"revenue forecast ({level or 'company'}, {horizon} x {freq})", limit=24)
    emit(frame, out, as_json)
