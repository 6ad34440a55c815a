"""The warm-up's rest computed in a process of its own (issue 18: pages fast during it).

Over a real app on a tiny generated company: after the current period's pages, the previous
quarter and the ready scenarios are computed by a child process
(:mod:`service.http.warm_process`) and copied into the service's caches; the pages then
compute nothing anew, and they are the same, byte for byte, as the pages the service's own
warm-up computes. When the child fails (its data is not the service's) or cannot start,
the service computes the rest itself.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import SEED, quiet_options, quiet_registry, settings_for

from engine.io import write_data_dir
from engine.synthetic import SizeSpec, generate
from service.http import warm_process
from service.http.app import create_app
from service.http.dashboard import library_names
from service.http.reload import DataWatcher, _forget, more_steps, warm
from service.http.state import AppState, build_state
from service.usecases.planning import simulated
from service.usecases.scenario import scenario_simulated

TINY = SizeSpec("tiny", 150, 2, 2, (1, 1), (2, 2))  # four reps: fast to generate and simulate
PERIOD, PREVIOUS = "2026Q4", "2026Q3"


def _until(condition: Callable[[], bool], seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the warm-up"
        time.sleep(0.05)


def _pages(client: TestClient, key: str, rep: str) -> list[str]:
    asked: list[dict[str, Any]] = [
        {}, {"level": "rep", "node": rep}, {"level": "channel", "node": "direct"},
        {"period": PREVIOUS}, {"period": PREVIOUS, "level": "region", "node": "North"},
        {"scenario": "recession"}]
    out = []
    for params in asked:
        response = client.get("/board", params=params, headers={"X-API-Key": key})
        assert response.status_code == 200, (params, response.text[-1000:])
        assert 'id="node-title"' in response.text
        out.append(response.text)
    return out


def test_the_rest_is_computed_in_a_process_and_its_pages_are_the_same(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = write_data_dir(generate(TINY, seed=SEED), tmp_path / "data")
    settings = settings_for(tmp_path, data, f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    caplog.set_level(logging.INFO, logger="quotacast.service")
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        # A page waits for what is not computed (no 202): the same page either way.
        app = create_app(settings, quiet_options(draws=500, warm_up=True, warm_process=True,
                                                 first_view_seconds=None))
        with TestClient(app) as client:
            state: AppState = app.state.quotacast
            _until(lambda: state.reload.warmed_more_in is not None)
            assert "computed in the warm-up's process" in caplog.text
            assert "failed" not in caplog.text
            as_of = state.span().end + pd.Timedelta(days=1)
            # Copied here: the previous quarter and every ready scenario, never computed in
            # this process (it computed the current period's pages only).
            assert simulated(state, PREVIOUS, as_of)
            assert all(scenario_simulated(state, name, PERIOD, as_of)
                       for name in library_names())
            assert gc.get_freeze_count() > 0
            key = state.keys.create("planner")[1]
            rep = next(k[3].split(" ", 3)[3] for k in _board_keys(state)
                       if k[3].startswith("deals None rep") and k[4] == PERIOD)
            before = [k for k, _ in state.feasibility_cache.items()]
            copied = _pages(client, key, rep)
            assert {k for k, _ in state.feasibility_cache.items()} == set(before)  # none anew
            # The same pages computed in this process, from nothing, as the in-process
            # warm-up does.
            _forget(state)
            assert not simulated(state, PREVIOUS, as_of)
            warm(state)
            for step in more_steps(state):  # the in-process warm-up's path
                step()
            assert _pages(client, key, rep) == copied


def _board_keys(state: AppState) -> list[tuple[Any, ...]]:
    from service.http.dashboard import _BOARD

    return [k for k, _ in _BOARD.items() if isinstance(k, tuple) and k[0] == state.name]


class _NoProcess:
    """A multiprocessing context whose processes cannot start."""

    def Pipe(self, duplex: bool = True) -> Any:  # noqa: N802 (multiprocessing's name)
        return multiprocessing.get_context("spawn").Pipe(duplex)

    def Process(self, **kwargs: Any) -> Any:  # noqa: N802
        class Refused:
            def start(self) -> None:
                raise OSError("no processes here")

        return Refused()


@pytest.mark.parametrize("how", ["fails", "cannot start"])
def test_without_the_process_the_rest_is_computed_here(tmp_path: Path, how: str,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    data = write_data_dir(generate(TINY, seed=SEED), tmp_path / "data")
    settings = settings_for(tmp_path, data, f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        if how == "cannot start":
            patch.setattr(warm_process, "_context", _NoProcess)
        state = build_state(settings, quiet_options(draws=500, warm_up=True))
        watcher = DataWatcher(state, every=0.0, warm_up=True, process=True)
        if how == "fails":  # the child finds other data than the service's: it refuses
            state.reload.fingerprint = ()
        try:
            watcher.start()
            _until(lambda: state.reload.warmed_more_in is not None)
        finally:
            watcher.stop()
            state.close()
    as_of = state.span().end + pd.Timedelta(days=1)
    assert watcher.copied == 0
    assert simulated(state, PREVIOUS, as_of)  # computed here
    assert any(k[3].startswith("deals None rep") and k[4] == PERIOD
               for k in _board_keys(state))  # the current period's nodes too
    said = ("the data changed since the service loaded it" if how == "fails"
            else "process could not start: no processes here")
    assert said in caplog.text
    _forget(state)
