"""``quotacast commit`` and ``quotacast trend``: the board's commits and trend on the command line,
and the snapshots ``feasibility`` and ``warnings evaluate`` leave for the trend.

Snapshots and commits live in the quotacast database (``QUOTACAST_DATABASE_URL``), in the rows
of the command's workspace (that of its data), beside the alerts.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any

import pandas as pd
import sqlalchemy as sa
import typer

from engine.board_store import BoardStore
from engine.config import SetupError
from engine.db import DatabaseMissingError
from engine.io import Tables
from engine.periods import default_period
from engine.schemas import (
    AS_OF,
    COMMIT_CATEGORIES,
    COMPANY_KEY,
    HIERARCHY_LEVELS,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REP,
    PERIOD,
    PRODUCT,
    SEGMENT,
)
from features.metrics import ForecastFromAttainment, Providers
from models.feasibility import Simulation
from service.cli.common import (
    AsOfOpt,
    DataOpt,
    DrawsOpt,
    JsonOpt,
    OutOpt,
    PeriodOpt,
    emit,
    err,
    fail,
    print_frame,
    read_period,
    settings_of,
    store_workspace_of,
    usage_error,
    use_tracking,
    workspace_of,
)
from service.usecases.board import (
    changes_between,
    default_since,
    dimension_levels,
    dimension_snapshot,
    every_node,
    record_snapshots,
    resolve_node,
    trend_frame,
)
from service.usecases.commits import (
    commit_history,
    commit_probabilities,
    latest_commits,
    submit,
)
from service.usecases.request import (
    BadRequest,
    DataSpan,
    NotFound,
    RequestError,
    resolve_as_of,
)

__all__ = ["SnapshotRecorder", "champions", "commit", "record_dimensions", "record_feasibility",
           "record_simulation", "trend"]

# Draws of the feasibility a `warnings evaluate` date computes for its snapshot when no rule
# needed one (a P(attain) within about a point of the 10,000-draw one, in a fifth of the time).
EVALUATE_SNAPSHOT_DRAWS = 2_000


@contextmanager
def board_store(ctx: typer.Context, *, read: bool = False) -> Iterator[BoardStore]:
    """The board tables of ``QUOTACAST_DATABASE_URL``, this command's workspace's rows."""
    store = BoardStore(settings_of(ctx).database_url, must_exist=read,
                       workspace=store_workspace_of(ctx))
    try:
        yield store
    finally:
        store.close()


def _not_stored(exc: Exception) -> None:
    reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    err.print(f"note: the feasibility snapshot for `quotacast trend` was not stored ({reason})",
              markup=False, highlight=False, soft_wrap=True)


def record_feasibility(ctx: typer.Context, frame: pd.DataFrame, source: str) -> int:
    """Store the snapshot of a feasibility frame for the trend; a database that cannot take it
    is said in one note (the command's answer stands)."""
    if frame is None or frame.empty:
        return 0
    try:
        with board_store(ctx) as store:
            return record_snapshots(store, frame, source)
    except (SetupError, sa.exc.SQLAlchemyError) as exc:
        _not_stored(exc)
        return 0


def record_simulation(ctx: typer.Context, tables: Tables, simulation: Simulation, period: str,
                      as_of: pd.Timestamp, source: str = "feasibility",
                      frame: pd.DataFrame | None = None) -> int:
    """Store the snapshot of every node of a feasibility simulation (:func:`record_feasibility`)
    and of the data's product, segment and channel nodes it does not simulate
    (:func:`record_dimensions`); ``frame``: the feasibility's answer, whose P(attain) the
    snapshot keeps (:func:`service.usecases.board.every_node`)."""
    written = record_feasibility(ctx, every_node(tables, simulation, period, as_of, frame),
                                 source)
    simulated = {str(v) for v in simulation.nodes[LEVEL].unique()}
    return written + record_dimensions(ctx, tables, period, as_of, simulated, source)


_CHAMPIONS = "quotacast.board.champions"


def champions(ctx: typer.Context) -> dict[str, Any]:
    """The win and churn champions of the command's workspace, loaded once per command (what
    the service's board simulates the dimensions with); a kind without one is left out (its
    fallback is used, as the service does).

    Raises:
        SetupError: the registry did not answer.
    """
    found = ctx.meta.get(_CHAMPIONS)
    if found is None:
        from engine import tracking

        settings = settings_of(ctx)
        space = workspace_of(ctx)
        tracking.configure(settings.mlflow_tracking_uri, workspace=space,
                           adopt_unscoped=settings.owns_unscoped(space),
                           artifacts=settings.mlflow_artifacts)
        found = {}
        for kind in ("win", "churn"):
            try:
                found[kind] = tracking.load_champion(kind)
            except tracking.ChampionMissingError:
                continue
        ctx.meta[_CHAMPIONS] = found
    return dict(found)


def record_dimensions(ctx: typer.Context, tables: Tables, period: str, as_of: pd.Timestamp,
                      simulated: set[str], source: str, *, unless_stored: bool = False) -> int:
    """Store the snapshot of the data's product, segment and channel nodes that no
    ``simulated`` level covers, from the simulation the board draws them with
    (:func:`service.usecases.board.dimension_snapshot`), so their trend and "what changed"
    fill week by week like the hierarchy's. ``unless_stored``: not when the store already has
    each such level's snapshot of that date. A problem is said in one note."""
    levels = dimension_levels(tables, simulated)
    if not levels:
        return 0
    day = pd.Timestamp(as_of)
    try:
        if unless_stored:
            with board_store(ctx) as store:
                have = store.snapshots(period, since=day.date(), until=day.date())
            if set(levels) <= set(have[LEVEL]):
                return 0
        frame = dimension_snapshot(tables, period, day, simulated,
                                   seed=settings_of(ctx).seed, models=champions(ctx))
    except (SetupError, sa.exc.SQLAlchemyError, ValueError) as exc:
        _not_stored(exc)
        return 0
    return record_feasibility(ctx, frame, source)


@dataclass
class SnapshotRecorder:
    """What ``warnings evaluate`` leaves for the trend: each evaluated date's feasibility.

    :meth:`wrap` keeps every attainment frame the rules computed; :meth:`record` stores those of
    one date (nodes with a target), or, when no rule computed one with a target in it, the
    default period's feasibility of every node with :data:`EVALUATE_SNAPSHOT_DRAWS` draws (not
    when the store already has that date's snapshot).
    """

    ctx: typer.Context
    tables: Tables
    seen: dict[tuple[str, date], pd.DataFrame] = field(default_factory=dict)

    def wrap(self, providers: Providers) -> Providers:
        """The same providers, the attainment frames kept as they are computed."""
        base = providers.attainment
        if base is None:
            return providers

        def attainment(tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
            frame = base(tables, period, as_of)
            self.seen[(str(period), pd.Timestamp(as_of).date())] = frame
            return frame

        return Providers(churn_scores=providers.churn_scores, attainment=attainment,
                         period_forecast=ForecastFromAttainment(attainment))

    def record(self, at: date) -> None:
        frames = [(period, f) for (period, day), f in self.seen.items()
                  if day == at and not f.empty]
        if frames:
            for period, frame in frames:
                record_feasibility(self.ctx, frame.assign(**{AS_OF: pd.Timestamp(at)}),
                                   "warnings")
                simulated = {*HIERARCHY_LEVELS, *(str(v) for v in frame[LEVEL].unique())}
                record_dimensions(self.ctx, self.tables, period, pd.Timestamp(at), simulated,
                                  "warnings", unless_stored=True)
            return
        period = default_period(pd.Timestamp(at))
        try:
            with board_store(self.ctx) as store:
                stored = (period, at) in store.snapshot_dates(period)
        except (SetupError, sa.exc.SQLAlchemyError) as exc:
            _not_stored(exc)
            return
        if stored:  # its dimensions too, unless an earlier version left them out
            record_dimensions(self.ctx, self.tables, period, pd.Timestamp(at),
                              set(HIERARCHY_LEVELS), "warnings", unless_stored=True)
            return
        from service.usecases.feasibility import run_feasibility

        try:
            result = run_feasibility(self.tables, period, pd.Timestamp(at),
                                     draws=EVALUATE_SNAPSHOT_DRAWS,
                                     seed=settings_of(self.ctx).seed)
        except ValueError as exc:
            _not_stored(exc)
            return
        record_simulation(self.ctx, self.tables, result.simulation, period, pd.Timestamp(at),
                          "warnings", result.frame)


def _node(tables: Tables, level: str | None, key: str | None, rep: str | None
          ) -> tuple[str, str]:
    if rep is not None:
        if level not in (None, LEVEL_REP) or key is not None:
            raise typer.BadParameter("give --rep R, or --level L --key K, not both",
                                     param_hint="--rep")
        level, key = LEVEL_REP, rep
    level = level or LEVEL_COMPANY
    key = key or (COMPANY_KEY if level == LEVEL_COMPANY else None)
    if key is None:
        raise typer.BadParameter(f"which {level}? give --key", param_hint="--key")
    try:
        return resolve_node(tables, level, key)
    except RequestError as exc:
        raise usage_error(exc) from exc
    except NotFound as exc:
        raise typer.BadParameter(str(exc), param_hint="--key" if rep is None else "--rep"
                                 ) from exc


def _submitter(node: tuple[str, str]) -> str:
    """Who submits when ``--by`` is not given: the rep on a rep's node, else the login name
    (a product's or a region's name is no person)."""
    if node[0] == LEVEL_REP:
        return node[1]
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "unnamed"


LevelOpt = Annotated[str | None, typer.Option(
    "--level", help="company (default), region, team, rep or a category column.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="The node's name (with --level).")]


def commit(
    ctx: typer.Context,
    amount: Annotated[float, typer.Option("--amount", min=0, max=1e15,
                                          help="The amount committed.")],
    data: DataOpt = None,
    period: PeriodOpt = None,
    as_of: AsOfOpt = None,
    rep: Annotated[str | None, typer.Option("--rep", help="The rep committing.")] = None,
    product: Annotated[str | None, typer.Option(
        "--product", help="A product's commit (forecast by product family).")] = None,
    segment: Annotated[str | None, typer.Option(
        "--segment", help="A customer segment's commit.")] = None,
    level: LevelOpt = None,
    key: KeyOpt = None,
    category: Annotated[str, typer.Option(
        "--category", help="commit (default) or best_case (Salesforce's forecast categories).")]
    = COMMIT_CATEGORIES[0],
    by: Annotated[str | None, typer.Option(
        "--by", help="Who submits (default: the rep on a rep's node, else your login name).")
    ] = None,
    note: Annotated[str, typer.Option("--note", help="A comment kept with it.")] = "",
    draws: DrawsOpt = 10_000,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a commit or best case for a node and period (--rep, --product, --segment, or
    --level with --key; default: the company), shown beside P(reaching it); a product or
    segment no target names is simulated as a node of its own, as on the board."""
    if category not in COMMIT_CATEGORIES:
        raise typer.BadParameter(f"expected {' or '.join(COMMIT_CATEGORIES)}",
                                 param_hint="--category")
    named = [(flag, lv, value) for flag, lv, value in
             (("--product", PRODUCT, product), ("--segment", SEGMENT, segment)) if value]
    if named:
        flag, level_of, value = named[0]
        if len(named) > 1 or rep is not None or level is not None or key is not None:
            raise typer.BadParameter("give one node: --rep, --product, --segment, or --level "
                                     "with --key", param_hint=flag)
        level, key = level_of, value
    tables, when, chosen = read_period(ctx, data, period, as_of)
    node = _node(tables, level, key, rep)
    with board_store(ctx) as store:
        try:
            submit(store, chosen, node[0], node[1], amount, category, by or _submitter(node),
                   as_of=when.date(), note=note)
        except BadRequest as exc:
            raise typer.BadParameter(str(exc), param_hint="--amount") from exc
        history = commit_history(store, tables, chosen, [node])
    use_tracking(ctx)
    from service.usecases.feasibility import run_feasibility

    with err.status(f"simulating {chosen} as of {when.date()}") as status:
        try:
            # A level beside the hierarchy (product, segment...) is simulated as nodes too.
            result = run_feasibility(tables, chosen, when, draws=draws,
                                     seed=settings_of(ctx).seed,
                                     levels=None if node[0] in HIERARCHY_LEVELS else [node[0]],
                                     progress=lambda message: status.update(message))
        except ValueError as exc:
            fail(f"the commit was stored, but {chosen} cannot be simulated as of "
                 f"{when.date()}: {exc}")
    table = commit_probabilities(latest_commits(history), result.simulation, result.frame)
    err.print(f"stored the {category.replace('_', ' ')} of {node[0]} {node[1]} for {chosen}: "
              f"{amount:,.2f}", markup=False, highlight=False)
    shown = ["category", "amount", "p_reach", "target", "p_attain", "p50", "submitted_by",
             "submitted_at", "submissions"]
    print_frame(_no_target_columns(table[shown]), f"commits of {node[0]} {node[1]} in {chosen} "
                f"beside P(reach) as of {when.date()}")
    emit(table, out, as_json)


def trend(
    ctx: typer.Context,
    data: DataOpt = None,
    period: PeriodOpt = None,
    level: LevelOpt = None,
    key: KeyOpt = None,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", metavar="YYYY-MM-DD",
        help="Only snapshots as of this date or earlier (default: all).")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="YYYY-MM-DD",
        help="What changed from this as-of (default: the snapshot a week before the last).")]
    = None,
    every: Annotated[bool, typer.Option(
        "--every", help="Every snapshot, not one per week.")] = False,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A node's P(attain), P50 and closed-to-date week by week, and what changed since the
    week before (deals won, lost, slipped, created)."""
    tables, when, chosen = read_period(ctx, data, period, as_of)
    node = _node(tables, level, key, None)
    until = when.date() if as_of is not None else None
    try:  # a --since outside the data is refused like an --as-of
        start_at = (resolve_as_of(since, DataSpan.of(tables), option="since").date()
                    if since is not None else None)
    except RequestError as exc:
        raise usage_error(exc) from exc
    try:
        with board_store(ctx, read=True) as store:
            frame = trend_frame(store, chosen, node[0], node[1], until=until,
                                weekly=not every)
            changes = None
            if not frame.empty:
                last = pd.Timestamp(frame[AS_OF].iloc[-1]).date()
                start = start_at or default_since(store, chosen, node[0], node[1], last)
                if start < last:
                    try:
                        changes = changes_between(tables, store, chosen, node[0], node[1],
                                                  start, last)
                    except RequestError as exc:
                        raise typer.BadParameter(str(exc), param_hint="--since") from exc
    except DatabaseMissingError:  # nothing stored yet; other database problems are said as such
        frame = pd.DataFrame()
    if frame.empty:
        source = f"--data {tables.source} " if tables.source else ""
        fail(f"no snapshot of {node[0]} {node[1]} in {chosen} yet: run `quotacast warnings "
             f"evaluate {source}--as-of DATE` on dates a week apart (or `quotacast "
             f"feasibility {source}--period {chosen} --as-of DATE`); each stores one")
    rows = "every snapshot" if every else "one row per week"
    print_frame(_no_target_columns(frame.drop(columns=["source"])),
                f"trend of {node[0]} {node[1]} in {chosen} ({rows})", limit=60)
    if changes is not None:
        _print_changes(changes)
    emit(frame.assign(**{PERIOD: chosen, "level": node[0], "key": node[1]}), out, as_json)


# Columns a node without a target leaves empty on every row (a product no target names).
_TARGET_COLUMNS = ("target", "p_attain", "p_attain_delta", "p_attain_effect")


def _no_target_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The printed table without the target and P(attain) columns when they are empty on
    every row (a node without a target: its note says so); JSON keeps them."""
    empty = [c for c in _TARGET_COLUMNS if c in frame.columns and frame[c].isna().all()]
    return frame.drop(columns=empty) if len(frame) else frame


def _percent(value: Any) -> str:
    return "unknown" if value is None or pd.isna(value) else f"{value:+.1%}"


def _print_changes(changes: Any) -> None:
    err.print(f"what changed from {changes.since} to {changes.until}: P(attain) "
              f"{_percent(changes.p_attain_delta)}", markup=False, highlight=False)
    groups = _no_target_columns(changes.groups)
    part = ("p_attain_effect: its part of the delta; " if "p_attain_effect" in groups.columns
            else "")
    print_frame(groups, f"by deal group ({part}other: time, run rate, re-scored deals)")
    if not changes.deals.empty:
        shown = ["change", "opportunity_id", "owner", "amount", "stage", "close_date_before",
                 "close_date_after", "expected_effect", "p_attain_effect"]
        print_frame(_no_target_columns(changes.deals[shown]),
                    "deals that changed (largest effect first)", limit=10)
    for line in changes.notes:
        err.print(f"note: {line}", markup=False, highlight=False, soft_wrap=True)
