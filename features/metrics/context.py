"""What a metric computes in: the tables, the providers of other modules' numbers, a cache.

Metrics that other modules compute (churn scores, the feasibility simulation, a period
forecast) are reached through :class:`Providers`, plain callables; ``None`` means not wired, and
the metrics that need it are skipped as unavailable. One :class:`MetricContext` serves every
rule of an evaluation, so two rules on one metric compute it once.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from engine.io import Tables
from engine.schemas import KEY, LEVEL

__all__ = [
    "ChurnScores",
    "ForecastFromAttainment",
    "MetricContext",
    "MetricFn",
    "PeriodFrame",
    "Providers",
    "default_providers",
]

ChurnScores = Callable[[Tables, pd.Timestamp], pd.DataFrame]
PeriodFrame = Callable[[Tables, str, pd.Timestamp], pd.DataFrame]


@dataclass(frozen=True)
class ForecastFromAttainment:
    """A ``period_forecast`` provider that reads ``expected`` off an attainment provider.

    The feasibility simulation's ``expected`` is closed to date plus the mean of the simulated
    rest of the period (open deals won in the period, run rate, churn), which is the period
    forecast the ``forecast_gap`` metric wants. Inside an evaluation, metrics recognise this
    provider and reuse the attainment frame the context already holds for the same (period,
    as_of): the simulation runs once for ``attainment_probability``, ``forecast_gap`` and
    ``pipeline_gap_coverage`` together.
    """

    attainment: PeriodFrame

    def __call__(self, tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
        frame = self.attainment(tables, period, as_of)
        return frame[[LEVEL, KEY, "expected"]]


@dataclass
class Providers:
    """What other modules contribute, as plain callables (None = not wired yet).

    Attributes:
        churn_scores: ``(tables, as_of) -> customer_id, churn_probability, revenue_at_risk``
            (the ``score churn`` output of the data contract (README); ``expected_revenue``,
            when present, enables ``churn_exposure_share``).
        attainment: ``(tables, period, as_of) -> level, key, target, p_attain, expected`` (the
            ``feasibility`` output of the data contract (README); its extra columns
            ``closed_to_date``, ``expected_run_rate`` and ``pipeline_in_period`` enable
            ``pipeline_gap_coverage``).
        period_forecast: ``(tables, period, as_of) -> level, key, expected``: the period's
            expected revenue, closed to date plus the forecast of the rest of the period.
    """

    churn_scores: ChurnScores | None = None
    attainment: PeriodFrame | None = None
    period_forecast: PeriodFrame | None = None


def _lazy(module: str, name: str) -> Callable[..., Any] | None:
    """A callable that imports ``module.name`` when first called, or None when the module is
    not there (another engineer may still be writing it). Importing late keeps heavy
    dependencies (MLflow) out of evaluations whose rules do not need them."""
    if importlib.util.find_spec(module) is None:
        return None

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


def default_providers(tracking_uri: str | None = None) -> Providers:
    """The providers that exist in this installation, each found when its module exists:

    - churn scores: ``service.usecases.churn.score_churn(tables, as_of=...)`` (without a
      champion churn model its metrics are skipped as unavailable);
    - attainment: ``service.usecases.feasibility.run_feasibility(tables, period, as_of).frame``;
    - period forecast: the same simulation's ``expected`` (:class:`ForecastFromAttainment`),
      computed once per evaluation for both.

    Args:
        tracking_uri: the MLflow registry the champions are loaded from
            (``QUOTACAST_MLFLOW_TRACKING_URI``); it is configured when a provider is first
            called, so evaluations whose rules need no model never import MLflow.
    """
    configure = _lazy("engine.tracking", "configure") if tracking_uri else None

    def configured(call: Callable[..., Any] | None) -> Callable[..., Any] | None:
        """``call`` with the registry configured first (None stays None)."""
        if call is None:
            return None

        def run(*args: Any, **kwargs: Any) -> Any:
            if configure is not None:
                configure(tracking_uri)
            return call(*args, **kwargs)

        return run

    score_churn = configured(_lazy("service.usecases.churn", "score_churn"))
    run_feasibility = configured(_lazy("service.usecases.feasibility", "run_feasibility"))
    churn = None if score_churn is None else (lambda t, as_of: score_churn(t, as_of=as_of))
    attainment = None if run_feasibility is None else (
        lambda t, period, as_of: run_feasibility(t, period, as_of).frame)
    forecast = None if attainment is None else ForecastFromAttainment(attainment)
    return Providers(churn_scores=churn, attainment=attainment, period_forecast=forecast)



@dataclass
class MetricContext:
    """Tables, providers and a cache shared by the metrics of one evaluation."""

    tables: Tables
    providers: Providers = field(default_factory=default_providers)
    cache: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key (two rules on one metric compute it once)."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


MetricFn = Callable[[MetricContext, pd.Timestamp, Mapping[str, Any]], pd.DataFrame]
