"""``quotacast warnings ...``: evaluate rules, list alerts and history, silences, rule unit tests.

A typer sub-app mounted by ``service/cli/app.py``: ``app.add_typer(warnings_app, name="warnings")``.
Alert state lives in the database of ``QUOTACAST_DATABASE_URL`` (see the README), one workspace's
rows per command: that of its data (``--data``, named or derived from the path, as for the
models); the commands that read no data take ``--data D`` only to name its workspace.
Extra notification targets may come from the settings ``warnings_webhook_url`` and
``warnings_notify_file`` (when the Settings class has them) or the ``--webhook`` and
``--notify-file`` options; every alert is then sent there too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import sqlalchemy as sa
import typer

from engine.alerting.evaluate import EvaluationReport, OutOfOrder, evaluate
from engine.alerting.notify import DeliveryPolicy, DeliveryReport, deliver
from engine.alerting.route import with_extra_receiver
from engine.alerting.rules import (
    ALERTNAME,
    RuleFile,
    RuleFileError,
    format_duration,
    load_rules,
    parse_duration,
    parse_matcher,
)
from engine.alerting.ruletest import run_rule_tests
from engine.alerting.state import format_labels, node_name
from engine.alerting.store import (
    ACTIVE_STATES,
    FIRING,
    NORMAL,
    PENDING,
    RESOLVED,
    SEVERITY_ORDER,
    STATE_ORDER,
    STATES,
    AlertInstance,
    AlertStore,
    AlreadyEvaluated,
    Silence,
)
from engine.compute import ComputeError, open_engine, parquet_tables
from engine.config import SetupError
from engine.io import Tables
from engine.periods import default_as_of
from features.metrics import ForecastFromAttainment, Providers, catalogue
from features.metrics.alerting import METRIC_CATALOGUE, metric_source
from rules import default_rules_path
from service.cli.board import SnapshotRecorder
from service.cli.common import (
    EXIT_BAD_INPUT,
    AsOfOpt,
    DataOpt,
    JsonOpt,
    OutOpt,
    WorkspaceDataOpt,
    data_source,
    emit,
    err,
    fail,
    parse_as_of,
    print_frame,
    read_data,
    settings_of,
    store_workspace_of,
    workspace_of,
)
from service.cli.features import EngineOpt
from service.usecases.alerts import evaluation_context, warning_tables
from service.usecases.providers import model_providers

__all__ = ["ALERT_COLUMNS", "alerts_frame", "warnings_app"]

ALERT_COLUMNS = ["rule", "labels", "state", "severity", "value", "threshold", "since", "message",
                 "as_of", "silenced", "inhibited"]

warnings_app = typer.Typer(
    name="warnings",
    help="Early warnings: threshold rules over sales metrics, alert states with history, "
    "silences and notifications.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
silence_app = typer.Typer(
    help="Silences: mute notifications of matching alerts for a window of as_of dates.",
    no_args_is_help=True,
)
warnings_app.add_typer(silence_app, name="silence")

RulesOpt = Annotated[
    Path | None,
    typer.Option("--rules", "-r", help="Rule file (default: rules/default.yaml)."),
]


def _rules(path: Path | None) -> RuleFile:
    try:
        return load_rules(path or default_rules_path(), catalogue=METRIC_CATALOGUE)
    except RuleFileError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        err.print(f"[red]{len(exc.problems)} problem(s) in the rule file; nothing was evaluated."
                  "[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _workspace_providers(tracking_uri: str, workspace: str, adopt_unscoped: bool) -> Providers:
    """The champions' metrics (:func:`model_providers`) of ``workspace`` only: the registry is
    configured for it when a provider is first called, so rules that need no model never touch
    MLflow."""
    base = model_providers(None)
    assert base.churn_scores is not None and base.attainment is not None

    def configured() -> None:
        from engine import tracking

        tracking.configure(tracking_uri, workspace=workspace, adopt_unscoped=adopt_unscoped)

    def churn_scores(tables: Tables, as_of: pd.Timestamp) -> pd.DataFrame:
        configured()
        assert base.churn_scores is not None
        return base.churn_scores(tables, as_of)

    def attainment(tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
        configured()
        assert base.attainment is not None
        return base.attainment(tables, period, as_of)

    return Providers(churn_scores=churn_scores, attainment=attainment,
                     period_forecast=ForecastFromAttainment(attainment))


@contextmanager
def _store(ctx: typer.Context, *, read: bool = False) -> Iterator[AlertStore]:
    """The alert store of ``QUOTACAST_DATABASE_URL``, the rows of this command's workspace
    (its data's, see :func:`data_source`), closed when the command is done; a ``read`` never
    creates it (a misspelt path is said, not filled with an empty database)."""
    settings = settings_of(ctx)
    url = settings.database_url
    try:
        store = AlertStore(url, must_exist=read, workspace=store_workspace_of(ctx))
    except SetupError:
        raise  # already one plain message naming the setting (the console script prints it)
    except sa.exc.ArgumentError as exc:
        raise typer.BadParameter(f"QUOTACAST_DATABASE_URL is not a database URL: {exc}") from exc
    except sa.exc.SQLAlchemyError as exc:
        fail(f"cannot open the alert database {url}: {exc}")
    try:
        yield store
    finally:
        store.close()


def _in_workspace(ctx: typer.Context) -> str:
    """`` in workspace W`` when the command's workspace is not the default one (whose
    messages stay as they were before workspaces)."""
    space = store_workspace_of(ctx)
    return f" in workspace {space}" if space else ""


def _elsewhere(ctx: typer.Context, store: AlertStore) -> None:
    """Nothing here: say which other workspaces of the database hold alerts, and how to name
    one (a user who evaluated another data source and listed without its --data)."""
    others = store.other_workspaces()
    if not others:
        return
    default = settings_of(ctx).default_workspace_name()
    named = ", ".join(f"{space or default + ' (the default)'} ({count})"
                      for space, count in others.items())
    err.print(f"alerts of other workspaces: {named}; name one with --data D (the data it was "
              "evaluated on) or the global --workspace NAME", markup=False, highlight=False,
              soft_wrap=True)
    if "" in others:
        err.print("the default workspace's alerts include those stored before workspaces; if "
                  "they are of this data, make it the default workspace: "
                  f"QUOTACAST_DEFAULT_WORKSPACE={workspace_of(ctx)} (or QUOTACAST_DATA)",
                  markup=False, highlight=False, soft_wrap=True)


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def alerts_frame(alerts: Iterable[AlertInstance]) -> pd.DataFrame:
    """Alerts as the README's output columns (``rule, labels, state, severity, value, threshold,
    since, message``) plus ``as_of`` (last evaluation), ``silenced`` and ``inhibited``; worst
    first."""
    rows = [{
        "rule": a.rule,
        "labels": format_labels(a.labels, skip=(ALERTNAME, "severity")),
        "state": a.state,
        "severity": a.severity,
        "value": a.value,
        "threshold": a.threshold,
        "since": _iso(a.since),
        "message": a.message,
        "as_of": _iso(a.last_eval_at),
        "silenced": bool(a.silenced_by),
        "inhibited": a.inhibited,
    } for a in sorted(alerts, key=lambda a: (STATE_ORDER.get(a.state, 9),
                                             SEVERITY_ORDER.get(a.severity, 9), a.rule,
                                             format_labels(a.labels)))]
    frame = pd.DataFrame(rows, columns=ALERT_COLUMNS)
    return frame.astype({"value": float, "threshold": float, "silenced": bool,
                         "inhibited": bool})


_LIST_LIMIT = 20


def _rule_counts(alerts: list[AlertInstance]) -> pd.DataFrame:
    """Per rule (worst first): notified firing, muted firing, pending, resolved, normal."""
    rows: dict[str, dict[str, Any]] = {}
    for a in alerts:
        row = rows.setdefault(a.rule, {"rule": a.rule, "severity": a.severity, FIRING: 0,
                                       "muted": 0, PENDING: 0, RESOLVED: 0, NORMAL: 0})
        row["muted" if a.state == FIRING and a.muted else a.state] += 1
    frame = pd.DataFrame(list(rows.values()),
                         columns=["rule", "severity", FIRING, "muted", PENDING, RESOLVED, NORMAL])
    frame = frame.loc[:, (frame != 0).any(axis=0)]  # a column of zeros says nothing
    order = frame["severity"].map(SEVERITY_ORDER).fillna(9)
    firing = frame[FIRING] if FIRING in frame.columns else pd.Series(0, index=frame.index)
    return (frame.assign(_quiet=firing == 0, _order=order, _firing=firing)
            .sort_values(["_quiet", "_order", "_firing", "rule"],
                         ascending=[True, True, False, True], kind="stable")
            .drop(columns=["_quiet", "_order", "_firing"]))


def _headline(alerts: list[AlertInstance], where: str) -> str:
    firing = [a for a in alerts if a.state == FIRING]
    muted = sum(a.muted for a in firing)
    pending = sum(a.state == PENDING for a in alerts)
    resolved = sum(a.state == RESOLVED for a in alerts)
    return (f"{where}: {len(firing)} firing ({len(firing) - muted} notified, {muted} muted by "
            f"silences or inhibition), {pending} pending, {resolved} resolved")


def _show(alerts: list[AlertInstance], where: str, limit: int = _LIST_LIMIT) -> None:
    """The summary people read on stderr: counts per rule and state, then the firing alerts
    that were not muted, worst first, with their messages (every row goes to --out/--json)."""
    if not alerts:
        err.print(f"{where}: no alerts", markup=False, highlight=False)
        return
    err.print(_headline(alerts, where), markup=False, highlight=False)
    print_frame(_rule_counts(alerts), "per rule", limit=100)
    told = sorted((a for a in alerts if a.state == FIRING and not a.muted),
                  key=lambda a: (SEVERITY_ORDER.get(a.severity, 9), a.since or date.min,
                                 a.rule, format_labels(a.labels)))
    if not told:
        return
    err.print(f"firing, worst first ({min(limit, len(told))} of {len(told)}):", markup=False,
              highlight=False)
    for a in told[:limit]:
        kept = (f" (cleared {_iso(a.keep_firing_since)}, kept firing)"
                if a.keep_firing_since is not None else "")
        node = node_name(a.labels, METRIC_CATALOGUE)
        err.print(f"  {a.severity:<8} {a.rule} [{node}] since {_iso(a.since)}{kept}: {a.message}",
                  markup=False, highlight=False, soft_wrap=True)
    if len(told) > limit:
        err.print(f"  ... and {len(told) - limit} more (all rows: --out FILE or --json)",
                  markup=False, highlight=False)


def _note_report(report: EvaluationReport, notes: bool = True) -> None:
    """What one evaluation did; ``notes`` adds what was left unchanged or skipped, and why."""
    if report.already and notes:
        err.print(f"already evaluated at {report.as_of} (left unchanged): "
                  f"{', '.join(report.already)}", markup=False, highlight=False)
    if report.skipped and notes:
        err.print(f"skipped {len(report.skipped)} rule(s) whose metric is not available yet: "
                  f"{', '.join(report.skipped)}", markup=False, highlight=False)
        for reason in sorted(set(report.skipped.values())):
            err.print(f"  - {reason}", markup=False, highlight=False)
    moves: dict[str, int] = {}
    for t in report.transitions:
        moves[t.to_state] = moves.get(t.to_state, 0) + 1
    told = ", ".join(f"{n} {state}" for state, n in sorted(moves.items())) or "none"
    err.print(f"evaluated {len(report.evaluated)} rule(s) at {report.as_of}: state changes: "
              f"{told}; {report.notifications} notification(s) queued",
              markup=False, highlight=False)


def _note_delivery(report: DeliveryReport) -> None:
    if report.delivered or report.dead or report.pending or report.failed:
        err.print(f"notifications: {report.delivered} delivered, {report.pending} pending for "
                  f"the next run, {report.failed} failed for good", markup=False, highlight=False)
    for problem in report.errors:
        err.print(f"  - {problem}", markup=False, highlight=False)


def _alarm_undelivered(report: DeliveryReport, policy: DeliveryPolicy) -> None:
    """The loud line while anything is undelivered, then exit 1."""
    if not report.undelivered:
        return
    parts = []
    if report.pending:
        due = (f", next retry at {report.next_attempt_at:%Y-%m-%d %H:%M} UTC"
               if report.next_attempt_at is not None else "")
        parts.append(f"{report.pending} waiting for a retry{due} (retried with backoff for up "
                     f"to {format_duration(policy.give_up_after)} after they were queued)")
    if report.failed:
        parts.append(f"{report.failed} given up")
    err.print(f"[bold red]NOT DELIVERED: {report.undelivered} notification(s): "
              f"{'; '.join(parts)}. Run `quotacast warnings deliver` once the receiver is back."
              "[/bold red]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _policy(wait: float, give_up_after: str) -> DeliveryPolicy:
    try:
        horizon = parse_duration(give_up_after)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--give-up-after") from exc
    if horizon <= timedelta(0):
        raise typer.BadParameter("must be longer than 0", param_hint="--give-up-after")
    return DeliveryPolicy(max_wait=timedelta(seconds=wait), give_up_after=horizon)


DEFAULT_GIVE_UP = format_duration(DeliveryPolicy().give_up_after)

DeliverWaitOpt = Annotated[
    float,
    typer.Option("--deliver-wait", min=0, help="Seconds to keep retrying failed notifications."),
]
GiveUpOpt = Annotated[
    str,
    typer.Option("--give-up-after", help="How long a notification that cannot be delivered is "
                 "retried (with backoff from a minute to two hours) after it was queued, "
                 "a duration like 3d."),
]


def _replay_dates(last: date, since: str | None, every: str) -> list[date]:
    """``last`` alone, or every ``every`` back from ``last`` to ``since`` (oldest first)."""
    if since is None:
        return [last]
    first = _day(since, "--since")
    try:
        step = parse_duration(every)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--every") from exc
    if step <= timedelta(0):
        raise typer.BadParameter("must be longer than 0", param_hint="--every")
    if first > last:
        raise typer.BadParameter(f"{first} is after the evaluation date {last}",
                                 param_hint="--since")
    count = (last - first) // step
    return [last - step * k for k in range(count, -1, -1)]


@warnings_app.command("evaluate")
def evaluate_command(
    ctx: typer.Context,
    data: DataOpt = None,
    rules: RulesOpt = None,
    as_of: AsOfOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    webhook: Annotated[str | None, typer.Option(
        "--webhook", help="Also POST notifications to this URL.")] = None,
    notify_file: Annotated[str | None, typer.Option(
        "--notify-file", help="Also append notifications to this JSON-lines file.")] = None,
    send: Annotated[bool, typer.Option(
        "--deliver/--no-deliver", help="Send queued notifications now.")] = True,
    deliver_wait: DeliverWaitOpt = 10.0,
    give_up_after: GiveUpOpt = DEFAULT_GIVE_UP,
    since: Annotated[str | None, typer.Option(
        "--since", help="Replay: also evaluate every --every from this date up to --as-of, "
        "oldest first, so that `for` durations can elapse (dates already evaluated are left "
        "as they are).")] = None,
    every: Annotated[str, typer.Option(
        "--every", help="Step between replayed dates (a duration like 7d or 1w).")] = "7d",
    engine: EngineOpt = None,
) -> None:
    """Evaluate the rules at --as-of, update alert states, send notifications, summarise.

    Exits 1, after the summary, while a notification is not delivered (a receiver is down):
    it stays queued and is retried by the next run or by `warnings deliver`. With --engine
    spark the customer- and deal-level metrics are computed on Spark; the rules, silences,
    inhibition and the alert store stay on this machine (the same alerts as pandas).
    """
    policy = _policy(deliver_wait, give_up_after)
    rule_file = _rules(rules)
    settings = settings_of(ctx)
    rule_file = with_extra_receiver(
        rule_file,
        webhook or settings.warnings_webhook_url,
        notify_file or settings.warnings_notify_file,
    )
    source = data_source(ctx, data)
    name = engine or settings.engine
    if parquet_tables(source) is None:
        tables = read_data(source)
    else:
        with err.status("reading the Parquet tables"):
            tables = warning_tables(source)
    when = parse_as_of(as_of)
    day = (when if when is not None else default_as_of(tables)).date()
    dates = _replay_dates(day, since, every)
    space = workspace_of(ctx)
    snapshots = SnapshotRecorder(ctx, tables)  # each date's feasibility, for the board's trend
    providers = snapshots.wrap(_workspace_providers(settings.mlflow_tracking_uri, space,
                                                    settings.owns_unscoped(space)))
    delivery: DeliveryReport | None = None
    with _store(ctx) as store, open_engine(name, settings.spark_master) as compute:
        resumed = 0
        for at in dates:
            try:
                # Replayed dates before --as-of that some rule already got past are left as
                # they are: rerunning an interrupted replay resumes it.
                context = evaluation_context(tables, providers, compute, source)
                report = evaluate(rule_file, metric_source(context), store, at, resume=at < day)
            except ComputeError as exc:
                if exc.exit_code == EXIT_BAD_INPUT:
                    err.print(f"[red]bad input:[/red] {exc}", highlight=False)
                    raise typer.Exit(EXIT_BAD_INPUT) from None
                fail(f"{exc}; nothing of this date was written, run it again")
            except OutOfOrder as exc:
                err.print(f"[red]{exc}[/red] (workspace {space})", highlight=False)
                err.print("if that evaluation was of another data source, give each data "
                          "source its own workspace: `quotacast --workspace NAME warnings "
                          "evaluate ...` (or QUOTACAST_WORKSPACE)", markup=False,
                          highlight=False, soft_wrap=True)
                raise typer.Exit(EXIT_BAD_INPUT) from None
            except AlreadyEvaluated as exc:
                fail(f"{exc}; nothing of this run was written, run it again")
            snapshots.record(at)
            if at < day and report.already and not report.evaluated:
                resumed += 1
                continue
            _note_report(report, notes=at == day)
        if resumed:
            err.print(f"replay: {resumed} date(s) already evaluated were left as they are",
                      markup=False, highlight=False)
        if send:
            delivery = deliver(store, policy)
            _note_delivery(delivery)
        names = [rule.alert for _, rule in rule_file.rules]
        alerts = store.alerts(rules=names, states=ACTIVE_STATES)
    _show(alerts, f"alerts at {day}{_in_workspace(ctx)}")
    emit(alerts_frame(alerts), out, as_json)
    if delivery is not None:
        _alarm_undelivered(delivery, policy)


def _states(state: list[str] | None) -> list[str] | None:
    chosen = state or ["active"]
    if "all" in chosen:
        return None
    unknown = [s for s in chosen if s not in (*STATES, "active")]
    if unknown:
        raise typer.BadParameter(f"expected {', '.join(STATES)}, active or all; got "
                                 f"{', '.join(unknown)}", param_hint="--state")
    return sorted({s for c in chosen for s in (ACTIVE_STATES if c == "active" else (c,))})


@warnings_app.command("list")
def list_command(
    ctx: typer.Context,
    state: Annotated[list[str] | None, typer.Option(
        "--state", "-s", help="normal, pending, firing, resolved, active (default: pending, "
        "firing, resolved) or all; repeatable.")] = None,
    rule: Annotated[list[str] | None, typer.Option("--rule", help="Only these rules.")] = None,
    data: WorkspaceDataOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Current alerts (worst first) of the workspace (of --data D, or --workspace)."""
    states = _states(state)
    data_source(ctx, data)
    with _store(ctx, read=True) as store:
        alerts = store.alerts(rules=rule or None, states=states)
        if not alerts:
            err.print(f"no alerts in workspace {workspace_of(ctx)}", markup=False,
                      highlight=False)
            _elsewhere(ctx, store)
    if alerts:
        _show(alerts, f"{len(alerts)} alert(s){_in_workspace(ctx)}")
    emit(alerts_frame(alerts), out, as_json)


