"""Every step that has ``--engine``, on pandas and on Spark local, in the same run.

Generates the demo company at a size (``large``: 210,000 customers; ``--factor 3`` or ``10``
multiplies its customers, and so its orders) once, writes it as a Parquet data directory
partitioned by year (``engine.compute.parquet``), then runs each step as ``quotacast`` with
``--engine pandas`` and ``--engine spark``, each in its own process tree, measuring wall time
and the peak resident memory of the whole tree (the JVM and Spark's Python workers included,
sampled every 0.2 s), and checks that both engines answer the same:

- ``features``: the feature tables are identical;
- ``warnings``: ``warnings evaluate`` (default rules, its own fresh alert store per engine):
  the alerts' rows and the stores' alerts (fingerprint, state, value, since) are identical;
- ``train-churn``, ``score-churn``, ``forecast`` (``--fit --level rep``), ``feasibility``:
  run when ``quotacast <command> --help`` offers ``--engine`` (else skipped, saying so);
  their tables compared (identical, or the largest difference of each number column).
  Every step runs in one model workspace (``--workspace``, default ``scale``): ``train-churn``
  promotes the model it trains, and ``score-churn`` on any company scores with it (train on
  ``--size medium``, score the large ones).

Each result is appended to ``scale.jsonl``; the summary table takes a step not run this time
from its latest record there (marked ``earlier``). With records of 1x and 3x (or 10x) of a
size, the growth exponent of each step's time and peak follows (time ~ size^k), and a paper
extrapolation to a cluster (``--nodes`` x ``--cores-per-node``) from the measured Spark
throughput per core: an estimate, not a measurement.

    nice .venv/bin/python benchmarks/scale.py --size small                    # a few minutes
    nice .venv/bin/python benchmarks/scale.py --size large --steps warnings   # one step
    nice .venv/bin/python benchmarks/scale.py --size large --factor 3 --engines spark

Run heavy sizes one at a time (the machine's two cores are shared); steps run one at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

__all__ = ["STEPS", "company", "main", "measure"]

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "scale"
QUOTACAST = str(Path(sys.executable).with_name("quotacast"))
PANDAS_BAR_GIB = 4.0  # issue 19: the pandas path on `large` stays under 4 GiB


@dataclass(frozen=True)
class Step:
    """One measured command: its name, its ``quotacast`` words, its output's suffix, and the
    options after ``--data D --engine E --out F``."""

    name: str
    command: tuple[str, ...]
    suffix: str
    options: tuple[str, ...] = ()
    writes: bool = True  # takes --out


STEPS: dict[str, Step] = {s.name: s for s in (
    Step("features", ("features",), ".parquet"),
    Step("warnings", ("warnings", "evaluate"), ".csv", ("--no-deliver",)),
    Step("train-churn", ("train", "churn"), ".csv", writes=False),
    Step("score-churn", ("score", "churn"), ".parquet"),
    Step("forecast", ("forecast",), ".parquet", ("--fit", "--level", "rep")),
    Step("feasibility", ("feasibility",), ".parquet"),
)}


def company(size: str, factor: int, seed: int, root: Path, block: int | None = None) -> Path:
    """The Parquet data directory of ``size`` x ``factor`` (generated once, then reused).

    Generated a block of ``block`` customers at a time (default ``size``'s customers;
    ``engine.synthetic.generate_blocks``), each block's files added to the directory before the
    next is simulated: the memory of one block whatever the factor. With the default block, 1x
    is ``synthetic.generate``'s company and the first third of 3x is 1x's customers."""
    import resource

    target = root / f"{size}-x{factor}-seed{seed}"
    done = target / ".complete"
    if done.exists():
        return target
    if target.exists():  # a generation cut short: its blocks would be written twice
        shutil.rmtree(target)
    import pyarrow as pa

    from engine import synthetic
    from engine.compute.parquet import write_parquet_dir

    base = synthetic.SIZES[size]
    spec = replace(base, name=f"{size}x{factor}", customers=base.customers * factor)
    start = time.perf_counter()
    rows: dict[str, int] = {}
    block = block or base.customers
    for part, frames in enumerate(synthetic.generate_blocks(spec, seed=seed, block=block)):
        write_parquet_dir(frames, target, part=part)
        for name, frame in frames.items():
            rows[name] = rows.get(name, 0) + len(frame)
        del frames  # else alive while the next block is simulated
        pa.default_memory_pool().release_unused()  # Arrow's pool keeps the written buffers
        print(f"  generated block {part}: {time.perf_counter() - start:.0f} s", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    done.write_text(json.dumps({"rows": rows, "seconds": round(time.perf_counter() - start, 1),
                                "peak_gib": round(peak, 2), "block": block}))
    return target


def measure(command: list[str], env: dict[str, str], cwd: Path | None = None
            ) -> dict[str, Any]:
    """Wall seconds, peak RSS (GiB) of a command's whole process tree, and its last words;
    with Spark also the peak of the command's own Python process (the driver's Python:
    what it collects) and of the JVM (Spark's driver and, in local mode, its executors)."""
    start = time.perf_counter()
    process = psutil.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    peak = python = jvm = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            sizes = [(p.name(), p.memory_info().rss) for p in tree if p.is_running()]
            peak = max(peak, sum(rss for _, rss in sizes))
            python = max(python, sizes[0][1])
            jvm = max(jvm, sum(rss for name, rss in sizes if name == "java"))
        except (psutil.Error, IndexError):
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    said = process.stderr.read().decode(errors="replace")
    return {"seconds": round(seconds, 1), "peak_gib": round(peak / 2**30, 2),
            **({"python_gib": round(python / 2**30, 2), "jvm_gib": round(jvm / 2**30, 2)}
               if jvm else {}),
            "exit": process.returncode, "said": said[-1500:]}


def has_engine(step: Step) -> bool:
    """Whether ``quotacast <command> --help`` offers ``--engine``."""
    found = subprocess.run([QUOTACAST, *step.command, "--help"], capture_output=True,
                           text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)
    return "--engine" in found.stdout


def _read(path: Path) -> Any:
    import pandas as pd

    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def compare_tables(paths: list[Path]) -> tuple[bool, str]:
    """Identical tables, or the largest difference of each number column."""
    import numpy as np

    if not all(p.exists() for p in paths):
        return False, "an output is missing"
    a, b = (_read(p) for p in paths)
    if a.equals(b):
        return True, f"identical ({len(a):,} rows x {a.shape[1]} columns)"
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False, f"shapes differ: {a.shape} vs {b.shape}"
    diffs = []
    for column in a.columns:
        x, y = a[column], b[column]
        if np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number):
            gap = float(np.nanmax(np.abs(x.to_numpy(float) - y.to_numpy(float)), initial=0.0))
            if gap > 0:
                diffs.append(f"{column} {gap:.3g}")
        elif not x.astype(str).equals(y.astype(str)):
            diffs.append(f"{column} (text)")
    return False, "differ: " + ", ".join(diffs[:8])


