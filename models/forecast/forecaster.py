"""The revenue forecaster: backtested candidates, a weighted combination, conformal intervals.

How :class:`RevenueForecaster` works, in the order ``fit`` does it:

1. **Panel.** The long series frame becomes a panel on a common date grid (partial last
   periods dropped, zero-filled after each series' first revenue, see ``models.backtest``).
2. **Candidates, backtested.** Every candidate of the registry
   (:mod:`models.forecast.candidates`) that was asked for forecasts from ``n_windows`` rolling
   origins (the last ``n_windows`` horizons by default) using only data before each origin,
   then once more from the end of the data: ``seasonal_naive`` (:mod:`~models.forecast.naive`),
   ``ets``, ``theta``, ``arima`` and ``autoets`` (statsforecast, one batched call per model
   family, :mod:`~models.forecast.statistical`), ``prophet`` (on the levels its budget allows,
   :mod:`~models.forecast.prophet`) and ``lgbm`` (one global LightGBM,
   :mod:`~models.forecast.lgbm`). The statistical models see at most the last
   ``_MAX_HISTORY`` periods (10 years of months). A series that saw at least one season, but
   fewer than a model needs to find seasonality itself (three seasons for ETS and
   ARIMA, four for Theta), is forecast divided by its observed season's indices, pooled over
   the panel's series and shrunk by the evidence (:mod:`models.forecast.season`). The
   per-series candidates (all but Prophet and LightGBM) run on groups of series, the CRC-32
   bucket of each series id (:mod:`models.forecast.local`): in this process by default, or on
   a compute engine (``fit``'s ``runner``), with the same numbers to the last bit.
3. **Combination** (:mod:`models.forecast.combine`): each series' candidates are weighted by
   their backtest MASE, shrunk towards their level's and blended with the default combination
   (ETS, AutoARIMA and AutoETS, plus Theta from four seasons: the M4 lesson) as if the default
   had four windows of evidence, so a few noisy windows cannot pick a single model. When every
   backtest window trained on less than a season but the full history holds one (12 months of a
   monthly series), the windows measured forecasts that could not be seasonal: the final
   forecasts then ignore them and use the default with the seasonal naive added. A history
   under one season ignores them too (they saw even less of the season) and uses the default
   without AutoARIMA, averaged with each series' mean (nothing tells level, trend and season
   apart yet: :func:`~models.forecast.combine.with_history_mean`).
4. **Reconciliation** (with a hierarchy, :mod:`models.forecast.reconciliation`): bottom-up,
   ``wls_struct`` or MinT (shrink), whichever did best in the backtest, averaged over levels.
5. **Conformal intervals** (:mod:`models.forecast.conformal`): backtest errors of the final
   forecasts, scaled, pooled per level and horizon step; their 10/50/90% quantiles are added to
   ``yhat``. The same method calibrates every candidate, so ``metrics_`` compares them on equal
   terms. Under two seasons of history the errors are mirrored (bands centred on the forecast:
   a few windows' errors take the sign of the part of the season they covered) and, when the
   final forecasts are seasonal, windows trained on under a season are left out. With fewer than
   ``MIN_WINDOWS`` windows or ``MIN_ERRORS`` errors the bands are widened to at least a random
   walk's (on the deseasonalised history where the forecasts carry an observed season), and
   ``sane_intervals`` checks every forecast row before it is kept.
6. **Short series** (fewer than ``min_history`` observations) get a fallback: seasonal naive
   with at least one season, else the mean; their intervals use the seasonal naive's
   calibration. ``notes_`` says which series fell back and anything else worth knowing.

Nothing in ``backtest_`` sees past its cutoff: the combination weights, MinT covariance and
interval quantiles used in a window are learned only from the errors of earlier windows that
were known by that cutoff (prequential). The first window therefore uses the default
combination, structural (WLS) reconciliation and has no intervals; ``metrics_``'s
``coverage_80`` is measured on the later windows, an honest out-of-sample estimate. The final
forecasts use everything.

All forecasts are clipped at zero: revenue forecasts are never negative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.schemas import DS, KEY, LEVEL
from models.backtest import (
    BacktestWindow,
    ModelFn,
    Panel,
    backtest_panel,
    freq_alias,
    known_before,
    rolling_origin_splits,
    season_length,
    to_panel,
    training_scales,
    window_table,
)
from models.forecast.base import COMBINED, RECONCILED, CandidateContext, Forecaster
from models.forecast.candidates import CANDIDATES, REGISTRY, default_models
from models.forecast.combine import (
    COMBINATIONS,
    combined_forecast,
    learned_weights,
    weights_frame,
    with_history_mean,
)
from models.forecast.conformal import (
    apply_quantiles,
    calibration,
    sane_intervals,
    widened,
    window_bands,
)
from models.forecast.local import LocalRunner, local_job, run_here
from models.forecast.reconciliation import align_tree, reconcile_windows
from models.forecast.season import Deseasonalised, observed_season_indices
from models.metrics import YHAT, YHAT_P10, YHAT_P50, YHAT_P90, metrics_table
from models.reconcile import Hierarchy

__all__ = ["Progress", "RevenueForecaster", "short_min_history", "young_history"]

# Longest history (periods) the statistical candidates see.
_MAX_HISTORY = {"D": 364, "W": 156, "M": 120, "Q": 40}
# Shortest training history of a backtest window or a fully modelled series when the history
# is shorter than two seasons.
_MIN_SHORT_HISTORY = 3

Progress = Callable[[int, int], None]


def young_history(n_periods: int, season: int) -> bool:
    """Under two seasons: the backtest windows see at most part of one season (their errors'
    sign follows it) and intervals are made symmetric (:func:`~models.forecast.conformal
    .mirrored`)."""
    return n_periods < 2 * season


def short_min_history(n_periods: int, season: int) -> int:
    """Observations a series needs for the full candidate set (and a backtest window for
    training): one season, or half the history when that is shorter (at least 3), so that
    a young history still gets backtest windows instead of none."""
    return int(min(season, max(_MIN_SHORT_HISTORY, n_periods // 2)))


@dataclass(frozen=True)
class _Plan:
    """Everything ``fit`` derives from its inputs before running models."""

    panel: Panel
    season: int
    letter: str
    min_history: int
    cutoffs: list[int]
    tree: Hierarchy | None
    tree_rows: np.ndarray  # panel row of every tree node, in tree order


class RevenueForecaster:
    """Backtested combination of forecasters with conformal intervals and reconciliation.

    scikit-learn style: ``__init__`` only stores parameters, ``fit`` returns ``self`` and
    learned state ends in ``_``. See the module docstring for the method.

    Args:
        freq: D, W, M or Q (the pandas aliases D, W-MON, MS, QS are accepted too).
        horizon: periods to forecast.
        n_windows: backtest origins (windows of ``horizon`` periods).
        candidates: names in the registry (:data:`~models.forecast.candidates.REGISTRY`);
            default every registered candidate.
        combine: one of :data:`~models.forecast.combine.COMBINATIONS`.
        levels_to_reconcile: levels kept coherent with the hierarchy given to ``fit``;
            default every hierarchy level (plus ``company``) present in the series.
        interval: nominal coverage of the ``yhat_p10``..``yhat_p90`` interval; only 0.8 is
            supported (the output columns are the 10% and 90% quantiles).
        n_jobs: parallel jobs for ETS, Prophet and LightGBM (-1: every core).
        seed: random seed (LightGBM).
        min_history: observations a series needs for the full candidate set; shorter series
            fall back to seasonal naive or the mean. Default one season.
        prophet_budget: Prophet's backtest-and-fit cost allowed, as a fraction of one Prophet
            fit per series.

    Attributes:
        backtest_: level, key, model, cutoff, ds, h, y, yhat, scale, yhat_p10/p50/p90: every
            candidate's, the ``combination``'s and (with a hierarchy) the ``reconciled``
            backtest forecasts; intervals from errors known at each cutoff (none in the first
            window).
        metrics_: per model and level: mase, wape, smape, pinball, coverage_80, n_series.
        weights_: level, key, model, weight: the combination used for the final forecasts.
        quantiles_: level -> ``(horizon, 3)`` scaled-error quantiles of the published
            forecasts ("" holds the all-levels pool).
        reconciliation_: one of :data:`~models.forecast.reconciliation.RECONCILIATIONS`, or
            None without a hierarchy.
        notes_: plain-language remarks (fallbacks, skipped candidates, choices made).
        forecast_: the forecasts ``predict`` serves.
    """

    def __init__(
        self,
        freq: str = "M",
        horizon: int = 12,
        n_windows: int = 3,
        candidates: Sequence[str] = CANDIDATES,
        combine: str = "backtest_weights",
        levels_to_reconcile: Sequence[str] | None = None,
        interval: float = 0.8,
        n_jobs: int = 1,
        seed: int = 42,
        min_history: int | None = None,
        prophet_budget: float = 0.5,
    ) -> None:
        self.freq = freq
        self.horizon = horizon
        self.n_windows = n_windows
        self.candidates = candidates
        self.combine = combine
        self.levels_to_reconcile = levels_to_reconcile
        self.interval = interval
        self.n_jobs = n_jobs
        self.seed = seed
        self.min_history = min_history
        self.prophet_budget = prophet_budget

    # --- checks and planning ----------------------------------------------------------------

    def _check_params(self) -> None:
        known = tuple(REGISTRY)
        unknown = [c for c in self.candidates if c not in known]
        if unknown or not self.candidates:
            raise ValueError(f"unknown or no candidates {unknown}: expected some of {known}")
        if self.combine not in COMBINATIONS:
            raise ValueError(f"combine must be one of {COMBINATIONS}, not {self.combine!r}")
        if not np.isclose(self.interval, 0.8):
            raise ValueError("only interval=0.8 is supported (yhat_p10..yhat_p90)")
        if self.horizon < 1 or self.n_windows < 1:
            raise ValueError("horizon and n_windows must be at least 1")
        freq_alias(self.freq)

    def _plan(
        self, series: pd.DataFrame, hierarchy: pd.DataFrame | None, notes: list[str]
    ) -> _Plan:
        panel = to_panel(series, self.freq)
        letter = {"D": "D", "W-MON": "W", "MS": "M", "QS": "Q"}[panel.freq]
        season = season_length(self.freq)
        n_periods = panel.values.shape[1]
        min_history = (self.min_history if self.min_history is not None
                       else short_min_history(n_periods, season))
        if min_history < season and self.min_history is None:
            notes.append(
                f"short history ({n_periods} periods, under two seasons of {season}): series "
                f"with at least {min_history} observations get every candidate, and backtest "
                "windows start from that much history")
        tree, panel, tree_rows = align_tree(panel, hierarchy, self.levels_to_reconcile, notes)
        cutoffs = rolling_origin_splits(
            panel.values.shape[1], self.horizon, self.n_windows, None, min_history
        )
        if len(cutoffs) < self.n_windows:
            notes.append(
                f"history of {panel.values.shape[1]} periods allows {len(cutoffs)} backtest "
                f"window(s) of the {self.n_windows} asked for"
            )
        return _Plan(panel, season, letter, min_history, cutoffs, tree, tree_rows)

    # --- fitting ----------------------------------------------------------------------------

    def fit(
        self,
        series: pd.DataFrame,
        hierarchy: pd.DataFrame | None = None,
        progress: Progress | None = None,
        runner: LocalRunner | None = None,
    ) -> RevenueForecaster:
        """Backtest the candidates, learn the combination and intervals, refit on all data.

        Args:
            series: long frame ``level``, ``key``, ``ds``, ``y`` (optionally ``partial``).
            hierarchy: one row per bottom node with one column per level (e.g. ``rep``,
                ``team``, ``region``) to reconcile forecasts across; ``None`` for none.
            progress: called as ``progress(done, total)`` after every unit of work.
            runner: where the per-series candidates run (:mod:`models.forecast.local`), e.g.
                on groups of series on Spark; default the whole panel in this process. The
                result is the same wherever they run.

        Returns:
            self.
        """
        self._check_params()
        notes: list[str] = []
        self.notes_ = notes
        plan = self._plan(series, hierarchy, notes)
        models = [c for c in REGISTRY if c in self.candidates]
        total = (len(plan.cutoffs) + 1) * len(models) + 1
        done = [0]

        def tick() -> None:
            # One unit per candidate and origin (plus the final fit), one for the rest.
            done[0] = min(done[0] + 1, total - 1)
            if progress is not None:
                progress(done[0], total)

        forecasters = self._forecasters(plan, models, notes)
        local = {n: f for n, f in forecasters.items() if REGISTRY[n].per_series}
        job = local_job(local, {n: REGISTRY[n].deseasonalise for n in local}, plan.panel,
                        plan.cutoffs, self.horizon, plan.min_history, plan.season)
        done_here = dict(zip(job.cutoffs, (runner or run_here)(job, plan.panel), strict=True))
        model_fn = self._model_fn(plan, models, forecasters, done_here, tick)
        windows = backtest_panel(
            model_fn, plan.panel, plan.cutoffs, self.horizon, plan.min_history, plan.season
        )
        final = self._final_window(plan, model_fn)
        self._learn(plan, models, windows, final, notes)
        if progress is not None:
            progress(total, total)
        return self

    def _forecasters(self, plan: _Plan, models: list[str], notes: list[str]
                     ) -> dict[str, Forecaster]:
        """The selected candidates built from the registry, a fresh state per ``fit``;
        candidates with nothing to forecast (factory returned None) are left out."""
        context = CandidateContext(
            season=plan.season,
            letter=plan.letter,
            max_history=_MAX_HISTORY[plan.letter],
            seed=self.seed,
            n_jobs=self.n_jobs,
            ids=plan.panel.ids,
            n_fits=len(plan.cutoffs) + 1,
            budget=self.prophet_budget,
            notes=notes,
        )
        built = {name: REGISTRY[name].build(context) for name in models}
        return {name: forecaster for name, forecaster in built.items() if forecaster is not None}

    def _model_fn(
        self,
        plan: _Plan,
        models: list[str],
        forecasters: dict[str, Forecaster],
        done: dict[int, dict[str, np.ndarray]],
        tick: Callable[[], None],
    ) -> ModelFn:
        """The candidates as one backtest function: each fitted on the training panel and
        asked for ``horizon`` periods, in registry order (one progress unit each). The
        per-series candidates' forecasts were made beforehand (``done``: cutoff -> name ->
        forecasts of every series of the panel); their eligible rows are taken."""
        def run(train: Panel, horizon: int) -> dict[str, np.ndarray]:
            out: dict[str, np.ndarray] = {}
            cutoff = train.values.shape[1]
            eligible = plan.panel.head(cutoff).n_obs >= plan.min_history
            # Series that saw one season but are too short for the seasonal models use the
            # observed season's indices (see ``models.forecast.season``).
            unseasoned = cutoff >= plan.season
            for name in models:
                forecaster = forecasters.get(name)
                if name in done.get(cutoff, {}):
                    out[name] = done[cutoff][name][eligible]
                elif forecaster is not None:
                    needed = REGISTRY[name].deseasonalise
                    if unseasoned and needed:
                        forecaster = Deseasonalised(forecaster, plan.season, needed)
                    out[name] = forecaster.fit(train).predict(horizon)
                tick()
            return out

        return run

    def _final_window(self, plan: _Plan, model_fn: ModelFn) -> BacktestWindow:
        """Candidates refitted on the full history, as a window with no actuals."""
        panel = plan.panel
        eligible = panel.n_obs >= plan.min_history
        preds: dict[str, np.ndarray] = {}
        if eligible.any():
            for name, values in model_fn(panel.subset(eligible), self.horizon).items():
                full = np.full((panel.n_series, self.horizon), np.nan)
                full[eligible] = values
                preds[name] = full
        actual = np.full((panel.n_series, self.horizon), np.nan)
        scale = training_scales(panel, plan.season)
        return BacktestWindow(panel.values.shape[1], eligible, actual, scale, preds)

    def _learn(
        self,
        plan: _Plan,
        models: list[str],
        windows: list[BacktestWindow],
        final: BacktestWindow,
        notes: list[str],
    ) -> None:
        """Combination, reconciliation, calibration and the tables, from the windows."""
        panel = plan.panel
        levels = panel.ids[LEVEL].astype(str).to_numpy()
        default = default_models(models, panel.values.shape[1], plan.season)
        for w in windows:
            # A forecast from under one season of history uses the default anchored on the
            # history's mean (``_combined``); the windows it could learn from saw even less.
            known = known_before(windows, w.cutoff) if w.cutoff >= plan.season else []
            window_default = (default_models(models, w.cutoff, plan.season)
                              if w.cutoff < plan.season else default)
            weights = learned_weights(known, models, levels, window_default, self.combine)
            w.preds[COMBINED] = self._combined(plan, w, models, weights, window_default)
        # Windows all trained on less than a season scored forecasts that could not be
        # seasonal (seasonal naive was plain naive): no evidence about final forecasts that
        # have a season. They then use the default, with the seasonal naive added. A history
        # under one season has only such windows, and its forecasts use the default too.
        final_windows, final_default = windows, default
        if final.cutoff >= plan.season and all(w.cutoff < plan.season for w in windows):
            final_windows = []
            if "seasonal_naive" in models:
                final_default = [*default, "seasonal_naive"]
        elif final.cutoff < plan.season:
            final_windows = []
            if windows:
                notes.append(
                    f"history under one season ({final.cutoff} periods of {plan.season}): the "
                    f"forecast is the default combination ({', '.join(final_default)}) with the "
                    "history's mean, not weighted by a backtest whose windows cover only part of "
                    "a season")
        weights = learned_weights(final_windows, models, levels, final_default, self.combine)
        self.weights_ = weights_frame(panel, models, weights)
        final.preds[COMBINED] = self._combined(plan, final, models, weights, final_default)
        short = np.flatnonzero(~final.eligible)
        if short.size:
            names = ", ".join(
                f"{panel.ids.at[i, LEVEL]}/{panel.ids.at[i, KEY]}" for i in short[:10]
            )
            notes.append(
                f"{short.size} series with fewer than {plan.min_history} observations use a "
                f"fallback (seasonal naive, or the mean under one season): {names}"
                + (" ..." if short.size > 10 else "")
            )
        output = COMBINED
        self.reconciliation_: str | None = None
        if plan.tree is not None:
            output = RECONCILED
            self.reconciliation_ = reconcile_windows(plan.tree, plan.tree_rows, windows, final,
                                                     levels, notes)
        self._calibrate(plan, models, windows, final, levels, output)

    def _combined(self, plan: _Plan, window: BacktestWindow, models: list[str],
                  weights: np.ndarray, default: list[str]) -> np.ndarray:
        """The combination of a window (or of the final fit); from under one season of
        history, averaged with the history's mean as one more default model
        (:func:`~models.forecast.combine.with_history_mean`)."""
        combined = combined_forecast(plan.panel, window, models, weights, default, plan.season)
        if window.cutoff < plan.season:
            combined = with_history_mean(combined, plan.panel.head(window.cutoff), len(default))
        return combined

    def _calibrate(
        self,
        plan: _Plan,
        models: list[str],
        windows: list[BacktestWindow],
        final: BacktestWindow,
        levels: np.ndarray,
        output: str,
    ) -> None:
        """Conformal quantiles per model; the backtest table, metrics and the forecasts."""
        panel = plan.panel
        scored = [*models, COMBINED, *([RECONCILED] if output == RECONCILED else [])]
        tables, quantiles = [], {}
        spread: dict[str, np.ndarray] = {}
        symmetric = young_history(panel.values.shape[1], plan.season)
        if symmetric:
            self.notes_.append(
                f"young history ({panel.values.shape[1]} periods, under two seasons): 80% "
                "intervals are centred on the forecast, as wide as the backtest's absolute "
                "errors (the sign of a few windows' errors says which part of the season they "
                "covered, not a lasting bias)")
        for name in scored:
            quantiles[name], spread[name] = calibration(windows, name, final.scale, levels,
                                                        self.horizon, symmetric)
            for w in windows:
                if name not in w.preds:
                    continue
                pred, bands = window_bands(windows, w, name, levels, symmetric)
                tables.append(window_table(panel, w, {name: pred}, {name: bands}))
        self.backtest_ = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        self.metrics_ = metrics_table(self.backtest_) if len(self.backtest_) else pd.DataFrame()
        backed = [w for w in windows if output in w.preds]
        seasonal = [w for w in backed if w.cutoff >= plan.season]
        if final.cutoff >= plan.season and len(seasonal) < len(backed):
            # Windows trained on under a season forecast without the season the final
            # forecasts have: their errors overstate the final ones (several times over on
            # monthly retail with 12 to 18 months), so only the others calibrate.
            self.notes_.append(
                f"{len(backed) - len(seasonal)} backtest window(s) trained on under one season "
                "left out of the intervals (their forecasts could not be seasonal)")
            backed = seasonal
            quantiles[output], spread[output] = calibration(
                backed, output, final.scale, levels, self.horizon, symmetric)
        n_errors = sum(int(np.isfinite(w.actual[w.eligible]).sum()) for w in backed)
        quantiles[output] = widened(quantiles[output], self._floor_panel(plan), final.scale,
                                    self.horizon, len(backed), n_errors, self.notes_, symmetric)
        self.quantiles_ = quantiles[output]
        self.spread_ = spread[output]
        frame = self._forecast_frame(plan, final, levels, quantiles, output)
        self.forecast_ = sane_intervals(frame, self.notes_)

    @staticmethod
    def _floor_panel(plan: _Plan) -> Panel:
        """The panel whose one-step changes set the random-walk floor of the intervals: the
        history divided by its observed season's indices where the forecasts carry them
        (:func:`~models.forecast.season.observed_season_indices`: one season seen, too few for
        the models' own), since their errors do not include the seasonal swings."""
        panel, season = plan.panel, plan.season
        indices = observed_season_indices(panel.values, season, 3)
        if np.allclose(indices, 1.0):
            return panel
        n_dates = panel.values.shape[1]
        past = np.tile(indices, int(np.ceil(n_dates / season)) + 1)[:, -n_dates:]
        return Panel(panel.ids, panel.dates, panel.values / past, panel.freq)

    def _forecast_frame(
        self,
        plan: _Plan,
        final: BacktestWindow,
        levels: np.ndarray,
        quantiles: dict[str, dict[str, np.ndarray]],
        output: str,
    ) -> pd.DataFrame:
        panel = plan.panel
        point = np.maximum(final.preds[output], 0.0)
        bands = apply_quantiles(point, final.scale * self.spread_, levels, quantiles[output])
        # Fallback series borrow the seasonal naive's calibration when it exists.
        naive_q = quantiles.get("seasonal_naive") or quantiles[output]
        fallback_rows = ~final.eligible
        if fallback_rows.any() and naive_q:
            bands[fallback_rows] = apply_quantiles(
                point[fallback_rows], final.scale[fallback_rows], levels[fallback_rows], naive_q
            )
        dates = panel.future_dates(self.horizon)
        frame = pd.DataFrame(
            {
                LEVEL: np.repeat(panel.ids[LEVEL].to_numpy(), self.horizon),
                KEY: np.repeat(panel.ids[KEY].to_numpy(), self.horizon),
                DS: np.tile(dates, panel.n_series),
                YHAT: point.ravel(),
            }
        )
        flat = bands.reshape(-1, 3)
        return frame.assign(**{YHAT_P10: flat[:, 0], YHAT_P50: flat[:, 1], YHAT_P90: flat[:, 2]})

    # --- prediction -------------------------------------------------------------------------

    def predict(self, horizon: int | None = None) -> pd.DataFrame:
        """Forecasts from the end of the fitted history.

        Args:
            horizon: periods to return, at most the fitted ``horizon`` (default all of them).

        Returns:
            ``level``, ``key``, ``ds``, ``yhat``, ``yhat_p10``, ``yhat_p50``, ``yhat_p90``;
            never negative; ``yhat`` coherent across the hierarchy given to ``fit``.

        Raises:
            RuntimeError: before ``fit``.
            ValueError: for a horizon longer than the fitted one.
        """
        if not hasattr(self, "forecast_"):
            raise RuntimeError("RevenueForecaster is not fitted: call fit() first")
        horizon = self.horizon if horizon is None else horizon
        if not 1 <= horizon <= self.horizon:
            raise ValueError(f"horizon must be between 1 and the fitted horizon {self.horizon}")
        keep = self.forecast_.groupby([LEVEL, KEY], sort=False).cumcount() < horizon
        return self.forecast_.loc[keep].reset_index(drop=True)
