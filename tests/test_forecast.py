"""Tests of models.forecast, models.backtest, models.reconcile and models.metrics.

Small seeded synthetic panels only; Prophet runs on tiny cases only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from engine.io import Tables, validate_tables
from engine.schemas import (
    AMOUNT,
    COMPANY_KEY,
    CUSTOMER_ID,
    CUSTOMERS,
    DS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    REGION,
    REP,
    TEAM,
    Y,
)
from engine.synthetic import generate
from models.backtest import PARTIAL, Panel, backtest, rolling_origin_splits, to_panel
from models.forecast import CANDIDATES, RevenueForecaster, sane_intervals
from models.forecast.base import CandidateContext, Forecaster
from models.forecast.candidates import REGISTRY, Candidate, default_models
from models.forecast.combine import with_prior
from models.forecast.naive import mean_forecast
from models.forecast.reconciliation import reconciled
from models.forecast.season import observed_season_indices
from models.forecast.statistical import ARIMA_BUDGET, ets_one
from models.metrics import (
    YHAT,
    YHAT_P10,
    YHAT_P50,
    YHAT_P90,
    interval_coverage,
    mase,
    mase_scale,
    metrics_table,
    pinball_loss,
    smape,
    wape,
)
from models.reconcile import (
    build_hierarchy,
    mint_projection,
    reconcile_bottom_up,
    reconcile_mint,
    shrunk_covariance,
)
from service.usecases.forecast import (
    _hierarchy,
    _series,
    _summary,
    forecast_fresh,
    forecast_levels,
    train_forecast,
)

FAST = ("seasonal_naive", "ets", "theta", "lgbm")
T = pd.Timestamp
OUTPUT = [LEVEL, KEY, DS, YHAT, YHAT_P10, YHAT_P50, YHAT_P90]


# --- synthetic data ---------------------------------------------------------------------------


def org_frame(n_reps: int = 8) -> pd.DataFrame:
    """rep > team > region: two reps per team, two teams per region."""
    reps = range(n_reps)
    return pd.DataFrame(
        {
            REP: [f"rep{i}" for i in reps],
            TEAM: [f"team{i // 2}" for i in reps],
            REGION: [f"region{i // 4}" for i in reps],
        }
    )


def rep_values(n_reps: int, periods: int, seed: int) -> np.ndarray:
    """Seasonal monthly revenue per rep; rep 1 has returns (negative months), the last rep
    starts half-way through (NaN before its first revenue)."""
    rng = np.random.default_rng(seed)
    t = np.arange(periods)
    season = 1 + 0.3 * np.sin(2 * np.pi * t / 12)
    values = np.array(
        [100 * (1 + i / 4) * season * rng.lognormal(0, 0.15, periods) for i in range(n_reps)]
    )
    values[1, rng.choice(periods, 4, replace=False)] *= -0.2
    values[-1, : periods // 2] = np.nan
    return values


def long_frame(values: np.ndarray, org: pd.DataFrame, start: str = "2019-01-01") -> pd.DataFrame:
    """Series of every node (rep, team, region, company) from rep values."""
    dates = pd.date_range(start, periods=values.shape[1], freq="MS")
    rows = []

    def add(level: str, key: str, y: np.ndarray) -> None:
        keep = ~np.isnan(y)
        rows.append(pd.DataFrame({LEVEL: level, KEY: key, DS: dates[keep], Y: y[keep]}))

    for i, rep in enumerate(org[REP]):
        add(REP, rep, values[i])
    for level in (TEAM, REGION):
        for key, members in org.groupby(level).groups.items():
            block = values[list(members)]
            total = np.nansum(block, axis=0)
            add(level, str(key), np.where(np.isnan(block).all(axis=0), np.nan, total))
    add(LEVEL_COMPANY, COMPANY_KEY, np.nansum(values, axis=0))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def org() -> pd.DataFrame:
    return org_frame()


@pytest.fixture(scope="module")
def company(org: pd.DataFrame) -> pd.DataFrame:
    return long_frame(rep_values(len(org), 48, seed=1), org)


PROGRESS: list[tuple[int, int]] = []


@pytest.fixture(scope="module")
def fitted(company: pd.DataFrame, org: pd.DataFrame) -> RevenueForecaster:
    model = RevenueForecaster(horizon=6, n_windows=3, candidates=FAST)
    return model.fit(company, org, progress=lambda done, total: PROGRESS.append((done, total)))


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_by_hand() -> None:
    y, yhat = np.array([1.0, 2.0, 3.0, 0.0]), np.array([2.0, 2.0, 1.0, 0.0])
    assert mase(y, yhat, scale=0.5) == pytest.approx((1 + 0 + 2 + 0) / 4 / 0.5)
    assert wape(y, yhat) == pytest.approx(3 / 6)
    # 2|e| / (|y| + |yhat|): 2/3, 0, 1, and 0 for the 0/0 pair.
    assert smape(y, yhat) == pytest.approx((2 / 3 + 0 + 1 + 0) / 4)
    # tau 0.9: under-forecast costs 0.9 per unit, over-forecast 0.1.
    assert pinball_loss([10.0, 10.0], [8.0, 12.0], 0.9) == pytest.approx((0.9 * 2 + 0.1 * 2) / 2)
    assert interval_coverage([1.0, 5.0, 3.0], [0.0, 0.0, 3.0], [2.0, 4.0, 3.0]) == pytest.approx(
        2 / 3
    )
    assert np.isnan(wape([0.0, np.nan], [1.0, 2.0]))


def test_mase_scale_seasonal_then_naive() -> None:
    y = np.array([1.0, 2.0, 3.0, 2.0, 4.0])
    assert mase_scale(y, season_length=2) == pytest.approx((2 + 0 + 1) / 3)
    # Not longer than a season: lag 1.
    assert mase_scale(y[:2], season_length=2) == pytest.approx(1.0)
    assert mase_scale(np.array([np.nan, 5.0, 5.0]), season_length=12) == pytest.approx(5.0)


def test_metrics_table_averages_series_and_pools_wape() -> None:
    table = pd.DataFrame(
        {
            "model": "m",
            LEVEL: "rep",
            KEY: ["a", "a", "b", "b"],
            "cutoff": pd.Timestamp("2020-01-01"),
            Y: [10.0, 10.0, 1.0, 1.0],
            YHAT: [8.0, 12.0, 1.0, 3.0],
            "scale": [2.0, 2.0, 1.0, 1.0],
            YHAT_P10: [9.0, 9.0, 0.0, 2.0],
            YHAT_P50: [10.0, 10.0, 1.0, 3.0],
            YHAT_P90: [11.0, 11.0, 2.0, 4.0],
        }
    )
    row = metrics_table(table).iloc[0]
    assert row["mase"] == pytest.approx((1.0 + 1.0) / 2)  # a: 2/2, b: 1/1
    assert row["wape"] == pytest.approx(6 / 22)
    assert row["coverage_80"] == pytest.approx(3 / 4)
    assert row["n_series"] == 2


# --- panel and splits -------------------------------------------------------------------------


def test_rolling_origin_splits() -> None:
    assert rolling_origin_splits(60, 12, 3) == [24, 36, 48]
    # Packed closer when the default step leaves too little training data.
    assert rolling_origin_splits(40, 12, 3, min_train=12) == [12, 20, 28]
    # Too short for more than one full window: later ones run past the end.
    assert rolling_origin_splits(24, 12, 3, min_train=12) == [12, 16, 20]
    assert rolling_origin_splits(10, 12, 3, min_train=12) == []


def test_to_panel_drops_partial_and_zero_fills_after_start() -> None:
    series = pd.DataFrame(
        {
            LEVEL: "rep",
            KEY: ["a", "a", "a", "b"],
            DS: pd.to_datetime(["2020-01-01", "2020-03-01", "2020-04-01", "2020-02-01"]),
            Y: [1.0, 3.0, 99.0, 2.0],
            PARTIAL: [False, False, True, False],
        }
    )
    panel = to_panel(series, "M")
    assert list(panel.dates) == list(pd.date_range("2020-01-01", "2020-03-01", freq="MS"))
    np.testing.assert_array_equal(panel.values, [[1.0, 0.0, 3.0], [np.nan, 2.0, 0.0]])


def test_to_panel_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="missing columns: y"):
        to_panel(pd.DataFrame({LEVEL: [], KEY: [], DS: []}), "M")
    off = pd.DataFrame({LEVEL: "x", KEY: "k", DS: pd.to_datetime(["2020-01-15"]), Y: 1.0})
    with pytest.raises(ValueError, match="not period starts"):
        to_panel(off, "M")


def test_backtest_gives_model_only_the_past(company: pd.DataFrame) -> None:
    seen: list[pd.Timestamp] = []

    def last_value(train: Panel, horizon: int) -> dict[str, np.ndarray]:
        seen.append(train.dates[-1])
        return {"last": np.repeat(train.values[:, -1:], horizon, axis=1)}

    table = backtest(last_value, company, horizon=6, n_windows=2, freq="M")
    assert sorted(table["cutoff"].unique()) == seen
    assert (table[DS] > table["cutoff"]).all()
    assert set(table["h"]) == set(range(1, 7))


# --- reconciliation ---------------------------------------------------------------------------


def test_reconcile_bottom_up_sums_every_level(org: pd.DataFrame) -> None:
    dates = pd.date_range("2024-01-01", periods=2, freq="MS")
    bottom = pd.DataFrame(
        {
            LEVEL: REP,
            KEY: np.repeat(org[REP].to_numpy()[:-1], 2),  # the last rep never sold
            DS: np.tile(dates, len(org) - 1),
            YHAT: np.arange(2 * (len(org) - 1), dtype=float),
        }
    )
    result = reconcile_bottom_up(bottom, org).set_index([LEVEL, KEY, DS])[YHAT]
    for ds in dates:
        at = result.xs(ds, level=DS)
        total = at[LEVEL_COMPANY].sum()
        for level in (REGION, TEAM, REP):
            assert at[level].sum() == pytest.approx(total)
        assert at[(REP, org[REP].iloc[-1])] == 0.0
    assert result[(TEAM, "team0", dates[0])] == pytest.approx(0.0 + 2.0)


def test_build_hierarchy_rejects_two_parents() -> None:
    bad = pd.DataFrame(
        {REP: ["a", "b", "c"], TEAM: ["t1", "t1", "t2"], REGION: ["r1", "r2", "r2"]}
    )
    with pytest.raises(ValueError, match="not a tree"):
        build_hierarchy(bad)


def test_mint_projection_keeps_coherent_forecasts(org: pd.DataFrame) -> None:
    tree = build_hierarchy(org)
    rng = np.random.default_rng(0)
    covariance = shrunk_covariance(rng.normal(size=(len(tree.nodes), 30)))
    projection = mint_projection(tree.summing, covariance)
    # Reconciling an already coherent forecast changes nothing (S P S = S).
    summing = tree.summing.toarray()  # sparse in the tree
    np.testing.assert_allclose(summing @ projection @ summing, summing, atol=1e-8)


def test_reconcile_mint_is_coherent(org: pd.DataFrame) -> None:
    tree = build_hierarchy(org)
    rng = np.random.default_rng(1)
    ds = pd.Timestamp("2024-01-01")
    base = tree.nodes.copy()
    base[DS] = ds
    base[YHAT] = rng.uniform(10, 100, len(tree.nodes))
    residuals = pd.concat(
        [tree.nodes, pd.DataFrame(rng.normal(size=(len(tree.nodes), 24)))], axis=1
    )
    result = reconcile_mint(base, org, residuals).set_index([LEVEL, KEY])[YHAT]
    for level in (REGION, TEAM, REP):
        assert result[level].sum() == pytest.approx(result[LEVEL_COMPANY].sum())


def test_structural_reconciliation_needs_no_errors_and_keeps_the_top(org: pd.DataFrame) -> None:
    tree = build_hierarchy(org)
    n_bottom = tree.n_bottom
    # Every upper node's own forecast says twice what its bottom nodes add up to.
    base = np.where(tree.summing.sum(axis=1) > 1, 2.0, 1.0) * tree.summing.sum(axis=1)
    base = np.repeat(base[:, None], 2, axis=1)
    rows = np.arange(len(tree.nodes))
    company = len(tree.nodes) - 1
    bottom_up = reconciled(base, tree, rows, "bottom_up", [])
    structural = reconciled(base, tree, rows, "wls_struct", [])
    assert bottom_up[company, 0] == pytest.approx(n_bottom)
    # The upper levels' own forecasts count: the company lands between the two views.
    assert n_bottom < structural[company, 0] < 2 * n_bottom
    np.testing.assert_allclose(tree.summing @ structural[:n_bottom], structural)
    # MinT (shrink) without any errors to estimate a covariance from is the structural one.
    np.testing.assert_allclose(reconciled(base, tree, rows, "mint_shrink", []), structural)


def test_with_prior_pulls_weights_of_few_windows_towards_the_default() -> None:
    # Models lgbm, ets, theta; the default is ets and theta (worth four windows of evidence).
    weights = np.array([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    out = with_prior(weights, np.array([4, 0, 396]), np.array([False, True, True]))
    np.testing.assert_allclose(out[0], [0.5, 0.25, 0.25])  # four windows: half the default
    np.testing.assert_allclose(out[1], [0.0, 0.5, 0.5])  # no evidence: the default
    np.testing.assert_allclose(out[2], [0.99, 0.005, 0.005])
    three = with_prior(weights[:1], np.array([3]), np.array([False, True, True]))
    assert three[0, 0] < 0.5  # three windows cannot outvote the default
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


# --- the forecaster ---------------------------------------------------------------------------


def test_observed_season_indices_are_shrunk_and_only_for_one_season() -> None:
    season = np.tile([1.0, 1.0, 1.0, 2.0], 1) * 100.0
    one = observed_season_indices(season[None, :], 4)
    # Ratios to the trend of one season, normalised, then half-way towards 1.
    assert one.shape == (1, 4) and np.isclose(one.mean(), 1.0)
    assert one[0, 3] > 1.2 and one[0, :3].max() < 1.0
    three = observed_season_indices(np.tile(season, 3)[None, :], 4)
    short = observed_season_indices(np.array([[np.nan, 1.0, 2.0, 3.0]]), 4)
    assert np.allclose(three, 1.0) and np.allclose(short, 1.0)


def test_observed_season_is_pooled_over_series_that_share_it() -> None:
    """Series that share one observed season keep more of it than a lone series (half-way to
    flat); a series with two observed seasons averages them."""
    season = np.array([1.0, 1.0, 1.0, 2.0]) * 100.0
    lone = observed_season_indices(season[None, :], 4)
    shared = observed_season_indices(np.vstack([season * (1 + i / 10) for i in range(6)]), 4)
    assert np.isclose(lone[0, 3], 1.3)  # the ratio 1.6, half-way to 1
    assert np.all(shared[:, 3] > 1.5)  # six agreeing series: 6/7 of the way
    two = observed_season_indices(np.tile(season, 2)[None, :], 4, seasons_needed=3)
    assert two[0, 3] > lone[0, 3]  # two seasons: shrunk by 2/3, not 1/2
    assert np.allclose(observed_season_indices(np.tile(season, 2)[None, :], 4), 1.0)


def test_default_combination_is_the_statistical_models_theta_only_on_long_series() -> None:
    models = ["seasonal_naive", "ets", "theta", "arima", "autoets", "lgbm"]
    assert default_models(models, 24, 12) == ["ets", "arima", "autoets"]
    assert default_models(models, 48, 12) == ["ets", "theta", "arima", "autoets"]
    assert default_models(["seasonal_naive", "lgbm"], 48, 12) == ["seasonal_naive", "lgbm"]


def test_arima_is_left_out_where_it_would_be_too_slow_and_says_so() -> None:
    def context(letter: str, n_series: int) -> CandidateContext:
        ids = pd.DataFrame({LEVEL: ["rep"] * n_series, KEY: range(n_series)})
        return CandidateContext(season=12, letter=letter, max_history=120, seed=0, n_jobs=1,
                                ids=ids, n_fits=4, budget=0.5, notes=[])

    small, weekly = context("M", 5), context("W", 5)
    many = context("M", ARIMA_BUDGET // 4 + 1)
    assert REGISTRY["arima"].build(small) is not None and not small.notes
    assert REGISTRY["arima"].build(weekly) is None and "freq W" in weekly.notes[0]
    assert REGISTRY["arima"].build(many) is None and "budget" in many.notes[0]


@pytest.mark.parametrize("name", CANDIDATES)
def test_every_registered_candidate_follows_the_forecaster_protocol(
    name: str, company: pd.DataFrame
) -> None:
    """Each registry entry builds a Forecaster whose ``fit`` returns itself and whose
    ``predict`` gives one row per series of the fitted panel; the same object is fitted again
    on a longer panel (backtests reuse it, oldest origin first)."""
    top = company[company[LEVEL].isin([LEVEL_COMPANY, REGION])]
    panel = to_panel(top, "M")
    context = CandidateContext(season=12, letter="M", max_history=120, seed=0, n_jobs=1,
                               ids=panel.ids, n_fits=2, budget=2.0, notes=[])
    forecaster = REGISTRY[name].build(context)
    assert forecaster is not None
    for end in (36, 48):
        train = panel.head(end)
        assert forecaster.fit(train) is forecaster
        pred = forecaster.predict(4)
        assert pred.shape == (panel.n_series, 4) and np.isfinite(pred).all()


@dataclass
class _HistoryMean:
    """A candidate for the test below: each series' mean, flat."""

    def fit(self, train: Panel) -> _HistoryMean:
        self.train_ = train
        return self

    def predict(self, horizon: int) -> np.ndarray:
        return mean_forecast(self.train_, horizon)


