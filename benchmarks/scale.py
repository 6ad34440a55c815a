"""`features` on pandas and on Spark local, in the same run, on a generated company.

Generates the demo company at a size (``large``: 210,000 customers; ``--factor 3`` or ``10``
multiplies its customers, and so its orders) once, writes it as a Parquet data directory
partitioned by year (``engine.compute.parquet``), then runs ``quotacast features`` on it with
each engine, each in its own process tree, measuring wall time and the peak resident memory of
the whole tree (the JVM and Spark's Python workers included, sampled every 0.2 s). Prints one
row per engine, the Spark/pandas ratios, and whether both feature tables are identical.

    nice .venv/bin/python benchmarks/scale.py --size small            # a minute
    nice .venv/bin/python benchmarks/scale.py --size large            # the issue-19 baseline
    nice .venv/bin/python benchmarks/scale.py --size large --factor 3 --engines spark

Run heavy sizes one at a time (the machine's two cores are shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil

__all__ = ["company", "main", "measure"]

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "scale"
QUOTACAST = str(Path(sys.executable).with_name("quotacast"))


def company(size: str, factor: int, seed: int, root: Path) -> Path:
    """The Parquet data directory of ``size`` x ``factor`` (generated once, then reused)."""
    target = root / f"{size}-x{factor}-seed{seed}"
    done = target / ".complete"
    if done.exists():
        return target
    from engine import synthetic
    from engine.compute.parquet import write_parquet_dir

    spec = synthetic.SIZES[size]
    spec = replace(spec, name=f"{size}x{factor}", customers=spec.customers * factor)
    start = time.perf_counter()
    frames = synthetic.generate(spec, seed=seed)
    write_parquet_dir(frames, target)
    rows = {name: len(frame) for name, frame in frames.items()}
    done.write_text(json.dumps({"rows": rows, "seconds": round(time.perf_counter() - start, 1)}))
    return target


def measure(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and peak RSS (GiB) of a command's whole process tree."""
    start = time.perf_counter()
    process = psutil.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-2000:]}")
    return {"seconds": round(seconds, 1), "peak_gib": round(peak / 2**30, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large", choices=("small", "medium", "large"))
    parser.add_argument("--factor", type=int, default=1, help="customers x this (3, 10)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--engines", nargs="+", default=["pandas", "spark"],
                        choices=("pandas", "spark"))
    parser.add_argument("--master", default="local[2]", help="QUOTACAST_SPARK_MASTER")
    parser.add_argument("--driver-memory", default="6g",
                        help="Spark's driver memory (local mode: the whole Spark heap)")
    parser.add_argument("--root", type=Path, default=OUT)
    args = parser.parse_args(argv)

    args.root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = company(args.size, args.factor, args.seed, args.root)
    info = json.loads((data / ".complete").read_text())
    print(f"company {data.name}: {info['rows'].get('customers', 0):,} customers, "
          f"{info['rows'].get('orders', 0):,} orders (generated in {info['seconds']} s; "
          f"ready in {time.perf_counter() - start:.0f} s)", flush=True)
    results: dict[str, dict[str, float]] = {}
    for engine in args.engines:
        out = args.root / f"features-{data.name}-{engine}.parquet"
        env = {**os.environ, "QUOTACAST_SPARK_MASTER": args.master}
        # Spark's own way to size the JVM before it starts.
        env["PYSPARK_SUBMIT_ARGS"] = f"--driver-memory {args.driver_memory} pyspark-shell"
        results[engine] = measure(
            [QUOTACAST, "features", "--data", str(data), "--engine", engine, "--out", str(out)],
            env)
        print(f"{engine:>6}: {results[engine]['seconds']:8.1f} s  "
              f"{results[engine]['peak_gib']:6.2f} GiB peak (process tree)", flush=True)
    if {"pandas", "spark"} <= results.keys():
        import pandas as pd

        ratio = {k: results["spark"][k] / max(results["pandas"][k], 1e-9)
                 for k in ("seconds", "peak_gib")}
        print(f" spark/pandas: time x{ratio['seconds']:.2f}, peak memory x{ratio['peak_gib']:.2f}")
        frames = [pd.read_parquet(args.root / f"features-{data.name}-{e}.parquet")
                  for e in ("pandas", "spark")]
        same = frames[0].equals(frames[1])
        print(f" feature tables identical: {same} ({len(frames[0]):,} customers x "
              f"{frames[0].shape[1] - 2} features)")
    record = args.root / "scale.jsonl"
    with record.open("a") as handle:
        handle.write(json.dumps({"company": data.name, "master": args.master,
                                 "rows": info["rows"], **results}) + "\n")


if __name__ == "__main__":
    main()
