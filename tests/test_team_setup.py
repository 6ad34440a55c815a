"""Team setup: an `mlflow server` on PostgreSQL with proxied artifacts, used from two machines.

"Machine A" trains and promotes a churn champion through the server from one working directory;
"machine B", another working directory with nothing shared but the server's URL, scores with it
through the CLI and serves it with `mlflow models serve`. Neither writes ``./mlruns``.

Runs when CI started the server (``.ci/run`` exports ``QUOTACAST_TEST_MLFLOW_SERVER_URL``); with
``QUOTACAST_TEST_FRESH_VENV=1`` as well, machine B serves from a new virtual environment that
installed only the model's ``requirements.txt`` (nothing of quotacast: its code comes with the
model).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import tracking
from engine.io import validate_tables
from engine.io.write import write_data_dir
from engine.schemas import CUSTOMER_ID
from engine.synthetic import generate
from models.churn import CHURN_PROBABILITY

SERVER = os.environ.get("QUOTACAST_TEST_MLFLOW_SERVER_URL", "")
pytestmark = pytest.mark.skipif(not SERVER, reason="needs the MLflow server CI starts "
                                "(QUOTACAST_TEST_MLFLOW_SERVER_URL)")
BIN = Path(sys.executable).parent
AS_OF = "2026-10-01"


@dataclass(frozen=True)
class Team:
    data: Path
    machine_a: Path
    machine_b: Path
    env: dict[str, str]
    workspace: str
    model: str


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600
         ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    return done


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Team:
    """A champion trained and promoted through the server from machine A."""
    root = tmp_path_factory.mktemp("team")
    data = write_data_dir(generate("small", seed=7), root / "data")
    workspace = f"team-{uuid.uuid4().hex[:8]}"  # the server outlives one test run
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTACAST_")}
    env.update(QUOTACAST_MLFLOW_TRACKING_URI=SERVER, QUOTACAST_DATA=str(data),
               QUOTACAST_WORKSPACE=workspace, QUOTACAST_DEFAULT_WORKSPACE="demo-data")
    if os.environ.get("QUOTACAST_TEST_POSTGRES_URL"):  # the alert store on the same PostgreSQL
        env["QUOTACAST_DATABASE_URL"] = os.environ["QUOTACAST_TEST_POSTGRES_URL"]
    machine_a, machine_b = root / "a", root / "b"
    machine_a.mkdir()
    machine_b.mkdir()
    quotacast = str(BIN / "quotacast")
    trained = _run([quotacast, "train", "churn", "--as-of", AS_OF, "--horizon-days", "90"],
                   machine_a, env)
    assert "View run" not in trained.stdout + trained.stderr  # MLflow's own chatter is off
    promoted = _run([quotacast, "promote", "churn", "--force"], machine_a, env)
    assert (promoted.stdout + promoted.stderr).startswith("promoted ")
    return Team(data, machine_a, machine_b, env, workspace,
                tracking.model_name("churn", workspace))


def _scores(team: Team, cwd: Path) -> pd.DataFrame:
    done = _run([str(BIN / "quotacast"), "score", "churn", "--as-of", AS_OF, "--json"], cwd,
                team.env)
    assert "Downloading artifacts" not in done.stderr  # no third-party progress bars
    return pd.DataFrame(json.loads(done.stdout)).set_index(CUSTOMER_ID)


def test_another_machine_scores_with_the_champion_and_nothing_is_written_locally(
        team: Team) -> None:
    here = _scores(team, team.machine_a)
    there = _scores(team, team.machine_b)
    assert len(there) > 100
    pd.testing.assert_series_equal(there[CHURN_PROBABILITY], here[CHURN_PROBABILITY])
    for cwd in (team.machine_a, team.machine_b):
        assert not (cwd / "mlruns").exists() and not (cwd / "mlflow.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def request_rows(team: Team) -> tuple[pd.DataFrame, pd.Series]:
    """Feature rows as the served model receives them, and the pandas scorer's answer."""
    import mlflow

    from service.usecases import churn as pipeline

    tables = validate_tables(generate("small", seed=7))[0]
    stamp = pd.Timestamp(AS_OF)
    previous = mlflow.get_tracking_uri()
    tracking.configure(SERVER)
    try:
        estimator = tracking.load_champion("churn", workspace=team.workspace).estimator
    finally:
        tracking.configure(previous)
    days = pipeline._model_horizon(estimator) or pipeline.FALLBACK_HORIZON_DAYS
    features = pipeline.serving_example(pipeline._active_features(tables, stamp, days), rows=40)
    expected = pipeline.score_churn(tables, as_of=stamp, model=estimator).set_index(CUSTOMER_ID)
    return features, expected.loc[features[CUSTOMER_ID], CHURN_PROBABILITY]


@contextmanager
def _serving(mlflow_bin: Path, team: Team, log: Path) -> Iterator[str]:
    """`mlflow models serve` of the champion from machine B; yields its URL."""
    port = _free_port()
    # As in an activated environment: MLflow starts the scoring server by its command name.
    env = dict(team.env, MLFLOW_TRACKING_URI=SERVER, MLFLOW_REGISTRY_URI=SERVER,
               PATH=f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(mlflow_bin), "models", "serve", "-m", f"models:/{team.model}@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            cwd=team.machine_b, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def _invoke(url: str, frame: pd.DataFrame) -> np.ndarray:
    body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False,
                                                        date_format="iso"))}
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        predictions = json.loads(answer.read())["predictions"]
    return np.array([row[CHURN_PROBABILITY] for row in predictions], dtype=float)


def test_mlflow_models_serve_answers_like_the_pandas_scorer(
        team: Team, request_rows: tuple[pd.DataFrame, pd.Series], tmp_path: Path) -> None:
    features, expected = request_rows
    with _serving(BIN / "mlflow", team, tmp_path / "serve.log") as url:
        scores = _invoke(url, features)
    np.testing.assert_allclose(scores, expected.to_numpy(dtype=float), rtol=1e-9, atol=1e-12)
    assert not (team.machine_b / "mlruns").exists()


@pytest.mark.skipif(os.environ.get("QUOTACAST_TEST_FRESH_VENV") != "1",
                    reason="installs the model's requirements into a new virtual environment "
                    "(QUOTACAST_TEST_FRESH_VENV=1, set by CI)")
def test_a_fresh_virtualenv_with_only_the_models_requirements_serves_it(
        team: Team, request_rows: tuple[pd.DataFrame, pd.Series], tmp_path: Path) -> None:
    _run([str(BIN / "mlflow"), "artifacts", "download", "-u", f"models:/{team.model}@champion",
          "-d", str(tmp_path / "model")], team.machine_b,
         dict(os.environ, MLFLOW_TRACKING_URI=SERVER, MLFLOW_REGISTRY_URI=SERVER))
    requirements = tmp_path / "model" / "requirements.txt"
    assert "quotacast" not in requirements.read_text()
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(venv)], tmp_path, dict(os.environ))
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
          "--disable-pip-version-check", "-r", str(requirements)], tmp_path, dict(os.environ),
         timeout=1200)
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import engine"],
                           cwd=team.machine_b, capture_output=True, text=True)
    assert check.returncode != 0  # quotacast is not installed there: the model brings its code
    features, expected = request_rows
    with _serving(venv / "bin" / "mlflow", team, tmp_path / "serve.log") as url:
        scores = _invoke(url, features)
    np.testing.assert_allclose(scores, expected.to_numpy(dtype=float), rtol=1e-9, atol=1e-12)
