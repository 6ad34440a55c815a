"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

A real uvicorn server on a free local port serves a generated small company with champions
trained through the pipelines and the default warning rules evaluated twice, 14 days apart (so
that rules with a ``for`` of up to 14 days can fire). The page is loaded as a planner and
as an account manager; a screenshot of each is saved in the run's screenshot directory and
attached to the test's report (``conftest.py``) for a person to look at.

CI needs ``apt-get install -y chromium`` and ``pip install playwright``; Playwright's own
browser download (``playwright install``) is not used.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI
from test_service_support import (
    Company,
    closed_port,
    fresh_registry,
    make_company,
    quiet_options,
    quiet_registry,
    settings_for,
)

from engine import tracking
from engine.schemas import ACCOUNT_MANAGER, CUSTOMER_ID
from service.http.app import create_app
from service.http.state import AppState
from service.usecases.churn import train_churn
from service.usecases.win import train_win

sync_api = pytest.importorskip("playwright.sync_api")
# The board's accessibility audit (test_board.py), on the dashboard's pages too.
AUDIT = (Path(__file__).parent / "audit.js").read_text(encoding="utf-8")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                       reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"),
]


@dataclass
class Site:
    url: str
    state: AppState
    company: Company
    planner: str
    manager: str
    shots: Path


def _train(uri: str, company: Company) -> None:
    tracking.configure(uri)
    churn = train_churn(company.tables, seed=3)
    tracking.promote("churn", churn.version, force=True)
    win = train_win(company.tables, snapshot_days=28)  # monthly snapshots: 4x faster
    tracking.promote("win", win.version, force=True)


@contextmanager
def _serving(app: FastAPI) -> Iterator[str]:
    """A real uvicorn server on a free local port, in a thread; yields its URL."""
    port = closed_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _evaluate_warnings(url: str, state: AppState) -> None:
    """Two evaluations 14 days apart, so rules needing a breach held that long can fire."""
    editor = state.keys.create("sales_ops")[1]
    assert state.data.end is not None
    for day in (state.data.end - pd.Timedelta(days=14), state.data.end):
        evaluated = httpx.post(f"{url}/v1/warnings/evaluate", json={"as_of": str(day.date())},
                               headers={"X-API-Key": editor}, timeout=120)
        assert evaluated.status_code == 200, evaluated.text


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, screenshots: Path) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("dashboard")
    company = make_company(root)
    uri = fresh_registry(root)
    _train(uri, company)
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        app = create_app(settings_for(root, company.data, uri), quiet_options(draws=5000))
        with _serving(app) as url:
            state: AppState = app.state.quotacast
            _evaluate_warnings(url, state)
            yield Site(url, state, company, state.keys.create("planner")[1],
                       state.keys.create("account_manager", company.manager)[1],
                       screenshots)


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=ARGS, viewport={"width": 1200, "height": 900})
        try:
            yield context
        finally:
            context.close()


def test_planner_sees_feasibility_warnings_and_customers(site: Site,
                                                         browser_context: object) -> None:
    context = browser_context
    page = context.new_page()  # type: ignore[attr-defined]
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    response = page.goto(f"{site.url}/?key={site.planner}")
    assert response is not None and response.ok
    assert page.url == f"{site.url}/"  # the key left the address bar
    # The security headers hold and the page still renders under its CSP: the inline styles
    # apply (the legend's swatches are coloured) and the browser reports no violation.
    headers = response.all_headers()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    swatch = page.locator(".legend span").first.evaluate(
        "s => getComputedStyle(s).backgroundColor")
    assert swatch == "rgb(191, 219, 254)"  # #bfdbfe
    cookie = next(c for c in context.cookies() if c["name"] == "quotacast_key")  # type: ignore[attr-defined]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the key

    feasibility = page.locator("#feasibility")
    assert "Feasibility of the 2026Q4 targets" in feasibility.locator("h2").inner_text()
    chart = feasibility.locator("svg.chart")
    assert chart.is_visible() and chart.locator("line.target-line").count() == 1
    rows = feasibility.locator("#feasibility-table tbody tr")
    assert rows.count() >= 3
    assert rows.first.get_attribute("data-level") == "company"
    assert "%" in rows.first.locator("td").nth(4).inner_text()

    loud = page.locator("#warnings > .alert")  # muted ones are folded in a <details>
    assert loud.count() >= 1
    assert loud.first.locator(".why").first.inner_text().strip()  # the explanation
    assert loud.first.locator("i").count() == 0  # neither silenced nor inhibited

    customers = page.locator("#at-risk-table tbody tr")
    assert customers.count() == 20
    problems = page.evaluate(AUDIT)  # labels, captions, contrast: as on the board
    assert problems == [], problems
    shot = site.shots / "dashboard-planner.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert not [m for m in console if "Content Security Policy" in m], console


def test_account_manager_sees_only_their_customers(site: Site, browser_context: object) -> None:
    page = browser_context.new_page()  # type: ignore[attr-defined]
    page.goto(f"{site.url}/?key={site.manager}")
    assert page.locator("#feasibility").count() == 0
    assert page.locator("#warnings").count() == 0
    heading = page.locator("#at-risk h2").inner_text()
    assert heading == "My customers at risk"
    customers = site.company.tables.customers
    mine = set(customers.loc[customers[ACCOUNT_MANAGER] == site.company.manager,
                             CUSTOMER_ID])
    shown = page.locator("#at-risk-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.customer)")
    assert shown and set(shown) <= mine
    assert site.company.manager in page.locator("header .who").inner_text()
    problems = page.evaluate(AUDIT)
    assert problems == [], problems
    shot = site.shots / "dashboard-account-manager.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")


def test_a_bad_key_gets_the_sign_in_form(site: Site, browser_context: object) -> None:
    page = browser_context.new_page()  # type: ignore[attr-defined]
    response = page.goto(f"{site.url}/?key=qk_00000000_{'x' * 43}")
    assert response is not None and response.status == 401
    problems = page.evaluate(AUDIT)
    assert problems == [], problems
    assert page.locator("#signin").is_visible()
    assert "not valid" in page.locator("#signin .problem").inner_text()


def test_planner_picks_a_scenario_in_the_form(site: Site, browser_context: object) -> None:
    page = browser_context.new_page()  # type: ignore[attr-defined]
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{site.url}/?key={site.planner}")
    assert page.locator("#scenario-table").count() == 0  # nothing picked yet
    page.locator("#scenario-form select").select_option("budget-freeze")
    page.locator("#scenario-form button").click()  # a plain GET form: no script
    page.wait_for_url(f"{site.url}/?scenario=budget-freeze")
    section = page.locator("#scenario")
    assert section.locator("h2").inner_text() == "Scenario: budget freeze"
    rows = section.locator("#scenario-table tbody tr")
    assert 1 <= rows.count() <= 15 and rows.first.get_attribute("data-level") == "company"
    assert "%" in rows.first.locator("td").nth(7).inner_text()
    assert section.locator("#scenario-notes li").count() >= 1
    shot = site.shots / "dashboard-scenario.png"
    section.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert not [m for m in console if "Content Security Policy" in m], console
    manager = browser_context.new_page()  # type: ignore[attr-defined]
    manager.goto(f"{site.url}/?key={site.manager}&scenario=budget-freeze")
    assert manager.locator("#scenario").count() == 0
