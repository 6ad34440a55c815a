"""``feasibility --engine spark``: blocks of draws as Spark tasks, summed up the hierarchy on
the executors; the same draws, P(attain) and quantiles as pandas, to the last bit.

One local[1] Spark session serves the whole module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.compute import PandasEngine
from engine.io import Tables, load_tables, write_data_dir
from engine.periods import default_as_of
from engine.schemas import AMOUNT, CREATED_AT, DS, REGION, REP, TEAM
from engine.synthetic import generate
from features.funnel import snapshot_date
from features.hierarchy import revenue_events
from features.revenue_nodes import CubeTables, cube_events
from models.feasibility import fit_stage_rates
from models.feasibility.period import stage_rate_counts_at, stage_rate_dates
from models.win import COUNT_ROWS, add_counts
from service.usecases.feasibility import SparkBlocks, engine_blocks, run_feasibility
from service.usecases.scaled_feasibility import (
    engine_stage_rates,
    feasibility_dates,
    feasibility_tables,
)

pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def real(real_data: Callable[..., Path]) -> Path:
    """A real slice with deals, reps, teams and targets-free: the first 6 months of the CRM
    sales dataset."""
    return real_data("crm-sales", 6)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo company, a third of its won deals that orders carry closed three weeks
    before their first order (so, seen from between the two, such a deal is revenue alone)."""
    frames = generate("small", seed=5)
    deals, orders = frames["opportunities"].copy(), frames["orders"]
    first = orders.dropna(subset=["opportunity_id"]).groupby("opportunity_id")["order_date"].min()
    carried = deals["opportunity_id"].map(first)
    moved = (deals["status"] == "won") & carried.notna() & (np.arange(len(deals)) % 3 == 0)
    earlier = (carried - pd.Timedelta(days=21)).where(moved)
    deals.loc[moved, "close_date"] = np.maximum(earlier[moved], deals.loc[moved, "created_at"])
    frames["opportunities"] = deals
    return write_data_dir(frames, tmp_path_factory.mktemp("demo") / "csv")


def _by_node_day(events: pd.DataFrame) -> pd.Series:
    keys = [events[c].astype(object).fillna("?") for c in (REP, TEAM, REGION)]
    keys += [events[DS].dt.normalize(), events[CREATED_AT].dt.normalize().fillna(pd.Timestamp(0))]
    return events.groupby(keys)[AMOUNT].sum()


def test_summed_revenue_answers_every_date_as_the_orders_do(demo: Path) -> None:
    """Revenue summed per node, day, deal creation day and sign on the engine gives, as of any
    earlier date and from any day, the events of the orders themselves: the same sums per
    node, day and creation day, and a won deal counted on its close only until an order
    carries it."""
    tables = load_tables(str(demo))
    read = feasibility_tables(PandasEngine(), str(demo), None)
    assert read is not None
    summed, as_of = read
    assert isinstance(summed, CubeTables) and summed.revenue is not None
    assert summed.orders.empty and as_of == default_as_of(tables)
    assert len(summed.revenue) < len(tables.orders) / 2
    for days, since in ((0, None), (45, None), (200, 30), (400, None), (700, 365)):
        when = as_of - pd.Timedelta(days=days)
        start = None if since is None else when - pd.Timedelta(days=since)
        mine = cube_events(summed.revenue, as_of=when, since=start, with_created=True)
        theirs = revenue_events(tables, as_of=when, since=start, with_created=True)
        a, b = _by_node_day(mine), _by_node_day(theirs)
        pd.testing.assert_index_equal(a.index, b.index)
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-12, atol=1e-6)
        assert (mine[AMOUNT] < 0).sum() <= (theirs[AMOUNT] < 0).sum()
    assert int(summed.revenue["_until"].notna().sum()) > 10  # deals alone until an order


def test_summed_tables_give_the_feasibility_within_monte_carlo(demo: Path) -> None:
    """Feasibility on the summed tables: the closed to date of the whole tables, the same
    notes (the same win rates, run rate, backtests), P(attain) and quantiles within Monte
    Carlo error (the deals come in another order, so each draws other numbers)."""
    tables = load_tables(str(demo))
    read = feasibility_tables(PandasEngine(), str(demo), None)
    assert read is not None
    summed, as_of = read
    period = str((as_of - pd.Timedelta(days=1)).to_period("Q"))
    args: dict[str, Any] = dict(draws=2_000, seed=42, all_nodes=True, models={},
                                use_churn=False)
    whole = run_feasibility(tables, period, as_of, **args)
    lean = run_feasibility(summed, period, as_of, **args)
    assert whole.notes == lean.notes
    a = whole.frame.sort_values(["level", "key"], ignore_index=True)
    b = lean.frame.sort_values(["level", "key"], ignore_index=True)
    pd.testing.assert_frame_equal(a[["level", "key"]], b[["level", "key"]])
    np.testing.assert_allclose(a["closed_to_date"], b["closed_to_date"], rtol=1e-12)
    assert float((a["p_attain"] - b["p_attain"]).abs().max()) < 0.02
    for q in ("p10", "p50", "p90"):
        np.testing.assert_allclose(a[q], b[q], rtol=0.01)


