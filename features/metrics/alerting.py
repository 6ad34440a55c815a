"""The warning metrics as the alerting core reads them.

``engine/alerting`` knows no metric: its callers hand it the catalogue as plain data (to check
rule files) and the metric frames as a function (to evaluate them). Both are built here, once,
from the registry, for the CLI, the service, the benchmarks and the tests alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from engine.alerting.catalogue import MetricCatalogue, MetricSource
from features.metrics.base import SCOPE_LABELS, SCOPES, MetricUnavailable
from features.metrics.context import MetricContext
from features.metrics.registry import METRICS, compute_metric

__all__ = ["METRIC_CATALOGUE", "metric_source"]

METRIC_CATALOGUE = MetricCatalogue(METRICS, SCOPES, SCOPE_LABELS)


def metric_source(context: MetricContext) -> MetricSource:
    """The warning metrics of ``context`` (its tables, providers and cache) for one evaluation."""

    def frame(metric: str, as_of: pd.Timestamp, params: Mapping[str, Any]) -> pd.DataFrame:
        return compute_metric(metric, context, as_of, params)

    return MetricSource(METRIC_CATALOGUE, frame, MetricUnavailable)
