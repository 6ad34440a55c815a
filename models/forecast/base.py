"""What every forecast candidate shares: the :class:`Forecaster` protocol, the
:class:`CandidateContext` a candidate is built from, and the parallel-job helpers.

A candidate is an object with ``fit(train) -> self`` and ``predict(horizon) -> forecasts``.
:class:`~models.forecast.forecaster.RevenueForecaster` builds each selected candidate once per
``fit`` (from the registry in :mod:`models.forecast.candidates`) and fits the same object at
every backtest origin, oldest first, then on the full history: a candidate may keep what it
learned on older data (ETS keeps its chosen specification), never anything after the panel it
is given.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import numpy as np
import pandas as pd

from models.backtest import Panel

__all__ = [
    "COMBINED",
    "RECONCILED",
    "CandidateContext",
    "Forecaster",
    "cpu_jobs",
    "nanmean",
    "parallel_chunks",
    "recent",
]

# Names of the derived forecasts in `backtest_` and `metrics_`.
COMBINED, RECONCILED = "combination", "reconciled"


class Forecaster(Protocol):
    """One forecast candidate over every series of a panel."""

    def fit(self, train: Panel) -> Self:
        """Learn from ``train`` (the history before a cutoff, or all of it); returns self."""
        ...

    def predict(self, horizon: int) -> np.ndarray:
        """``(n_series, horizon)`` point forecasts after the end of the fitted panel, one row
        per series of that panel, in its order; NaN where the candidate has no forecast."""
        ...


@dataclass(frozen=True)
class CandidateContext:
    """What a candidate's factory may use: fixed for one ``RevenueForecaster.fit``.

    Attributes:
        season: periods per season (7, 52, 12 or 4).
        letter: the frequency letter, D, W, M or Q.
        max_history: longest history (periods) the statistical candidates see.
        seed: random seed.
        n_jobs: parallel jobs (-1: every core).
        ids: ``level`` and ``key`` of every series of the full panel (the panels given to
            ``fit`` hold a subset of them).
        n_fits: fits per series in one ``RevenueForecaster.fit`` (backtest origins + 1).
        budget: the cost an expensive candidate may spend, as a fraction of one fit per series
            (``RevenueForecaster``'s ``prophet_budget``).
        notes: the fit's plain-language notes; a factory says here what it left out.
        shared: state the candidates of one fit share, by name (the statsforecast candidates
            put their common batch here, :class:`~models.forecast.statistical.StatsBatch`).
    """

    season: int
    letter: str
    max_history: int
    seed: int
    n_jobs: int
    ids: pd.DataFrame
    n_fits: int
    budget: float
    notes: list[str]
    shared: dict[str, Any] = field(default_factory=dict)


def recent(values: np.ndarray, max_history: int) -> list[np.ndarray]:
    """Each row's observed values, the last ``max_history`` of them."""
    return [row[~np.isnan(row)][-max_history:] for row in values]


def parallel_chunks(
    fn: Callable[..., list[Any]], items: list[Sequence[Any]], n_jobs: int, *args: Any
) -> list[Any]:
    """``fn(*chunk_columns, *args)`` over ``n_jobs`` contiguous chunks of ``items``, in order.

    ``items`` holds parallel sequences (one per argument of ``fn``), chunked together.
    """
    n = len(items[0])
    jobs = min(cpu_jobs(n_jobs), max(n, 1))
    if jobs <= 1:
        return fn(*items, *args)
    from joblib import Parallel, delayed

    bounds = np.linspace(0, n, jobs + 1).astype(int)
    chunks = [[list(col[a:b]) for col in items] for a, b in itertools.pairwise(bounds)]
    results = Parallel(n_jobs=jobs)(delayed(fn)(*chunk, *args) for chunk in chunks)
    return [r for part in results for r in part]


def cpu_jobs(n_jobs: int) -> int:
    """``n_jobs`` with joblib's convention: -1 means every core."""
    return (os.cpu_count() or 1) if n_jobs < 0 else max(n_jobs, 1)


def nanmean(stack: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmean`` without the warning on all-NaN slices (they stay NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stack, axis=axis)
