"""Churn models: a calibrated LightGBM with plain-word reasons, and two baselines.

All three follow the scikit-learn estimator conventions (``__init__`` only stores parameters,
``fit`` returns ``self``, learned state ends in ``_``) and take the point-in-time feature frame of
:func:`features.customer.customer_features` as input, so they can be swapped in a pipeline,
compared on one holdout, and served through ``predict_frame`` (what MLflow's pyfunc calls).

:class:`ChurnModel`
    LightGBM on every ``hist_``, ``cx_``, ``ar_``, ``pipe_`` and ``cat_`` feature, and on
    the ``btyd_`` outputs of a BG/NBD fitted before each snapshot (stacking,
    :mod:`models.btyd`). Churners may be the minority, so positives are up-weighted
    (``class_weight="balanced"``) to give the trees enough of them to split on; the weighting
    distorts the probabilities, which the calibration step then maps back to observed rates.
    Boosting stops early on rows the trees did not learn from: either a later time slice, or
    (cross-fitting, what the pipeline uses) each of four boosters on the customers left out
    of its training folds; cross-fitted, the trees are grown twice (the given settings and
    smaller, slower trees, :data:`TREE_OPTIONS`) and the setting whose out-of-fold log-odds
    rank the latest training snapshots best is kept; the model averages the boosters'
    log-odds and the out-of-fold log-odds fit the calibration map: isotonic when there are
    enough cases on both sides,
    else Platt scaling on the log-odds, both strictly increasing so the ranking (ROC-AUC,
    PR-AUC) is exactly that of the trees.
    Reasons come from LightGBM's per-row contributions (``pred_contrib=True``, TreeSHAP on the
    log-odds): contributions are summed per family of related features (recency, complaints,
    spend trend, ...) and the three families that push risk up most are phrased with the real
    values of the row, e.g. ``no order for 143 days, usual cycle 41 days``. The contributions
    are those of the trees, before calibration; the calibration map is increasing, so a push
    up on the trees' log-odds is a push up on the calibrated probability.
:class:`RecencyCycleRule`
    The rule a sales manager would write: how overdue is the next order against the customer's
    own median gap. A one-feature logistic fit only turns the score into a probability.
:class:`RfmLogistic`
    Logistic regression on log recency, frequency and monetary value, standardized.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from features.customer import FEATURE_DESCRIPTIONS, format_feature

__all__ = [
    "CHURN_PROBABILITY",
    "FEATURE_PREFIXES",
    "LINEAR_WEIGHTS",
    "REASONS",
    "REASON_SEPARATOR",
    "SMALL_TREES",
    "TREE_OPTIONS",
    "ChurnModel",
    "RecencyCycleRule",
    "RfmLogistic",
    "best_on_inner",
    "describe_params",
    "feature_columns",
    "inner_metrics",
    "inner_slice",
    "phrase_reason",
    "reason_family",
]

# Output columns (`score churn`, README); schemas.py has no names for them yet.
CHURN_PROBABILITY = "churn_probability"
REASONS = "reasons"
REASON_SEPARATOR = "; "
FEATURE_PREFIXES = ("hist_", "cx_", "ar_", "pipe_", "cat_", "btyd_")
# Blaming the account manager is not a reason the account manager can act on, and with many
# reps the category mostly learns noise; the column stays available to filter on.
DEFAULT_EXCLUDE = ("cat_account_manager",)
RECENCY = "hist_recency_days"
CYCLE = "hist_cycle_median_days"
FREQUENCY = "hist_frequency_365d"
MONETARY = "hist_monetary_365d"
# Isotonic regression overfits small samples (scikit-learn's guidance: well above 1,000
# cases); below these counts the two-parameter Platt map is the reliable choice.
ISOTONIC_MIN_ROWS = 1_000
ISOTONIC_MIN_CLASS = 100
# Weight of the raw sigmoid blended into the isotonic step function: breaks its ties so the
# calibrated score stays strictly increasing, at a cost of at most 0.001 in probability.
_TIE_BREAK = 1e-3
# Weights of the RFM logistic regression in the blended score, tried on the inner slice.
LINEAR_WEIGHTS = (0.0, 0.25, 0.5, 0.75)
# Tree settings tried by the cross-fitted model, chosen on the inner slice: the constructor's
# as given, and smaller, slower trees (fewer leaves, larger leaves, a smaller step) for the
# few thousand noisy rows of a young history, where the given ones stop after a few dozen
# rounds having learnt little more than recency and frequency.
SMALL_TREES: Mapping[str, Any] = {"learning_rate": 0.03, "num_leaves": 4,
                                  "min_child_samples": 100}
TREE_OPTIONS: tuple[Mapping[str, Any], ...] = ({}, SMALL_TREES)
# Constructor parameter -> LightGBM parameter (what a tree option may override).
_LGB_NAMES = {"learning_rate": "learning_rate", "num_leaves": "num_leaves",
              "min_child_samples": "min_data_in_leaf", "subsample": "bagging_fraction",
              "colsample_bytree": "feature_fraction", "reg_lambda": "lambda_l2"}
_P_MIN, _P_MAX = 1e-4, 1 - 1e-4

Calibration = Literal["auto", "isotonic", "sigmoid"]
ClassWeight = Literal["balanced", "none"]


# --- shared helpers --------------------------------------------------------------------------


def feature_columns(frame: pd.DataFrame, exclude: Sequence[str] = DEFAULT_EXCLUDE) -> list[str]:
    """The model features of a feature frame: prefixed columns, minus ``exclude``, in order."""
    return [c for c in frame.columns if c.startswith(FEATURE_PREFIXES) and c not in exclude]


def _labels(y: object) -> np.ndarray:
    arr = np.asarray(y, dtype=float)
    if arr.ndim != 1 or not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError("churn labels must be a 1-d array of 0 and 1")
    return arr.astype(int)


def _both_classes(y: np.ndarray, what: str) -> None:
    if y.size == 0 or y.min() == y.max():
        raise ValueError(
            f"the {what} needs both churners and non-churners, got "
            f"{int(y.sum())} churners out of {y.size} rows"
        )


def _require_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the feature frame lacks column(s): {', '.join(missing)}")


def _probability_frame(frame: pd.DataFrame, p: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({CHURN_PROBABILITY: p}, index=frame.index)


# --- calibration -----------------------------------------------------------------------------


class _Calibrator:
    """A strictly increasing map from LightGBM's raw log-odds to a calibrated probability."""

    def __init__(self, method: Literal["isotonic", "sigmoid"]):
        self.method = method

    def fit(self, margin: np.ndarray, y: np.ndarray) -> _Calibrator:
        x = margin.reshape(-1, 1)
        if self.method == "isotonic":
            self.map_: Any = IsotonicRegression(
                y_min=_P_MIN, y_max=_P_MAX, out_of_bounds="clip"
            ).fit(margin, y)
        else:
            # Platt scaling on the log-odds: nearly unpenalized, the data decide the two numbers.
            self.map_ = LogisticRegression(C=1e6, max_iter=1000).fit(x, y)
        return self

    def transform(self, margin: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            stepped = np.asarray(self.map_.predict(margin), dtype=float)
            return (1 - _TIE_BREAK) * stepped + _TIE_BREAK * expit(margin)
        p = self.map_.predict_proba(margin.reshape(-1, 1))[:, 1]
        return np.clip(p, _P_MIN, _P_MAX)


def _calibration_method(
    y_cal: np.ndarray, requested: Calibration
) -> Literal["isotonic", "sigmoid"]:
    if requested != "auto":
        return requested
    minority = min(int(y_cal.sum()), int(y_cal.size - y_cal.sum()))
    enough = y_cal.size >= ISOTONIC_MIN_ROWS and minority >= ISOTONIC_MIN_CLASS
    return "isotonic" if enough else "sigmoid"


# --- reasons ---------------------------------------------------------------------------------

Getter = Callable[[str], Any]

# Families of related features: their contributions are summed, so "no order for 143 days" is
# one reason even when recency, the overdue ratio and the overdue days all push it.
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("recency", r"^hist_(recency_days|overdue_ratio|overdue_days)$"),
    ("cycle", r"^hist_cycle_"),
    ("frequency", r"^hist_frequency_"),
    ("spend_trend", r"^hist_spend_(trend|change)_"),
    ("spend", r"^hist_(monetary_|avg_order_value)"),
    ("tenure", r"^hist_(tenure_days|days_since_first_order)$"),
    ("breadth", r"^hist_products_"),
    ("returns", r"^hist_returns_share_"),
    ("complaints", r"^cx_(complaints_|days_since_last_complaint)"),
    ("severity", r"^cx_severity_"),
    ("tickets", r"^cx_tickets_"),
    ("contact", r"^cx_(interactions_|days_since_last_interaction)"),
    ("receivables", r"^ar_"),
    ("pipeline", r"^pipe_"),
    ("btyd", r"^btyd_"),
)


