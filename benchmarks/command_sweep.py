"""Run every command of the README on real data directories and flag anything but a plain answer.

    python benchmarks/command_sweep.py                      # every dataset, full and 3/6/9 months
    python benchmarks/command_sweep.py --datasets crm-sales --months 3 --only warnings
    python benchmarks/command_sweep.py --report results.jsonl   # the table of an earlier run

Each data directory gets a fresh temporary MLflow store and alert database and its own working
directory. Commands run in this process through typer's runner on ``service.cli.app.app`` (an
exception that escapes is reported as the crash handler of ``service.cli.app.main`` would report it,
with its traceback in the log); ``--subprocess`` runs each as ``quotacast ...`` instead, exactly
what a user sees, at about five seconds of start-up per command. For each command the sweep
records the exit code, the wall time and the last line of stderr, and flags:

- ``traceback``: a Python traceback on stderr;
- ``crash``: the last-line-of-defence message ("Details for a bug report"), an unexpected error;
- ``exit N``: an exit code other than 0 or 1 (2 means bad input, and the data here is valid);
- ``timeout``: the command ran longer than ``--timeout`` seconds (``--subprocess`` only);
- ``silent``: exit 1 without any message.

Feasibility and recalibration need targets, which the imported datasets lack: the sweep writes a
copy of the data with a generated ``targets.csv`` (each node's revenue of the 90 days before the
as-of, plus 10%, for the quarter of the last data day). Results go to ``--out`` as one JSON line
per command (``results.jsonl``), the full stderr of each command (with the crash report, if any)
under ``logs/``, and a Markdown table (``table.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

# benchmarks/features.py would shadow the `features` package: the repository comes first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA_ROOT = Path(__file__).resolve().parents[2] / "data"
DATASETS = ("online-retail", "crm-sales", "superstore")
FREQS = ("D", "W", "M", "Q")
CRASH_LINE = "Details for a bug report"
_REPORT_PATH = re.compile(r"Details for a bug report: (\S+)")


@dataclass(frozen=True)
class Step:
    """One command line of the sweep (``data``/``targets`` placeholders filled per dataset)."""

    label: str
    args: tuple[str, ...]
    needs_targets: bool = False


@dataclass
class Outcome:
    dataset: str
    months: str
    label: str
    argv: str
    exit: int
    seconds: float
    last_line: str
    flags: list[str] = field(default_factory=list)
    log: str = ""
    where: str = ""
    owner: str = ""


# Who fixes what: the first matching path of the innermost repository frame, else the command.
OWNERS = (
    ("churn", ("models/churn", "service/usecases/churn", "features/table", "features/labels")),
    ("win/feasibility", ("models/win", "service/usecases/win", "models/feasibility",
                         "service/usecases/feasibility", "features/funnel")),
    ("forecast", ("models/forecast", "models/reconcile", "service/usecases/forecast",
                  "features/revenue")),
)
COMMAND_OWNERS = (("train churn", "churn"), ("score churn", "churn"), ("promote churn", "churn"),
                  ("train win", "win/feasibility"), ("promote win", "win/feasibility"),
                  ("feasibility", "win/feasibility"), ("recalibrate", "win/feasibility"),
                  ("train forecast", "forecast"), ("promote forecast", "forecast"),
                  ("forecast", "forecast"))
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def blame(label: str, trace: str) -> tuple[str, str]:
    """(innermost repository frame, owner) of a flagged command."""
    repo = str(Path(__file__).resolve().parents[1]) + "/"
    frames = [(f[len(repo):], n) for f, n in _FRAME.findall(trace) if f.startswith(repo)]
    where = f"{frames[-1][0]}:{frames[-1][1]}" if frames else ""
    for path, _ in reversed(frames):
        for owner, prefixes in OWNERS:
            if path.startswith(prefixes):
                return where, owner
        if not path.startswith("service/cli/models"):
            return where, "command sweep (engine/io, cli, warnings, features/customer)"
    owner = next((o for prefix, o in COMMAND_OWNERS if label.startswith(prefix)), "")
    return where, owner or "command sweep (engine/io, cli, warnings, features/customer)"


def data_dir(name: str, months: int | None, root: Path) -> Path:
    return root / name if months is None else root / "cuts" / f"{name}-{months}m"


def _day(ts: pd.Timestamp) -> str:
    return ts.date().isoformat()


def plan(dates: dict[str, str], levels: list[str]) -> list[Step]:
    """Every README command, in an order where each finds what the earlier ones left."""
    mid, since = dates["mid"], dates["since"]
    steps = [
        Step("validate", ("validate", "--data", "{data}")),
        Step("features", ("features", "--data", "{data}", "--out", "{work}/features.parquet")),
        Step("features --as-of", ("features", "--data", "{data}", "--as-of", mid, "--out",
                                  "{work}/features_mid.parquet")),
        Step("train churn", ("train", "churn", "--data", "{data}")),
        Step("train churn --as-of --horizon-days 60",
             ("train", "churn", "--data", "{data}", "--as-of", mid, "--horizon-days", "60")),
        Step("promote churn", ("promote", "churn", "--data", "{data}")),
        Step("score churn", ("score", "churn", "--data", "{data}", "--out", "{work}/risk.csv")),
        Step("score churn --as-of", ("score", "churn", "--data", "{data}", "--as-of", mid,
                                     "--out", "{work}/risk_mid.csv")),
        Step("train win", ("train", "win", "--data", "{data}")),
        Step("train win --as-of", ("train", "win", "--data", "{data}", "--as-of", mid)),
        Step("promote win", ("promote", "win", "--data", "{data}")),
    ]
    for freq in FREQS:
        steps += [
            Step(f"train forecast {freq}", ("train", "forecast", "--data", "{data}", "--freq",
                                            freq, "--horizon", "3")),
            Step(f"promote forecast --freq {freq}", ("promote", "forecast", "--data", "{data}",
                                                     "--freq", freq)),
            Step(f"forecast {freq} (champion)", ("forecast", "--data", "{data}", "--freq", freq,
                                                 "--horizon", "3", "--out",
                                                 f"{{work}}/fc_{freq}.csv")),
            Step(f"forecast {freq} --fit", ("forecast", "--data", "{data}", "--freq", freq,
                                            "--horizon", "3", "--fit", "--out",
                                            f"{{work}}/fit_{freq}.csv")),
        ]
    steps += [
        Step("train forecast M --as-of", ("train", "forecast", "--data", "{data}", "--freq", "M",
                                          "--horizon", "3", "--as-of", mid)),
        Step("forecast M --fit --as-of", (
            "forecast", "--data", "{data}", "--freq", "M", "--horizon", "3", "--fit", "--as-of",
            mid, "--out", "{work}/fit_mid.csv")),
    ]
    for level in levels:
        steps += [
            Step(f"train forecast M --level {level} --promote", (
                "train", "forecast", "--data", "{data}", "--freq", "M", "--horizon", "3",
                "--level", level, "--promote")),
            Step(f"forecast M --level {level} (champion)", (
                "forecast", "--data", "{data}", "--freq", "M", "--horizon", "3", "--level", level,
                "--out", f"{{work}}/fc_{level}.csv")),
            Step(f"forecast M --level {level} --fit", (
                "forecast", "--data", "{data}", "--freq", "M", "--horizon", "3", "--level", level,
                "--fit", "--out", f"{{work}}/fit_{level}.csv")),
        ]
    steps += [
        Step("feasibility --all-nodes", ("feasibility", "--data", "{data}", "--all-nodes",
                                         "--draws", "1000", "--out", "{work}/feas_all.csv")),
        Step("feasibility (targets)", ("feasibility", "--data", "{targets}", "--draws", "1000",
                                       "--out", "{work}/feas.csv"), needs_targets=True),
        Step("feasibility --as-of (targets)", (
            "feasibility", "--data", "{targets}", "--draws", "1000", "--as-of", mid, "--out",
            "{work}/feas_mid.csv"), needs_targets=True),
        Step("recalibrate (targets)", ("recalibrate", "--data", "{targets}", "--draws", "1000",
                                       "--out", "{work}/recal.csv"), needs_targets=True),
        Step("warnings evaluate --as-of", ("warnings", "evaluate", "--data", "{data}",
                                           "--as-of", mid, "--no-deliver")),
        Step("warnings evaluate --since (targets)", (
            "warnings", "evaluate", "--data", "{targets}", "--since", since, "--every", "7d",
            "--no-deliver"), needs_targets=True),
        Step("warnings list", ("warnings", "list", "--data", "{data}", "--state", "all")),
        Step("warnings history", ("warnings", "history", "--data", "{data}")),
        Step("warnings deliver", ("warnings", "deliver", "--data", "{data}", "--deliver-wait",
                                  "0")),
        Step("plan --growth", ("plan", "--data", "{data}", "--period", dates["next_q"],
                               "--growth", "0.1", "--draws", "1000", "--out",
                               "{work}/plan.csv")),
        Step("plan --p-attain", ("plan", "--data", "{data}", "--period", dates["next_y"],
                                 "--p-attain", "0.5", "--draws", "1000", "--out",
                                 "{work}/plan_year.csv")),
        Step("funnel", ("funnel", "--data", "{data}", "--out", "{work}/funnel.csv")),
        Step("scenario budget-freeze", ("scenario", "--data", "{data}", "--scenario",
                                        "budget-freeze", "--draws", "1000", "--out",
                                        "{work}/freeze.csv")),
        Step("scenario recession (targets)", (
            "scenario", "--data", "{targets}", "--scenario", "recession", "--draws", "1000",
            "--out", "{work}/recession.csv"), needs_targets=True),
        Step("review (targets)", ("review", "--data", "{targets}", "--period", dates["last_q"],
                                  "--draws", "1000", "--out", "{work}/review.csv", "--report",
                                  "{work}/review.md"), needs_targets=True),
        Step("review", ("review", "--data", "{data}", "--draws", "1000", "--out",
                        "{work}/review_now.csv")),
        Step("trend (after the evaluations)", ("trend", "--data", "{targets}", "--out",
                                                "{work}/trend.csv"), needs_targets=True),
        Step("trend --as-of", ("trend", "--data", "{data}", "--as-of", mid, "--level",
                               "company", "--key", "all")),
        Step("commit", ("commit", "--data", "{data}", "--amount", "100000", "--draws", "1000",
                        "--out", "{work}/commit.csv")),
        Step("commit best_case --as-of", (
            "commit", "--data", "{data}", "--as-of", mid, "--amount", "150000", "--category",
            "best_case", "--draws", "1000")),
        Step("warnings check", ("warnings", "check", "{rules}")),
        Step("warnings metrics", ("warnings", "metrics")),
    ]
    return steps


def sweep_dates(tables: object) -> dict[str, str]:
    """``mid``: a month before the default as-of; ``since``: three weeks after ``mid``."""
    from engine.periods import default_as_of

    end = default_as_of(tables)  # type: ignore[arg-type]
    mid = end - pd.Timedelta(days=30)
    quarter = (end - pd.Timedelta(days=1)).to_period("Q")
    return {"end": _day(end), "mid": _day(mid), "since": _day(mid + pd.Timedelta(days=7)),
            "next_q": str(quarter + 1), "last_q": str(quarter - 1),
            "next_y": str(quarter.year + 1)}


def generated_targets(tables: object, as_of: pd.Timestamp) -> pd.DataFrame:
    """Targets for the quarter of the last data day: each node's last-90-day revenue + 10%."""
    from engine.io import Tables
    from engine.schemas import (
        AMOUNT,
        COMPANY_KEY,
        KEY,
        LEVEL,
        LEVEL_COMPANY,
        LEVEL_REGION,
        LEVEL_REP,
        LEVEL_TEAM,
        ORG,
        PERIOD,
    )
    from features.hierarchy import UNASSIGNED, revenue_events

    assert isinstance(tables, Tables)
    period = pd.Period(as_of - pd.Timedelta(days=1), freq="Q")
    label = f"{period.year}Q{period.quarter}"
    events = revenue_events(tables, as_of=as_of, since=as_of - pd.Timedelta(days=90))
    company = max(float(events[AMOUNT].sum()) * 1.1, 1000.0)
    rows = [{PERIOD: label, LEVEL: LEVEL_COMPANY, KEY: COMPANY_KEY, AMOUNT: company}]
    org = tables.get(ORG)
    for level in (LEVEL_REGION, LEVEL_TEAM, LEVEL_REP):
        sums = events.groupby(level, observed=True)[AMOUNT].sum()
        for key, amount in sums.items():
            known = org is None or key in set(org[level])
            if key != UNASSIGNED and known and amount > 0:
                rows.append({PERIOD: label, LEVEL: level, KEY: key,
                             AMOUNT: round(float(amount) * 1.1, 2)})
    return pd.DataFrame(rows)


