"""Churn: model, baselines, metrics, the time split, MLflow round trips and scoring.

Seeded and deterministic: the demo company ``small`` (and ``medium`` once, for calibration),
tiny hand-made frames, and one temporary SQLite registry shared by the module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from engine import tracking
from engine.compute import bucket_of
from engine.io import Tables, validate_tables
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CUSTOMER_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    PAID_AT,
    RECEIVABLES,
)
from engine.schemas import AS_OF as AS_OF_COLUMN
from engine.synthetic import generate
from features.customer import customer_features, customer_history
from features.labels import CHURNED
from features.table import training_table
from models.btyd import BtydChurn, btyd_columns
from models.churn import (
    CHURN_PROBABILITY,
    REASON_SEPARATOR,
    REASONS,
    SMALL_TREES,
    ChurnModel,
    RecencyCycleRule,
    RfmLogistic,
    best_on_inner,
    describe_params,
    inner_metrics,
    inner_slice,
    phrase_reason,
)
from models.classification import (
    MIN_BIN_CASES,
    classification_metrics,
    plot_calibration,
    plot_feature_importance,
    reliability_table,
    segment_auc,
    top_fraction_lift,
)
from service.usecases import churn as pipeline
from service.usecases.churn import (
    SCORE_COLUMNS,
    ChurnTraining,
    expected_revenue,
    plan_split,
    score_churn,
    serving_example,
    tables_before,
    train_churn,
)

AS_OF = pd.Timestamp("2026-10-01")  # before the small company's data end (2026-11-14)
DAY = pd.Timedelta(days=1)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> Tables:
    return validate_tables(generate("small", seed=7))[0]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import mlflow

    previous = mlflow.get_tracking_uri()
    path = tmp_path_factory.mktemp("mlflow")
    tracking.configure(f"sqlite:///{path / 'mlflow.db'}")
    yield path
    tracking.configure(previous)


@pytest.fixture(scope="module")
def trained(small: Tables, registry: Path) -> ChurnTraining:
    return train_churn(small, as_of=AS_OF, seed=3)


def _tiny_frame(n: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers whose churn is driven by how overdue they are and by complaints."""
    rng = np.random.default_rng(seed)
    cycle = rng.uniform(7, 60, n)
    recency = cycle * rng.lognormal(0, 0.8, n)
    complaints = rng.poisson(0.5, n).astype(float)
    spend = rng.lognormal(7, 1, n)
    logit = -3 + 2.5 * np.log(recency / cycle) + 1.2 * complaints
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({
        CUSTOMER_ID: [f"C{i:05d}" for i in range(n)],
        "hist_recency_days": np.round(recency),
        "hist_cycle_median_days": np.round(cycle),
        "hist_frequency_365d": np.round(365 / cycle),
        "hist_monetary_365d": spend,
        "cx_complaints_90d": complaints,
        "cat_segment": pd.Categorical(rng.choice(["smb", "enterprise"], n)),
    })
    return frame, y


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_on_known_cases(tmp_path: Path) -> None:
    y = np.array([0] * 90 + [1] * 10)
    perfect = np.r_[np.linspace(0.0, 0.4, 90), np.linspace(0.6, 1.0, 10)]
    m = classification_metrics(y, perfect)
    assert m["roc_auc"] == pytest.approx(1.0) and m["pr_auc"] == pytest.approx(1.0)
    assert m["n"] == 100 and m["base_rate"] == pytest.approx(0.1)
    assert top_fraction_lift(y, perfect, 0.1) == pytest.approx(10.0)
    assert top_fraction_lift(y, np.full(100, 0.5), 0.1) == pytest.approx(0.0)  # stable ties
    seg = segment_auc(y, perfect, ["a"] * 50 + ["b"] * 50)
    assert seg["roc_auc"].isna().tolist() == [True, False]  # segment a has a single class
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 20_000)
    table = reliability_table((rng.random(20_000) < p).astype(int), p)
    assert len(table) == 10 and table["gap"].abs().max() < 0.03
    assert plot_calibration(table, tmp_path / "c.png").stat().st_size > 1000
    importance = pd.Series([3.0, 1.0], index=["a", "b"])
    assert plot_feature_importance(importance, tmp_path / "i.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="0 or 1"):
        classification_metrics([0, 2], [0.1, 0.2])


# --- models on tiny frames -------------------------------------------------------------------


def test_model_learns_probabilities_and_explains_with_real_values() -> None:
    frame, y = _tiny_frame()
    train, late, test = frame.iloc[:1800], frame.iloc[1800:2400], frame.iloc[2400:]
    model = ChurnModel(n_estimators=300).fit(train, y[:1800], late, y[1800:2400])
    assert model.features_ == ["hist_recency_days", "hist_cycle_median_days",
                               "hist_frequency_365d", "hist_monetary_365d",
                               "cx_complaints_90d", "cat_segment"]
    p = model.predict_proba_frame(test)[CHURN_PROBABILITY].to_numpy()
    assert ((p > 0) & (p < 1)).all() and classification_metrics(y[2400:], p)["roc_auc"] > 0.8
    assert model.calibration_method_ == "sigmoid"  # 600 calibration rows: too few for isotonic
    out = model.predict_frame(test)
    assert list(out.columns) == [CHURN_PROBABILITY, REASONS] and out.index.equals(test.index)
    # The riskiest row: its reasons quote its own recency, cycle and complaints.
    row = test.loc[[out[CHURN_PROBABILITY].idxmax()]]
    reasons = out.loc[row.index[0], REASONS].split(REASON_SEPARATOR)
    recency, cycle = row["hist_recency_days"].iloc[0], row["hist_cycle_median_days"].iloc[0]
    assert f"no order for {recency:.0f} days, usual cycle {cycle:.0f} days" in reasons
    contrib = model.contributions(row).iloc[0]
    recency_push = contrib[["hist_recency_days"]].sum()
    assert recency_push > 0
    complaints = row["cx_complaints_90d"].iloc[0]
    if contrib["cx_complaints_90d"] > model.min_contribution and complaints > 0:
        assert f"{complaints:.0f} complaint" in out.loc[row.index[0], REASONS]
    # Strings instead of categoricals (what MLflow hands over) give the same probabilities.
    as_strings = test.assign(cat_segment=test["cat_segment"].astype(object))
    assert np.allclose(model.predict_proba_frame(as_strings)[CHURN_PROBABILITY], p)


def test_isotonic_keeps_the_ranking_of_the_trees() -> None:
    frame, y = _tiny_frame(6000, seed=2)
    model = ChurnModel(n_estimators=200, calibration="isotonic").fit(
        frame.iloc[:3000], y[:3000], frame.iloc[3000:5000], y[3000:5000])
    test = frame.iloc[5000:]
    p = model.predict_proba_frame(test)[CHURN_PROBABILITY].to_numpy()
    margin = model._margin(model._matrix(test))
    order = np.argsort(margin)
    assert (np.diff(p[order]) >= 0).all()  # strictly increasing map, no reordering
    assert len(np.unique(p)) == len(np.unique(margin))  # ...and no ties created


def test_cross_fitted_model_blends_the_rfm_regression() -> None:
    frame, y = _tiny_frame(3000, seed=3)
    train, test, y_train = frame.iloc[:2400], frame.iloc[2400:], y[:2400]
    fit = partial(ChurnModel, n_estimators=150, calibration="isotonic")
    blended = fit(linear_weight=0.5).fit(train, y_train, groups=train[CUSTOMER_ID])
    trees = fit(linear_weight=0.0).fit(train, y_train, groups=train[CUSTOMER_ID])
    assert hasattr(blended, "linear_") and not hasattr(trees, "linear_")
    X = blended._matrix(test)
    assert np.allclose(blended._margin(X), trees._margin(X))  # same boosters
    # The regression is the RFM logistic of the same rows; the score averages the two
    # log-odds, each over its out-of-fold spread, and the calibration keeps its order.
    rfm = RfmLogistic().fit(train, y_train).predict_proba_frame(test)[CHURN_PROBABILITY]
    assert np.allclose(blended.linear_.log_odds(X), np.log(rfm / (1 - rfm)))
    score = (0.5 * blended._margin(X) / blended.scales_[0]
             + 0.5 * blended.linear_.log_odds(X) / blended.scales_[1])
    p = blended.predict_proba_frame(test)[CHURN_PROBABILITY].to_numpy()
    assert (np.diff(p[np.argsort(score)]) >= -1e-12).all()
    assert np.allclose(blended.predict_frame(test)[CHURN_PROBABILITY], p)
    p_trees = trees.predict_proba_frame(test)[CHURN_PROBABILITY].to_numpy()
    assert not np.allclose(p, p_trees)
    # A model pickled before the blend existed loads and scores with its trees alone.
    state = {k: v for k, v in trees.__dict__.items() if k != "linear_weight"}
    old = ChurnModel.__new__(ChurnModel)
    old.__setstate__(state)
    assert old.linear_weight == 0.0
    assert np.allclose(old.predict_proba_frame(test)[CHURN_PROBABILITY], p_trees)
    # Left to choose (the default), the weight is the inner slice's best: when churn follows
    # complaints alone, which the regression never sees, the trees stand alone.
    rng = np.random.default_rng(5)
    y_complaints = (rng.random(len(train)) < 1 / (1 + np.exp(
        1.5 - 1.5 * train["cx_complaints_90d"].to_numpy()))).astype(int)
    chosen = fit().fit(train, y_complaints, groups=train[CUSTOMER_ID],
                       periods=np.repeat(np.arange(8), 300))
    assert chosen.linear_weight_ == 0.0 and not hasattr(chosen, "linear_")
    assert blended.linear_weight_ == 0.5 and trees.linear_weight_ == 0.0


def test_cross_fitted_model_chooses_its_trees_on_the_inner_slice() -> None:
    frame, y = _tiny_frame(2400, seed=4)
    periods = np.repeat(np.arange(8), 300)
    fit = partial(ChurnModel, n_estimators=120, linear_weight=0.0)
    # A crippled option (a step so small the trees learn nothing) against the given settings:
    # the inner slice keeps the given ones, in either order, and the boosters are theirs.
    crippled = {"learning_rate": 1e-6}
    first = fit(tree_options=[crippled, {}]).fit(frame, y, groups=frame[CUSTOMER_ID],
                                                   periods=periods)
    given = fit(tree_options=[{}]).fit(frame, y, groups=frame[CUSTOMER_ID], periods=periods)
    assert first.tree_option_ == {} and given.tree_option_ == {}
    X = given._matrix(frame)
    assert np.allclose(first._margin(X), given._margin(X))
    alone = fit(tree_options=[crippled]).fit(frame, y, groups=frame[CUSTOMER_ID],
                                             periods=periods)
    assert alone.tree_option_ == crippled
    assert np.ptp(alone._margin(X)) < 1e-3 < np.ptp(given._margin(X))
    # The default tries the given settings and the small trees; the choice is logged.
    default = fit().fit(frame, y, groups=frame[CUSTOMER_ID], periods=periods)
    assert default.tree_option_ in ({}, dict(SMALL_TREES))
    assert describe_params(default)["tree_option"] in (
        "as given", "learning_rate=0.03, num_leaves=4, min_child_samples=100")
    with pytest.raises(ValueError, match="a tree option may only set"):
        fit(tree_options=[{"max_depth": 3}]).fit(frame, y, groups=frame[CUSTOMER_ID])


def test_inner_slice_is_the_latest_quarter_of_the_periods() -> None:
    periods = pd.Series(pd.to_datetime(["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26",
                                        "2026-02-02", "2026-02-09", "2026-02-16", "2026-02-23"]))
    rows = pd.concat([periods, periods.iloc[::-1]], ignore_index=True)
    inner = inner_slice(rows, len(rows))
    assert rows[inner].isin(periods.iloc[-2:]).all() and inner.sum() == 4
    assert inner_slice(None, 3).all() and inner_slice(periods.iloc[:2], 2).tolist() == [False, True]


def test_one_rule_chooses_on_the_inner_slice() -> None:
    # best_on_inner (tree setting, blend weight) looks at the inner rows only.
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    inner = np.array([False] * 4 + [True] * 4)
    good_outside = np.array([0, 1, 0, 1, 1, 0, 1, 0], dtype=float)  # perfect, then reversed
    good_inside = np.array([1, 0, 1, 0, 0, 1, 0, 1], dtype=float)
    assert best_on_inner([good_outside, good_inside], y, inner) == 1
    assert best_on_inner([good_inside, good_inside], y, inner) == 0  # a tie: the first
    assert best_on_inner([good_outside, good_inside], y, ~inner) == 0
    assert best_on_inner([good_outside, good_inside], np.r_[y[:4], [1] * 4], inner) == 0
    metrics = inner_metrics(y, good_inside, inner)
    assert metrics == {"roc_auc": 1.0, "pr_auc": 1.0}
    assert np.isnan(inner_metrics(y, good_inside, np.array([True, False] * 4))["pr_auc"])


def test_registered_candidate_is_chosen_on_the_training_snapshots() -> None:
    frame, y = _tiny_frame(2400, seed=6)
    frame = frame.assign(**{AS_OF_COLUMN: np.repeat(pd.date_range("2026-01-05", periods=8,
                                                                  freq="7D"), 300),
                            CHURNED: y})
    model = ChurnModel(n_estimators=120, linear_weight=0.0).fit(
        frame, y, groups=frame[CUSTOMER_ID], periods=frame[AS_OF_COLUMN])
    inner = inner_slice(frame[AS_OF_COLUMN], len(frame))
    assert set(model.inner_metrics_) == {"roc_auc", "pr_auc"}
    assert 0.5 < model.inner_metrics_["roc_auc"] < 1
    rng = np.random.default_rng(0)
    # A BG/NBD score that is noise on the training snapshots loses to the trees; one that
    # foretells the inner slice's churners wins: no holdout enters the choice.
    noise = frame.assign(btyd_p_churn=rng.uniform(0.1, 0.9, len(frame)))
    candidates = {"lightgbm": model, "bg_nbd": BtydChurn(90).fit(noise, y)}
    chosen, scores = pipeline._best_candidate(candidates, noise)
    assert chosen == "lightgbm" and scores["lightgbm"] == model.inner_metrics_
    assert scores["bg_nbd"]["roc_auc"] < 0.6
    foretold = frame.assign(btyd_p_churn=np.where(inner, 0.2 + 0.6 * y, 0.5))
    chosen, scores = pipeline._best_candidate(candidates, foretold)
    assert chosen == "bg_nbd" and scores["bg_nbd"]["pr_auc"] == 1.0


def test_phrases_quote_values() -> None:
    row = {"hist_recency_days": 143.0, "hist_cycle_median_days": 41.0, "cx_complaints_90d": 3.0,
           "hist_spend_change_90d": -0.62, "hist_spend_trend_90d": -0.45,
           "cx_complaints_30d": 1.0}
    get = partial(lambda r, name: r.get(name, float("nan")), row)
    assert phrase_reason("hist_overdue_ratio", get) == "no order for 143 days, usual cycle 41 days"
    assert phrase_reason("cx_complaints_90d", get) == "3 complaints in the last 90 days"
    assert phrase_reason("cx_complaints_30d", get) == "1 complaint in the last 30 days"
    assert phrase_reason("hist_spend_trend_90d", get) == "spend down 62% on the previous quarter"
    # An unknown feature is still named, never dropped.
    assert phrase_reason("hist_new_thing", lambda name: 2.0) == "hist_new_thing = 2.0"


def test_baselines_rank_by_their_rule() -> None:
    frame, y = _tiny_frame()
    rule = RecencyCycleRule().fit(frame, y)
    rfm = RfmLogistic().fit(frame, y)
    probe = pd.DataFrame({"hist_recency_days": [10.0, 100.0, np.nan],
                          "hist_cycle_median_days": [20.0, 20.0, np.nan],
                          "hist_frequency_365d": [10.0, 10.0, 0.0],
                          "hist_monetary_365d": [1000.0, 1000.0, 0.0]})
    for model in (rule, rfm):
        p = model.predict_proba_frame(probe)[CHURN_PROBABILITY].to_numpy()
        assert ((p > 0) & (p < 1)).all() and p[0] < p[1]  # more overdue, more risk
    # Never bought: the rule treats it as the most overdue training row.
    assert rule.predict_proba_frame(probe)[CHURN_PROBABILITY].iloc[2] >= (
        rule.predict_proba_frame(probe)[CHURN_PROBABILITY].iloc[1])
    with pytest.raises(NotFittedError):
        RfmLogistic().predict_proba_frame(probe)


def test_model_errors_are_clear() -> None:
    frame, y = _tiny_frame(400)
    with pytest.raises(NotFittedError):
        ChurnModel().predict_frame(frame)
    with pytest.raises(ValueError, match="both churners and non-churners"):
        ChurnModel().fit(frame, np.zeros(400), frame, y)
    model = ChurnModel(n_estimators=20).fit(frame, y, frame, y)
    with pytest.raises(ValueError, match="cx_complaints_90d"):
        model.predict_frame(frame.drop(columns=["cx_complaints_90d"]))


# --- the time split --------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", [30, 90, 180])
def test_split_label_windows_never_overlap(horizon: int) -> None:
    first, last = pd.Timestamp("2024-01-01"), pd.Timestamp("2026-11-14")
    split = plan_split(first, last, horizon)
    h = pd.Timedelta(days=horizon)
    assert split.holdout + h - DAY == last  # the holdout's label window: the last H days
    assert all(t + h <= split.holdout for t in split.train)  # every training window ends first
    assert split.train[-1] + h == split.holdout  # the latest training window touches it
    assert list(split.train) == sorted(split.train)
    assert split.train[0] >= first + pd.Timedelta(days=pipeline.MIN_HISTORY_DAYS)
    gaps = {b - a for a, b in zip(split.train, split.train[1:], strict=False)}
    assert gaps == {pd.Timedelta(days=split.step_days)} and split.step_days % 7 == 0
    assert len(split.train) <= pipeline.MAX_SNAPSHOTS


@pytest.mark.parametrize("cut", [pipeline.SAMPLE_BUCKETS, 300])
def test_snapshots_built_one_as_of_at_a_time_are_the_assembled_parts(small: Tables,
                                                                      cut: int) -> None:
    """Training builds its table a snapshot at a time (never every snapshot's parts at once):
    the same table as the engines' parts assembled, dtypes and category unions included."""
    history = customer_history(tables_before(small, AS_OF))
    as_ofs = list(plan_split(pd.Timestamp("2024-01-01"), AS_OF - DAY, 90).train[-3:])
    table = pipeline.snapshot_table(history, as_ofs[::-1], 90, cut=cut)
    parts = pipeline.snapshot_parts(history, as_ofs, 90, cut=cut)
    pd.testing.assert_frame_equal(table, pipeline.assemble_snapshots(parts, as_ofs, 90),
                                  check_exact=True)
    assert list(table[AS_OF_COLUMN].unique()) == as_ofs and table[CHURNED].dtype == np.int8
    assert table["cat_region"].cat.categories.is_monotonic_increasing
    buckets = bucket_of(table[CUSTOMER_ID], pipeline.SAMPLE_BUCKETS)
    assert len(table) > 300 and (buckets < cut).all() and (buckets >= 300).any() == (cut > 300)


def test_training_sees_nothing_after_as_of(small: Tables, trained: ChurnTraining) -> None:
    split = trained.split
    assert split.last_day == AS_OF - DAY
    h = pd.Timedelta(days=split.horizon_days)
    assert split.holdout + h <= AS_OF  # the whole holdout label window is before as_of
    assert all(t + h <= split.holdout for t in split.train)
    # Rewrite the future: drop every real order on or after as_of and add a purchase for every
    # customer instead. Had any label or feature looked past as_of, something would change.
    orders = small.orders
    future = pd.DataFrame({
        ORDER_ID: [f"X{i}" for i in range(len(small.customers))],
        CUSTOMER_ID: small.customers[CUSTOMER_ID].to_numpy(),
        ORDER_DATE: AS_OF + pd.to_timedelta(np.arange(len(small.customers)) % 40, "D"),
        AMOUNT: 1_000.0,
    })
    rewritten = pd.concat([orders.loc[orders[ORDER_DATE] < AS_OF], future], ignore_index=True)
    other = train_churn(Tables({**small.frames, ORDERS: rewritten}), as_of=AS_OF, seed=3)
    assert other.split == split
    assert other.metrics == pytest.approx(trained.metrics, nan_ok=True)
    probe = pipeline._active_features(small, AS_OF, split.horizon_days)
    pd.testing.assert_frame_equal(other.model.predict_frame(probe),
                                  trained.model.predict_frame(probe))
    past = tables_before(small, AS_OF)
    assert past.orders[ORDER_DATE].max() < AS_OF
    assert (past[RECEIVABLES][PAID_AT].dropna() < AS_OF).all()


def test_run_is_logged_with_evidence(trained: ChurnTraining) -> None:
    from mlflow import MlflowClient

    m = trained.metrics
    assert trained.version and trained.run_id and trained.model_name == "quotacast-churn"
    for key in ("roc_auc", "pr_auc", "brier", "log_loss", "top_decile_lift",
                "recency_rule_pr_auc", "rfm_logistic_roc_auc"):
        assert key in m
    assert any(k.startswith("segment_roc_auc.") for k in m)
    assert list(trained.baselines.index) == ["lightgbm", "bg_nbd", "recency_rule",
                                             "rfm_logistic"]
    # The registered model is the best candidate, and it beats the baselines on the demo.
    assert trained.chosen == "lightgbm" and m["pr_auc"] == m["lightgbm_pr_auc"]
    assert m["lightgbm_inner_pr_auc"] >= m["bg_nbd_inner_pr_auc"]  # chosen out of sample
    assert any("the best candidate on the latest training snapshots" in n for n in trained.notes)
    assert m["pr_auc"] > max(m["recency_rule_pr_auc"], m["rfm_logistic_pr_auc"])
    assert trained.promotable and m["baseline_pr_auc"] == pytest.approx(trained.baseline[1])
    files = {a.path for a in MlflowClient().list_artifacts(trained.run_id)}
    assert {"calibration.png", "feature_importance.png", "features.json",
            "segment_auc.csv", "baselines.csv", "split.json"} <= files
    tags = MlflowClient().get_model_version("quotacast-churn", trained.version).tags
    assert tracking.beats_baseline(tags)[0]


def test_pyfunc_serves_probabilities_not_labels(small: Tables, trained: ChurnTraining) -> None:
    served = tracking.load_pyfunc("churn", tracking.CHALLENGER)
    frame = serving_example(pipeline._active_features(small, AS_OF, 90), rows=200)
    out = served.predict(frame)
    p = out[CHURN_PROBABILITY].to_numpy(dtype=float)
    assert ((p > 0) & (p < 1)).all()
    assert len(np.unique(np.round(p, 6))) > 20  # probabilities, not two class labels
    assert out[REASONS].str.len().gt(0).any()


@pytest.mark.slow
def test_probabilities_are_calibrated_on_the_demo_company() -> None:
    tables = validate_tables(generate("medium", seed=11))[0]
    last = pd.Timestamp(tables.orders[ORDER_DATE].max())
    split = plan_split(pd.Timestamp(tables.orders[ORDER_DATE].min()), last, 180)
    table = training_table(tables, split.as_ofs, 180, pipeline.LOOKBACK_DAYS, last,
                           extra=btyd_columns)
    train, holdout = pipeline._slices(table, split)
    # The calibration map is what is judged here (the tree settings' choice has its own test):
    # one setting keeps this medium-company fit within its time.
    model = ChurnModel(tree_options=[{}]).fit(train, train[CHURNED], groups=train[CUSTOMER_ID])
    p = model.predict_proba_frame(holdout)[CHURN_PROBABILITY]
    reliability = reliability_table(holdout[CHURNED], p)
    judged = reliability.loc[reliability["n"] >= MIN_BIN_CASES]
    assert len(judged) == 10 and judged["gap"].abs().max() <= 0.1, reliability
    # Aggregate check too: predicted churners match observed ones within 10%.
    assert p.sum() == pytest.approx(holdout[CHURNED].sum(), rel=0.1)


# --- promotion -------------------------------------------------------------------------------


def test_gate_promotes_better_and_refuses_worse(small: Tables, registry: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "MAX_SNAPSHOTS", 8)  # three trainings: keep each quick
    weak = partial(ChurnModel, features=["hist_tenure_days"])  # knows only the tenure
    monkeypatch.setattr(pipeline, "ChurnModel", weak)
    first = train_churn(small, as_of=AS_OF)
    assert tracking.promote("churn", first.version, force=True).promoted
    monkeypatch.setattr(pipeline, "ChurnModel", ChurnModel)
    better = train_churn(small, as_of=AS_OF)
    assert better.champion_value == pytest.approx(first.metrics["pr_auc"])
    decision = tracking.promote("churn")
    assert decision.promoted and decision.version == better.version, decision.reason
    monkeypatch.setattr(pipeline, "ChurnModel", weak)
    worse = train_churn(small, as_of=AS_OF)
    assert worse.champion_value == pytest.approx(better.metrics["pr_auc"])
    decision = tracking.promote("churn")
    assert not decision.promoted and "worse than champion" in decision.reason
    assert tracking.load_champion("churn").version == better.version


# --- scoring ---------------------------------------------------------------------------------


def test_score_columns_order_and_revenue_at_risk(small: Tables, trained: ChurnTraining) -> None:
    scores = score_churn(small, as_of=AS_OF, model=trained.model)
    assert tuple(scores.columns[:5]) == SCORE_COLUMNS
    assert scores[CUSTOMER_ID].is_unique
    assert scores[pipeline.REVENUE_AT_RISK].is_monotonic_decreasing
    assert np.allclose(scores[pipeline.REVENUE_AT_RISK],
                       scores[pipeline.EXPECTED_REVENUE] * scores[CHURN_PROBABILITY])
    # Active customers only: a purchase in the year before as_of.
    orders = small.orders
    recent = orders.loc[(orders[ORDER_DATE] < AS_OF)
                        & (orders[ORDER_DATE] >= AS_OF - pd.Timedelta(days=365))
                        & (orders[AMOUNT] > 0), CUSTOMER_ID]
    assert set(scores[CUSTOMER_ID]) == set(recent)
    top = scores.iloc[0]
    assert top[REASONS] and top[CHURN_PROBABILITY] > 0.05
    # The revenue estimate by hand for the top customer.
    row = customer_features(small, AS_OF).set_index(CUSTOMER_ID).loc[[top[CUSTOMER_ID]]]
    days = min(max(row["hist_tenure_days"].iloc[0], 90), 365)
    assert expected_revenue(row, 180)[0] == pytest.approx(
        max(row["hist_monetary_365d"].iloc[0], 0) / days * 180)


def test_reasons_quote_the_customers_own_history(small: Tables, trained: ChurnTraining) -> None:
    scores = score_churn(small, as_of=AS_OF, model=trained.model)
    overdue = scores.loc[scores[REASONS].str.contains("no order for")].iloc[0]
    assert len(overdue[REASONS].split(REASON_SEPARATOR)) <= 3
    # By hand from the raw orders: days since the last purchase day, median gap between days.
    orders = small.orders
    mine = orders.loc[(orders[CUSTOMER_ID] == overdue[CUSTOMER_ID])
                      & (orders[ORDER_DATE] < AS_OF) & (orders[AMOUNT] > 0)]
    days = np.unique(mine[ORDER_DATE].dt.normalize().to_numpy())
    recency = (AS_OF - pd.Timestamp(days[-1])).days
    cycle = np.median(np.diff(days).astype("timedelta64[D]").astype(float))
    assert f"no order for {recency} days, usual cycle {cycle:.0f} days" in overdue[REASONS]


def test_owner_filters(small: Tables, trained: ChurnTraining) -> None:
    everyone = score_churn(small, as_of=AS_OF, model=trained.model)
    owner = everyone[ACCOUNT_MANAGER].value_counts().index[0]
    mine = score_churn(small, as_of=AS_OF, model=trained.model, owner=owner)
    assert len(mine) > 0 and (mine[ACCOUNT_MANAGER] == owner).all()
    expected = everyone.loc[everyone[ACCOUNT_MANAGER] == owner].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, expected)


