"""``forecast --fit`` / ``train forecast`` on a compute engine: the pandas forecasts, exactly.

The per-series candidates are fitted on CRC-32 buckets of series (``engine_runner``), the
series' rows read with column and date pruning (``engine_tables``). One local[1] Spark session
serves the module; the pandas engine tests need no Spark.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.compute import PandasEngine
from engine.io import Tables, load_tables, write_data_dir
from engine.periods import first_day
from engine.synthetic import generate
from features.hierarchy import rep_hierarchy
from features.revenue import revenue_series
from features.revenue_nodes import orders_by_day, revenue_node_tables
from models.backtest import to_panel
from models.forecast.local import local_job, run_here
from models.forecast.season import observed_season_indices, season_pool
from models.forecast.statistical import AutoEtsForecaster, StatsBatch, ThetaForecaster
from service.usecases.forecast import forecast_fresh
from service.usecases.scaled_forecast import engine_runner, engine_tables

pytest.importorskip("pyspark")

# The per-series families (AutoARIMA, slow, shares AutoETS's batch) and one global model.
CANDIDATES = ("seasonal_naive", "ets", "theta", "autoets", "lgbm")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data_dir(generate("small", seed=5), tmp_path_factory.mktemp("demo") / "csv")


@pytest.fixture(scope="module")
def real(real_data: Callable[..., Path]) -> Path:
    """Superstore's first 6 months (orders with product categories and customer regions)."""
    return real_data("superstore", 6)


def _fresh(tables: Tables, **kw: Any) -> pd.DataFrame:
    frame, _ = forecast_fresh(tables, freq="M", horizon=4, candidates=CANDIDATES, **kw)
    return frame


def test_orders_summed_the_same_whatever_the_read_order() -> None:
    """Revenue sums do not depend on the order rows were read in (forecasts react to the last
    bit), nor on summing per bucket of customers."""
    rng = np.random.default_rng(0)
    orders = pd.DataFrame({"customer_id": rng.choice(["a", "b", "c"], 300).astype(object),
                           "order_date": pd.to_datetime("2026-01-01")
                           + pd.to_timedelta(rng.integers(0, 3, 300), unit="D"),
                           "amount": rng.random(300) * 1e3})
    whole = orders_by_day(orders)
    shuffled = orders_by_day(orders.sample(frac=1.0, random_state=1))
    pd.testing.assert_frame_equal(whole, shuffled, check_exact=True)
    parts = [orders_by_day(orders[orders["customer_id"] == c]) for c in ("c", "a", "b")]
    joined = pd.concat(parts).sort_values("customer_id", kind="mergesort", ignore_index=True)
    pd.testing.assert_frame_equal(whole, joined, check_exact=True)
    assert len(whole) == 9


def test_groups_of_series_fit_the_same_here_and_on_an_engine(demo: Path) -> None:
    """The per-series candidates run on CRC-32 groups of series: in this process (the
    default), on the pandas engine, and whatever order the series come in, the same numbers
    to the last bit. The season pooled over every series travels with the job, so a group's
    short series are deseasonalised as in the whole panel."""
    tables = load_tables(demo)
    panel = to_panel(revenue_series(tables, "M", ["company", "region", "team", "rep"]), "M")
    # 16 periods: one season seen, too few for Theta's own, so the pooled season is used.
    panel = panel.head(16)
    job = local_job({"theta": ThetaForecaster(12, 120), "autoets": AutoEtsForecaster(
        StatsBatch(12, 120, ["AutoETS"]))}, {"theta": 4, "autoets": 3}, panel, [10, 13], 4,
        3, 12)
    assert job.pools[(16, 4)].active and job.pools[(16, 4)].m > 1
    here = run_here(job, panel)
    engine = engine_runner(PandasEngine())(job, panel)
    backwards = np.arange(panel.n_series)[::-1]
    reversed_here = run_here(job, panel.subset(backwards))
    assert [list(p) for p in here] == [["theta", "autoets"]] * 3
    for got, again, expected in zip(engine, reversed_here, here, strict=True):
        for name in expected:
            assert np.isfinite(expected[name]).all()
            np.testing.assert_array_equal(got[name], expected[name])
            np.testing.assert_array_equal(again[name], expected[name][backwards])
    # Half of the series pooled on their own would get other indices.
    rows = np.arange(panel.n_series) % 2 == 0
    half = panel.subset(rows).values
    own = observed_season_indices(half, 12, 4)
    pooled = observed_season_indices(half, 12, 4, season_pool(panel.values, 12, 4))
    np.testing.assert_array_equal(
        pooled, observed_season_indices(panel.values, 12, 4)[rows])
    assert not np.array_equal(own, pooled)


