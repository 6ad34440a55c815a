"""What the alerting core knows of metrics: only what its caller hands in.

The metrics themselves live above ``engine/`` (the warning metrics of ``features``); the alerting
core never imports them. Its callers pass the catalogue as plain data (:class:`MetricCatalogue`:
the metric names with their scopes and params, every scope and its labels) to check rule files,
and the metric frames as a function (:class:`MetricSource`) to evaluate them.

A metric frame has one row per label set: :data:`SCOPE_COLUMN`, the scope's label columns
(``MetricCatalogue.scope_labels``; a node carries its ancestors), :data:`VALUE`,
:data:`EXPLANATION` (the numbers behind the value, in words) and detail columns (numbers the
explanation quotes, available to templates as ``details.NAME``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

__all__ = [
    "EXPLANATION",
    "SCOPE_COLUMN",
    "VALUE",
    "MetricCatalogue",
    "MetricFrame",
    "MetricInfo",
    "MetricSource",
]

SCOPE_COLUMN = "scope"
VALUE = "value"
EXPLANATION = "explanation"


class MetricInfo(Protocol):
    """One catalogue entry, as far as rule files are checked against it."""

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes the metric has rows for."""
        ...

    @property
    def params(self) -> Mapping[str, Any]:
        """The parameters it takes, with their defaults (their types check given values)."""
        ...


@dataclass(frozen=True)
class MetricCatalogue:
    """What a rule can watch.

    Attributes:
        metrics: metric name -> its entry (scopes, params; unit and meaning are not needed here).
        scopes: every scope, in the order the error messages list them.
        scope_labels: scope -> the labels of an alert at that scope, ancestors first (the
            company has none); their number is the scope's depth in the hierarchy.
    """

    metrics: Mapping[str, MetricInfo]
    scopes: tuple[str, ...]
    scope_labels: Mapping[str, tuple[str, ...]]

    def label_columns(self) -> set[str]:
        """Every label column of every scope."""
        return {column for labels in self.scope_labels.values() for column in labels}


MetricFrame = Callable[[str, pd.Timestamp, Mapping[str, Any]], pd.DataFrame]


@dataclass(frozen=True)
class MetricSource:
    """Where one evaluation reads its metric frames.

    Attributes:
        catalogue: what the rules can watch.
        frame: ``(metric, as_of, params) -> frame`` (the module docstring's shape, point in time).
        unavailable: the exception ``frame`` raises for a metric that cannot be computed here
            yet; its message says what is missing, and the rules on that metric are skipped.
    """

    catalogue: MetricCatalogue
    frame: MetricFrame
    unavailable: type[Exception]