@functools.lru_cache(maxsize=1024)
def reason_family(feature: str) -> str:
    """The family a feature's contribution is pooled in (the feature itself when unknown)."""
    for family, pattern in _FAMILIES:
        if re.match(pattern, feature):
            return family
    return feature


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _window(feature: str) -> int | None:
    found = re.search(r"_(\d+)d$", feature)
    return int(found.group(1)) if found else None


def _plural(n: float, word: str) -> str:
    return f"{n:.0f} {word}" + ("" if round(n) == 1 else "s")


def _period(days: int | None) -> str:
    return "the previous quarter" if days == 90 else f"the previous {days} days"


def _recency_phrase(feature: str, get: Getter) -> str | None:
    recency, cycle = get(RECENCY), get(CYCLE)
    if _missing(recency):
        return "no purchase on record"
    if _missing(cycle):
        return f"no order for {recency:.0f} days, no repeat order yet"
    return f"no order for {recency:.0f} days, usual cycle {cycle:.0f} days"


def _cycle_phrase(feature: str, get: Getter) -> str | None:
    cycle = get(CYCLE)
    if _missing(cycle):
        return "a single order day so far, no buying rhythm yet"
    if feature.startswith("hist_cycle_iqr"):
        spread = get(feature)
        return (
            None
            if _missing(spread)
            else (f"irregular ordering: gaps vary by {spread:.0f} days around a usual {cycle:.0f}")
        )
    return f"orders only every {cycle:.0f} days or so"


def _frequency_phrase(feature: str, get: Getter) -> str | None:
    n, w = get(feature), _window(feature)
    if _missing(n):
        return None
    if w is None:
        return f"only {_plural(n, 'order day')} ever"
    return (
        f"no order in the last {w} days"
        if n == 0
        else (f"only {_plural(n, 'order day')} in the last {w} days")
    )


