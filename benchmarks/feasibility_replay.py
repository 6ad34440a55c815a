"""Replay: how well did p_attain predict which targets were hit, period after period?

Walks back through every past quarter whose outcome is known and, at one third and two thirds
of each quarter, predicts ``p_attain`` for every node with a target, using only data dated
before that moment: the win model is retrained on the past at the quarter's first checkpoint
(falling back to historical stage rates while there is too little history; the promotion gate
is not applied: the replay judges the model itself), the run rate and
its spread are estimated from revenue before the checkpoint. Each prediction is then scored
against whether the node actually reached its target.

The baseline is the naive *pace* forecast: revenue closed to date divided by the share of the
quarter elapsed, turned into a probability by a lognormal whose spread is the historical
dispersion of log(actual / pace) at the same checkpoint and level in the quarters already over
(0.3 until there are some).

Datasets:

- ``demo``: the synthetic company (``generate("medium")``) with its own targets;
- ``crm``: Maven's CRM Sales Opportunities (agents, managers, regional offices). It has no
  targets: each node's target for a quarter is **its actual revenue of the prior quarter**, so
  the first quarter with revenue only serves as the second one's target. A deal open at a
  checkpoint is valued at its list price, as an export made then would show it (its close
  value only exists once it is won: using it would tell the simulation which deals win).

Churn scores are not used here (a churn model per checkpoint would dominate the run time);
the run rate already carries the usual churn. Run from the repository root::

    .venv/bin/python benchmarks/feasibility_replay.py [--draws 2000] [--datasets demo crm]

Prints one table (Brier score, log loss and the worst reliability gap over deciles with at
least 30 cases, for the model and the pace baseline; and how often the actual fell below the
model's P10 or above its P90, 10% each when the spread is right) and writes reliability curves
to ``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.io import Tables, validate_tables
from engine.periods import period_bounds
from engine.schemas import (
    AMOUNT,
    CLOSE_DATE,
    COMPANY_KEY,
    DS,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LIST_PRICE,
    OPPORTUNITIES,
    PERIOD,
    STATUS,
    STATUS_OPEN,
    TARGETS,
)
from features.deals import deal_snapshot_dates, deal_snapshots, win_training_rows
from features.hierarchy import attribute_revenue
from models.classification import MIN_BIN_CASES, plot_calibration, reliability_table
from models.feasibility import Simulation, feasibility_with_simulation
from models.feasibility.pace import DEFAULT_PACE_SIGMA, pace_probability, pace_sigmas
from models.win import StageRateWinModel, labelled_rows
from service.usecases.win import fit_win_model

OUT = Path(__file__).resolve().parent / "out"
CRM_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "crm-sales-opportunities"
FRACTIONS = (1 / 3, 2 / 3)


# --- data ----------------------------------------------------------------------------------


def demo_tables() -> Tables:
    from engine.synthetic import generate

    tables, problems = validate_tables(generate("medium"))
    assert not problems, problems
    return tables


def quarter_actuals(tables: Tables) -> pd.DataFrame:
    """Revenue per node and quarter: ``period, level, key, amount``."""
    events = attribute_revenue(tables, columns=[])
    quarter = events[DS].dt.to_period("Q").astype(str).str.replace("Q", "Q", regex=False)
    frames = []
    for level in HIERARCHY_LEVELS:
        keys = (pd.Series(COMPANY_KEY, index=events.index) if level == LEVEL_COMPANY
                else events[level].astype(object))
        sums = events[AMOUNT].groupby([quarter, keys]).sum()
        frames.append(sums.rename_axis([PERIOD, KEY]).reset_index(name=AMOUNT)
                      .assign(**{LEVEL: level}))
    return pd.concat(frames, ignore_index=True)[[PERIOD, LEVEL, KEY, AMOUNT]]


def crm_tables() -> Tables:
    """The CRM dataset with targets = each node's actual revenue of the prior quarter."""
    from engine.importers import import_dataset

    result = import_dataset("crm-sales", CRM_DIR)
    tables, problems = validate_tables(result.frames)
    assert not problems, problems
    actual = quarter_actuals(tables)
    following = {p: str(pd.Period(p, freq="Q") + 1) for p in actual[PERIOD].unique()}
    targets = actual.assign(**{PERIOD: actual[PERIOD].map(following)})
    targets = targets[targets[AMOUNT] > 0]
    frames = dict(tables.frames) | {TARGETS: targets.reset_index(drop=True)}
    return Tables(frames, tables.source, tables.derived)


