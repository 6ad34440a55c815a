"""Churn wiring: tables -> point-in-time snapshots -> model and baselines -> MLflow; scoring.

The time split (:func:`plan_split`) is the heart of honest evaluation. With monthly snapshots
and a label horizon ``H`` (a snapshot at ``t`` is labelled by purchases in ``[t, t + H)``):

- the *holdout* is the latest snapshot whose label window is complete in the data;
- the *calibration* snapshot is the latest one whose label window ends before the holdout's
  as_of, so its outcomes were all known before the holdout period began;
- *training* snapshots are those whose label windows end before the calibration snapshot.

So no label window overlaps a later slice's: the model never learns from an outcome observed
during its calibration or holdout period, early stopping and calibration see a slice the trees
could not have memorized, and the holdout stands where a model trained today would stand. It
costs two horizons of data (the price of being able to trust the numbers); with less history
training refuses with a clear error instead of quietly evaluating on leaked labels.

Boundary convention (``features.customer``, ``features.labels``): ``as_of`` is a midnight; rows
dated before it are history, rows dated on or after it are the future.
"""

from __future__ import annotations

import difflib
import hashlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine import schemas as S
from engine import tracking
from engine.io import Tables
from engine.summary import default_as_of
from features.customer import FEATURE_DESCRIPTIONS, customer_history, features_at
from features.labels import CHURNED, labels_at
from features.table import snapshot_dates, training_table
from models.churn import (
    CHURN_PROBABILITY,
    REASONS,
    ChurnModel,
    RecencyCycleRule,
    RfmLogistic,
    describe_params,
)
from models.classification import (
    classification_metrics,
    plot_calibration,
    plot_feature_importance,
    reliability_table,
    segment_auc,
)

__all__ = [
    "BASELINES",
    "EXPECTED_REVENUE",
    "GATE_METRIC",
    "KIND",
    "LOOKBACK_DAYS",
    "MIN_HISTORY_DAYS",
    "REVENUE_AT_RISK",
    "SCORE_COLUMNS",
    "ChurnSplit",
    "ChurnTraining",
    "evaluate_models",
    "expected_revenue",
    "fit_baselines",
    "plan_split",
    "score_churn",
    "serving_example",
    "tables_before",
    "train_churn",
]

KIND = "churn"
# PR-AUC (average precision) is the gate: the product is a riskiest-first list worked from the
# top, and PR-AUC rewards precision where the list is read while ROC-AUC is dominated by the
# easy mass of safe customers. Its dependence on the churn rate does not matter here because
# champion and challenger are always scored on the same holdout.
GATE_METRIC = "pr_auc"
LOOKBACK_DAYS = 365  # active at T: a purchase in the year before T (labels and scoring agree)
MIN_HISTORY_DAYS = 90  # the first snapshot needs a quarter of history behind it
MIN_TRAIN_SNAPSHOTS = 3
REVENUE_AT_RISK = "revenue_at_risk"
EXPECTED_REVENUE = "expected_revenue"
SCORE_COLUMNS = (S.CUSTOMER_ID, S.ACCOUNT_MANAGER, CHURN_PROBABILITY, REVENUE_AT_RISK, REASONS)
BASELINES = ("recency_rule", "rfm_logistic")
# Expected revenue: the trailing window, annualized over at most this many days of tenure and
# at least the minimum, so a two-week-old customer's first order is not multiplied by 26.
REVENUE_WINDOW_DAYS = 365
MIN_REVENUE_DAYS = 90
_REVENUE_FEATURE = "hist_monetary_365d"
_TENURE_FEATURE = "hist_tenure_days"
_SEGMENT_FEATURE = "cat_segment"
_DAY = pd.Timedelta(days=1)

Progress = Callable[[str], None]


# --- the time split --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnSplit:
    """Which snapshots train, calibrate and test a churn model.

    Attributes:
        train: as_ofs of the training snapshots (label windows end before ``calibration``).
        calibration: as_of of the early-stopping and calibration snapshot.
        holdout: as_of of the evaluation snapshot.
        horizon_days: label horizon.
        last_day: the last day of data used (inclusive).
    """

    train: tuple[pd.Timestamp, ...]
    calibration: pd.Timestamp
    holdout: pd.Timestamp
    horizon_days: int
    last_day: pd.Timestamp

    @property
    def as_ofs(self) -> list[pd.Timestamp]:
        return [*self.train, self.calibration, self.holdout]

    def describe(self) -> dict[str, Any]:
        return {
            "train": [str(t.date()) for t in self.train],
            "calibration": str(self.calibration.date()),
            "holdout": str(self.holdout.date()),
            "horizon_days": self.horizon_days,
            "last_day": str(self.last_day.date()),
        }


