"""The validated tables of one data source, as every floor above reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import overload

import pandas as pd

from engine.schemas import (
    AMOUNT,
    CUSTOMER_ID,
    CUSTOMERS,
    DTYPES,
    METRIC,
    METRIC_REVENUE,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    TABLES,
    TARGETS,
    TIER,
    TIER_PLAN,
)

__all__ = ["Tables", "empty_table", "tier_targets"]


@dataclass
class Tables:
    """The validated tables of one data source.

    Attributes:
        frames: table name -> frame, for every table present (and ``customers`` when derived).
        source: where the tables came from (a directory or a SQL URL).
        derived: tables that were not given but derived (``customers`` from the other tables,
            an empty ``orders`` when only opportunities were given).
    """

    frames: dict[str, pd.DataFrame]
    source: str = ""
    derived: frozenset[str] = field(default_factory=frozenset)

    def has(self, name: str) -> bool:
        return name in self.frames

    def get(self, name: str) -> pd.DataFrame | None:
        return self.frames.get(name)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.frames[name]

    @property
    def orders(self) -> pd.DataFrame:
        """The orders; without rows (but with typed columns) when only deals were given."""
        frame = self.frames.get(ORDERS)
        return frame if frame is not None else empty_table(ORDERS)

    @property
    def customers(self) -> pd.DataFrame:
        return self.frames[CUSTOMERS]

    def targets(self, tier: str = TIER_PLAN, metric: str = METRIC_REVENUE
                ) -> pd.DataFrame | None:
        """The targets of one tier and metric (by default the revenue plan, the targets that
        feasibility, recalibration and warnings measure); ``None`` without a targets table."""
        return tier_targets(self.frames.get(TARGETS), tier, metric)


@overload
def tier_targets(targets: pd.DataFrame, tier: str = ..., metric: str = ...) -> pd.DataFrame: ...


@overload
def tier_targets(targets: None, tier: str = ..., metric: str = ...) -> None: ...


@overload
def tier_targets(targets: pd.DataFrame | None, tier: str = ..., metric: str = ...
                 ) -> pd.DataFrame | None: ...


def tier_targets(targets: pd.DataFrame | None, tier: str = TIER_PLAN,
                 metric: str = METRIC_REVENUE) -> pd.DataFrame | None:
    """Rows of ``targets`` of one tier and metric; a row without either column or value is the
    revenue plan (CONTRACTS: ``tier`` defaults to ``plan``, ``metric`` to ``revenue``)."""
    if targets is None:
        return None
    keep = pd.Series(True, index=targets.index)
    for column, wanted, default in ((TIER, tier, TIER_PLAN), (METRIC, metric, METRIC_REVENUE)):
        if column in targets.columns:
            keep &= targets[column].fillna(default) == wanted
        elif wanted != default:
            keep[:] = False
    return targets if keep.all() else targets[keep]


_EMPTY_COLUMNS = {ORDERS: (ORDER_ID, CUSTOMER_ID, ORDER_DATE, AMOUNT, OPPORTUNITY_ID)}


def empty_table(name: str) -> pd.DataFrame:
    """A table without rows, with the parsed dtypes of its required columns.

    ``orders`` also gets ``order_id`` and ``opportunity_id``, so that code joining orders to
    deals needs no special case.
    """
    spec = TABLES[name]
    columns = _EMPTY_COLUMNS.get(name, tuple(spec.required_columns))
    return pd.DataFrame(
        {c: pd.Series(dtype=DTYPES[spec.columns[c].kind]) for c in columns}
    )
