"""The service keeps its data fresh on a clock and the current period warm (issue 18).

Over a real app on a tiny generated company copied to a temporary directory, with
``reload_seconds`` of a fifth of a second: appending rows to ``orders.csv`` is seen without a
restart (the caches keyed by the data are emptied, the board's trend gains a snapshot per
load), and a broken file keeps the old data served and says why on /readyz, never a 500. Also
the warm-up at start-up (the first page finds its period computed) and the data fingerprint.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import SEED, quiet_options, quiet_registry, settings_for

from engine.io import write_data_dir
from engine.synthetic import SizeSpec, generate
from service.http.app import create_app
from service.http.dashboard import library_names
from service.http.reload import fingerprint
from service.http.state import AppState
from service.usecases.board import board_store
from service.usecases.served import Memo

TINY = SizeSpec("tiny", 150, 2, 2, (1, 1), (2, 2))  # four reps: fast to generate and simulate
PERIOD = "2026Q4"


@dataclass
class Live:
    client: TestClient
    state: AppState
    data: Path
    key: str

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, headers={"X-API-Key": self.key}, params=params or None)


def _until(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the data watcher"
        time.sleep(0.05)


def _orders(data: Path) -> pd.DataFrame:
    return pd.read_csv(data / "orders.csv", dtype=str)


def _append_order(data: Path, day: str, amount: float) -> None:
    """One more order of the last order's customer (and channel, product), dated ``day``."""
    orders = _orders(data)
    row = orders.iloc[[-1]].copy()
    row["order_id"] = f"added-{day}-{amount:.0f}"
    row["order_date"] = day
    row["amount"] = str(amount)
    for column in ("opportunity_id",):
        if column in row.columns:
            row[column] = None
    pd.concat([orders, row]).to_csv(data / "orders.csv", index=False)