def _stored_alerts(database: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT fingerprint, state, value, since FROM warning_alerts "
                          "ORDER BY fingerprint").fetchall()
    return [tuple(r) for r in rows]


def compare_warnings(paths: list[Path], databases: list[Path]) -> tuple[bool, str]:
    """The printed alerts identical and the stores' alerts (fingerprint, state, value,
    since) identical."""
    same, words = compare_tables(paths)
    stored = [_stored_alerts(d) for d in databases]
    kept = stored[0] == stored[1]
    states: dict[str, int] = {}
    for _, state, _, _ in stored[0]:
        states[state] = states.get(state, 0) + 1
    told = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    return same and kept, (f"alerts: {words}; stores ({len(stored[0]):,} alerts: {told}) "
                           f"{'identical' if kept else 'DIFFER'}")


def run_step(step: Step, data: Path, engines: list[str], args: argparse.Namespace,
             scratch: Path) -> dict[str, Any]:
    """The step on each engine, one after the other, and the equality check."""
    results: dict[str, Any] = {}
    outputs, databases = [], []
    for engine in engines:
        out = scratch / f"{step.name}-{data.name}-{engine}{step.suffix}"
        database = scratch / f"alerts-{data.name}-{engine}.db"
        if step.name == "warnings":  # a fresh alert store: both engines start from nothing
            database.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
        env = {**os.environ, "QUOTACAST_SPARK_MASTER": args.master,
               # Spark's own way to size the JVM before it starts.
               "PYSPARK_SUBMIT_ARGS": f"--driver-memory {args.driver_memory} pyspark-shell",
               "QUOTACAST_DATABASE_URL": f"sqlite:///{database}",
               # Each engine its own model registry: score churn uses that engine's champion,
               # in one workspace for every company (a champion trained on one scores all).
               "QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{scratch / f'mlflow-{engine}.db'}",
               "QUOTACAST_WORKSPACE": args.workspace}
        argv = [QUOTACAST, *step.command, "--data", str(data), "--engine", engine,
                *step.options, *(("--out", str(out)) if step.writes else ())]
        result = measure(argv, env, cwd=scratch)
        said = result.pop("said")
        if result["exit"] != 0:
            words = [line.strip(" │╭╮╰╯─") for line in said.splitlines()]
            words = [w for w in words if any(ch.isalpha() for ch in w)]
            result["error"] = " ".join(words[-2:]) if words else "no words"
        if step.name == "train-churn" and result["exit"] == 0:
            # The new model is the challenger; score churn uses the champion.
            promoted = subprocess.run([QUOTACAST, "promote", "churn"], env=env, cwd=scratch,
                                      capture_output=True, text=True, timeout=600)
            result["promoted"] = promoted.returncode == 0
        results[engine] = result
        outputs.append(out)
        databases.append(database)
        peak = result["peak_gib"]
        bar = ""
        if engine == "pandas" and data.name.startswith("large-x1"):
            bar = f"  (bar {PANDAS_BAR_GIB:g} GiB: {'under' if peak < PANDAS_BAR_GIB else 'OVER'})"
        parts = (f" (driver's Python {result['python_gib']:.2f}, JVM {result['jvm_gib']:.2f})"
                 if "jvm_gib" in result else "")
        print(f"  {step.name:<12} {engine:>6}: {result['seconds']:8.1f} s {peak:6.2f} GiB peak"
              f"{parts}{bar}{'' if result['exit'] == 0 else '  FAILED: ' + result['error']}",
              flush=True)
    if len(engines) == 2 and all(results[e]["exit"] == 0 for e in engines) and step.writes:
        check: Callable[[], tuple[bool, str]] = (
            (lambda: compare_warnings(outputs, databases)) if step.name == "warnings"
            else (lambda: compare_tables(outputs)))
        same, words = check()
        results["same"], results["check"] = same, words
        print(f"  {step.name:<12}  same on both engines: {same}: {words}", flush=True)
    return results


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for record in records:
        record.setdefault("step", "features")  # the first records measured features only
    return records


