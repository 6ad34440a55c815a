"""Revenue forecast wiring: series -> backtested forecaster -> MLflow (wiring only).

``train_forecast`` builds the revenue series of the requested levels as of ``as_of`` (default
the day after the last dated row), fits :class:`models.forecast.RevenueForecaster` (which
backtests every candidate on rolling origins), logs the backtest table, the metrics per model
and level and fan charts of the top nodes, and registers the fitted forecaster as
``challenger`` of its own registered model: one per frequency and level set
(:func:`forecast_kind`: ``forecast`` for monthly company/hierarchy forecasts,
``forecast-W-company``, ``forecast-M-product``... otherwise), so a weekly or a product
forecaster is trained beside the monthly champion, never instead of it.

The promotion gate compares the final (reconciled or combined) forecast's backtest MASE; the
champion is re-scored on the same backtest windows by re-fitting its parameters on the same
series, unless it was trained on exactly this holdout already. The seasonal naive's MASE on the
same windows is recorded as the baseline: a forecaster that does not beat it is never promoted.

The end of the data (:func:`features.revenue.data_end_of`): a trailing period that the data
covers only in part is left out of training and forecast as a whole period, never below the
revenue already booked in it; a period complete in the data is never forecast again.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from engine import tracking
from engine.io import Tables
from engine.periods import PERIOD_NAMES, first_day
from engine.schemas import (
    DS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    ORG,
    REGION,
    REP,
    TEAM,
    Y,
)
from features.hierarchy import rep_hierarchy
from features.revenue import PARTIAL, DataEnd, revenue_series
from features.revenue_nodes import revenue_node_tables
from models.backtest import season_length
from models.base import FORECAST
from models.forecast import COMBINED, RECONCILED, RevenueForecaster, sane_intervals
from models.forecast.local import LocalRunner
from models.metrics import YHAT, YHAT_P10, YHAT_P50, YHAT_P90
from service.usecases.train import (
    Progress,
    Scored,
    beats_baseline,
    champion_value,
    register,
    say,
    training_as_of,
)

__all__ = [
    "FORECAST_COLUMNS",
    "ForecastTraining",
    "ServedForecaster",
    "forecast_champion",
    "forecast_fresh",
    "forecast_kind",
    "forecast_levels",
    "train_forecast",
]

FORECAST_COLUMNS = (LEVEL, KEY, DS, "yhat", "yhat_p10", "yhat_p50", "yhat_p90")
HIERARCHY = (LEVEL_REGION, LEVEL_TEAM, LEVEL_REP)
HORIZONS = {"D": 28, "W": 13, "M": 6, "Q": 4}


class ServedForecaster:
    """What the registry serves: a fitted forecaster answering ``predict_frame``.

    The pyfunc input is a frame with a ``horizon`` column (first row used) and optionally a
    ``level`` column restricting the output to those levels.
    """

    def __init__(self, forecaster: RevenueForecaster, freq: str, levels: Sequence[str]):
        self.forecaster = forecaster
        self.freq = freq
        self.levels = list(levels)

    def first_period(self) -> pd.Timestamp:
        """The first period it forecasts (the one after its training history)."""
        return pd.Timestamp(self.forecaster.forecast_[DS].min())

    def cannot_answer(self, freq: str | None, level: str, horizon: int | None) -> str | None:
        """Why this forecaster cannot give ``level`` at ``freq`` ``horizon`` periods ahead, in
        plain words (callers add what to do about it); None when it can."""
        if freq is not None and freq != self.freq:
            return f"the champion forecasts at freq {self.freq}, not {freq}"
        if level not in self.levels:
            return f"the champion has no level {level!r} (it has {', '.join(self.levels)})"
        longest = int(self.forecaster.horizon)
        if horizon is not None and not 1 <= horizon <= longest:
            return f"the champion forecasts 1 to {longest} periods ahead, not {horizon}"
        return None

    def predict(self, horizon: int | None = None, level: str | None = None) -> pd.DataFrame:
        frame = self.forecaster.predict(horizon)
        if level is not None:
            frame = frame[frame[LEVEL] == level].reset_index(drop=True)
        return frame

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        horizon = int(frame["horizon"].iloc[0]) if "horizon" in frame.columns else None
        out = self.predict(horizon)
        if "level" in frame.columns:
            out = out[out[LEVEL].isin(set(frame["level"].dropna()))]
        out = out.reset_index(drop=True)
        out[DS] = out[DS].dt.strftime("%Y-%m-%d")
        return out


@dataclass
class ForecastTraining:
    """What :func:`train_forecast` produced."""

    run_id: str
    version: str
    model_name: str
    metrics: dict[str, float]
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    served: ServedForecaster | None = None


def forecast_levels(tables: Tables, level: str | None) -> list[str]:
    """The levels to forecast: company, plus the org hierarchy or one other level."""
    if level is None or level == LEVEL_COMPANY:
        if tables.has(ORG) or level == LEVEL_COMPANY:
            return [LEVEL_COMPANY, *HIERARCHY] if tables.has(ORG) else [LEVEL_COMPANY]
        return [LEVEL_COMPANY]
    if level in HIERARCHY and tables.has(ORG):
        return [LEVEL_COMPANY, *HIERARCHY]
    # Without an org chart a region (say) is just the customers' region column.
    return [LEVEL_COMPANY, level]


def forecast_kind(freq: str, level: str | None) -> str:
    """The registered model kind of forecasters at ``freq`` for ``level``: one champion each.

    Company and hierarchy levels share one forecaster per frequency (they are reconciled
    together); another column (``product``...) has its own. Monthly company forecasts keep the
    plain ``forecast`` name the README, the demo and the service use.
    """
    group = LEVEL_COMPANY if level is None or level in (LEVEL_COMPANY, *HIERARCHY) else level
    kind = FORECAST.name
    return kind if (freq, group) == ("M", LEVEL_COMPANY) else f"{kind}-{freq}-{group}"


def _hierarchy(tables: Tables, levels: Sequence[str]) -> pd.DataFrame | None:
    """One row per rep (sorted: the same tree whatever order ``org`` was read in)."""
    if not set(HIERARCHY) <= set(levels):
        return None
    frame = rep_hierarchy(tables)[[REP, TEAM, REGION]]
    frame = frame.sort_values(REP, kind="mergesort", ignore_index=True)
    return frame if len(frame) else None


@dataclass(frozen=True)
class _Series:
    """Complete periods to learn from, the trailing partial period (revenue so far) and the
    end of the data."""

    complete: pd.DataFrame
    partial: pd.DataFrame
    end: DataEnd
    notes: list[str]


def _series(tables: Tables, freq: str, levels: Sequence[str], as_of: pd.Timestamp | str | None
            ) -> _Series:
    """The revenue series as of ``as_of`` (default the day after the last dated row).

    Raises:
        ValueError: no revenue before ``as_of``, or ``freq`` finer than the data's own period.
    """
    when = training_as_of(tables, as_of)
    # revenue summed per node and day first, so every engine and every read order gives the
    # same series to the last bit (forecasts react to the last bit: AutoETS's and AutoARIMA's
    # choices and optimisers)
    series = revenue_series(revenue_node_tables(tables, levels, when), freq,
                            levels=list(levels), as_of=when)
    if series.empty:
        raise ValueError(f"no revenue dated before {when.date()}: nothing to forecast from")
    end: DataEnd = series.attrs["data_end"]
    flagged = series[PARTIAL].astype(bool)
    complete, partial = series[~flagged], series[flagged]
    complete, lead_note = _without_short_first_period(complete, end, freq,
                                                      first_day(tables))
    if complete.empty:
        name = PERIOD_NAMES[freq]
        raise ValueError(
            f"no complete {name} before {end.observed_until.date()} yet (the data covers "
            f"{end.covered:.0%} of the first one): forecast at a finer --freq")
    notes = _end_notes(complete, partial, end, freq) + lead_note
    return _Series(complete.reset_index(drop=True), partial.reset_index(drop=True), end, notes)


def _without_short_first_period(complete: pd.DataFrame, end: DataEnd, freq: str,
                                start: pd.Timestamp | None) -> tuple[pd.DataFrame, list[str]]:
    """The complete periods without a first one the data covers only in part (it would read as
    a slump), when at least three periods remain. Data that starts before the first period
    with revenue (deals created earlier) covers that period. When leaving it out would lose
    the only full season (12 months that start on the 3rd), it is kept and its revenue scaled
    up to the whole period instead."""
    first = complete[DS].min()
    if start is not None and start <= first:
        return complete, []
    n_periods = complete[DS].nunique()
    if end.first_covered >= 1.0 or n_periods < 4:
        return complete, []
    name = PERIOD_NAMES[freq]
    season = season_length(freq)
    if (n_periods - 1) // season < n_periods // season and end.first_covered > 0:
        note = (f"the first {name}, {first.date()}, is covered only {end.first_covered:.0%} by "
                f"the data: its revenue is scaled up to a whole {name} (leaving it out would "
                "lose the only full season)")
        scaled = complete[Y].where(complete[DS] != first, complete[Y] / end.first_covered)
        return complete.assign(**{Y: scaled}), [note]
    note = (f"the first {name}, {first.date()}, is covered only "
            f"{end.first_covered:.0%} by the data: left out of training")
    return complete[complete[DS] > first], [note]


def _end_notes(complete: pd.DataFrame, partial: pd.DataFrame, end: DataEnd, freq: str
               ) -> list[str]:
    """What the summary says about the end of the data."""
    name = PERIOD_NAMES[freq]
    notes = []
    if end.granularity != "D":
        notes.append(f"the data holds one row per {PERIOD_NAMES[end.granularity]}: each row "
                     f"counts for its whole {PERIOD_NAMES[end.granularity]}, whatever day it "
                     "is dated on")
    if not end.partial:
        notes.append(f"data complete through the {name} of {end.last_start(freq).date()}: "
                     f"forecasts start with the next {name}")
        return notes
    company = complete[complete[LEVEL] == LEVEL_COMPANY].sort_values(DS)[Y]
    so_far = float(partial.loc[partial[LEVEL] == LEVEL_COMPANY, Y].sum())
    usual = float(company.tail(3).mean()) if len(company) else math.nan
    pace = (f"; its revenue so far, {so_far:,.0f}, is {so_far / usual:.0%} of an average of the "
            f"{min(len(company), 3)} {name}s before it" if usual > 0 else "")
    notes.append(
        f"the last {name}, {end.last_start(freq).date()}, is incomplete: the data covers "
        f"{end.covered:.0%} of its days{pace}. It is left out of training and forecast as a "
        f"whole {name}, never below the revenue already booked in it")
    return notes
def _fit(series: pd.DataFrame, hierarchy: pd.DataFrame | None, params: dict[str, Any],
         progress: Progress | None, runner: LocalRunner | None = None) -> RevenueForecaster:
    def counted(done: int, total: int) -> None:
        say(progress, f"{done}/{total}")

    return RevenueForecaster(**params).fit(series, hierarchy,
                                           progress=None if progress is None else counted,
                                           runner=runner)


def _final_model(metrics: pd.DataFrame) -> str:
    return RECONCILED if (metrics["model"] == RECONCILED).any() else COMBINED


def _summary(metrics: pd.DataFrame) -> dict[str, float]:
    """Flat metrics for MLflow: ``<model>_<level>_<metric>`` plus the final model's averages
    (and the baseline's mase averaged the same way, as ``baseline_mase``)."""
    flat: dict[str, float] = {}
    for row in metrics.itertuples(index=False):
        for name in ("mase", "wape", "smape", "pinball", "coverage_80"):
            value = getattr(row, name)
            if pd.notna(value):
                flat[f"{row.model}_{row.level}_{name}"] = float(value)
    final = metrics[metrics["model"] == _final_model(metrics)]
    for name in ("mase", "wape", "coverage_80"):
        flat[name] = float(final[name].mean())
    baseline = metrics[metrics["model"] == FORECAST.baseline]
    if len(baseline) and baseline["mase"].notna().any():
        flat[f"baseline_{FORECAST.gate_metric}"] = float(baseline["mase"].mean())
    return flat


def _holdout(series: pd.DataFrame, params: dict[str, Any]) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(pd.util.hash_pandas_object(series[[LEVEL, KEY, DS, Y]],
                                             index=False).to_numpy().tobytes())
    window = f"{params['freq']}/h{params['horizon']}/w{params['n_windows']}"
    return f"{window}/{digest.hexdigest()[:12]}"


def _champion_score(series: pd.DataFrame, hierarchy: pd.DataFrame | None, holdout: str,
                    params: dict[str, Any], runner: LocalRunner | None = None
                    ) -> Callable[[tracking.LoadedModel], Scored]:
    """How :func:`service.usecases.train.champion_value` scores a forecast champion: its own
    backtest when it was trained on exactly this holdout, else its choices re-backtested on
    the same series and windows."""
    gate = FORECAST.gate_metric

    def score(champion: tracking.LoadedModel) -> Scored:
        if champion.holdout == holdout and gate in champion.metrics:
            value = champion.metrics[gate]
            return value, (f" was backtested on these same windows and data: {gate} "
                           f"{value:.3f}")
        served: ServedForecaster = champion.estimator
        theirs = {k: v for k, v in vars(served.forecaster).items() if not k.endswith("_")}
        if theirs.get("freq") != params["freq"]:
            return None, (f" forecasts at freq {theirs.get('freq')}, not {params['freq']}: "
                          "not compared")
        # The champion's own choices, on today's windows (same horizon and windows as ours).
        theirs |= {k: params[k] for k in ("horizon", "n_windows", "n_jobs")}
        try:
            refit = _fit(series, hierarchy, theirs, None, runner)
        except ValueError as exc:
            return None, f" could not be re-backtested ({exc})"
        if refit.metrics_.empty:
            return None, ""
        value = _summary(refit.metrics_)[gate]
        return value, f" re-backtested on the same windows: {gate} {value:.3f}"

    return score


def _fan_charts(model: RevenueForecaster, series: pd.DataFrame, folder: Path, top: int = 4
                ) -> list[Path]:
    """Fan charts (history, forecast, 80% band) of the company and the largest nodes."""
    forecast = model.predict()
    size = series.groupby([LEVEL, KEY])[Y].sum().sort_values(ascending=False)
    nodes = [n for n in size.index if n[0] == LEVEL_COMPANY]
    nodes += [n for n in size.index if n[0] != LEVEL_COMPANY][: top - 1]
    paths = []
    for level, key in nodes:
        past = series[(series[LEVEL] == level) & (series[KEY] == key)]
        ahead = forecast[(forecast[LEVEL] == level) & (forecast[KEY] == key)]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.plot(past[DS], past[Y], color="black", lw=1.2, label="revenue")
        ax.fill_between(ahead[DS], ahead["yhat_p10"], ahead["yhat_p90"], alpha=0.3,
                        label="P10-P90")
        ax.plot(ahead[DS], ahead["yhat"], color="C0", lw=1.8, label="forecast")
        ax.set_title(f"{level} {key}")
        ax.legend(loc="upper left")
        fig.tight_layout()
        path = folder / f"fan_{level}_{str(key).replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def train_forecast(tables: Tables, *, as_of: pd.Timestamp | str | None = None, seed: int = 42,
                   progress: Progress | None = None, freq: str = "M", level: str | None = None,
                   horizon: int | None = None, n_windows: int = 3, n_jobs: int = 1,
                   candidates: Sequence[str] | None = None,
                   runner: LocalRunner | None = None) -> ForecastTraining:
    """Backtest the candidates, log everything to MLflow and register a ``challenger``.

    Args:
        tables: validated tables.
        as_of: only rows dated before it (default the day after the last dated row).
        seed: random seed.
        progress: called with ``"done/total"`` after each unit of work.
        freq: D, W, M or Q.
        level: ``company`` (default: company plus the org hierarchy when there is one), a
            hierarchy level, or another categorical column such as ``product``.
        horizon: periods ahead (default 28 days, 13 weeks, 6 months or 4 quarters).
        n_windows: rolling backtest origins.
        n_jobs: parallel workers.
        candidates: the forecasters to backtest (default all of them).
        runner: where the per-series candidates are fitted (default here; on a compute engine:
            :func:`service.usecases.scaled_forecast.engine_runner`).

    Raises:
        ValueError: too little history for a single backtest window (in plain words).
    """
    levels = forecast_levels(tables, level)
    data = _series(tables, freq, levels, as_of)
    series = data.complete
    hierarchy = _hierarchy(tables, levels)
    params: dict[str, Any] = {"freq": freq, "horizon": horizon or HORIZONS[freq],
                              "n_windows": n_windows, "n_jobs": n_jobs, "seed": seed,
                              **_candidates(candidates)}
    model = _fit(series, hierarchy, params, progress, runner)
    if model.metrics_.empty:
        periods = series[DS].nunique()
        name = PERIOD_NAMES[freq]
        raise ValueError(
            f"too little history to backtest a forecaster at --freq {freq}: {periods} complete "
            f"{name}(s) before {data.end.observed_until.date()}. Use a finer --freq (W or D), "
            "or `quotacast forecast --fit` for a simple forecast with wide intervals")
    kind = forecast_kind(freq, level)
    notes = [*data.notes, *model.notes_]
    holdout = _holdout(series, params)
    champion, _ = champion_value(
        kind, _champion_score(series, hierarchy, holdout, params, runner), notes,
        no_champion=f"no champion for {tracking.model_name(kind)} yet: the first promotion "
                    "needs no comparison (but must beat the seasonal naive)")
    metrics = _summary(model.metrics_)
    gate = FORECAST.gate_metric
    baseline = metrics.get(f"baseline_{gate}")
    if baseline is not None and not beats_baseline(FORECAST, metrics[gate], baseline):
        notes.append(f"the forecast's backtest {gate} {metrics[gate]:.3f} does not "
                     f"beat the seasonal naive's {baseline:.3f}: it is registered but will not "
                     "be promoted")
    served = ServedForecaster(model, freq, levels)
    with tempfile.TemporaryDirectory() as tmp:
        charts = _fan_charts(model, series, Path(tmp))
        artifacts: dict[str, Any] = {"backtest.csv": model.backtest_,
                                     "metrics_by_model_level.csv": model.metrics_}
        artifacts |= {p.name: p for p in charts}
        run = register(
            FORECAST, served, registered=kind,
            input_example=pd.DataFrame({"horizon": [float(params["horizon"])]}),
            params={**params, "levels": levels, "series": int(series.groupby(
                [LEVEL, KEY]).ngroups),
                "data_until": str(data.end.observed_until.date())},
            metrics=metrics, holdout=holdout, champion_value=champion,
            baseline=None if baseline is None else (FORECAST.baseline, baseline),
            artifacts=artifacts,
        )
    return ForecastTraining(run.run_id, run.version, run.model_name, metrics, model.metrics_,
                            notes, served)


