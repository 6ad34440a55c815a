"""Benchmark: RevenueForecaster against Prophet, AutoETS and seasonal naive on real data.

Datasets (read from the data directory given by ``--data``; each has a SOURCE.md there):

- ``aus-retail-turnover``: 152 monthly ABS retail turnover series (State x Industry). The 4
  series discontinued before the held-out period (ending 2010-02 and 2013-06) have nothing to
  score and are left out; the other 148 are forecast.
- ``superstore-sales``: monthly Sales per Region x Category (12 series), with the 4 region
  totals and the company total (17 series). Our forecaster gets the Region > Region x Category
  hierarchy and reconciles; the peers forecast each of the 17 series on its own.

Protocol: the last 24 months are held out; forecasts of 12 months are made from ``--origins``
origins inside them (default 3: 24, 18 and 12 months before the end), each fitted on all data
up to its origin. Scores pool every series and origin:

- MASE: mean absolute error over the 12 months divided by the in-sample mean absolute error of
  the 12-month seasonal naive on that origin's training data, averaged over series and origins.
- WAPE: sum of absolute errors over sum of actuals.
- cov80: share of actuals inside each method's own 80% interval (ours: conformal p10..p90;
  Prophet: its default 80% ``yhat_lower``..``yhat_upper``; statsforecast models: ``level=[80]``).
- wall: seconds of wall time for all origins of the dataset (fit + predict), with every method
  given the same ``--n-jobs``, after one untimed warm-up run of each method (imports and JIT
  compilation are not timed). The default is 1: the 2 cores are shared with other work, so a
  parallel speed-up would measure the neighbours' load rather than the methods. cpu: CPU
  seconds of the process and its finished children (Prophet's CmdStan), which the neighbours'
  load disturbs much less than wall time. total_*: both datasets together.

Run from the repository root: ``.venv/bin/python -m benchmarks.forecast [--suite real]``.

``--suite engine`` (issue 19: forecasts on a compute engine): ``quotacast forecast --fit
--level rep --freq M`` on a demo company (``--size``, default medium, written once as a CSV
data directory under ``benchmarks/out/forecast_engine/``) with each ``--engines`` (default
pandas and spark, Spark at ``--master``, default ``local[2]``), each in its own process: wall
time, peak memory of the whole process tree (the JVM and Spark's Python workers included),
and whether the forecasts are identical (the ``--out`` files byte for byte, and the largest
relative difference). Results are appended to ``benchmarks/out/forecast_engine.jsonl``.

``--suite real`` (issue 13: real data as users have it), against AutoETS and the seasonal naive
in the same run, on three origins each:

- ``us_retail_monthly`` (``us-retail-sales-monthly``, one row per month dated on the 1st): for
  each origin a data directory's ``orders`` holds one row per month up to it, and
  ``quotacast forecast --fit``'s pipeline (``forecast_fresh``, default ``--as-of``) forecasts 12
  months; the run checks that they are exactly the 12 months after the last row.
- ``aus_tourism_quarterly`` (304 quarterly Region x State x Purpose series) and
  ``aus_retail_quarterly`` (the ABS series summed to calendar quarters, the partly observed
  first and last quarters dropped): 4 quarters ahead from origins 12, 8 and 4 quarters before
  the end; the seasonal naive and MASE use a season of 4.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.schemas import (
    AMOUNT,
    COMPANY_KEY,
    CUSTOMER_ID,
    CUSTOMERS,
    DS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    REGION,
    Y,
)
from models.forecast import RevenueForecaster
from models.metrics import YHAT, YHAT_P10, YHAT_P90, interval_coverage, mase, mase_scale

__all__ = [
    "Dataset",
    "load_aus_retail",
    "load_aus_retail_quarterly",
    "load_aus_tourism",
    "load_superstore",
    "load_us_retail",
    "main",
    "run",
    "warm_up",
]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HORIZON, SEASON, HOLDOUT = 12, 12, 24
LO, HI = "lo", "hi"  # interval columns of the peers' forecasts, before renaming

Forecaster = Callable[["Dataset", pd.DataFrame, int], pd.DataFrame]


@dataclass(frozen=True)
class Dataset:
    """A benchmark dataset: long monthly series and an optional hierarchy."""

    name: str
    series: pd.DataFrame
    hierarchy: pd.DataFrame | None
    freq: str = "M"

    @property
    def horizon(self) -> int:
        return HORIZON if self.freq == "M" else 4

    @property
    def season(self) -> int:
        return SEASON if self.freq == "M" else 4

    @property
    def holdout(self) -> int:
        return HOLDOUT if self.freq == "M" else 12

    @property
    def alias(self) -> str:
        return "MS" if self.freq == "M" else "QS"

    def offset(self, n: int) -> pd.DateOffset:
        return pd.DateOffset(months=n if self.freq == "M" else 3 * n)


def load_aus_retail(path: Path) -> Dataset:
    """ABS retail turnover, one series per SeriesID, without the discontinued ones."""
    raw = pd.read_csv(path)
    series = pd.DataFrame(
        {
            LEVEL: "state_industry",
            KEY: raw["SeriesID"],
            DS: pd.to_datetime(raw["Month"], format="%Y-%m"),
            Y: raw["Turnover"].astype(float),
        }
    )
    end = series[DS].max()
    first_origin = end - pd.DateOffset(months=HOLDOUT)
    alive = series.groupby(KEY)[DS].max() > first_origin
    return Dataset("aus_retail", series[series[KEY].isin(alive[alive].index)], None)


def load_superstore(path: Path) -> Dataset:
    """Superstore monthly Sales: company, regions and region x category, zero-filled."""
    raw = pd.read_csv(path, encoding="utf-8-sig")  # the file starts with a UTF-8 BOM
    ds = pd.to_datetime(raw["Order Date"], format="%m/%d/%Y").dt.to_period("M").dt.to_timestamp()
    orders = pd.DataFrame(
        {
            "region": raw["Region"],
            "region_category": raw["Region"] + "/" + raw["Category"],
            DS: ds,
            Y: raw["Sales"].astype(float),
        }
    )
    months = pd.date_range(str(ds.min()), str(ds.max()), freq="MS")
    frames = []
    for level in ("region_category", "region", LEVEL_COMPANY):
        keys = orders[level] if level != LEVEL_COMPANY else pd.Series(COMPANY_KEY, orders.index)
        sums = orders.groupby([keys.rename(KEY), DS])[Y].sum()
        keys_seen = sums.index.get_level_values(0).unique()
        grid = pd.MultiIndex.from_product([keys_seen, months], names=[KEY, DS])
        frames.append(sums.reindex(grid, fill_value=0.0).reset_index().assign(**{LEVEL: level}))
    hierarchy = orders[["region_category", "region"]].drop_duplicates().reset_index(drop=True)
    return Dataset("superstore", pd.concat(frames, ignore_index=True), hierarchy)


def load_us_retail(path: Path) -> Dataset:
    """US retail sales, one row per month dated on the 1st (forecast through the pipeline)."""
    raw = pd.read_csv(path, parse_dates=["ds"])
    series = pd.DataFrame({LEVEL: LEVEL_COMPANY, KEY: COMPANY_KEY, DS: raw["ds"],
                           Y: raw["y"].astype(float)})
    return Dataset("us_retail_monthly", series, None, "M")


def load_aus_tourism(path: Path) -> Dataset:
    """Quarterly overnight trips per Region x State x Purpose (304 series)."""
    raw = pd.read_csv(path)
    ds = pd.PeriodIndex(raw["Quarter"].str.replace(" ", ""), freq="Q").to_timestamp()
    series = pd.DataFrame({LEVEL: "region_state_purpose",
                           KEY: raw["Region"] + "/" + raw["State"] + "/" + raw["Purpose"],
                           DS: ds, Y: raw["Trips"].astype(float)})
    return Dataset("aus_tourism_quarterly", series, None, "Q")


def load_aus_retail_quarterly(path: Path) -> Dataset:
    """ABS retail turnover summed to calendar quarters (complete quarters only)."""
    monthly = load_aus_retail(path).series
    quarter = monthly[DS].dt.to_period("Q").dt.to_timestamp()
    grouped = monthly.assign(**{DS: quarter}).groupby([LEVEL, KEY, DS])[Y]
    sums = grouped.agg(["sum", "size"]).reset_index()
    series = sums.loc[sums["size"] == 3, [LEVEL, KEY, DS, "sum"]].rename(
        columns={"sum": Y})
    end = series[DS].max()
    alive = series.groupby(KEY)[DS].max() == end
    series = series[series[KEY].isin(alive[alive].index)].reset_index(drop=True)
    return Dataset("aus_retail_quarterly", series, None, "Q")


# --- methods: (dataset, training series, n_jobs) -> level, key, ds, yhat, lo, hi --------------


def ours(dataset: Dataset, train: pd.DataFrame, n_jobs: int) -> pd.DataFrame:
    if dataset.name == "us_retail_monthly":
        return _ours_from_orders(dataset, train, n_jobs)
    model = RevenueForecaster(freq=dataset.freq, horizon=dataset.horizon, n_jobs=n_jobs)
    forecast = model.fit(train, dataset.hierarchy).predict()
    for note in model.notes_:
        print(f"    note: {note}", file=sys.stderr)
    return forecast.rename(columns={YHAT_P10: LO, YHAT_P90: HI})


def _ours_from_orders(dataset: Dataset, train: pd.DataFrame, n_jobs: int) -> pd.DataFrame:
    """The whole ``forecast --fit`` path: orders dated on the 1st, default as-of."""
    from engine.io import validate_tables
    from service.usecases.forecast import forecast_fresh

    orders = pd.DataFrame({ORDER_ID: [str(i) for i in range(len(train))],
                           CUSTOMER_ID: "c1", ORDER_DATE: train[DS].dt.strftime("%Y-%m-%d"),
                           AMOUNT: train[Y].astype(str)})
    customers = pd.DataFrame({CUSTOMER_ID: ["c1"], REGION: ["US"]})
    tables, problems = validate_tables({ORDERS: orders, CUSTOMERS: customers})
    if problems:
        raise SystemExit(f"the benchmark's orders do not validate: {problems[:3]}")
    frame, notes = forecast_fresh(tables, freq="M", horizon=dataset.horizon, n_jobs=n_jobs)
    expected = pd.date_range(train[DS].max(), periods=dataset.horizon + 1, freq="MS")[1:]
    if frame[DS].tolist() != list(expected):
        raise SystemExit(f"forecast periods {frame[DS].min():%Y-%m}.. are not the "
                         f"{dataset.horizon} months after the last row {train[DS].max():%Y-%m}")
    for note in notes:
        print(f"    note: {note}", file=sys.stderr)
    frame = frame.assign(**{LEVEL: train[LEVEL].iloc[0], KEY: train[KEY].iloc[0]})
    return frame.rename(columns={YHAT_P10: LO, YHAT_P90: HI})


def _statsforecast(dataset: Dataset, train: pd.DataFrame, n_jobs: int, model: object,
                   name: str) -> pd.DataFrame:
    from statsforecast import StatsForecast

    ids = train[[LEVEL, KEY]].drop_duplicates().reset_index(drop=True)
    uid = pd.Series(ids.index, pd.MultiIndex.from_frame(ids))
    frame = pd.DataFrame(
        {
            "unique_id": uid.reindex(pd.MultiIndex.from_frame(train[[LEVEL, KEY]])).to_numpy(),
            "ds": train[DS].to_numpy(),
            "y": train[Y].to_numpy(),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf = StatsForecast(models=[model], freq=dataset.alias, n_jobs=n_jobs)
        out = sf.forecast(df=frame, h=dataset.horizon, level=[80])
    out = out.join(ids, on="unique_id")
    return out.rename(columns={name: YHAT, f"{name}-lo-80": LO, f"{name}-hi-80": HI})


def autoets(dataset: Dataset, train: pd.DataFrame, n_jobs: int) -> pd.DataFrame:
    from statsforecast.models import AutoETS

    return _statsforecast(dataset, train, n_jobs, AutoETS(season_length=dataset.season),
                          "AutoETS")


def seasonal_naive(dataset: Dataset, train: pd.DataFrame, n_jobs: int) -> pd.DataFrame:
    from statsforecast.models import SeasonalNaive

    return _statsforecast(dataset, train, n_jobs, SeasonalNaive(season_length=dataset.season),
                          "SeasonalNaive")


def _prophet_series(ds: np.ndarray, y: np.ndarray, horizon: int, alias: str) -> pd.DataFrame:
    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    from prophet import Prophet

    model = Prophet()  # defaults, including its 80% interval
    model.fit(pd.DataFrame({"ds": ds, "y": y}))
    future = model.make_future_dataframe(periods=horizon, freq=alias, include_history=False)
    out = model.predict(future)
    return pd.DataFrame(
        {DS: out["ds"], YHAT: out["yhat"], LO: out["yhat_lower"], HI: out["yhat_upper"]}
    )


def prophet(dataset: Dataset, train: pd.DataFrame, n_jobs: int) -> pd.DataFrame:
    from joblib import Parallel, delayed

    groups = list(train.groupby([LEVEL, KEY], sort=False))
    tasks = (delayed(_prophet_series)(g[DS].to_numpy(), g[Y].to_numpy(), dataset.horizon,
                                      dataset.alias) for _, g in groups)
    outs = Parallel(n_jobs=n_jobs)(tasks)
    return pd.concat(
        [
            out.assign(**{LEVEL: lv, KEY: k})
            for ((lv, k), _), out in zip(groups, outs, strict=True)
        ],
        ignore_index=True,
    )


METHODS: dict[str, Forecaster] = {
    "RevenueForecaster": ours,
    "Prophet (defaults)": prophet,
    "AutoETS": autoets,
    "seasonal naive": seasonal_naive,
}


# --- protocol -------------------------------------------------------------------------------


def origins(dataset: Dataset, n_origins: int) -> list[pd.Timestamp]:
    """Last training period of each origin, spread evenly over the held-out periods."""
    end = dataset.series[DS].max()
    step = (dataset.holdout - dataset.horizon) // max(n_origins - 1, 1)
    return [end - dataset.offset(dataset.holdout - i * step) for i in range(n_origins)]


def score(train: pd.DataFrame, test: pd.DataFrame, forecast: pd.DataFrame, season: int
          ) -> pd.DataFrame:
    """Per-series rows of one origin: MASE, and the pooled sums WAPE and coverage need."""
    keys = [LEVEL, KEY]
    scales = train.groupby(keys)[Y].apply(lambda y: mase_scale(y.to_numpy(), season))
    joined = test.merge(forecast[[*keys, DS, YHAT, LO, HI]], on=[*keys, DS], how="left")
    rows = []
    for (level, key), g in joined.groupby(keys):
        scale = scales.get((level, key), np.nan)
        rows.append(
            {
                "mase": mase(g[Y], g[YHAT], scale),
                "abs_error": float(np.abs(g[Y] - g[YHAT]).sum()),
                "abs_y": float(np.abs(g[Y]).sum()),
                "inside": interval_coverage(g[Y], g[LO], g[HI]) * len(g),
                "n": len(g),
                "missing": int(g[YHAT].isna().sum()),
            }
        )
    return pd.DataFrame(rows)


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (Prophet's CmdStan runs)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(
    dataset: Dataset, n_origins: int, n_jobs: int, methods: dict[str, Forecaster]
) -> list[dict[str, object]]:
    """Score every method on every origin of one dataset."""
    rows = []
    for name, method in methods.items():
        scored, seconds, cpu = [], 0.0, 0.0
        for origin in origins(dataset, n_origins):
            train = dataset.series[dataset.series[DS] <= origin]
            end = origin + dataset.offset(dataset.horizon)
            test = dataset.series[(dataset.series[DS] > origin) & (dataset.series[DS] <= end)]
            print(f"  {dataset.name} {name} origin {origin:%Y-%m}", file=sys.stderr, flush=True)
            start, start_cpu = time.perf_counter(), _cpu_seconds()
            forecast = method(dataset, train, n_jobs)
            seconds += time.perf_counter() - start
            cpu += _cpu_seconds() - start_cpu
            scored.append(score(train, test, forecast, dataset.season))
        table = pd.concat(scored, ignore_index=True)
        rows.append(
            {
                "dataset": dataset.name,
                "method": name,
                "series": dataset.series[[LEVEL, KEY]].drop_duplicates().shape[0],
                "MASE": table["mase"].mean(),
                "WAPE": table["abs_error"].sum() / table["abs_y"].sum(),
                "cov80": table["inside"].sum() / table["n"].sum(),
                "wall_s": seconds,
                "cpu_s": cpu,
                "missing": int(table["missing"].sum()),
            }
        )
    return rows


def warm_up(dataset: Dataset, methods: dict[str, Forecaster], n_jobs: int) -> None:
    """Run every method once, untimed, so imports and JIT compilation are not timed."""
    top = dataset.series[dataset.series[LEVEL] == LEVEL_COMPANY]
    if top.empty:
        top = dataset.series[dataset.series[KEY] == dataset.series[KEY].iloc[0]]
    company = Dataset(dataset.name, top, None, dataset.freq)
    for method in methods.values():
        method(company, company.series, n_jobs)


def _limited(dataset: Dataset, limit: int) -> Dataset:
    """The first ``limit`` series of the dataset's bottom level, plus its other levels."""
    keep = dataset.series[KEY].drop_duplicates().iloc[:limit]
    mask = dataset.series[KEY].isin(keep) | (dataset.series[LEVEL] == LEVEL_COMPANY)
    return Dataset(dataset.name, dataset.series[mask], dataset.hierarchy, dataset.freq)


