"""Time and peak memory of hierarchical reconciliation: sparse (this tree) against the dense code.

A synthetic org: company > 50 regions > 500 teams > N reps (reps dealt to teams at random,
teams to regions round-robin), 12 periods of base forecasts for every node and three backtest
windows of errors. Every run reconciles them the way ``RevenueForecaster`` does
(:func:`models.forecast.reconciliation.reconciled`: build the tree, then ``bottom_up``,
``wls_struct`` or ``mint_shrink``), in its own process whose peak RSS is read from the kernel
(``wait4``): on this working tree ("sparse") and on the committed dense version ``--before``,
checked out in a temporary git worktree ("dense": dense summing matrix, ``O(n^3)`` solves). The
dense code holds several ``n_nodes x n_nodes`` float64 matrices (about 20 GB each at 50,000
reps), so it runs only up to ``--dense-max`` reps; its growth exponent is fitted on its two
largest sizes and extrapolated. Where both ran, the answers are compared. BLAS is held to one
thread in every run (the machine is shared).

Run from the repository root::

    nice .venv/bin/python benchmarks/reconcile.py --reps 1000 2000 5000 20000 50000 \
        --dense-max 5000

``--forecast DATA`` instead checks real data: ``quotacast forecast --fit --data DATA --freq F
--level L`` run twice, once as is and once with the two reconciliation modules of ``--before``
(everything else this tree's code), and the forecasts and summaries compared::

    nice .venv/bin/python benchmarks/reconcile.py --forecast /work/data/crm-sales --level rep
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parents[1]
# A child run imports the version under test from its root (a git worktree for the dense one).
ROOT = Path(os.environ.get("RECONCILE_BENCH_ROOT", HERE))
sys.path.insert(0, str(ROOT))

from engine.schemas import REGION, REP, TEAM  # noqa: E402
from models.backtest import BacktestWindow  # noqa: E402
from models.forecast.base import COMBINED  # noqa: E402
from models.forecast.reconciliation import reconciled  # noqa: E402
from models.reconcile import build_hierarchy  # noqa: E402

# The last commit with the dense summing matrix and dense MinT.
BEFORE = "0748e22"
METHODS = ("bottom_up", "wls_struct", "mint_shrink")
PERIODS, WINDOWS = 12, 3


def org_frame(reps: int, teams: int = 500, regions: int = 50, seed: int = 0) -> pd.DataFrame:
    """company > ``regions`` > ``teams`` > ``reps``: every team gets at least one rep."""
    rng = np.random.default_rng(seed)
    team = np.concatenate([np.arange(min(teams, reps)),
                           rng.integers(0, teams, max(reps - teams, 0))])
    return pd.DataFrame({REP: [f"rep{i:06d}" for i in range(reps)],
                         TEAM: [f"team{t:03d}" for t in team],
                         REGION: [f"region{t % regions:02d}" for t in team]})


def child(reps: int, method: str, out: Path) -> None:
    """One reconciliation on ``ROOT``'s code; prints seconds as JSON, saves the answer."""
    org = org_frame(reps)
    rng = np.random.default_rng(1)
    imports_rss = _high_water_mib()
    t0 = time.perf_counter()
    tree = build_hierarchy(org)
    t1 = time.perf_counter()
    n = len(tree.nodes)
    sizes = np.asarray(tree.summing.sum(axis=1), dtype=float).ravel()
    # Base forecasts: each node's mean grows with its size; noise makes them incoherent.
    base = sizes[:, None] * 100.0 + rng.normal(0, 30, (n, PERIODS)) * np.sqrt(sizes)[:, None]
    windows = []
    for i in range(WINDOWS):
        actual = base + rng.normal(0, 40, (n, PERIODS)) * np.sqrt(sizes)[:, None]
        windows.append(BacktestWindow(i, np.ones(n, bool), actual, np.ones(n),
                                      {COMBINED: base}))
    rows = np.arange(n)
    t2 = time.perf_counter()
    result = reconciled(base, tree, rows, method, windows)
    t3 = time.perf_counter()
    np.save(out, result)
    import models.reconcile as module

    print(json.dumps({"nodes": n, "build s": t1 - t0, "reconcile s": t3 - t2,
                      "imports MiB": imports_rss, "code": str(Path(module.__file__).parents[1])}))