def with_targets(source: Path, target_dir: Path) -> tuple[Path | None, str]:
    """A copy of ``source`` with generated targets; (None, why) when it cannot be made."""
    from engine.io import BadInput, load_tables
    from engine.periods import default_as_of

    try:
        tables = load_tables(str(source))
    except BadInput as exc:
        return None, f"data does not validate: {exc.problems[0]}"
    shutil.copytree(source, target_dir, dirs_exist_ok=True)
    targets = generated_targets(tables, default_as_of(tables))
    targets.to_csv(target_dir / "targets.csv", index=False)
    return target_dir, f"{len(targets)} generated targets for {targets['period'].iloc[0]}"


def _levels(source: Path) -> list[str]:
    """Levels worth a forecast besides company: region when the data has one."""
    from engine.io import BadInput, load_tables

    try:
        tables = load_tables(str(source))
    except BadInput:
        return []
    customers = tables.get("customers")
    has_region = tables.has("org") or (customers is not None and "region" in customers)
    return ["region"] if has_region else []


def _flags(code: int, stderr: str, timed_out: bool) -> list[str]:
    flags = []
    if timed_out:
        flags.append("timeout")
    if "Traceback (most recent call last)" in stderr:
        flags.append("traceback")
    if CRASH_LINE in stderr:
        flags.append("crash")
    if code not in (0, 1) and not timed_out:
        flags.append(f"exit {code}")
    if code == 1 and not stderr.strip():
        flags.append("silent")
    return flags


