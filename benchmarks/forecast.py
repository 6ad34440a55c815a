"""Benchmark: RevenueForecaster against Prophet, AutoETS and seasonal naive on real data.

Datasets (see their SOURCE.md under ../shared/data):

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

Run from the repository root: ``.venv/bin/python benchmarks/forecast.py``.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import engine.schemas as S
from models.forecast import RevenueForecaster
from models.metrics import YHAT, YHAT_P10, YHAT_P90, interval_coverage, mase, mase_scale

__all__ = ["Dataset", "load_aus_retail", "load_superstore", "main", "run", "warm_up"]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HORIZON, SEASON, HOLDOUT = 12, 12, 24
LO, HI = "lo", "hi"  # interval columns of the peers' forecasts, before renaming

Forecaster = Callable[[pd.DataFrame, pd.DataFrame | None, int], pd.DataFrame]


@dataclass(frozen=True)
class Dataset:
    """A benchmark dataset: long monthly series and an optional hierarchy."""

    name: str
    series: pd.DataFrame
    hierarchy: pd.DataFrame | None


def load_aus_retail(path: Path) -> Dataset:
    """ABS retail turnover, one series per SeriesID, without the discontinued ones."""
    raw = pd.read_csv(path)
    series = pd.DataFrame(
        {
            S.LEVEL: "state_industry",
            S.KEY: raw["SeriesID"],
            S.DS: pd.to_datetime(raw["Month"], format="%Y-%m"),
            S.Y: raw["Turnover"].astype(float),
        }
    )
    end = series[S.DS].max()
    first_origin = end - pd.DateOffset(months=HOLDOUT)
    alive = series.groupby(S.KEY)[S.DS].max() > first_origin
    return Dataset("aus_retail", series[series[S.KEY].isin(alive[alive].index)], None)


def load_superstore(path: Path) -> Dataset:
    """Superstore monthly Sales: company, regions and region x category, zero-filled."""
    raw = pd.read_csv(path, encoding="utf-8-sig")  # the file starts with a UTF-8 BOM
    ds = pd.to_datetime(raw["Order Date"], format="%m/%d/%Y").dt.to_period("M").dt.to_timestamp()
    orders = pd.DataFrame(
        {
            "region": raw["Region"],
            "region_category": raw["Region"] + "/" + raw["Category"],
            S.DS: ds,
            S.Y: raw["Sales"].astype(float),
        }
    )
    months = pd.date_range(str(ds.min()), str(ds.max()), freq="MS")
    frames = []
    for level in ("region_category", "region", S.LEVEL_COMPANY):
        keys = orders[level] if level != S.LEVEL_COMPANY else pd.Series(S.COMPANY_KEY, orders.index)
        sums = orders.groupby([keys.rename(S.KEY), S.DS])[S.Y].sum()
        keys_seen = sums.index.get_level_values(0).unique()
        grid = pd.MultiIndex.from_product([keys_seen, months], names=[S.KEY, S.DS])
        frames.append(sums.reindex(grid, fill_value=0.0).reset_index().assign(**{S.LEVEL: level}))
    hierarchy = orders[["region_category", "region"]].drop_duplicates().reset_index(drop=True)
    return Dataset("superstore", pd.concat(frames, ignore_index=True), hierarchy)


# --- methods: (training series, hierarchy, n_jobs) -> level, key, ds, yhat, lo, hi ------------


def ours(train: pd.DataFrame, hierarchy: pd.DataFrame | None, n_jobs: int) -> pd.DataFrame:
    model = RevenueForecaster(freq="M", horizon=HORIZON, n_jobs=n_jobs)
    forecast = model.fit(train, hierarchy).predict()
    for note in model.notes_:
        print(f"    note: {note}", file=sys.stderr)
    return forecast.rename(columns={YHAT_P10: LO, YHAT_P90: HI})


def _statsforecast(train: pd.DataFrame, n_jobs: int, model: object, name: str) -> pd.DataFrame:
    from statsforecast import StatsForecast

    ids = train[[S.LEVEL, S.KEY]].drop_duplicates().reset_index(drop=True)
    uid = pd.Series(ids.index, pd.MultiIndex.from_frame(ids))
    frame = pd.DataFrame(
        {
            "unique_id": uid.reindex(pd.MultiIndex.from_frame(train[[S.LEVEL, S.KEY]])).to_numpy(),
            "ds": train[S.DS].to_numpy(),
            "y": train[S.Y].to_numpy(),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf = StatsForecast(models=[model], freq="MS", n_jobs=n_jobs)
        out = sf.forecast(df=frame, h=HORIZON, level=[80])
    out = out.join(ids, on="unique_id")
    return out.rename(columns={name: YHAT, f"{name}-lo-80": LO, f"{name}-hi-80": HI})


def autoets(train: pd.DataFrame, hierarchy: pd.DataFrame | None, n_jobs: int) -> pd.DataFrame:
    from statsforecast.models import AutoETS

    return _statsforecast(train, n_jobs, AutoETS(season_length=SEASON), "AutoETS")


def seasonal_naive(
    train: pd.DataFrame, hierarchy: pd.DataFrame | None, n_jobs: int
) -> pd.DataFrame:
    from statsforecast.models import SeasonalNaive

    return _statsforecast(train, n_jobs, SeasonalNaive(season_length=SEASON), "SeasonalNaive")


def _prophet_series(ds: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    from prophet import Prophet

    model = Prophet()  # defaults, including its 80% interval
    model.fit(pd.DataFrame({"ds": ds, "y": y}))
    future = model.make_future_dataframe(periods=HORIZON, freq="MS", include_history=False)
    out = model.predict(future)
    return pd.DataFrame(
        {S.DS: out["ds"], YHAT: out["yhat"], LO: out["yhat_lower"], HI: out["yhat_upper"]}
    )


def prophet(train: pd.DataFrame, hierarchy: pd.DataFrame | None, n_jobs: int) -> pd.DataFrame:
    from joblib import Parallel, delayed

    groups = list(train.groupby([S.LEVEL, S.KEY], sort=False))
    tasks = (delayed(_prophet_series)(g[S.DS].to_numpy(), g[S.Y].to_numpy()) for _, g in groups)
    outs = Parallel(n_jobs=n_jobs)(tasks)
    return pd.concat(
        [
            out.assign(**{S.LEVEL: lv, S.KEY: k})
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


def origins(series: pd.DataFrame, n_origins: int) -> list[pd.Timestamp]:
    """Last training month of each origin, spread evenly over the held-out 24 months."""
    end = series[S.DS].max()
    step = (HOLDOUT - HORIZON) // max(n_origins - 1, 1)
    return [end - pd.DateOffset(months=HOLDOUT - i * step) for i in range(n_origins)]


def score(train: pd.DataFrame, test: pd.DataFrame, forecast: pd.DataFrame) -> pd.DataFrame:
    """Per-series rows of one origin: MASE, and the pooled sums WAPE and coverage need."""
    keys = [S.LEVEL, S.KEY]
    scales = train.groupby(keys)[S.Y].apply(lambda y: mase_scale(y.to_numpy(), SEASON))
    joined = test.merge(forecast[[*keys, S.DS, YHAT, LO, HI]], on=[*keys, S.DS], how="left")
    rows = []
    for (level, key), g in joined.groupby(keys):
        scale = scales.get((level, key), np.nan)
        rows.append(
            {
                "mase": mase(g[S.Y], g[YHAT], scale),
                "abs_error": float(np.abs(g[S.Y] - g[YHAT]).sum()),
                "abs_y": float(np.abs(g[S.Y]).sum()),
                "inside": interval_coverage(g[S.Y], g[LO], g[HI]) * len(g),
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
        for origin in origins(dataset.series, n_origins):
            train = dataset.series[dataset.series[S.DS] <= origin]
            end = origin + pd.DateOffset(months=HORIZON)
            test = dataset.series[(dataset.series[S.DS] > origin) & (dataset.series[S.DS] <= end)]
            print(f"  {dataset.name} {name} origin {origin:%Y-%m}", file=sys.stderr, flush=True)
            start, start_cpu = time.perf_counter(), _cpu_seconds()
            forecast = method(train, dataset.hierarchy, n_jobs)
            seconds += time.perf_counter() - start
            cpu += _cpu_seconds() - start_cpu
            scored.append(score(train, test, forecast))
        table = pd.concat(scored, ignore_index=True)
        rows.append(
            {
                "dataset": dataset.name,
                "method": name,
                "series": dataset.series[[S.LEVEL, S.KEY]].drop_duplicates().shape[0],
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
    company = dataset.series[dataset.series[S.LEVEL] == S.LEVEL_COMPANY]
    for method in methods.values():
        method(company, None, n_jobs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data directory")
    parser.add_argument("--origins", type=int, default=3, help="forecast origins (>= 2)")
    parser.add_argument("--n-jobs", type=int, default=1, help="parallel jobs for every method")
    parser.add_argument("--limit", type=int, default=0, help="first N aus series only (smoke runs)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args(argv)
    aus = load_aus_retail(args.data / "aus-retail-turnover" / "aus_retail.csv")
    if args.limit:
        keep = aus.series[S.KEY].drop_duplicates().iloc[: args.limit]
        aus = Dataset(aus.name, aus.series[aus.series[S.KEY].isin(keep)], None)
    store = load_superstore(args.data / "superstore-sales" / "Sample - Superstore.csv")
    methods = {m: METHODS[m] for m in args.methods}
    warm_up(store, methods, args.n_jobs)
    rows = [r for ds in (aus, store) for r in run(ds, args.origins, args.n_jobs, methods)]
    table = pd.DataFrame(rows)
    totals = table.groupby("method", sort=False)[["wall_s", "cpu_s"]].sum()
    table["total_wall_s"] = table["method"].map(totals["wall_s"])
    table["total_cpu_s"] = table["method"].map(totals["cpu_s"])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
