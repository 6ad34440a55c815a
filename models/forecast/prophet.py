"""The ``prophet`` candidate, fitted in parallel on the levels its budget allows.

Prophet is fitted only on levels whose series are few enough that its backtests stay within
the budget (``RevenueForecaster``'s ``prophet_budget``) of one Prophet fit per series (so
adding it can never make ``fit`` slower than fitting Prophet alone on every series). In a
sales hierarchy that means the company and other upper levels, whose smooth aggregate series
suit it best; its weight is then earned in the backtest like every other candidate's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.schemas import KEY, LEVEL
from models.backtest import Panel
from models.forecast.base import CandidateContext, parallel_chunks

__all__ = ["ProphetForecaster", "prophet_forecast", "prophet_rows"]


def _quiet_prophet() -> None:
    """No third-party chatter: Prophet's "Importing plotly failed" (logged as an error when it
    is imported: we never plot with plotly) and cmdstanpy's INFO line per fit (cmdstanpy adds
    its own INFO handler unless its logger already has one: it gets a silent one first)."""
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    stan = logging.getLogger("cmdstanpy")
    if not any(isinstance(h, logging.NullHandler) for h in stan.handlers):
        stan.addHandler(logging.NullHandler())
    stan.setLevel(logging.WARNING)


def _prophet_chunk(
    frames: list[tuple[np.ndarray, np.ndarray]], future: pd.DatetimeIndex, daily: bool
) -> list[np.ndarray]:
    """Prophet forecasts for a chunk of series (dates, values)."""
    _quiet_prophet()
    from prophet import Prophet

    out = []
    for ds, y in frames:
        # Yearly seasonality is left to Prophet's own rule (on with two years of data); weekly
        # only makes sense for daily data; no intervals (we calibrate our own, and skipping
        # Prophet's simulation halves its predict time).
        model = Prophet(weekly_seasonality=daily, daily_seasonality=False, uncertainty_samples=0)
        try:
            # Prophet's default 10,000 optimiser iterations can take 20 s on a noise-free
            # series; real fits converge in far fewer, so the cap only bounds the bad case.
            model.fit(pd.DataFrame({"ds": ds, "y": y}), iter=1000)
            out.append(model.predict(pd.DataFrame({"ds": future}))["yhat"].to_numpy(float))
        except (ValueError, RuntimeError):
            out.append(np.full(len(future), np.nan))
    return out


def prophet_forecast(
    train: Panel, horizon: int, rows: np.ndarray, daily: bool, n_jobs: int
) -> np.ndarray:
    """Prophet on the series selected by ``rows``; NaN elsewhere."""
    result = np.full((train.n_series, horizon), np.nan)
    positions = np.flatnonzero(rows)
    if positions.size == 0:
        return result
    dates = np.asarray(train.dates)
    frames = []
    for i in positions:
        observed = ~np.isnan(train.values[i])
        frames.append((dates[observed], train.values[i, observed]))
    future = train.future_dates(horizon)
    forecasts = parallel_chunks(_prophet_chunk, [frames], n_jobs, future, daily)
    result[positions] = np.array(forecasts)
    return result


def prophet_rows(ids: pd.DataFrame, n_fits: int, budget: float, notes: list[str]) -> np.ndarray:
    """Series Prophet is fitted on: whole levels, smallest first, within the budget.

    Args:
        ids: ``level`` and ``key`` of every series.
        n_fits: fits per series (backtest origins + the final fit).
        budget: Prophet's cost allowed, as a fraction of one Prophet fit per series.
        notes: where the skipped levels are said.
    """
    n_series = len(ids)
    rows = np.zeros(n_series, dtype=bool)
    allowed = budget * n_series
    sizes = ids[LEVEL].value_counts(sort=False).sort_values(kind="stable")
    spent = 0
    for level, size in sizes.items():
        cost = int(size) * n_fits
        if spent + cost > allowed:
            notes.append(
                f"prophet skipped at level {level}: {cost} fits would exceed its budget "
                f"({budget:g} x {n_series} series)"
            )
            continue
        spent += cost
        rows |= (ids[LEVEL] == level).to_numpy()
    return rows


@dataclass
class ProphetForecaster:
    """``prophet``: Prophet on the series of ``keys`` (level, key); NaN on the others."""

    keys: frozenset[tuple[str, str]]
    daily: bool
    n_jobs: int

    @classmethod
    def build(cls, context: CandidateContext) -> ProphetForecaster | None:
        """Prophet on the levels the budget allows; None (not run) when it allows none."""
        ids = context.ids
        rows = prophet_rows(ids, context.n_fits, context.budget, context.notes)
        keys = frozenset(zip(ids.loc[rows, LEVEL], ids.loc[rows, KEY], strict=True))
        return cls(keys, context.letter == "D", context.n_jobs) if keys else None

    def fit(self, train: Panel) -> ProphetForecaster:
        self.train_ = train
        return self

    def predict(self, horizon: int) -> np.ndarray:
        train = self.train_
        rows = np.array(
            [k in self.keys for k in zip(train.ids[LEVEL], train.ids[KEY], strict=True)]
        )
        return prophet_forecast(train, horizon, rows, self.daily, self.n_jobs)
