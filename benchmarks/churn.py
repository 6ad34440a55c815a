"""Churn models on one holdout each: ours vs recency rule, RFM logistic and BG/NBD; scoring speed.

Usage::

    .venv/bin/python benchmarks/churn.py [--retail ../shared/data/online-retail] [--no-large]

Prints one table (dataset, split, model, ROC-AUC, PR-AUC, Brier, top-decile lift) and one line
for scoring the ``large`` demo company end to end. Needs ``lifetimes`` (a dev-only dependency)
for BG/NBD.

Datasets and splits (every model of a dataset and split sees the same rows):

- ``demo``: the ``medium`` demo company, split exactly as ``quotacast train churn`` splits it
  (:func:`engine.pipelines.churn.plan_split`: training, calibration and holdout label windows
  never overlap).
- ``online-retail``, holdout as of 2011-06-01, horizon 180 days. The data starts 2010-12-01,
  so no training snapshot can have a 180-day label window that ends before 2011-06-01, and
  ``train churn`` refuses. Two honest-about-it variants are reported:
  ``overlap``: training snapshots 2011-01..04 and calibration 2011-05 with 180-day labels
  that run into the holdout's label window (optimistic for the supervised models: ours, RFM
  and the rule's link were fitted on outcomes of the holdout period);
  ``strict-90d``: 90-day labels for training (2011-01..02) and calibration (2011-03), whose
  windows all end before 2011-06-01; the supervised models then rank by 90-day risk and their
  probabilities are for 90 days, so only the ranking metrics compare.
- BG/NBD (``lifetimes.BetaGeoFitter``) is fitted on purchase days before the holdout's as_of
  and needs no labels; its churn probability is the model's probability of no purchase within
  the horizon, ``1 - P(alive) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x))``.

Scoring speed: the model trained on the demo company scores the ``large`` company
(:func:`engine.pipelines.churn.score_churn`: features at the data end, probabilities, reasons)
in a fresh subprocess that loads the cached tables (not timed), resets the kernel's peak-RSS
mark, scores, and reports wall seconds and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine import schemas as S  # noqa: E402
from engine.io import Tables, validate_tables  # noqa: E402
from engine.pipelines.churn import (  # noqa: E402
    LOOKBACK_DAYS,
    evaluate_models,
    fit_baselines,
    plan_split,
    score_churn,
    tables_before,
)
from engine.summary import data_end  # noqa: E402
from features.labels import CHURNED  # noqa: E402
from features.table import training_table  # noqa: E402
from models.churn import ChurnModel  # noqa: E402
from models.classification import classification_metrics  # noqa: E402

__all__ = ["bgnbd_churn", "main"]

HORIZON = 180
RETAIL_HOLDOUT = pd.Timestamp("2011-06-01")
SHOWN = ("roc_auc", "pr_auc", "brier", "top_decile_lift", "base_rate", "n")
GIB = 2**30
BGNBD_PENALTIES = (0.0, 0.01, 0.1, 1.0)
_DAY = pd.Timedelta(days=1)


# --- BG/NBD ------------------------------------------------------------------------------------


def _fit_bgnbd(x: pd.Series, recency: pd.Series, age: pd.Series) -> tuple[Any, float]:
    """The unpenalized fit, else the smallest penalty that converges (with half a year of data
    the dropout parameters can run off to zero and lifetimes reports no convergence)."""
    from lifetimes import BetaGeoFitter
    from lifetimes.utils import ConvergenceError

    for penalty in BGNBD_PENALTIES:
        try:
            return BetaGeoFitter(penalizer_coef=penalty).fit(x, recency, age), penalty
        except ConvergenceError:
            continue
    raise RuntimeError(f"BG/NBD did not converge with any penalty in {BGNBD_PENALTIES}")


def bgnbd_churn(orders: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int,
                customers: pd.Series) -> np.ndarray:
    """P(no purchase in ``[as_of, as_of + horizon)``) under a BG/NBD fitted before as_of.

    Purchase days (a positive amount) before as_of give each customer's repeat frequency x,
    recency and age T, in days. Given alive, the posterior purchase rate is Gamma(r + x,
    alpha + T), so no purchase in t more days has probability ((alpha + T) / (alpha + T + t))
    ** (r + x); a dead customer never buys again.
    """
    bought = orders.loc[(orders[S.AMOUNT] > 0) & (orders[S.ORDER_DATE] < as_of)]
    days = bought.assign(day=bought[S.ORDER_DATE].dt.normalize()).groupby(S.CUSTOMER_ID)["day"]
    summary = pd.DataFrame({"first": days.min(), "last": days.max(), "n": days.nunique()})
    x = (summary["n"] - 1).astype(float)
    recency = (summary["last"] - summary["first"]).dt.days.astype(float)
    age = (as_of - summary["first"]).dt.days.astype(float)
    model, penalty = _fit_bgnbd(x, recency, age)
    alive = np.asarray(model.conditional_probability_alive(x, recency, age), dtype=float)
    r, alpha = float(model.params_["r"]), float(model.params_["alpha"])
    quiet = ((alpha + age) / (alpha + age + horizon_days)) ** (r + x)
    p_churn = pd.Series(1 - alive * (1 - quiet.to_numpy()), index=summary.index)
    params = ", ".join(f"{k} {v:.3g}" for k, v in model.params_.items())
    print(f"  BG/NBD at {as_of.date()}: {params} (penalty {penalty})", file=sys.stderr)
    out = p_churn.reindex(customers.to_numpy()).to_numpy()
    if np.isnan(out).any():
        raise RuntimeError("BG/NBD gave no probability for some holdout customers")
    return out


# --- one dataset, one split --------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A dataset and a split: which snapshots train, calibrate and test, with which horizons."""

    dataset: str
    split: str
    tables: Tables
    train: tuple[pd.Timestamp, ...]
    calibration: pd.Timestamp
    holdout: pd.Timestamp
    last_day: pd.Timestamp
    train_horizon: int = HORIZON


