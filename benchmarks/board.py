"""How fast the board pages answer at a generated demo company, beside the dashboard (``/``).

The service runs in this process (FastAPI's test client, the whole HTTP stack: keys, rate
limits, templates) over the demo company of ``--size`` (default ``medium``) in a temporary
directory, with no champion models (the stage-rate fallback: what a fresh install serves).
The service computes the current period in the background at start-up (its warm-up, timed and
printed); the pages are asked once that is done, as a user arriving after start-up would. Each
page is asked once cold (the first view of that page: its node's deals, trend, what changed and
commits computed, and for another period or a scenario its simulation) and then ``--repeat``
times warm (cached); the table gives the cold time and the median and worst warm time, in
milliseconds. The goal: every page of the current period under 300 ms, cold and warm.

    .venv/bin/python benchmarks/board.py                 # medium
    .venv/bin/python benchmarks/board.py --size small --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["main"]

TARGET_MS = 300.0


def _pages(manager: str, region: str, team: str, rep: str, period: str
           ) -> list[tuple[str, str, str, dict[str, str]]]:
    """(name, who, path, params) of every page timed."""
    return [
        ("/ (dashboard, the peer)", "planner", "/", {}),
        ("/board company", "planner", "/board", {}),
        ("/board region", "planner", "/board", {"level": "region", "node": region}),
        ("/board team", "planner", "/board", {"level": "team", "node": team}),
        ("/board rep", "planner", "/board", {"level": "rep", "node": rep}),
        ("/board channel (no target)", "planner", "/board", {"level": "channel",
                                                             "node": "direct"}),
        (f"/board period {period}", "planner", "/board", {"period": period}),
        ("/board + scenario", "planner", "/board", {"scenario": "budget-freeze"}),
        ("/board + recalibration p50", "planner", "/board", {"method": "proportional_p50"}),
        ("/board account manager", "manager", "/board", {}),
        ("/v1/deals company", "planner", "/v1/deals", {}),
        (f"/v1/deals rep (manager {manager})", "manager", "/v1/deals", {}),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", help="demo company size (default medium)")
    parser.add_argument("--repeat", type=int, default=7, help="warm requests per page")
    parser.add_argument("--draws", type=int, default=10_000, help="Monte Carlo draws")
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient

    from engine.config import Settings
    from engine.io import load_tables, write_data_dir
    from engine.periods import default_as_of, default_period, period_of
    from engine.schemas import ACCOUNT_MANAGER, REP
    from engine.synthetic import generate
    from features.hierarchy import rep_hierarchy
    from service.http.app import create_app
    from service.http.config import ServiceSettings

    root = Path(tempfile.mkdtemp(prefix="quotacast-board-bench-"))
    started = time.perf_counter()
    data = write_data_dir(generate(args.size, seed=42), root / "data")
    tables = load_tables(str(data))
    print(f"demo company {args.size}: {len(tables.orders):,} orders, "
          f"{len(tables['opportunities']):,} deals ({time.perf_counter() - started:.1f} s)")
    manager = str(tables.customers[ACCOUNT_MANAGER].value_counts().index[0])
    hierarchy = rep_hierarchy(tables)
    mine = hierarchy[hierarchy[REP] == manager].iloc[0]
    as_of = default_as_of(tables)
    earlier = period_of(as_of - __import__("pandas").DateOffset(months=3), "Q")
    settings = Settings(data=str(data), mlflow_tracking_uri=f"sqlite:///{root / 'none.db'}",
                        database_url=f"sqlite:///{root / 'quotacast.db'}", seed=42)
    options = ServiceSettings(draws=args.draws, deliver_notifications=False,
                              rate_limit_per_minute=60_000, rate_limit_burst=10_000)
    app = create_app(settings, options)
    rows = []
    with TestClient(app) as client:
        state = app.state.quotacast
        keys = {"planner": state.keys.create("planner")[1],
                "manager": state.keys.create("account_manager", manager)[1]}
        print(f"period {default_period(as_of)} as of {as_of.date()}, {args.draws:,} draws; "
              f"account manager {manager}")
        while state.reload.warmed_in is None:  # the background warm-up of the current period
            time.sleep(0.05)
        print(f"warm-up at start-up: {state.reload.warmed_in:.1f} s (current period's "
              "simulation, board and dashboard)")
        for name, who, path, params in _pages(manager, str(mine["region"]), str(mine["team"]),
                                              str(mine[REP]), earlier):
            times = []
            for _ in range(args.repeat + 1):
                began = time.perf_counter()
                response = client.get(path, params=params or None,
                                      headers={"X-API-Key": keys[who]})
                times.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    print(f"{name}: {response.status_code} {response.text[:300]}")
                    return 1
            warm = times[1:]
            rows.append((name, times[0], statistics.median(warm), max(warm)))
    width = max(len(r[0]) for r in rows)
    print(f"{'page':<{width}}  {'cold ms':>8}  {'warm median':>11}  {'warm max':>8}")
    for name, cold, median, worst in rows:
        flag = "" if median < TARGET_MS else f"  over {TARGET_MS:.0f} ms"
        print(f"{name:<{width}}  {cold:8.0f}  {median:11.0f}  {worst:8.0f}{flag}")
    slow = [r for r in rows if r[2] >= TARGET_MS]
    print("every page under 300 ms warm" if not slow
          else f"{len(slow)} page(s) at or over {TARGET_MS:.0f} ms warm")
    current = [r for r in rows if not r[0].startswith(("/board period", "/board + scenario"))]
    cold = [r for r in current if r[1] >= TARGET_MS]
    print("every page of the current period under 300 ms cold (first view)" if not cold
          else f"{len(cold)} page(s) of the current period at or over {TARGET_MS:.0f} ms cold: "
          + ", ".join(r[0] for r in cold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
