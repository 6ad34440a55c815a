"""How fast the board pages answer at a generated demo company, beside the dashboard (``/``).

The service runs in this process (FastAPI's test client, the whole HTTP stack: keys, rate
limits, templates) over the demo company of ``--size`` (default ``medium``) in a temporary
directory, with no champion models (the stage-rate fallback: what a fresh install serves).
At start-up the service computes the current period in the background (its warm-up, timed and
printed), then, at the lowest priority, the previous quarter and each ready scenario. The
benchmark times:

1. while that lowest-priority rest runs: a current-period page every half second (so the
   background's steps run between and under them): does it slow a request? Then the same
   pages the same way with nothing in the background (the peer); a table gives the median,
   95th percentile and max of each page kind, with the background and without.
2. once it is done, each page once cold (the first view of that page) and then ``--repeat``
   times warm (cached): the current period's pages, the previous quarter's and the scenarios'
   (computed ahead), and last a quarter and a scenario of a quarter nobody computed ahead
   ("not ahead"). The first view of those answers at once (202, "being computed, reload")
   while the page is computed in the background; the benchmark then reloads every quarter of
   a second and gives how long after the first view the full page came ("full after").

The table gives the cold time (the first answer), the slowest reload until the full page
came, and the median and worst warm time, in milliseconds, and the machine's load average is
printed beside it. The goal: every answer under 300 ms, cold, reloaded and warm, and while the
background work runs.

With ``--peer DIR`` (a checkout of other code, e.g. ``git worktree add --detach DIR HEAD``)
the benchmark generates the company once and runs section 1 (the page kinds with the
background on and off) for the peer's code and for this checkout's, one after the other in the
same run, at the machine's ordinary load and then with ``--load N`` busy Python loops that it
starts itself (at its own priority, the service's), and prints one table per load: before (the
peer) and after. ``--during S`` stops asking after S seconds of background work; the
"nothing in background" columns then stay empty for a background not done by then (a warm-up
at the lowest OS priority may get no CPU beside busy loops).

    .venv/bin/python benchmarks/board.py                 # medium
    .venv/bin/python benchmarks/board.py --size small --repeat 5
    nice -n 10 .venv/bin/python benchmarks/board.py --peer /tmp/peer --load 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = str(Path(__file__).resolve().parents[1])
# --code DIR: the service's code from another checkout (the peer's run; its spawned processes
# read the same argument).
CODE = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--code"), HERE)
sys.path.insert(0, CODE)

__all__ = ["main"]

TARGET_MS = 300.0


def _pages(manager: str, region: str, team: str, rep: str, previous: str, older: str
           ) -> list[tuple[str, str, str, dict[str, str]]]:
    """(name, who, path, params) of every page timed, those nobody computed ahead last."""
    return [
        ("/ (dashboard, the peer)", "planner", "/", {}),
        ("/board company", "planner", "/board", {}),
        ("/board region", "planner", "/board", {"level": "region", "node": region}),
        ("/board team", "planner", "/board", {"level": "team", "node": team}),
        ("/board rep", "planner", "/board", {"level": "rep", "node": rep}),
        ("/board channel (no target)", "planner", "/board", {"level": "channel",
                                                             "node": "direct"}),
        ("/board + recalibration p50", "planner", "/board", {"method": "proportional_p50"}),
        ("/board account manager", "manager", "/board", {}),
        ("/v1/deals company", "planner", "/v1/deals", {}),
        (f"/v1/deals rep (manager {manager})", "manager", "/v1/deals", {}),
        (f"/board {previous} company", "planner", "/board", {"period": previous}),
        (f"/board {previous} region", "planner", "/board", {"period": previous,
                                                             "level": "region", "node": region}),
        (f"/board {previous} rep", "planner", "/board", {"period": previous, "level": "rep",
                                                          "node": rep}),
        (f"/board {previous} channel", "planner", "/board", {"period": previous,
                                                              "level": "channel",
                                                              "node": "direct"}),
        (f"/board {previous} account manager", "manager", "/board", {"period": previous}),
        ("/board + scenario budget-freeze", "planner", "/board", {"scenario": "budget-freeze"}),
        ("/board + scenario recession, region", "planner", "/board",
         {"scenario": "recession", "level": "region", "node": region}),
        (f"/board {older} company (not ahead)", "planner", "/board", {"period": older}),
        (f"/board {older} + scenario price-cut (not ahead)", "planner", "/board",
         {"period": older, "scenario": "price-cut"}),
    ]


def _spread(values: list[float]) -> str:
    """Median, 95th percentile and max, in milliseconds."""
    p95 = float(np.percentile(values, 95)) if values else float("nan")
    return (f"{statistics.median(values):6.0f} {p95:5.0f} {max(values):5.0f}" if values
            else f"{'-':>6} {'-':>5} {'-':>5}")


def _spread_table(during: dict[str, list[float]], idle: dict[str, list[float]]) -> None:
    """Per page kind: median, p95 and max ms while the background ran and with nothing in it."""
    width = max(len(k) for k in during)
    print(f"{'page':<{width}}  {'n':>3}  {'background: median p95 max':>26}  "
          f"{'n':>3}  {'nothing in background: median p95 max':>37}")
    for name, values in during.items():
        calm = idle.get(name, [])
        print(f"{name:<{width}}  {len(values):3d}  {_spread(values):>26}  {len(calm):3d}  "
              f"{_spread(calm):>37}")


def _busy(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` Python loops that keep a core busy each (at this process's priority)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(count)]


def _stop(loops: list[subprocess.Popen[bytes]]) -> None:
    for loop in loops:
        loop.kill()
        loop.wait()


def _compare(args: argparse.Namespace) -> int:
    """Section 1 for the peer's code and this checkout's, at the ordinary and an added load."""
    from engine.io import write_data_dir
    from engine.synthetic import generate

    root = Path(tempfile.mkdtemp(prefix="quotacast-board-peer-"))
    started = time.perf_counter()
    data = write_data_dir(generate(args.size, seed=42), root / "data")
    print(f"demo company {args.size} generated once ({time.perf_counter() - started:.1f} s); "
          f"peer {args.peer}, this checkout {HERE}")
    runs: dict[tuple[int, str], dict[str, Any]] = {}
    for load in sorted({0, args.load}):
        loops = _busy(load)
        try:
            for label, code in (("before", args.peer), ("after", HERE)):
                command = [sys.executable, str(Path(__file__).resolve()), "--code", code,
                           "--data", str(data), "--json", "--size", args.size,
                           "--draws", str(args.draws), "--during", str(args.during)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(done.stdout[-2000:], done.stderr[-3000:])
                    raise SystemExit(f"the {label} run failed ({done.returncode})")
                found = json.loads(done.stdout.strip().splitlines()[-1])
                runs[(load, label)] = found
                print(f"added load {load}, {label} ({found['code']}): warm-up "
                      f"{found['warmed_in']:.1f} s, rest "
                      + (f"{found['more_in']:.1f} s" if found["more_in"] is not None
                         else f"not done in {args.during:.0f} s")
                      + f"; {found['load']}", flush=True)
        finally:
            _stop(loops)
    for load in sorted({0, args.load}):
        before, after = runs[(load, "before")], runs[(load, "after")]
        print(f"\nadded load: {load} busy loop(s); load average during the runs: before "
              f"{before['load']}, after {after['load']}")
        kinds = list(before["during"]) or list(after["during"])
        width = max(len(k) for k in kinds)
        print(f"{'page':<{width}}  {'':>6}  {'n':>3}  {'background: median p95 max':>26}  "
              f"{'n':>3}  {'nothing: median p95 max':>23}")
        for kind in kinds:
            for label, run in (("before", before), ("after", after)):
                on, off = run["during"].get(kind, []), run["idle"].get(kind, [])
                print(f"{kind:<{width}}  {label:>6}  {len(on):3d}  {_spread(on):>26}  "
                      f"{len(off):3d}  {_spread(off):>23}")
        for label, run in (("before", before), ("after", after)):
            every = [v for values in run["during"].values() for v in values]
            print(f"{label}: pages while the background ran, max "
                  + (f"{max(every):.0f} ms" if every else "-")
                  + ("" if not every or max(every) < TARGET_MS
                     else f" (over {TARGET_MS:.0f} ms)"))
    return 0


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f} ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", help="demo company size (default medium)")
    parser.add_argument("--repeat", type=int, default=7, help="warm requests per page")
    parser.add_argument("--draws", type=int, default=10_000, help="Monte Carlo draws")
    parser.add_argument("--load", type=int, default=0,
                        help="busy Python loops started beside the service (an added load)")
    parser.add_argument("--during", type=float, default=600.0,
                        help="seconds at most of asking pages while the background runs")
    parser.add_argument("--peer", help="another checkout: its code and this one's compared")
    parser.add_argument("--code", default=HERE, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)  # generated once by --peer
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        return _compare(args)
    loops = _busy(args.load)
    try:
        return _run(args)
    finally:
        _stop(loops)


def _run(args: argparse.Namespace) -> int:
    """One run of the service (of ``--code``) over the company; ``--json``: section 1 only,
    its numbers on the last line."""

    from fastapi.testclient import TestClient

    import service
    from engine.config import Settings
    from engine.io import load_tables, write_data_dir
    from engine.periods import default_as_of, default_period, period_of
    from engine.schemas import ACCOUNT_MANAGER, REP
    from engine.synthetic import generate
    from features.hierarchy import rep_hierarchy
    from service.http.app import create_app
    from service.http.config import ServiceSettings
    from service.usecases.scenario import scenario_library as _library

    root = Path(tempfile.mkdtemp(prefix="quotacast-board-bench-"))
    started = time.perf_counter()
    data = (Path(args.data) if args.data
            else write_data_dir(generate(args.size, seed=42), root / "data"))
    tables = load_tables(str(data))
    print(f"demo company {args.size}: {len(tables.orders):,} orders, "
          f"{len(tables['opportunities']):,} deals ({time.perf_counter() - started:.1f} s)")
    manager = str(tables.customers[ACCOUNT_MANAGER].value_counts().index[0])
    hierarchy = rep_hierarchy(tables)
    mine = hierarchy[hierarchy[REP] == manager].iloc[0]
    as_of = default_as_of(tables)
    quarter = __import__("pandas").DateOffset(months=3)
    previous, older = (period_of(as_of - quarter, "Q"), period_of(as_of - 2 * quarter, "Q"))
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
              f"account manager {manager}; {_load()}")
        while state.reload.warmed_in is None:  # the background warm-up of the current period
            time.sleep(0.05)
        print(f"warm-up at start-up: {state.reload.warmed_in:.1f} s (current period's "
              f"simulation, board and dashboard); {_load()}")
        pages = _pages(manager, str(mine["region"]), str(mine["team"]), str(mine[REP]),
                       previous, older)

        def ask(who: str, path: str, params: dict[str, str]) -> tuple[float, bool]:
            """Milliseconds, and whether the page was full (not 202 "being computed")."""
            began = time.perf_counter()
            response = client.get(path, params=params or None,
                                  headers={"X-API-Key": keys[who]})
            spent = (time.perf_counter() - began) * 1000
            if path == "/board" and response.status_code == 202:
                if 'id="board-computing"' not in response.text:
                    raise SystemExit(f"{path} {params}: 202 without saying what is computed")
                return spent, False
            if response.status_code != 200:
                raise SystemExit(f"{path} {params}: {response.status_code} "
                                 f"{response.text[:300]}")
            if path == "/board" and ('id="node-title"' not in response.text
                                     or 'id="board-problem"' in response.text):
                raise SystemExit(f"{path} {params}: the page shows no node")
            if params.get("scenario") and 'id="scenario-table"' not in response.text:
                raise SystemExit(f"{path} {params}: the page shows no scenario")
            return spent, True

        def full(who: str, path: str, params: dict[str, str]
                 ) -> tuple[float, float | None, float | None]:
            """The first view's milliseconds, seconds until the full page came (None: the
            first view was the full page) and the slowest reload's milliseconds till then."""
            began = time.perf_counter()
            first, done = ask(who, path, params)
            if done:
                return first, None, None
            reloads = []
            while not done:
                time.sleep(0.25)
                spent, done = ask(who, path, params)
                reloads.append(spent)
            return first, time.perf_counter() - began, max(reloads)

        # 1. Current-period pages while the lowest-priority rest runs, one every 0.5 s.
        during: dict[str, list[float]] = {}
        idle: dict[str, list[float]] = {}
        current = pages[1:5]
        asked = 0
        stop_at = time.monotonic() + args.during
        while state.reload.warmed_more_in is None and time.monotonic() < stop_at:
            name, who, path, params = current[asked % len(current)]
            during.setdefault(name, []).append(ask(who, path, params)[0])
            asked += 1
            time.sleep(0.5)
        more = state.reload.warmed_more_in
        print(f"previous quarter {previous} and {len(_library())} ready scenarios computed "
              "after it, at the lowest priority: "
              + (f"{more:.1f} s" if more is not None else f"not done in {args.during:.0f} s")
              + f"; {_load()}")
        if during and state.reload.warmed_more_in is not None:
            # The peer of those, in the same run: the same pages the same way, nothing in the
            # background (what the machine's own load costs them).
            for i in range(min(asked, 40)):
                name, who, path, params = current[i % len(current)]
                idle.setdefault(name, []).append(ask(who, path, params)[0])
                time.sleep(0.5)
            print(f"current-period pages asked every 0.5 s while the background ran ({asked}), "
                  f"then with nothing in the background ({min(asked, 40)}); {_load()}")
            _spread_table(during, idle)
        if args.json:
            print(json.dumps({"code": str(Path(service.__file__).parents[1]),
                              "warmed_in": state.reload.warmed_in,
                              "more_in": state.reload.warmed_more_in,
                              "during": during, "idle": idle, "load": _load()}))
            return 0
        # 2. Every page cold, then warm.
        for name, who, path, params in pages:
            cold, after, reload = full(who, path, params)
            warm = [ask(who, path, params)[0] for _ in range(args.repeat)]
            rows.append((name, cold, after, reload, statistics.median(warm), max(warm)))
    width = max(len(r[0]) for r in rows)
    print(f"{'page':<{width}}  {'cold ms':>8}  {'full after':>10}  {'reload max':>10}  "
          f"{'warm median':>11}  {'warm max':>8}")
    for name, cold, after, reload, median, worst in rows:
        flag = ("" if max(cold, median, reload or 0.0) < TARGET_MS
                else f"  over {TARGET_MS:.0f} ms")
        later = "" if after is None else f"{after:.1f} s"
        polled = "" if reload is None else f"{reload:.0f}"
        print(f"{name:<{width}}  {cold:8.0f}  {later:>10}  {polled:>10}  {median:11.0f}  "
              f"{worst:8.0f}{flag}")
    print(_load())
    slow = [r for r in rows if r[4] >= TARGET_MS]
    print("every page under 300 ms warm" if not slow
          else f"{len(slow)} page(s) at or over {TARGET_MS:.0f} ms warm")
    cold_slow = [r for r in rows if r[1] >= TARGET_MS]
    reloaded = [r for r in rows if (r[3] or 0.0) >= TARGET_MS]
    print("every page's first view under 300 ms (cold)" if not cold_slow
          else f"{len(cold_slow)} page(s) at or over {TARGET_MS:.0f} ms cold: "
          + ", ".join(r[0] for r in cold_slow))
    print("every reload of a page being computed under 300 ms" if not reloaded
          else f"{len(reloaded)} page(s) reloaded at or over {TARGET_MS:.0f} ms while computed: "
          + ", ".join(r[0] for r in reloaded))
    if during:
        worst, calm = max(max(v) for v in during.values()), max(max(v) for v in idle.values())
        print(f"pages asked while the background work ran: max {worst:.0f} ms"
              + ("" if worst < TARGET_MS else f", over {TARGET_MS:.0f} ms")
              + f" (with nothing in the background: max {calm:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