def known_quarters(tables: Tables) -> list[str]:
    """Quarters with targets that ended by the last date of the data."""
    events = attribute_revenue(tables, columns=[])
    last = events[DS].max()
    periods = sorted(tables[TARGETS][PERIOD].astype(str).unique())
    quarters = [p for p in periods if "Q" in p]
    return [p for p in quarters if period_bounds(p)[1] <= last + pd.Timedelta(days=1)
            and period_bounds(p)[0] >= events[DS].min()]


# --- one checkpoint --------------------------------------------------------------------------


def win_model_at(tables: Tables, snapshots: pd.DataFrame, as_of: pd.Timestamp) -> object:
    """The win model ``quotacast train win`` would fit at ``as_of``, else stage rates."""
    try:
        rows, split, _ = labelled_rows(snapshots, tables[OPPORTUNITIES], as_of)
        return fit_win_model(rows, split=split)[0]
    except ValueError:
        return StageRateWinModel().fit(
            win_training_rows(snapshots, tables[OPPORTUNITIES], as_of))


def known_at(tables: Tables, as_of: pd.Timestamp) -> Tables:
    """The tables with the deal values an export made at ``as_of`` would show.

    The crm-sales import gives a won deal its final ``close_value`` as amount and every other
    deal its list price; a deal still open at ``as_of`` had no close value yet, so its amount
    then is its list price. Without the list price column the tables are returned unchanged.
    """
    opps = tables[OPPORTUNITIES]
    if LIST_PRICE not in opps.columns:
        return tables
    open_then = (opps[STATUS] == STATUS_OPEN) | (opps[CLOSE_DATE] >= as_of)
    amount = opps[AMOUNT].where(~open_then, opps[LIST_PRICE])
    frames = dict(tables.frames) | {OPPORTUNITIES: opps.assign(**{AMOUNT: amount})}
    return Tables(frames, tables.source, tables.derived)


def checkpoint(tables: Tables, period: str, fraction: float) -> pd.Timestamp:
    start, end = period_bounds(period)
    return start + pd.Timedelta(days=round((end - start).days * fraction))


def earlier_quarters(events: pd.DataFrame, as_of: pd.Timestamp) -> list[str]:
    """Quarters over before ``as_of`` that the data covers whole (the pace rule's spread is
    measured on them, as ``feasibility`` does)."""
    first = events[DS].min()
    quarters = sorted(events[DS].dt.to_period("Q").astype(str).unique())
    return [q for q in quarters
            if period_bounds(q)[1] <= as_of and period_bounds(q)[0] >= first]


def pace_peer(tables: Tables, frame: pd.DataFrame, fraction: float, as_of: pd.Timestamp
              ) -> np.ndarray:
    """The pace rule's P(attain) per row of ``frame``: ``models.feasibility.pace``, the rule
    ``feasibility`` itself falls back to, with its spread from the quarters known at ``as_of``."""
    events = attribute_revenue(tables, columns=[])
    events = events[events[DS] < as_of]
    sigmas = pace_sigmas(events, earlier_quarters(events, as_of), fraction, HIERARCHY_LEVELS)
    sigma = frame[LEVEL].astype(str).map(sigmas).fillna(DEFAULT_PACE_SIGMA).to_numpy(dtype=float)
    return pace_probability(frame["closed_to_date"].to_numpy(dtype=float),
                            frame["target"].to_numpy(dtype=float), fraction, sigma)


def pit(simulation: Simulation, frame: pd.DataFrame, outcome: np.ndarray) -> np.ndarray:
    """Where each actual fell in its simulated distribution (share of draws below it)."""
    rows = np.array([simulation.node_index(level, key)
                     for level, key in zip(frame[LEVEL], frame[KEY], strict=True)],
                    dtype=np.int64)
    if rows.size == 0:
        return np.zeros(0)
    return (simulation.draws[:, rows] < outcome[None, :]).mean(axis=0)


