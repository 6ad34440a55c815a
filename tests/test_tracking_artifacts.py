"""Where model files go: beside a SQLite store, under the artifacts setting for another
database, and never into ./mlruns of the training machine."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from engine import tracking
from engine.config import SetupError

PG = "postgresql+psycopg://u:secret@db.example:5432/mlflow"


def test_a_server_keeps_the_model_files_in_its_own_store() -> None:
    assert tracking._artifact_root("http://mlflow.example:5000", None) is None
    assert tracking._artifact_root("https://mlflow.example", "/ignored") is None


def test_a_sqlite_store_keeps_them_beside_its_file_unless_told(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking._artifact_root(uri) == (tmp_path / "mlruns").as_uri()
    assert tracking._artifact_root(uri, str(tmp_path / "shared")) == (tmp_path / "shared").as_uri()


def test_another_database_needs_the_artifacts_setting() -> None:
    with pytest.raises(SetupError, match="QUOTACAST_MLFLOW_ARTIFACTS") as caught:
        tracking._artifact_root(PG)
    assert "secret" not in str(caught.value)  # the password never reaches a message
    assert tracking._artifact_root(PG, "s3://team-bucket/quotacast/") == \
        "s3://team-bucket/quotacast"
    assert tracking._artifact_root(PG, "relative/dir") == Path("relative/dir").resolve().as_uri()


def test_training_writes_under_the_artifacts_setting_not_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    class Constant:
        def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"churn_probability": [0.5] * len(frame)})

    work, store = tmp_path / "work", tmp_path / "store"
    work.mkdir()
    monkeypatch.chdir(work)
    previous = mlflow.get_tracking_uri()
    # A database other than the SQLite-beside-its-file default: the setting decides.
    tracking.configure(f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}", artifacts=str(store))
    (tmp_path / "db").mkdir()
    try:
        run = tracking.log_and_register(
            "churn", Constant(), input_example=pd.DataFrame({"a": [1.0, 2.0]}), params={},
            metrics={"pr_auc": 0.5}, gate_metric="pr_auc", greater_is_better=True,
            holdout="h")
        assert list(store.glob("churn/models/*/artifacts/MLmodel"))
        assert not (work / "mlruns").exists() and not (tmp_path / "db" / "mlruns").exists()
        path = list(sys.path)
        assert tracking.load_pyfunc("churn", tracking.CHALLENGER).predict(
            pd.DataFrame({"a": [3.0]}))["churn_probability"].tolist() == [0.5]
        # Loaded here, the installed code stays the one imported: the model's copy of it is
        # not left first on sys.path.
        assert sys.path == path
        assert run.version == "1"
    finally:
        tracking.configure(previous)
