"""Screenshots of the browser tests, attached to the test run.

The browser tests save their screenshots in one directory per run (the ``screenshots``
fixture): ``QUOTACAST_TEST_SCREENSHOTS`` when it is set (a CI run keeps that directory as its
artifact), else ``screenshots`` in pytest's temporary directory of the run (pytest keeps the
last three runs'). Each test's report carries the screenshots it took: a "screenshots" section
(printed with its outcome by ``-rA``, and beside a failure) and one ``screenshot`` property
each (in a ``--junitxml`` report); the run's summary names the directory and what each test
took.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SCREENSHOTS_ENV = "QUOTACAST_TEST_SCREENSHOTS"
_FOLDER = pytest.StashKey[Path]()
_TAKEN = pytest.StashKey[list[Path]]()
_RUN = pytest.StashKey[dict[str, list[Path]]]()


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> Path:
    """The run's screenshot directory."""
    chosen = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash[_FOLDER] = folder
    return folder


def _pictures(config: pytest.Config) -> dict[Path, float]:
    folder = config.stash.get(_FOLDER, None)
    if folder is None or not folder.is_dir():
        return {}
    return {path: path.stat().st_mtime for path in folder.glob("*.png")}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    before = _pictures(item.config)
    yield
    after = _pictures(item.config)
    taken = sorted(p for p, when in after.items() if before.get(p) != when)
    item.stash[_TAKEN] = taken
    item.user_properties.extend(("screenshot", str(path)) for path in taken)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    outcome: Any = yield
    taken = item.stash.get(_TAKEN, [])
    if call.when != "call" or not taken:
        return
    report = outcome.get_result()
    report.sections.append(("screenshots", "\n".join(str(path) for path in taken)))
    item.config.stash.setdefault(_RUN, {})[item.nodeid] = taken


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    run = config.stash.get(_RUN, {})
    if not run:
        return
    folder = config.stash[_FOLDER]
    total = sum(len(taken) for taken in run.values())
    terminalreporter.section("screenshots")
    terminalreporter.write_line(f"{total} screenshots in {folder}")
    for nodeid, taken in run.items():
        terminalreporter.write_line(f"{nodeid}: {', '.join(p.name for p in taken)}")