def replay(name: str, tables: Tables, draws: int, seed: int) -> pd.DataFrame:
    """Predictions of the model and the pace baseline at every checkpoint, with outcomes."""
    actual = quarter_actuals(tables).set_index([PERIOD, LEVEL, KEY])[AMOUNT]
    quarters = known_quarters(tables)
    last = attribute_revenue(tables, columns=[])[DS].max() + pd.Timedelta(days=1)
    t0 = time.time()
    snapshots = deal_snapshots(tables, deal_snapshot_dates(tables, last))
    print(f"[{name}] {len(quarters)} quarters, deal snapshots in {time.time() - t0:.0f} s",
          file=sys.stderr)
    rows: list[pd.DataFrame] = []
    for period in quarters:  # a dozen quarters
        model = win_model_at(tables, snapshots, checkpoint(tables, period, FRACTIONS[0]))
        for fraction in FRACTIONS:
            as_of = checkpoint(tables, period, fraction)
            known = known_at(tables, as_of)
            frame, simulation = feasibility_with_simulation(
                known, period, as_of, draws=draws, seed=seed,
                win_model=model)
            index = pd.MultiIndex.from_frame(frame[[PERIOD, LEVEL, KEY]])
            outcome_amount = actual.reindex(index).fillna(0.0).to_numpy()
            frame = frame.assign(actual=outcome_amount, fraction=fraction, dataset=name,
                                 outcome=(outcome_amount >= frame["target"]).astype(int),
                                 pit=pit(simulation, frame, outcome_amount))
            frame["p_pace"] = pace_peer(known, frame, fraction, as_of)
            rows.append(frame)
        print(f"[{name}] {period} done ({time.time() - t0:.0f} s)", file=sys.stderr)
    return pd.concat(rows, ignore_index=True)


# --- scoring ---------------------------------------------------------------------------------


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(p, 1e-3, 1 - 1e-3)  # a certain miss costs log(1000), not infinity
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def worst_decile_gap(p: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    table = reliability_table(y, p, bins=10)
    judged = table[table["n"] >= MIN_BIN_CASES]
    return (float(judged["gap"].abs().max()) if len(judged) else math.nan), len(judged)


def plot(results: pd.DataFrame, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    outcome = results["outcome"].to_numpy()
    curves = {label: reliability_table(outcome, results[column].to_numpy())
              for column, label in (("p_attain", "quotacast"), ("p_pace", "pace baseline"))}
    path = plot_calibration(curves, OUT / f"feasibility_reliability_{name}.png",
                            title=f"Target attainment, replay on {name} (deciles)",
                            xlabel="predicted P(attain)", ylabel="share of targets attained")
    return path


def summary(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (name, level), part in [*results.groupby(["dataset", pd.Series("all", results.index)]),
                                *results.groupby(["dataset", LEVEL])]:
        y = part["outcome"].to_numpy()
        row = {"dataset": name, "level": level, "cases": len(part), "hit rate": y.mean()}
        for column, label in (("p_attain", "model"), ("p_pace", "pace")):
            p = part[column].to_numpy()
            gap, bins = worst_decile_gap(p, y)
            row |= {f"brier {label}": brier(p, y), f"log loss {label}": log_loss(p, y),
                    f"max |gap| {label}": gap}
        row["deciles>=30"] = bins
        # Where the actual fell in the simulated distribution: 10% each side is calibrated.
        row["below p10"] = float((part["pit"] < 0.1).mean())
        row["above p90"] = float((part["pit"] > 0.9).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["demo", "crm"],
                        choices=["demo", "crm"])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    loaders = {"demo": demo_tables, "crm": crm_tables}
    results = pd.concat([replay(name, loaders[name](), args.draws, args.seed)
                         for name in args.datasets], ignore_index=True)
    OUT.mkdir(parents=True, exist_ok=True)
    results.to_csv(OUT / "feasibility_replay.csv", index=False)
    paths = [plot(results[results["dataset"] == name], name) for name in args.datasets]
    pd.set_option("display.width", 200)
    print("Target feasibility replay: p_attain at 1/3 and 2/3 of every past quarter vs the "
          f"pace baseline ({args.draws} draws). crm targets = each node's prior-quarter actual.")
    print(summary(results).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("reliability curves: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