def _spend_trend_phrase(feature: str, get: Getter) -> str | None:
    w = _window(feature)
    change = get(f"hist_spend_change_{w}d")
    trend = get(f"hist_spend_trend_{w}d")
    if not _missing(change):
        if change <= -1:
            return f"no spend in the last {w} days, after some in {_period(w)}"
        direction = "down" if change < 0 else "up"
        return f"spend {direction} {abs(change):.0%} on {_period(w)}"
    if not _missing(trend) and trend > 0:
        return f"spend restarted in the last {w} days after none in {_period(w)}"
    return f"no spend in the last {w} days nor in {_period(w)}"


def _spend_phrase(feature: str, get: Getter) -> str | None:
    value, w = get(feature), _window(feature)
    if _missing(value):
        return None
    if feature == "hist_avg_order_value":
        return f"average purchase {value:,.0f}"
    when = f"in the last {w} days" if w is not None else "ever"
    return f"no net spend {when}" if value <= 0 else f"net spend {value:,.0f} {when}"


def _tenure_phrase(feature: str, get: Getter) -> str | None:
    days = get(feature)
    if _missing(days):
        return None
    return (
        f"new customer: first seen {days:.0f} days ago"
        if days < 365
        else f"customer for {days:.0f} days"
    )


def _breadth_phrase(feature: str, get: Getter) -> str | None:
    n = get(feature)
    return (
        None
        if _missing(n)
        else (f"only {_plural(n, 'distinct product')} bought in the last {_window(feature)} days")
    )


def _returns_phrase(feature: str, get: Getter) -> str | None:
    share = get(feature)
    return (
        None
        if _missing(share)
        else (f"{share:.0%} of spend returned in the last {_window(feature)} days")
    )


def _complaints_phrase(feature: str, get: Getter) -> str | None:
    value = get(feature)
    if feature == "cx_days_since_last_complaint":
        return (
            "no complaint on record"
            if _missing(value)
            else (f"last complaint {value:.0f} days ago")
        )
    if _missing(value) or value == 0:
        return None
    return f"{_plural(value, 'complaint')} in the last {_window(feature)} days"


def _severity_phrase(feature: str, get: Getter) -> str | None:
    value, w = get(feature), _window(feature)
    if _missing(value):
        return None
    if "_max_" in feature:
        return f"an interaction of severity {value:.0f} (of 4) in the last {w} days"
    return f"interactions of mean severity {value:.1f} (of 4) in the last {w} days"


def _tickets_phrase(feature: str, get: Getter) -> str | None:
    n = get(feature)
    return (
        None
        if _missing(n) or n == 0
        else (f"{_plural(n, 'support ticket')} in the last {_window(feature)} days")
    )


def _contact_phrase(feature: str, get: Getter) -> str | None:
    value = get(feature)
    if feature == "cx_days_since_last_interaction":
        return "no contact on record" if _missing(value) else f"no contact for {value:.0f} days"
    if _missing(value):
        return None
    w = _window(feature)
    return (
        f"no contact in the last {w} days"
        if value == 0
        else (f"only {_plural(value, 'interaction')} in the last {w} days")
    )


def _receivables_phrase(feature: str, get: Getter) -> str | None:
    value = get(feature)
    if _missing(value):
        return None
    phrases = {
        "ar_unpaid_amount": f"{value:,.0f} invoiced and unpaid",
        "ar_overdue_amount": f"{value:,.0f} overdue",
        "ar_overdue_invoices": f"{_plural(value, 'invoice')} overdue",
        "ar_max_days_late": f"an invoice {value:.0f} days overdue",
        "ar_paid_late_share": f"{value:.0%} of paid invoices paid late",
    }
    return phrases.get(feature)


def _pipeline_phrase(feature: str, get: Getter) -> str | None:
    value, w = get(feature), _window(feature)
    if _missing(value):
        return None
    if feature in ("pipe_open_deals", "pipe_open_value"):
        deals = get("pipe_open_deals")
        if value == 0 or deals == 0:
            return "no open deals"
        return (
            f"{_plural(value, 'open deal')}"
            if feature == "pipe_open_deals"
            else f"open deals worth {value:,.0f}"
        )
    if feature.startswith("pipe_won_"):
        return (
            f"no deal won in the last {w} days"
            if value == 0
            else (f"{_plural(value, 'deal')} won in the last {w} days")
        )
    if feature.startswith("pipe_lost_"):
        return f"{_plural(value, 'deal')} lost in the last {w} days"
    return None


def _btyd_phrase(feature: str, get: Getter) -> str | None:
    alive = get("btyd_p_alive")
    if _missing(alive):
        return None
    return f"buying pattern says {alive:.0%} likely still a customer"


def _category_phrase(feature: str, get: Getter) -> str | None:
    value = get(feature)
    return None if _missing(value) else f"{feature.removeprefix('cat_')} {value}"


_PHRASES: dict[str, Callable[[str, Getter], str | None]] = {
    "recency": _recency_phrase,
    "cycle": _cycle_phrase,
    "frequency": _frequency_phrase,
    "spend_trend": _spend_trend_phrase,
    "spend": _spend_phrase,
    "tenure": _tenure_phrase,
    "breadth": _breadth_phrase,
    "returns": _returns_phrase,
    "complaints": _complaints_phrase,
    "severity": _severity_phrase,
    "tickets": _tickets_phrase,
    "contact": _contact_phrase,
    "receivables": _receivables_phrase,
    "pipeline": _pipeline_phrase,
    "btyd": _btyd_phrase,
}


