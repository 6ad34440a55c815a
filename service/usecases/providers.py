"""The numbers the warning metrics take from the models (churn scores, the feasibility
simulation), wired to the champions in the MLflow registry for ``quotacast warnings evaluate``.

Imports are late on purpose: evaluations whose rules need no model never load MLflow.
"""

from __future__ import annotations

import pandas as pd

from engine.io import Tables
from features.metrics import ForecastFromAttainment, Providers

__all__ = ["model_providers"]


def model_providers(tracking_uri: str | None = None) -> Providers:
    """The metrics other modules compute, from the champions in the registry (the CLI's
    evaluation; the service uses its served models instead: :mod:`service.usecases.alerts`).

    - churn scores: :func:`service.usecases.churn.score_churn` (without a champion churn model
      its metrics are skipped as unavailable);
    - attainment: :func:`service.usecases.feasibility.run_feasibility`'s frame;
    - period forecast: the same simulation's ``expected`` (:class:`ForecastFromAttainment`),
      computed once per evaluation for both.

    Args:
        tracking_uri: the MLflow registry the champions are loaded from; it is configured when a
            provider is first called, so evaluations whose rules need no model never touch it.
    """

    def configured() -> None:
        if tracking_uri:
            from engine import tracking

            tracking.configure(tracking_uri)

    def churn_scores(tables: Tables, as_of: pd.Timestamp) -> pd.DataFrame:
        from service.usecases.churn import score_churn

        configured()
        return score_churn(tables, as_of=as_of)

    def attainment(tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
        from service.usecases.feasibility import run_feasibility

        configured()
        return run_feasibility(tables, period, as_of).frame

    return Providers(churn_scores=churn_scores, attainment=attainment,
                     period_forecast=ForecastFromAttainment(attainment))
