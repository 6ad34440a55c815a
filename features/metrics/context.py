"""What a metric computes in: the tables, the providers of other modules' numbers, a cache.

Metrics that other modules compute (churn scores, the feasibility simulation, a period
forecast) are reached through :class:`Providers`, plain callables; ``None`` means not wired, and
the metrics that need it are skipped as unavailable. One :class:`MetricContext` serves every
rule of an evaluation, so two rules on one metric compute it once.
"""

from __future__ import annotations

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


@dataclass
class MetricContext:
    """Tables, providers and a cache shared by the metrics of one evaluation."""

    tables: Tables
    providers: Providers = field(default_factory=Providers)
    cache: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key (two rules on one metric compute it once)."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


MetricFn = Callable[[MetricContext, pd.Timestamp, Mapping[str, Any]], pd.DataFrame]
