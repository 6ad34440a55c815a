"""The simulation's worker threads step aside for a request when the draws are background work
(the warm-up's), and give the same draws to the last bit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from models.feasibility.simulation import set_part_wrapper, simulate_deals
from service.http.metrics import RequestMetrics, Yielding


@pytest.fixture(autouse=True)
def _as_is() -> Iterator[None]:
    yield
    set_part_wrapper(None)


def _deals(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 60
    return rng.uniform(0.05, 0.95, n), rng.uniform(100, 5000, n), rng.integers(0, 4, n)


def _draws() -> np.ndarray:
    p, amount, cell = _deals()
    # 2,000 draws of 60 deals in chunks of 10,000 numbers: 13 parts on two worker threads
    return simulate_deals(p, amount, cell, 4, 2000, seed=3, threads=2,
                          chunk_elements=10_000, clt_max_share=0)


class _Counted(Yielding):
    """A gate that remembers which threads paused; the thread that asked for the draws never
    pauses here (so that the workers reach theirs)."""

    def __init__(self, metrics: RequestMetrics) -> None:
        super().__init__(metrics, longest=0.02, grace=10.0, step=0.002)
        self.threads: set[str] = set()

    def _pause(self) -> None:
        if threading.current_thread().name == "background":
            return
        before = self.pauses
        super()._pause()
        if self.pauses > before:
            self.threads.add(threading.current_thread().name)


def _in_background(gate: Yielding, work: Callable[[], np.ndarray]) -> np.ndarray:
    out: list[np.ndarray] = []

    def run() -> None:
        gate.install()
        try:
            out.append(work())
        finally:
            gate.remove()

    thread = threading.Thread(target=run, name="background")
    thread.start()
    thread.join()
    return out[0]


def test_each_part_is_wrapped_on_the_asking_thread_and_run_on_a_worker() -> None:
    made: list[str] = []
    ran: list[str] = []

    def wrap(part: Callable[[], None]) -> Callable[[], None]:
        made.append(threading.current_thread().name)

        def run() -> None:
            ran.append(threading.current_thread().name)
            part()

        return run

    expected = _draws()
    set_part_wrapper(wrap)
    assert np.array_equal(_draws(), expected)  # bit-identical
    me = threading.current_thread().name
    assert len(made) == len(ran) == 13 and set(made) == {me} and me not in ran


def test_the_workers_of_background_draws_step_aside_while_a_request_is_answered() -> None:
    expected = _draws()
    set_part_wrapper(Yielding.inherit)
    metrics = RequestMetrics()
    metrics.begin()  # a request being answered meanwhile
    try:
        gate = _Counted(metrics)
        assert np.array_equal(_in_background(gate, _draws), expected)
    finally:
        metrics.end()
    assert gate.threads, "no worker thread stepped aside"

    # Draws a request asks for (no gate on its thread) never pause.
    metrics.begin()
    try:
        calm = _Counted(metrics)
        assert np.array_equal(_draws(), expected)
    finally:
        metrics.end()
    assert calm.pauses == 0
