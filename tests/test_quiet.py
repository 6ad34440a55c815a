"""No third-party chatter reaches a user's terminal: what a command prints is quotacast's own.

Each check runs in a fresh interpreter, because the chatter comes from import-time logger set-up
(cmdstanpy adds its own INFO handler, Prophet logs an error when plotly is missing) that an
already-configured test process would hide.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROPHET_FIT = """
import numpy as np, pandas as pd
from models.forecast.prophet import _prophet_chunk
ds = pd.date_range("2020-01-01", periods=30, freq="MS")
y = 5 + np.sin(np.arange(30))
out = _prophet_chunk([(ds.values, y)], pd.date_range("2022-07-01", periods=3, freq="MS"), False)
print(len(out[0]))
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def test_a_prophet_fit_prints_nothing_of_prophet_or_cmdstanpy() -> None:
    done = _run(_PROPHET_FIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    assert "cmdstanpy" not in done.stderr and "plotly" not in done.stderr, done.stderr


_REGISTER = """
import os, sys
sys.path.insert(0, "tests")
from engine import tracking
from test_tracking import EXAMPLE, ProbaModel
os.chdir(sys.argv[1])
tracking.configure("sqlite:///mlflow.db")
run = tracking.log_and_register(
    "churn", ProbaModel(), input_example=EXAMPLE, params={}, metrics={"roc_auc": 0.8},
    gate_metric="roc_auc", greater_is_better=True, holdout="h")
print(run.version)
"""


def test_registering_a_model_prints_no_mlflow_event_lines(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _REGISTER, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert "Successfully registered" not in done.stderr, done.stderr
    assert "Created version" not in done.stderr, done.stderr
