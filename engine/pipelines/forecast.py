"""Revenue forecast wiring: series -> backtested forecaster -> MLflow (wiring only).

``train_forecast`` builds the revenue series of the requested levels, fits
:class:`models.forecast.RevenueForecaster` (which backtests every candidate on rolling origins),
logs the backtest table, the metrics per model and level and fan charts of the top nodes, and
registers the fitted forecaster as ``challenger``. The promotion gate compares the final
(reconciled or combined) forecast's backtest MASE; the champion is re-scored on the same
backtest windows by re-fitting its parameters on the same series, unless it was trained on
exactly this holdout already.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from engine import schemas as S
from engine import tracking
from engine.io import Tables
from features.hierarchy import rep_hierarchy
from features.revenue import PARTIAL, revenue_series
from models.forecast import COMBINED, RECONCILED, RevenueForecaster

__all__ = [
    "FORECAST_COLUMNS",
    "GATE_METRIC",
    "ForecastTraining",
    "ServedForecaster",
    "forecast_champion",
    "forecast_fresh",
    "forecast_levels",
    "train_forecast",
]

KIND = "forecast"
GATE_METRIC = "mase"
FORECAST_COLUMNS = (S.LEVEL, S.KEY, S.DS, "yhat", "yhat_p10", "yhat_p50", "yhat_p90")
HIERARCHY = (S.LEVEL_REGION, S.LEVEL_TEAM, S.LEVEL_REP)
HORIZONS = {"D": 28, "W": 13, "M": 6, "Q": 4}
Progress = Callable[[int, int], None]


class ServedForecaster:
    """What the registry serves: a fitted forecaster answering ``predict_frame``.

    The pyfunc input is a frame with a ``horizon`` column (first row used) and optionally a
    ``level`` column restricting the output to those levels.
    """

    def __init__(self, forecaster: RevenueForecaster, freq: str, levels: Sequence[str]):
        self.forecaster = forecaster
        self.freq = freq
        self.levels = list(levels)

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
            frame = frame[frame[S.LEVEL] == level].reset_index(drop=True)
        return frame

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        horizon = int(frame["horizon"].iloc[0]) if "horizon" in frame.columns else None
        out = self.predict(horizon)
        if "level" in frame.columns:
            out = out[out[S.LEVEL].isin(set(frame["level"].dropna()))]
        out = out.reset_index(drop=True)
        out[S.DS] = out[S.DS].dt.strftime("%Y-%m-%d")
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
    if level is None or level == S.LEVEL_COMPANY:
        if tables.has(S.ORG) or level == S.LEVEL_COMPANY:
            return [S.LEVEL_COMPANY, *HIERARCHY] if tables.has(S.ORG) else [S.LEVEL_COMPANY]
        return [S.LEVEL_COMPANY]
    if level in HIERARCHY:
        return [S.LEVEL_COMPANY, *HIERARCHY]
    return [S.LEVEL_COMPANY, level]


def _hierarchy(tables: Tables, levels: Sequence[str]) -> pd.DataFrame | None:
    if not set(HIERARCHY) <= set(levels):
        return None
    return rep_hierarchy(tables)[[S.REP, S.TEAM, S.REGION]]


def _series(tables: Tables, freq: str, levels: Sequence[str]) -> pd.DataFrame:
    series = revenue_series(tables, freq, levels=list(levels))
    return series[~series[PARTIAL]] if PARTIAL in series.columns else series


def _fit(series: pd.DataFrame, hierarchy: pd.DataFrame | None, params: dict[str, Any],
         progress: Progress | None) -> RevenueForecaster:
    return RevenueForecaster(**params).fit(series, hierarchy, progress=progress)


def _final_model(metrics: pd.DataFrame) -> str:
    return RECONCILED if (metrics["model"] == RECONCILED).any() else COMBINED


def _summary(metrics: pd.DataFrame) -> dict[str, float]:
    """Flat metrics for MLflow: ``<model>_<level>_<metric>`` plus the final model's averages."""
    flat: dict[str, float] = {}
    for row in metrics.itertuples(index=False):
        for name in ("mase", "wape", "smape", "pinball", "coverage_80"):
            value = getattr(row, name)
            if pd.notna(value):
                flat[f"{row.model}_{row.level}_{name}"] = float(value)
    final = metrics[metrics["model"] == _final_model(metrics)]
    for name in ("mase", "wape", "coverage_80"):
        flat[name] = float(final[name].mean())
    return flat


def _holdout(series: pd.DataFrame, params: dict[str, Any]) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(pd.util.hash_pandas_object(series[[S.LEVEL, S.KEY, S.DS, S.Y]],
                                             index=False).to_numpy().tobytes())
    window = f"{params['freq']}/h{params['horizon']}/w{params['n_windows']}"
    return f"{window}/{digest.hexdigest()[:12]}"


def _champion_value(series: pd.DataFrame, hierarchy: pd.DataFrame | None, holdout: str,
                    notes: list[str]) -> float | None:
    try:
        champion = tracking.load_champion(KIND)
    except tracking.ChampionMissingError:
        notes.append("no champion yet: the first promotion needs no comparison")
        return None
    if champion.holdout == holdout and GATE_METRIC in champion.metrics:
        value = champion.metrics[GATE_METRIC]
        notes.append(f"champion v{champion.version} was backtested on these same windows and "
                     f"data: {GATE_METRIC} {value:.3f}")
        return value
    served: ServedForecaster = champion.estimator
    params = {k: v for k, v in vars(served.forecaster).items() if not k.endswith("_")}
    refit = _fit(series, hierarchy, params, None)
    value = _summary(refit.metrics_)[GATE_METRIC]
    notes.append(f"champion v{champion.version} re-backtested on the same windows: "
                 f"{GATE_METRIC} {value:.3f}")
    return value