ENGINE_OUT = Path(__file__).resolve().parent / "out" / "forecast_engine"


def _demo_company(size: str, seed: int) -> Path:
    """The demo company as a CSV data directory (generated once, then reused)."""
    from engine.io import write_data_dir
    from engine.synthetic import generate

    target = ENGINE_OUT / f"{size}-seed{seed}"
    if not (target / ".complete").exists():
        write_data_dir(generate(size, seed=seed), target)
        (target / ".complete").write_text("")
    return target


def engine_suite(size: str, seed: int, engines: list[str], master: str) -> None:
    """``forecast --fit --level rep --freq M`` on each engine (see the module docstring)."""
    from benchmarks.scale import measure  # wall time and peak RSS of the process tree

    data = _demo_company(size, seed)
    quotacast = Path(sys.executable).with_name("quotacast")
    results = {}
    for name in engines:
        out = ENGINE_OUT / f"{size}-seed{seed}-{name}.csv"
        env = {**os.environ, "QUOTACAST_ENGINE": name, "QUOTACAST_SPARK_MASTER": master}
        command = [str(quotacast), "forecast", "--fit", "--level", "rep", "--freq", "M",
                   "--data", str(data), "--out", str(out)]
        results[name] = measure(command, env) | {"out": out}
        got = results[name]
        print(f"{name:>7}: {got['seconds']:7.1f} s  {got['peak_gib']:5.2f} GiB peak "
              f"(process tree)  exit {got['exit']}", flush=True)
        if got["exit"] != 0:
            print(got["said"])
    frames = {n: pd.read_csv(r["out"]) for n, r in results.items() if r["exit"] == 0}
    same, worst = None, None
    if len(frames) == 2:
        a, b = frames.values()
        paths = [r["out"] for r in results.values()]
        same = Path(paths[0]).read_bytes() == Path(paths[1]).read_bytes()
        cols = ["yhat", "yhat_p10", "yhat_p50", "yhat_p90"]
        diff = (a[cols] - b[cols]).abs().to_numpy() / a[cols].abs().clip(lower=1e-9).to_numpy()
        worst = float(np.nanmax(diff)) if len(a) == len(b) else None
        first = frames[engines[0]]
        print(f"forecasts: {first['key'].nunique()} reps x {first['ds'].nunique()} months; "
              f"files byte-identical: {same}; largest relative difference: {worst}")
        ratio = [results[n] for n in engines]
        print(f"{engines[1]}/{engines[0]}: time x{ratio[1]['seconds'] / ratio[0]['seconds']:.2f}"
              f", peak memory x{ratio[1]['peak_gib'] / max(ratio[0]['peak_gib'], 1e-9):.2f}")
    record = {"size": size, "seed": seed, "master": master, "identical": same,
              "max_rel_diff": worst, "cores": os.cpu_count(),
              "load_1m": round(os.getloadavg()[0], 1),
              **{n: {k: v for k, v in r.items() if k in ("seconds", "peak_gib", "exit")}
                 for n, r in results.items()}}
    with open(ENGINE_OUT.parent / "forecast_engine.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data directory")
    parser.add_argument("--origins", type=int, default=3, help="forecast origins (>= 2)")
    parser.add_argument("--n-jobs", type=int, default=1, help="parallel jobs for every method")
    parser.add_argument("--limit", type=int, default=0, help="first N aus series only (smoke runs)")
    parser.add_argument("--methods", nargs="*", default=None, choices=list(METHODS),
                        help="default: all for --suite monthly; ours, AutoETS and seasonal "
                        "naive for --suite real")
    parser.add_argument("--suite", choices=("monthly", "real", "engine"), default="monthly")
    parser.add_argument("--size", default="medium", help="--suite engine: demo company size")
    parser.add_argument("--seed", type=int, default=42, help="--suite engine: its seed")
    parser.add_argument("--engines", nargs="*", default=["pandas", "spark"],
                        help="--suite engine: the engines to run, in order")
    parser.add_argument("--master", default="local[2]", help="--suite engine: Spark master")
    parser.add_argument("--datasets", nargs="*", default=None, help="names to run (default all)")
    args = parser.parse_args(argv)
    if args.suite == "engine":
        engine_suite(args.size, args.seed, args.engines, args.master)
        return
    retail_csv = args.data / "aus-retail-turnover" / "aus_retail.csv"
    if args.suite == "real":
        datasets = [
            load_us_retail(args.data / "us-retail-sales-monthly" / "example_retail_sales.csv"),
            load_aus_tourism(args.data / "aus-tourism-hierarchical" / "tourism.csv"),
            load_aus_retail_quarterly(retail_csv),
        ]
        default_methods = ["RevenueForecaster", "AutoETS", "seasonal naive"]
    else:
        datasets = [load_aus_retail(retail_csv),
                    load_superstore(args.data / "superstore-sales" / "Sample - Superstore.csv")]
        default_methods = list(METHODS)
    if args.datasets:
        datasets = [d for d in datasets if d.name in args.datasets]
    if args.limit:
        datasets = [_limited(d, args.limit) for d in datasets]
    methods = {m: METHODS[m] for m in (args.methods or default_methods)}
    warm_up(datasets[-1], methods, args.n_jobs)
    rows = [r for ds in datasets for r in run(ds, args.origins, args.n_jobs, methods)]
    table = pd.DataFrame(rows)
    totals = table.groupby("method", sort=False)[["wall_s", "cpu_s"]].sum()
    table["total_wall_s"] = table["method"].map(totals["wall_s"])
    table["total_cpu_s"] = table["method"].map(totals["cpu_s"])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
