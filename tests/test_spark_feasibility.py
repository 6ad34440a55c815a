"""``feasibility --engine spark``: blocks of draws as Spark tasks, summed up the hierarchy on
the executors; the same draws, P(attain) and quantiles as pandas, to the last bit.

One local[1] Spark session serves the whole module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.io import load_tables
from engine.periods import default_as_of
from service.usecases.feasibility import SparkBlocks, engine_blocks, run_feasibility

pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def real(real_data: Callable[..., Path]) -> Path:
    """A real slice with deals, reps, teams and targets-free: the first 6 months of the CRM
    sales dataset."""
    return real_data("crm-sales", 6)


def test_spark_blocks_give_the_pandas_feasibility(spark: object, real: Path) -> None:
    """Every node's draws, P(attain), quantiles and notes as on pandas; the draws really went
    out as several Spark tasks."""
    tables = load_tables(str(real))
    as_of = default_as_of(tables)
    period = str((as_of - pd.Timedelta(days=1)).to_period("Q"))
    blocks = engine_blocks(spark)  # type: ignore[arg-type]
    assert isinstance(blocks, SparkBlocks) and blocks.at_least >= 2
    calls: list[int] = []

    def counted(fn: Callable[[int], np.ndarray], n: int) -> Iterator[tuple[int, np.ndarray]]:
        calls.append(n)
        assert blocks is not None
        return blocks(fn, n)

    counted.at_least = 3  # type: ignore[attr-defined]
    args = dict(draws=3_000, seed=42, all_nodes=True, models={}, use_churn=False)
    here = run_feasibility(tables, period, as_of, **args)  # type: ignore[arg-type]
    there = run_feasibility(tables, period, as_of, blocks=counted,  # type: ignore[arg-type]
                            **args)
    assert calls == [3]
    np.testing.assert_array_equal(here.simulation.draws, there.simulation.draws)
    pd.testing.assert_frame_equal(here.frame, there.frame, check_exact=True)
    assert here.notes == there.notes
    assert len(here.frame) > 5 and here.frame["p50"].gt(0).any()


def test_cli_engine_spark_prints_the_pandas_answer(spark: object, real: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``quotacast feasibility --engine spark`` writes what the pandas command writes and
    leaves the running session running; QUOTACAST_ENGINE=spark picks it too."""
    from service.cli.app import app

    monkeypatch.chdir(tmp_path)
    env = {"QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "QUOTACAST_DATABASE_URL": f"sqlite:///{tmp_path / 'alerts.db'}",
           "QUOTACAST_SPARK_MASTER": "local[1]", "QUOTACAST_N_JOBS": "1"}
    args = ["feasibility", "--data", str(real), "--all-nodes", "--draws", "2000", "--json"]
    runner = CliRunner()
    plain = runner.invoke(app, args, env=env)
    assert plain.exit_code == 0, plain.output
    on_spark = runner.invoke(app, [*args, "--engine", "spark"], env=env)
    assert on_spark.exit_code == 0, on_spark.output
    assert "Traceback" not in on_spark.output
    by_setting = runner.invoke(app, args, env={**env, "QUOTACAST_ENGINE": "spark"})
    assert by_setting.exit_code == 0, by_setting.output

    def rows(result: object) -> list[dict[str, object]]:
        return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[attr-defined]

    assert rows(on_spark) == rows(plain) == rows(by_setting)
    assert any(r["level"] == "rep" for r in rows(plain))
    assert not spark.session.sparkContext._jsc.sc().isStopped()  # type: ignore[attr-defined]
