"""Churn on real histories of every length: ours vs BG/NBD, recency and RFM, same holdout each.

Usage::

    .venv/bin/python benchmarks/churn.py [--data ../data] [--months 3 6 9 13] [--no-demo]
        [--no-large]

Prints one table (dataset, months, horizon, model, ROC-AUC, PR-AUC, Brier, top-decile lift, n),
then, for online-retail, ours minus BG/NBD (ours and lifetimes'), recency and RFM (ROC-AUC and
PR-AUC) with the 95% interval of a paired bootstrap of the holdout customers, and, unless
``--no-large``, one line for scoring the ``large`` demo company end to end. For each
online-retail case it also says (on stderr) how far the best weighted average of LightGBM's,
BG/NBD's and the RFM regression's log-odds gets past BG/NBD when the weights are chosen on the
holdout itself (:func:`blend_ceiling`): no blend or stack of the three that training chooses
can do better on that holdout.

Cases (every model of a case is scored on the same holdout customers):

- ``online-retail`` cut to its first 3, 6, 9 and 13 months (``engine.history.cut_history``;
  the file holds 12.3 months, so 13 is all of it), split exactly as ``quotacast train churn``
  splits it without ``--horizon-days`` (:func:`service.usecases.churn.candidate_splits`), and
  the whole file again with the 60-day horizon of issue 13;
- ``crm-sales`` and ``superstore`` (whole imports): the gate must refuse a chance-level model;
- ``demo (medium)``: the generated company, 180-day horizon.

Models: ``ours`` is what training registers (the best candidate out of fold); ``lightgbm``
(stacked on point-in-time BG/NBD outputs, blended with an RFM logistic regression at the weight
the latest training snapshots pick out of fold; the weight is printed) and ``bg_nbd`` (our
scipy BG/NBD, refitted on the purchases before the holdout) are the candidates;
``bg_nbd (lifetimes)`` is the same model from the ``lifetimes`` library (dev dependency), an
independent check of ours; ``recency_rule`` (days since the last order against the customer's
own cycle), ``recency (days)`` (plain days since the last order) and ``rfm_logistic`` are the
baselines. The ``gate`` column says whether the
registered model would be promotable (beats the recency rule, or chance when higher).

Scoring speed: a model trained on the demo company scores the ``large`` company
(:func:`service.usecases.churn.score_churn`: features at the data end, probabilities, reasons)
in a fresh subprocess that loads the cached tables (not timed), resets the kernel's peak-RSS
mark, scores, and reports wall seconds and peak resident memory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.io import Tables, load_tables  # noqa: E402
from engine.periods import default_as_of  # noqa: E402
from engine.schemas import AMOUNT, CUSTOMER_ID, ORDER_DATE  # noqa: E402
from features.labels import CHURNED  # noqa: E402
from models.classification import classification_metrics  # noqa: E402
from service.usecases import churn as pipeline  # noqa: E402
from service.usecases.churn import score_churn, tables_before  # noqa: E402

__all__ = ["bgnbd_churn", "blend_ceiling", "main", "run_case"]

HORIZON = 180
SHOWN = ("roc_auc", "pr_auc", "brier", "top_decile_lift", "base_rate", "n")
GIB = 2**30
BGNBD_PENALTIES = (0.0, 0.001, 0.01, 0.1, 1.0)
_DAY = pd.Timedelta(days=1)
BOOTSTRAP_DRAWS = 1000
# What ours is compared with in the paired bootstrap (the README's peers).
PEERS = ("bg_nbd", "bg_nbd (lifetimes)", "recency (days)", "rfm_logistic")
# What a blend could make of: the registered LightGBM, our BG/NBD and the RFM regression.
BLENDED = ("lightgbm", "bg_nbd", "rfm_logistic")
BLEND_STEP = 0.125


# --- BG/NBD from lifetimes, an independent check ----------------------------------------------


def _fit_bgnbd(x: pd.Series, recency: pd.Series, age: pd.Series) -> tuple[Any, float]:
    """The unpenalized fit, else the smallest penalty that converges (with half a year of data
    the dropout parameters can run off to zero and lifetimes reports no convergence)."""
    from lifetimes import BetaGeoFitter
    from lifetimes.utils import ConvergenceError

    for penalty in BGNBD_PENALTIES:
        try:
            # lifetimes' optimizer probes log(0) on the way and prints its failures.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore", RuntimeWarning)
                return BetaGeoFitter(penalizer_coef=penalty).fit(x, recency, age), penalty
        except ConvergenceError:
            continue
    raise RuntimeError(f"BG/NBD did not converge with any penalty in {BGNBD_PENALTIES}")


def bgnbd_churn(orders: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int,
                customers: pd.Series) -> np.ndarray:
    """P(no purchase in ``[as_of, as_of + horizon)``) under lifetimes' BG/NBD fitted before as_of.

    Purchase days (a positive amount) before as_of give each customer's repeat frequency x,
    recency and age T, in days. Given alive, the posterior purchase rate is Gamma(r + x,
    alpha + T), so no purchase in t more days has probability ((alpha + T) / (alpha + T + t))
    ** (r + x); a dead customer never buys again.
    """
    bought = orders.loc[(orders[AMOUNT] > 0) & (orders[ORDER_DATE] < as_of)]
    days = bought.assign(day=bought[ORDER_DATE].dt.normalize()).groupby(CUSTOMER_ID)["day"]
    summary = pd.DataFrame({"first": days.min(), "last": days.max(), "n": days.nunique()})
    x = (summary["n"] - 1).astype(float)
    recency = (summary["last"] - summary["first"]).dt.days.astype(float)
    age = (as_of - summary["first"]).dt.days.astype(float)
    model, penalty = _fit_bgnbd(x, recency, age)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        alive = np.asarray(model.conditional_probability_alive(x, recency, age), dtype=float)
    r, alpha = float(model.params_["r"]), float(model.params_["alpha"])
    quiet = ((alpha + age) / (alpha + age + horizon_days)) ** (r + x)
    p_churn = pd.Series(1 - alive * (1 - quiet.to_numpy()), index=summary.index)
    print(f"  lifetimes BG/NBD at {as_of.date()}: penalty {penalty}", file=sys.stderr)
    out = p_churn.reindex(customers.to_numpy()).to_numpy()
    if np.isnan(out).any():
        raise RuntimeError("BG/NBD gave no probability for some holdout customers")
    return out


# --- one case -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A dataset at a history length, with a horizon (None: as training would choose it)."""

    dataset: str
    months: str
    tables: Tables
    horizon_days: int | None = None