def phrase_reason(feature: str, get: Getter) -> str:
    """One plain-word reason for ``feature`` with the row's real values (``get(name)``).

    Falls back on the feature's description (``FEATURE_DESCRIPTIONS``) and its value when no
    phrase fits, so a new feature is never silently dropped from the reasons.
    """
    phrase = _PHRASES.get(
        reason_family(feature), _category_phrase if feature.startswith("cat_") else lambda *_: None
    )(feature, get)
    if phrase is not None:
        return phrase
    value = get(feature)
    if feature in FEATURE_DESCRIPTIONS:
        return format_feature(feature, value)
    return f"{feature} = {value}"


# --- the model -------------------------------------------------------------------------------


class ChurnModel:
    """Calibrated LightGBM churn classifier that explains each score in plain words.

    Args:
        n_estimators: maximum boosting rounds; early stopping picks the number actually kept.
        learning_rate: shrinkage per round.
        num_leaves: leaves per tree.
        min_child_samples: least rows in a leaf (guards against learning single customers).
        subsample: row fraction per round (bagging).
        colsample_bytree: feature fraction per tree.
        reg_lambda: L2 penalty on leaf values.
        early_stopping_rounds: rounds without improvement on the later slice before stopping.
        class_weight: ``balanced`` weighs churners by non-churners / churners; ``none`` not.
        calibration: ``isotonic``, ``sigmoid`` (Platt on the log-odds) or ``auto`` (isotonic
            when the calibration slice has at least 1,000 rows and 100 of each class).
        features: the feature columns to use; None means every prefixed column of the
            training frame except ``exclude``.
        exclude: columns never used as features.
        top_reasons: how many reasons to give per customer.
        min_contribution: least push on the log-odds for a family to be named as a reason;
            smaller pushes are noise around a low risk, not something to act on.
        random_state: seed of LightGBM's bagging and feature sampling.
        n_jobs: LightGBM threads. One by default: on a small shared machine, OpenMP threads
            that wait for a busy core made training six times slower than a single thread.
        linear_weight: weight of an RFM logistic regression (:class:`RfmLogistic`, fitted on
            the same rows) in the score: the boosters' log-odds and the regression's, each
            divided by its out-of-fold spread, are averaged with weights ``1 - w`` and ``w``
            before calibration. The regression extrapolates smoothly where the trees are flat
            (a season or a tenure the training snapshots never saw); 0 is the trees alone.
            None (default) chooses it from :data:`LINEAR_WEIGHTS` by the ROC-AUC of the
            out-of-fold scores on an inner validation slice (the latest quarter of the
            training ``periods``, all rows without them); only the cross-fitted mode
            (``groups``) blends. The choice is ``linear_weight_``.
        tree_options: overrides of the tree settings above (``learning_rate``,
            ``num_leaves``, ``min_child_samples``, ``subsample``, ``colsample_bytree``,
            ``reg_lambda``; ``{}`` is the settings as given) among which the cross-fitted mode
            chooses the one whose out-of-fold log-odds rank the inner slice best (ROC-AUC; the
            first on a tie), before the blend weight is chosen. None (default) is
            :data:`TREE_OPTIONS`; ``[{}]`` keeps the given settings. The choice is
            ``tree_option_``.
    """

    # The churn horizon the model was trained for (set by the pipeline; None when unknown).
    horizon_days_: int | None = None

    def __init__(
        self,
        n_estimators: int = 2000,
        learning_rate: float = 0.1,
        num_leaves: int = 7,
        min_child_samples: int = 40,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int = 100,
        class_weight: ClassWeight = "balanced",
        calibration: Calibration = "auto",
        features: Sequence[str] | None = None,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        top_reasons: int = 3,
        min_contribution: float = 0.1,
        random_state: int = 42,
        n_jobs: int = 1,
        linear_weight: float | None = None,
        tree_options: Sequence[Mapping[str, Any]] | None = None,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.class_weight = class_weight
        self.calibration = calibration
        self.features = features
        self.exclude = exclude
        self.top_reasons = top_reasons
        self.min_contribution = min_contribution
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.linear_weight = linear_weight
        self.tree_options = tree_options

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn convention; logged with each run)."""
        return {
            name: getattr(self, name)
            for name in (
                "n_estimators",
                "learning_rate",
                "num_leaves",
                "min_child_samples",
                "subsample",
                "colsample_bytree",
                "reg_lambda",
                "early_stopping_rounds",
                "class_weight",
                "calibration",
                "features",
                "exclude",
                "top_reasons",
                "min_contribution",
                "random_state",
                "n_jobs",
                "linear_weight",
                "tree_options",
            )
        }

    # -- fitting ------------------------------------------------------------------------------

    def _lgb_params(self, option: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """LightGBM's parameters: the constructor's, with a tree option's overrides."""
        unknown = sorted(set(option or {}) - set(_LGB_NAMES))
        if unknown:
            raise ValueError(f"a tree option may only set {', '.join(_LGB_NAMES)}; got "
                             f"{', '.join(unknown)}")
        given = {name: getattr(self, name) for name in _LGB_NAMES} | dict(option or {})
        return {
            "objective": "binary",
            **{_LGB_NAMES[name]: value for name, value in given.items()},
            "bagging_freq": 1 if given["subsample"] < 1 else 0,
            "metric": "binary_logloss",
            "seed": self.random_state,
            "num_threads": self.n_jobs,
            # Same data, same seed, same trees: runs are comparable and tests deterministic.
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def _weights(self, y: np.ndarray) -> np.ndarray:
        if self.class_weight == "none":
            return np.ones(y.size)
        positive = y.sum()
        return np.where(y == 1, (y.size - positive) / positive, 1.0)

    def _matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The feature columns in training order, categoricals on the training categories."""
        _require_columns(frame, self.features_)
        X = frame.loc[:, self.features_].copy()
        for column, categories in self.categories_.items():
            # Serving may hand strings (MLflow has no categorical type); unseen values -> NaN.
            X[column] = pd.Categorical(X[column].astype(object), categories=categories)
        numeric = [c for c in self.features_ if c not in self.categories_]
        X[numeric] = X[numeric].astype(np.float64)
        return X

    def _learn_categories(self, X: pd.DataFrame) -> dict[str, list[Any]]:
        out = {}
        for column in self.features_:
            if column.startswith("cat_") or not pd.api.types.is_numeric_dtype(X[column]):
                values = X[column].astype(object).dropna().unique()
                out[column] = sorted(values, key=str)
        return out

    def _train(self, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame, y_val: np.ndarray,
               seed: int, option: Mapping[str, Any] | None = None) -> lgb.Booster:
        train = lgb.Dataset(X, y, weight=self._weights(y), free_raw_data=False)
        late = lgb.Dataset(X_val, y_val, weight=self._weights(y_val), reference=train)
        return lgb.train(
            {**self._lgb_params(option), "seed": seed},
            train,
            num_boost_round=self.n_estimators,
            valid_sets=[late],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )

    def _prepare(self, X: pd.DataFrame) -> None:
        self.features_ = (
            list(self.features) if self.features is not None else (feature_columns(X, self.exclude))
        )
        if not self.features_:
            raise ValueError("no feature columns (hist_, cx_, ar_, pipe_, cat_, btyd_) in the "
                             "frame")
        _require_columns(X, self.features_)
        self.categories_ = self._learn_categories(X)

    def fit(self, X: pd.DataFrame, y: object, X_cal: pd.DataFrame | None = None,
            y_cal: object = None, groups: object = None, n_folds: int = 4,
            periods: object = None) -> ChurnModel:
        """Boost, stop early and calibrate on rows the trees did not learn from.

        Two ways:

        - ``X_cal, y_cal`` given: boost on ``(X, y)``, stop early and calibrate on that later
          slice (one booster);
        - else cross-fitting on ``groups`` (customer ids: a customer's snapshots stay in one
          fold): ``n_folds`` boosters, each trained on the other folds and stopped early on its
          own; the model averages their log-odds, and the calibration map is fitted on the
          out-of-fold log-odds, so every row trains and every row calibrates, never both in
          one booster.

        ``inner_metrics_`` holds the ROC-AUC and PR-AUC of the final (blended) score on rows no
        booster scoring them learned from: the inner slice of the out-of-fold scores, or the
        later slice. The pipeline compares candidates on it, never on its holdout.

        Args:
            X: training feature frame.
            y: 1 for churned, 0 otherwise.
            X_cal: a later time slice, disjoint in time from the training labels.
            y_cal: its labels.
            groups: one group key per row of ``X`` (cross-fitting).
            n_folds: folds of the cross-fitting.
            periods: the snapshot (as_of) of each row: its latest quarter is the inner
                validation slice that chooses ``linear_weight`` when that is None.
        """
        y_fit = _labels(y)
        _both_classes(y_fit, "training slice")
        self.__dict__.pop("linear_", None)
        self.linear_weight_ = 0.0
        self.tree_option_: dict[str, Any] = {}
        self._prepare(X)
        train_m = self._matrix(X)
        if X_cal is not None:
            y_late = _labels(y_cal)
            _both_classes(y_late, "calibration slice")
            late_m = self._matrix(X_cal)
            self.boosters_ = [self._train(train_m, y_fit, late_m, y_late, self.random_state)]
            self._best()
            margin, y_margin = self._margin(late_m), y_late
            self.inner_metrics_ = inner_metrics(y_late, margin, np.ones(y_late.size, bool))
        else:
            if groups is None:
                raise ValueError("fit needs a calibration slice (X_cal, y_cal) or groups")
            fold = _folds(groups, n_folds)
            if len(np.unique(fold)) < 2:
                raise ValueError("cross-fitting needs at least two groups")
            for k in np.unique(fold):
                _both_classes(y_fit[fold != k], "training folds")
                _both_classes(y_fit[fold == k], "validation fold")
            inner = inner_slice(periods, len(y_fit))
            options = list(TREE_OPTIONS if self.tree_options is None else self.tree_options)
            if not options:
                raise ValueError("tree_options needs at least one option ({} for the given "
                                 "settings)")
            fits = [self._cross_fit(train_m, y_fit, fold, option) for option in options]
            best = best_on_inner([margin for _, margin in fits], y_fit, inner)
            self.tree_option_ = dict(options[best])
            self.boosters_, margin = fits[best]
            linear = self._linear_columns()
            linear_margin = np.zeros(len(y_fit))
            if linear:
                for k in np.unique(fold):
                    out = fold == k
                    part = RfmLogistic(*linear).fit(train_m.loc[~out], y_fit[~out])
                    linear_margin[out] = part.log_odds(train_m.loc[out])
            self._best()
            if linear:
                self.scales_ = (_spread(margin), _spread(linear_margin))
                self.linear_weight_ = self._choose_weight(margin, linear_margin, y_fit, inner)
                if self.linear_weight_ > 0:
                    self.linear_ = RfmLogistic(*linear).fit(train_m, y_fit)
                    margin = self._blend(margin, linear_margin)
            y_margin = y_fit
            self.inner_metrics_ = inner_metrics(y_fit, margin, inner)
        self.calibration_method_ = _calibration_method(y_margin, self.calibration)
        self.calibrator_ = _Calibrator(self.calibration_method_).fit(margin, y_margin)
        self.n_train_, self.n_calibration_ = int(y_fit.size), int(y_margin.size)
        self._families()
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Models pickled before cross-fitting held one ``booster_``, models pickled before the
        blend no ``linear_``: they still load (trees alone)."""
        if "booster_" in state and "boosters_" not in state:
            state["boosters_"] = [state.pop("booster_")]
            state["iterations_"] = [state["best_iteration_"]]
        state.setdefault("linear_weight", 0.0)
        state.setdefault("linear_weight_", 0.0)
        state.setdefault("tree_options", [{}])
        state.setdefault("tree_option_", {})
        self.__dict__.update(state)

    def _cross_fit(self, X: pd.DataFrame, y: np.ndarray, fold: np.ndarray,
                   option: Mapping[str, Any]) -> tuple[list[lgb.Booster], np.ndarray]:
        """One booster per fold, trained on the other folds and stopped early on its own, with
        one tree option; the boosters and the out-of-fold log-odds."""
        boosters, margin = [], np.zeros(len(y))
        for k in np.unique(fold):
            out = fold == k
            booster = self._train(X.loc[~out], y[~out], X.loc[out], y[out],
                                  self.random_state + int(k), option)
            boosters.append(booster)
            best = int(booster.best_iteration or self.n_estimators)
            margin[out] = booster.predict(X.loc[out], num_iteration=best, raw_score=True)
        return boosters, margin

    def _linear_columns(self) -> tuple[str, str, str] | None:
        """Recency, frequency and monetary columns of the blended regression, or None (no
        blend: zero weight, or a column not among the features)."""
        columns = (RECENCY, FREQUENCY, MONETARY)
        if self.linear_weight == 0 or not set(columns) <= set(self.features_):
            return None
        return columns

    def _blend(self, trees: np.ndarray, linear: np.ndarray, weight: float | None = None
               ) -> np.ndarray:
        w = self.linear_weight_ if weight is None else weight
        return (1 - w) * trees / self.scales_[0] + w * linear / self.scales_[1]

    def _choose_weight(self, trees: np.ndarray, linear: np.ndarray, y: np.ndarray,
                       inner: np.ndarray) -> float:
        """The given weight, else the one of :data:`LINEAR_WEIGHTS` whose blend of out-of-fold
        log-odds ranks the inner slice best (:func:`best_on_inner`: the lightest on a tie)."""
        if self.linear_weight is not None:
            return float(self.linear_weight)
        blends = [self._blend(trees, linear, w) for w in LINEAR_WEIGHTS]
        return float(LINEAR_WEIGHTS[best_on_inner(blends, y, inner)])

    def _score(self, X: pd.DataFrame, trees: np.ndarray) -> np.ndarray:
        """The calibrated score from the boosters' log-odds (blended when fitted so)."""
        linear = getattr(self, "linear_", None)
        return trees if linear is None else self._blend(trees, linear.log_odds(X))

    def _best(self) -> None:
        self.iterations_ = [int(b.best_iteration or self.n_estimators) for b in self.boosters_]
        self.best_iteration_ = round(float(np.mean(self.iterations_)))

    def _families(self) -> None:
        """Which features pool into which reason family (fixed once the features are)."""
        names = list(dict.fromkeys(reason_family(f) for f in self.features_))
        self.families_ = names
        self.family_members_ = [
            np.array([i for i, f in enumerate(self.features_) if reason_family(f) == name])
            for name in names
        ]

    # -- predicting ---------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "boosters_"):
            raise NotFittedError("ChurnModel is not fitted yet: call fit(X, y, X_cal, y_cal)")

    def _margin(self, X: pd.DataFrame) -> np.ndarray:
        return np.mean([np.asarray(b.predict(X, num_iteration=n, raw_score=True), dtype=float)
                        for b, n in zip(self.boosters_, self.iterations_, strict=True)], axis=0)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities as scikit-learn's ``(n, 2)`` array (stay, churn)."""
        p = self._probability(self._matrix_checked(frame))
        return np.column_stack([1 - p, p])

    def _matrix_checked(self, frame: pd.DataFrame) -> pd.DataFrame:
        self._check_fitted()
        return self._matrix(frame)

    def _probability(self, X: pd.DataFrame) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0)
        return np.asarray(self.calibrator_.transform(self._score(X, self._margin(X))),
                          dtype=float)

    def predict_proba_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``churn_probability`` per row of a feature frame, index kept."""
        return _probability_frame(frame, self._probability(self._matrix_checked(frame)))

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per-row, per-feature contributions to the log-odds (TreeSHAP), plus ``bias``."""
        X = self._matrix_checked(frame)
        return pd.DataFrame(
            self._contributions(X), index=frame.index, columns=[*self.features_, "bias"]
        )

    def _contributions(self, X: pd.DataFrame) -> np.ndarray:
        """TreeSHAP contributions, ``(n, features + 1)``; the last column is the bias."""
        # TreeSHAP is additive: the mean of the boosters' contributions explains their mean.
        return np.mean([np.asarray(b.predict(X, num_iteration=n, pred_contrib=True), dtype=float)
                        for b, n in zip(self.boosters_, self.iterations_, strict=True)], axis=0)

    def reasons(self, frame: pd.DataFrame) -> pd.Series:
        """Top drivers pushing risk up, in plain words, joined by ``; ``.

        Empty when no family of features pushes the risk up by more than ``min_contribution``.
        """
        X = self._matrix_checked(frame)
        phrases = self._phrase_rows(X, self._contributions(X)[:, :-1]) if len(X) else []
        return pd.Series(phrases, index=frame.index, dtype=object, name=REASONS)

    def _phrase_rows(self, X: pd.DataFrame, contrib: np.ndarray) -> list[str]:
        members = self.family_members_
        pooled = np.column_stack([contrib[:, m].sum(axis=1) for m in members])
        # Within each family, the feature pushing hardest is the one the phrase is built on.
        lead = np.column_stack([m[np.argmax(contrib[:, m], axis=1)] for m in members])
        k = min(self.top_reasons, pooled.shape[1])
        top = np.argsort(-pooled, axis=1, kind="stable")[:, :k]
        # Numbers stay in their float arrays (boxing every cell of 200k rows as a Python
        # object cost seconds and hundreds of megabytes); only categoricals become objects.
        columns = {
            c: X[c].astype(object).to_numpy()
            if c in self.categories_
            else X[c].to_numpy(dtype=float)
            for c in self.features_
        }
        out = []
        for i in range(len(X)):

            def get(name: str, row: int = i) -> Any:
                values = columns.get(name)
                return float("nan") if values is None else _plain(values[row])

            phrases = [
                phrase_reason(self.features_[lead[i, j]], get)
                for j in top[i]
                if pooled[i, j] > self.min_contribution
            ]
            out.append(REASON_SEPARATOR.join(dict.fromkeys(phrases)))
        return out

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """What MLflow serves: ``churn_probability`` (a probability, not a label), ``reasons``."""
        X = self._matrix_checked(frame)
        if len(X) == 0:
            return _probability_frame(frame, np.zeros(0)).assign(**{REASONS: ""})
        # One TreeSHAP pass serves both: the contributions sum to the raw log-odds.
        contrib = self._contributions(X)
        out = _probability_frame(frame, self.calibrator_.transform(
            self._score(X, contrib.sum(axis=1))))
        out[REASONS] = self._phrase_rows(X, contrib[:, :-1])
        return out

    def feature_importance(self, kind: Literal["gain", "split"] = "gain") -> pd.Series:
        """LightGBM feature importance by total gain (default) or split count."""
        self._check_fitted()
        values = np.sum([b.feature_importance(kind, iteration=n)
                         for b, n in zip(self.boosters_, self.iterations_, strict=True)], axis=0)
        return pd.Series(values, index=self.features_, name=f"importance_{kind}")


