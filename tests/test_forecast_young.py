"""Young histories (under one or two seasons) and the statsforecast batch of the forecaster.

Small synthetic panels only (a few series, 9 months).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.schemas import DS, KEY, LEVEL, Y
from models.backtest import Panel, to_panel
from models.forecast import RevenueForecaster
from models.forecast import statistical as stats
from models.forecast.base import CandidateContext
from models.forecast.candidates import REGISTRY, default_models
from models.forecast.combine import with_history_mean
from models.forecast.conformal import calibration, mirrored
from models.forecast.forecaster import young_history
from models.metrics import YHAT, YHAT_P10, YHAT_P90

MODELS = ["seasonal_naive", "ets", "theta", "arima", "autoets", "lgbm"]
CHEAP = ("seasonal_naive", "ets", "autoets")


def run_up(n_series: int = 3, months: int = 9, seed: int = 0) -> pd.DataFrame:
    """Months of flat sales ending in a steep run-up (the months before a December peak)."""
    rng = np.random.default_rng(seed)
    shape = np.r_[np.ones(months - 3), 1.3, 1.6, 2.0]
    rows = [pd.DataFrame({LEVEL: "rep", KEY: f"r{k}",
                          DS: pd.date_range("2021-04-01", periods=months, freq="MS"),
                          Y: 100.0 * (k + 1) * shape * rng.normal(1.0, 0.02, months)})
            for k in range(n_series)]
    return pd.concat(rows, ignore_index=True)


def test_under_one_season_the_default_leaves_out_arima() -> None:
    assert default_models(MODELS, 9, 12) == ["ets", "autoets"]
    assert default_models(MODELS, 12, 12) == ["ets", "arima", "autoets"]
    assert default_models(["arima"], 9, 12) == ["arima"]  # nothing else to average


def test_history_mean_counts_as_one_more_default_model() -> None:
    values = np.array([[100.0, 100.0, 100.0, 200.0]])
    train = Panel(pd.DataFrame({LEVEL: ["rep"], KEY: ["a"]}),
                  pd.date_range("2021-01-01", periods=4, freq="MS"), values, "MS")
    combined = np.full((1, 2), 200.0)
    assert np.allclose(with_history_mean(combined, train, 2), (2 * 200.0 + 125.0) / 3)


def test_a_run_up_under_one_season_is_not_extrapolated_and_says_why() -> None:
    """Nine months ending in a run-up: the forecast stays below the last month (the history's
    mean anchors it), ignores the backtest weights and the notes say so."""
    series = run_up()
    model = RevenueForecaster(horizon=6, candidates=CHEAP).fit(series)
    assert any("under one season" in n for n in model.notes_)
    assert model.backtest_["cutoff"].nunique() >= 1
    assert (model.weights_["weight"] == 0).all()  # no learned weights: the default's mean
    last = series.groupby(KEY)[Y].last()
    first = model.predict().groupby(KEY)[YHAT].first()
    assert (first < 0.95 * last).all()


def test_mirrored_errors_give_a_band_centred_on_the_forecast() -> None:
    errors = [np.array([[1.0, 2.0], [3.0, 4.0]])]
    assert len(mirrored(errors, False)) == 1
    both = mirrored(errors, True)
    assert np.allclose(both[1], -errors[0])


def test_young_intervals_are_centred_even_when_every_backtest_error_has_one_sign() -> None:
    """The run-up makes every backtest window under-forecast; the young history's band is
    symmetric around the forecast (where not clipped at zero), not shifted above it."""
    assert young_history(9, 12) and not young_history(24, 12)
    model = RevenueForecaster(horizon=4, candidates=CHEAP).fit(run_up(months=10))
    errors = model.backtest_.query("model == 'combination'").eval("y - yhat").dropna()
    assert (errors > 0).mean() > 0.8  # (nearly) one-sided
    out = model.predict()
    above, below = out[YHAT_P90] - out[YHAT], out[YHAT] - out[YHAT_P10]
    unclipped = out[YHAT_P10] > 0
    assert unclipped.any()
    ratio = (above / below)[unclipped]  # equal up to one rank of the conformal quantiles
    assert ((ratio > 0.8) & (ratio < 1.25)).all()
    assert any("centred on the forecast" in n for n in model.notes_)


def test_calibration_symmetric_quantiles_are_opposite() -> None:
    panel = to_panel(run_up(months=10), "M")
    from models.backtest import BacktestWindow
    actual = np.full((panel.n_series, 3), 10.0)
    window = BacktestWindow(5, np.ones(panel.n_series, bool), actual, np.ones(panel.n_series),
                            {"m": np.zeros((panel.n_series, 3))})
    levels = np.array(["rep"] * panel.n_series)
    one_sided, _ = calibration([window], "m", np.ones(panel.n_series), levels, 3)
    centred, _ = calibration([window], "m", np.ones(panel.n_series), levels, 3, symmetric=True)
    assert (one_sided["rep"][:, 0] > 0).all()
    assert np.allclose(centred["rep"][:, 0], -centred["rep"][:, 2])


def test_autoets_and_arima_share_one_statsforecast_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both candidates fitted on the same panel make one ``StatsForecast`` call, and each gets
    the forecasts a call of its own gives."""
    panel = to_panel(run_up(n_series=2, months=14, seed=1), "M")
    calls: list[list[str]] = []
    real = stats.sf_forecast

    def counted(train: Panel, horizon: int, models: list, max_history: int
                ) -> dict[str, np.ndarray]:
        calls.append([m.alias for m in models])
        return real(train, horizon, models, max_history)

    monkeypatch.setattr(stats, "sf_forecast", counted)
    context = CandidateContext(season=12, letter="M", max_history=120, seed=0, n_jobs=1,
                               ids=panel.ids, n_fits=1, budget=0.5, notes=[])
    arima, autoets = REGISTRY["arima"].build(context), REGISTRY["autoets"].build(context)
    assert arima is not None and autoets is not None
    pa, pe = arima.fit(panel).predict(3), autoets.fit(panel).predict(3)
    assert calls == [["AutoARIMA", "AutoETS"]]
    from statsforecast.models import AutoARIMA, AutoETS
    alone_a = real(panel, 3, [AutoARIMA(season_length=12)], 120)["AutoARIMA"]
    alone_e = real(panel, 3, [AutoETS(season_length=12)], 120)["AutoETS"]
    assert np.allclose(pa, alone_a) and np.allclose(pe, alone_e)
    autoets.fit(panel.head(12)).predict(3)  # another panel: a new call
    assert len(calls) == 2


