"""Replay: do plans hit their stated probabilities?

For every past period whose outcome is known, a plan is made at the period's start with only
the data an export made then would hold (:func:`engine.history.export_at`; for crm-sales, open
deals at their list price, as :func:`benchmarks.feasibility_replay.known_at` does), for a few
company targets (the amounts the company reaches with probability 0.3, 0.5 and 0.7 as of the
start, and +10% over the period before), split by ``even_probability`` (the default). Each
plan-tier row is then scored against what happened: did the node's revenue in the row's period
reach the row's amount? A calibrated plan has, over many rows, a hit rate equal to the mean
stated ``p_attain``.

Reported per dataset and company target: rows, mean stated p_attain, hit rate and their gap,
for the period's own rows (the done-when number: within 0.1 on average) and, apart, for its
sub-periods (quarters, months), whose p_attain comes from simulations run months ahead. Hits
within one period share its fortunes, so few periods give noisy rates.

Run from the repository root::

    .venv/bin/python benchmarks/plan_replay.py [--datasets demo crm] [--size small]
        [--demo-seeds 42 1 2] [--periods years quarters] [--draws 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.history import export_at
from engine.io import Tables, load_tables, validate_tables
from engine.periods import period_bounds
from engine.schemas import AMOUNT, KEY, LEVEL, LIST_PRICE, PERIOD, TIER, TIER_PLAN
from features.hierarchy import node_actuals
from models.feasibility import P_ATTAIN, fit_stage_rates
from service.usecases.plan import run_plan
from service.usecases.request import BadRequest

CRM_DATA = Path("/work/data/crm-sales")
TARGETS = {"p0.3": {"p_attain": 0.3}, "p0.5": {"p_attain": 0.5}, "p0.7": {"p_attain": 0.7},
           "growth+10%": {"growth": 0.1}}


def demo_tables(size: str, seed: int = 42) -> Tables:
    from engine.synthetic import generate

    tables, problems = validate_tables(generate(size, seed=seed))
    assert not problems, problems
    return tables


def periods_to_replay(tables: Tables, freq: str, min_history_days: int) -> list[str]:
    """Periods over by the data's end, starting at least ``min_history_days`` after its
    first revenue."""
    dates = tables.orders["order_date"].dropna()
    first, last = dates.min(), dates.max()
    out = []
    for stamp in pd.period_range(first, last, freq=freq):
        label = str(stamp.year) if freq == "Y" else f"{stamp.year}Q{stamp.quarter}"
        start, end = period_bounds(label)
        if end <= last + pd.Timedelta(days=1) and (start - first).days >= min_history_days:
            out.append(label)
    return out


def _fixed(rates: tuple[object, str]) -> object:
    """Stage rates fitted once per period, for every target planned then."""
    return lambda *_: rates


def replay(name: str, tables: Tables, periods: list[str], draws: int, seed: int,
           prepare: object = None) -> pd.DataFrame:
    """Every plan-tier row of every replayed plan with its stated p_attain and outcome."""
    rows = []
    for period in periods:
        start, _ = period_bounds(period)
        past = export_at(tables, start)
        if callable(prepare):
            past = prepare(past, start)
        rates = fit_stage_rates(past, start)
        for label, target in TARGETS.items():
            tick = time.time()
            try:
                result = run_plan(past, period, start, draws=draws, seed=seed, models={},
                                  use_churn=False, stage_rates=_fixed(rates),
                                  **target)  # type: ignore[arg-type]
            except BadRequest as exc:
                print(f"  {name} {period} {label}: refused ({exc})", flush=True)
                continue
            plan = result.frame[result.frame[TIER] == TIER_PLAN]
            for sub, sub_rows in plan.groupby(PERIOD):
                since, until = period_bounds(str(sub))
                actual = node_actuals(tables, since, until).set_index([LEVEL, KEY])[AMOUNT]
                got = actual.reindex(pd.MultiIndex.from_frame(sub_rows[[LEVEL, KEY]]))
                rows.append(sub_rows.assign(
                    dataset=name, target=label, own=str(sub) == period,
                    actual=got.to_numpy(),
                    hit=(got.to_numpy() >= sub_rows[AMOUNT].to_numpy() - 0.005)))
            print(f"  {name} {period} {label}: {time.time() - tick:.1f}s", flush=True)
    return pd.concat(rows, ignore_index=True)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, target and row kind: rows, mean stated p_attain, hit rate, gap."""
    results = results.assign(rows_of=np.where(results["own"], "period", "sub-periods"))
    table = (results.groupby(["dataset", "target", "rows_of"])
             .agg(rows=(P_ATTAIN, "size"), stated=(P_ATTAIN, "mean"), hit_rate=("hit", "mean"))
             .reset_index())
    table["gap"] = table["hit_rate"] - table["stated"]
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["demo", "crm"],
                        choices=["demo", "crm"])
    parser.add_argument("--size", default="small", help="demo size: small or medium")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--demo-seeds", type=int, nargs="+", default=[42],
                        help="demo companies to replay (the demo has one past year each)")
    parser.add_argument("--periods", nargs="+", default=["years", "quarters"],
                        choices=["years", "quarters"], help="demo periods to replay")
    parser.add_argument("--min-history-days", type=int, default=90,
                        help="replay only periods starting this long after the first revenue")
    args = parser.parse_args(argv)
    parts = []
    for company in args.demo_seeds if "demo" in args.datasets else []:
        tables = demo_tables(args.size, company)
        years = periods_to_replay(tables, "Y", 365)
        quarters = periods_to_replay(tables, "Q", max(args.min_history_days, 365))
        print(f"demo ({args.size}, company seed {company}): years {years}, quarters "
              f"{quarters}", flush=True)
        if "years" in args.periods:
            parts.append(replay(f"demo-{args.size}-years", tables, years, args.draws,
                                args.seed))
        if "quarters" in args.periods:
            parts.append(replay(f"demo-{args.size}-quarters", tables, quarters, args.draws,
                                args.seed))
    if "crm" in args.datasets:
        from benchmarks.feasibility_replay import known_at

        tables = load_tables(CRM_DATA)
        opps = tables["opportunities"]
        if LIST_PRICE in opps.columns:  # an extra column, read as text
            frames = dict(tables.frames) | {"opportunities": opps.assign(
                **{LIST_PRICE: pd.to_numeric(opps[LIST_PRICE], errors="coerce")})}
            tables = Tables(frames, tables.source, tables.derived)
        quarters = periods_to_replay(tables, "Q", args.min_history_days)
        print(f"crm-sales: quarters {quarters}", flush=True)
        parts.append(replay("crm-sales-quarters", tables, quarters, args.draws, args.seed,
                            prepare=known_at))
    results = pd.concat(parts, ignore_index=True)
    table = summary(results)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(table.round(3).to_string(index=False))
        own = table[table["rows_of"] == "period"]
        for dataset, rows in own.groupby("dataset"):
            weight = rows["rows"] / rows["rows"].sum()
            pooled = float((weight * rows["gap"]).sum())
            print(f"{dataset}: mean |hit rate - stated p_attain| over targets = "
                  f"{rows['gap'].abs().mean():.3f}; pooled gap = {pooled:+.3f}")
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    results.to_csv(out / f"plan_replay-{'-'.join(args.datasets)}.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
