"""Model commands: ``train``, ``promote`` and ``score`` (thin shells over engine/pipelines)."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import typer

from engine.cli_common import (
    AsOfOpt,
    DataOpt,
    JsonOpt,
    OutOpt,
    data_source,
    emit,
    err,
    fail,
    parse_as_of,
    print_frame,
    read_data,
    settings_of,
)

__all__ = ["MODEL_KINDS", "promote", "score_app", "train_app", "use_tracking"]

MODEL_KINDS = ("churn", "forecast", "win")

train_app = typer.Typer(help="Train a model, log it to MLflow and register it as challenger.",
                        no_args_is_help=True)
score_app = typer.Typer(help="Score with the champion model.", no_args_is_help=True)

HorizonOpt = Annotated[
    int, typer.Option("--horizon-days", min=7, max=730, help="Churn horizon H in days.")
]


def use_tracking(ctx: typer.Context) -> None:
    """Point MLflow at ``QUOTACAST_MLFLOW_TRACKING_URI`` (only commands that need it import it)."""
    from engine import tracking

    tracking.configure(settings_of(ctx).mlflow_tracking_uri)


@train_app.command("churn")
def train_churn_cmd(
    ctx: typer.Context,
    data: DataOpt = None,
    as_of: AsOfOpt = None,
    horizon_days: HorizonOpt = 180,
    as_json: JsonOpt = False,
) -> None:
    """Train the churn model on monthly snapshots, evaluate it on a later slice, register it."""
    from engine.pipelines.churn import train_churn

    when = parse_as_of(as_of)
    tables = read_data(data_source(ctx, data))
    use_tracking(ctx)
    with err.status("training the churn model") as status:
        try:
            result = train_churn(
                tables, as_of=when, horizon_days=horizon_days, seed=settings_of(ctx).seed,
                progress=lambda message: status.update(f"churn: {message}"),
            )
        except ValueError as exc:
            fail(str(exc))
    for note in result.notes:
        err.print(f"- {note}", markup=False, highlight=False)
    baselines = result.baselines.rename_axis("model").reset_index()
    print_frame(baselines, "holdout metrics (ours against the baselines)")
    err.print(f"run id {result.run_id}")
    err.print(f"registered {result.model_name} version {result.version} as challenger")
    if as_json:
        typer.echo(pd.Series({"run_id": result.run_id, "version": result.version,
                              **result.metrics}).to_json())


def promote(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="churn, forecast or win")],
    version: Annotated[str | None, typer.Option(help="Promote this version instead.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Skip the holdout comparison.")] = False,
) -> None:
    """Move the champion alias to the challenger if it is at least as good on the same holdout."""
    from engine import tracking

    if model not in MODEL_KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(MODEL_KINDS)}", param_hint="MODEL")
    use_tracking(ctx)
    try:
        decision = tracking.promote(model, version=version, force=force)
    except tracking.ChampionMissingError as exc:
        fail(str(exc))
    verb = "promoted" if decision.promoted else "kept the champion; did not promote"
    err.print(f"{verb} {tracking.model_name(model)} v{decision.version}: {decision.reason}",
              highlight=False)
    if not decision.promoted and not decision.reason.endswith("already the champion"):
        raise typer.Exit(1)


@score_app.command("churn")
def score_churn_cmd(
    ctx: typer.Context,
    data: DataOpt = None,
    as_of: AsOfOpt = None,
    horizon_days: HorizonOpt = 180,
    owner: Annotated[str | None, typer.Option(help="Only this account manager's customers.")]
    = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """At-risk customers, riskiest first by revenue at risk, with the reasons in plain words."""
    from engine import tracking
    from engine.pipelines.churn import score_churn

    when = parse_as_of(as_of)
    tables = read_data(data_source(ctx, data))
    use_tracking(ctx)
    with err.status("scoring churn risk"):
        try:
            scores = score_churn(tables, as_of=when, horizon_days=horizon_days, owner=owner)
        except tracking.ChampionMissingError as exc:
            fail(str(exc))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    at_risk = scores["revenue_at_risk"].sum()
    err.print(f"{len(scores):,} active customers; revenue at risk {at_risk:,.0f}")
    print_frame(scores.head(10), "riskiest customers", limit=10)
    emit(scores, out, as_json)
