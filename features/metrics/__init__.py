"""The warning metrics: what a warning rule can watch.

A metric is a function ``fn(context, as_of, params) -> DataFrame`` with one entry in the
catalogue (:data:`METRICS`, in :mod:`~features.metrics.registry`). Its frame has one row per
label set: ``scope`` (company, region, team, rep, customer, opportunity), the scope's label
columns (:data:`SCOPE_LABELS`; a node carries its ancestors so inhibition by hierarchy and
grouping by region work), ``value``, ``explanation`` (the numbers behind the value, in words)
and detail columns (numbers the explanation quotes, available to templates as
``details.NAME``).

Metrics that other modules compute are reached through :class:`Providers`; a provider that is
not wired yet raises :class:`MetricUnavailable` naming what is missing, and the engine skips the
rules that use it with a one-line note. :func:`catalogue` lists everything for the README.

Everything is point in time: only rows dated before ``as_of`` are used.

Modules: :mod:`~features.metrics.context` (providers and the evaluation's context),
:mod:`~features.metrics.base` (scopes, the standard frame, shared helpers), one module per
domain (:mod:`~features.metrics.plan`, :mod:`~features.metrics.pipeline`,
:mod:`~features.metrics.customers`, :mod:`~features.metrics.churn`,
:mod:`~features.metrics.targets`) and :mod:`~features.metrics.registry` (the catalogue).
"""

from features.metrics.base import (
    NODE_SCOPES,
    SCOPE_LABELS,
    SCOPES,
    MetricUnavailable,
    resolve_period,
)
from features.metrics.context import (
    ForecastFromAttainment,
    MetricContext,
    Providers,
)
from features.metrics.registry import METRICS, MetricSpec, catalogue, compute_metric

__all__ = [
    "METRICS",
    "NODE_SCOPES",
    "SCOPES",
    "SCOPE_LABELS",
    "ForecastFromAttainment",
    "MetricContext",
    "MetricSpec",
    "MetricUnavailable",
    "Providers",
    "catalogue",
    "compute_metric",
    "resolve_period",
]