def run_case(case: Case) -> tuple[pd.DataFrame, ChurnModel]:
    """Fit every model on the case's training rows and score them on its holdout."""
    fit_rows = training_table(case.tables, [*case.train, case.calibration], case.train_horizon,
                              LOOKBACK_DAYS, case.last_day)
    holdout = training_table(case.tables, [case.holdout], HORIZON, LOOKBACK_DAYS, case.last_day)
    train = fit_rows.loc[fit_rows[S.AS_OF] != case.calibration]
    calibration = fit_rows.loc[fit_rows[S.AS_OF] == case.calibration]
    start = time.perf_counter()
    ours = ChurnModel(random_state=42).fit(train, train[CHURNED], calibration,
                                           calibration[CHURNED])
    fitted = time.perf_counter() - start
    table = evaluate_models({"ours (LightGBM)": ours, **fit_baselines(fit_rows)}, holdout)
    table = table.rename(index={"recency_rule": "recency rule", "rfm_logistic": "RFM logistic"})
    p_bg = bgnbd_churn(case.tables.orders, case.holdout, HORIZON, holdout[S.CUSTOMER_ID])
    table.loc["BG/NBD"] = classification_metrics(holdout[CHURNED].to_numpy(), p_bg)
    print(f"{case.dataset} {case.split}: {len(train):,} training rows, {len(calibration):,} "
          f"calibration rows, {len(holdout):,} holdout customers; ours kept "
          f"{ours.best_iteration_} trees ({ours.calibration_method_}) in {fitted:.1f} s",
          file=sys.stderr)
    return table.assign(dataset=case.dataset, split=case.split).reset_index(), ours


def demo_case(tables: Tables) -> Case:
    """The split ``train churn`` would make at the data end."""
    cutoff = data_end(tables)
    past = tables_before(tables, cutoff)
    first = pd.Timestamp(past.orders[S.ORDER_DATE].min())
    split = plan_split(first, cutoff - _DAY, HORIZON)
    return Case("demo (medium)", "strict", past, split.train, split.calibration, split.holdout,
                split.last_day)