def _window_ends_before(t: pd.Timestamp, horizon_days: int, later: pd.Timestamp) -> bool:
    """The label window ``[t, t + H)`` ends before ``later`` (its last day is before it)."""
    return t + pd.Timedelta(days=horizon_days) <= later


def plan_split(first_day: pd.Timestamp, last_day: pd.Timestamp, horizon_days: int,
               min_history_days: int = MIN_HISTORY_DAYS,
               min_train_snapshots: int = MIN_TRAIN_SNAPSHOTS) -> ChurnSplit:
    """Monthly snapshots split by time, no label window overlapping a later slice.

    Args:
        first_day: the first day of data.
        last_day: the last day of data (inclusive).
        horizon_days: label horizon in days.
        min_history_days: days of data before the first snapshot.
        min_train_snapshots: fewest training snapshots accepted.

    Raises:
        ValueError: when the data is too short for the three slices; the message says how
            much history the horizon needs.
    """
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    start = first_day.normalize() + pd.Timedelta(days=min_history_days)
    snapshots = snapshot_dates(start, last_day) if start <= last_day else []
    complete = [t for t in snapshots if t + pd.Timedelta(days=horizon_days - 1) <= last_day]
    holdout = complete[-1] if complete else None
    calibration = next((t for t in reversed(complete) if holdout is not None
                        and _window_ends_before(t, horizon_days, holdout)), None)
    train = tuple(t for t in complete if calibration is not None
                  and _window_ends_before(t, horizon_days, calibration))
    if holdout is None or calibration is None or len(train) < min_train_snapshots:
        needed = min_history_days + 3 * horizon_days + 31 * (min_train_snapshots + 1)
        raise ValueError(
            f"too little history to train a {horizon_days}-day churn model: the data covers "
            f"{first_day.date()} to {last_day.date()} ({(last_day - first_day).days + 1} days); "
            f"a split whose training, calibration and holdout label windows do not overlap "
            f"needs about {needed} days. Use more history or a shorter --horizon-days."
        )
    return ChurnSplit(train, calibration, holdout, horizon_days, last_day)


def tables_before(tables: Tables, cutoff: pd.Timestamp) -> Tables:
    """The tables as they stood at ``cutoff``: rows dated on or after it are dropped.

    Orders, interactions, receivables (by issue date; a payment on or after the cutoff is not
    known yet), opportunities (by creation) and stage changes are cut. Customers stay whole:
    features only count a customer from its creation or first event before each as_of.
    """
    dated = {S.ORDERS: S.ORDER_DATE, S.INTERACTIONS: S.OCCURRED_AT, S.RECEIVABLES: S.ISSUED_AT,
             S.OPPORTUNITIES: S.CREATED_AT, S.STAGE_HISTORY: S.ENTERED_AT}
    frames = dict(tables.frames)
    for name, column in dated.items():
        frame = frames.get(name)
        if frame is not None and column in frame.columns:
            frames[name] = frame.loc[frame[column] < cutoff]
    receivables = frames.get(S.RECEIVABLES)
    if receivables is not None and S.PAID_AT in receivables.columns:
        late = receivables[S.PAID_AT] >= cutoff
        if late.any():
            receivables = receivables.copy()
            receivables.loc[late, S.PAID_AT] = pd.NaT
            frames[S.RECEIVABLES] = receivables
    return Tables(frames, tables.source, tables.derived)


def _first_day(tables: Tables) -> pd.Timestamp:
    return pd.Timestamp(tables.orders[S.ORDER_DATE].min()).normalize()


def _resolve_as_of(tables: Tables, as_of: pd.Timestamp | str | None) -> pd.Timestamp:
    """The given as_of (at midnight), else the day after the data's last row; checked."""
    if tables.orders.empty:
        raise ValueError("the orders table is empty: nothing to learn churn from")
    stamp = (pd.Timestamp(as_of) if as_of is not None else default_as_of(tables)).normalize()
    first = _first_day(tables)
    if stamp <= first:
        raise ValueError(f"as_of {stamp.date()} is not after the first order ({first.date()}): "
                         f"there is no history before it")
    return stamp


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
    for values in (holdout[S.CUSTOMER_ID].astype(str), holdout[CHURNED].astype(str)):
        digest.update("\n".join(values).encode())
    return (f"{split.holdout.date()}/{split.horizon_days}d/{len(holdout)} customers/"
            f"{digest.hexdigest()[:12]}")