def test_spark_sums_the_pandas_tables(spark: object, demo: Path) -> None:
    """The engines read and sum the same tables, row for row, so the feasibility is the same
    to the last bit."""
    here = feasibility_tables(PandasEngine(), str(demo), None)
    there = feasibility_tables(spark, str(demo), None)  # type: ignore[arg-type]
    assert here is not None and there is not None
    assert here[1] == there[1]
    pd.testing.assert_frame_equal(here[0].revenue, there[0].revenue, check_exact=True)
    for name in ("opportunities", "stage_history", "customers", "org"):
        pd.testing.assert_frame_equal(here[0][name], there[0][name], check_exact=True)
    period = str((here[1] - pd.Timedelta(days=1)).to_period("Q"))
    args: dict[str, Any] = dict(draws=1_000, seed=42, all_nodes=True, models={},
                                use_churn=False)
    a = run_feasibility(here[0], period, here[1], **args)
    b = run_feasibility(there[0], period, there[1],
                        blocks=engine_blocks(spark), **args)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=True)
    assert a.notes == b.notes


def _rates(model: Any) -> tuple[Any, ...]:
    return (model.overall_, model.bucket_rate_, model.cell_rate_, model.conversion_,
            model.period_spread_)


def test_stage_rates_counted_bucket_by_bucket_are_the_whole_tables_rates(
        spark: object, demo: Path) -> None:
    """Without a champion the stage rates are learned from sums each bucket of deals counts
    where the engine computes: the same rates, to the last bit, as fitted on the whole tables
    here, on either engine; another as-of (the pace check's) is fitted here as before."""
    read = feasibility_tables(spark, str(demo), None)  # type: ignore[arg-type]
    assert read is not None
    tables, when = read
    expected, note = fit_stage_rates(tables, when)
    assert "deal snapshots" in note  # learned from rows, not the flat rate
    for engine in (spark, PandasEngine()):
        model, said = engine_stage_rates(engine, tables)(tables, when)  # type: ignore[arg-type]
        assert said == note
        for a, b in zip(_rates(model), _rates(expected), strict=True):
            if isinstance(a, pd.Series):
                pd.testing.assert_series_equal(a, b, check_exact=True, check_names=False)
            else:
                assert a == b or (np.isnan(a) and np.isnan(b))
    earlier = when - pd.Timedelta(days=60)
    model, _ = engine_stage_rates(spark, tables)(tables, earlier)  # type: ignore[arg-type]
    pd.testing.assert_series_equal(model.cell_rate_, fit_stage_rates(tables, earlier)[0].cell_rate_)
    # a bucket's sums are its deals' alone: two halves of the demo's deals add up to the whole
    dates = stage_rate_dates(tables, when)
    whole = stage_rate_counts_at(tables, dates, when)
    ids = tables["opportunities"]["opportunity_id"]
    halves = []
    for keep in (ids.str[-1] < "5", ids.str[-1] >= "5"):
        kept = set(ids[keep])
        part = Tables({"opportunities": tables["opportunities"][keep],
                       "stage_history": tables["stage_history"][
                           tables["stage_history"]["opportunity_id"].isin(kept)]})
        halves.append(stage_rate_counts_at(part, dates, when, snapshot_date(tables)))
    summed = add_counts(pd.concat(halves, ignore_index=True))
    assert summed[COUNT_ROWS].sum() == whole[COUNT_ROWS].sum() > 0
    pd.testing.assert_frame_equal(summed, whole, check_exact=False, rtol=1e-12)


def test_the_stage_history_of_deals_open_when_seen_gives_the_whole_historys_answer(
        demo: Path) -> None:
    """Without a champion win model only the stage history of the deals open at the dates
    the feasibility sees deals at (the as-of and its p_attain check's earlier points) is
    brought here: the same feasibility, to the last bit, from a fraction of the history."""
    engine = PandasEngine()
    whole = feasibility_tables(engine, str(demo), None)
    assert whole is not None
    when = whole[1]
    period = str((when - pd.Timedelta(days=40)).to_period("Q"))
    dates = feasibility_dates(period, when)
    assert len(dates) > 1  # the check replays earlier points too
    lean = feasibility_tables(engine, str(demo), when, open_at=dates)
    assert lean is not None
    history = lean[0]["stage_history"]
    assert 0 < len(history) < 0.8 * len(whole[0]["stage_history"])
    args: dict[str, Any] = dict(draws=1_000, seed=42, models={}, use_churn=False)
    a = run_feasibility(whole[0], period, when, **args,
                        stage_rates=engine_stage_rates(engine, whole[0]))
    b = run_feasibility(lean[0], period, when, **args,
                        stage_rates=engine_stage_rates(engine, lean[0]))
    assert any("earlier" in n for n in a.notes), a.notes  # the p_attain check replayed
    pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=True)
    assert a.notes == b.notes