def _company_trend(live: Live) -> list[dict[str, Any]]:
    response = live.get("/v1/trend", period=PERIOD)
    assert response.status_code == 200, response.text
    return list(response.json()["points"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("board-reload")
    data = write_data_dir(generate(TINY, seed=SEED), root / "data")
    settings = settings_for(root, data, f"sqlite:///{root / 'no-registry' / 'mlflow.db'}")
    settings = settings.model_copy(update={"reload_seconds": 0.2})
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        app = create_app(settings, quiet_options(draws=500))  # no warm-up: snapshots only
        with TestClient(app) as client:
            state: AppState = app.state.quotacast
            yield Live(client, state, data, state.keys.create("planner")[1])


def test_the_data_reloads_on_a_clock_and_the_trend_grows(live: Live) -> None:
    # At start-up the current period is simulated once: its snapshot is the trend's first point.
    _until(lambda: not board_store(live.state).snapshots(PERIOD, "company", "all").empty)
    first = _company_trend(live)
    end = live.state.data.end
    assert end is not None
    as_of = end + pd.Timedelta(days=1)
    assert [p["as_of"] for p in first] == [str(as_of.date())]

    # A large order inside the period, before the data's end: same as-of, so only emptied
    # caches can show it; the snapshot of that as-of is written anew.
    _append_order(live.data, str((end - pd.Timedelta(days=3)).date()), 5_000_000.0)
    _until(lambda: live.state.reload.loads == 2)
    assert live.state.data.end == end
    _until(lambda: _company_trend(live)[-1]["closed_to_date"]
           == pytest.approx(first[-1]["closed_to_date"] + 5_000_000.0))
    feasibility = live.get("/v1/feasibility", period=PERIOD).json()
    company = next(n for n in feasibility["nodes"] if n["level"] == "company")
    assert company["closed_to_date"] == pytest.approx(first[-1]["closed_to_date"] + 5e6)

    # A week of new data: the as-of moves and the trend has a second weekly point, recorded by
    # the watcher itself (nobody asked for a feasibility).
    later = end + pd.Timedelta(days=8)
    _append_order(live.data, str(later.date()), 1_000.0)
    _until(lambda: live.state.reload.loads == 3)
    moved = str((later + pd.Timedelta(days=1)).date())
    _until(lambda: [p["as_of"] for p in _company_trend(live)] == [str(as_of.date()), moved])
    page = live.get("/board")
    assert page.status_code == 200 and f"as of {moved}" in page.text

    # Broken data: the old data stays served and /readyz says why; no 500 anywhere.
    (live.data / "orders.csv").write_text(
        (live.data / "orders.csv").read_text() + "broken,row,not-a-date,abc\n")
    _until(lambda: bool(live.state.reload.problems))
    assert live.state.reload.loads == 3 and live.state.data.ok
    ready = live.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["reload"]["every_seconds"] == 0.2
    assert body["reload"]["problems"] and body["data"]["end"] == str(later.date())
    assert live.get("/board").status_code == 200
    assert live.get("/v1/trend", period=PERIOD).status_code == 200


def test_fingerprint_follows_the_files(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("a\n1\n")
    before = fingerprint(str(tmp_path))
    assert before == fingerprint(str(tmp_path))
    (tmp_path / "orders.csv").write_text("a\n1\n2\n")
    assert fingerprint(str(tmp_path)) != before
    (tmp_path / ".hidden").write_text("x")  # hidden files (editors' swap files) do not count
    assert len(fingerprint(str(tmp_path)) or ()) == 1
    assert fingerprint(str(tmp_path / "missing")) == ()
    assert fingerprint("postgresql+psycopg://u@localhost/db") is None  # not watched
    assert fingerprint(f"sqlite:///{tmp_path / 'none.db'}") == ()


def test_the_current_period_is_computed_before_anyone_asks(tmp_path: Path) -> None:
    data = write_data_dir(generate(TINY, seed=SEED), tmp_path / "data")
    settings = settings_for(tmp_path, data, f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        app = create_app(settings, quiet_options(draws=500, warm_up=True))
        with TestClient(app) as client:
            state: AppState = app.state.quotacast
            # A request in flight: the current period is computed (requests wait for it
            # anyway), the lowest-priority rest is not started while anyone is answered.
            state.metrics.begin()
            assert state.reload.warmed_in is None
            _until(lambda: state.reload.warmed_in is not None)
            # Nobody asked: the period's simulation and every node's page are cached, and
            # the simulation left its snapshot.
            computed = [k for k in state.feasibility_cache._items if k[0] == "feasibility"]
            assert [(k[1], str(k[2].date())) for k in computed] == [
                (PERIOD, str((state.span().end + pd.Timedelta(days=1)).date()))]
            assert not board_store(state).snapshots(PERIOD, "company", "all").empty
            from service.http.dashboard import _BOARD

            pages = {k[3] for k in _BOARD._items if k[0] == state.name}
            assert "nodes" in pages and any(p.startswith("changes team") for p in pages)
            assert any(p.startswith("deals None rep") for p in pages)
            assert any(p.startswith("closed path channel") for p in pages)  # the dimensions
            time.sleep(1.0)
            assert state.reload.warmed_more_in is None  # held back by the request in flight
            current = [k for k in state.feasibility_cache._items if k[0] != "stage-rates"]
            assert [k for k in current if k[0] != "dimensions"] == computed
            # The product/segment/channel nodes' simulation: of the current period only.
            assert {k[1:3] for k in current if k[0] == "dimensions"} == {computed[0][1:3]}
            state.metrics.end()
            key = state.keys.create("planner")[1]
            assert client.get("/board", headers={"X-API-Key": key}).status_code == 200
            again = [k for k in state.feasibility_cache._items if k[0] == "feasibility"]
            assert computed[0] in again  # the page used it, nothing computed anew

            # Then, when idle: the previous quarter (its simulation and node pages) and each
            # ready scenario beside the current period.
            _until(lambda: state.reload.warmed_more_in is not None, 180.0)
            cached = list(state.feasibility_cache._items)
            assert ("2026Q3", computed[0][2]) in [(k[1], k[2]) for k in cached
                                                  if k[0] == "feasibility"]
            scenarios = [k for k in cached if k[0] == "scenario"]
            assert len(scenarios) == len(library_names()) == 4
            assert {(k[2], k[3]) for k in scenarios} == {(PERIOD, computed[0][2])}
            pages = {(k[3], k[4]) for k in _BOARD._items if k[0] == state.name}
            assert any(what.startswith("changes rep") and period == "2026Q3"
                       for what, period in pages)
            ready = client.get("/readyz", headers={"X-API-Key": key}).json()["reload"]
            assert ready["warmed_in"] > 0 and ready["warmed_more_in"] > 0
            # What it keeps is out of the garbage collector's full passes (none of them then
            # holds the interpreter for long, in a request or in the background).
            assert gc.get_freeze_count() > 0
            # A page of the previous quarter now computes nothing anew.
            before = list(state.feasibility_cache._items)
            page = client.get("/board", params={"period": "2026Q3", "level": "region",
                                                "node": "North"},
                              headers={"X-API-Key": key})
            assert page.status_code == 200 and "2026Q3" in page.text
            assert set(state.feasibility_cache._items) == set(before)
    assert gc.get_freeze_count() == 0  # the service stopped: the collector's again


def test_a_long_computation_holds_up_no_other_key() -> None:
    """The caches compute each key on its own: a value being computed (a background
    simulation) does not hold up a cached value or another key; the same key waits for it."""
    memo: Memo[int] = Memo(size=4)
    memo.get("cached", lambda: 1)
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow() -> int:
        calls.append("slow")
        started.set()
        release.wait(10)
        return 2

    worker = threading.Thread(target=memo.get, args=("slow", slow))
    worker.start()
    assert started.wait(10)
    began = time.monotonic()
    assert memo.get("cached", lambda: 99) == 1
    assert memo.get("other", lambda: 3) == 3
    assert time.monotonic() - began < 1.0
    waiter: list[int] = []
    second = threading.Thread(target=lambda: waiter.append(memo.get("slow", slow)))
    second.start()
    time.sleep(0.1)
    assert not waiter  # waits for the value being computed
    release.set()
    worker.join(10)
    second.join(10)
    assert waiter == [2] and calls == ["slow"]
    memo.clear()
    assert not memo.peek("cached")