def paired_bootstrap(y: np.ndarray, ours: np.ndarray, peer: np.ndarray,
                     draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict[str, tuple[float, ...]]:
    """ROC-AUC and PR-AUC of ``ours`` minus ``peer`` on the same customers, with the 95%
    interval of the difference over ``draws`` resamples of the customers (both scores on each
    resample, so the noise the two share cancels)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    out: dict[str, tuple[float, ...]] = {}
    for name, metric in (("roc_auc", roc_auc_score), ("pr_auc", average_precision_score)):
        diffs = []
        for _ in range(draws):
            rows = rng.integers(0, len(y), len(y))
            if y[rows].min() == y[rows].max():
                continue
            diffs.append(metric(y[rows], ours[rows]) - metric(y[rows], peer[rows]))
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        out[name] = (float(metric(y, ours) - metric(y, peer)), float(lo), float(hi))
    return out


def blend_ceiling(y: np.ndarray, scores: dict[str, np.ndarray],
                  names: tuple[str, ...] = BLENDED, step: float = BLEND_STEP
                  ) -> tuple[dict[str, float], float]:
    """The best ROC-AUC any weighted average of the models' standardized log-odds reaches on
    these customers (weights on a grid of ``step``, summing to one), chosen on the same
    customers: an upper bound for any blend or stack of them that training could choose, not a
    model. Returns the weights and the ROC-AUC."""
    from itertools import product

    from scipy.special import logit
    from sklearn.metrics import roc_auc_score

    z = {}
    for name in names:
        odds = logit(np.clip(scores[name], 1e-6, 1 - 1e-6))
        z[name] = (odds - odds.mean()) / (odds.std() or 1.0)
    steps = round(1 / step)
    best: tuple[dict[str, float], float] = ({}, -np.inf)
    for parts in product(range(steps + 1), repeat=len(names) - 1):
        if sum(parts) > steps:
            continue
        weights = dict(zip(names, [p * step for p in parts] + [1 - sum(parts) * step],
                           strict=True))
        value = float(roc_auc_score(y, sum(w * z[n] for n, w in weights.items())))
        best = (weights, value) if value > best[1] else best
    return best


def differences(case: Case, horizon: int, y: np.ndarray, scores: dict[str, np.ndarray],
                ours: str, draws: int = BOOTSTRAP_DRAWS) -> pd.DataFrame:
    """Ours against each peer of :data:`PEERS`: the difference and its paired 95% interval."""
    rows = []
    for peer in PEERS:
        if peer not in scores:
            continue
        ci = paired_bootstrap(y, scores[ours], scores[peer], draws)
        rows.append({"dataset": case.dataset, "months": case.months, "horizon": horizon,
                     "vs": peer, **{f"{m}_{part}": v[i] for m, v in ci.items()
                                    for i, part in enumerate(("diff", "lo", "hi"))}})
    return pd.DataFrame(rows)


def run_case(case: Case, bootstrap: bool = False, draws: int = BOOTSTRAP_DRAWS
             ) -> tuple[pd.DataFrame, Any, pd.DataFrame]:
    """Split as ``train churn`` would, fit candidates and baselines, score all on the holdout;
    with ``bootstrap``, also ours against each peer with paired 95% intervals over ``draws``
    resamples."""
    start = time.perf_counter()
    cutoff = default_as_of(case.tables)
    past = tables_before(case.tables, cutoff)
    split, train, holdout, _ = pipeline.labelled_snapshots(
        pipeline.snapshots_in_memory(past), pipeline._first_order_day(past), cutoff,
        case.horizon_days)
    notes: list[str] = []
    candidates = pipeline._fit_candidates(train, split.horizon_days, 42, notes)
    models = {**candidates, **pipeline.fit_baselines(train)}
    table = pipeline.evaluate_models(models, holdout)
    chosen, _ = pipeline._best_candidate(candidates, train)
    baseline = pipeline.gate_baseline(table, holdout)
    value = float(table["pr_auc"].astype(float).to_dict()[chosen])
    gate = "promotable" if value > baseline[1] else f"refused (< {baseline[0]})"
    y = holdout[CHURNED].to_numpy()
    scores = {name: pipeline._probabilities(model, holdout) for name, model in models.items()}
    recency = holdout["hist_recency_days"].to_numpy(dtype=float)
    scores["recency (days)"] = (pd.Series(recency).rank(pct=True).fillna(1.0) * 0.98
                                + 0.01).to_numpy()
    table.loc["recency (days)"] = classification_metrics(y, scores["recency (days)"])
    try:
        p_bg = bgnbd_churn(past.orders, split.holdout, split.horizon_days,
                           holdout[CUSTOMER_ID])
        scores["bg_nbd (lifetimes)"] = p_bg
        table.loc["bg_nbd (lifetimes)"] = classification_metrics(y, p_bg)
    except (ImportError, RuntimeError) as exc:
        print(f"  lifetimes BG/NBD left out: {exc}", file=sys.stderr)
    table.loc[f"ours = {chosen}"] = table.loc[chosen]
    weight = getattr(candidates.get("lightgbm"), "linear_weight_", None)
    print(f"{case.dataset} {case.months}: {split.horizon_days}-day horizon, "
          f"{len(split.train)} snapshots, {len(train):,} training rows, {len(holdout):,} "
          f"holdout customers (as of {split.holdout.date()}); RFM blend weight {weight}; {gate}; "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    order = [f"ours = {chosen}", "lightgbm", "bg_nbd", "bg_nbd (lifetimes)", "recency_rule",
             "recency (days)", "rfm_logistic"]
    table = table.loc[[m for m in order if m in table.index]]
    out = table.assign(dataset=case.dataset, months=case.months,
                       horizon=split.horizon_days, gate=gate)
    diffs = (differences(case, split.horizon_days, y, scores, chosen, draws) if bootstrap
             else pd.DataFrame())
    if bootstrap and set(BLENDED) <= set(scores):
        weights, value = blend_ceiling(y, scores)
        top = float(table["roc_auc"].astype(float)["bg_nbd"])
        print(f"{case.dataset} {case.months}: the best blend on the holdout itself (an upper "
              f"bound, not a model): " + ", ".join(f"{n} {w:.3g}" for n, w in weights.items())
              + f", ROC-AUC {value:.4f}, BG/NBD {value - top:+.4f}", file=sys.stderr)
    return out.rename_axis("model").reset_index(), candidates.get("lightgbm"), diffs


def real_cases(root: Path, months: list[int]) -> list[Case]:
    """online-retail at each history length, its 60-day case, crm-sales and superstore."""
    from engine.history import cut_history

    retail = load_tables(str(root / "online-retail"))
    cases = [Case("online-retail", f"{m}m", cut_history(retail, m)) for m in months]
    cases.append(Case("online-retail", "13m", retail, 60))
    cases += [Case(name, "all", load_tables(str(root / name)))
              for name in ("crm-sales", "superstore")]
    return cases


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
            "known_customers": float(tables.customers[CUSTOMER_ID].nunique())}


def score_large(model: Any, cache: Path, seed: int) -> dict[str, float]:
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
    parser.add_argument("--data", type=Path, default=REPO.parent / "data",
                        help="imported datasets (online-retail, crm-sales, superstore)")
    parser.add_argument("--months", type=int, nargs="+", default=[3, 6, 9, 13])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--no-large", action="store_true")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "quotacast-bench-churn")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(score_child(args.child, args.model)))
        return
    cases = real_cases(args.data, args.months)
    if not args.no_demo:
        from engine.io import validate_tables
        from engine.synthetic import generate

        demo = validate_tables(generate("medium", seed=args.seed))[0]
        cases.append(Case("demo (medium)", "all", demo, HORIZON))
    rows, diffs, ours = [], [], None
    for case in cases:
        table, model, diff = run_case(case, bootstrap=case.dataset == "online-retail")
        rows.append(table)
        diffs.append(diff)
        ours = model if case.dataset.startswith("demo") else ours
    table = pd.concat(rows, ignore_index=True)[["dataset", "months", "horizon", "model",
                                                *SHOWN, "gate"]]
    table["n"] = table["n"].astype(int)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nours minus peer on the same holdout customers, 95% paired bootstrap interval "
          f"({BOOTSTRAP_DRAWS:,} resamples):")
    print(pd.concat(diffs, ignore_index=True).to_string(
        index=False, float_format=lambda v: f"{v:+.3f}"))
    if not args.no_large and ours is not None:
        m = score_large(ours, args.cache, args.seed)
        print(f"\nscore churn, large company: {m['customers']:,.0f} active customers (of "
              f"{m['known_customers']:,.0f}) scored with reasons in {m['seconds']:.1f} s; peak "
              f"RSS {m['peak_gib']:.2f} GiB (tables and model loaded: {m['loaded_gib']:.2f} "
              f"GiB)")


if __name__ == "__main__":
    main()