def forecast_fresh(tables: Tables, *, freq: str, horizon: int, level: str | None = None,
                   n_jobs: int = 1, seed: int = 42, as_of: pd.Timestamp | str | None = None,
                   candidates: Sequence[str] | None = None,
                   progress: Progress | None = None, runner: LocalRunner | None = None
                   ) -> tuple[pd.DataFrame, list[str]]:
    """Fit a forecaster on the data before ``as_of`` (``--fit``) and forecast ``horizon``
    periods from the first one not complete in the data (the per-series candidates fitted
    where ``runner`` says, default here)."""
    levels = forecast_levels(tables, level)
    data = _series(tables, freq, levels, as_of)
    params = {"freq": freq, "horizon": horizon, "n_windows": 3, "n_jobs": n_jobs, "seed": seed,
              **_candidates(candidates)}
    model = _fit(data.complete, _hierarchy(tables, levels), params, progress, runner)
    notes = [*data.notes, *model.notes_]
    frame = _booked_floor(model.predict(horizon), data.partial, notes)
    return _only(frame, level), notes


def _candidates(candidates: Sequence[str] | None) -> dict[str, Any]:
    return {} if candidates is None else {"candidates": tuple(candidates)}


def _booked_floor(frame: pd.DataFrame, partial: pd.DataFrame, notes: list[str]
                  ) -> pd.DataFrame:
    """Forecasts of a partly observed period are never below the revenue already booked."""
    if partial.empty:
        return frame
    booked = partial.set_index([LEVEL, KEY, DS])[Y]
    index = pd.MultiIndex.from_frame(frame[[LEVEL, KEY, DS]])
    floor = booked.reindex(index).fillna(0.0).to_numpy()
    frame = frame.copy()
    cols = [YHAT, YHAT_P10, YHAT_P50, YHAT_P90]
    raised = (frame[cols].to_numpy(float) < floor[:, None]).any(axis=1)
    if raised.any():
        notes.append(f"{int(raised.sum())} forecast(s) of the incomplete period were raised to "
                     "the revenue already booked in it")
    frame[cols] = np.maximum(frame[cols].to_numpy(float), floor[:, None])
    return sane_intervals(frame, notes)