@warnings_app.command("history")
def history_command(
    ctx: typer.Context,
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest N changes.")] = 200,
    data: WorkspaceDataOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """State changes of alerts, newest first (of the workspace of --data D, or --workspace)."""
    data_source(ctx, data)
    with _store(ctx, read=True) as store:
        changes = store.history(rule, limit)
    rows = [{"as_of": t.as_of.isoformat(), "rule": t.rule,
             "labels": format_labels(t.labels, skip=(ALERTNAME, "severity")),
             "from_state": t.from_state, "to_state": t.to_state, "value": t.value,
             "threshold": t.threshold, "silenced": t.silenced, "inhibited": t.inhibited,
             "message": t.message} for t in changes]
    frame = pd.DataFrame(rows, columns=["as_of", "rule", "labels", "from_state", "to_state",
                                        "value", "threshold", "silenced", "inhibited", "message"])
    print_frame(frame, f"{len(frame)} state change(s){_in_workspace(ctx)}")
    emit(frame, out, as_json)


@warnings_app.command("deliver")
def deliver_command(
    ctx: typer.Context,
    deliver_wait: DeliverWaitOpt = 10.0,
    give_up_after: GiveUpOpt = DEFAULT_GIVE_UP,
    scheduled: Annotated[bool, typer.Option(
        "--scheduled", help="Only send what is due by the retry schedule, not the failed "
        "ones (for a cron job).")] = False,
    data: WorkspaceDataOpt = None,
) -> None:
    """Send every undelivered notification now: pending ones (a crash or a failing receiver
    left them) and failed ones, of the workspace (of --data D, or --workspace). Exits 1 while
    any is still undelivered."""
    policy = _policy(deliver_wait, give_up_after)
    data_source(ctx, data)
    with _store(ctx, read=True) as store:
        report = deliver(store, policy, now_all=not scheduled, retry_failed=not scheduled)
    _note_delivery(report)
    if not (report.delivered or report.dead or report.undelivered):
        err.print(f"nothing to deliver{_in_workspace(ctx)}", markup=False, highlight=False)
    _alarm_undelivered(report, policy)


@warnings_app.command("check")
def check_command(
    files: Annotated[list[Path], typer.Argument(help="Rule files to check.")],
) -> None:
    """Check rule files (like promtool check rules); every problem at once, exit 2 on any."""
    problems: list[str] = []
    for path in files:
        try:
            parsed = load_rules(path, catalogue=METRIC_CATALOGUE)
        except RuleFileError as exc:
            problems += exc.problems
            continue
        err.print(f"{path}: {len(parsed.rules)} rule(s) ok", markup=False, highlight=False)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(EXIT_BAD_INPUT)


@warnings_app.command("metrics")
def metrics_command(out: OutOpt = None, as_json: JsonOpt = False) -> None:
    """The metric catalogue: what a rule can watch, at which scopes, in which unit."""
    frame = catalogue()
    print_frame(frame, "metric catalogue", limit=100)
    emit(frame, out, as_json)


@warnings_app.command("test")
def test_command(
    files: Annotated[list[Path], typer.Argument(help="Rule test files (promtool-like).")],
) -> None:
    """Run rule unit tests: metric values over time in, expected firing alerts out."""
    failed = checks = 0
    for path in files:
        try:
            report = run_rule_tests(path, catalogue=METRIC_CATALOGUE)
        except RuleFileError as exc:
            for problem in exc.problems:
                typer.echo(problem, err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        checks += report.checks
        failed += len(report.failures)
        verdict = "SUCCESS" if not report.failures else "FAILED"
        typer.echo(f"Unit testing: {path}: {verdict} ({report.checks} check(s))")
        for failure in report.failures:
            typer.echo(str(failure))
    typer.echo(f"{checks - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


# --- silences -------------------------------------------------------------------------------------


def _day(value: str, option: str) -> date:
    parsed = parse_as_of(value)
    if parsed is None:
        raise typer.BadParameter("required", param_hint=option)
    return parsed.date()


def _silence_rows(silences: Iterable[Silence]) -> pd.DataFrame:
    rows: list[dict[str, Any]] = [{
        "id": s.id, "matchers": ", ".join(str(m) for m in s.matchers),
        "starts_at": s.starts_at.isoformat(), "ends_at": s.ends_at.isoformat(),
        "created_by": s.created_by, "comment": s.comment,
        "expired": s.expired_at is not None,
    } for s in silences]
    return pd.DataFrame(rows, columns=["id", "matchers", "starts_at", "ends_at", "created_by",
                                       "comment", "expired"])


@silence_app.command("add")
def silence_add(
    ctx: typer.Context,
    matcher: Annotated[list[str], typer.Option(
        "--matcher", "-m", help='label=value, label!=value, label=~regex or label!~regex; '
        'repeatable (all must match), e.g. -m alertname=PaceBehindPlan -m region=North.')],
    starts: Annotated[str, typer.Option("--starts", help="First as_of date it applies to.")],
    ends: Annotated[str, typer.Option("--ends", help="First as_of date it no longer applies.")],
    author: Annotated[str, typer.Option("--author", help="Who silences.")],
    comment: Annotated[str, typer.Option("--comment", help="Why.")],
    data: WorkspaceDataOpt = None,
) -> None:
    """Silence matching alerts of the workspace (of --data D, or --workspace) from --starts to
    --ends (as_of dates); prints the id last."""
    data_source(ctx, data)
    try:
        matchers = [parse_matcher(m) for m in matcher]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--matcher") from exc
    window = _day(starts, "--starts"), _day(ends, "--ends")
    with _store(ctx) as store:
        try:
            silence = store.add_silence(matchers, *window, author, comment)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    err.print(f"silenced {', '.join(str(m) for m in silence.matchers)} from {silence.starts_at} "
              f"to {silence.ends_at}{_in_workspace(ctx)}", markup=False, highlight=False)
    typer.echo(f"silence {silence.id}")


@silence_app.command("list")
def silence_list(
    ctx: typer.Context,
    include_expired: Annotated[bool, typer.Option("--all", help="Include expired ones.")] = False,
    data: WorkspaceDataOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Silences of the workspace (of --data D, or --workspace); not expired unless --all."""
    data_source(ctx, data)
    with _store(ctx, read=True) as store:
        frame = _silence_rows(store.silences(include_expired))
    print_frame(frame, f"{len(frame)} silence(s){_in_workspace(ctx)}")
    emit(frame, out, as_json)


@silence_app.command("expire")
def silence_expire(ctx: typer.Context, silence_id: Annotated[str, typer.Argument(
        help="The id printed by silence add.")], data: WorkspaceDataOpt = None) -> None:
    """Expire a silence of the workspace (of --data D, or --workspace): it stops applying from
    the next evaluation on."""
    data_source(ctx, data)
    with _store(ctx, read=True) as store:
        done = store.expire_silence(silence_id)
    if not done:
        fail(f"no active silence with id {silence_id} in workspace {workspace_of(ctx)}")
    err.print(f"expired silence {silence_id}", markup=False, highlight=False)