def test_a_candidate_added_to_the_registry_is_backtested_and_weighted(
    company: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(REGISTRY, "history_mean", Candidate(lambda context: _HistoryMean()))
    model = RevenueForecaster(horizon=3, n_windows=2,
                              candidates=("seasonal_naive", "history_mean"))
    top = company[company[LEVEL] == LEVEL_COMPANY]
    model.fit(top)
    assert "history_mean" in set(model.backtest_["model"])
    assert "history_mean" in set(model.weights_["model"])
    checker: Forecaster = _HistoryMean()  # the protocol, checked by mypy
    assert checker.fit(to_panel(top, "M")).predict(2).shape == (1, 2)


def test_one_observed_season_is_forecast_seasonal() -> None:
    """12 months with a December peak: no backtest window saw a season, yet the forecast
    repeats the peak (seasonal naive in the default, ETS/Theta on the observed indices)."""
    rng = np.random.default_rng(3)
    pattern = np.array([1.0] * 11 + [2.0])
    rows = []
    for k in range(3):
        y = 100.0 * (k + 1) * pattern * rng.normal(1.0, 0.03, 12)
        rows.append(pd.DataFrame({LEVEL: "rep", KEY: f"r{k}",
                                  DS: pd.date_range("2020-01-01", periods=12, freq="MS"),
                                  Y: y}))
    model = RevenueForecaster(horizon=12, candidates=FAST, n_jobs=1).fit(pd.concat(rows))
    out = model.predict().sort_values([KEY, DS])
    for _, frame in out.groupby(KEY):
        yhat = frame[YHAT].to_numpy()
        assert yhat[11] > 1.4 * yhat[:11].mean()


def test_forecasts_are_coherent_for_yhat(fitted: RevenueForecaster, org: pd.DataFrame) -> None:
    forecast = fitted.predict()
    assert list(forecast.columns) == OUTPUT
    by_level = forecast.groupby([DS, LEVEL])[YHAT].sum().unstack()
    for level in (REGION, TEAM, REP):
        np.testing.assert_allclose(by_level[level], by_level[LEVEL_COMPANY], rtol=1e-9)
    teams = forecast[forecast[LEVEL] == TEAM].set_index([KEY, DS])[YHAT]
    reps = forecast[forecast[LEVEL] == REP].merge(org, left_on=KEY, right_on=REP)
    np.testing.assert_allclose(
        reps.groupby([TEAM, DS])[YHAT].sum().sort_index(), teams.sort_index()
    )


def test_forecasts_are_never_negative_and_ordered(fitted: RevenueForecaster) -> None:
    forecast = fitted.predict()
    values = forecast[[YHAT, YHAT_P10, YHAT_P50, YHAT_P90]].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    assert (forecast[YHAT_P10] <= forecast[YHAT_P50]).all()
    assert (forecast[YHAT_P50] <= forecast[YHAT_P90]).all()
    assert len(fitted.predict(horizon=2)) == 2 * forecast.groupby([LEVEL, KEY]).ngroups


def test_fitted_tables(fitted: RevenueForecaster) -> None:
    assert {"combination", "reconciled", "ets", "lgbm"} <= set(fitted.metrics_["model"])
    assert {"mase", "wape", "smape", "pinball", "coverage_80"} <= set(fitted.metrics_.columns)
    assert fitted.backtest_["cutoff"].nunique() == 3
    weights = fitted.weights_.groupby([LEVEL, KEY])["weight"].sum()
    np.testing.assert_allclose(weights, 1.0)
    with pytest.raises(ValueError, match="fitted horizon"):
        fitted.predict(horizon=7)


def test_progress_is_reported_to_the_end(fitted: RevenueForecaster) -> None:
    done = [d for d, _ in PROGRESS]
    assert done == sorted(done) and len(done) > 4
    assert PROGRESS[-1][0] == PROGRESS[-1][1]


def test_demo_company_forecast_beats_the_seasonal_naive() -> None:
    # The promotion gate of `quotacast demo`: the reconciled forecast's backtest MASE, averaged
    # over levels, must beat the seasonal naive's (34 months, the first window trains on 16).
    tables, _ = validate_tables(generate("small", seed=42))
    levels = forecast_levels(tables, None)
    data = _series(tables, "M", levels, None)
    model = RevenueForecaster(freq="M", horizon=6, n_windows=3, candidates=FAST)
    model.fit(data.complete, _hierarchy(tables, levels))
    metrics = _summary(model.metrics_)
    assert metrics["mase"] < metrics["baseline_mase"]
    assert any(note.startswith("reconciliation: ") for note in model.notes_)


def test_predict_before_fit_raises() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        RevenueForecaster().predict()


def test_same_seed_same_forecasts(
    company: pd.DataFrame, org: pd.DataFrame, fitted: RevenueForecaster
) -> None:
    again = RevenueForecaster(horizon=6, n_windows=3, candidates=FAST).fit(company, org)
    pd.testing.assert_frame_equal(again.predict(), fitted.predict())
    pd.testing.assert_frame_equal(again.backtest_, fitted.backtest_)


def test_parallel_fit_matches_serial(company: pd.DataFrame) -> None:
    reps = company[company[LEVEL] == REP]
    # ETS is the candidate fitted in worker processes; LightGBM uses threads.
    candidates = ("ets", "lgbm")
    serial = RevenueForecaster(horizon=3, n_windows=1, candidates=candidates, n_jobs=1)
    parallel = RevenueForecaster(horizon=3, n_windows=1, candidates=candidates, n_jobs=2)
    pd.testing.assert_frame_equal(parallel.fit(reps).predict(), serial.fit(reps).predict())


@pytest.mark.parametrize("window", [0, 1, 2])
def test_backtest_never_sees_the_future(
    company: pd.DataFrame, org: pd.DataFrame, fitted: RevenueForecaster, window: int
) -> None:
    """Changing data after a cutoff changes none of that cutoff's (or earlier) forecasts."""
    cutoffs = sorted(fitted.backtest_["cutoff"].unique())
    cutoff = cutoffs[window]
    changed = company.assign(**{Y: company[Y].where(company[DS] <= cutoff, company[Y] * 3)})
    refit = RevenueForecaster(horizon=6, n_windows=3, candidates=FAST).fit(changed, org)
    columns = [LEVEL, KEY, "model", "cutoff", DS, YHAT, YHAT_P10, YHAT_P50, YHAT_P90]

    def upto(table: pd.DataFrame) -> pd.DataFrame:
        return table.loc[table["cutoff"] <= cutoff, columns].reset_index(drop=True)

    pd.testing.assert_frame_equal(upto(refit.backtest_), upto(fitted.backtest_))
    later = refit.backtest_["cutoff"] > cutoff
    if later.any():  # the test can fail: later windows do change
        assert not refit.backtest_.loc[later, YHAT].equals(fitted.backtest_.loc[later, YHAT])


def test_short_series_fall_back_with_a_note() -> None:
    dates = pd.date_range("2020-01-01", periods=36, freq="MS")
    rng = np.random.default_rng(3)
    long = pd.DataFrame({LEVEL: "rep", KEY: "old", DS: dates, Y: rng.uniform(50, 150, 36)})
    young = pd.DataFrame(
        {LEVEL: "rep", KEY: "new", DS: dates[-5:], Y: [10.0, 20, 30, 20, 10]}
    )
    model = RevenueForecaster(horizon=4, n_windows=2, candidates=("seasonal_naive", "theta"))
    forecast = model.fit(pd.concat([long, young])).predict()
    new = forecast[forecast[KEY] == "new"]
    assert any("fallback" in note and "rep/new" in note for note in model.notes_)
    np.testing.assert_allclose(new[YHAT].to_numpy(), 18.0)  # the mean of its history
    assert (new[YHAT_P90] > new[YHAT_P10]).all()


def stationary_panel(n_series: int, periods: int, seed: int) -> np.ndarray:
    """Seasonal AR(1) around a stable level: the setting conformal intervals promise to cover."""
    rng = np.random.default_rng(seed)
    season = 1 + 0.2 * np.sin(2 * np.pi * np.arange(periods) / 12)
    noise = np.zeros((n_series, periods))
    shocks = rng.normal(0, 1, (n_series, periods))
    for t in range(1, periods):
        noise[:, t] = 0.5 * noise[:, t - 1] + shocks[:, t]
    level = rng.uniform(50, 200, (n_series, 1))
    return level * season + level * 0.08 * noise


def test_interval_coverage_near_nominal_on_stationary_series() -> None:
    values = stationary_panel(40, 96 + 12, seed=7)
    dates = pd.date_range("2015-01-01", periods=values.shape[1], freq="MS")
    train = pd.DataFrame(
        {
            LEVEL: "rep",
            KEY: np.repeat([f"s{i:02d}" for i in range(40)], 96),
            DS: np.tile(dates[:96], 40),
            Y: values[:, :96].ravel(),
        }
    )
    model = RevenueForecaster(
        horizon=12, n_windows=3, candidates=("seasonal_naive", "ets", "theta")
    )
    forecast = model.fit(train).predict()
    actual = values[:, 96:].ravel()  # forecast rows are series-major, like `values`
    covered = interval_coverage(actual, forecast[YHAT_P10], forecast[YHAT_P90])
    assert 0.7 <= covered <= 0.9
    metrics = model.metrics_
    backtested = metrics.loc[metrics["model"] == "combination", "coverage_80"].to_numpy()[0]
    assert 0.7 <= backtested <= 0.9


def test_prophet_candidate_on_a_tiny_case() -> None:
    dates = pd.date_range("2019-01-01", periods=30, freq="MS")
    noise = np.random.default_rng(5).normal(0, 5, 30)
    season = 100 + 20 * np.sin(2 * np.pi * np.arange(30) / 12) + noise
    series = pd.DataFrame(
        {LEVEL: LEVEL_COMPANY, KEY: COMPANY_KEY, DS: dates, Y: season}
    )
    model = RevenueForecaster(
        horizon=3, n_windows=1, candidates=("seasonal_naive", "prophet"), prophet_budget=2.0
    )
    forecast = model.fit(series).predict()
    assert "prophet" in set(model.backtest_["model"])
    assert np.isfinite(forecast[YHAT]).all() and len(forecast) == 3
    weights = model.weights_
    assert weights.loc[weights["model"] == "prophet", "weight"].to_numpy()[0] > 0


def test_bad_parameters_raise(company: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown or no candidates"):
        RevenueForecaster(candidates=("tbats",)).fit(company)
    with pytest.raises(ValueError, match="interval"):
        RevenueForecaster(interval=0.9).fit(company)


def test_served_forecaster_says_why_it_cannot_answer() -> None:
    from types import SimpleNamespace

    from service.usecases.forecast import ServedForecaster

    served = ServedForecaster(SimpleNamespace(horizon=6), "M",  # type: ignore[arg-type]
                              ["company", "region"])
    assert served.cannot_answer("M", "region", 6) is None
    assert served.cannot_answer(None, "company", None) is None
    assert "freq M, not W" in (served.cannot_answer("W", "company", 3) or "")
    assert "no level 'rep'" in (served.cannot_answer("M", "rep", 3) or "")
    assert "1 to 6 periods ahead, not 7" in (served.cannot_answer("M", "company", 7) or "")
    assert "not 0" in (served.cannot_answer("M", "company", 0) or "")


# --- the pipeline on data as users have it ----------------------------------------------------

CHEAP = ("seasonal_naive", "theta")


def monthly_tables(dated: str, months: int = 36, seed: int = 3) -> Tables:
    """One order per month (seasonal revenue) dated at the start, middle or end of the month."""
    firsts = pd.date_range("2017-01-01", periods=months, freq="MS")
    dates = {"start": firsts, "mid": firsts + pd.Timedelta(days=14),
             "end": firsts + pd.offsets.MonthEnd(0)}[dated]
    rng = np.random.default_rng(seed)
    t = np.arange(months)
    amounts = 1000 * (1 + 0.3 * np.sin(2 * np.pi * t / 12)) * rng.lognormal(0, 0.05, months)
    orders = pd.DataFrame({ORDER_ID: [str(i) for i in t], CUSTOMER_ID: "c1",
                           ORDER_DATE: dates.strftime("%Y-%m-%d"),
                           AMOUNT: [f"{a:.2f}" for a in amounts]})
    customers = pd.DataFrame({CUSTOMER_ID: ["c1"], REGION: ["north"]})
    tables, problems = validate_tables({ORDERS: orders, CUSTOMERS: customers})
    assert problems == []
    return tables


@pytest.mark.parametrize("dated", ["start", "mid", "end"])
def test_monthly_rows_dated_anywhere_forecast_the_months_after_the_last(dated: str) -> None:
    tables = monthly_tables(dated)  # the last row is in 2019-12
    frame, notes = forecast_fresh(tables, freq="M", horizon=12, candidates=CHEAP)
    expected = pd.date_range("2020-01-01", periods=12, freq="MS")
    assert frame[DS].tolist() == list(expected)
    assert any("one row per month" in n for n in notes)
    quarterly, _ = forecast_fresh(tables, freq="Q", horizon=2, candidates=CHEAP)
    assert quarterly[DS].tolist() == [T("2020-01-01"), T("2020-04-01")]


def test_an_earlier_as_of_forecasts_from_there() -> None:
    frame, _ = forecast_fresh(monthly_tables("start"), freq="M", horizon=3,
                              as_of=T("2019-07-01"), candidates=CHEAP)
    assert frame[DS].min() == T("2019-07-01")  # June is the last month seen


def daily_tables(end: str, start: str = "2019-01-01") -> Tables:
    days = pd.date_range(start, end)
    rng = np.random.default_rng(5)
    orders = pd.DataFrame({ORDER_ID: [str(i) for i in range(len(days))], CUSTOMER_ID: "c1",
                           ORDER_DATE: days.strftime("%Y-%m-%d"),
                           AMOUNT: [f"{a:.2f}" for a in rng.gamma(4, 25, len(days))]})
    customers = pd.DataFrame({CUSTOMER_ID: ["c1"], REGION: ["north"]})
    tables, problems = validate_tables({ORDERS: orders, CUSTOMERS: customers})
    assert problems == []
    return tables


def test_trailing_partial_month_is_forecast_whole_and_never_below_what_it_booked() -> None:
    tables = daily_tables("2020-03-27")  # March is 27/31 complete: a big share already booked
    booked = float(tables.orders.loc[tables.orders[ORDER_DATE] >= T("2020-03-01"),
                                     AMOUNT].sum())
    frame, notes = forecast_fresh(tables, freq="M", horizon=3, candidates=CHEAP)
    assert frame[DS].tolist() == [T("2020-03-01"), T("2020-04-01"), T("2020-05-01")]
    march = frame.iloc[0]
    assert march[YHAT_P10] >= booked - 1e-6 and march[YHAT] >= booked - 1e-6
    assert any("2020-03-01, is incomplete: the data covers 87% of its days" in n for n in notes)


def test_a_first_month_covered_in_part_is_left_out_of_training() -> None:
    tables = daily_tables("2020-06-30", start="2019-01-20")
    _, notes = forecast_fresh(tables, freq="M", horizon=2, candidates=CHEAP)
    assert any("the first month, 2019-01-01, is covered only 39%" in n for n in notes)


def test_a_first_month_covered_in_part_is_scaled_when_it_completes_the_only_season() -> None:
    tables = daily_tables("2019-12-31", start="2019-01-20")  # 12 months, the first from the 20th
    data = _series(tables, "M", [LEVEL_COMPANY], None)
    assert any("covered only 39%" in n and "scaled up" in n for n in data.notes)
    company = data.complete.sort_values(DS)
    assert len(company) == 12
    assert company[Y].iloc[0] > 0.7 * company[Y].iloc[1:].mean()


def test_sane_intervals_orders_clips_and_keeps_the_mean_inside() -> None:
    rng = np.random.default_rng(11)
    n = 200
    frame = pd.DataFrame({LEVEL: "company", KEY: "all",
                          DS: pd.date_range("2020-01-01", periods=n),
                          YHAT: rng.normal(10, 20, n), YHAT_P10: rng.normal(5, 20, n),
                          YHAT_P50: rng.normal(10, 20, n), YHAT_P90: rng.normal(15, 20, n)})
    notes: list[str] = []
    out = sane_intervals(frame, notes)
    values = out[[YHAT_P10, YHAT_P50, YHAT_P90]].to_numpy()
    assert (values >= 0).all() and (out[YHAT] >= 0).all()
    assert (np.diff(values, axis=1) >= 0).all()
    assert ((out[YHAT] >= out[YHAT_P10]) & (out[YHAT] <= out[YHAT_P90])).all()
    assert any("outside their own 80% band" in n for n in notes)


def test_short_history_gets_windows_and_widened_intervals() -> None:
    series = pd.DataFrame({LEVEL: "company", KEY: "all",
                           DS: pd.date_range("2020-01-01", periods=8, freq="MS"),
                           Y: [100.0, 120, 90, 130, 110, 125, 95, 140]})
    model = RevenueForecaster(horizon=4, candidates=CHEAP).fit(series)
    assert model.backtest_["cutoff"].nunique() >= 1  # eight months still get backtest windows
    assert any("widened" in n for n in model.notes_)
    forecast = model.predict()
    assert (forecast[YHAT_P10] <= forecast[YHAT]).all()
    assert (forecast[YHAT] <= forecast[YHAT_P90]).all()
    assert (forecast[YHAT_P90] - forecast[YHAT_P10] > 0).all()


def test_a_forecaster_that_does_not_beat_seasonal_naive_is_never_promoted(registry) -> None:
    from engine import tracking

    firsts = pd.date_range("2016-01-01", periods=48, freq="MS")
    pattern = np.tile([5.0, 7, 9, 12, 10, 8, 6, 5, 9, 14, 20, 30], 4) * 100  # repeats exactly
    orders = pd.DataFrame({ORDER_ID: [str(i) for i in range(48)], CUSTOMER_ID: "c1",
                           ORDER_DATE: firsts.strftime("%Y-%m-%d"),
                           AMOUNT: [str(a) for a in pattern]})
    tables, _ = validate_tables({ORDERS: orders, CUSTOMERS: pd.DataFrame(
        {CUSTOMER_ID: ["c1"], REGION: ["north"]})})
    result = train_forecast(tables, freq="M", horizon=3, candidates=("seasonal_naive", "theta"))
    assert result.metrics["baseline_mase"] == pytest.approx(0.0, abs=1e-9)
    assert any("will not be promoted" in n for n in result.notes)
    decision = tracking.promote("forecast")
    assert not decision.promoted and "never promoted" in decision.reason


def test_each_freq_has_its_own_champion(registry) -> None:
    from engine import tracking
    from service.usecases.forecast import forecast_champion, forecast_kind

    tables = daily_tables("2020-06-30")
    assert forecast_kind("M", None) == "forecast"
    assert forecast_kind("W", "region") == "forecast-W-company"
    assert forecast_kind("M", "product") == "forecast-M-product"
    for freq in ("M", "W"):
        result = train_forecast(tables, freq=freq, horizon=3, candidates=CHEAP)
        assert result.model_name == tracking.model_name(forecast_kind(freq, None))
        tracking.promote(forecast_kind(freq, None), force=True)
    weekly, _, _ = forecast_champion(tables, "W", 3)
    assert weekly[DS].min() == T("2020-06-29")  # the Monday week holding 2020-06-30
    monthly, _, _ = forecast_champion(tables, "M", 3)
    assert monthly[DS].min() == T("2020-07-01")
    with pytest.raises(tracking.ChampionMissingError):
        forecast_champion(tables, "Q", 1)
    with pytest.raises(ValueError, match="the first period to forecast is 2020-03-01: retrain"):
        forecast_champion(tables, "M", 3, as_of=T("2020-03-01"))


REAL_CASES = [(name, months, freq) for name in ("online-retail", "crm-sales", "superstore")
              for months in (3, 6, 9) for freq in ("D", "W", "M", "Q")]


@pytest.fixture()
def offline_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The registry calls of the forecast pipeline, recorded instead of made (an MLflow store
    costs seconds a test; the registry itself is tested above)."""
    from engine import tracking

    logged: dict[str, object] = {}

    def log_and_register(kind: str, estimator: object, **kwargs: object) -> object:
        logged.update(kwargs, kind=kind)
        return tracking.RegisteredRun("run", tracking.model_name(kind), "1", {})

    def load_champion(kind: str) -> object:
        raise tracking.ChampionMissingError(kind)

    monkeypatch.setattr(tracking, "log_and_register", log_and_register)
    monkeypatch.setattr(tracking, "load_champion", load_champion)
    return logged


@pytest.mark.parametrize(("name", "months", "freq"), REAL_CASES)
def test_train_and_forecast_on_young_real_data_answer_or_say_why(
        real_data, offline_registry, name: str, months: int, freq: str) -> None:
    from engine.io import load_tables

    tables = load_tables(str(real_data(name, months)))
    horizon = {"D": 7, "W": 4, "M": 3, "Q": 2}[freq]
    plain = ("too little history", "no revenue dated before", "no complete")
    try:
        result = train_forecast(tables, freq=freq, horizon=horizon, candidates=CHEAP)
    except ValueError as exc:
        assert str(exc).startswith(plain), str(exc)
    else:
        assert np.isfinite(result.metrics["mase"])
        assert offline_registry["baseline"] == ("seasonal_naive", result.metrics["baseline_mase"])
    try:
        frame, _ = forecast_fresh(tables, freq=freq, horizon=horizon, candidates=CHEAP)
    except ValueError as exc:
        assert str(exc).startswith(plain), str(exc)
    else:
        assert len(frame) == horizon
        values = frame[[YHAT_P10, YHAT_P50, YHAT_P90]].to_numpy()
        assert (values >= 0).all() and (np.diff(values, axis=1) >= 0).all()
        assert ((frame[YHAT] >= frame[YHAT_P10]) & (frame[YHAT] <= frame[YHAT_P90])).all()


def test_a_hierarchy_level_without_an_org_chart_is_a_plain_column() -> None:
    from service.usecases.forecast import forecast_levels

    tables = daily_tables("2019-12-31")
    assert forecast_levels(tables, LEVEL_REGION) == [LEVEL_COMPANY, LEVEL_REGION]
    frame, _ = forecast_fresh(tables, freq="M", horizon=2, level=LEVEL_REGION,
                              candidates=CHEAP)
    assert frame[KEY].unique().tolist() == ["north"] and len(frame) == 2


@pytest.mark.parametrize("y", [[1.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
def test_ets_on_a_handful_of_points_gives_nan_not_an_error(y: list[float]) -> None:
    # statsforecast raises KeyError 'fitted' on [1, 1], NotImplementedError on others
    mean, spec = ets_one(np.array(y), 2, 4, None)
    assert mean.shape == (2,) and (spec is None or np.isfinite(mean).all())
