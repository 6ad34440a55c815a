"""History sweep: every model against its peers, in the same run, from 3 to 24 months of history.

    .venv/bin/python benchmarks/history_sweep.py [--quick] [--months 3 6 9 12 18 24]
                                                  [--families churn win forecast feasibility]

For each history length N the real datasets are cut to N months (:func:`engine.history
.cut_history`: an export made on the cut day) and each model family is trained through its
pipeline on a temporary MLflow store, then scored next to its peers on the same cases:

- ``churn`` (online-retail, ~12.3 months; the file itself is the ``full`` point): ours (the
  candidate :func:`service.usecases.churn.train_churn` registers) vs BG/NBD (``lifetimes``, as in
  benchmarks/churn.py, fitted on purchases before the holdout's as_of) vs the pipeline's
  baselines (recency rule, RFM logistic), ROC-AUC and PR-AUC on the pipeline's own holdout
  customers. The horizon is the pipeline's choice when it makes one, else the longest of
  :data:`CHURN_HORIZONS` that its split allows.
- ``win`` (crm-sales, ~14.4 months): ours (:func:`service.usecases.win.train_win`) vs the
  historical stage rates, log loss and ROC-AUC on the pipeline's holdout.
- ``forecast`` (aus-retail: the 20 largest State x Industry series, summed per state; superstore:
  per ship region; monthly): from each of up to three origins (1 January of the data's last
  years), the history is the N months before the origin and the holdout the ``min(N, 12)``
  months after it. Ours is ``train forecast`` (:func:`service.usecases.forecast.train_forecast`
  with ``as_of`` = the origin, on a temporary registry, its gate recorded; without Prophet to
  keep the sweep short), or ``forecast --fit`` (:func:`forecast_fresh`) where training refuses;
  peers are statsforecast AutoETS and seasonal naive (naive while the history is shorter than a
  season), with their own 80% intervals. Metrics: MASE (scaled by the seasonal naive error of
  the 36 months before the origin, the same for every history length; mean over the company and
  every level key, then over origins) and the share of actuals inside the 80% interval.
- ``feasibility`` (crm-sales with each node's prior-quarter revenue as its target, as
  benchmarks/feasibility_replay.py does): ``p_attain`` of
  :func:`service.usecases.feasibility.run_feasibility` at the cut, for the quarter in progress
  then, vs the pace rule (closed so far / share of the quarter elapsed, through a lognormal whose
  spread is the dispersion of log(actual / pace) at that level in earlier quarters): Brier score
  against whether each node reached its target (when no node has a target in that quarter, the
  next one is scored as a plan check made at the cut, ours alone). The win model is ours when
  it passed the promotion gate at that cut, else the stage-rate fallback (what the product
  would use); no churn adjustment.

A cell whose dataset is shorter than N is skipped and said so. Each cell records whether our
model answered, its metric next to the best peer's and whether the trained model passed the
promotion gate (:func:`engine.tracking.beats_baseline`). Output: the table printed, and
``benchmarks/out/history_sweep.{csv,md,png}`` (the long per-model scores in
``history_sweep_scores.csv``).

The pipelines change under this file: each family has one adapter (``*_cell``) that calls them;
adapt it when their API moves.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import io
import math
import resource
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine import tracking  # noqa: E402
from engine.history import cut_history, tables_before  # noqa: E402
from engine.io import Tables, load_tables, validate_tables  # noqa: E402
from engine.periods import (  # noqa: E402
    default_as_of,
    first_day,
    period_bounds,
)
from engine.schemas import (  # noqa: E402
    AMOUNT,
    CUSTOMER_ID,
    DS,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    PERIOD,
    TARGETS,
    Y,
)

__all__ = [
    "LENGTHS",
    "Cell",
    "churn_cell",
    "feasibility_cell",
    "forecast_cell",
    "main",
    "mase_and_coverage",
    "peer_forecasts",
    "summary_table",
    "win_cell",
]

OUT = REPO / "benchmarks" / "out"
DATA = REPO.parent / "data"
SHARED = REPO.parent / "shared" / "data"
LENGTHS = (3, 6, 9, 12, 18, 24)
QUICK_LENGTHS = (3, 6, 12)
FAMILIES = ("churn", "win", "forecast", "feasibility")
CHURN_HORIZONS = (180, 120, 90, 60, 45, 30)
FORECAST_CANDIDATES = ("seasonal_naive", "ets", "theta", "arima", "autoets", "lgbm")  # no Prophet
MAX_HORIZON = 12
SEASON = 12
AUS_SERIES = 20
FORECAST_ORIGINS = 3  # the last three Januaries that leave enough history
# MASE is scaled by the naive error of the 36 months before the origin (whatever the history
# length given to the models), so one origin's MASE compares across history lengths.
SCALE_MONTHS = 36
DRAWS = 2000
# Metric -> "higher" / "lower" is better; coverage is best nearest its nominal 80%.
DIRECTION = {"roc_auc": "higher", "pr_auc": "higher", "log_loss": "lower", "brier": "lower",
             "mase": "lower", "coverage_80": "nominal"}
NOMINAL = 0.8
OURS = "ours"
_DAY = pd.Timedelta(days=1)


def _bench(name: str) -> ModuleType:
    """Another benchmark script as a module (benchmarks/ is not a package)."""
    module_name = f"_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# --- one cell ----------------------------------------------------------------------------------


@dataclass
class Cell:
    """One family x dataset x history length: every model's scores on the same cases.

    Attributes:
        family: churn, win, forecast or feasibility.
        dataset: the data's name.
        months: history length asked for (``full`` rows carry the file's own length).
        label: how the length is shown (``9``, ``13 (full)``).
        scores: model -> metric -> value; ours under :data:`OURS`. A model that gave no answer
            is absent, or NaN for that metric.
        answered: our model trained and answered.
        gate: whether the trained model passed the promotion gate, in words.
        note: what was special (horizon, cases, failures, skips).
        seconds: wall time of the cell.
    """

    family: str
    dataset: str
    months: float
    label: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    answered: bool = False
    gate: str = ""
    note: str = ""
    seconds: float = 0.0


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:220]}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence warnings and chatty prints (lifetimes, statsforecast) inside a cell."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def temporary_registry() -> Iterator[Path]:
    """A fresh MLflow tracking store and registry on SQLite, dropped afterwards."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory(prefix="history-sweep-") as tmp:
        tracking.configure(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        try:
            yield Path(tmp)
        finally:
            tracking.configure(previous)


def gate_of(kind: str, version: str) -> tuple[bool, str]:
    """:func:`engine.tracking.beats_baseline` on a registered version, then a promotion try:
    whether it became champion, and why in words."""
    from mlflow import MlflowClient

    tags = dict(MlflowClient().get_model_version(tracking.model_name(kind), version).tags)
    beats, why = tracking.beats_baseline(tags)
    decision = tracking.promote(kind, version)
    return beats and decision.promoted, why if beats else decision.reason


def _gate_word(passed: bool) -> str:
    return "passed" if passed else "refused"


# --- data --------------------------------------------------------------------------------------


def _valid(frames: dict[str, pd.DataFrame], name: str) -> Tables:
    tables, problems = validate_tables(frames)
    if problems:
        raise SystemExit(f"{name} does not validate: {problems[:3]}")
    return tables


def crm_with_targets(tables: Tables) -> Tables:
    """crm-sales plus targets: each node's actual revenue of the prior quarter (the replay's)."""
    actual = _bench("feasibility_replay").quarter_actuals(tables)
    following = {p: str(pd.Period(p, freq="Q") + 1) for p in actual[PERIOD].unique()}
    targets = actual.assign(**{PERIOD: actual[PERIOD].map(following)})
    targets = targets[targets[AMOUNT] > 0].reset_index(drop=True)
    return Tables(dict(tables.frames) | {TARGETS: targets}, tables.source, tables.derived)


def aus_retail_tables(path: Path, n_series: int = AUS_SERIES) -> Tables:
    """The ``n_series`` largest State x Industry series (by turnover in their last year) as
    orders: one per series and month, dated on the month's first day, ``state`` a level."""
    raw = pd.read_csv(path)
    raw["Month"] = pd.to_datetime(raw["Month"], format="%Y-%m")
    last_year = raw[raw["Month"] > raw["Month"].max() - pd.DateOffset(months=12)]
    largest = last_year.groupby("SeriesID")["Turnover"].sum().nlargest(n_series).index
    kept = raw[raw["SeriesID"].isin(largest)].dropna(subset=["Turnover"])
    orders = pd.DataFrame({
        ORDER_ID: kept["SeriesID"] + "-" + kept["Month"].dt.strftime("%Y-%m"),
        CUSTOMER_ID: kept["SeriesID"].astype(str),
        ORDER_DATE: kept["Month"],
        AMOUNT: kept["Turnover"].astype(float) * 1e6,  # AUD millions -> AUD
        "state": kept["State"].astype(str),
    }).reset_index(drop=True)
    return _valid({ORDERS: orders}, "aus-retail")


@dataclass(frozen=True)
class ForecastData:
    """A forecast dataset: its tables, the extra level, the forecast origins (oldest first)."""

    name: str
    tables: Tables
    level: str
    origins: tuple[pd.Timestamp, ...]


def load_data(families: Sequence[str]) -> dict[str, Any]:
    """Every dataset the chosen families need, loaded once."""
    data: dict[str, Any] = {}
    if "churn" in families:
        data["online-retail"] = load_tables(DATA / "online-retail")
    if {"win", "feasibility"} & set(families):
        data["crm-sales"] = crm_with_targets(load_tables(DATA / "crm-sales"))
    if "forecast" in families:
        aus = aus_retail_tables(SHARED / "aus-retail-turnover" / "aus_retail.csv")
        store = load_tables(DATA / "superstore")
        data["forecast"] = [
            ForecastData("aus-retail", aus, "state", forecast_origins(aus, FORECAST_ORIGINS)),
            ForecastData("superstore", store, "ship_region",
                         forecast_origins(store, FORECAST_ORIGINS)),
        ]
    return data


def forecast_origins(tables: Tables, n: int) -> tuple[pd.Timestamp, ...]:
    """1 January of each of the data's last ``n`` years (each followed by 12 months of data;
    a month dated on its first day counts as whole), those with 3 months of data before them."""
    end = default_as_of(tables) - _DAY
    last = end.year if end.month == 12 else end.year - 1
    first = first_day(tables)
    origins = [pd.Timestamp(year=last - k, month=1, day=1) for k in range(n)]
    return tuple(sorted(o for o in origins if o >= first + pd.DateOffset(months=3)))


def span_months(tables: Tables) -> float:
    """Months from the first day to the data's end (default as_of)."""
    days = (default_as_of(tables) - first_day(tables)).days
    return days / (365.25 / 12)


def lengths_for(tables: Tables, lengths: Sequence[int]) -> tuple[list[tuple[float, str]],
                                                                 list[int]]:
    """The lengths the data covers (plus its full length) and the lengths it is too short for."""
    span = span_months(tables)
    kept = [(float(m), str(m)) for m in lengths if m < span - 0.25]
    skipped = [m for m in lengths if m >= span - 0.25]
    kept.append((span, f"{span:.1f} (full)"))
    return kept, skipped


def cut(tables: Tables, months: float) -> Tables:
    """The first ``months`` months (the whole data for the ``full`` length)."""
    if months >= span_months(tables) - 0.25:
        return tables
    return cut_history(tables, int(months))


def _row(frame: pd.DataFrame, name: str, metrics: Sequence[str]) -> dict[str, float]:
    """Metrics of one model of a comparison frame (models as the index), NaN when absent."""
    row = frame.loc[name]
    return {m: float(row[m]) if m in row.index else math.nan for m in metrics}


# --- churn -------------------------------------------------------------------------------------


def _churn_horizon(tables: Tables, train: Callable[..., Any]) -> int | None:
    """None when the pipeline chooses its own horizon; else the longest one its split allows."""
    from service.usecases import churn as CP

    default = inspect.signature(train).parameters["horizon_days"].default
    if default is None:
        return None
    last = default_as_of(tables) - _DAY
    start = pd.Timestamp(tables.orders[ORDER_DATE].min()).normalize()
    for horizon in CHURN_HORIZONS:
        try:
            CP.plan_split(start, last, horizon)
        except ValueError:
            continue
        return horizon
    return CHURN_HORIZONS[-1]  # too short for all: let the pipeline say why


def churn_cell(cell: Cell, tables: Tables) -> Cell:
    """Ours vs BG/NBD vs recency rule on the pipeline's holdout customers (adapter)."""
    from features.labels import CHURNED
    from features.table import training_table
    from models.base import CHURN
    from models.classification import classification_metrics
    from service.usecases import churn as CP

    horizon = _churn_horizon(tables, CP.train_churn)
    kwargs: dict[str, Any] = {} if horizon is None else {"horizon_days": horizon}
    result = CP.train_churn(tables, **kwargs)
    cell.answered = True
    comparison = result.baselines
    ours_row = getattr(result, "chosen", "churn_model")  # the registered candidate
    cell.scores[OURS] = _row(comparison, ours_row, ("roc_auc", "pr_auc"))
    for row, name in (("recency_rule", "recency rule"), ("rfm_logistic", "RFM logistic")):
        if row in comparison.index:  # the pipeline's baselines, on its holdout
            cell.scores[name] = _row(comparison, row, ("roc_auc", "pr_auc"))
    split = result.split
    cutoff = split.last_day + _DAY
    past = tables_before(tables, cutoff)
    holdout = training_table(past, [split.holdout], split.horizon_days, CP.LOOKBACK_DAYS,
                             split.last_day)
    notes = [f"ours = {ours_row}; {split.horizon_days}-day horizon, holdout "
             f"{split.holdout.date()}, {len(holdout):,} customers "
             f"({holdout[CHURNED].mean():.0%} churned)"]
    n = _row(comparison, ours_row, ("n",))["n"]
    if np.isfinite(n) and int(n) != len(holdout):
        notes.append(f"BG/NBD scored on a rebuilt holdout of {len(holdout):,} customers, the "
                     f"pipeline's had {int(n):,}")
    try:
        p_bg = _bench("churn").bgnbd_churn(past.orders, split.holdout, split.horizon_days,
                                           holdout[CUSTOMER_ID])
        metrics = classification_metrics(holdout[CHURNED].to_numpy(), p_bg)
        cell.scores["BG/NBD"] = {m: float(metrics[m]) for m in ("roc_auc", "pr_auc")}
    except (RuntimeError, ValueError) as exc:
        notes.append(f"BG/NBD failed ({_short(exc)})")
    passed, why = gate_of(CHURN.name, result.version)
    cell.gate = _gate_word(passed)
    cell.note = "; ".join([*notes, f"gate: {why}"])
    return cell


# --- win ---------------------------------------------------------------------------------------


@dataclass
class WinState:
    """What feasibility needs from the win cell of the same cut: ours, when it passed."""

    model: Any | None = None
    version: str = ""


def win_cell(cell: Cell, tables: Tables, state: WinState) -> Cell:
    """Ours vs stage rates on the pipeline's holdout (adapter)."""
    from models.base import WIN
    from service.usecases import win as WP

    result = WP.train_win(tables)
    cell.answered = True
    comparison = result.comparison
    metrics = ("log_loss", "roc_auc")
    cell.scores[OURS] = _row(comparison, "win_model", metrics)
    for name in comparison.index:
        if name != "win_model":
            cell.scores[str(name).replace("_", " ")] = _row(comparison, str(name), metrics)
    n = int(_row(comparison, "win_model", ("n",)).get("n", 0))
    ok, why = gate_of(WIN.name, result.version)
    cell.gate = _gate_word(ok)
    cell.note = f"{n:,} holdout deal-periods; gate: {why}"
    if ok:
        state.model, state.version = result.model, result.version
    return cell


# --- feasibility -------------------------------------------------------------------------------


def quarter_at(as_of: pd.Timestamp) -> str:
    """The quarter in progress at ``as_of`` (the one that holds it), e.g. ``2017Q2``."""
    return str(pd.Timestamp(as_of).to_period("Q"))


def feasibility_cell(cell: Cell, full: Tables, tables: Tables, state: WinState) -> Cell:
    """p_attain vs the pace rule for the quarter in progress at the cut (adapter).

    When no node has a target in that quarter (crm-sales at 3 months: the prior quarter had no
    revenue), the next quarter is scored as a plan check made at the cut; the pace rule cannot
    speak before a quarter starts, so ours stands alone there.
    """
    from service.usecases.feasibility import run_feasibility

    replay = _bench("feasibility_replay")
    as_of = default_as_of(tables)
    models = {} if state.model is None else {"win": tracking.LoadedModel(
        state.model, tracking.model_name("win"), state.version, "", {})}
    period = quarter_at(as_of)
    result = run_feasibility(tables, period, as_of, draws=DRAWS, use_churn=False, models=models)
    notes = []
    if result.frame.empty:
        following = str(pd.Period(period, freq="Q") + 1)
        notes.append(f"no node has a target in {period}; {following} scored as a plan check")
        if period_bounds(following)[1] > default_as_of(full):
            raise ValueError(f"no target in {period} and {following} ends after the data")
        period = following
        result = run_feasibility(tables, period, as_of, draws=DRAWS, use_churn=False,
                                 models=models)
    frame = result.frame
    cell.answered = True
    start, end = period_bounds(period)
    fraction = max((as_of - start).days, 0) / (end - start).days
    actual = replay.quarter_actuals(full).set_index([PERIOD, LEVEL, KEY])[AMOUNT]
    index = pd.MultiIndex.from_frame(frame[[PERIOD, LEVEL, KEY]].astype(str))
    y = (actual.reindex(index).fillna(0.0).to_numpy() >= frame["target"].to_numpy()).astype(float)
    p_ours = frame["p_attain"].to_numpy(dtype=float)
    cell.scores[OURS] = {"brier": float(np.mean((p_ours - y) ** 2))}
    if fraction > 0:
        p_pace = replay.pace_peer(tables, frame, fraction, as_of)
        cell.scores["pace rule"] = {"brier": float(np.mean((p_pace - y) ** 2))}
    used = "our win model" if state.model is not None else "stage-rate fallback"
    cell.gate = "-"
    notes.append(f"win model used: {used}")
    notes.append(f"{period} at {fraction:.0%} elapsed, {len(frame)} nodes, "
                 f"{y.mean():.0%} reached target")
    paced = [level for level in HIERARCHY_LEVELS if level in result.simulation.paced]
    notes.append(f"p_attain by the pace rule at: {', '.join(paced) or 'no level'}")
    cell.note = "; ".join(notes)
    return cell


# --- forecast ----------------------------------------------------------------------------------


def _scale(history: np.ndarray, season: int = SEASON) -> float:
    """MASE scale: mean absolute seasonal difference, lag 1 while shorter than a season + 1."""
    lag = season if len(history) > season else 1
    if len(history) <= lag:
        return math.nan
    value = float(np.mean(np.abs(history[lag:] - history[:-lag])))
    return value if value > 0 else math.nan


def mase_and_coverage(history: pd.DataFrame, forecast: pd.DataFrame, actual: pd.DataFrame
                      ) -> tuple[float, float, int]:
    """Mean MASE over series and share of actuals inside ``[p10, p90]``, and periods missed.

    All frames are long ``level, key, ds`` with ``y`` (history, actual) or ``yhat``,
    ``yhat_p10``, ``yhat_p90`` (forecast). A series' MASE is scaled by ``history``'s in-sample
    seasonal (else lag-1) naive error; an actual with no forecast counts as missed (returned),
    not as an error.
    """
    keys = [LEVEL, KEY]
    scales = history.sort_values(DS).groupby(keys)[Y].apply(
        lambda y: _scale(y.to_numpy(dtype=float)))
    joined = actual.merge(forecast, on=[*keys, DS], how="left")
    missed = int(joined["yhat"].isna().sum())
    joined = joined.dropna(subset=["yhat"])
    if joined.empty:
        return math.nan, math.nan, missed
    error = (joined[Y] - joined["yhat"]).abs()
    per_series = error.groupby([joined[LEVEL], joined[KEY]]).mean() / scales.reindex(
        error.groupby([joined[LEVEL], joined[KEY]]).mean().index)
    inside = ((joined[Y] >= joined["yhat_p10"]) & (joined[Y] <= joined["yhat_p90"]))
    has_band = joined[["yhat_p10", "yhat_p90"]].notna().all(axis=1)
    coverage = float(inside[has_band].mean()) if has_band.any() else math.nan
    return float(per_series.dropna().mean()), coverage, missed


def peer_forecasts(history: pd.DataFrame, horizon: int, origin: pd.Timestamp
                   ) -> dict[str, pd.DataFrame]:
    """AutoETS and seasonal naive (statsforecast, own 80% intervals) per series.

    AutoETS tries a 12-month season, then none; a series it cannot fit (statsforecast refuses
    tiny ones) gets no AutoETS forecast. Seasonal naive is plain naive while the history is
    shorter than a season.
    """
    from statsforecast.models import AutoETS, Naive, SeasonalNaive

    dates = pd.date_range(origin, periods=horizon, freq="MS")
    out: dict[str, list[pd.DataFrame]] = {"AutoETS": [], "seasonal naive": []}
    for (level, key), part in history.sort_values(DS).groupby([LEVEL, KEY]):
        y = part[Y].to_numpy(dtype=float)
        naive: Any = SeasonalNaive(SEASON) if len(y) >= SEASON else Naive()
        fits: dict[str, dict[str, np.ndarray] | None] = {"seasonal naive": None, "AutoETS": None}
        with _quiet():
            with contextlib.suppress(ValueError, ZeroDivisionError):
                fits["seasonal naive"] = naive.forecast(y=y, h=horizon, level=[80])
            for season in (SEASON, 1):
                try:
                    fits["AutoETS"] = AutoETS(season_length=season).forecast(
                        y=y, h=horizon, level=[80])
                    break
                except (ValueError, NotImplementedError, ZeroDivisionError,
                        np.linalg.LinAlgError):
                    continue
        for name, fit in fits.items():
            if fit is None:
                continue
            out[name].append(pd.DataFrame({
                LEVEL: level, KEY: key, DS: dates,
                "yhat": np.maximum(fit["mean"], 0.0),
                "yhat_p10": np.maximum(fit["lo-80"], 0.0), "yhat_p90": fit["hi-80"]}))
    return {name: pd.concat(parts, ignore_index=True) for name, parts in out.items() if parts}


def _history_series(tables: Tables, level: str, origin: pd.Timestamp) -> pd.DataFrame:
    """Monthly revenue (company and ``level``) before ``origin``: whole months only."""
    from features.revenue import PARTIAL, revenue_series

    series = revenue_series(tables, "M", levels=[LEVEL_COMPANY, level], as_of=origin)
    return series[~series[PARTIAL]].drop(columns=[PARTIAL]).reset_index(drop=True)


def _actuals(full: Tables, level: str, origin: pd.Timestamp, horizon: int) -> pd.DataFrame:
    end = origin + pd.DateOffset(months=horizon)
    series = _history_series(full, level, end)
    return series[series[DS] >= origin][[LEVEL, KEY, DS, Y]]


def _direct_forecast(history: pd.DataFrame, horizon: int) -> tuple[pd.DataFrame, bool | None]:
    """Our forecaster fitted straight on the series (for a pipeline without ``as_of`` and
    ``candidates``): its forecasts, and whether its backtest MASE beat the seasonal naive's."""
    from models.forecast import COMBINED, RECONCILED, RevenueForecaster

    model = RevenueForecaster(freq="M", horizon=horizon, n_windows=3,
                              candidates=FORECAST_CANDIDATES, seed=42)
    with _quiet():
        model.fit(history)
    metrics = model.metrics_
    if not len(metrics):
        return model.predict(horizon), None
    chosen = RECONCILED if (metrics["model"] == RECONCILED).any() else COMBINED
    final = float(metrics.loc[metrics["model"] == chosen, "mase"].mean())
    naive = float(metrics.loc[metrics["model"] == "seasonal_naive", "mase"].mean())
    return model.predict(horizon), final < naive


def ours_forecast(tables: Tables, history: pd.DataFrame, level: str, origin: pd.Timestamp,
                  horizon: int) -> tuple[pd.DataFrame, bool | None, str]:
    """Our forecasts of the company and ``level`` from ``origin`` (adapter).

    ``train forecast`` on a temporary registry (its promotion gate recorded); when it refuses
    (too little history to backtest), ``forecast --fit`` (:func:`forecast_fresh`) answers, as a
    user would fall back. Returns the forecasts, whether the gate passed (None: no gate) and a
    remark.
    """
    from service.usecases import forecast as FP

    if not {"as_of", "candidates"} <= set(inspect.signature(FP.train_forecast).parameters):
        frame, passed = _direct_forecast(history, horizon)
        return frame, passed, "RevenueForecaster fitted directly"
    common: dict[str, Any] = {"freq": "M", "horizon": horizon, "as_of": origin,
                              "candidates": FORECAST_CANDIDATES}
    try:
        with temporary_registry():
            result = FP.train_forecast(tables, level=level, **common)
            passed, _ = gate_of(result.model_name, result.version)
        if result.served is None:
            raise RuntimeError("train forecast returned no served forecaster")
        return result.served.predict(horizon), passed, "train forecast"
    except ValueError as exc:
        frames = [FP.forecast_fresh(tables, level=lv, **common)[0] for lv in (None, level)]
        return (pd.concat(frames, ignore_index=True), None,
                f"train forecast refused ({_short(exc)[:90]}...), forecast --fit answered")


def usable_origins(data: ForecastData, months: int) -> list[pd.Timestamp]:
    """The dataset's origins with ``months`` months of data before them (half a month spare)."""
    first = first_day(data.tables)
    return [o for o in data.origins
            if (o - first).days / (365.25 / 12) >= months - 0.5]


def forecast_cell(cell: Cell, data: ForecastData, months: int) -> Cell:
    """Ours vs AutoETS vs seasonal naive from each usable origin, averaged (adapter).

    At every origin the history is the ``months`` months before it and the holdout the
    ``min(months, 12)`` months after it; MASE and coverage are averaged over origins.
    """
    horizon = min(months, MAX_HORIZON)
    origins = usable_origins(data, months)
    per_origin: dict[str, list[tuple[float, float]]] = {}
    gates: list[bool | None] = []
    notes: list[str] = []
    series = 0
    how: set[str] = set()
    for origin in origins:
        tables = cut_history(data.tables, months, start=origin - pd.DateOffset(months=months))
        history = _history_series(tables, data.level, origin)
        actual = _actuals(data.tables, data.level, origin, horizon)
        scale_history = _history_series(cut_history(
            data.tables, SCALE_MONTHS, start=origin - pd.DateOffset(months=SCALE_MONTHS)),
            data.level, origin)
        series = history.groupby([LEVEL, KEY]).ngroups
        frame, passed, remark = ours_forecast(tables, history, data.level, origin, horizon)
        gates.append(passed)
        how.add(remark)
        mase, coverage, missed = mase_and_coverage(scale_history, frame, actual)
        per_origin.setdefault(OURS, []).append((mase, coverage))
        if missed:
            notes.append(f"at {origin.date()} ours left {missed} holdout series-months "
                         "unforecast")
        for name, peer in peer_forecasts(history, horizon, origin).items():
            p_mase, p_cov, _ = mase_and_coverage(scale_history, peer, actual)
            per_origin.setdefault(name, []).append((p_mase, p_cov))
    cell.answered = len(per_origin.get(OURS, [])) == len(origins) > 0
    for name, values in per_origin.items():
        mases = np.array([v[0] for v in values], dtype=float)
        coverages = np.array([v[1] for v in values], dtype=float)
        cell.scores[name] = {
            "mase": float(np.nanmean(mases)) if np.isfinite(mases).any() else math.nan,
            "coverage_80": (float(np.nanmean(coverages)) if np.isfinite(coverages).any()
                            else math.nan)}
    origins_text = ", ".join(str(o.date())[:7] for o in origins)
    notes.insert(0, f"origins {origins_text}; horizon {horizon}; {series} series")
    peers_missing = [n for n in ("AutoETS", "seasonal naive")
                     if len(per_origin.get(n, [])) < len(origins)]
    if peers_missing:
        notes.append(f"{' and '.join(peers_missing)} could not fit at some origin (too short)")
    notes += sorted(how)
    cell.note = "; ".join(notes)
    judged = [g for g in gates if g is not None]
    cell.gate = (f"passed at {sum(judged)}/{len(judged)} origins" if judged else "no gate")
    if len(judged) < len(gates):
        cell.gate += f" ({len(gates) - len(judged)} without a backtest)"
    return cell


# --- the sweep ---------------------------------------------------------------------------------


def _run(cell: Cell, work: Callable[[], Cell], log: Path) -> Cell:
    """Run one adapter; a failure is recorded in the cell (our model did not answer)."""
    started = time.perf_counter()
    try:
        with _quiet(), contextlib.redirect_stdout(io.StringIO()):
            work()
    except Exception as exc:  # a benchmark records every failure and moves on
        cell.answered = False
        cell.note = (cell.note + "; " if cell.note else "") + f"FAILED {_short(exc)}"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle:
            handle.write(f"--- {cell.family} {cell.dataset} {cell.label}\n")
            handle.write(traceback.format_exc())
    cell.seconds = time.perf_counter() - started
    return cell


def plan(data: dict[str, Any], families: Sequence[str], lengths: Sequence[int]
         ) -> tuple[list[tuple[Cell, Callable[[], Cell]]], list[str]]:
    """Every cell to run, with its work, and the skipped cells in words."""
    jobs: list[tuple[Cell, Callable[[], Cell]]] = []
    skipped: list[str] = []
    if "churn" in families:
        retail = data["online-retail"]
        kept, short = lengths_for(retail, lengths)
        skipped += [f"churn online-retail {m} months: the data covers "
                    f"{span_months(retail):.1f} months" for m in short]
        for months, label in kept:
            cell = Cell("churn", "online-retail", months, label)
            jobs.append((cell, partial(_registered, churn_cell, cell, cut(retail, months))))
    if {"win", "feasibility"} & set(families):
        crm = data["crm-sales"]
        kept, short = lengths_for(crm, lengths)
        for family in ("win", "feasibility"):
            if family in families:
                skipped += [f"{family} crm-sales {m} months: the data covers "
                            f"{span_months(crm):.1f} months" for m in short]
        for months, label in kept:
            state = WinState()
            tables = cut(crm, months)
            win = Cell("win", "crm-sales", months, label)
            jobs.append((win, partial(_registered, win_cell, win, tables, state)))
            period = quarter_at(default_as_of(tables))
            if "feasibility" in families and period_bounds(period)[1] > default_as_of(crm):
                skipped.append(f"feasibility crm-sales {label} months: the quarter in progress "
                               f"at the cut ({period}) ends after the data")
            elif "feasibility" in families:
                feas = Cell("feasibility", "crm-sales", months, label)
                jobs.append((feas, partial(feasibility_cell, feas, crm, tables, state)))
    if "forecast" in families:
        for fdata in data["forecast"]:
            for months in lengths:
                if not usable_origins(fdata, months):
                    skipped.append(f"forecast {fdata.name} {months} months: no origin has that "
                                   f"much data before it")
                    continue
                cell = Cell("forecast", fdata.name, float(months), str(months))
                jobs.append((cell, partial(forecast_cell, cell, fdata, months)))
    return jobs, skipped


def _registered(adapter: Callable[..., Cell], *args: Any) -> Cell:
    """Run a training adapter on a fresh temporary MLflow store (no champion carried over)."""
    with temporary_registry():
        return adapter(*args)


def _best_peer(scores: dict[str, dict[str, float]], metric: str) -> tuple[str, float]:
    peers = {name: s.get(metric, math.nan) for name, s in scores.items() if name != OURS}
    peers = {n: v for n, v in peers.items() if np.isfinite(v)}
    if not peers:
        return "", math.nan
    direction = DIRECTION[metric]
    if direction == "higher":
        name = max(peers, key=lambda n: peers[n])
    elif direction == "lower":
        name = min(peers, key=lambda n: peers[n])
    else:
        name = min(peers, key=lambda n: abs(peers[n] - NOMINAL))
    return name, peers[name]


def verdict(metric: str, ours: float, peer: float) -> str:
    """``at/above`` or ``below`` the best peer (coverage: nearer 80% or not), ``-`` if unknown."""
    if not (np.isfinite(ours) and np.isfinite(peer)):
        return "-"
    direction = DIRECTION[metric]
    if direction == "higher":
        good = ours >= peer
    elif direction == "lower":
        good = ours <= peer
    else:
        good = abs(ours - NOMINAL) <= abs(peer - NOMINAL)
    return "at/above" if good else "BELOW"


def summary_table(cells: Sequence[Cell]) -> pd.DataFrame:
    """One row per cell and metric: ours next to the best peer, the verdict and the gate."""
    rows = []
    metrics_of = {"churn": ("roc_auc", "pr_auc"), "win": ("log_loss", "roc_auc"),
                  "forecast": ("mase", "coverage_80"), "feasibility": ("brier",)}
    for cell in cells:
        for metric in metrics_of[cell.family]:
            ours = cell.scores.get(OURS, {}).get(metric, math.nan)
            peer, value = _best_peer(cell.scores, metric)
            rows.append({
                "family": cell.family, "dataset": cell.dataset, "months": cell.label,
                "metric": metric, "answered": "yes" if cell.answered else "NO",
                "ours": ours, "best peer": peer or "-", "peer value": value,
                "vs peer": verdict(metric, ours, value), "gate": cell.gate, "note": cell.note,
                "seconds": round(cell.seconds, 1),
            })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = table["family"].map({f: i for i, f in enumerate(FAMILIES)})
    return table.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def long_scores(cells: Sequence[Cell]) -> pd.DataFrame:
    """Every model's every metric: family, dataset, months, model, metric, value."""
    rows = [{"family": c.family, "dataset": c.dataset, "months": c.label,
             "months_value": c.months, "model": model, "metric": metric, "value": value}
            for c in cells for model, scores in c.scores.items()
            for metric, value in scores.items()]
    return pd.DataFrame(rows, columns=["family", "dataset", "months", "months_value", "model",
                                       "metric", "value"])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "-" if not np.isfinite(value) else f"{value:.3f}"
    return str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """One row per cell: every metric as ``ours vs best peer``, **below** when ours is worse."""
    lines = ["| model | data | months | answered | ours vs best peer (same cases) | gate |",
             "|---|---|---|---|---|---|"]
    for (family, dataset, months), part in table.groupby(["family", "dataset", "months"],
                                                          sort=False):
        texts = []
        for _, row in part.iterrows():
            name, value, judged = row["best peer"], _fmt(row["peer value"]), row["vs peer"]
            flag = " **below**" if judged == "BELOW" else ""
            peer = f" vs {name} {value}{flag}" if name != "-" else " (no peer)"
            texts.append(f"{row['metric']} {_fmt(row['ours'])}{peer}")
        first = part.iloc[0]
        lines.append(f"| {family} | {dataset} | {months} | {first['answered']} | "
                     f"{'; '.join(texts)} | {first['gate'] or '-'} |")
    return "\n".join(lines) + "\n"


def plot(scores: pd.DataFrame, path: Path) -> Path:
    """Metric vs months: one row of panels per model family (and dataset), ours vs peers."""
    rank = {f: i for i, f in enumerate(FAMILIES)}
    panels = sorted(((f, d, m) for (f, d, m) in scores[["family", "dataset", "metric"]]
                     .drop_duplicates().itertuples(index=False)), key=lambda p: rank[p[0]])
    families = list(dict.fromkeys(f"{f} / {d}" for f, d, _ in panels))
    width = max(sum(1 for f, d, _ in panels if f"{f} / {d}" == name) for name in families)
    fig, axes = plt.subplots(len(families), width, figsize=(5.2 * width, 3.3 * len(families)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    column = dict.fromkeys(families, 0)
    for family, dataset, metric in panels:
        name = f"{family} / {dataset}"
        ax = axes[families.index(name), column[name]]
        column[name] += 1
        ax.set_visible(True)
        part = scores[(scores["family"] == family) & (scores["dataset"] == dataset)
                      & (scores["metric"] == metric)]
        for model, line in part.groupby("model", sort=False):
            line = line.sort_values("months_value")
            ours = model == OURS
            ax.plot(line["months_value"], line["value"], marker="o",
                    lw=2.4 if ours else 1.2, color="C3" if ours else None,
                    ls="-" if ours else "--", label=str(model), zorder=3 if ours else 2)
        if metric == "coverage_80":
            ax.axhline(NOMINAL, color="grey", lw=0.8, ls=":")
        arrow = {"higher": "higher is better", "lower": "lower is better",
                 "nominal": "best at 0.80"}[DIRECTION[metric]]
        ax.set_title(f"{name}: {metric} ({arrow})", fontsize=10)
        ax.set_xlabel("months of history")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _peak_gib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 2**20  # KiB -> GiB


def run_sweep(data: dict[str, Any], families: Sequence[str], lengths: Sequence[int],
              log: Path, progress: bool = True) -> tuple[list[Cell], list[str]]:
    """Run every cell (in order, so each feasibility cell follows its win cell)."""
    from tqdm import tqdm

    jobs, skipped = plan(data, families, lengths)
    cells = []
    bar = tqdm(jobs, disable=not progress, unit="cell", file=sys.stderr)
    for cell, work in bar:
        bar.set_description(f"{cell.family} {cell.dataset} {cell.label}m")
        cells.append(_run(cell, work, log))
    wanted = [c for c in cells if c.family in families]
    return wanted, skipped


def write_outputs(cells: Sequence[Cell], skipped: Sequence[str], out: Path, header: str
                  ) -> pd.DataFrame:
    table = summary_table(cells)
    scores = long_scores(cells)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "history_sweep.csv", index=False)
    scores.to_csv(out / "history_sweep_scores.csv", index=False)
    skips = "".join(f"- skipped: {s}\n" for s in skipped)
    notes = "".join(f"- {c.family} {c.dataset} {c.label}: {c.note}\n" for c in cells if c.note)
    (out / "history_sweep.md").write_text(
        f"{header}\n\n{to_markdown(table)}\n{skips}\nNotes:\n\n{notes}")
    if len(scores):
        plot(scores, out / "history_sweep.png")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"three lengths only ({', '.join(map(str, QUICK_LENGTHS))})")
    parser.add_argument("--months", type=int, nargs="+", default=None)
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    lengths = args.months or (QUICK_LENGTHS if args.quick else LENGTHS)
    started = time.perf_counter()
    failures = args.out / "history_sweep_failures.log"
    failures.unlink(missing_ok=True)
    data = load_data(args.families)
    cells, skipped = run_sweep(data, args.families, lengths, failures)
    seconds = time.perf_counter() - started
    header = (f"History sweep ({' '.join(map(str, lengths))} months; "
              f"{time.strftime('%Y-%m-%d %H:%M')}): ours vs the best peer in the same run; "
              f"{seconds / 60:.1f} min, peak RSS {_peak_gib():.2f} GiB")
    table = write_outputs(cells, skipped, args.out, header)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 70)
    print(header)
    print(table.drop(columns=["note"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for s in skipped:
        print(f"skipped: {s}")
    for cell in cells:
        if cell.note:
            print(f"note {cell.family} {cell.dataset} {cell.label}: {cell.note}")
    print(f"written: {args.out / 'history_sweep.csv'}, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
