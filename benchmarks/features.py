"""Customer feature tables vs an equivalent DuckDB query: seconds and peak memory.

Usage::

    .venv/bin/python benchmarks/features.py [--size large] [--seed 42] [--snapshots 12]

The synthetic company (``engine.synthetic.generate``) is generated and validated once and
cached as Parquet (``--cache``, default in the temp directory). Each variant then runs in its
own subprocess, which loads the cached tables (not timed), resets the kernel's peak-RSS mark,
runs, and reports wall seconds and peak resident memory. The shared part is the RFM core
(recency, and frequency in purchase days and net monetary value per window), which DuckDB
computes with SQL over the same pandas frames; both results are compared before printing.

Variants, at the last order date and at that date's 12 previous month starts:

- ``ours rfm``: customer codes, sorted order timeline, :func:`features.customer.rfm_features`.
- ``duckdb rfm``: one SQL query per snapshot; for many snapshots the customer-day aggregate
  is materialized once, as ours is.
- ``ours all``: every customer feature family (:func:`features.customer.features_at`).
- ``ours training``: :func:`features.table.training_table` (features plus churn labels).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.io import Tables  # noqa: E402
from engine.schemas import (  # noqa: E402
    AMOUNT,
    CUSTOMER_ID,
    CUSTOMERS,
    INTERACTIONS,
    OPPORTUNITIES,
    ORDER_DATE,
    ORDERS,
    RECEIVABLES,
)
from features.customer import (  # noqa: E402
    WINDOWS,
    as_of_day,
    customer_history,
    customer_index,
    features_at,
    order_history,
    rfm_features,
)

__all__ = ["main"]

TABLES = (CUSTOMERS, ORDERS, INTERACTIONS, RECEIVABLES, OPPORTUNITIES)
VARIANTS = ("duckdb rfm", "ours rfm", "ours all", "ours training")
GIB = 2**30


# --- data ------------------------------------------------------------------------------------


def prepare(size: str, seed: int, cache: Path, fresh: bool = False) -> Path:
    """Generate, validate and cache the company as Parquet (once per size and seed)."""
    folder = cache / f"{size}-{seed}"
    if (folder / "orders.parquet").exists() and not fresh:
        return folder
    from engine.io import validate_tables
    from engine.synthetic import generate

    tables, problems = validate_tables(generate(size, seed=seed))
    if problems:
        raise SystemExit(f"the synthetic company does not validate: {problems[:3]}")
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        if tables.has(name):
            tables[name].to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def load(folder: Path, only_rfm: bool = False) -> Tables:
    """The cached tables, already validated; for RFM alone just the three order columns."""
    if only_rfm:
        columns = [CUSTOMER_ID, ORDER_DATE, AMOUNT]
        return Tables({ORDERS: pd.read_parquet(folder / f"{ORDERS}.parquet", columns=columns)})
    return Tables({name: pd.read_parquet(folder / f"{name}.parquet") for name in TABLES
                   if (folder / f"{name}.parquet").exists()})


def as_ofs(tables: Tables, snapshots: int) -> list[pd.Timestamp]:
    """The last order date, or it and the month starts before it."""
    end, _ = as_of_day(tables.orders[ORDER_DATE].max())
    if snapshots == 1:
        return [end]
    starts = pd.date_range(end=end, periods=snapshots, freq="MS")
    return [*starts[:-1], end]


# --- the variants ----------------------------------------------------------------------------


def ours_rfm(tables: Tables, stamps: list[pd.Timestamp]) -> list[pd.DataFrame]:
    """RFM from the sorted order timeline, prepared once."""
    orders = tables.orders
    ids, (codes,) = customer_index([orders[CUSTOMER_ID]])
    history = order_history(orders, codes, len(ids))
    out = []
    for stamp in stamps:
        _, day = as_of_day(stamp)
        rows = np.flatnonzero(history.days.any_before(day))
        frame = pd.DataFrame({k: v[rows] for k, v in rfm_features(history, day).items()})
        frame.insert(0, CUSTOMER_ID, ids[rows])
        out.append(frame)
    return out


def _rfm_sql(source: str, stamp: pd.Timestamp) -> str:
    day = f"DATE '{stamp.date()}'"
    columns = [f"date_diff('day', max(d) FILTER (WHERE bought), {day}) AS hist_recency_days"]
    for w in WINDOWS:
        inside = f"d >= {day} - INTERVAL {w} DAY"
        columns.append(f"count(*) FILTER (WHERE bought AND {inside}) AS hist_frequency_{w}d")
        columns.append(f"coalesce(sum(net) FILTER (WHERE {inside}), 0) AS hist_monetary_{w}d")
    return (f"SELECT {CUSTOMER_ID}, {', '.join(columns)} FROM {source} WHERE d < {day} "
            f"GROUP BY {CUSTOMER_ID} ORDER BY {CUSTOMER_ID}")


def _days_sql(stamp: pd.Timestamp | None) -> str:
    """Customer-days: net amount and whether anything was bought (before ``stamp`` if given)."""
    where = f"WHERE {ORDER_DATE} < TIMESTAMP '{stamp}'" if stamp is not None else ""
    return (f"SELECT {CUSTOMER_ID}, CAST({ORDER_DATE} AS DATE) AS d, sum({AMOUNT}) AS net,"
            f" max({AMOUNT}) > 0 AS bought FROM orders {where} GROUP BY ALL")


def duckdb_rfm(tables: Tables, stamps: list[pd.Timestamp]) -> list[pd.DataFrame]:
    """The same RFM in DuckDB SQL, reading the pandas frame in place."""
    import duckdb

    con = duckdb.connect()
    con.register("orders", tables.orders)
    if len(stamps) == 1:
        return [con.sql(_rfm_sql(f"({_days_sql(stamps[0])})", stamps[0])).df()]
    con.execute(f"CREATE TEMP TABLE days AS {_days_sql(None)}")
    return [con.sql(_rfm_sql("days", stamp)).df() for stamp in stamps]


def ours_all(tables: Tables, stamps: list[pd.Timestamp]) -> list[pd.DataFrame]:
    """Every feature family, the history prepared once."""
    history = customer_history(tables)
    return [features_at(history, stamp) for stamp in stamps]


def ours_training(tables: Tables, stamps: list[pd.Timestamp]) -> list[pd.DataFrame]:
    """Features plus 180-day churn labels, at snapshots 7 months earlier (complete labels)."""
    from features.table import training_table

    earlier = [stamp - pd.DateOffset(months=7) for stamp in stamps]
    return [training_table(tables, earlier, horizon_days=180)]


RUNNERS: dict[str, Callable[[Tables, list[pd.Timestamp]], list[pd.DataFrame]]] = {
    "duckdb rfm": duckdb_rfm,
    "ours rfm": ours_rfm,
    "ours all": ours_all,
    "ours training": ours_training,
}


# --- measuring in a subprocess ---------------------------------------------------------------


def _rss_gib(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark so the peak covers the run, not the loading."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_variant(variant: str, folder: Path, snapshots: int, out: Path | None) -> dict[str, float]:
    """Load, run one variant, and measure; optionally save its first frame for the check."""
    tables = load(folder, only_rfm="rfm" in variant)
    stamps = as_ofs(tables, snapshots)
    loaded = _rss_gib("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    frames = RUNNERS[variant](tables, stamps)
    seconds = time.perf_counter() - start
    # Without the reset (not Linux) the lifetime peak, loading included, is all there is.
    peak = (_rss_gib("VmHWM") if reset
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    if out is not None:
        frames[-1].to_parquet(out, index=False)
    return {"seconds": seconds, "peak_gib": peak, "loaded_gib": loaded,
            "extra_gib": peak - loaded, "rows": float(sum(len(f) for f in frames))}


def measure(variant: str, folder: Path, snapshots: int, out: Path | None) -> dict[str, float]:
    """Run one variant in a fresh interpreter and read its measurements."""
    command = [sys.executable, __file__, "--child", variant, "--folder", str(folder),
               "--snapshots", str(snapshots)] + (["--save", str(out)] if out else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def check_rfm(ours: Path, duck: Path) -> str:
    """Whether our RFM equals DuckDB's (same customers, values within float rounding)."""
    a, b = pd.read_parquet(ours), pd.read_parquet(duck)
    if a[CUSTOMER_ID].tolist() != b[CUSTOMER_ID].tolist():
        return "NO (customers differ)"
    for column in a.columns.drop(CUSTOMER_ID):
        if not np.allclose(a[column].to_numpy(float), b[column].to_numpy(float), rtol=1e-9,
                           atol=1e-6, equal_nan=True):
            return f"NO ({column})"
    return "yes"


