"""Rolling-origin backtesting over a panel of revenue series.

A long series frame (``level``, ``key``, ``ds``, ``y``) becomes a :class:`Panel`: one row per
series on a common date grid, NaN before a series' first revenue and zero in the gaps after
it. Backtests cut the panel at a few origins (cutoffs) and hand each forecaster *only the
columns before the cutoff*: a model cannot see the future because it is never given it.

Where the origins go (``rolling_origin_splits``): by default ``n_windows`` full-horizon windows
ending at the last observation, ``horizon`` apart. With a short history the windows are
packed closer (step shrinks down to 1); when even one full window does not leave
``min_train`` periods to learn from, later windows are allowed to run past the end of the data
and are scored on the periods that exist. The late horizon steps then have fewer samples, which
the forecaster's interval calibration accounts for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.schemas import DS, KEY, LEVEL, Y
from models.metrics import CUTOFF, MODEL, SCALE, YHAT, YHAT_P10, YHAT_P50, YHAT_P90, H, mase_scale

__all__ = [
    "PARTIAL",
    "BacktestWindow",
    "ModelFn",
    "Panel",
    "backtest",
    "backtest_panel",
    "freq_alias",
    "known_before",
    "rolling_origin_splits",
    "season_length",
    "to_panel",
    "training_scales",
    "window_table",
]

# Optional boolean column of the series frame: True on an incomplete last period.
PARTIAL = "partial"

# Our frequency letters (the CLI's `--freq {D,W,M,Q}`) and the pandas aliases of the
# period-start timestamps the series frame uses.
_ALIASES = {"D": "D", "W": "W-MON", "M": "MS", "Q": "QS"}
_SEASONS = {"D": 7, "W": 52, "M": 12, "Q": 4}
_LETTERS = {**{v: k for k, v in _ALIASES.items()}, "QS-JAN": "Q", "W": "W"}


def _letter(freq: str) -> str:
    """The frequency letter (D, W, M or Q) of ``freq``, given as a letter or a pandas alias."""
    letter = freq if freq in _ALIASES else _LETTERS.get(freq)
    if letter is None:
        raise ValueError(f"unknown frequency {freq!r}: expected one of D, W, M, Q")
    return letter


def freq_alias(freq: str) -> str:
    """The pandas alias of the period starts of ``freq`` (``"M"`` -> ``"MS"``)."""
    return _ALIASES[_letter(freq)]


def season_length(freq: str) -> int:
    """Periods per year-like season: 7 days, 52 weeks, 12 months, 4 quarters."""
    return _SEASONS[_letter(freq)]


@dataclass(frozen=True)
class Panel:
    """Series on a common date grid.

    Attributes:
        ids: one row per series with ``level`` and ``key`` (row ``i`` is series ``i``).
        dates: the common grid of period starts.
        values: ``(n_series, n_dates)`` floats, NaN before each series' first observation.
        freq: the pandas alias of the grid.
    """

    ids: pd.DataFrame
    dates: pd.DatetimeIndex
    values: np.ndarray
    freq: str

    @property
    def n_series(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_obs(self) -> np.ndarray:
        """Observations per series (the grid length minus the NaN lead-in)."""
        return np.sum(~np.isnan(self.values), axis=1)

    def head(self, t: int) -> Panel:
        """The panel up to (excluding) grid position ``t``: the training part of a cutoff."""
        return Panel(self.ids, self.dates[:t], self.values[:, :t], self.freq)

    def subset(self, rows: np.ndarray) -> Panel:
        """The panel restricted to the series selected by ``rows`` (mask or positions)."""
        ids = self.ids.iloc[rows].reset_index(drop=True)
        return Panel(ids, self.dates, self.values[rows], self.freq)

    def future_dates(self, horizon: int) -> pd.DatetimeIndex:
        """The ``horizon`` period starts after the end of the grid."""
        return pd.date_range(self.dates[-1], periods=horizon + 1, freq=self.freq)[1:]


def _check_columns(series: pd.DataFrame) -> None:
    missing = [c for c in (LEVEL, KEY, DS, Y) if c not in series.columns]
    if missing:
        raise ValueError(f"series frame is missing columns: {', '.join(missing)}")


def _drop_partial(series: pd.DataFrame) -> pd.DataFrame:
    """Rows of complete periods only: an incomplete last period would read as a revenue drop."""
    if PARTIAL not in series.columns:
        return series
    return series.loc[~series[PARTIAL].fillna(False).astype(bool)]


def to_panel(series: pd.DataFrame, freq: str) -> Panel:
    """Long series frame -> :class:`Panel`.

    Partial periods are dropped; duplicate (level, key, ds) rows are summed; every series is
    zero-filled from its first observation to the end of the common grid (a node without
    revenue in a period had zero revenue), never before its first observation.

    Args:
        series: columns ``level``, ``key``, ``ds``, ``y`` and optionally ``partial``.
        freq: D, W, M or Q (or the pandas aliases D, W-MON, MS, QS).

    Raises:
        ValueError: on missing columns, an empty frame, or dates that are not period starts
            of ``freq``.
    """
    _check_columns(series)
    alias = freq_alias(freq)
    frame = _drop_partial(series)
    if frame.empty:
        raise ValueError("series frame has no complete periods")
    ds = pd.to_datetime(frame[DS])
    grid = pd.date_range(ds.min(), ds.max(), freq=alias)
    off_grid = pd.DatetimeIndex(ds.unique()).difference(grid)
    if len(off_grid):
        raise ValueError(
            f"dates are not period starts of freq {freq!r} ({alias}): "
            f"{', '.join(str(d.date()) for d in off_grid[:5])}"
        )
    wide = (
        frame.assign(**{DS: ds})
        .pivot_table(index=[LEVEL, KEY], columns=DS, values=Y, aggfunc="sum")
        .reindex(columns=grid)
    )
    values = wide.to_numpy(float)
    started = np.maximum.accumulate(~np.isnan(values), axis=1)
    values = np.where(started & np.isnan(values), 0.0, values)
    ids = wide.index.to_frame(index=False)
    return Panel(ids, grid, values, alias)


def rolling_origin_splits(
    n_obs: int,
    horizon: int,
    n_windows: int,
    step_size: int | None = None,
    min_train: int = 1,
) -> list[int]:
    """Cutoffs of a rolling-origin backtest as grid positions.

    A cutoff ``c`` trains on positions ``[0, c)`` and tests on ``[c, min(c + horizon, n_obs))``.

    Args:
        n_obs: length of the history.
        horizon: forecast horizon of each window.
        n_windows: wanted number of windows.
        step_size: periods between cutoffs; defaults to ``horizon`` (windows that tile the
            last ``n_windows * horizon`` periods).
        min_train: least number of training periods of the earliest window.

    Returns:
        Increasing cutoffs; fewer than ``n_windows`` (possibly none) when the history is short.
    """
    if n_windows < 1 or horizon < 1:
        raise ValueError("n_windows and horizon must be at least 1")
    step = step_size or horizon
    last_full = n_obs - horizon
    if last_full >= min_train and n_windows > 1:
        # Pack full-horizon windows closer when the default step does not fit them all.
        step = min(step, max(1, (last_full - min_train) // (n_windows - 1)))
    cutoffs = [c for c in (last_full - step * i for i in range(n_windows)) if c >= min_train]
    cutoffs = sorted(set(cutoffs))
    if len(cutoffs) < n_windows:
        # Windows that run past the end: scored on the periods that exist.
        stride = max(1, horizon // n_windows)
        first = max(min_train, last_full + stride) if cutoffs else max(min_train, last_full)
        extra = range(first, n_obs, stride)
        cutoffs += [c for c in extra if c not in cutoffs][: n_windows - len(cutoffs)]
    return sorted(cutoffs)


@dataclass(frozen=True)
class BacktestWindow:
    """The outcome of one backtest origin, aligned with the panel's series.

    Attributes:
        cutoff: grid position of the first test period (training is ``[0, cutoff)``).
        eligible: series that had at least ``min_train`` observations at the cutoff.
        actual: ``(n_series, h)`` test values (NaN where the series had not started).
        scale: ``(n_series,)`` MASE scale of each series' training part.
        preds: model name -> ``(n_series, h)`` forecasts, NaN for ineligible series.
    """

    cutoff: int
    eligible: np.ndarray
    actual: np.ndarray
    scale: np.ndarray
    preds: dict[str, np.ndarray]

    @property
    def steps(self) -> int:
        return int(self.actual.shape[1])


def known_before(windows: Sequence[BacktestWindow], cutoff: int) -> list[BacktestWindow]:
    """The parts of earlier windows whose test periods lie before ``cutoff``: what was known
    at that cutoff (prequential learning never looks past it)."""
    known = []
    for w in windows:
        steps = min(w.steps, cutoff - w.cutoff)
        if steps <= 0:
            continue
        preds = {name: values[:, :steps] for name, values in w.preds.items()}
        known.append(BacktestWindow(w.cutoff, w.eligible, w.actual[:, :steps], w.scale, preds))
    return known


# A forecaster for backtests: training panel and horizon -> model name -> (n_series, horizon).
ModelFn = Callable[[Panel, int], dict[str, np.ndarray]]


def training_scales(train: Panel, season: int) -> np.ndarray:
    """MASE scale of every series of a training panel."""
    return np.array([mase_scale(row, season) for row in train.values])


def backtest_panel(
    model_fn: ModelFn,
    panel: Panel,
    cutoffs: Sequence[int],
    horizon: int,
    min_train: int,
    season: int,
    progress: Callable[[], None] | None = None,
) -> list[BacktestWindow]:
    """Run ``model_fn`` at every cutoff on the series that were old enough then.

    ``model_fn`` receives ``panel.head(cutoff)`` restricted to eligible series: the data it
    may use, nothing after the cutoff. Cutoffs run oldest first, which lets a stateful
    forecaster choose a model specification once, on the oldest data.
    """
    windows = []
    for cutoff in cutoffs:
        train = panel.head(cutoff)
        eligible = train.n_obs >= min_train
        steps = min(horizon, panel.values.shape[1] - cutoff)
        preds = {}
        if eligible.any():
            raw = model_fn(train.subset(eligible), horizon)
            for name, values in raw.items():
                full = np.full((panel.n_series, steps), np.nan)
                full[eligible] = values[:, :steps]
                preds[name] = full
        actual = panel.values[:, cutoff : cutoff + steps]
        scale = training_scales(train, season)
        windows.append(BacktestWindow(cutoff, eligible, actual, scale, preds))
        if progress is not None:
            progress()
    return windows


def window_table(
    panel: Panel,
    window: BacktestWindow,
    preds: dict[str, np.ndarray] | None = None,
    bands: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Long backtest rows of one window: level, key, model, cutoff, ds, h, y, yhat, scale.

    Args:
        panel: the panel the window was cut from.
        window: the window.
        preds: forecasts to tabulate instead of ``window.preds`` (e.g. combined ones).
        bands: model name -> ``(n_series, steps, 3)`` 10/50/90% quantiles, added as
            ``yhat_p10``, ``yhat_p50``, ``yhat_p90``.

    Returns:
        One row per model, series and test period where both a forecast and an actual exist.
    """
    preds = window.preds if preds is None else preds
    bands = bands or {}
    steps = window.steps
    dates = panel.dates[window.cutoff : window.cutoff + steps]
    cutoff = panel.dates[window.cutoff - 1]
    n = panel.n_series
    frames = []
    for name, values in preds.items():
        columns = {
            LEVEL: np.repeat(panel.ids[LEVEL].to_numpy(), steps),
            KEY: np.repeat(panel.ids[KEY].to_numpy(), steps),
            MODEL: name,
            CUTOFF: cutoff,
            DS: np.tile(dates, n),
            H: np.tile(np.arange(1, steps + 1), n),
            Y: window.actual.ravel(),
            YHAT: values.ravel(),
            SCALE: np.repeat(window.scale, steps),
        }
        if name in bands:
            flat = bands[name].reshape(-1, 3)
            columns.update({YHAT_P10: flat[:, 0], YHAT_P50: flat[:, 1], YHAT_P90: flat[:, 2]})
        frame = pd.DataFrame(columns)
        frames.append(frame.loc[frame[YHAT].notna() & frame[Y].notna()])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def backtest(
    model_fn: ModelFn,
    series: pd.DataFrame,
    horizon: int,
    n_windows: int,
    *,
    freq: str = "M",
    step_size: int | None = None,
    min_train: int | None = None,
) -> pd.DataFrame:
    """Rolling-origin backtest of ``model_fn`` on a long series frame.

    Args:
        model_fn: training :class:`Panel` and horizon -> model name -> ``(n_series, horizon)``
            point forecasts.
        series: long frame with ``level``, ``key``, ``ds``, ``y`` (optionally ``partial``).
        horizon: periods forecast from each cutoff.
        n_windows: number of cutoffs wanted.
        freq: D, W, M or Q.
        step_size: periods between cutoffs (default ``horizon``).
        min_train: least number of observations a series needs at a cutoff to be forecast
            there (default one season).

    Returns:
        level, key, model, cutoff (last training period), ds, h, y, yhat, scale.
    """
    panel = to_panel(series, freq)
    season = season_length(freq)
    min_train = season if min_train is None else min_train
    cutoffs = rolling_origin_splits(panel.values.shape[1], horizon, n_windows, step_size, min_train)
    windows = backtest_panel(model_fn, panel, cutoffs, horizon, min_train, season)
    tables = [window_table(panel, w) for w in windows]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
