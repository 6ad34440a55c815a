"""What every metric shares: scopes and their labels, the standard frame, words for numbers.

A metric's frame has one row per label set: ``scope`` (company, region, team, rep, customer,
opportunity), the scope's label columns (:data:`SCOPE_LABELS`; a node carries its ancestors so
inhibition by hierarchy and grouping by region work), ``value``, ``explanation`` (the numbers
behind the value, in words) and detail columns (numbers the explanation quotes, available to
templates as ``details.NAME``). :func:`metric_frame` builds it and :func:`stack` joins the
scopes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from engine.alerting.catalogue import EXPLANATION, SCOPE_COLUMN, VALUE
from engine.io import Tables
from engine.periods import period_bounds
from engine.schemas import (
    COMPANY_KEY,
    CUSTOMER_ID,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    OPPORTUNITY_ID,
    PRODUCT,
    REGION,
    REP,
    TEAM,
)
from features.hierarchy import attribute_revenue, rep_hierarchy
from features.metrics.context import MetricContext

__all__ = [
    "LABEL_COLUMNS",
    "NODE_SCOPES",
    "PERIOD_PARAM",
    "SCOPES",
    "SCOPE_LABELS",
    "MetricUnavailable",
    "frame_or_reason",
    "level_key",
    "metric_frame",
    "money",
    "node_labels",
    "pct",
    "require_tables",
    "resolve_period",
    "revenue_events",
    "stack",
]

SCOPES = ("company", LEVEL_REGION, LEVEL_TEAM, LEVEL_REP, "customer", "opportunity", PRODUCT)
NODE_SCOPES = (LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM, LEVEL_REP)
# Labels of an alert at each scope, ancestors first: the hierarchy is company > region > team >
# rep, and a customer (its account manager) or an opportunity (its owner) hangs below a rep.
SCOPE_LABELS: dict[str, tuple[str, ...]] = {
    LEVEL_COMPANY: (),
    LEVEL_REGION: (REGION,),
    LEVEL_TEAM: (REGION, TEAM),
    LEVEL_REP: (REGION, TEAM, REP),
    "customer": (REGION, TEAM, REP, CUSTOMER_ID),
    "opportunity": (REGION, TEAM, REP, OPPORTUNITY_ID),
    # A product stands beside the hierarchy (inventory metrics), directly below the company.
    PRODUCT: (PRODUCT,),
}
LABEL_COLUMNS = (REGION, TEAM, REP, CUSTOMER_ID, OPPORTUNITY_ID, PRODUCT)

# The default period of the metrics that take one: the quarter containing as_of.
PERIOD_PARAM = {"period": "quarter"}


class MetricUnavailable(Exception):
    """A metric that cannot be computed here: ``needs`` says what is missing."""

    def __init__(self, metric: str, needs: str):
        super().__init__(f"metric {metric!r} is not available yet: needs {needs}")
        self.metric = metric
        self.needs = needs



def resolve_period(spec: str, as_of: pd.Timestamp) -> str:
    """``year``/``quarter``/``month`` -> the period containing ``as_of``; else ``spec`` itself."""
    as_of = pd.Timestamp(as_of)
    word = str(spec).strip().lower()
    if word == "year":
        return f"{as_of.year}"
    if word == "quarter":
        return f"{as_of.year}Q{as_of.quarter}"
    if word == "month":
        return f"{as_of.year}-{as_of.month:02d}"
    period_bounds(spec)  # raises a clear ValueError on a bad period
    return str(spec).strip()


def money(value: float) -> str:
    """230000 -> 230k, 1234567 -> 1.23M (explanations are read by people)."""
    if value is None or pd.isna(value):
        return "n/a"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def require_tables(tables: Tables, metric: str, *names: str) -> None:
    missing = [n for n in names if not tables.has(n)]
    if missing:
        raise MetricUnavailable(metric, f"the {', '.join(missing)} table(s) in the data")


def node_labels(tables: Tables, level: str, keys: pd.Series) -> pd.DataFrame:
    """``region, team, rep`` of each node key at ``level`` (ancestors from the org table)."""
    out = pd.DataFrame(index=keys.index, columns=list(SCOPE_LABELS[level]), dtype=object)
    if level == LEVEL_COMPANY:
        return out
    hierarchy = rep_hierarchy(tables)
    out[level] = keys.astype(object)
    if level == LEVEL_TEAM:
        region_of_team = hierarchy.drop_duplicates(TEAM).set_index(TEAM)[REGION]
        out[REGION] = keys.map(region_of_team)
    elif level == LEVEL_REP:
        by_rep = hierarchy.drop_duplicates(REP).set_index(REP)
        out[TEAM] = keys.map(by_rep[TEAM])
        out[REGION] = keys.map(by_rep[REGION])
    return out


def metric_frame(scope: str, labels: pd.DataFrame, value: pd.Series, explanation: pd.Series,
                 details: Mapping[str, pd.Series | Any]) -> pd.DataFrame:
    """The standard metric frame: scope, label columns, value, explanation, details."""
    frame = pd.DataFrame({SCOPE_COLUMN: scope}, index=value.index)
    for column in LABEL_COLUMNS:
        frame[column] = labels[column] if column in labels.columns else np.nan
    frame[VALUE] = value.astype(float)
    frame[EXPLANATION] = explanation.astype(object)
    for name, values in details.items():
        frame[name] = values
    return frame.reset_index(drop=True)


def stack(parts: list[pd.DataFrame]) -> pd.DataFrame:
    columns = [SCOPE_COLUMN, *LABEL_COLUMNS, VALUE, EXPLANATION]
    kept = [p for p in parts if not p.empty]
    if not kept:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.concat(kept, ignore_index=True)


def level_key(frame: pd.DataFrame, level: str) -> pd.Series:
    """The node key of each row at a hierarchy level (``all`` for company)."""
    if level == LEVEL_COMPANY:
        return pd.Series(COMPANY_KEY, index=frame.index, dtype=object)
    return frame[level].astype(object)


def revenue_events(context: MetricContext, as_of: pd.Timestamp) -> pd.DataFrame:
    """Revenue attributed to reps, teams and regions before ``as_of`` (cached)."""
    return context.cached(("revenue", as_of),
                          lambda: attribute_revenue(context.tables, as_of=as_of, columns=[]))



def pct(value: float) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.0%}"



def frame_or_reason(compute: Callable[[], pd.DataFrame], what: str) -> pd.DataFrame | str:
    """A provider's frame, or why it cannot give one on this data (a string, cached as such).

    ``LookupError``: no model trained yet (``tracking.ChampionMissingError``); ``ValueError``:
    the data cannot support it (too little history, no orders yet), the pipelines' own words.
    """
    try:
        return compute()
    except (LookupError, ValueError) as exc:
        return f"{what}: {exc}"