def _only(frame: pd.DataFrame, level: str | None) -> pd.DataFrame:
    wanted = level or LEVEL_COMPANY
    return frame[frame[LEVEL] == wanted].reset_index(drop=True)[list(FORECAST_COLUMNS)]


def forecast_champion(tables: Tables, freq: str, horizon: int, level: str | None = None,
                      as_of: pd.Timestamp | None = None
                      ) -> tuple[pd.DataFrame, str, list[str]]:
    """Forecast with the champion for ``freq`` and ``level`` (see :func:`forecast_kind`).

    Raises:
        tracking.ChampionMissingError: no champion for that frequency and level.
        ValueError: the champion cannot answer (other horizon, or the data's end moved since
            it was trained), in plain words with what to do.
    """
    kind = forecast_kind(freq, level)
    champion = tracking.load_champion(kind)
    served: ServedForecaster = champion.estimator
    problem = served.cannot_answer(freq, level or LEVEL_COMPANY, horizon)
    retrain = f"`quotacast train forecast --freq {freq}{_level_flag(level)}`"
    if problem is not None:
        raise ValueError(f"{problem}: use --fit, or {retrain} with that --horizon")
    levels = forecast_levels(tables, level)
    data = _series(tables, freq, levels, as_of)
    first, wanted = served.first_period(), data.end.first_open(freq)
    if first != wanted:
        raise ValueError(
            f"champion v{champion.version} forecasts from {first.date()}, but with the data as "
            f"of {data.end.observed_until.date()} the first period to forecast is "
            f"{wanted.date()}: retrain with {retrain} (then promote it), or use --fit")
    notes = list(data.notes)
    frame = _booked_floor(served.predict(horizon), data.partial, notes)
    return _only(frame, level), champion.version, notes


def _level_flag(level: str | None) -> str:
    return "" if level is None else f" --level {level}"