def test_pandas_engine_in_buckets_is_the_pandas_forecast(demo: Path) -> None:
    """Pruned reads (orders summed per customer and day in buckets) and bucketed fits on the
    pandas engine give the pandas pipeline's forecasts to the last bit."""
    tables = load_tables(demo)
    expected = _fresh(tables, level="rep")
    engine = PandasEngine()
    pruned, when = engine_tables(engine, str(demo), None, "rep")
    assert set(pruned["orders"].columns) <= {"customer_id", "order_date", "amount",
                                            "opportunity_id"}
    got = _fresh(pruned, level="rep", as_of=when, runner=engine_runner(engine))
    assert expected["level"].eq("rep").all() and len(expected) > 20
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def _summed_per_customer_day(tables: Tables, levels: list[str]) -> Tables:
    """The tables as revenue series were summed before node-day sums: orders per customer
    and day (a peer for the attribution, not for the last bit)."""
    frames = dict(tables.frames)
    orders = tables.orders
    wanted = ("customer_id", "order_date", "amount", "opportunity_id", *levels)
    frames["orders"] = orders_by_day(orders[[c for c in dict.fromkeys(wanted)
                                             if c in orders.columns]])
    return Tables(frames)


def _edges(tables: Tables, when: pd.Timestamp) -> Tables:
    """Deals that cross groups: an order of one customer linked to another customer's deal,
    a won deal without a customer, a won deal whose only order comes after ``when``."""
    frames = {n: f.copy() for n, f in tables.frames.items()}
    opps, orders = frames["opportunities"], frames["orders"]
    owner = str(opps["owner"].dropna().iloc[-1])
    deals = pd.DataFrame({
        "opportunity_id": ["X-CROSS", "X-NOCUST", "X-LATE"],
        "customer_id": [orders["customer_id"].iloc[0], None, orders["customer_id"].iloc[1]],
        "owner": owner, "status": "won", "stage": opps["stage"].iloc[0] if "stage" in opps
        else None, "amount": [7e3, 8e3, 9e3],
        "created_at": when - pd.Timedelta(days=90), "close_date": when - pd.Timedelta(days=20)})
    frames["opportunities"] = pd.concat([opps, deals], ignore_index=True)
    extra = orders.iloc[:2].copy()
    extra["customer_id"] = [orders["customer_id"].iloc[-1], orders["customer_id"].iloc[1]]
    extra["opportunity_id"] = ["X-CROSS", "X-LATE"]
    extra["order_date"] = [when - pd.Timedelta(days=10), when + pd.Timedelta(days=5)]
    extra["amount"] = [7e3, 9e3]
    if "order_id" in extra.columns:
        extra["order_id"] = ["X-1", "X-2"]
    frames["orders"] = pd.concat([orders, extra], ignore_index=True)
    return Tables(frames)


@pytest.mark.parametrize("with_org", [True, False])
def test_node_day_sums_attribute_revenue_as_before(with_org: bool) -> None:
    """Revenue summed per node and day first (revenue_node_tables) gives the series of the
    tables summed per customer and day: the same nodes and periods, values to rounding; the
    same reps in the hierarchy and the same first day. A deal another customer's order links
    to belongs to its owner, a won deal without a customer or whose order comes later counts
    once; the pandas engine in 4 buckets gives the same tables to the last bit (without an
    org chart, but for an order linked to another customer's deal: its region, the deal's
    customer's, is known only when both customers share a bucket; see revenue_nodes)."""
    when = pd.Timestamp("2026-07-01")
    tables = _edges(Tables(generate("small", seed=5)), when)
    if not with_org:
        frames = {n: f for n, f in tables.frames.items() if n not in ("org", "targets")}
        orders = frames["orders"]
        frames["orders"] = orders[orders["opportunity_id"].ne("X-CROSS")]
        tables = Tables(frames)
    levels = ["company", "region", "team", "rep"]
    nodes = revenue_node_tables(tables, levels, when)
    got = revenue_series(nodes, "M", levels, as_of=when)
    expected = revenue_series(_summed_per_customer_day(tables, levels), "M", levels, as_of=when)
    pd.testing.assert_frame_equal(got.drop(columns="y"), expected.drop(columns="y"))
    np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-12)
    assert len(nodes["orders"]) < len(tables["orders"]) / 2
    reps = [rep_hierarchy(t).sort_values("rep", ignore_index=True) for t in (nodes, tables)]
    pd.testing.assert_frame_equal(reps[0], reps[1])
    assert first_day(nodes) == first_day(tables)
    # On an engine: the three steps in buckets, the same sums to the last bit.
    source = write_data_dir(tables.frames, Path(tempfile.mkdtemp()) / "edges")
    bucketed, _ = engine_tables(PandasEngine(), str(source), when, "rep", buckets=4)
    for name in ("orders", "customers"):
        pd.testing.assert_frame_equal(
            bucketed[name].sort_values(list(bucketed[name].columns)[:2], ignore_index=True),
            nodes[name].sort_values(list(nodes[name].columns)[:2], ignore_index=True),
            check_exact=True)


