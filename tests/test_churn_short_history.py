"""Churn on real, young histories: horizon choice, BG/NBD candidate and fallback, the gate.

Real data: the online-retail and crm-sales imports cut to their first N months as an export made
that day would hold them (``real_data`` in conftest). Training is kept to a few seconds by
thinning the snapshots and capping the trees (``quick``); the split, the candidates and the gate
are the product's own.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine import tracking
from engine.io import Tables, load_tables
from engine.schemas import AMOUNT, AS_OF, CUSTOMER_ID, ORDER_DATE, ORDER_ID, ORDERS
from features.labels import CHURNED
from features.table import training_table
from models.btyd import BTYD_FEATURES, BgNbd, btyd_columns, purchase_summary
from models.churn import CHURN_PROBABILITY, ChurnModel
from service.cli.app import app
from service.usecases import churn as pipeline
from service.usecases.churn import (
    chance_level,
    choose_horizon,
    plan_split,
    score_churn,
    score_churn_fallback,
    train_churn,
)

pytestmark = pytest.mark.shared_data
DAY = pd.Timedelta(days=1)
FIRST = pd.Timestamp("2010-12-01")  # online-retail's first day


@pytest.fixture()
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most six snapshots and 60 trees a booster: seconds, not minutes, per training."""
    monkeypatch.setattr(pipeline, "MAX_SNAPSHOTS", 6)
    monkeypatch.setattr(pipeline, "ChurnModel",
                        partial(ChurnModel, n_estimators=60, early_stopping_rounds=10))


def _tables(real_data, name: str, months: int | None) -> Tables:
    return load_tables(str(real_data(name, months)))


# --- the horizon and the split ---------------------------------------------------------------


@pytest.mark.parametrize(("days", "horizon", "snapshots"),
                         [(90, 30, 1), (120, 30, 5), (182, 60, 5), (273, 90, 10), (374, 90, 24)])
def test_the_longest_horizon_the_history_allows(days: int, horizon: int, snapshots: int) -> None:
    last = FIRST + pd.Timedelta(days=days - 1)
    split = choose_horizon(FIRST, last)
    assert split.horizon_days == horizon and len(split.train) == snapshots
    assert split.chosen is not None and "the longest of 180/90/60/30" in split.chosen
    assert split.holdout == last + DAY - pd.Timedelta(days=horizon)
    assert all(t + pd.Timedelta(days=horizon) <= split.holdout for t in split.train)


def test_a_horizon_too_long_names_the_one_the_history_supports() -> None:
    last = FIRST + pd.Timedelta(days=272)  # 273 days: what the issue tried with 90 days
    assert plan_split(FIRST, last, 90).train  # no longer refused
    with pytest.raises(ValueError, match="need about 388 days; this history supports "
                                         "--horizon-days 122 at most"):
        plan_split(FIRST, last, 180)
    with pytest.raises(ValueError, match="even a 30-day horizon needs about 88 days"):
        choose_horizon(FIRST, FIRST + pd.Timedelta(days=60))


def test_chance_level_is_above_the_churn_rate_on_a_small_holdout() -> None:
    one_churner = np.r_[1, np.zeros(84, dtype=int)]
    # A random ranking puts the one churner first more than once in 100 (1 in 85): no model
    # can show it beats chance on such a holdout.
    assert chance_level(one_churner) == 1.0
    assert chance_level(one_churner, quantile=0.9) > 5 * one_churner.mean()
    many = np.r_[np.ones(500, dtype=int), np.zeros(500, dtype=int)]
    assert 0.5 < chance_level(many) < 0.56


# --- BG/NBD --------------------------------------------------------------------------------------


def test_bgnbd_ranks_the_quiet_customer_at_risk() -> None:
    # Three customers seen for 200 days: a steady buyer, one gone quiet after a busy start,
    # and one with a single purchase; plus a crowd to fit the population on.
    rng = np.random.default_rng(0)
    n = 400
    first = np.zeros(n)
    days = rng.integers(1, 20, n).astype(float)
    last = np.minimum(rng.uniform(0, 200, n), 199)
    last[days == 1] = 0
    summary = purchase_summary(first, last, days, 200.0)
    model = BgNbd().fit(summary)
    probe = purchase_summary(np.zeros(3), np.array([195.0, 40.0, 0.0]),
                             np.array([15.0, 15.0, 1.0]), 200.0)
    p = model.probabilities(probe, 90)
    alive, churn = p["btyd_p_alive"], p["btyd_p_churn"]
    assert alive[0] > 0.9 and alive[1] < 0.2 and alive[2] == 1.0  # no repeat: never seen dying
    assert churn[1] > churn[0]
    assert ((churn > 0) & (churn < 1)).all()
    with pytest.raises(ValueError, match="repeat purchases"):
        BgNbd().fit(purchase_summary(np.zeros(5), np.zeros(5), np.ones(5), 50.0))


# --- training at 3, 6 and 9 months ---------------------------------------------------------


