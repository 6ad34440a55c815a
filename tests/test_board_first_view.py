"""The first view of a board page nobody computed ahead: answered at once (202) with what is
being computed and its draws, then replaced by the full page from the full simulation; and the
background warm-up stepping aside while a request is answered."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    quiet_options,
    settings_for,
    stubbed_service,
)

from service.http import reload
from service.http.app import create_app
from service.http.metrics import RequestMetrics, Yielding
from service.http.state import AppState
from service.usecases.served import Memo, result_of

DRAWS = 2000  # quiet_options
OLDER = "2026Q2"  # two quarters before the small company's current one: never computed ahead


@dataclass
class Site:
    client: TestClient
    state: AppState
    keys: dict[str, str]
    manager: str

    def board(self, who: str, **params: str) -> tuple[int, str]:
        response = self.client.get("/board", headers={"X-API-Key": self.keys[who]},
                                   params=params)
        return response.status_code, response.text

    def full(self, who: str, **params: str) -> str:
        """The page once computed (its first answers are 202 until then)."""
        for _ in range(600):
            code, page = self.board(who, **params)
            if code != 202:
                assert code == 200, page[-2000:]
                return page
            time.sleep(0.2)
        raise AssertionError(f"{params} still being computed after two minutes")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("first-view")
    with stubbed_service(root) as (company, uri, patch):
        # The warm-up on (first views answer at once only with it), its work left out (it
        # would compute the current and the previous quarter, never OLDER); a first view
        # never waits, so its first answer is always the 202.
        patch.setattr(reload, "warm", lambda state: 0.0)
        patch.setattr(reload, "more_steps", lambda space: iter(()))
        app = create_app(settings_for(root, company.data, uri),
                         quiet_options(warm_up=True, first_view_seconds=0.0))
        with TestClient(app) as client:
            state: AppState = app.state.quotacast
            keys = {"planner": state.keys.create("planner")[1],
                    "manager": state.keys.create("account_manager", company.manager)[1]}
            yield Site(client, state, keys, company.manager)


def _computing(page: str) -> str:
    start = page.index('<section id="board-computing"')
    return page[start:page.index("</section>", start)]


def test_a_period_not_computed_answers_at_once_then_from_the_full_simulation(site: Site
                                                                              ) -> None:
    code, first = site.board("planner", period=OLDER)
    assert code == 202
    said = _computing(first)
    assert 'role="status"' in said
    assert f"the simulation of {OLDER} as of 2026-11-16" in said
    assert f"({DRAWS:,}\n    simulated outcomes)" in said
    assert f'href="/board?period={OLDER}&amp;as_of=2026-11-16"' in said  # reload: same page
    assert 'id="node-title"' not in first and 'id="children"' not in first  # no number yet
    assert f'<option value="{OLDER}" selected>' in first  # the picker is there

    full = site.full("planner", period=OLDER)
    assert 'id="board-computing"' not in full
    assert f"{DRAWS:,} simulated outcomes of the period" in full
    assert re.search(rf'aria-label="company, {OLDER} as of 2026-11-16: closed', full)
    # Computed now: every later view is the full page at once.
    assert site.board("planner", period=OLDER)[0] == 200


def test_a_reload_while_the_rest_of_the_page_is_computed_says_so_again(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    # The page's simulation done, the rest of it still being computed for its first view: a
    # reload does not compute it too (seconds at a medium company) but says so again at once.
    from service.http import board_first  # after the app (they import each other)

    release = threading.Event()
    real = board_first.board_context

    def slow(*args: Any, **kwargs: Any) -> Any:
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(board_first, "board_context", slow)
    code, _ = site.board("planner", period="2025Q3")
    assert code == 202
    monkeypatch.setattr(board_first, "not_computed", lambda *args: [])  # simulation done
    began = time.perf_counter()
    code, again = site.board("planner", period="2025Q3")
    assert code == 202 and time.perf_counter() - began < 10
    assert "the page of 2025Q3 as of 2026-11-16" in _computing(again)
    release.set()
    full = site.full("planner", period="2025Q3")
    assert 'id="node-title"' in full and 'id="board-computing"' not in full


def test_a_scenario_of_a_period_not_computed_says_so_then_shows_it(site: Site) -> None:
    code, first = site.board("planner", period="2026Q1", scenario="price-cut")
    assert code == 202
    said = _computing(first)
    assert "the simulation of 2026Q1 as of 2026-11-16 and the scenario price-cut" in said
    assert "scenario=price-cut" in said
    full = site.full("planner", period="2026Q1", scenario="price-cut")
    assert 'id="scenario-table"' in full and f"{DRAWS:,} simulated outcomes" in full


def test_an_account_manager_first_view_shows_nothing_of_others(site: Site) -> None:
    code, first = site.board("manager", period="2025Q4")
    assert code == 202
    assert 'id="children"' not in first and "region " not in _computing(first)
    full = site.full("manager", period="2025Q4")
    assert f'<span aria-current="page">rep {site.manager}</span>' in full
    assert 'id="children"' not in full
    # Naming another node is refused at once, computed or not.
    code, page = site.board("manager", period="2025Q3", level="region", node="North")
    assert code == 403 and 'id="not-yours"' in page and 'id="board-computing"' not in page


def _calls(count: int) -> None:
    for _ in range(count):
        abs(1)  # a C call: not a stop
        _noop()


def _noop() -> None:
    return None


def test_the_background_steps_aside_while_a_request_is_answered() -> None:
    metrics = RequestMetrics()
    gate = Yielding(metrics, longest=0.05, grace=0.0)

    def background() -> None:
        gate.install()
        try:
            _calls(20)
        finally:
            gate.remove()

    metrics.begin()  # a request being answered
    worker = threading.Thread(target=background)
    worker.start()
    worker.join()
    metrics.end()
    assert gate.pauses >= 1 and gate.paused > 0

    # Never while someone waits for a value being computed: that may be this very thread.
    quiet = Yielding(metrics, longest=5.0)
    memo: Memo[int] = Memo()
    started, release = threading.Event(), threading.Event()

    def slow() -> int:
        started.set()
        release.wait()
        return 1

    owner = threading.Thread(target=lambda: memo.get("k", slow))
    owner.start()
    started.wait()
    waiter = threading.Thread(target=lambda: memo.get("k", lambda: 2))
    waiter.start()
    while not waiter.is_alive():
        time.sleep(0.001)
    time.sleep(0.05)  # the waiter is inside Memo.get, waiting
    metrics.begin()

    def background_quiet() -> None:
        quiet.install()
        try:
            _calls(20)
        finally:
            quiet.remove()

    worker = threading.Thread(target=background_quiet)
    worker.start()
    worker.join()
    metrics.end()
    release.set()
    owner.join()
    waiter.join()
    assert quiet.pauses == 0


def test_work_a_background_step_hands_to_a_pool_steps_aside_too() -> None:
    metrics = RequestMetrics()
    gate = Yielding(metrics, longest=0.05, grace=0.0)
    pool = ThreadPoolExecutor(max_workers=1)
    handed: list[Future[None]] = []
    go = threading.Event()

    def later() -> None:
        go.wait()
        _calls(5)

    def background() -> None:
        gate.install()
        try:
            handed.append(pool.submit(Yielding.inherit(later)))
        finally:
            gate.remove()

    worker = threading.Thread(target=background)
    worker.start()
    worker.join()
    assert Yielding.inherit(_noop) is _noop  # this thread yields to nobody
    metrics.begin()
    try:
        threading.Timer(0.05, go.set).start()  # once this request waits for it
        result_of(handed[0])  # a request waiting for it: it does not pause for that one
        assert gate.pauses == 0
    finally:
        metrics.end()
    metrics.begin()
    try:
        pool.submit(Yielding.inherit(_noop)).result()  # handed by a request: never pauses
        later = pool.submit(gate.install)  # the pool thread as a background one
        later.result()
        pool.submit(lambda: _calls(3)).result()
        assert gate.pauses >= 1
    finally:
        metrics.end()
        pool.submit(gate.remove).result()
        pool.shutdown()