def _grown(source: Path, when: pd.Timestamp, target: Path) -> Path:
    """``source`` with rows dated on or after ``when``: a huge order of a known customer and a
    new customer's, a won deal created and closed later."""
    tables = load_tables(source)
    frames = {n: f.copy() for n, f in tables.frames.items() if n not in tables.derived}
    orders = frames["orders"]
    late = orders.iloc[:2].copy()
    late["order_date"] = [when, when + pd.Timedelta(days=40)]
    late["customer_id"] = [orders["customer_id"].iloc[0], "NEW-1"]
    late["amount"] = 1e7
    if "order_id" in late.columns:
        late["order_id"] = ["LATE-1", "LATE-2"]
    frames["orders"] = pd.concat([orders, late], ignore_index=True)
    if "opportunities" in frames:
        opps = frames["opportunities"]
        deal = opps.iloc[:1].assign(opportunity_id="LATE-D", status="won", amount=5e6,
                                    created_at=when, close_date=when + pd.Timedelta(days=9))
        frames["opportunities"] = pd.concat([opps, deal], ignore_index=True)
    return write_data_dir(frames, target)


def test_spark_equals_pandas_and_later_rows_change_nothing(spark: object, demo: Path,
                                                           tmp_path: Path) -> None:
    """Spark local (reads, bucketed fits) on the data with later rows appended gives the
    pandas forecast of the original data, as of a day inside it, exactly (per product: the
    hierarchy's reconciliation runs on the driver, the pandas engine test covers it)."""
    tables = load_tables(demo)
    when = pd.Timestamp("2026-07-01")
    expected = _fresh(tables, level="product", as_of=when)
    grown = _grown(demo, when, tmp_path / "grown")
    pruned, used = engine_tables(spark, str(grown), when, "product")  # type: ignore[arg-type]
    assert used == when and pruned["orders"]["order_date"].max() < when
    assert expected["key"].nunique() >= 4
    got = _fresh(pruned, level="product", as_of=used,
                 runner=engine_runner(spark))  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_cli_fit_on_spark_real_data(spark: object, real: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``forecast --fit --level product`` on real data: QUOTACAST_ENGINE=spark writes the
    pandas command's file byte for byte (every candidate, the default), reusing the session."""
    from service.cli.app import app

    runner = CliRunner()
    monkeypatch.setenv("QUOTACAST_SPARK_MASTER", "local[1]")
    args = ["forecast", "--fit", "--data", str(real), "--level", "product", "--freq", "M",
            "--horizon", "2"]
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "pandas.csv")])
    assert plain.exit_code == 0, plain.output
    monkeypatch.setenv("QUOTACAST_ENGINE", "spark")
    on_spark = runner.invoke(app, [*args, "--out", str(tmp_path / "spark.csv")])
    assert on_spark.exit_code == 0, on_spark.output
    frame = pd.read_csv(tmp_path / "spark.csv")
    assert set(frame["key"]) == {"Furniture", "Office Supplies", "Technology"}
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    assert not spark.session.sparkContext._jsc.sc().isStopped()  # type: ignore[attr-defined]
    wrong = runner.invoke(app, [*args, "--level", "nope"])
    assert wrong.exit_code == 2 and "Traceback" not in wrong.output
