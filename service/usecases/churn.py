"""Churn wiring: tables -> point-in-time snapshots -> candidates and baselines -> MLflow; scoring.

The time split (:func:`plan_split`) is the heart of honest evaluation. With a label horizon ``H``
(a snapshot at ``t`` is labelled by purchases in ``[t, t + H)``) and the data's last day ``L``:

- the *holdout* snapshot is ``L + 1 - H``: its label window is the last ``H`` days of the data,
  complete and as recent as can be;
- *training* snapshots are weekly (wider apart when there are many), the latest one ``H`` days
  before the holdout, so every training label window ends before the holdout's begins.
  Training windows overlap each other (many snapshots from a short history); the holdout's
  never overlaps any of them, so the model never learns from an outcome of the holdout period.
- Early stopping and calibration use cross-fitting on customers (:class:`models.churn.ChurnModel`):
  a customer's snapshots all fall in one fold, so no booster is stopped or calibrated on a
  customer it learned from.

It costs ``28 + 2H`` days of history at least (four weeks before the first snapshot). Without
``--horizon-days`` the longest of :data:`HORIZONS` whose split has at least
:data:`AUTO_MIN_SNAPSHOTS` training snapshots is chosen (the shortest that fits at all on a very
young history), and the summary says so; a horizon the history cannot hold is refused with the
longest one it can.

Candidates: LightGBM stacked on the features and on a BG/NBD refitted before every snapshot
(``btyd_`` columns), its log-odds blended with an RFM logistic regression's at the weight that
ranks the latest quarter of the training snapshots best out of fold (never the holdout), and
the BG/NBD itself. The registered model is the candidate with the best PR-AUC on that same
inner slice (LightGBM's out-of-fold score, BG/NBD's point-in-time one), so the holdout chooses
nothing: it only gates. The registered model is promotable only when it beats the simplest
baseline (the recency rule, or chance when that is higher) on the holdout. Scoring without a
champion falls back on the BG/NBD fitted on the data before as_of (:func:`score_churn_fallback`).

Boundary convention (``features.customer``, ``features.labels``): ``as_of`` is a midnight; rows
dated before it are history, rows dated on or after it are the future.
"""

from __future__ import annotations

import difflib
import hashlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine import tracking
from engine.compute import bucket_of
from engine.history import tables_before
from engine.io import Tables
from engine.schemas import ACCOUNT_MANAGER, AS_OF, CUSTOMER_ID, CUSTOMERS, ORDER_DATE
from features.customer import (
    FEATURE_DESCRIPTIONS,
    CustomerHistory,
    as_of_day,
    customer_history,
    features_at,
)
from features.labels import CHURNED, churn_codes
from features.table import concat_snapshots
from models.base import CHURN
from models.btyd import (
    BTYD_P_CHURN,
    BtydChurn,
    BtydSummary,
    btyd_columns,
    btyd_features,
    purchase_summary,
)
from models.churn import (
    CHURN_PROBABILITY,
    CYCLE,
    REASONS,
    RECENCY,
    ChurnModel,
    RecencyCycleRule,
    RfmLogistic,
    describe_params,
    inner_metrics,
    inner_slice,
)
from models.classification import (
    classification_metrics,
    plot_calibration,
    plot_feature_importance,
    reliability_table,
    segment_auc,
)
from service.usecases.request import BadRequest
from service.usecases.train import (
    Progress,
    beats_baseline,
    champion_value,
    classifier_score,
    register,
    say,
    training_as_of,
)

__all__ = [
    "AUTO_MIN_SNAPSHOTS",
    "BASELINES",
    "CANDIDATES",
    "EXPECTED_REVENUE",
    "HORIZONS",
    "LOOKBACK_DAYS",
    "MIN_HISTORY_DAYS",
    "PART",
    "REVENUE_AT_RISK",
    "SAMPLE_BUCKETS",
    "SCORE_COLUMNS",
    "TRAIN_ROW_BUDGET",
    "ChurnSplit",
    "ChurnTraining",
    "Sample",
    "assemble_snapshots",
    "candidate_splits",
    "chance_level",
    "choose_horizon",
    "choose_sample",
    "evaluate_models",
    "expected_revenue",
    "fit_baselines",
    "gate_baseline",
    "plan_split",
    "score_churn",
    "score_churn_fallback",
    "serving_example",
    "snapshot_counts",
    "snapshot_parts",
    "supported_horizon",
    "tables_before",
    "train_churn",
    "train_on_snapshots",
]

LOOKBACK_DAYS = 365  # active at T: a purchase in the year before T (labels and scoring agree)
MIN_HISTORY_DAYS = 28  # the first training snapshot needs four weeks of history behind it
HORIZONS = (180, 90, 60, 30)  # tried longest first when --horizon-days is not given
AUTO_MIN_SNAPSHOTS = 4  # a horizon is chosen automatically only with this many snapshots
STEP_DAYS = 7  # weekly snapshots ...
MAX_SNAPSHOTS = 40  # ... thinned to at most this many over a long history
FALLBACK_HORIZON_DAYS = 90  # scoring without a champion and without --horizon-days
REVENUE_AT_RISK = "revenue_at_risk"
EXPECTED_REVENUE = "expected_revenue"
SCORE_COLUMNS = (CUSTOMER_ID, ACCOUNT_MANAGER, CHURN_PROBABILITY, REVENUE_AT_RISK, REASONS)
CANDIDATES = ("lightgbm", "bg_nbd")
BASELINES = ("recency_rule", "rfm_logistic")
# "Chance": the PR-AUC a random ranking reaches only once in 100 on the same holdout (a model
# must be clearly better than luck to serve, not better than luck's average).
CHANCE_QUANTILE = 0.99
CHANCE_DRAWS = 1000
# Weak-evidence thresholds, said in the training summary.
_FEW_HOLDOUT = 300
_FEW_CHURNERS = 50
_SHORT_HISTORY_DAYS = 365
# Expected revenue: the trailing window, annualized over at most this many days of tenure and
# at least the minimum, so a two-week-old customer's first order is not multiplied by 26.
REVENUE_WINDOW_DAYS = 365
MIN_REVENUE_DAYS = 90
_REVENUE_FEATURE = "hist_monetary_365d"
_TENURE_FEATURE = "hist_tenure_days"
_SEGMENT_FEATURE = "cat_segment"
_DAY = pd.Timedelta(days=1)
# The trainer's budget of snapshot rows (an active customer at one snapshot, about 70 columns:
# 1,000,000 rows is about 0.6 GB as a table, a few times that inside LightGBM's cross-fitting).
# Beyond it, a deterministic sample of customers is kept (:class:`Sample`); no demo or real
# dataset here comes near it (online-retail 50,123 rows, the medium demo company 78,662).
TRAIN_ROW_BUDGET = 1_000_000
SAMPLE_BUCKETS = 1000  # customers' sample buckets: CRC-32 of the id modulo this


# --- the time split --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnSplit:
    """Which snapshots train and test a churn model.

    Attributes:
        train: as_ofs of the training snapshots (label windows end on or before ``holdout``).
        holdout: as_of of the evaluation snapshot (its label window ends on ``last_day``).
        horizon_days: label horizon.
        last_day: the last day of data used (inclusive).
        step_days: days between training snapshots.
        chosen: how the horizon was picked (None when the user gave it).
    """

    train: tuple[pd.Timestamp, ...]
    holdout: pd.Timestamp
    horizon_days: int
    last_day: pd.Timestamp
    step_days: int = STEP_DAYS
    chosen: str | None = None

    @property
    def as_ofs(self) -> list[pd.Timestamp]:
        return [*self.train, self.holdout]

    def describe(self) -> dict[str, Any]:
        return {
            "train": [str(t.date()) for t in self.train],
            "holdout": str(self.holdout.date()),
            "horizon_days": self.horizon_days,
            "step_days": self.step_days,
            "last_day": str(self.last_day.date()),
            "chosen": self.chosen or "given",
        }