def _fan_charts(model: RevenueForecaster, series: pd.DataFrame, folder: Path, top: int = 4
                ) -> list[Path]:
    """Fan charts (history, forecast, 80% band) of the company and the largest nodes."""
    forecast = model.predict()
    size = series.groupby([S.LEVEL, S.KEY])[S.Y].sum().sort_values(ascending=False)
    nodes = [n for n in size.index if n[0] == S.LEVEL_COMPANY]
    nodes += [n for n in size.index if n[0] != S.LEVEL_COMPANY][: top - 1]
    paths = []
    for level, key in nodes:
        past = series[(series[S.LEVEL] == level) & (series[S.KEY] == key)]
        ahead = forecast[(forecast[S.LEVEL] == level) & (forecast[S.KEY] == key)]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.plot(past[S.DS], past[S.Y], color="black", lw=1.2, label="revenue")
        ax.fill_between(ahead[S.DS], ahead["yhat_p10"], ahead["yhat_p90"], alpha=0.3,
                        label="P10-P90")
        ax.plot(ahead[S.DS], ahead["yhat"], color="C0", lw=1.8, label="forecast")
        ax.set_title(f"{level} {key}")
        ax.legend(loc="upper left")
        fig.tight_layout()
        path = folder / f"fan_{level}_{str(key).replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def train_forecast(tables: Tables, *, freq: str = "M", level: str | None = None,
                   horizon: int | None = None, n_windows: int = 3, n_jobs: int = 1,
                   seed: int = 42, progress: Progress | None = None) -> ForecastTraining:
    """Backtest the candidates, log everything to MLflow and register a ``challenger``.

    Args:
        tables: validated tables.
        freq: D, W, M or Q.
        level: ``company`` (default: company plus the org hierarchy when there is one), a
            hierarchy level, or another categorical column such as ``product``.
        horizon: periods ahead (default 28 days, 13 weeks, 6 months or 4 quarters).
        n_windows: rolling backtest origins.
        n_jobs: parallel workers.
        seed: random seed.
        progress: ``progress(done, total)`` after each unit of work.
    """
    levels = forecast_levels(tables, level)
    series = _series(tables, freq, levels)
    hierarchy = _hierarchy(tables, levels)
    params: dict[str, Any] = {"freq": freq, "horizon": horizon or HORIZONS[freq],
                              "n_windows": n_windows, "n_jobs": n_jobs, "seed": seed}
    model = _fit(series, hierarchy, params, progress)
    notes = list(model.notes_)
    holdout = _holdout(series, params)
    champion_value = _champion_value(series, hierarchy, holdout, notes)
    metrics = _summary(model.metrics_)
    served = ServedForecaster(model, freq, levels)
    with tempfile.TemporaryDirectory() as tmp:
        charts = _fan_charts(model, series, Path(tmp))
        artifacts: dict[str, Any] = {"backtest.csv": model.backtest_,
                                     "metrics_by_model_level.csv": model.metrics_}
        artifacts |= {p.name: p for p in charts}
        run = tracking.log_and_register(
            KIND, served, input_example=pd.DataFrame({"horizon": [float(params["horizon"])]}),
            params={**params, "levels": levels, "series": int(series.groupby(
                [S.LEVEL, S.KEY]).ngroups)},
            metrics=metrics, gate_metric=GATE_METRIC, greater_is_better=False,
            holdout=holdout, champion_value=champion_value, artifacts=artifacts,
        )
    return ForecastTraining(run.run_id, run.version, run.model_name, metrics, model.metrics_,
                            notes, served)


def forecast_fresh(tables: Tables, *, freq: str, horizon: int, level: str | None = None,
                   n_jobs: int = 1, seed: int = 42, progress: Progress | None = None
                   ) -> tuple[pd.DataFrame, list[str]]:
    """Fit a forecaster on the current data (``--fit``) and forecast ``horizon`` periods."""
    levels = forecast_levels(tables, level)
    series = _series(tables, freq, levels)
    params = {"freq": freq, "horizon": horizon, "n_windows": 3, "n_jobs": n_jobs, "seed": seed}
    model = _fit(series, _hierarchy(tables, levels), params, progress)
    frame = model.predict(horizon)
    return _only(frame, level), list(model.notes_)


def _only(frame: pd.DataFrame, level: str | None) -> pd.DataFrame:
    wanted = level or S.LEVEL_COMPANY
    return frame[frame[S.LEVEL] == wanted].reset_index(drop=True)[list(FORECAST_COLUMNS)]


def forecast_champion(freq: str, horizon: int, level: str | None = None
                      ) -> tuple[pd.DataFrame, str]:
    """Forecast with the registry's champion; raises if its frequency differs."""
    champion = tracking.load_champion(KIND)
    served: ServedForecaster = champion.estimator
    problem = served.cannot_answer(freq, level or S.LEVEL_COMPANY, horizon)
    if problem is not None:
        raise ValueError(f"{problem}: use --fit, or train a forecaster with that --freq, "
                         "--level or --horizon")
    return _only(served.predict(horizon), level), champion.version