def main(argv: list[str] | None = None) -> None:
    """Print one table: variant, snapshots, seconds, peak memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--snapshots", type=int, default=12)
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "quotacast-bench-features")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--fresh", action="store_true",
                        help="regenerate the cached company (after engine.synthetic changed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_variant(args.child, args.folder, args.snapshots, args.save)))
        return
    start = time.perf_counter()
    folder = prepare(args.size, args.seed, args.cache, args.fresh)
    tables = load(folder, only_rfm=True)
    print(f"{args.size} company (seed {args.seed}): {len(tables.orders):,} orders, "
          f"{tables.orders[CUSTOMER_ID].nunique():,} customers with orders; data ready in "
          f"{time.perf_counter() - start:.0f} s; {os.cpu_count()} CPUs", file=sys.stderr)
    del tables
    rows = []
    for snapshots in (1, args.snapshots):
        saved: dict[str, Path] = {}
        for variant in args.variants.split(","):
            out = folder / f"result-{variant.replace(' ', '-')}.parquet"
            result = measure(variant, folder, snapshots, out if "rfm" in variant else None)
            saved[variant] = out
            rows.append({"variant": variant, "snapshots": snapshots, **result})
            print(f"  {variant} x{snapshots}: {result['seconds']:.2f} s", file=sys.stderr)
        if {"ours rfm", "duckdb rfm"} <= saved.keys():
            agree = check_rfm(saved["ours rfm"], saved["duckdb rfm"])
            print(f"ours rfm == duckdb rfm at {snapshots} snapshot(s): {agree}", file=sys.stderr)
    table = pd.DataFrame(rows)
    table["rows"] = table["rows"].astype(int)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