@pytest.mark.parametrize(("months", "horizon"), [(3, 30), (6, 60), (9, 90)])
def test_churn_trains_and_answers_on_a_young_history(real_data, registry: Path, quick: None,
                                                     months: int, horizon: int) -> None:
    tables = _tables(real_data, "online-retail", months)
    result = train_churn(tables)
    split = result.split
    assert split.horizon_days == horizon and "the longest of" in (split.chosen or "")
    assert split.last_day == pd.Timestamp(tables.orders[ORDER_DATE].max()).normalize()
    assert list(result.baselines.index) == ["lightgbm", "bg_nbd", "recency_rule",
                                            "rfm_logistic"]
    # The registered model is the best candidate on the holdout, and it beats the rule.
    best = result.baselines.loc[["lightgbm", "bg_nbd"], "pr_auc"].idxmax()
    assert result.chosen == best and result.metrics["pr_auc"] == result.metrics[f"{best}_pr_auc"]
    assert result.promotable and result.metrics["pr_auc"] > result.metrics["recency_rule_pr_auc"]
    notes = " | ".join(result.notes)
    assert f"horizon: {horizon} days" in notes and "it can be promoted" in notes
    assert "weak evidence" in notes and "less than a year" in notes  # and says why
    assert ("only 1 training snapshot" in notes) == (months == 3)
    scores = score_churn(tables, model=result.model)
    p = scores[CHURN_PROBABILITY]
    assert len(scores) > 500 and ((p > 0) & (p < 1)).all() and p.nunique() > 50
    assert scores[AS_OF].iloc[0] == pd.Timestamp(tables.orders[ORDER_DATE].max()
                                                   ).normalize() + DAY


def test_a_chance_level_model_is_registered_but_never_promoted(real_data, registry: Path,
                                                              quick: None) -> None:
    # crm-sales: 85 customers who all keep ordering; the one holdout churner cannot be told
    # from chance, whatever the candidate's ROC-AUC.
    tables = _tables(real_data, "crm-sales", None)
    result = train_churn(tables)
    assert result.split.horizon_days == 30 and "skipped 90 days" in (result.split.chosen or "")
    assert not result.promotable and result.baseline[0] == "chance"
    assert any("will never be promoted" in note for note in result.notes)
    decision = tracking.promote("churn")
    assert not decision.promoted and "never promoted" in decision.reason
    with pytest.raises(tracking.ChampionMissingError):
        tracking.load_champion("churn")


# --- scoring without a champion ------------------------------------------------------------


def test_score_without_a_champion_falls_back_on_bgnbd(real_data, tmp_path: Path) -> None:
    data = real_data("online-retail", 3)
    env = {"QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "QUOTACAST_DATABASE_URL": f"sqlite:///{tmp_path / 'quotacast.db'}"}
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["score", "churn", "--data", str(data), "--out", str(out)],
                                env=env)
    assert result.exit_code == 0, result.output
    assert ("no churn champion: scored with a BG/NBD model fitted on the purchases before "
            "2011-03-01") in " ".join(result.output.split())
    scores = pd.read_csv(out)
    p = scores[CHURN_PROBABILITY]
    assert len(scores) > 1000 and ((p > 0) & (p < 1)).all() and p.nunique() > 50


def test_without_repeat_purchases_the_fallback_is_the_recency_rule() -> None:
    orders = pd.DataFrame({
        ORDER_ID: ["a", "b", "c"], CUSTOMER_ID: ["A", "B", "C"],
        ORDER_DATE: pd.to_datetime(["2024-01-05", "2024-02-01", "2024-03-01"]),
        AMOUNT: [10.0, 20.0, 30.0],
    })
    scores, note = score_churn_fallback(Tables({ORDERS: orders}))
    assert "recency-against-own-cycle rule" in note and "not a calibrated" in note
    p = scores.set_index(CUSTOMER_ID)[CHURN_PROBABILITY]
    assert p["A"] > p["B"] > p["C"]  # A bought first: the most overdue


# --- point in time -------------------------------------------------------------------------------


def test_later_rows_change_nothing_as_of_t(real_data) -> None:
    six = _tables(real_data, "online-retail", 6)
    nine = _tables(real_data, "online-retail", 9)  # three more months appended
    t = pd.Timestamp("2011-06-01")  # the six-month cut's end
    assert nine.orders[ORDER_DATE].max() > t > six.orders[ORDER_DATE].max()
    split = choose_horizon(FIRST, t - DAY)
    tables = [training_table(x, split.as_ofs, split.horizon_days, pipeline.LOOKBACK_DAYS,
                             split.last_day, extra=btyd_columns) for x in (six, nine)]
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert tables[0][list(BTYD_FEATURES)].notna().all().all()
    assert tables[0][CHURNED].between(0, 1).all()
    scored = [score_churn_fallback(x, as_of=t)[0] for x in (six, nine)]
    pd.testing.assert_frame_equal(scored[0], scored[1])


def test_no_candidate_says_why_in_the_error() -> None:
    # Neither candidate fits (four customers, nobody bought twice): the error names both
    # reasons itself, since the notes are never printed when training stops.
    frame = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "churned": [0, 1, 0, 1],
                          "as_of": pd.to_datetime(["2026-01-05"] * 2 + ["2026-01-12"] * 2),
                          "btyd_p_churn": [np.nan] * 4})
    with pytest.raises(ValueError) as err:
        pipeline._fit_candidates(frame, 30, 42, [])
    message = str(err.value)
    assert "LightGBM left out: the training folds needs both churners" in message
    assert "BG/NBD left out: no customer had a repeat purchase" in message
    assert "use more history" in message
