"""Write the first N months of a data directory, as an export made on the cut day would hold it.

    python benchmarks/cut_history.py DATA --months 3 6 9 12 --out DIR

writes ``DIR/<name>-<N>m`` for each N (see engine/history.py for what a cut keeps).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.history import cut_history
from engine.io import load_tables, write_data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--months", type=int, nargs="+", default=[3, 6, 9, 12])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tables = load_tables(args.data)
    name = Path(args.data.rstrip("/")).name
    for months in args.months:
        cut = cut_history(tables, months)
        frames = {t: f for t, f in cut.frames.items() if t not in cut.derived}
        target = write_data_dir(frames, args.out / f"{name}-{months}m")
        print(f"{target}: {len(cut.orders):,} orders")


if __name__ == "__main__":
    main()