def test_bad_arguments_give_clear_errors(small: Tables, trained: ChurnTraining) -> None:
    owner = str(small.customers[ACCOUNT_MANAGER].dropna().iloc[0])
    with pytest.raises(ValueError, match=f"did you mean '{owner}'"):
        score_churn(small, model=trained.model, owner=owner[:-1] + "x")
    with pytest.raises(ValueError, match="known account managers: .*" + owner):
        score_churn(small, model=trained.model, owner="Nobody At All 123")
    with pytest.raises(ValueError, match="no history before it"):
        score_churn(small, as_of=pd.Timestamp("2020-01-01"), model=trained.model)
    with pytest.raises(ValueError, match="no history before it"):
        train_churn(small, as_of=pd.Timestamp("2020-01-01"))
    # Two months of history: not even a 30-day horizon has a training window and a holdout.
    with pytest.raises(ValueError, match=r"too little history.*even a 30-day horizon"):
        train_churn(small, as_of=pd.Timestamp("2024-03-01"))
    # A horizon the history cannot hold: the message names the longest one it can.
    with pytest.raises(ValueError, match="supports --horizon-days 511 at most"):
        train_churn(small, horizon_days=600)


def test_scoring_without_a_champion_says_what_to_do(small: Tables, registry: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # whatever order the tests ran in
        MlflowClient().delete_registered_model_alias("quotacast-churn", tracking.CHAMPION)
    with pytest.raises(tracking.ChampionMissingError, match="quotacast train churn"):
        score_churn(small)