def _latest(records: list[dict[str, Any]], company_name: str, step: str, master: str
            ) -> dict[str, Any] | None:
    found = [r for r in records if r["company"] == company_name and r["step"] == step
             and r.get("master") == master]
    return found[-1] if found else None


def _cell(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    if result.get("exit", 0) != 0:
        return "failed"
    return f"{result['seconds']:.0f} s, {result['peak_gib']:.2f} GiB"


def summary(records: list[dict[str, Any]], company_name: str, master: str,
            ran: set[str]) -> list[str]:
    """The markdown table of every step of a company (latest record of each)."""
    lines = ["| step | pandas (wall, peak) | Spark " + master + " (wall, peak) | "
             "same answer |", "|---|---|---|---|"]
    for name in STEPS:
        record = _latest(records, company_name, name, master)
        if record is None:
            continue
        mark = "" if name in ran else " (earlier)"
        same = record.get("same")
        words = "-" if same is None else ("yes" if same else "NO")
        lines.append(f"| {name}{mark} | {_cell(record.get('pandas'))} | "
                     f"{_cell(record.get('spark'))} | {words} |")
    return lines


def growth(records: list[dict[str, Any]], size: str, seed: int, master: str) -> list[str]:
    """time ~ factor^k and peak ~ factor^k for each step and engine measured at two factors
    of the same size (1x against the largest other)."""
    lines = []
    for name in STEPS:
        for engine in ("pandas", "spark"):
            points = {}
            for factor in (1, 3, 10):
                record = _latest(records, f"{size}-x{factor}-seed{seed}", name, master)
                result = None if record is None else record.get(engine)
                if result and result.get("exit", 0) == 0:
                    points[factor] = result
            if 1 not in points or len(points) < 2:
                continue
            top = max(points)
            k_time = math.log(points[top]["seconds"] / points[1]["seconds"]) / math.log(top)
            k_peak = math.log(points[top]["peak_gib"] / points[1]["peak_gib"]) / math.log(top)
            lines.append(f"  {name:<12} {engine:>6}: 1x -> {top}x: time x"
                         f"{points[top]['seconds'] / points[1]['seconds']:.2f} "
                         f"(exponent {k_time:.2f}), peak x"
                         f"{points[top]['peak_gib'] / points[1]['peak_gib']:.2f} "
                         f"(exponent {k_peak:.2f})")
    return lines


def cluster_estimate(records: list[dict[str, Any]], company_name: str, master: str,
                     rows: dict[str, int], nodes: int, cores: int, scale: float,
                     startup: float) -> list[str]:
    """Paper extrapolation: the measured Spark rows per core-second of each step, a company
    ``scale`` times larger, ``nodes`` x ``cores`` cores, plus a fixed start-up. An estimate:
    it assumes the step stays linear (see the growth exponent) and that the cluster's cores
    are as fast as these and never wait on the network or a skewed bucket."""
    fixed = re.fullmatch(r"local\[(\d+)\]", master)
    local_cores = int(fixed.group(1)) if fixed else (os.cpu_count() or 1)
    total = sum(rows.values())
    lines = []
    for name in STEPS:
        record = _latest(records, company_name, name, master)
        result = None if record is None else record.get("spark")
        if not result or result.get("exit", 0) != 0:
            continue
        busy = max(result["seconds"] - startup, 1.0)
        per_core = total / (busy * local_cores)
        seconds = startup + total * scale / (per_core * nodes * cores)
        lines.append(f"  {name:<12}: {per_core:,.0f} rows per core-second here -> about "
                     f"{seconds / 60:.1f} min for {scale:g}x ({total * scale / 1e6:,.0f}M rows) "
                     f"on {nodes} x {cores} cores (estimate)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large", choices=("small", "medium", "large"))
    parser.add_argument("--factor", type=int, default=1, help="customers x this (3, 10)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--block", type=int, default=None,
                        help="customers generated at a time (default: the size's customers; "
                             "smaller holds less memory but makes another company)")
    parser.add_argument("--engines", nargs="+", default=["pandas", "spark"],
                        choices=("pandas", "spark"))
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--master", default="local[2]", help="QUOTACAST_SPARK_MASTER")
    parser.add_argument("--driver-memory", default="6g",
                        help="Spark's driver memory (local mode: the whole Spark heap)")
    parser.add_argument("--root", type=Path, default=OUT)
    parser.add_argument("--workspace", default="scale",
                        help="the model workspace of every step: train churn on one company "
                             "(then promoted), score churn on the others")
    parser.add_argument("--nodes", type=int, default=20, help="cluster of the estimate")
    parser.add_argument("--cores-per-node", type=int, default=8)
    parser.add_argument("--estimate-scale", type=float, default=55.0,
                        help="company size of the estimate, in multiples of this one")
    parser.add_argument("--startup", type=float, default=30.0,
                        help="seconds of a step that do not shrink with more cores "
                             "(JVM and session start, the driver's own work)")
    args = parser.parse_args(argv)

    args.root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = company(args.size, args.factor, args.seed, args.root, args.block)
    info = json.loads((data / ".complete").read_text())
    print(f"company {data.name}: {info['rows'].get('customers', 0):,} customers, "
          f"{info['rows'].get('orders', 0):,} orders (generated in {info['seconds']} s, "
          f"{info.get('peak_gib', '?')} GiB peak; "
          f"ready in {time.perf_counter() - start:.0f} s)", flush=True)
    scratch = args.root / "runs"
    scratch.mkdir(exist_ok=True)
    record_path = args.root / "scale.jsonl"
    ran: set[str] = set()
    for name in args.steps:
        step = STEPS[name]
        if not has_engine(step):
            print(f"  {name:<12} skipped: `quotacast {' '.join(step.command)}` has no "
                  "--engine option yet", flush=True)
            continue
        results = run_step(step, data, args.engines, args, scratch)
        ran.add(name)
        with record_path.open("a") as handle:
            handle.write(json.dumps({"company": data.name, "master": args.master, "step": name,
                                     "rows": info["rows"], "at": time.strftime("%FT%TZ",
                                                                               time.gmtime()),
                                     **results}) + "\n")
    records = _records(record_path)
    print("\n".join(["", *summary(records, data.name, args.master, ran)]))
    lines = growth(records, args.size, args.seed, args.master)
    if lines:
        print("\ngrowth (time ~ size^k):\n" + "\n".join(lines))
    estimate = cluster_estimate(records, data.name, args.master, info["rows"], args.nodes,
                                args.cores_per_node, args.estimate_scale, args.startup)
    if estimate:
        print(f"\npaper extrapolation to {args.nodes} nodes x {args.cores_per_node} cores "
              "(an estimate from the throughput measured here, not a measurement):\n"
              + "\n".join(estimate))
    if shutil.which("java") is None and "spark" in args.engines:
        print("note: no java on the PATH; the Spark runs need Java 17")


if __name__ == "__main__":
    main()
