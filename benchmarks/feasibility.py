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
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--pandas-draws", type=int, default=PANDAS_DRAWS)
    parser.add_argument("--company", choices=["small", "medium", "large"],
                        help="time the whole path on a generated company instead")
    args = parser.parse_args(argv)
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
