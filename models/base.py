"""What every model kind shares: one :class:`ModelKind` per kind, in one registry.

A kind is what a user trains, promotes and scores by name (``quotacast train churn``,
``quotacast promote win``). Each carries the promotion gate that decides whether a trained
version may serve: the metric compared on the same holdout, its direction, and the simplest
baseline the version must strictly beat. The training pipelines, the CLI and the service read
these from here, so a kind's gate is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pandas as pd

__all__ = ["CHURN", "FORECAST", "MODEL_KINDS", "WIN", "Classifier", "ModelKind"]


@dataclass(frozen=True)
class ModelKind:
    """One model kind and its promotion gate.

    Attributes:
        name: the kind as users type it (``churn``, ``forecast``, ``win``); also the MLflow
            experiment and, prefixed, the registered model's name.
        gate_metric: the holdout metric that decides promotion.
        greater_is_better: the direction of ``gate_metric``.
        baseline: the simplest baseline the version must strictly beat on the same holdout.
        predicts: what it answers, in a few words.
    """

    name: str
    gate_metric: str
    greater_is_better: bool
    baseline: str
    predicts: str


# PR-AUC (average precision) is the churn gate: the product is a riskiest-first list worked from
# the top, and PR-AUC rewards precision where the list is read while ROC-AUC is dominated by the
# easy mass of safe customers. Its dependence on the churn rate does not matter here because
# champion, challenger and baselines are always scored on the same holdout. Its baseline is the
# recency rule, or chance when a random ranking does as well on that holdout.
CHURN = ModelKind("churn", gate_metric="pr_auc", greater_is_better=True,
                  baseline="recency_rule", predicts="which customers stop buying")
# Log loss judges the win probabilities themselves, which is what the simulation consumes.
WIN = ModelKind("win", gate_metric="log_loss", greater_is_better=False,
                baseline="stage_rates", predicts="which open deals close won in the period")
# The backtest MASE of the final (reconciled or combined) forecast.
FORECAST = ModelKind("forecast", gate_metric="mase", greater_is_better=False,
                     baseline="seasonal_naive", predicts="revenue per period and node")

MODEL_KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (CHURN, FORECAST, WIN)}


class Classifier(Protocol):
    """A fitted model of a yes/no outcome: one probability column per input row."""

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The probability (in a column named by the model) of each row of ``frame``."""
        ...
