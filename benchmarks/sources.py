"""Pruned against whole-table reads of the orders, from Parquet, Delta and PostgreSQL.

The orders of a generated company (``benchmarks/scale.py``'s Parquet data directory, by
default ``large-x1-seed42``: 9.0M orders) are copied once into a Delta data directory
(``deltalake``, partitioned by year, beside it as ``<name>-delta``) and into a PostgreSQL
table ``orders`` (``--postgres``, a database of yours: the table is replaced). Then each
source is read by each engine twice, each read in its own process tree, measuring wall time
and the peak resident memory of the whole tree (``benchmarks.scale.measure``):

- ``pruned``: what ``features`` asks of the orders (customer, date, amount; rows dated before
  ``--as-of``), through :meth:`engine.compute.PandasEngine.read` / ``SparkEngine.read``;
- ``whole``: every column of every row, through the same reader.

pandas ends with the frame in memory; Spark with one pass over every read cell (the sum of
their lengths), so it cannot leave a column unread. The peer of each pruned read is the whole
read of the same source in the same run.

    nice .venv/bin/python benchmarks/sources.py --postgres postgresql+psycopg://u:p@host/db
    nice .venv/bin/python benchmarks/sources.py --engines pandas --sources parquet,delta
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scale import OUT, measure  # noqa: E402

__all__ = ["main"]

ORDER_COLUMNS = ("order_id", "customer_id", "order_date", "amount", "product", "channel",
                 "opportunity_id")
PRUNED_COLUMNS = ("customer_id", "order_date", "amount")

_READ = f"""
import sys, time, pandas as pd
from engine.compute import TableRead, make_engine
source, engine, variant, as_of = sys.argv[1:5]
columns = {PRUNED_COLUMNS!r} if variant == "pruned" else {ORDER_COLUMNS!r}
read = TableRead("orders", columns, "order_date" if variant == "pruned" else None)
compute = make_engine(engine, "local[2]")
try:
    frames = compute.read(source, [read], before=pd.Timestamp(as_of))
    frame = frames["orders"]
    if engine == "pandas":
        rows = len(frame)
    else:
        from pyspark.sql import functions as F
        cells = F.concat_ws("|", *[F.col(c).cast("string") for c in frame.columns])
        rows = frame.agg(F.count("*").alias("n"), F.sum(F.length(cells))).first()["n"]
    print(rows, file=sys.stderr)
finally:
    compute.close()
"""


def delta_copy(company: Path) -> Path:
    """``<company>-delta/orders``: the orders as a Delta table partitioned by year, streamed
    from the Parquet files (no frame of every order in memory)."""
    import pyarrow.dataset as ds
    from deltalake import write_deltalake

    target = company.with_name(f"{company.name}-delta")
    done = target / ".complete"
    if done.exists():
        return target
    dataset = ds.dataset(company / "orders", format="parquet", partitioning="hive")
    write_deltalake(target / "orders", dataset.scanner(batch_size=1 << 18).to_reader(),
                    partition_by=["year"], mode="overwrite")
    done.write_text("orders\n")
    return target


def postgres_copy(company: Path, url: str) -> str:
    """The orders in PostgreSQL table ``orders`` (replaced unless it holds every order),
    loaded with ``COPY`` in batches; a primary key on ``order_id``, an index on the date."""
    import psycopg
    import pyarrow.csv as pacsv
    import pyarrow.dataset as ds
    import sqlalchemy as sa

    dataset = ds.dataset(company / "orders", format="parquet", partitioning="hive")
    rows = dataset.count_rows()
    dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(dsn) as con:
        have = con.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'orders'").fetchone()
        if have and have[0] and con.execute("SELECT count(*) FROM orders").fetchone() == (rows,):
            return url
        con.execute("DROP TABLE IF EXISTS orders")
        con.execute("CREATE TABLE orders (order_id text PRIMARY KEY, customer_id text, "
                    "order_date timestamp, amount double precision, product text, "
                    "channel text, opportunity_id text)")
        columns = ", ".join(ORDER_COLUMNS)
        with con.cursor().copy(f"COPY orders ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
            for batch in dataset.to_batches(columns=list(ORDER_COLUMNS), batch_size=1 << 18):
                buffer = io.BytesIO()
                pacsv.write_csv(batch, buffer,
                                pacsv.WriteOptions(include_header=False, quoting_style="needed"))
                copy.write(buffer.getvalue())
        con.execute("CREATE INDEX orders_order_date ON orders (order_date)")
        con.execute("ANALYZE orders")
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--company", type=Path, default=OUT / "large-x1-seed42")
    parser.add_argument("--postgres", default=os.environ.get("QUOTACAST_BENCH_POSTGRES_URL"))
    parser.add_argument("--as-of", default="2025-01-01")
    parser.add_argument("--sources", default="parquet,delta,postgres")
    parser.add_argument("--engines", default="pandas,spark")
    parser.add_argument("--out", type=Path, default=OUT.parent / "sources.jsonl")
    args = parser.parse_args(argv)
    if not (args.company / ".complete").exists():
        sys.exit(f"{args.company} is not a complete generated company (benchmarks/scale.py)")
    sources: dict[str, str] = {}
    for name in args.sources.split(","):
        if name == "parquet":
            sources[name] = str(args.company)
        elif name == "delta":
            sources[name] = str(delta_copy(args.company))
        elif name == "postgres":
            if not args.postgres:
                sys.exit("--postgres URL (or QUOTACAST_BENCH_POSTGRES_URL) names the database")
            sources[name] = postgres_copy(args.company, args.postgres)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    results: list[dict[str, Any]] = []
    for engine in args.engines.split(","):
        for name, source in sources.items():
            for variant in ("whole", "pruned"):
                run = measure([sys.executable, "-c", _READ, source, engine, variant, args.as_of],
                              env)
                words = run.pop("said").strip().splitlines()
                record = {"company": args.company.name, "source": name, "engine": engine,
                          "variant": variant, "as_of": args.as_of, **run,
                          "rows": words[-1] if run["exit"] == 0 and words else None}
                if run["exit"] != 0:
                    record["error"] = words[-1] if words else ""
                results.append(record)
                print(json.dumps(record), flush=True)
                with args.out.open("a") as log:
                    log.write(json.dumps(record) + "\n")
    print(f"\n{'engine':8} {'source':9} {'whole s':>8} {'pruned s':>9} {'whole GiB':>10} "
          f"{'pruned GiB':>11}  rows pruned/whole")
    for engine in args.engines.split(","):
        for name in sources:
            whole, pruned = (next(r for r in results if r["engine"] == engine
                                  and r["source"] == name and r["variant"] == v)
                             for v in ("whole", "pruned"))
            print(f"{engine:8} {name:9} {whole['seconds']:8} {pruned['seconds']:9} "
                  f"{whole['peak_gib']:10} {pruned['peak_gib']:11}  "
                  f"{pruned['rows']}/{whole['rows']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