def _champion_value(holdout: pd.DataFrame, notes: list[str]) -> tuple[float | None, str | None]:
    """The champion's gate metric on this holdout, or None (with a note) when there is none."""
    try:
        champion = tracking.load_champion(KIND)
    except tracking.ChampionMissingError:
        notes.append("no champion yet: the first promotion needs no comparison")
        return None, None
    try:
        p = _probabilities(champion.estimator, holdout)
    except (KeyError, ValueError) as exc:  # a champion trained on features that are gone
        notes.append(f"champion v{champion.version} could not score this holdout ({exc}); "
                     f"promotion will need --force")
        return None, None
    value = classification_metrics(holdout[CHURNED].to_numpy(), p)[GATE_METRIC]
    notes.append(f"champion v{champion.version}: {GATE_METRIC} {value:.4f} on the same holdout")
    return value, champion.version


def _segment_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Per-segment AUC as metrics named ``segment_roc_auc.<segment>`` (valid MLflow names)."""
    out = {}
    for segment, auc in zip(table["segment"], table["roc_auc"].astype(float), strict=True):
        if np.isfinite(auc):
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(segment))
            out[f"segment_roc_auc.{name}"] = float(auc)
    return out


@dataclass
class ChurnTraining:
    """What :func:`train_churn` produced.

    Attributes:
        run_id: the MLflow run.
        version: the registered version (alias ``challenger``).
        model_name: the registered model name.
        metrics: everything logged: ours unprefixed, baselines and champion prefixed.
        baselines: holdout metrics, one row per model (``churn_model`` and the baselines).
        notes: plain-word remarks (split, calibration, champion comparison).
        split: the snapshots used.
        model: the fitted model.
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
    model: ChurnModel
    champion_value: float | None = None
    segments: pd.DataFrame = field(default_factory=pd.DataFrame)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _slices(table: pd.DataFrame, split: ChurnSplit
            ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    as_of = table[S.AS_OF]
    train = table.loc[as_of.isin(list(split.train))]
    calibration = table.loc[as_of == split.calibration]
    holdout = table.loc[as_of == split.holdout]
    for name, frame in (("training", train), ("calibration", calibration),
                        ("holdout", holdout)):
        churned = int(frame[CHURNED].sum())
        if churned in (0, len(frame)):
            raise ValueError(f"too little history to train: the {name} slice has {len(frame)} "
                             f"active customers of which {churned} churned; both outcomes "
                             "are needed")
    return train, calibration, holdout


def _artifacts(model: ChurnModel, holdout: pd.DataFrame, p: np.ndarray, comparison: pd.DataFrame,
               segments: pd.DataFrame, split: ChurnSplit, tmp: Path
               ) -> dict[str, Path | pd.DataFrame | dict[str, Any]]:
    reliability = reliability_table(holdout[CHURNED].to_numpy(), p)
    importance = model.feature_importance()
    return {
        "calibration.png": plot_calibration(reliability, tmp / "calibration.png",
                                            f"Churn calibration, holdout {split.holdout.date()}"),
        "feature_importance.png": plot_feature_importance(importance,
                                                          tmp / "feature_importance.png"),
        "reliability.csv": reliability,
        "segment_auc.csv": segments,
        "baselines.csv": comparison.reset_index(),
        "feature_importance.csv": importance.rename_axis("feature").reset_index(),
        "features.json": {"features": model.features_,
                          "descriptions": {f: FEATURE_DESCRIPTIONS.get(f, "")
                                           for f in model.features_}},
        "split.json": split.describe(),
    }


def _metrics(comparison: pd.DataFrame, segments: pd.DataFrame, champion: float | None
             ) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name in ("churn_model", *BASELINES):
        prefix = "" if name == "churn_model" else f"{name}_"  # ours unprefixed: the gate's
        metrics |= {f"{prefix}{k}": float(v) for k, v in comparison.loc[name].items()
                    if np.isfinite(v)}
    metrics |= _segment_metrics(segments)
    if champion is not None:
        metrics[f"champion_{GATE_METRIC}"] = champion
    return metrics


def train_churn(tables: Tables, *, as_of: pd.Timestamp | None = None, horizon_days: int = 180,
                seed: int = 42, progress: Callable[[str], None] | None = None
                ) -> ChurnTraining:
    """Train, evaluate on a later time slice, log to MLflow and register a ``challenger``.

    Only data dated before ``as_of`` is used (default: the last date in the data). Snapshots
    are monthly and split by time (:func:`plan_split`); the model, the recency rule, the RFM
    logistic regression and the current champion (if any) are all scored on the same holdout,
    so the promotion gate compares like with like on :data:`GATE_METRIC` (PR-AUC).

    Args:
        tables: validated tables.
        as_of: data cutoff; rows dated on or after it are ignored.
        horizon_days: churned = no purchase within this many days of a snapshot.
        seed: LightGBM's seed.
        progress: called with a short message at each stage.

    Raises:
        ValueError: as_of before any data, or too little history for the split.
    """
    cutoff = _resolve_as_of(tables, as_of)
    past = tables_before(tables, cutoff)
    split = plan_split(_first_day(past), cutoff - _DAY, horizon_days)
    _say(progress, f"building {len(split.as_ofs)} monthly snapshots "
                   f"({split.train[0].date()} .. {split.holdout.date()})")
    table = training_table(past, split.as_ofs, horizon_days, LOOKBACK_DAYS, split.last_day)
    train, calibration, holdout = _slices(table, split)
    _say(progress, f"training LightGBM on {len(train):,} rows, calibrating on "
                   f"{len(calibration):,}")
    model = ChurnModel(random_state=seed).fit(train, train[CHURNED], calibration,
                                              calibration[CHURNED])
    _say(progress, f"evaluating on the holdout of {split.holdout.date()}")
    baselines = fit_baselines(pd.concat([train, calibration]))
    comparison = evaluate_models({"churn_model": model, **baselines}, holdout)
    p = _probabilities(model, holdout)
    segments = segment_auc(holdout[CHURNED].to_numpy(), p, holdout[_SEGMENT_FEATURE]
                           if _SEGMENT_FEATURE in holdout else np.full(len(holdout), None))
    notes = _notes(model, split, holdout, comparison)
    champion_value, _ = _champion_value(holdout, notes)
    metrics = _metrics(comparison, segments, champion_value)
    _say(progress, "logging to MLflow")
    params = {**describe_params(model), "horizon_days": horizon_days, "seed": seed,
              "lookback_days": LOOKBACK_DAYS, "as_of": str(cutoff.date()),
              "holdout_as_of": str(split.holdout.date()),
              "calibration_as_of": str(split.calibration.date()),
              "train_snapshots": len(split.train), "gate_metric": GATE_METRIC}
    with tempfile.TemporaryDirectory() as tmp:
        run = tracking.log_and_register(
            KIND, model, input_example=serving_example(holdout.drop(columns=[CHURNED])),
            params=params, metrics=metrics, gate_metric=GATE_METRIC, greater_is_better=True,
            holdout=_fingerprint(holdout, split), champion_value=champion_value,
            artifacts=_artifacts(model, holdout, p, comparison, segments, split, Path(tmp)),
        )
    return ChurnTraining(run.run_id, run.version, run.model_name, run.metrics, comparison,
                         notes, split, model, champion_value, segments)


def serving_example(features: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """A few feature rows as a served model receives them: categoricals as plain strings.

    MLflow has no categorical type (it types them as strings and then refuses to convert a
    categorical input), and callers of the served model send JSON strings anyway.
    """
    example = features.head(rows).copy()
    for column in example.select_dtypes("category").columns:
        example[column] = example[column].astype(object)
    return example


def _notes(model: ChurnModel, split: ChurnSplit, holdout: pd.DataFrame,
           comparison: pd.DataFrame) -> list[str]:
    ours = comparison.loc["churn_model"]
    best = comparison.loc[list(BASELINES), GATE_METRIC].idxmax()
    return [
        f"split: {len(split.train)} training snapshots {split.train[0].date()} .. "
        f"{split.train[-1].date()}, calibration {split.calibration.date()}, holdout "
        f"{split.holdout.date()} ({split.horizon_days}-day label windows never overlap)",
        f"holdout: {len(holdout):,} active customers, {holdout[CHURNED].mean():.1%} churned",
        f"early stopping kept {model.best_iteration_} trees; calibration: "
        f"{model.calibration_method_} on {model.n_calibration_:,} rows",
        f"{GATE_METRIC} {ours[GATE_METRIC]:.4f} vs best baseline {best} "
        f"{comparison.loc[best, GATE_METRIC]:.4f}",
    ]


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
    customers = tables.get(S.CUSTOMERS)
    if customers is None or S.ACCOUNT_MANAGER not in customers.columns:
        return pd.Series(dtype=object)
    return customers.set_index(S.CUSTOMER_ID)[S.ACCOUNT_MANAGER]


def _check_owner(owner: str, known: Sequence[str]) -> None:
    """ValueError naming the close matches, or the known account managers."""
    if owner in known:
        return
    if not known:
        raise ValueError(f"unknown owner {owner!r}: the data names no account managers "
                         f"(customers.{S.ACCOUNT_MANAGER} is absent or empty)")
    close = difflib.get_close_matches(owner, known, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close else
            f"known account managers: {', '.join(sorted(known)[:20])}"
            + (f" and {len(known) - 20} more" if len(known) > 20 else ""))
    raise ValueError(f"unknown owner {owner!r}: {hint}")


def _active_features(tables: Tables, as_of: pd.Timestamp) -> pd.DataFrame:
    """Features at as_of of the customers active then (a purchase in the last 365 days)."""
    history = customer_history(tables)
    features = features_at(history, as_of)
    # labels_at defines "active" for training; reusing it keeps scoring on the same population
    # (its churn column looks past as_of and is dropped unread).
    active = labels_at(history.orders.purchases, history.ids, as_of, 1, LOOKBACK_DAYS)
    return features.loc[features[S.CUSTOMER_ID].isin(active[S.CUSTOMER_ID])]


def score_churn(tables: Tables, *, as_of: pd.Timestamp | None = None, horizon_days: int = 180,
                owner: str | None = None, model: Any | None = None) -> pd.DataFrame:
    """At-risk customers at ``as_of``, riskiest first by revenue at risk.

    ``revenue_at_risk`` = :func:`expected_revenue` (the customer's trailing-365-day net revenue
    as a daily rate over its tenure in that year, at least 90 days, times ``horizon_days``)
    times ``churn_probability``.

    Args:
        tables: validated tables.
        as_of: scoring date (default: the last date in the data); features use rows before it.
        horizon_days: the horizon the revenue at risk is measured over; it should be the one
            the model was trained for.
        owner: keep only this account manager's customers.
        model: an estimator with ``predict_frame``; default the registered champion.

    Returns:
        ``customer_id``, ``account_manager``, ``churn_probability``, ``revenue_at_risk``,
        ``reasons``, then ``as_of`` and ``expected_revenue``.

    Raises:
        tracking.ChampionMissingError: no model given and no champion registered.
        ValueError: unknown owner, or as_of before any data.
    """
    stamp = _resolve_as_of(tables, as_of)
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    managers = _account_managers(tables)
    if owner is not None:
        _check_owner(owner, [str(m) for m in managers.dropna().unique()])
    estimator = model if model is not None else tracking.load_champion(KIND).estimator
    features = _active_features(tables, stamp)
    manager = features[S.CUSTOMER_ID].map(managers) if len(managers) else pd.Series(
        None, index=features.index, dtype=object)
    if owner is not None:
        features, manager = features.loc[manager == owner], manager.loc[manager == owner]
    scored = pd.DataFrame(estimator.predict_frame(features), index=features.index)
    expected = expected_revenue(features, horizon_days)
    out = pd.DataFrame({
        S.CUSTOMER_ID: features[S.CUSTOMER_ID].to_numpy(),
        S.ACCOUNT_MANAGER: manager.to_numpy(),
        CHURN_PROBABILITY: scored[CHURN_PROBABILITY].to_numpy(dtype=float),
        REVENUE_AT_RISK: expected * scored[CHURN_PROBABILITY].to_numpy(dtype=float),
        REASONS: scored[REASONS].to_numpy() if REASONS in scored else "",
        S.AS_OF: stamp,
        EXPECTED_REVENUE: expected,
    })
    return out.sort_values([REVENUE_AT_RISK, CHURN_PROBABILITY, S.CUSTOMER_ID],
                           ascending=[False, False, True], ignore_index=True)

