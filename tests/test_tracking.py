"""MLflow round trips on a real SQLite registry in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from engine import tracking


class ProbaModel:
    """A tiny estimator in the quotacast shape: ``predict_frame`` returns probabilities."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(200, 2))
        y = (x[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
        self.model_ = LogisticRegression().fit(x, y)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        p = self.model_.predict_proba(frame[["a", "b"]].to_numpy())[:, 1]
        return pd.DataFrame({"churn_probability": p})


EXAMPLE = pd.DataFrame({"a": [0.1, -2.0, 3.0], "b": [0.0, 1.0, -1.0]})


def _register(value: float, champion_value: float | None = None,
              baseline: tuple[str, float] | None = None) -> tracking.RegisteredRun:
    return tracking.log_and_register(
        "churn",
        ProbaModel(),
        input_example=EXAMPLE,
        params={"windows": [30, 90]},
        metrics={"roc_auc": value},
        gate_metric="roc_auc",
        greater_is_better=True,
        holdout="2024-01-01/180d",
        champion_value=champion_value,
        baseline=baseline,
        artifacts={"features.json": {"features": ["a", "b"]}},
    )


def test_register_sets_challenger_and_pyfunc_returns_probabilities(registry: Path) -> None:
    run = _register(0.8)
    assert run.model_name == "quotacast-churn" and run.version == "1"
    pyfunc = tracking.load_pyfunc("churn", tracking.CHALLENGER)
    out = pyfunc.predict(EXAMPLE)
    probabilities = out["churn_probability"].to_numpy()
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert not set(np.unique(probabilities)) <= {0.0, 1.0}
    assert (registry / "mlruns").is_dir()  # artifacts live beside the SQLite store


def test_first_promotion_needs_no_comparison_and_champion_loads(registry: Path) -> None:
    with pytest.raises(tracking.ChampionMissingError, match="quotacast train churn"):
        tracking.load_champion("churn")
    _register(0.8)
    decision = tracking.promote("churn")
    assert decision.promoted and decision.version == "1"
    loaded = tracking.load_champion("churn")
    assert loaded.version == "1" and loaded.metrics["roc_auc"] == pytest.approx(0.8)
    assert isinstance(loaded.estimator, ProbaModel)


def test_gate_refuses_a_worse_challenger_and_force_overrides(registry: Path) -> None:
    _register(0.8)
    tracking.promote("churn")
    _register(0.7, champion_value=0.8)
    decision = tracking.promote("churn")
    assert not decision.promoted
    assert "worse than champion v1" in decision.reason
    assert tracking.load_champion("churn").version == "1"
    forced = tracking.promote("churn", force=True)
    assert forced.promoted and tracking.load_champion("churn").version == "2"


def test_gate_accepts_an_equal_or_better_challenger(registry: Path) -> None:
    _register(0.8)
    tracking.promote("churn")
    _register(0.8, champion_value=0.8)
    decision = tracking.promote("churn")
    assert decision.promoted and "at least as good" in decision.reason


def test_gate_refuses_when_compared_with_another_champion(registry: Path) -> None:
    _register(0.8)
    tracking.promote("churn")
    _register(0.9)  # trained without a comparison against the champion
    decision = tracking.promote("churn")
    assert not decision.promoted and "retrain" in decision.reason


def test_a_model_no_better_than_its_baseline_is_registered_but_never_promoted(
        registry: Path) -> None:
    run = _register(0.50, baseline=("recency", 0.50))  # a tie with the baseline is no better
    assert run.version == "1"
    decision = tracking.promote("churn")
    assert not decision.promoted
    assert "does not beat the baseline recency" in decision.reason
    with pytest.raises(tracking.ChampionMissingError):
        tracking.load_champion("churn")
    forced = tracking.promote("churn", force=True)
    assert forced.promoted and "beware" in forced.reason


def test_a_model_that_beats_its_baseline_is_promoted_first(registry: Path) -> None:
    _register(0.81, baseline=("recency", 0.80))
    decision = tracking.promote("churn")
    assert decision.promoted and decision.reason == "there was no champion yet"


def test_baseline_direction_follows_the_metric() -> None:
    tags = {tracking.TAG_METRIC: "mase", tracking.TAG_GREATER_IS_BETTER: "False",
            tracking.TAG_VALUE: "0.9", tracking.TAG_BASELINE: "seasonal_naive",
            tracking.TAG_BASELINE_VALUE: "1.0"}
    assert tracking.beats_baseline(tags)[0]
    assert not tracking.beats_baseline({**tags, tracking.TAG_VALUE: "1.1"})[0]
    assert tracking.beats_baseline({tracking.TAG_METRIC: "mase"}) == (True, "no baseline recorded")


def test_champion_value_scores_the_champion_on_the_challengers_holdout(registry: Path) -> None:
    """One champion comparison for every kind: the champion's gate metric on this holdout, or a
    note saying why there is none."""
    from models.base import CHURN
    from service.usecases.train import champion_value, classifier_score

    labels = (EXAMPLE["a"] > 0).to_numpy(dtype=int)

    def probabilities(model: ProbaModel, frame: pd.DataFrame) -> np.ndarray:
        return model.predict_frame(frame)["churn_probability"].to_numpy()

    score = classifier_score(CHURN, EXAMPLE, labels, probabilities)
    notes: list[str] = []
    assert champion_value("churn", score, notes) == (None, None)
    assert notes == ["no champion yet: the first promotion needs no comparison"]
    _register(0.8)
    tracking.promote("churn")
    value, version = champion_value("churn", score, notes)
    assert version == "1" and value == pytest.approx(1.0)  # it ranks these three rows right
    assert notes[-1] == "champion v1: pr_auc 1.0000 on the same holdout"

    def gone(model: ProbaModel, frame: pd.DataFrame) -> np.ndarray:
        return probabilities(model, frame.drop(columns="b"))

    assert champion_value("churn", classifier_score(CHURN, EXAMPLE, labels, gone),
                          notes) == (None, None)
    assert notes[-1].startswith("champion v1 could not score this holdout (")
    assert notes[-1].endswith("promotion will need --force")


def test_each_kind_has_one_gate_and_training_refuses_an_unknown_kind() -> None:
    from engine.io import validate_tables
    from models.base import MODEL_KINDS
    from service.usecases.train import beats_baseline, train, training_as_of

    assert list(MODEL_KINDS) == ["churn", "forecast", "win"]
    churn, forecast = MODEL_KINDS["churn"], MODEL_KINDS["forecast"]
    assert beats_baseline(churn, 0.6, 0.5) and not beats_baseline(churn, 0.5, 0.5)
    assert beats_baseline(forecast, 0.9, 1.0) and not beats_baseline(forecast, 1.1, 1.0)
    tables, problems = validate_tables({"orders": pd.DataFrame({
        "order_id": ["1", "2"], "customer_id": ["c", "c"],
        "order_date": ["2024-01-05", "2024-03-09"], "amount": ["10", "20"]})})
    assert not problems
    with pytest.raises(ValueError, match="unknown model kind 'nope'; expected one of churn"):
        train("nope", tables)
    assert training_as_of(tables, None) == pd.Timestamp("2024-03-10")
    assert training_as_of(tables, "2024-02-01 13:00") == pd.Timestamp("2024-02-01")
    with pytest.raises(ValueError, match=r"as_of 2024-01-05 is not after the first order "
                                         r"\(2024-01-05\): there is no history before it"):
        training_as_of(tables, "2024-01-05", after=("the first order",
                                                     pd.Timestamp("2024-01-05")))


@pytest.fixture()
def registry_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A tracking URL where nothing listens (port 9, discard), asked once without retries."""
    import mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    previous = mlflow.get_tracking_uri()
    url = "http://127.0.0.1:9"
    tracking.configure(url)
    yield url
    tracking.configure(previous)


def test_a_registry_that_does_not_answer_is_not_a_missing_champion(registry_down: str) -> None:
    assert not tracking.registry_reachable()
    with pytest.raises(tracking.RegistryUnavailableError, match="did not answer"):
        tracking.load_champion("churn")
    with pytest.raises(tracking.RegistryUnavailableError):
        tracking.promote("churn")


def test_cli_stops_with_a_plain_error_when_the_registry_is_down(
        registry_down: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from service.cli.app import app

    monkeypatch.setenv("QUOTACAST_MLFLOW_TRACKING_URI", registry_down)
    result = CliRunner().invoke(app, ["promote", "churn"])
    assert result.exit_code == 1
    assert "does not answer" in result.stderr and "Traceback" not in result.stderr


def test_workspaces_register_and_read_only_their_own_models(registry: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{registry / 'mlflow.db'}"
    tracking.configure(uri, workspace="acme")
    run = _register(0.8)
    assert run.model_name == "quotacast-acme-churn"
    assert tracking.promote("churn", force=True).promoted
    assert tracking.load_champion("churn").model_name == "quotacast-acme-churn"
    tags = MlflowClient().get_registered_model("quotacast-acme-churn").tags
    assert tags[tracking.TAG_WORKSPACE] == "acme" and tags[tracking.TAG_KIND] == "churn"
    tracking.configure(uri, workspace="crm")
    with pytest.raises(tracking.ChampionMissingError, match="in workspace crm"):
        tracking.load_champion("churn")
    with pytest.raises(tracking.ChampionMissingError, match=r"no challenger .* workspace crm"):
        tracking.promote("churn")
    # The default workspace keeps the unscoped names of before workspaces; no other reads them.
    tracking.configure(uri)
    _register(0.7)
    assert tracking.promote("churn", force=True).promoted
    tracking.configure(uri, workspace="demo-data", adopt_unscoped=True)
    assert tracking.load_champion("churn").model_name == "quotacast-churn"
    tracking.configure(uri, workspace="crm")
    with pytest.raises(tracking.ChampionMissingError, match="belongs to the default workspace"):
        tracking.load_champion("churn")
    tracking.configure(uri)


def test_module_pass_takes_large_arrays() -> None:
    """A forecaster holds arrays large enough for pickle protocol 5 to hand them over as
    buffers: the pass that finds a model's modules must take them (it crashed `train forecast`
    on crm-sales)."""
    import numpy as np

    from engine.tracking import pickled_modules

    assert "numpy" in pickled_modules({"weights": np.zeros(200_000)})
