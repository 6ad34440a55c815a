"""How long the synthetic company takes to generate, and how much memory, at each size.

Each size runs in its own Python process, so that its peak resident memory is its own. Prints
one table: rows per table, seconds, peak RSS (and validation seconds with ``--validate``).

    .venv/bin/python benchmarks/generate.py                  # small and medium
    .venv/bin/python benchmarks/generate.py small medium large
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

__all__ = ["main", "measure"]

COLUMNS = ("customers", "orders", "opportunities", "stage_history", "interactions",
           "receivables", "targets")


def measure(size: str, seed: int, validate: bool) -> dict[str, object]:
    """Generate one size in this process; rows per table, seconds and peak RSS in MiB."""
    from engine import synthetic
    from engine.io import validate_tables

    start = time.perf_counter()
    tables = synthetic.generate(size, seed=seed)
    result: dict[str, object] = {name: len(frame) for name, frame in tables.items()}
    result["seconds"] = round(time.perf_counter() - start, 1)
    # ru_maxrss is in KiB on Linux.
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    if validate:
        start = time.perf_counter()
        _, problems = validate_tables(tables)
        result["validate_s"] = round(time.perf_counter() - start, 1)
        result["problems"] = len(problems)
    return result


def _run_child(size: str, seed: int, validate: bool) -> dict[str, object]:
    command = [sys.executable, __file__, "--one", size, "--seed", str(seed)]
    if validate:
        command.append("--validate")
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _table(rows: dict[str, dict[str, object]], validate: bool) -> str:
    extra = ("validate_s", "problems") if validate else ()
    header = ("size", *COLUMNS, "seconds", "peak_mib", *extra)
    lines = [header] + [
        (size, *(f"{result.get(c, '')}" for c in header[1:])) for size, result in rows.items()
    ]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).rjust(w) for cell, w in zip(line, widths, strict=True))
        for line in lines
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", default=["small", "medium"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--validate", action="store_true", help="also time validate_tables")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one size, JSON out
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.seed, args.validate)))
        return
    rows = {}
    for size in args.sizes:
        print(f"generating {size} ...", file=sys.stderr, flush=True)
        rows[size] = _run_child(size, args.seed, args.validate)
    print(_table(rows, args.validate))


if __name__ == "__main__":
    main()