def _high_water_mib() -> float:
    """This process's peak RSS so far (MiB), from the kernel."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**10
    return float("nan")


def measured(root: Path, reps: int, method: str, out: Path) -> dict[str, object]:
    """A child run on ``root``'s code: its seconds, wall seconds and peak RSS (MiB)."""
    env = {**os.environ, "RECONCILE_BENCH_ROOT": str(root), "PYTHONPATH": str(root),
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(HERE / "benchmarks" / "reconcile.py"),
                             "--child", str(out), "--reps", str(reps), "--method", method],
                            env=env, cwd=root, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    peak = usage.ru_maxrss / 2**10
    if os.waitstatus_to_exitcode(status) != 0:
        return {"wall s": wall, "peak RSS MiB": peak, "failed": "yes"}
    answer = json.loads(text.strip().splitlines()[-1])
    if Path(str(answer.pop("code"))).resolve() != root.resolve():
        raise RuntimeError(f"the child did not run the code under {root}")
    imports = float(answer.pop("imports MiB"))
    return {**answer, "wall s": wall, "peak RSS MiB": peak, "above imports MiB": peak - imports}


def extrapolated(rows: list[dict[str, object]], method: str, target: int) -> dict[str, object]:
    """The dense runs' time and memory growth (fitted on the two largest) at ``target`` reps."""
    runs = sorted((r for r in rows if r["code"] == "dense" and r["method"] == method
                   and "failed" not in r), key=lambda r: int(r["reps"]))  # type: ignore[arg-type]
    if len(runs) < 2:
        return {}
    a, b = runs[-2], runs[-1]
    ratio = math.log(int(b["reps"]) / int(a["reps"]))  # type: ignore[arg-type]
    out: dict[str, object] = {"code": "dense (extrapolated)", "method": method, "reps": target}
    growth = []
    for column in ("build s", "reconcile s", "above imports MiB"):
        x, y = float(a[column]), float(b[column])  # type: ignore[arg-type]
        exponent = math.log(y / x) / ratio if x > 0 and y > 0 else float("nan")
        out[column] = y * (target / int(b["reps"])) ** exponent  # type: ignore[arg-type]
        growth.append(f"{column.split()[0]} n^{exponent:.2f}")
    print(f"dense {method}: growth from {a['reps']:,} to {b['reps']:,} reps: "
          + ", ".join(growth), flush=True)
    return out


def run(reps_list: list[int], methods: list[str], before: str, dense_max: int) -> None:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "dense"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(old), before],
                       cwd=HERE, check=True)
        try:
            for reps in reps_list:
                for method in methods:
                    roots = {"sparse": HERE, **({"dense": old} if reps <= dense_max else {})}
                    answers = {}
                    for name, root in roots.items():
                        out = Path(tmp) / f"{name}-{reps}-{method}.npy"
                        result = measured(root, reps, method, out)
                        rows.append({"code": name, "method": method, "reps": reps, **result})
                        print(rows[-1], flush=True)
                        if out.exists():
                            answers[name] = np.load(out)
                    if len(answers) == 2:
                        dense, sparse = answers["dense"], answers["sparse"]
                        gap = float(np.max(np.abs(sparse - dense)) / np.max(np.abs(dense)))
                        rows[-2]["max rel. diff vs dense"] = gap
                        print(f"{reps:,} reps, {method}: largest difference "
                              f"{gap:.2g} of the largest value", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=HERE,
                           check=False)
    target = max(reps_list)
    rows += [e for m in methods if (e := extrapolated(rows, m, target))]
    table = pd.DataFrame(rows).drop(columns=["wall s"])
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 20)
    print(f"\nReconciliation: company > 50 regions > 500 teams > reps, {PERIODS} periods, "
          f"{WINDOWS} windows of errors; each run in its own process (one BLAS thread), "
          "peak RSS from the kernel")
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.3g}"))