def test_spark_sums_the_pandas_tables_of_a_parquet_directory(spark: object, demo: Path,
                                                             tmp_path: Path) -> None:
    """From a Parquet data directory too (dates typed by the files, a stage's expected close
    among them): the same tables on either engine, and as the loader's tables give them."""
    from engine.compute.parquet import write_parquet_dir

    tables = load_tables(str(demo))
    target = tmp_path / "parquet"
    write_parquet_dir({n: f for n, f in tables.frames.items() if n not in tables.derived},
                      target)
    here = feasibility_tables(PandasEngine(), str(target), None)
    loaded = feasibility_tables(PandasEngine(), str(target), None,
                                whole=load_tables(str(target)))
    there = feasibility_tables(spark, str(target), None)  # type: ignore[arg-type]
    assert here is not None and there is not None and loaded is not None
    for name in ("opportunities", "stage_history", "customers", "org"):
        pd.testing.assert_frame_equal(here[0][name], there[0][name], check_exact=True)
        pd.testing.assert_frame_equal(loaded[0][name], there[0][name], check_exact=True)
    assert isinstance(there[0], CubeTables) and isinstance(loaded[0], CubeTables)
    pd.testing.assert_frame_equal(loaded[0].revenue, there[0].revenue, check_exact=True)
    assert there[0]["stage_history"]["close_date"].notna().any()


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

    assert rows(on_spark) == rows(by_setting)
    # pandas reads the whole tables (the board's and the plan's answer); Spark sums revenue on
    # the executors and hands the deals over in id order: within Monte Carlo error
    a = pd.DataFrame(rows(plain)).sort_values(["level", "key"], ignore_index=True)
    b = pd.DataFrame(rows(on_spark)).sort_values(["level", "key"], ignore_index=True)
    pd.testing.assert_frame_equal(a[["level", "key"]], b[["level", "key"]])
    np.testing.assert_allclose(a["closed_to_date"], b["closed_to_date"], rtol=1e-12)
    pa, pb = (pd.to_numeric(f["p_attain"]) for f in (a, b))  # none without a target
    assert pa.isna().equals(pb.isna())
    assert float((pa - pb).abs().fillna(0.0).max()) < 0.02
    # the expectations are the same sums (no draws in them)
    for col in ("expected_pipeline", "expected_run_rate"):
        np.testing.assert_allclose(a[col].astype(float), b[col].astype(float), rtol=1e-9)
    # a quantile of a few deals' Bernoulli wins jumps between sums of amounts: within 10% of
    # the node's P90 (2,000 draws), and the company's within 1%
    scale = a["p90"].astype(float).clip(lower=1.0)
    company = a["level"].eq("company").to_numpy()
    for q in ("p10", "p50", "p90"):
        diff = (a[q].astype(float) - b[q].astype(float)).abs()
        assert bool((diff <= 0.10 * scale).all()), diff.max()
        assert bool((diff[company] <= 0.01 * scale[company]).all())
    assert a["p50"].astype(float).gt(0).any()
    assert any(r["level"] == "rep" for r in rows(plain))
    assert not spark.session.sparkContext._jsc.sc().isStopped()  # type: ignore[attr-defined]


def test_cli_engine_spark_scores_churn_on_the_engine(spark: object, demo: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With a churn champion, ``feasibility --engine spark`` scores the customers and sums
    their revenue of the year on the engine (the orders still never come whole to the
    driver): the same churn adjustment per node as pandas, and the same customers scored."""
    from service.cli.app import app

    monkeypatch.chdir(tmp_path)
    env = {"QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "QUOTACAST_DATABASE_URL": f"sqlite:///{tmp_path / 'alerts.db'}",
           "QUOTACAST_SPARK_MASTER": "local[1]", "QUOTACAST_N_JOBS": "1"}
    runner = CliRunner()
    for step in (["train", "churn"], ["promote", "churn"]):
        done = runner.invoke(app, [*step, "--data", str(demo)], env=env)
        assert done.exit_code == 0, done.output
    args = ["feasibility", "--data", str(demo), "--draws", "1000", "--json"]
    plain = runner.invoke(app, args, env=env)
    on_spark = runner.invoke(app, [*args, "--engine", "spark"], env=env)
    assert plain.exit_code == 0, plain.output
    assert on_spark.exit_code == 0, on_spark.output

    def scored(output: str) -> list[str]:
        return [line for line in output.splitlines() if "churn: champion v1 scored" in line]

    assert scored(plain.output) and scored(plain.output) == scored(on_spark.output)
    a, b = (pd.DataFrame(json.loads(r.stdout.strip().splitlines()[-1]))
            .sort_values(["level", "key"], ignore_index=True) for r in (plain, on_spark))
    pd.testing.assert_frame_equal(a[["level", "key"]], b[["level", "key"]])
    churn_a, churn_b = (f["churn_adjustment"].astype(float) for f in (a, b))
    assert churn_a.abs().max() > 0  # the adjustment applied on both
    np.testing.assert_allclose(churn_b, churn_a, rtol=0.005, atol=1e-6)
    np.testing.assert_allclose(a["closed_to_date"], b["closed_to_date"], rtol=1e-12)
    assert float((a["p_attain"].astype(float) - b["p_attain"].astype(float)).abs().max()) < 0.02