def test_seasonal_forecasts_are_calibrated_without_the_windows_that_saw_no_season() -> None:
    """15 months with a December peak: windows trained on under a season are left out of the
    intervals, and the random-walk floor is taken on the deseasonalised history (its one-step
    changes, without the peak, are far smaller), so the band is narrower than the peak."""
    rng = np.random.default_rng(5)
    pattern = np.array([1.0] * 11 + [2.0])
    rows = [pd.DataFrame({LEVEL: "rep", KEY: f"r{k}",
                          DS: pd.date_range("2020-01-01", periods=15, freq="MS"),
                          Y: 100.0 * (k + 1) * np.tile(pattern, 2)[:15]
                          * rng.normal(1.0, 0.03, 15)}) for k in range(3)]
    series = pd.concat(rows, ignore_index=True)
    model = RevenueForecaster(horizon=3, candidates=CHEAP).fit(series)
    assert any("left out of the intervals" in n for n in model.notes_)
    floor = RevenueForecaster._floor_panel(model._plan(series, None, []))
    raw = to_panel(series, "M")
    assert np.nanmean(np.abs(np.diff(floor.values))) < 0.5 * np.nanmean(
        np.abs(np.diff(raw.values)))
    out = model.predict()
    width = (out[YHAT_P90] - out[YHAT_P10]) / out[YHAT]
    assert (width < 1.0).all()