def forecast_child(old: Path | None, args: list[str]) -> int:
    """``quotacast`` with ``args``; with ``old``, the reconciliation modules under it."""
    import importlib.util

    import models.forecast.forecaster as forecaster
    import models.reconcile as current
    from service.cli.app import main as cli

    if old is not None:
        def load(name: str, path: str) -> object:
            spec = importlib.util.spec_from_file_location(name, old / path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module

        sys.modules["models.reconcile"] = load("dense_reconcile", "models/reconcile.py")
        dense = load("dense_reconciliation", "models/forecast/reconciliation.py")
        sys.modules["models.reconcile"] = current
        forecaster.align_tree = dense.align_tree  # type: ignore[attr-defined]
        forecaster.reconcile_windows = dense.reconcile_windows  # type: ignore[attr-defined]
    sys.argv = ["quotacast", *args]
    return int(cli() or 0)


def forecast_check(data: str, freq: str, level: str, before: str) -> int:
    """The forecast of ``data`` with the sparse and the dense reconciliation, compared."""
    frames, notes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "dense"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(old), before],
                       cwd=HERE, check=True)
        try:
            for name in ("sparse", "dense"):
                out = Path(tmp) / f"{name}.csv"
                args = ["forecast", "--fit", "--data", data, "--freq", freq, "--level", level,
                        "-o", str(out)]
                extra = ["--dense-root", str(old)] if name == "dense" else []
                t0 = time.perf_counter()
                done = subprocess.run([sys.executable, str(HERE / "benchmarks" / "reconcile.py"),
                                       "--forecast-child", *extra, "--", *args], cwd=HERE,
                                      capture_output=True, text=True)
                print(f"{name}: exit {done.returncode} in {time.perf_counter() - t0:.1f} s",
                      flush=True)
                if done.returncode != 0:
                    print(done.stderr[-2000:])
                    return 1
                frames[name] = pd.read_csv(out)
                notes[name] = [line for line in done.stderr.splitlines()
                               if not line.startswith("wrote ")]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=HERE,
                           check=False)
    sparse, dense = frames["sparse"], frames["dense"]
    values = [c for c in dense.columns if c.startswith("yhat")]
    same_rows = sparse.drop(columns=values).equals(dense.drop(columns=values))
    a, b = sparse[values].to_numpy(float), dense[values].to_numpy(float)
    scale = float(np.max(np.abs(b)))
    gap = float(np.max(np.abs(a - b)))
    close = same_rows and bool(np.allclose(a, b, rtol=1e-9, atol=1e-9 * scale))
    print(f"{data} --freq {freq} --level {level}: {len(dense)} rows; largest difference "
          f"{gap:.3g} ({gap / scale:.2g} of the largest value); within rtol 1e-9: {close}; "
          f"summaries identical: {notes['sparse'] == notes['dense']}")
    for line in notes["sparse"]:
        if "reconciliation:" in line:
            print(line[:160])
    return 0 if close else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, nargs="+", default=[2_000, 5_000, 50_000])
    parser.add_argument("--method", choices=METHODS, nargs="+", default=list(METHODS))
    parser.add_argument("--before", default=BEFORE, help="commit of the dense code")
    parser.add_argument("--dense-max", type=int, default=5_000,
                        help="largest number of reps the dense code is run at")
    parser.add_argument("--forecast", metavar="DATA",
                        help="compare the forecast of DATA with the dense reconciliation")
    parser.add_argument("--freq", default="M")
    parser.add_argument("--level", default="rep")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--forecast-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dense-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.forecast_child:
        return forecast_child(args.dense_root, args.rest)
    if args.child:
        child(args.reps[0], args.method[0], args.child)
        return 0
    if args.forecast:
        return forecast_check(args.forecast, args.freq, args.level, args.before)
    run(args.reps, args.method, args.before, args.dense_max)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
