"""The per-series candidates of one ``RevenueForecaster.fit``, on any part of the panel.

The candidates marked ``per_series`` in the registry (seasonal naive, ETS, Theta, AutoARIMA,
AutoETS) forecast each series from that series alone, so their backtest and final forecasts
can be computed on groups of series anywhere (:class:`LocalJob`, :func:`run_local`) and put
back together: a group's rows are exactly those of the whole panel. What is shared between
series is decided once on the whole panel and travels with the job: which candidates run (the
factories' budgets look at every series), the backtest cutoffs, and the season pooled over the
panel's series for the short ones (:class:`~models.forecast.season.SeasonPool`). A
:data:`LocalRunner` says where the groups run; the default runs the whole panel here. The
cross-series steps (LightGBM's global model, Prophet's budgeted levels, the combination,
reconciliation and conformal intervals) stay with ``RevenueForecaster`` on the driver.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.compute import DEFAULT_BUCKETS, bucket_of
from engine.schemas import KEY, LEVEL
from models.backtest import Panel
from models.forecast.base import Forecaster
from models.forecast.season import Deseasonalised, SeasonPool, season_pool

__all__ = ["LocalJob", "LocalRunner", "local_job", "run_here", "run_local", "series_ids"]


@dataclass(frozen=True)
class LocalJob:
    """The per-series candidates' work of one fit, the same for every group of series.

    Attributes:
        forecasters: name -> a fresh candidate built for the whole panel, in registry order
            (each group fits its own copy).
        deseasonalise: name -> seasons the candidate needs to find seasonality itself (0: not
            seasonal).
        cutoffs: grid positions to forecast from: the backtest cutoffs, oldest first, then the
            end of the panel (the final fit).
        horizon: periods forecast from each cutoff.
        min_history: observations a series needs at a cutoff to be forecast there.
        season: periods per season.
        pools: ``(cutoff, seasons needed)`` -> the whole panel's season pool at that cutoff.
    """

    forecasters: dict[str, Forecaster]
    deseasonalise: dict[str, int]
    cutoffs: tuple[int, ...]
    horizon: int
    min_history: int
    season: int
    pools: dict[tuple[int, int], SeasonPool]


# Where a job runs: (job, panel) -> per cutoff of ``job.cutoffs``, name -> (n_series, horizon)
# forecasts of every series of ``panel`` (NaN for series not eligible at that cutoff).
LocalRunner = Callable[[LocalJob, Panel], list[dict[str, np.ndarray]]]


def local_job(forecasters: dict[str, Forecaster], deseasonalise: dict[str, int], panel: Panel,
              cutoffs: list[int], horizon: int, min_history: int, season: int) -> LocalJob:
    """The job of ``forecasters`` on ``panel``: the season pools computed on the whole panel
    (at every cutoff, on the series eligible there, as the backtest hands them over)."""
    ends = (*cutoffs, panel.values.shape[1])
    pools: dict[tuple[int, int], SeasonPool] = {}
    needs = sorted({n for name, n in deseasonalise.items() if n and name in forecasters})
    for cutoff in ends:
        if cutoff < season:
            continue
        train = panel.head(cutoff)
        values = train.values[train.n_obs >= min_history]
        for needed in needs:
            pools[(cutoff, needed)] = season_pool(values, season, needed)
    return LocalJob(dict(forecasters), dict(deseasonalise), ends, horizon, min_history, season,
                    pools)


def run_local(job: LocalJob, panel: Panel) -> list[dict[str, np.ndarray]]:
    """The job on the series of ``panel`` (the whole panel or a group of its series, on the
    whole panel's date grid), cutoffs oldest first so that ETS chooses its specification on
    the oldest data, as in the backtest."""
    forecasters = copy.deepcopy(job.forecasters)
    out = []
    for cutoff in job.cutoffs:
        train = panel.head(cutoff)
        eligible = train.n_obs >= job.min_history
        preds: dict[str, np.ndarray] = {}
        if eligible.any():
            part = train.subset(eligible)
            seasoned = part.values.shape[1] >= job.season
            for name, forecaster in forecasters.items():
                needed = job.deseasonalise.get(name, 0)
                model: Forecaster = forecaster
                if seasoned and needed:
                    model = Deseasonalised(forecaster, job.season, needed,
                                           job.pools.get((cutoff, needed)))
                full = np.full((panel.n_series, job.horizon), np.nan)
                full[eligible] = model.fit(part).predict(job.horizon)
                preds[name] = full
        out.append(preds)
    return out


def series_ids(ids: pd.DataFrame) -> np.ndarray:
    """The id of each series, ``level/key``: what its group is computed from."""
    return (ids[LEVEL].astype(str) + "/" + ids[KEY].astype(str)).to_numpy(dtype=object)


def run_here(job: LocalJob, panel: Panel, buckets: int = DEFAULT_BUCKETS
             ) -> list[dict[str, np.ndarray]]:
    """The default runner: in this process, on the groups a compute engine uses (the CRC-32
    bucket of each series id, series sorted by id within a group).

    Grouping here too is what makes the engines agree to the last bit: statsforecast's
    batched forecasts of a series depend (in the last bits) on where the series sits in its
    batch's memory, so every engine must batch the same series together in the same order.
    """
    sids = series_ids(panel.ids)
    groups = bucket_of(pd.Series(sids), buckets)
    out: list[dict[str, np.ndarray]] = [{} for _ in job.cutoffs]
    for bucket in sorted(set(groups.tolist())):
        rows = np.flatnonzero(groups == bucket)
        rows = rows[np.argsort(sids[rows], kind="stable")]
        for window, preds in enumerate(run_local(job, panel.subset(rows))):
            for name, values in preds.items():
                full = out[window].setdefault(name, np.full((panel.n_series, job.horizon),
                                                            np.nan))
                full[rows] = values
    return [{n: w[n] for n in job.forecasters if n in w} for w in out]