def _training_snapshots(first_day: pd.Timestamp, holdout: pd.Timestamp, horizon_days: int,
                        min_history_days: int) -> tuple[tuple[pd.Timestamp, ...], int]:
    """Weekly as_ofs back from ``holdout - H`` to four weeks after the first day, thinned."""
    latest = holdout - pd.Timedelta(days=horizon_days)
    earliest = first_day.normalize() + pd.Timedelta(days=min_history_days)
    if latest < earliest:
        return (), STEP_DAYS
    weeks = (latest - earliest).days // STEP_DAYS + 1
    every = -(-weeks // MAX_SNAPSHOTS)  # ceil: at most MAX_SNAPSHOTS snapshots
    step = STEP_DAYS * every
    count = (latest - earliest).days // step + 1
    return tuple(latest - pd.Timedelta(days=step * k) for k in reversed(range(count))), step


def supported_horizon(first_day: pd.Timestamp, last_day: pd.Timestamp,
                      min_history_days: int = MIN_HISTORY_DAYS) -> int:
    """The longest horizon in days with at least one training snapshot (0 when none)."""
    days = (last_day.normalize() - first_day.normalize()).days + 1
    return max((days - min_history_days) // 2, 0)


def _needed_days(horizon_days: int, snapshots: int, min_history_days: int) -> int:
    return min_history_days + 2 * horizon_days + STEP_DAYS * (snapshots - 1)


def plan_split(first_day: pd.Timestamp, last_day: pd.Timestamp, horizon_days: int,
               min_history_days: int = MIN_HISTORY_DAYS, min_train_snapshots: int = 1,
               chosen: str | None = None) -> ChurnSplit:
    """Weekly training snapshots and a strictly later holdout, for one horizon.

    Args:
        first_day: the first day of data.
        last_day: the last day of data (inclusive).
        horizon_days: label horizon in days.
        min_history_days: days of data before the first training snapshot.
        min_train_snapshots: fewest training snapshots accepted.
        chosen: how the horizon was picked, for the summary.

    Raises:
        ValueError: when the data is too short; the message says how much history the horizon
            needs and the longest horizon this history supports.
    """
    if horizon_days <= 0:
        raise BadRequest(f"horizon_days must be positive, got {horizon_days}")
    holdout = last_day.normalize() + pd.Timedelta(days=1 - horizon_days)
    train, step = _training_snapshots(first_day, holdout, horizon_days, min_history_days)
    if len(train) < min_train_snapshots:
        days = (last_day.normalize() - first_day.normalize()).days + 1
        longest = supported_horizon(first_day, last_day, min_history_days)
        can = (f"this history supports --horizon-days {longest} at most (or leave "
               "--horizon-days out to let training choose)" if longest >= 7 else
               "use more history")
        raise ValueError(
            f"too little history to train a {horizon_days}-day churn model: the data covers "
            f"{first_day.date()} to {last_day.date()} ({days} days); training label windows "
            f"that end before a {horizon_days}-day holdout window need about "
            f"{_needed_days(horizon_days, min_train_snapshots, min_history_days)} days; {can}."
        )
    return ChurnSplit(train, holdout, horizon_days, last_day.normalize(), step, chosen)


def candidate_splits(first_day: pd.Timestamp, last_day: pd.Timestamp,
                     min_history_days: int = MIN_HISTORY_DAYS) -> list[ChurnSplit]:
    """Every horizon of :data:`HORIZONS` the history allows, best first: those with
    :data:`AUTO_MIN_SNAPSHOTS` training snapshots longest first, then those with fewer."""
    out: list[ChurnSplit] = []
    for needed in (AUTO_MIN_SNAPSHOTS, 1):
        for horizon in HORIZONS:
            if any(s.horizon_days == horizon for s in out):
                continue
            try:
                split = plan_split(first_day, last_day, horizon, min_history_days, needed)
            except ValueError:
                continue
            longer = [h for h in HORIZONS if h > horizon]
            if out:
                why = f"the next of {'/'.join(map(str, HORIZONS))} days this history allows"
            else:
                why = (f"the longest of {'/'.join(map(str, HORIZONS))} days this history "
                       "allows" + (f" (a {longer[-1]}-day horizon needs about "
                                   f"{_needed_days(longer[-1], needed, min_history_days)} days)"
                                   if longer else ""))
            out.append(ChurnSplit(split.train, split.holdout, horizon, split.last_day,
                                  split.step_days, why))
    return out


def choose_horizon(first_day: pd.Timestamp, last_day: pd.Timestamp,
                   min_history_days: int = MIN_HISTORY_DAYS) -> ChurnSplit:
    """The longest of :data:`HORIZONS` with :data:`AUTO_MIN_SNAPSHOTS` training snapshots, else
    the longest with one (a very young history), else ValueError."""
    splits = candidate_splits(first_day, last_day, min_history_days)
    if splits:
        return splits[0]
    days = (last_day.normalize() - first_day.normalize()).days + 1
    raise ValueError(
        f"too little history to train a churn model: the data covers {first_day.date()} to "
        f"{last_day.date()} ({days} days); even a {HORIZONS[-1]}-day horizon needs about "
        f"{_needed_days(HORIZONS[-1], 1, min_history_days)} days. Use more history; meanwhile "
        "`quotacast score churn` answers with its BG/NBD fallback.")


def _first_order_day(tables: Tables) -> pd.Timestamp:
    """The day of the first order: churn learns from purchases only, so deals created earlier
    (which :func:`engine.periods.first_day` counts) are no history for it."""
    return pd.Timestamp(tables.orders[ORDER_DATE].min()).normalize()


def _churn_as_of(tables: Tables, as_of: pd.Timestamp | str | None) -> pd.Timestamp:
    """The as-of of training and scoring, after the first order (there must be history)."""
    if tables.orders.empty:
        raise ValueError("the orders table is empty: nothing to learn churn from")
    return training_as_of(tables, as_of, after=("the first order", _first_order_day(tables)))


# --- fitting and evaluating ------------------------------------------------------------------


def fit_baselines(train: pd.DataFrame) -> dict[str, Any]:
    """The recency rule and the RFM logistic regression, fitted on labelled rows."""
    y = train[CHURNED].to_numpy()
    return {
        "recency_rule": RecencyCycleRule().fit(train, y),
        "rfm_logistic": RfmLogistic().fit(train, y),
    }


def _probabilities(model: Any, frame: pd.DataFrame) -> np.ndarray:
    out = model.predict_proba_frame(frame) if hasattr(model, "predict_proba_frame") else (
        model.predict_frame(frame))
    return np.asarray(pd.DataFrame(out)[CHURN_PROBABILITY], dtype=float)


def evaluate_models(models: dict[str, Any], holdout: pd.DataFrame) -> pd.DataFrame:
    """Holdout metrics per model: one row per model, one column per metric."""
    y = holdout[CHURNED].to_numpy()
    rows = {name: classification_metrics(y, _probabilities(m, holdout))
            for name, m in models.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def _fingerprint(holdout: pd.DataFrame, split: ChurnSplit) -> str:
    """Names the holdout: date, horizon, size and a hash of who was in it and what happened."""
    digest = hashlib.sha1(usedforsecurity=False)
    for values in (holdout[CUSTOMER_ID].astype(str), holdout[CHURNED].astype(str)):
        digest.update("\n".join(values).encode())
    return (f"{split.holdout.date()}/{split.horizon_days}d/{len(holdout)} customers/"
            f"{digest.hexdigest()[:12]}")


def _value(comparison: pd.DataFrame, model: str, metric: str = CHURN.gate_metric) -> float:
    """One model's holdout metric from the comparison table."""
    return float(comparison[metric].astype(float).to_dict()[model])


def chance_level(y: np.ndarray, quantile: float = CHANCE_QUANTILE, draws: int = CHANCE_DRAWS,
                 seed: int = 0) -> float:
    """The PR-AUC a random ranking reaches on these labels once in 1 / (1 - quantile) tries.

    A random ranking's PR-AUC averages the churn rate, but on a small holdout (or one with a
    handful of churners) it often lands well above it; beating this level is what "better than
    chance" means on this holdout.
    """
    labels = np.asarray(y, dtype=int)
    n, positives = labels.size, int(labels.sum())
    if positives in (0, n):
        return float(labels.mean())
    rng = np.random.default_rng(seed)
    # A random ranking puts the churners at random ranks; PR-AUC (average precision) is the
    # mean over churners of the precision at each one's rank: k / rank of the k-th churner.
    # Drawn in chunks of 100 rankings so a large holdout stays within a few tens of MB.
    values = []
    for size in [100] * (draws // 100) + [draws % 100]:
        if size:
            ranks = np.sort(rng.random((size, n)).argsort(axis=1)[:, :positives], axis=1) + 1
            values.append((np.arange(1, positives + 1) / ranks).mean(axis=1))
    return float(np.quantile(np.concatenate(values), quantile))


def gate_baseline(comparison: pd.DataFrame, holdout: pd.DataFrame) -> tuple[str, float]:
    """The simplest baseline's gate metric on the holdout: the recency rule's, or chance
    (:func:`chance_level`) when a random ranking does as well as the rule."""
    chance = chance_level(holdout[CHURNED].to_numpy())
    rule = _value(comparison, CHURN.baseline)
    if np.isfinite(rule) and rule > chance:
        return CHURN.baseline, rule
    return "chance", chance


@dataclass
class ChurnTraining:
    """What :func:`train_churn` produced.

    Attributes:
        run_id: the MLflow run.
        version: the registered version (alias ``challenger``).
        model_name: the registered model name.
        metrics: everything logged: the registered candidate's unprefixed, every model's
            prefixed by its name, the champion's prefixed ``champion_``.
        baselines: holdout metrics, one row per model (candidates and baselines).
        notes: plain-word remarks (horizon, split, weakness, candidates, gate).
        split: the snapshots used.
        model: the registered estimator (the best candidate).
        chosen: its name (``lightgbm`` or ``bg_nbd``).
        baseline: the gate's baseline and its value on the holdout.
        promotable: whether it beats that baseline (else it is never promoted).
        champion_value: the champion's gate metric on the same holdout, if there is one.
        segments: ROC-AUC per customer segment on the holdout.
    """

    run_id: str
    version: str
    model_name: str
    metrics: dict[str, float]
    baselines: pd.DataFrame
    notes: list[str]
    split: ChurnSplit
    model: Any
    chosen: str = "lightgbm"
    baseline: tuple[str, float] = ("recency_rule", float("nan"))
    promotable: bool = True
    champion_value: float | None = None
    segments: pd.DataFrame = field(default_factory=pd.DataFrame)


def _slices(table: pd.DataFrame, split: ChurnSplit) -> tuple[pd.DataFrame, pd.DataFrame]:
    as_of = table[AS_OF]
    train_rows, holdout_rows = as_of.isin(list(split.train)), as_of == split.holdout
    first = int(np.argmax(holdout_rows.to_numpy())) if holdout_rows.any() else len(table)
    if train_rows.iloc[:first].all() and holdout_rows.iloc[first:].all():
        # the holdout is the last snapshot: both slices are views, not a copy of the table
        train, holdout = table.iloc[:first], table.iloc[first:]
    else:
        train, holdout = table.loc[train_rows], table.loc[holdout_rows]
    for name, frame in (("training", train), ("holdout", holdout)):
        churned = int(frame[CHURNED].sum())
        if churned in (0, len(frame)):
            raise ValueError(f"too little history to train: the {name} snapshots have "
                             f"{len(frame)} active customer rows of which {churned} churned; "
                             "both outcomes are needed. Use more history or another "
                             "--horizon-days.")
    return train, holdout


def _fit_candidates(train: pd.DataFrame, horizon_days: int, seed: int, notes: list[str]
                    ) -> dict[str, Any]:
    """LightGBM (cross-fitted on customers) and the calibrated BG/NBD; a candidate that
    cannot be fitted on this history is left out with a note."""
    y = train[CHURNED].to_numpy()
    out: dict[str, Any] = {}
    try:
        model = ChurnModel(random_state=seed).fit(train, y, groups=train[CUSTOMER_ID],
                                                  periods=train[AS_OF])
        model.horizon_days_ = horizon_days
        out["lightgbm"] = model
        if model.tree_option_:
            notes.append("LightGBM grows smaller, slower trees (" + ", ".join(
                f"{k} {v}" for k, v in model.tree_option_.items()) + "): they rank the latest "
                "training snapshots better out of fold than the default ones")
        if model.linear_weight_ > 0:
            notes.append(f"LightGBM is blended with the RFM logistic regression (weight "
                         f"{model.linear_weight_:g}, the best on the latest training snapshots "
                         "out of fold)")
    except ValueError as exc:
        notes.append(f"LightGBM left out: {exc}")
    if train[BTYD_P_CHURN].notna().any():
        btyd = BtydChurn(horizon_days).fit(train, y)
        btyd.horizon_days_ = horizon_days
        out["bg_nbd"] = btyd
    else:
        notes.append("BG/NBD left out: no customer had a repeat purchase before the snapshots")
    if not out:
        why = "; ".join(n for n in notes if " left out" in n)
        raise ValueError(f"too little history to train any churn candidate ({why}); use more "
                         "history; meanwhile `quotacast score churn` answers with its fallback")
    return out


def _best_candidate(candidates: dict[str, Any], train: pd.DataFrame
                    ) -> tuple[str, dict[str, dict[str, float]]]:
    """The candidate with the best gate metric on the inner slice of the training rows (the
    latest quarter of the training snapshots, :func:`models.churn.inner_slice`), never on the
    holdout; a tie goes to the simpler BG/NBD. Also returns every candidate's inner metrics.

    LightGBM's are those of its out-of-fold score (:attr:`ChurnModel.inner_metrics_`); BG/NBD's
    are those of ``btyd_p_churn``, refitted before every snapshot, so out of sample as well.
    """
    y = train[CHURNED].to_numpy()
    inner = inner_slice(train[AS_OF], len(train))
    scores: dict[str, dict[str, float]] = {}
    for name, model in candidates.items():
        scores[name] = (inner_metrics(y, model.log_odds(train), inner)
                        if isinstance(model, BtydChurn) else dict(model.inner_metrics_))
    gate = CHURN.gate_metric
    names = sorted(candidates, key=lambda name: name != "bg_nbd")  # BG/NBD first: wins ties
    values = [float(np.nan_to_num(scores[name].get(gate, np.nan), nan=-1.0)) for name in names]
    return names[int(np.argmax(values))], scores


def _artifacts(model: Any, holdout: pd.DataFrame, p: np.ndarray, comparison: pd.DataFrame,
               segments: pd.DataFrame, split: ChurnSplit, tmp: Path
               ) -> dict[str, Path | pd.DataFrame | dict[str, Any]]:
    reliability = reliability_table(holdout[CHURNED].to_numpy(), p)
    out: dict[str, Path | pd.DataFrame | dict[str, Any]] = {
        "calibration.png": plot_calibration(reliability, tmp / "calibration.png",
                                            f"Churn calibration, holdout {split.holdout.date()}"),
        "reliability.csv": reliability,
        "segment_auc.csv": segments,
        "baselines.csv": comparison.reset_index(),
        "split.json": split.describe(),
    }
    if not isinstance(model, BtydChurn):
        importance = model.feature_importance()
        out |= {
            "feature_importance.png": plot_feature_importance(importance,
                                                              tmp / "feature_importance.png"),
            "feature_importance.csv": importance.rename_axis("feature").reset_index(),
            "features.json": {"features": model.features_,
                              "descriptions": {f: FEATURE_DESCRIPTIONS.get(f, "")
                                               for f in model.features_}},
        }
    return out


def _metrics(comparison: pd.DataFrame, chosen: str, segments: pd.DataFrame,
             champion: float | None, baseline: tuple[str, float]) -> dict[str, float]:
    # The registered candidate unprefixed (the gate's), every model prefixed by its name.
    rows = comparison.astype(float).to_dict(orient="index")
    metrics = {str(k): float(v) for k, v in rows[chosen].items() if np.isfinite(v)}
    for name, row in rows.items():
        metrics |= {f"{name}_{k}": float(v) for k, v in row.items() if np.isfinite(v)}
    metrics |= _segment_metrics(segments)
    metrics[f"baseline_{CHURN.gate_metric}"] = baseline[1]
    if champion is not None:
        metrics[f"champion_{CHURN.gate_metric}"] = champion
    return metrics


# --- snapshot tables, built from one bucket of customers or from all of them ------------------
#
# :func:`snapshot_parts` runs where the customers' rows are (each bucket of customers on a
# compute engine, ``service.usecases.scaled``); it returns plain rows whose union over buckets
# :func:`assemble_snapshots` turns into the table. In this process :func:`snapshot_table` makes
# the same table one as_of at a time (the parts of every as_of at once, each pooled summary
# widened to every feature column, were most of ``train churn``'s peak on a large company). Every
# feature and label of a customer depends on its own rows only; the BG/NBD under the ``btyd_``
# columns is fitted on every customer at once, so the parts carry each customer's purchase
# summary (x, t_x, T; identical ones pooled with their count) and the fit happens on the union.
# The fit pools identical triples itself, so it is the same fit to the last bit.

PART = "_part"  # what a part row is: a customer row, pooled BG/NBD inputs, a manager, counts
_ROW, _POOL, _MANAGER, _COUNT = "row", "pool", "manager", "count"
_WEIGHT, _X, _T_X, _AGE, _SAMPLE = "_weight", "_btyd_x", "_btyd_t_x", "_btyd_T", "_sample"
_INTERNAL = frozenset({PART, _WEIGHT, _X, _T_X, _AGE, _SAMPLE, CHURNED, ACCOUNT_MANAGER})
_CATEGORY_PREFIX = "cat_"  # features.customer's categorical columns


@dataclass(frozen=True)
class Sample:
    """Which customers the snapshot tables keep: those whose sample bucket (CRC-32 of the id
    modulo :data:`SAMPLE_BUCKETS`, :func:`engine.compute.bucket_of`) is below ``cut``; a kept
    customer keeps all its snapshots, the holdout's included.

    Attributes:
        cut: buckets kept (:data:`SAMPLE_BUCKETS`: every customer).
        rows: snapshot rows kept; total: the snapshot rows of every customer.
        budget: the row budget it was sized for.
    """

    cut: int
    rows: int
    total: int
    budget: int

    @property
    def whole(self) -> bool:
        return self.cut >= SAMPLE_BUCKETS

    def describe(self) -> str:
        if self.whole:
            return "all customers"
        return f"{self.cut} of {SAMPLE_BUCKETS} CRC-32 buckets of the customer id"

    def note(self) -> str | None:
        """The summary line when the sample bites (None when every customer is kept)."""
        if self.whole:
            return None
        return (f"sample: the snapshots hold {self.total:,} rows, more than the trainer's "
                f"budget of {self.budget:,}; kept the customers in {self.describe()} "
                f"({self.rows:,} rows, {self.rows / max(self.total, 1):.0%}; every snapshot of "
                "a kept customer; BG/NBD still fitted on every customer), the same customers "
                "on every run and engine")


def _sample_buckets(history: CustomerHistory) -> np.ndarray:
    return bucket_of(pd.Series(history.ids, dtype=object), SAMPLE_BUCKETS)


def snapshot_counts(history: CustomerHistory, as_ofs: Sequence[pd.Timestamp],
                    horizon_days: int) -> pd.DataFrame:
    """Snapshot rows per sample bucket (the customers active at each as_of, counted): one row
    per bucket with rows, ``_sample`` the bucket, ``_weight`` the rows, ``customer_id`` its
    first customer (a key for the engines' row order)."""
    buckets = _sample_buckets(history)
    counts = np.zeros(SAMPLE_BUCKETS, np.int64)
    for as_of in as_ofs:
        active, _ = churn_codes(history.orders.purchases, as_of, horizon_days, LOOKBACK_DAYS)
        counts += np.bincount(buckets[active], minlength=SAMPLE_BUCKETS)
    present = np.flatnonzero(counts)
    valid = buckets >= 0
    seen, first = np.unique(buckets[valid], return_index=True)
    ids = np.asarray(history.ids, dtype=object)[valid][first]
    by_bucket = dict(zip(seen.tolist(), ids, strict=True))
    return pd.DataFrame({
        CUSTOMER_ID: np.array([by_bucket[b] for b in present.tolist()], dtype=object),
        _SAMPLE: present.astype(np.float64),
        _WEIGHT: counts[present].astype(np.float64),
    })


def choose_sample(counts: pd.DataFrame, budget: int = TRAIN_ROW_BUDGET) -> Sample:
    """The first sample buckets whose snapshot rows fit ``budget`` (every customer when all
    fit; at least one bucket). ``counts``: :func:`snapshot_counts`' rows, of one or many
    buckets of customers."""
    per = np.bincount(counts[_SAMPLE].to_numpy(dtype=np.int64),
                      weights=counts[_WEIGHT].to_numpy(dtype=float), minlength=SAMPLE_BUCKETS)
    running = np.cumsum(per.astype(np.int64))
    total = int(running[-1])
    if total <= budget:
        return Sample(SAMPLE_BUCKETS, total, total, budget)
    cut = max(int(np.searchsorted(running, budget, side="right")), 1)
    return Sample(cut, int(running[cut - 1]), total, budget)


def _manager_values(ids: pd.Series, managers: pd.Series) -> np.ndarray:
    """Each customer's account manager (missing: NaN, or None when the data names none)."""
    if not len(managers):
        return np.full(len(ids), None, dtype=object)
    return ids.map(managers).to_numpy()


def _parts_at(history: CustomerHistory, as_of: pd.Timestamp, horizon_days: int,
              keep: np.ndarray | None, labels: bool, managers: pd.Series | None
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One as_of's ``row`` and ``pool`` parts (:func:`snapshot_parts`), the rows in customer
    code order with their categoricals as features_at made them."""
    purchases = history.orders.purchases
    stamp, day = as_of_day(as_of)
    active, churned = churn_codes(purchases, stamp, horizon_days, LOOKBACK_DAYS)
    if keep is not None:
        kept = keep[active]
        active, churned = active[kept], churned[kept]
    days = purchases.count(purchases.day0, day)
    summary = purchase_summary(purchases.first_before(day), purchases.last_before(day),
                               days, day)
    rows = features_at(history, stamp, rows=active)
    rows[CHURNED] = churned.astype(np.float64) if labels else np.nan
    rows[_X], rows[_T_X], rows[_AGE] = summary.x[active], summary.t_x[active], summary.T[active]
    rows[_WEIGHT] = 1.0
    rows[PART] = _ROW
    if managers is not None:
        rows[ACCOUNT_MANAGER] = _manager_values(rows[CUSTOMER_ID], managers)
    others = days > 0
    others[active] = False
    triples = np.column_stack([summary.x[others], summary.t_x[others], summary.T[others]])
    unique, counts = np.unique(triples, axis=0, return_counts=True)
    pool = pd.DataFrame({
        AS_OF: np.full(len(unique), stamp.to_datetime64(), dtype="datetime64[ns]"),
        _X: unique[:, 0], _T_X: unique[:, 1], _AGE: unique[:, 2],
        _WEIGHT: counts.astype(np.float64), PART: _POOL})
    return rows, pool


def _kept(history: CustomerHistory, cut: int) -> np.ndarray | None:
    """Which customers the sample keeps (None: every one)."""
    return _sample_buckets(history) < cut if cut < SAMPLE_BUCKETS else None


def snapshot_parts(history: CustomerHistory, as_ofs: Sequence[pd.Timestamp], horizon_days: int,
                   *, cut: int = SAMPLE_BUCKETS, labels: bool = True,
                   managers: pd.Series | None = None) -> pd.DataFrame:
    """What these customers (one bucket, or all) contribute to the snapshot tables.

    Rows by ``_part``:

    - ``row``: an active customer at an as_of, kept by the sample (``cut``): its features
      (:func:`features.customer.features_at`), its label as 0.0/1.0 (NaN without ``labels``),
      its BG/NBD purchase summary (``_btyd_x``, ``_btyd_t_x``, ``_btyd_T``);
    - ``pool``: the summaries of the other customers with a purchase before the as_of,
      identical ones pooled, their count in ``_weight`` (the BG/NBD is fitted on everyone);
    - with ``managers`` (customer_id -> account manager; scoring): each row's manager in
      ``account_manager``, and a ``manager`` row per distinct manager of these customers.

    Every column is float, text or a date, so a compute engine carries it unchanged.
    """
    keep = _kept(history, cut)
    frames: list[pd.DataFrame] = []
    for as_of in as_ofs:
        frames += _parts_at(history, as_of, horizon_days, keep, labels, managers)
    if managers is not None:
        named = np.asarray(pd.unique(managers.dropna().astype(object)), dtype=object)
        frames.append(pd.DataFrame({ACCOUNT_MANAGER: named,
                                    PART: _MANAGER}))
    for frame in frames:  # plain text: the snapshots' categories differ
        for column in frame.columns:
            if isinstance(frame[column].dtype, pd.CategoricalDtype):
                frame[column] = frame[column].to_numpy(dtype=object)
    parts = pd.concat(frames, ignore_index=True)
    if managers is None:
        parts[ACCOUNT_MANAGER] = None
    return parts


def _by_customer(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values(CUSTOMER_ID, kind="mergesort", ignore_index=True)


def _rows_of(parts: pd.DataFrame, stamp: pd.Timestamp) -> pd.DataFrame:
    return _by_customer(parts.loc[(parts[PART] == _ROW) & (parts[AS_OF] == stamp)])


def _snapshot(rows: pd.DataFrame, pool: pd.DataFrame, horizon_days: int, labels: bool
              ) -> pd.DataFrame:
    """One as_of's snapshot from its ``row`` parts (sorted by customer) and ``pool`` parts:
    the features, the ``btyd_`` columns of a BG/NBD fitted on every customer's summary (the
    rows', then each pooled one repeated by its count), then ``churned`` (int8) with
    ``labels``; each categorical's categories the values of these rows."""
    weights = pool[_WEIGHT].to_numpy(dtype=np.int64)

    def stacked(name: str) -> np.ndarray:
        return np.concatenate([rows[name].to_numpy(dtype=float),
                               np.repeat(pool[name].to_numpy(dtype=float), weights)])

    summary = BtydSummary(stacked(_X), stacked(_T_X), stacked(_AGE))
    btyd, _ = btyd_features(summary, np.arange(len(summary.x)), np.arange(len(rows)),
                            horizon_days)
    table = rows[[c for c in rows.columns if c not in _INTERNAL]].copy()
    for name in table.columns:
        if name.startswith(_CATEGORY_PREFIX):
            table[name] = pd.Categorical(rows[name].to_numpy(dtype=object))
    for name, values in btyd.items():
        table[name] = values
    if labels:
        table[CHURNED] = rows[CHURNED].to_numpy(dtype=float).astype(np.int8)
    return table


def _stamps(as_ofs: Sequence[pd.Timestamp]) -> list[pd.Timestamp]:
    return sorted({as_of_day(t)[0] for t in as_ofs})


def assemble_snapshots(parts: pd.DataFrame, as_ofs: Sequence[pd.Timestamp], horizon_days: int,
                       labels: bool = True) -> pd.DataFrame:
    """The snapshot table from the parts of every bucket of customers (:func:`snapshot_parts`):
    each as_of's :func:`_snapshot`, sorted by as_of then customer, the categoricals'
    categories the union over the snapshots (``features.table``'s layout)."""
    pools = parts.loc[parts[PART] == _POOL]
    return concat_snapshots([_snapshot(_rows_of(parts, stamp), pools.loc[pools[AS_OF] == stamp],
                                       horizon_days, labels)
                             for stamp in _stamps(as_ofs)])


def _stacked(snapshots: Iterator[pd.DataFrame], sizes: Sequence[int]) -> pd.DataFrame:
    """:func:`features.table.concat_snapshots` of the snapshots (of ``sizes`` rows each) as
    they are made, holding the table and one snapshot at once (not every snapshot and the
    table): the float columns are filled into one preallocated block, the others (ids, dates,
    labels, categoricals, a few bytes a row) stacked as ``concat_snapshots`` does."""
    block: np.ndarray | None = None
    floats: list[str] = []
    columns: list[str] = []
    rest: list[pd.DataFrame] = []
    start = 0
    for snapshot in snapshots:
        if block is None:
            columns = list(snapshot.columns)
            floats = [c for c in columns if snapshot[c].dtype == np.float64]
            block = np.empty((len(floats), sum(sizes)), np.float64)
        block[:, start:start + len(snapshot)] = snapshot[floats].to_numpy().T
        start += len(snapshot)
        rest.append(snapshot[[c for c in columns if c not in floats]].copy())
    if block is None or start != block.shape[1]:
        raise AssertionError("the snapshots hold other rows than counted")
    others = concat_snapshots(rest)
    table = pd.DataFrame(block.T, columns=floats, copy=False)
    for position, name in enumerate(columns):
        if name not in floats:
            table.insert(position, name, others[name].array)
    return table


def snapshot_table(history: CustomerHistory, as_ofs: Sequence[pd.Timestamp], horizon_days: int,
                   *, cut: int = SAMPLE_BUCKETS) -> pd.DataFrame:
    """``assemble_snapshots(snapshot_parts(history, as_ofs, horizon_days, cut=cut), ...)`` (the
    same table, to the bit) built one as_of at a time in this process: only one snapshot's
    parts are alive beside the table, never the union of every snapshot's rows and pooled
    summaries (which the parts frame widens to every feature column) nor every snapshot and
    their concatenation."""
    keep = _kept(history, cut)
    stamps = _stamps(as_ofs)
    sizes = []
    for stamp in stamps:
        active, _ = churn_codes(history.orders.purchases, stamp, horizon_days, LOOKBACK_DAYS)
        sizes.append(len(active) if keep is None else int(keep[active].sum()))

    def snapshots() -> Iterator[pd.DataFrame]:
        for stamp in stamps:
            rows, pool = _parts_at(history, stamp, horizon_days, keep, True, None)
            yield _snapshot(_by_customer(rows), pool, horizon_days, True)

    return _stacked(snapshots(), sizes)


SnapshotBuilder = Callable[[ChurnSplit], tuple[pd.DataFrame, Sample]]


def snapshots_in_memory(past: Tables, row_budget: int = TRAIN_ROW_BUDGET) -> SnapshotBuilder:
    """Builds a split's snapshot table from tables in this process (every customer at once),
    sampled to ``row_budget`` rows."""
    history = customer_history(past)

    def build(split: ChurnSplit) -> tuple[pd.DataFrame, Sample]:
        sample = choose_sample(snapshot_counts(history, split.as_ofs, split.horizon_days),
                               row_budget)
        return snapshot_table(history, split.as_ofs, split.horizon_days, cut=sample.cut), sample

    return build


def labelled_snapshots(build: SnapshotBuilder, first: pd.Timestamp, cutoff: pd.Timestamp,
                       horizon_days: int | None
                       ) -> tuple[ChurnSplit, pd.DataFrame, pd.DataFrame, Sample]:
    """The split, training rows, holdout rows and the sample, for data from the first order
    day ``first`` up to ``cutoff`` (excluded). Without a given horizon, the next shorter
    allowed horizon is tried when a longer one leaves a slice with a single outcome."""
    last = cutoff - _DAY
    if horizon_days is not None:
        splits = [plan_split(first, last, horizon_days)]
    else:
        splits = candidate_splits(first, last) or [choose_horizon(first, last)]
    skipped: list[str] = []
    for split in splits:
        table, sample = build(split)
        try:
            train, holdout = _slices(table, split)
        except ValueError:
            if split is splits[-1]:
                raise
            skipped.append(f"{split.horizon_days} days (a slice with a single outcome)")
            continue
        if skipped:
            split = ChurnSplit(split.train, split.holdout, split.horizon_days, split.last_day,
                               split.step_days, f"the longest of {'/'.join(map(str, HORIZONS))} "
                               "days whose slices hold both outcomes; skipped "
                               + ", ".join(skipped))
        return split, train, holdout, sample
    raise AssertionError("unreachable: the last split raises")


def train_churn(tables: Tables, *, as_of: pd.Timestamp | str | None = None, seed: int = 42,
                progress: Progress | None = None, horizon_days: int | None = None,
                row_budget: int = TRAIN_ROW_BUDGET) -> ChurnTraining:
    """Train the candidates, evaluate them on a later snapshot, log to MLflow, register the best.

    Only data dated before ``as_of`` is used (default: the day after the data's last row). The
    split is :func:`plan_split` (or :func:`choose_horizon` without ``horizon_days``); LightGBM
    stacked on BG/NBD outputs and BG/NBD itself are the candidates, the recency rule and the
    RFM logistic regression the baselines, and all of them, plus the current champion (if
    any), are scored on the same holdout. The best candidate by the gate metric
    (:data:`models.base.CHURN`) on the inner slice of the training snapshots is registered
    as ``challenger``, with the simplest baseline's holdout value as its promotion gate.

    Args:
        tables: validated tables.
        as_of: data cutoff; rows dated on or after it are ignored.
        seed: LightGBM's seed.
        progress: called with a short message at each stage.
        horizon_days: churned = no purchase within this many days of a snapshot; None chooses
            the longest of :data:`HORIZONS` the history allows.
        row_budget: snapshot rows the trainer takes at most (:class:`Sample`).

    Raises:
        ValueError: as_of before any data, or too little history for the split.
    """
    cutoff = _churn_as_of(tables, as_of)
    past = tables_before(tables, cutoff)
    say(progress, "building the training snapshots")
    first = _first_order_day(past)
    split, train, holdout, sample = labelled_snapshots(snapshots_in_memory(past, row_budget),
                                                       first, cutoff, horizon_days)
    return train_on_snapshots(split, train, holdout, sample, cutoff, first, seed=seed,
                              progress=progress)


def train_on_snapshots(split: ChurnSplit, train: pd.DataFrame, holdout: pd.DataFrame,
                       sample: Sample, cutoff: pd.Timestamp, first: pd.Timestamp, *,
                       seed: int = 42, progress: Progress | None = None,
                       built_on: str | None = None) -> ChurnTraining:
    """:func:`train_churn` from its snapshot tables on: fit, evaluate, log and register.
    ``built_on``: where the tables were built, for the summary (None: this process)."""
    horizon = split.horizon_days
    notes = _split_notes(split, train, holdout, cutoff, first)
    if built_on is not None:
        notes.insert(0, f"snapshot tables built on {built_on}, with the same feature and label "
                        "functions as pandas")
    if (sampled := sample.note()) is not None:
        notes.append(sampled)
    say(progress, f"training LightGBM and BG/NBD on {len(train):,} rows")
    candidates = _fit_candidates(train, horizon, seed, notes)
    baselines = fit_baselines(train)
    say(progress, f"evaluating on the holdout of {split.holdout.date()}")
    comparison = evaluate_models({**candidates, **baselines}, holdout)
    chosen, inner = _best_candidate(candidates, train)
    model = candidates[chosen]
    baseline = gate_baseline(comparison, holdout)
    value = _value(comparison, chosen)
    promotable = beats_baseline(CHURN, value, baseline[1])
    notes += _verdict(comparison, chosen, inner, baseline, promotable)
    p = _probabilities(model, holdout)
    segments = segment_auc(holdout[CHURNED].to_numpy(), p, holdout[_SEGMENT_FEATURE]
                           if _SEGMENT_FEATURE in holdout else np.full(len(holdout), None))
    champion, _ = champion_value(CHURN.name, classifier_score(
        CHURN, holdout, holdout[CHURNED].to_numpy(), _probabilities), notes)
    metrics = _metrics(comparison, chosen, segments, champion, baseline)
    metrics |= {f"{name}_inner_{k}": v for name, values in inner.items()
                for k, v in values.items() if np.isfinite(v)}
    say(progress, "logging to MLflow")
    described = dict(model.describe()) if isinstance(model, BtydChurn) else dict(
        describe_params(model))
    params = {**described, "candidate": chosen, "horizon_days": horizon, "seed": seed,
              "lookback_days": LOOKBACK_DAYS, "as_of": str(cutoff.date()),
              "holdout_as_of": str(split.holdout.date()), "train_snapshots": len(split.train),
              "step_days": split.step_days, "horizon_choice": split.chosen or "given",
              "gate_metric": CHURN.gate_metric, "gate_baseline": baseline[0],
              "sample": sample.describe(), "snapshot_rows": sample.rows}
    with tempfile.TemporaryDirectory() as tmp:
        run = register(
            CHURN, model, input_example=serving_example(holdout.drop(columns=[CHURNED])),
            params=params, metrics=metrics, holdout=_fingerprint(holdout, split),
            champion_value=champion, baseline=baseline,
            artifacts=_artifacts(model, holdout, p, comparison, segments, split, Path(tmp)),
        )
    return ChurnTraining(run.run_id, run.version, run.model_name, run.metrics, comparison,
                         notes, split, model, chosen, baseline, promotable, champion,
                         segments)


def _segment_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Per-segment AUC as metrics named ``segment_roc_auc.<segment>`` (valid MLflow names)."""
    out = {}
    for segment, auc in zip(table["segment"], table["roc_auc"].astype(float), strict=True):
        if np.isfinite(auc):
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(segment))
            out[f"segment_roc_auc.{name}"] = float(auc)
    return out


def serving_example(features: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """A few feature rows as a served model receives them: categoricals as plain strings.

    MLflow has no categorical type (it types them as strings and then refuses to convert a
    categorical input), and callers of the served model send JSON strings anyway.
    """
    example = features.head(rows).copy()
    for column in example.select_dtypes("category").columns:
        example[column] = example[column].astype(object)
    return example


def _split_notes(split: ChurnSplit, train: pd.DataFrame, holdout: pd.DataFrame,
                 cutoff: pd.Timestamp, first: pd.Timestamp) -> list[str]:
    """Horizon choice, split, and what makes the evidence weak, in plain words."""
    horizon = split.horizon_days
    notes = [
        f"horizon: {horizon} days" + (f", {split.chosen}" if split.chosen else
                                      " (--horizon-days)"),
        f"split: {len(split.train)} training snapshots every {split.step_days} days "
        f"{split.train[0].date()} .. {split.train[-1].date()} ({horizon}-day label windows, "
        f"all ending by {split.holdout.date()}); holdout {split.holdout.date()}, its label "
        f"window the last {horizon} days of the data; early stopping and calibration by "
        "cross-fitting on customers",
        f"holdout: {len(holdout):,} active customers, {holdout[CHURNED].mean():.1%} churned",
    ]
    weak = []
    days = (cutoff - first).days
    if days < _SHORT_HISTORY_DAYS:
        weak.append(f"{days} days of history, less than a year: seasonal buying is not seen "
                    f"and features see at most {(split.train[-1] - first).days} days behind "
                    "the latest training snapshot")
    if len(split.train) < AUTO_MIN_SNAPSHOTS:
        weak.append(f"only {len(split.train)} training snapshot(s)")
    churners = int(holdout[CHURNED].sum())
    if len(holdout) < _FEW_HOLDOUT or min(churners, len(holdout) - churners) < _FEW_CHURNERS:
        weak.append(f"a small holdout ({len(holdout)} customers, {churners} churned): its "
                    "metrics are noisy")
    if horizon < 60:
        weak.append(f"a {horizon}-day horizon: a customer with a slower buying cycle looks "
                    "churned when it is only between orders")
    if weak:
        notes.append("weak evidence: " + "; ".join(weak) + ". Scores improve as history grows.")
    return notes


def _verdict(comparison: pd.DataFrame, chosen: str, inner: dict[str, dict[str, float]],
             baseline: tuple[str, float], promotable: bool) -> list[str]:
    gate = CHURN.gate_metric
    row = comparison.loc[chosen]
    names = {"lightgbm": "LightGBM (stacked on BG/NBD)", "bg_nbd": "BG/NBD"}
    chosen_by = ", ".join(f"{names.get(n, n)} {v.get(gate, np.nan):.4f}" for n, v in
                          inner.items())
    others = ", ".join(f"{names.get(n, n)} {comparison.loc[n, gate]:.4f}"
                       for n in comparison.index if n != chosen)
    notes = [f"registered {names[chosen]}, the best candidate on the latest training snapshots "
             f"out of sample ({gate} {chosen_by}); on the holdout: ROC-AUC "
             f"{row['roc_auc']:.4f}, {gate} {row[gate]:.4f} (others: {others})"]
    what = ("the recency rule's" if baseline[0] == CHURN.baseline else
            "chance level (what a random ranking reaches once in 100 on this holdout)")
    if promotable:
        notes.append(f"gate: {gate} {row[gate]:.4f} beats {what} "
                     f"{baseline[1]:.4f}: it can be promoted")
    else:
        notes.append(f"gate: {gate} {row[gate]:.4f} does not beat {what} "
                     f"{baseline[1]:.4f}: no better than the simplest baseline, so it is "
                     "registered but will never be promoted; `score churn` keeps using the "
                     "champion, or without one its BG/NBD fallback")
    return notes


# --- scoring ---------------------------------------------------------------------------------


def expected_revenue(features: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Revenue a customer would bring over the horizon if it stayed.

    The estimate is its net revenue (purchases minus returns) over the last 365 days, turned
    into a daily rate over the days it was actually a customer in that year (its tenure, at
    least 90 days so a brand-new customer's first order is not extrapolated wildly, at most
    365), times ``horizon_days``. Negative net revenue counts as zero.
    """
    revenue = np.nan_to_num(features[_REVENUE_FEATURE].to_numpy(dtype=float))
    tenure = features[_TENURE_FEATURE].to_numpy(dtype=float)
    days = np.clip(np.nan_to_num(tenure, nan=REVENUE_WINDOW_DAYS), MIN_REVENUE_DAYS,
                   REVENUE_WINDOW_DAYS)
    return np.maximum(revenue, 0.0) / days * horizon_days


def _account_managers(tables: Tables) -> pd.Series:
    """customer_id -> account manager (empty when the data names none)."""
    customers = tables.get(CUSTOMERS)
    if customers is None or ACCOUNT_MANAGER not in customers.columns:
        return pd.Series(dtype=object)
    return customers.set_index(CUSTOMER_ID)[ACCOUNT_MANAGER]


def _check_owner(owner: str, known: Sequence[str]) -> None:
    """BadRequest naming the close matches, or the known account managers."""
    if owner in known:
        return
    if not known:
        raise BadRequest(f"unknown owner {owner!r}: the data names no account managers "
                         f"(customers.{ACCOUNT_MANAGER} is absent or empty)")
    close = difflib.get_close_matches(owner, known, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close else
            f"known account managers: {', '.join(sorted(known)[:20])}"
            + (f" and {len(known) - 20} more" if len(known) > 20 else ""))
    raise BadRequest(f"unknown owner {owner!r}: {hint}")


def _model_horizon(estimator: Any) -> int | None:
    """The horizon a registered churn model was trained for (None for older models)."""
    for name in ("horizon_days_", "horizon_days"):
        value = getattr(estimator, name, None)
        if isinstance(value, int | np.integer) and value > 0:
            return int(value)
    return None


def _active_features(tables: Tables, as_of: pd.Timestamp, horizon_days: int) -> pd.DataFrame:
    """Features at as_of of the customers active then (a purchase in the last 365 days), with
    the ``btyd_`` columns of a BG/NBD fitted on the purchases before as_of."""
    history = customer_history(tables)
    # churn_codes defines "active" for training; reusing it keeps scoring on the same
    # population (its labels look past as_of and are dropped unread).
    active, _ = churn_codes(history.orders.purchases, as_of, 1, LOOKBACK_DAYS)
    features = features_at(history, as_of, rows=active)
    for name, values in btyd_columns(history, as_of, horizon_days, active).items():
        features[name] = values
    return features


def _scored(manager: np.ndarray, stamp: pd.Timestamp, features: pd.DataFrame,
            scored: pd.DataFrame, revenue_days: int, owner: str | None) -> pd.DataFrame:
    """The scores table: ``manager`` is each feature row's account manager."""
    expected = expected_revenue(features, revenue_days)
    p = scored[CHURN_PROBABILITY].to_numpy(dtype=float)
    out = pd.DataFrame({
        CUSTOMER_ID: features[CUSTOMER_ID].to_numpy(),
        ACCOUNT_MANAGER: manager,
        CHURN_PROBABILITY: p,
        REVENUE_AT_RISK: expected * p,
        REASONS: scored[REASONS].to_numpy() if REASONS in scored else "",
        AS_OF: stamp,
        EXPECTED_REVENUE: expected,
    })
    if owner is not None:
        out = out.loc[out[ACCOUNT_MANAGER] == owner]
    return out.sort_values([REVENUE_AT_RISK, CHURN_PROBABILITY, CUSTOMER_ID],
                           ascending=[False, False, True], ignore_index=True)


def _check_scoring(tables: Tables, as_of: pd.Timestamp | None, horizon_days: int | None,
                   owner: str | None) -> pd.Timestamp:
    stamp = _churn_as_of(tables, as_of)
    if horizon_days is not None and horizon_days <= 0:
        raise BadRequest(f"horizon_days must be positive, got {horizon_days}")
    if owner is not None:
        _check_owner(owner, [str(m) for m in _account_managers(tables).dropna().unique()])
    return stamp


def score_churn(tables: Tables, *, as_of: pd.Timestamp | None = None,
                horizon_days: int | None = None, owner: str | None = None,
                model: Any | None = None) -> pd.DataFrame:
    """At-risk customers at ``as_of``, riskiest first by revenue at risk.

    ``revenue_at_risk`` = :func:`expected_revenue` (the customer's trailing-365-day net revenue
    as a daily rate over its tenure in that year, at least 90 days, times the horizon) times
    ``churn_probability``.

    Args:
        tables: validated tables.
        as_of: scoring date (default: the day after the data's last row); features use rows
            before it.
        horizon_days: the horizon the revenue at risk is measured over; default the one the
            model was trained for (its probabilities always refer to that one).
        owner: keep only this account manager's customers.
        model: an estimator with ``predict_frame``; default the registered champion.

    Returns:
        ``customer_id``, ``account_manager``, ``churn_probability``, ``revenue_at_risk``,
        ``reasons``, then ``as_of`` and ``expected_revenue``.

    Raises:
        tracking.ChampionMissingError: no model given and no champion registered (see
            :func:`score_churn_fallback`).
        ValueError: unknown owner, or as_of before any data.
    """
    stamp = _check_scoring(tables, as_of, horizon_days, owner)
    estimator = model if model is not None else tracking.load_champion(CHURN.name).estimator
    trained = _model_horizon(estimator)
    feature_days = trained or horizon_days or FALLBACK_HORIZON_DAYS
    features = _active_features(tables, stamp, feature_days)
    scored = pd.DataFrame(estimator.predict_frame(features), index=features.index)
    return _scored(_manager_values(features[CUSTOMER_ID], _account_managers(tables)), stamp,
                   features, scored, horizon_days or feature_days, owner)


def _recency_fallback(features: pd.DataFrame) -> pd.DataFrame:
    """How overdue each customer is against its own cycle, as a score in (0, 1): recency /
    (recency + cycle); customers without a repeat order are measured on the median cycle."""
    recency = features[RECENCY].to_numpy(dtype=float)
    cycle = features[CYCLE].to_numpy(dtype=float)
    known = cycle[np.isfinite(cycle) & (cycle > 0)]
    cycle = np.where(np.isfinite(cycle) & (cycle > 0), cycle,
                     float(np.median(known)) if known.size else 30.0)
    score = np.nan_to_num(recency / (recency + cycle), nan=1.0)
    reasons = [f"no order for {r:.0f} days, usual cycle {c:.0f} days" if np.isfinite(r) else ""
               for r, c in zip(recency, cycle, strict=True)]
    return pd.DataFrame({CHURN_PROBABILITY: score, REASONS: reasons}, index=features.index)


def score_churn_fallback(tables: Tables, *, as_of: pd.Timestamp | None = None,
                         horizon_days: int | None = None, owner: str | None = None
                         ) -> tuple[pd.DataFrame, str]:
    """:func:`score_churn` without a champion: BG/NBD fitted on the data before as_of, else the
    recency rule; returns the scores and one plain line saying which fallback answered."""
    stamp = _check_scoring(tables, as_of, horizon_days, owner)
    horizon = horizon_days or FALLBACK_HORIZON_DAYS
    features = _active_features(tables, stamp, horizon)
    scored, note = _fallback_scores(features, stamp, horizon)
    frame = _scored(_manager_values(features[CUSTOMER_ID], _account_managers(tables)), stamp,
                    features, scored, horizon, owner)
    return frame, note


def _fallback_scores(features: pd.DataFrame, stamp: pd.Timestamp, horizon: int
                     ) -> tuple[pd.DataFrame, str]:
    if features[BTYD_P_CHURN].notna().any():
        scored = BtydChurn(horizon).predict_frame(features)
        note = (f"no churn champion: scored with a BG/NBD model fitted on the purchases before "
                f"{stamp.date()} (fallback; probabilities of no purchase in {horizon} days)")
    else:
        scored = _recency_fallback(features)
        note = (f"no churn champion and too few repeat purchases for BG/NBD: ranked by the "
                f"recency-against-own-cycle rule (fallback; a ranking score, not a calibrated "
                f"{horizon}-day probability)")
    return scored, note


ChampionScorer = Callable[[tracking.LoadedModel, pd.DataFrame], pd.DataFrame]


def score_parts(parts: pd.DataFrame, stamp: pd.Timestamp, *, horizon_days: int | None = None,
                owner: str | None = None, predict: ChampionScorer | None = None
                ) -> tuple[pd.DataFrame, str | None]:
    """:func:`score_churn` (then :func:`score_churn_fallback` without a champion) from the
    parts of every bucket of customers (:func:`snapshot_parts` at ``stamp`` with managers):
    the same checks, features, BG/NBD and scores.

    Args:
        predict: scores the feature rows with the champion (e.g. on Spark through the
            registered model's ``spark_udf``); default its ``predict_frame`` in this process.

    Returns:
        The scores and, when no champion answered, the fallback's line.
    """
    if horizon_days is not None and horizon_days <= 0:
        raise BadRequest(f"horizon_days must be positive, got {horizon_days}")
    if not (parts[PART].isin([_ROW, _POOL])).any():
        raise ValueError(f"as_of {stamp.date()} is not after the first purchase: there is no "
                         "history before it")
    if owner is not None:
        named = parts.loc[parts[PART] == _MANAGER, ACCOUNT_MANAGER].dropna().unique()
        _check_owner(owner, [str(m) for m in named])
    rows = _rows_of(parts, stamp)
    note: str | None = None
    try:
        loaded = tracking.load_champion(CHURN.name)
    except tracking.ChampionMissingError:
        horizon = horizon_days or FALLBACK_HORIZON_DAYS
        features = assemble_snapshots(parts, [stamp], horizon, labels=False)
        scored, note = _fallback_scores(features, stamp, horizon)
        revenue_days = horizon
    else:
        feature_days = _model_horizon(loaded.estimator) or horizon_days or FALLBACK_HORIZON_DAYS
        features = assemble_snapshots(parts, [stamp], feature_days, labels=False)
        scored = (predict(loaded, features) if predict is not None
                  else pd.DataFrame(loaded.estimator.predict_frame(features),
                                    index=features.index))
        revenue_days = horizon_days or feature_days
    manager = rows[ACCOUNT_MANAGER].to_numpy(dtype=object)
    return _scored(manager, stamp, features, scored, revenue_days, owner), note