def _folds(groups: object, n_folds: int) -> np.ndarray:
    """A fold per row from a stable hash of its group (same group, same fold, every run)."""
    keys = pd.Series(np.asarray(groups)).astype(str)
    hashed = pd.util.hash_pandas_object(keys, index=False).to_numpy()
    return (hashed % np.uint64(max(n_folds, 2))).astype(int)


def inner_slice(periods: object, n: int) -> np.ndarray:
    """Rows of the latest quarter of the distinct periods (at least one); all without them."""
    if periods is None:
        return np.ones(n, dtype=bool)
    values = pd.Series(np.asarray(periods))
    distinct = np.sort(values.dropna().unique())
    if distinct.size == 0:
        return np.ones(n, dtype=bool)
    latest = distinct[-max(1, distinct.size // 4):]
    return values.isin(latest).to_numpy()


def best_on_inner(scores: Sequence[np.ndarray], y: np.ndarray, inner: np.ndarray,
                  metric: Callable[[np.ndarray, np.ndarray], float] = roc_auc_score) -> int:
    """Which of several out-of-sample scores ranks the inner slice best.

    The one rule behind every choice the churn model and its pipeline make on the training
    data (tree setting, blend weight, registered candidate): ``metric`` (ROC-AUC by default)
    of each score on the ``inner`` rows; the first wins a tie, and the first is kept when the
    slice holds a single outcome (nothing to rank).
    """
    if len(scores) == 1 or len(np.unique(y[inner])) < 2:
        return 0
    values = [float(metric(y[inner], np.asarray(score)[inner])) for score in scores]
    return int(np.argmax(values))


def inner_metrics(y: np.ndarray, score: np.ndarray, inner: np.ndarray) -> dict[str, float]:
    """ROC-AUC and PR-AUC of an out-of-sample score on the inner slice (NaN when it holds a
    single outcome)."""
    labels, values = np.asarray(y)[inner], np.asarray(score, dtype=float)[inner]
    if len(np.unique(labels)) < 2:
        return {"roc_auc": float("nan"), "pr_auc": float("nan")}
    return {"roc_auc": float(roc_auc_score(labels, values)),
            "pr_auc": float(average_precision_score(labels, values))}


def _spread(values: np.ndarray) -> float:
    """Standard deviation, 1 when there is none (a constant score)."""
    spread = float(np.std(values))
    return spread if np.isfinite(spread) and spread > 0 else 1.0


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones; a missing value as NaN."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return float("nan")
    return value.item() if isinstance(value, np.generic) else value


# --- baselines -------------------------------------------------------------------------------


class RecencyCycleRule:
    """Risk from how overdue the next order is against the customer's own median gap.

    The score is ``log1p(days since last order / median days between orders)``. Customers with
    a single order day (no gap yet) are measured against the median cycle of the training rows,
    and customers without any purchase get the highest training score. A one-feature logistic
    regression maps the score to a probability; it is increasing, so the ranking is the rule's.

    Args:
        recency: column of days since the last order.
        cycle: column of the customer's median days between orders.
    """

    def __init__(self, recency: str = RECENCY, cycle: str = CYCLE):
        self.recency = recency
        self.cycle = cycle

    def _score(self, frame: pd.DataFrame) -> np.ndarray:
        _require_columns(frame, [self.recency, self.cycle])
        recency = frame[self.recency].to_numpy(dtype=float)
        cycle = frame[self.cycle].to_numpy(dtype=float)
        cycle = np.where(np.isfinite(cycle) & (cycle > 0), cycle, self.default_cycle_)
        score = np.log1p(recency / cycle)
        return np.where(np.isfinite(score), score, self.missing_score_)

    def fit(self, X: pd.DataFrame, y: object) -> RecencyCycleRule:
        """Learn the fallback cycle and the score-to-probability map on training rows."""
        labels = _labels(y)
        _both_classes(labels, "training slice")
        cycle = X[self.cycle].to_numpy(dtype=float)
        known = cycle[np.isfinite(cycle) & (cycle > 0)]
        self.default_cycle_ = float(np.median(known)) if known.size else 30.0
        self.missing_score_ = float("nan")
        score = self._score(X)
        finite = score[np.isfinite(score)]
        # Never bought, or no recency at all: as overdue as the most overdue training row.
        self.missing_score_ = float(finite.max()) if finite.size else 0.0
        self.link_ = LogisticRegression().fit(self._score(X).reshape(-1, 1), labels)
        return self

    def predict_proba_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``churn_probability`` per row."""
        if not hasattr(self, "link_"):
            raise NotFittedError("RecencyCycleRule is not fitted yet")
        score = self._score(frame).reshape(-1, 1)
        p = self.link_.predict_proba(score)[:, 1] if len(frame) else np.zeros(0)
        return _probability_frame(frame, p)

    predict_frame = predict_proba_frame


class RfmLogistic:
    """Logistic regression on recency, frequency and monetary value, log-scaled, standardized.

    Recency is missing for customers who never bought: it is filled with the longest recency of
    the training rows. Monetary value may be negative (returns), hence a signed log.

    Args:
        recency: days since the last order.
        frequency: purchase days in a window.
        monetary: net spend in the same window.
        C: inverse regularization strength.
    """

    def __init__(
        self,
        recency: str = RECENCY,
        frequency: str = FREQUENCY,
        monetary: str = MONETARY,
        C: float = 1.0,
    ):
        self.recency = recency
        self.frequency = frequency
        self.monetary = monetary
        self.C = C

    def _design(self, frame: pd.DataFrame) -> np.ndarray:
        _require_columns(frame, [self.recency, self.frequency, self.monetary])
        recency = frame[self.recency].to_numpy(dtype=float)
        recency = np.where(np.isfinite(recency), recency, self.recency_fill_)
        frequency = np.nan_to_num(frame[self.frequency].to_numpy(dtype=float))
        monetary = np.nan_to_num(frame[self.monetary].to_numpy(dtype=float))
        return np.column_stack(
            [
                np.log1p(np.maximum(recency, 0)),
                np.log1p(frequency),
                np.sign(monetary) * np.log1p(np.abs(monetary)),
            ]
        )

    def fit(self, X: pd.DataFrame, y: object) -> RfmLogistic:
        """Fit scaler and logistic regression on the training rows."""
        labels = _labels(y)
        _both_classes(labels, "training slice")
        recency = X[self.recency].to_numpy(dtype=float)
        finite = recency[np.isfinite(recency)]
        self.recency_fill_ = float(finite.max()) if finite.size else 365.0
        self.pipeline_: Pipeline = make_pipeline(
            StandardScaler(), LogisticRegression(C=self.C, max_iter=1000)
        )
        self.pipeline_.fit(self._design(X), labels)
        return self

    def predict_proba_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``churn_probability`` per row."""
        if not hasattr(self, "pipeline_"):
            raise NotFittedError("RfmLogistic is not fitted yet")
        p = self.pipeline_.predict_proba(self._design(frame))[:, 1] if len(frame) else (np.zeros(0))
        return _probability_frame(frame, p)

    def log_odds(self, frame: pd.DataFrame) -> np.ndarray:
        """The regression's log-odds of churn per row."""
        if not hasattr(self, "pipeline_"):
            raise NotFittedError("RfmLogistic is not fitted yet")
        if not len(frame):
            return np.zeros(0)
        return np.asarray(self.pipeline_.decision_function(self._design(frame)), dtype=float)

    predict_frame = predict_proba_frame


def describe_params(model: ChurnModel) -> Mapping[str, Any]:
    """Parameters and learned choices of a fitted model, for the MLflow run."""
    params: dict[str, Any] = {k: v for k, v in model.get_params().items() if v is not None}
    params.update(
        best_iteration=model.best_iteration_,
        calibration_method=model.calibration_method_,
        n_features=len(model.features_),
        n_train=model.n_train_,
        n_calibration=model.n_calibration_,
        n_boosters=len(model.boosters_),
        rfm_logistic_weight=model.linear_weight_,
        tree_option=", ".join(f"{k}={v}" for k, v in
                              getattr(model, "tree_option_", {}).items()) or "as given",
    )
    return params