_BOX = "".join(chr(c) for c in range(0x2500, 0x2580)) + " "
_USAGE = ("Invalid value", "No such option", "Missing option", "Got unexpected", "Error")


def _last_line(stderr: str) -> str:
    """The line that says what happened: a crash, an error, a usage error, else the last."""
    lines = [line.strip(_BOX) for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith("Try '")]
    prose = [line for line in lines if not any(c in _BOX[:-1] for c in line)]  # no table rows
    lines = prose or lines
    crash = [line for line in lines if CRASH_LINE in line]
    errors = [line for line in lines if line.startswith("error:") or line.startswith(_USAGE)]
    return (crash or errors or lines or [""])[-1][:300]


def run_step(argv: list[str], cwd: Path, env: dict[str, str], timeout: float
             ) -> tuple[int, float, str, bool]:
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        code, stderr, timed_out = done.returncode, done.stderr, False
    except subprocess.TimeoutExpired as exc:
        raw = exc.stderr or b""
        stderr = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        code, timed_out = -9, True
    return code, time.perf_counter() - start, stderr, timed_out


def run_in_process(args: list[str], cwd: Path, env: dict[str, str]
                   ) -> tuple[int, float, str, str]:
    """``quotacast ARGS`` through typer's runner: exit code, seconds, stderr, traceback."""
    import traceback

    from typer.testing import CliRunner

    from service.cli.app import app

    here = Path.cwd()
    os.chdir(cwd)
    start = time.perf_counter()
    try:
        result = CliRunner().invoke(app, args, env=env, catch_exceptions=True)
    finally:
        os.chdir(here)
    seconds = time.perf_counter() - start
    stderr, trace = result.stderr, ""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        trace = "".join(traceback.format_exception(exc))
        stderr += (f"error: quotacast could not finish ({type(exc).__name__}: {exc}). "
                   f"{CRASH_LINE}: (in-process, traceback in the log)\n")
    return result.exit_code, seconds, stderr, trace


