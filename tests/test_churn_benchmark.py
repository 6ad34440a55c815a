"""benchmarks/churn.py: one small case end to end and its paired bootstrap, so it cannot rot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from engine.io import validate_tables
from engine.synthetic import SizeSpec, generate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("churn_benchmark",
                                                  REPO / "benchmarks" / "churn.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["churn_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def test_paired_bootstrap_brackets_the_difference(bench: ModuleType) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    noise = rng.normal(size=400)
    sharp, blunt = y + 0.5 * noise, y + 3.0 * noise
    ci = bench.paired_bootstrap(y, sharp, blunt, draws=200)
    for diff, lo, hi in ci.values():
        assert 0 < lo <= diff <= hi
    same = bench.paired_bootstrap(y, sharp, sharp, draws=50)
    assert all(v == (0.0, 0.0, 0.0) for v in same.values())


def test_a_case_runs_and_compares_ours_with_each_peer(bench: ModuleType) -> None:
    company = validate_tables(generate(SizeSpec("tiny", 250, 2, 1, (1, 1), (2, 2)), seed=7))[0]
    case = bench.Case("tiny", "all", company, 90)
    table, _, diffs = bench.run_case(case, bootstrap=True, draws=50)
    assert table["model"].iloc[0].startswith("ours = ")
    assert {"bg_nbd", "recency (days)", "rfm_logistic"} <= set(table["model"])
    assert set(diffs["vs"]) >= {"bg_nbd", "recency (days)", "rfm_logistic"}
    ours = table.set_index("model").loc[table["model"].iloc[0]]
    for _, row in diffs.iterrows():
        peer = table.set_index("model").loc[row["vs"]]
        assert row["roc_auc_diff"] == pytest.approx(ours["roc_auc"] - peer["roc_auc"])
        assert row["roc_auc_lo"] <= row["roc_auc_diff"] <= row["roc_auc_hi"]


def test_blend_ceiling_is_at_least_each_model_alone(bench: ModuleType) -> None:
    from scipy.special import expit
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    scores = {name: expit(y + rng.normal(scale=s, size=300))
              for name, s in (("lightgbm", 1.0), ("bg_nbd", 1.5), ("rfm_logistic", 2.0))}
    weights, value = bench.blend_ceiling(y, scores)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert all(w >= 0 for w in weights.values())
    for p in scores.values():
        assert value >= roc_auc_score(y, p) - 1e-12
    # Independent noise: averaging beats the best one alone.
    assert value > max(roc_auc_score(y, p) for p in scores.values())