def retail_cases(tables: Tables) -> list[Case]:
    """The two online-retail variants around the 2011-06-01 holdout (see the module doc)."""
    last = pd.Timestamp(tables.orders[S.ORDER_DATE].max()).normalize()
    first = pd.Timestamp(tables.orders[S.ORDER_DATE].min())
    try:
        plan_split(first, RETAIL_HOLDOUT + pd.Timedelta(days=HORIZON - 1), HORIZON)
    except ValueError as exc:
        print(f"online-retail: train churn would refuse: {exc}", file=sys.stderr)
    months = [pd.Timestamp(f"2011-{m:02d}-01") for m in range(1, 6)]
    return [
        Case("online-retail", "overlap", tables, tuple(months[:4]), months[4], RETAIL_HOLDOUT,
             last),
        Case("online-retail", "strict-90d", tables, tuple(months[:2]), months[2],
             RETAIL_HOLDOUT, last, train_horizon=90),
    ]


def retail_tables(source: Path) -> Tables:
    from engine.importers import import_dataset

    result = import_dataset("online-retail", source)
    tables, problems = validate_tables(result.frames)
    if problems:
        raise SystemExit(f"online-retail does not validate: {problems[:3]}")
    return tables


# --- scoring the large company in a subprocess -------------------------------------------------


def prepare_large(cache: Path, seed: int) -> Path:
    """Generate the large company once and cache it as Parquet (generation is not timed)."""
    folder = cache / f"large-{seed}"
    if (folder / "orders.parquet").exists():
        return folder
    from engine.synthetic import generate

    frames = generate("large", seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def _rss_gib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def score_child(folder: Path, model_path: Path) -> dict[str, float]:
    """Load tables and model (not timed), reset the peak-RSS mark, score, measure."""
    tables = Tables({p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))})
    model: Any = pickle.loads(model_path.read_bytes())
    loaded = _rss_gib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    start = time.perf_counter()
    scores = score_churn(tables, model=model, horizon_days=HORIZON)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_gib": _rss_gib("VmHWM"), "loaded_gib": loaded,
            "customers": float(len(scores)),
            "with_reasons": float((scores["reasons"].str.len() > 0).sum()),
            "known_customers": float(tables.customers[S.CUSTOMER_ID].nunique())}


def score_large(model: ChurnModel, cache: Path, seed: int) -> dict[str, float]:
    folder = prepare_large(cache, seed)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.pkl"
        model_path.write_bytes(pickle.dumps(model))
        done = subprocess.run([sys.executable, __file__, "--child", str(folder),
                               "--model", str(model_path)], check=True, capture_output=True,
                              text=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Print the comparison table, then the large-scoring line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retail", type=Path, default=REPO.parent / "shared" / "data"
                        / "online-retail")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-large", action="store_true")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "quotacast-bench-churn")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(score_child(args.child, args.model)))
        return
    from engine.synthetic import generate

    retail = retail_tables(args.retail)
    demo = validate_tables(generate("medium", seed=args.seed))[0]
    rows = []
    for case in retail_cases(retail):
        rows.append(run_case(case)[0])
    demo_rows, ours = run_case(demo_case(demo))
    rows.append(demo_rows)
    table = pd.concat(rows, ignore_index=True)[["dataset", "split", "model", *SHOWN]]
    table["n"] = table["n"].astype(int)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if not args.no_large:
        m = score_large(ours, args.cache, args.seed)
        print(f"\nscore churn, large company: {m['customers']:,.0f} active customers (of "
              f"{m['known_customers']:,.0f}) scored with reasons in {m['seconds']:.1f} s; peak "
              f"RSS {m['peak_gib']:.2f} GiB (tables and model loaded: {m['loaded_gib']:.2f} "
              f"GiB)")


if __name__ == "__main__":
    main()
