"""Speed and memory of the feasibility Monte Carlo against a straightforward pandas version.

10,000 draws over 100,000 open opportunities owned by 500 reps (50 teams, 10 regions), plus a
run rate per rep; every node's draws, quantiles and P(attain). The goal: under 2 seconds and
2 GiB. The pandas version draws one scenario at a time (a Bernoulli per deal, a group-by to
reps, then teams, regions and the company); it is timed on a few hundred draws and scaled
linearly to 10,000 (its cost is linear in draws), which the table says.

Run from the repository root::

    .venv/bin/python benchmarks/feasibility.py [--draws 10000] [--deals 100000] [--reps 500]

``--company large`` (or ``small``, ``medium``) instead times the whole ``quotacast
feasibility`` path on a generated demo company without champions: the stage-rate fallback
win model, the inputs (closed revenue, open deals, run rate and its backtests) and the draws.

``--scale`` measures memory: simulate + summarise on a synthetic hierarchy (``--reps`` reps in
teams of 10 and regions of 50, ``--deals`` open deals) for each of ``--scale-draws``, each run
in its own process whose peak RSS is read from the kernel (``wait4``), on this working tree
("blocks") and on the committed version ``--before`` checked out in a temporary git worktree
("whole arrays", the draws x cells path). The old path needs several draws x cells float64
arrays at once, so it is run only up to ``--before-max-draws`` draws (the machine is shared);
where both ran, the answers are compared (the same draws: identical to the last bit)::

    nice .venv/bin/python benchmarks/feasibility.py --scale --reps 50000 --deals 500000 \
        --scale-draws 1000 2000 10000 --before-max-draws 2000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

# A child run of --scale imports the version under test from its root (a git worktree for the
# committed version before the blocks).
sys.path.insert(0, os.environ.get("FEASIBILITY_BENCH_ROOT",
                                  str(Path(__file__).resolve().parents[1])))

from engine.schemas import (
    AMOUNT,
    COMPANY_KEY,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    PERIOD,
    REGION,
    REP,
    TEAM,
)
from models.feasibility import (
    CellInputs,
    RunRate,
    build_inputs,
    fit_stage_rates,
    simulate,
    summarise,
)

PANDAS_DRAWS = 200
HERE = Path(__file__).resolve().parents[1]


def scenario(n_deals: int, n_reps: int, seed: int = 0) -> CellInputs:
    """A company of ``n_reps`` reps with ``n_deals`` open deals and a run rate per rep."""
    rng = np.random.default_rng(seed)
    reps = np.array([f"rep{i:04d}" for i in range(n_reps)], dtype=object)
    cells = pd.DataFrame({REP: reps,
                          TEAM: [f"team{i // 10:03d}" for i in range(n_reps)],
                          REGION: [f"region{i // 50:02d}" for i in range(n_reps)]})
    run_rate = RunRate(
        mean=rng.lognormal(12, 0.5, n_reps), shift=1e4, bias=np.zeros(n_reps),
        sigma=np.full(n_reps, 0.15), bias_common=0.0, sigma_common=0.06,
        active=np.ones(n_reps, bool),
        group_codes=(np.arange(n_reps) // 50, np.arange(n_reps) // 10),
        group_sigmas=(0.03, 0.02))
    return CellInputs(
        cells=cells, rep_of_cell=np.arange(n_reps), reps=reps,
        closed_cell=rng.lognormal(12, 0.5, n_reps),
        deal_cell=rng.integers(0, n_reps, n_deals), deal_p=rng.beta(1.2, 3.0, n_deals),
        deal_amount=rng.lognormal(9, 1.0, n_deals), run_rate=run_rate,
        share_cell=np.ones(n_reps), churn_rep=np.zeros(n_reps),
        levels=list(HIERARCHY_LEVELS), conversion=0.3)


def targets_for(inputs: CellInputs) -> pd.DataFrame:
    """A target per node: its expected revenue (so P(attain) is near one half)."""
    expected = (inputs.closed_cell + inputs.run_rate.expected()
                + np.bincount(inputs.deal_cell, inputs.deal_p * inputs.deal_amount,
                              len(inputs.cells)))
    frames = [pd.DataFrame({LEVEL: LEVEL_COMPANY, KEY: [COMPANY_KEY],
                            AMOUNT: [expected.sum()]})]
    for level in (LEVEL_REGION, LEVEL_TEAM, LEVEL_REP):
        sums = pd.Series(expected).groupby(inputs.cells[level].to_numpy()).sum()
        frames.append(pd.DataFrame({LEVEL: level, KEY: sums.index, AMOUNT: sums.values}))
    return pd.concat(frames, ignore_index=True).assign(**{PERIOD: "2026Q4"})


def ours(inputs: CellInputs, targets: pd.DataFrame, draws: int, exact: bool = False
         ) -> tuple[float, float, pd.DataFrame]:
    """Seconds and peak traced MiB of simulate + summarise."""
    tracemalloc.start()
    t0 = time.perf_counter()
    simulation = simulate(inputs, draws=draws, seed=1, exact=exact)
    frame = summarise(simulation, targets, "2026Q4", pd.Timestamp("2026-11-16"))
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, frame


def straightforward_pandas(inputs: CellInputs, targets: pd.DataFrame, draws: int
                           ) -> tuple[float, pd.DataFrame]:
    """One draw at a time with pandas group-bys; seconds for ``draws`` draws and the frame."""
    rng = np.random.default_rng(1)
    deals = pd.DataFrame({"rep": inputs.reps[inputs.deal_cell], "p": inputs.deal_p,
                          "amount": inputs.deal_amount})
    nodes = inputs.cells.set_index(REP)
    base = pd.Series(inputs.closed_cell, index=inputs.reps)
    t0 = time.perf_counter()
    rows = []
    for _ in range(draws):  # the straightforward way: one scenario per iteration
        won = rng.random(len(deals)) < deals["p"]
        rep = (deals["amount"] * won).groupby(deals["rep"]).sum().reindex(inputs.reps,
                                                                         fill_value=0.0)
        rate = pd.Series(inputs.run_rate.draw(1, rng)[0], index=inputs.reps)
        total = rep + rate + base
        per = {(LEVEL_REP, k): v for k, v in total.items()}
        for level in (LEVEL_TEAM, LEVEL_REGION):
            per |= {(level, k): v for k, v in total.groupby(nodes[level]).sum().items()}
        per[(LEVEL_COMPANY, COMPANY_KEY)] = total.sum()
        rows.append(per)
    table = pd.DataFrame(rows)
    lookup = targets.set_index([LEVEL, KEY])[AMOUNT]
    frame = pd.DataFrame({
        "p_attain": (table >= lookup.reindex(table.columns).to_numpy()).mean(),
        "p10": table.quantile(0.1), "p50": table.quantile(0.5), "p90": table.quantile(0.9)})
    frame.index = pd.MultiIndex.from_tuples(list(table.columns))
    return time.perf_counter() - t0, frame


def whole_company(size: str, draws: int) -> None:
    """Time each stage of a feasibility run on the generated company of ``size``."""
    from engine.io import validate_tables
    from engine.periods import data_end
    from engine.synthetic import generate

    t0 = time.perf_counter()
    tables, problems = validate_tables(generate(size))
    assert not problems, problems[:3]
    as_of = data_end(tables)
    period = str(as_of.to_period("Q"))
    t1 = time.perf_counter()
    model, _ = fit_stage_rates(tables, as_of)
    t2 = time.perf_counter()
    inputs = build_inputs(tables, period, as_of, model)
    t3 = time.perf_counter()
    simulate(inputs, draws=draws)
    t4 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"Feasibility of {period} as of {as_of.date()} on the {size} demo company "
          f"({len(tables['orders']):,} orders, {len(tables['opportunities']):,} opportunities; "
          f"{len(inputs.reps):,} reps, {len(inputs.deal_p):,} open deals), no champions:")
    print(pd.DataFrame([
        ("generate + validate the data", t1 - t0),
        ("fallback win model: stage rates on monthly deal snapshots", t2 - t1),
        ("inputs: closed revenue, open deals, run rate and its backtests", t3 - t2),
        (f"simulation: {draws:,} draws", t4 - t3),
    ], columns=["stage", "seconds"]).to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
    print(f"process max RSS {rss:.1f} GiB (the generated tables included)")


# The commit before feasibility drew in blocks (its simulate holds draws x cells arrays).
BEFORE = "0748e22"


def child(reps: int, deals: int, draws: int, out: Path, engine: str = "pandas",
          master: str = "local[2]") -> None:
    """One measured run (in its own process): simulate + summarise, the answer to ``out``;
    ``engine`` spark runs the blocks of draws as Spark tasks."""
    from contextlib import nullcontext

    inputs = scenario(deals, reps)
    targets = targets_for(inputs)
    kwargs = {}
    context: object = nullcontext()
    if engine == "spark":
        from engine.compute import open_engine
        from service.usecases.feasibility import engine_blocks

        context = open_engine("spark", master)
    with context as compute:  # type: ignore[attr-defined]
        if compute is not None:
            kwargs["blocks"] = engine_blocks(compute)
        t0 = time.perf_counter()
        simulation = simulate(inputs, draws=draws, seed=1, **kwargs)
        t1 = time.perf_counter()
    frame = summarise(simulation, targets, "2026Q4", pd.Timestamp("2026-11-16"))
    t2 = time.perf_counter()
    frame.to_pickle(out)
    company = frame[frame[LEVEL] == LEVEL_COMPANY].iloc[0]
    print(json.dumps({"simulate s": t1 - t0, "summarise s": t2 - t1,
                      "store": str(simulation.draws.dtype), "nodes": len(simulation.nodes),
                      "company p_attain": float(company["p_attain"]),
                      "company p50": float(company["p50"])}))


def measured(root: Path, reps: int, deals: int, draws: int, out: Path,
             engine: str = "pandas") -> dict[str, object]:
    """A child run on ``root``'s code: its answer, wall and CPU seconds, its own peak RSS
    (``wait4``) and the peak RSS of its whole process tree (sampled; the JVM and Spark's
    Python workers included), in GiB."""
    import psutil

    env = {**os.environ, "FEASIBILITY_BENCH_ROOT": str(root), "PYTHONPATH": str(root)}
    t0 = time.perf_counter()
    proc = psutil.Popen([sys.executable, str(HERE / "benchmarks" / "feasibility.py"),
                         "--child", str(out), "--reps", str(reps), "--deals", str(deals),
                         "--draws", str(draws), "--engine", engine], env=env, cwd=root,
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    tree_peak = 0
    status, usage = 0, None
    while True:
        try:
            tree = [proc, *proc.children(recursive=True)]
            tree_peak = max(tree_peak, sum(p.memory_info().rss for p in tree
                                           if p.is_running()))
        except psutil.Error:
            pass
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            break
        time.sleep(0.2)
    assert proc.stdout is not None
    text = proc.stdout.read()
    code = os.waitstatus_to_exitcode(status)
    nan = float("nan")
    result: dict[str, object] = {
        "wall s": time.perf_counter() - t0,
        "CPU s": usage.ru_utime + usage.ru_stime if usage else nan,
        "peak RSS GiB": usage.ru_maxrss / 2**20 if usage else nan,
        "tree peak GiB": tree_peak / 2**30}
    if code != 0:
        return {**result, "failed": f"exit {code}"}
    return {**json.loads(text.strip().splitlines()[-1]), **result}


def scale(reps: int, deals: int, draws_list: list[int], before: str, before_max: int,
          spark_draws: int = 0) -> None:
    """Peak memory and time of blocks (this tree) against whole arrays (``before``), and of
    blocks as Spark tasks at ``spark_draws`` draws (0: not run)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(old), before],
                       cwd=HERE, check=True)
        try:
            for draws in sorted({*draws_list, *([spark_draws] if spark_draws else [])}):
                runs = {}
                if draws in draws_list:
                    runs["blocks (this tree)"] = (HERE, "pandas")
                if draws == spark_draws:
                    runs["blocks as Spark local[2] tasks"] = (HERE, "spark")
                if draws in draws_list and draws <= before_max:
                    runs[f"whole arrays ({before})"] = (old, "pandas")
                frames = {}
                for name, (root, engine) in runs.items():
                    out = Path(tmp) / f"{name.split()[0]}-{engine}-{draws}.pkl"
                    result = measured(root, reps, deals, draws, out, engine)
                    rows.append({"path": name, "draws": draws, **result})
                    print(rows[-1], flush=True)
                    if out.exists():
                        frames[name] = pd.read_pickle(out)
                names = list(frames)
                for other in names[1:]:
                    a, b = frames[names[0]], frames[other]
                    gap = float(np.nanmax(np.abs(a["p_attain"] - b["p_attain"])))
                    print(f"{draws:,} draws, {names[0]} vs {other}: the feasibility frames are "
                          f"{'identical' if a.equals(b) else 'different'} (largest P(attain) "
                          f"difference {gap:.2g})", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=HERE,
                           check=False)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(f"\nFeasibility memory: {reps:,} reps (+ teams, regions, company), {deals:,} open "
          "deals; each run in its own process (peak RSS from the kernel; tree: sampled)")
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.3f}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--pandas-draws", type=int, default=PANDAS_DRAWS)
    parser.add_argument("--company", choices=["small", "medium", "large"],
                        help="time the whole path on a generated company instead")
    parser.add_argument("--scale", action="store_true",
                        help="peak memory of blocks against whole arrays (see above)")
    parser.add_argument("--scale-draws", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--before-max-draws", type=int, default=2_000)
    parser.add_argument("--spark-draws", type=int, default=0,
                        help="with --scale: also draw this many on Spark local[2]")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="pandas", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.reps, args.deals, args.draws, args.child, args.engine)
        return 0
    if args.scale:
        scale(args.reps, args.deals, args.scale_draws, args.before, args.before_max_draws,
              args.spark_draws)
        return 0
    if args.company:
        whole_company(args.company, args.draws)
        return 0
    inputs = scenario(args.deals, args.reps)
    targets = targets_for(inputs)
    simulate(scenario(1000, 10), draws=100, seed=0)  # warm-up: imports, thread pool
    runs = [ours(inputs, targets, args.draws) for _ in range(3)]
    seconds = min(r[0] for r in runs)
    peak = max(r[1] for r in runs)
    frame = runs[0][2].set_index([LEVEL, KEY])
    exact_seconds, exact_peak, exact_frame = ours(inputs, targets, args.draws, exact=True)
    exact_frame = exact_frame.set_index([LEVEL, KEY])
    pd_seconds, pd_frame = straightforward_pandas(inputs, targets, args.pandas_draws)
    scaled = pd_seconds * args.draws / args.pandas_draws
    company = (LEVEL_COMPANY, COMPANY_KEY)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    table = pd.DataFrame([
        {"implementation": "quotacast (small deals pooled as a normal per rep)",
         "draws timed": args.draws, f"seconds ({args.draws:,} draws)": seconds,
         "peak MiB": peak, "company p_attain": frame.loc[company, "p_attain"],
         "company p50": frame.loc[company, "p50"]},
        {"implementation": "quotacast, every deal a Bernoulli (no CLT pooling)",
         "draws timed": args.draws, f"seconds ({args.draws:,} draws)": exact_seconds,
         "peak MiB": exact_peak, "company p_attain": exact_frame.loc[company, "p_attain"],
         "company p50": exact_frame.loc[company, "p50"]},
        {"implementation": "straightforward pandas (one draw per loop)",
         "draws timed": args.pandas_draws, f"seconds ({args.draws:,} draws)": scaled,
         "peak MiB": float("nan"), "company p_attain": pd_frame["p_attain"].loc[company],
         "company p50": pd_frame["p50"].loc[company]},
    ])
    pd.set_option("display.width", 200)
    print(f"Feasibility Monte Carlo: {args.draws:,} draws x {args.deals:,} open deals, "
          f"{args.reps} reps (+ teams, regions, company); best of 3; pandas timed on "
          f"{args.pandas_draws} draws and scaled linearly. Process max RSS {rss:,.0f} MiB.")
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.3f}"))
    gap = np.abs(frame["p_attain"] - exact_frame["p_attain"].reindex(frame.index)).max()
    print(f"largest P(attain) difference, pooled vs every deal drawn, over all nodes: {gap:.4f}")
    ok = seconds < 2.0 and peak < 2048
    print(f"goal (< 2 s and < 2 GiB): {'met' if ok else 'NOT met'}; speed-up "
          f"{scaled / seconds:,.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
