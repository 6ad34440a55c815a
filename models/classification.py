"""Metrics and pictures for probabilistic binary classifiers (churn, win/slip).

Every function takes plain arrays (``y_true`` in {0, 1}, ``p`` the predicted probability of the
positive class), so the same evidence is produced for our model, the baselines and the champion
on one holdout. A metric that is undefined on the data (an AUC on a single class) is NaN rather
than an exception: a holdout segment without churners is a fact to show, not a crash.

Plots use matplotlib's Agg backend (no display, safe in servers and CI) and are written to a
given path, ready to be attached to an MLflow run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

__all__ = [
    "CLASSIFICATION_METRICS",
    "MIN_BIN_CASES",
    "classification_metrics",
    "plot_calibration",
    "plot_feature_importance",
    "reliability_table",
    "segment_auc",
    "top_fraction_lift",
]

CLASSIFICATION_METRICS = (
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
    "top_decile_lift",
    "base_rate",
    "n",
)
# Reliability bins with fewer cases than this are too noisy to judge calibration on.
MIN_BIN_CASES = 30
_EPS = 1e-6


def _arrays(y_true: object, p: object) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int 0/1 and probabilities as float, same length; ValueError otherwise."""
    y = np.asarray(y_true, dtype=float)
    q = np.asarray(p, dtype=float)
    if y.shape != q.shape or y.ndim != 1:
        raise ValueError(f"labels and probabilities differ in shape: {y.shape} vs {q.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(q).any():
        raise ValueError("probabilities contain NaN")
    return y.astype(int), q


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < len(y)


def top_fraction_lift(y_true: object, p: object, fraction: float = 0.1) -> float:
    """Positive rate among the ``fraction`` highest scores divided by the overall rate.

    Ties at the cut are broken by position (stable sort), so a constant score gets a lift of
    about 1, not an arbitrary value.
    """
    y, q = _arrays(y_true, p)
    if len(y) == 0 or y.sum() == 0:
        return float("nan")
    k = max(1, int(np.ceil(fraction * len(y))))
    top = np.argsort(-q, kind="stable")[:k]
    return float(y[top].mean() / y.mean())


def classification_metrics(y_true: object, p: object) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), Brier, log loss, top-decile lift, base rate, n."""
    y, q = _arrays(y_true, p)
    ranked = _both_classes(y)
    clipped = np.clip(q, _EPS, 1 - _EPS)
    return {
        "roc_auc": float(roc_auc_score(y, q)) if ranked else float("nan"),
        "pr_auc": float(average_precision_score(y, q)) if ranked else float("nan"),
        "brier": float(brier_score_loss(y, q)) if len(y) else float("nan"),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])) if len(y) else float("nan"),
        "top_decile_lift": top_fraction_lift(y, q, 0.1),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
        "n": float(len(y)),
    }


def segment_auc(y_true: object, p: object, segments: object) -> pd.DataFrame:
    """ROC-AUC within each segment: ``segment``, ``n``, ``positives``, ``roc_auc``.

    The AUC is NaN for a segment with a single class; missing segment values are grouped as
    ``(none)``.
    """
    y, q = _arrays(y_true, p)
    seg = pd.Series(np.asarray(segments, dtype=object)).fillna("(none)").astype(str).to_numpy()
    rows = []
    for name in sorted(set(seg)):
        mask = seg == name
        ys, qs = y[mask], q[mask]
        auc = float(roc_auc_score(ys, qs)) if _both_classes(ys) else float("nan")
        rows.append(
            {"segment": name, "n": int(mask.sum()), "positives": int(ys.sum()), "roc_auc": auc}
        )
    return pd.DataFrame(rows, columns=["segment", "n", "positives", "roc_auc"])


def reliability_table(y_true: object, p: object, bins: int = 10) -> pd.DataFrame:
    """Predicted against observed rate per bin of equal count (deciles by default).

    Equal-count bins keep every row of the table backed by the same number of cases, where
    equal-width bins would leave the high-probability bins nearly empty on an imbalanced target.

    Returns:
        ``bin``, ``n``, ``p_low``, ``p_high``, ``mean_predicted``, ``observed_rate``, ``gap``
        (observed minus predicted).
    """
    y, q = _arrays(y_true, p)
    columns = ["bin", "n", "p_low", "p_high", "mean_predicted", "observed_rate", "gap"]
    if len(y) == 0:
        return pd.DataFrame(columns=columns)
    order = np.argsort(q, kind="stable")
    rows = []
    for i, idx in enumerate(np.array_split(order, min(bins, len(y)))):
        mean_p, rate = float(q[idx].mean()), float(y[idx].mean())
        rows.append(
            {
                "bin": i + 1,
                "n": len(idx),
                "p_low": float(q[idx].min()),
                "p_high": float(q[idx].max()),
                "mean_predicted": mean_p,
                "observed_rate": rate,
                "gap": rate - mean_p,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def plot_calibration(table: pd.DataFrame | Mapping[str, pd.DataFrame], path: Path,
                     title: str = "Calibration", xlabel: str = "mean predicted probability",
                     ylabel: str = "observed rate") -> Path:
    """Reliability diagram(s) from :func:`reliability_table`, saved as a PNG at ``path``.

    ``table`` is one reliability table (drawn as "model") or several keyed by their label.
    """
    curves = {"model": table} if isinstance(table, pd.DataFrame) else dict(table)
    fig, ax = plt.subplots(figsize=(5, 5))
    try:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
        for label, curve in curves.items():
            ax.plot(curve["mean_predicted"], curve["observed_rate"], marker="o", label=label)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=xlabel, ylabel=ylabel, title=title)
        ax.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def plot_feature_importance(
    importance: pd.Series, path: Path, top: int = 20, title: str = "Feature importance (gain)"
) -> Path:
    """Horizontal bars of the ``top`` largest importances, saved as a PNG at ``path``."""
    shown = importance.sort_values(ascending=False).head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(shown) + 1)))
    try:
        ax.barh([str(i) for i in shown.index], shown.to_numpy(dtype=float))
        ax.set(xlabel="importance", title=title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