def _crash_report(stderr: str) -> str:
    found = _REPORT_PATH.search(stderr)
    if not found:
        return ""
    path = Path(found.group(1).rstrip("."))
    return path.read_text() if path.is_file() else ""


def sweep_dataset(name: str, months: int | None, root: Path, out: Path, timeout: float,
                  only: list[str], quotacast: str | None) -> Iterator[Outcome]:
    """Run the plan on one data directory, in a fresh working directory and stores."""
    from engine.io import BadInput, load_tables

    source = data_dir(name, months, root)
    tag = "all" if months is None else f"{months}m"
    work = Path(tempfile.mkdtemp(prefix=f"sweep-{name}-{tag}-"))
    logs = out / "logs" / f"{name}-{tag}"
    logs.mkdir(parents=True, exist_ok=True)
    env = {"QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "QUOTACAST_DATABASE_URL": f"sqlite:///{work / 'quotacast.db'}",
           "QUOTACAST_N_JOBS": os.environ.get("QUOTACAST_N_JOBS", "1"),
           "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    try:
        dates = sweep_dates(load_tables(str(source)))
    except (BadInput, ValueError):
        dates = None  # only `validate` runs: it says why
    targets, why = with_targets(source, work / "data-with-targets")
    (logs / "targets.txt").write_text(why + "\n")
    rules = str(Path(__file__).resolve().parents[1] / "rules" / "default.yaml")
    steps = plan(dates, _levels(source)) if dates else plan({"mid": "", "since": ""}, [])[:1]
    for number, step in enumerate(steps, start=1):
        if only and not any(step.label.startswith(o) for o in only):
            continue
        fill = {"data": str(source), "targets": str(targets or source), "work": str(work),
                "rules": rules}
        args = [a.format(**fill) for a in step.args]
        if quotacast is None:
            code, seconds, stderr, trace = run_in_process(args, work, env)
            timed_out = False
        else:
            code, seconds, stderr, timed_out = run_step([quotacast, *args], work,
                                                        {**os.environ, **env}, timeout)
            trace = _crash_report(stderr)
        log = logs / f"{number:02d}-{re.sub(r'[^a-z0-9]+', '-', step.label.lower())}.txt"
        log.write_text(f"$ quotacast {' '.join(args)}\nexit {code} in {seconds:.1f}s\n\n"
                       f"{stderr}\n{trace}")
        flags = _flags(code, stderr, timed_out)
        if step.needs_targets and targets is None:
            flags.append(f"no targets: {why}")
        where, owner = blame(step.label, trace) if flags else ("", "")
        yield Outcome(name, tag, step.label, " ".join(args), code, round(seconds, 1),
                      _last_line(stderr), flags, str(log), where, owner)
    shutil.rmtree(work, ignore_errors=True)


def _cell(row: dict[str, object]) -> str:
    flags = row["flags"]
    assert isinstance(flags, list)
    return f"{row['exit']}/{row['seconds']:.0f}s" + (f" **!{','.join(flags)}**" if flags else "")


def _flagged(row: dict[str, object]) -> str:
    flags = row["flags"]
    assert isinstance(flags, list)
    return (f"- {row['dataset']} {row['months']} `{row['label']}`: {', '.join(flags)} "
            f"[{row.get('owner', '')}; {row.get('where', '')}]: {row['last_line']} "
            f"(log {row['log']})")


def table(outcomes: list[dict[str, object]]) -> str:
    """Markdown: one row per command, one column per dataset cut (exit/seconds, ! on a flag)."""
    frame = pd.DataFrame(outcomes)
    frame["column"] = frame["dataset"] + " " + frame["months"]
    frame["cell"] = [_cell(row) for row in outcomes]
    order = list(dict.fromkeys(frame["label"]))
    columns = list(dict.fromkeys(frame["column"]))
    grid = frame.pivot_table(index="label", columns="column", values="cell", aggfunc="last")
    grid = grid.reindex(index=order, columns=columns).fillna("")
    lines = ["| command | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(grid.loc[label]) + " |" for label in order]
    flagged = [_flagged(row) for row in outcomes if row["flags"]]
    if flagged:
        lines += ["", "Flagged:", "", *flagged]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DATA_ROOT,
                        help="holds <name>/ and cuts/<name>-<N>m/ (default ../data)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--months", nargs="+", default=["all", "3", "6", "9"],
                        help="'all' for the full dataset, or cut lengths in months")
    parser.add_argument("--only", nargs="*", default=[],
                        help="run only the steps whose label starts with one of these")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds per command (with --subprocess)")
    parser.add_argument("--subprocess", action="store_true",
                        help="run each command as `quotacast ...` (slower, exactly as a user)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/command_sweep"))
    parser.add_argument("--report", type=Path, help="print the table of a results.jsonl")
    args = parser.parse_args()
    if args.report:
        print(table([json.loads(line) for line in args.report.read_text().splitlines()]))
        return
    quotacast = None
    if args.subprocess:
        quotacast = shutil.which("quotacast") or str(Path(sys.executable).with_name("quotacast"))
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    outcomes: list[dict[str, object]] = []
    with results.open("a") as sink:
        for months in args.months:
            for name in args.datasets:
                cut = None if months == "all" else int(months)
                for outcome in sweep_dataset(name, cut, args.root, args.out, args.timeout,
                                             args.only, quotacast):
                    row = asdict(outcome)
                    outcomes.append(row)
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                    mark = f"  !! {', '.join(outcome.flags)}" if outcome.flags else ""
                    print(f"{outcome.dataset:14} {outcome.months:4} {outcome.label:42} "
                          f"exit {outcome.exit:3} {outcome.seconds:7.1f}s  "
                          f"{outcome.last_line[:110]}{mark}", flush=True)
    (args.out / "table.md").write_text(table(outcomes) + "\n")
    print(table(outcomes))


if __name__ == "__main__":
    main()
