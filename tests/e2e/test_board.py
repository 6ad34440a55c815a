"""The board in a real browser, as each role: headless Chromium (Debian's) driven by Playwright.

A real uvicorn server (the launcher of ``test_dashboard.py``) serves the small demo company with
stub win and churn champions (in a registry); before it starts, the command ``quotacast warnings
evaluate`` runs at two dates a week apart on its database, so every node has two weekly
snapshots. Each role then walks the board: open it, drill from the company
to a rep (by the links of the children tables), change the period with the picker, open the
deals behind a gap, submit a commit and read it beside its probability, and read the trend; a
planner does the same on a product and on a segment (nodes no target names, simulated beside the
hierarchy, whose trend the evaluations fill too). An account manager starts on their own rep and
is refused everyone else's node, products and segments included. A screenshot
of every step is saved in the run's screenshot directory and attached to the test's report
(``conftest.py``: ``QUOTACAST_TEST_SCREENSHOTS``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_dashboard import ARGS, CHROMIUM, _serving
from test_service_support import (
    Company,
    quiet_options,
    settings_for,
    stubbed_service,
)
from typer.testing import CliRunner

from engine.schemas import OPPORTUNITIES, OPPORTUNITY_ID, OWNER
from service.cli.app import app as cli
from service.http.app import create_app
from service.http.state import AppState

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                       reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"),
]

EVALUATED = ("2026-11-09", "2026-11-16")  # a week apart, the second the data's as-of
# The walk reads the board, not the warnings: one rule whose metric is the period's feasibility
# (which writes the snapshots the trend draws), so each `warnings evaluate` computes that and
# not every metric of the default pack (half its time here).
# Enough draws for every probability the walk reads (P(attain), the drop if a deal is lost,
# P(reach) of a commit); each simulation is quicker than with the service tests' 2,000.
DRAWS = 500
RULES = """
groups:
  - name: plan
    rules:
      - alert: AttainmentProbabilityLow
        metric: attainment_probability
        scope: [company, region]
        op: "<"
        threshold: 0.4
"""


@dataclass
class Site:
    url: str
    state: AppState
    company: Company
    keys: dict[str, str]
    shots: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, screenshots: Path) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("board")
    (root / "rules.yaml").write_text(RULES, encoding="utf-8")
    # Stub churn and win champions in a fresh registry, served by the command and the service.
    with stubbed_service(root) as (company, uri, _patch):
        settings = settings_for(root, company.data, uri)
        # The two weekly snapshots come from the command a sales team schedules, on the
        # service's database and data (its settings), before the service starts (as a cron
        # job would have).
        env = {"QUOTACAST_DATABASE_URL": settings.database_url,
               "QUOTACAST_MLFLOW_TRACKING_URI": uri, "QUOTACAST_DATA": str(company.data)}
        for day in EVALUATED:
            done = CliRunner().invoke(cli, [
                "warnings", "evaluate", "--data", str(company.data), "--rules",
                str(root / "rules.yaml"), "--as-of", day, "--no-deliver"], env=env)
            assert done.exit_code == 0, done.stdout + done.stderr
        app = create_app(settings, quiet_options(rules=str(root / "rules.yaml"), draws=DRAWS))
        with _serving(app) as url:
            state: AppState = app.state.quotacast
            assert {"churn", "win"} <= set(state.models), state.model_problems
            keys = {role: state.keys.create(role)[1]
                    for role in ("admin", "planner", "sales_ops")}
            keys["account_manager"] = state.keys.create("account_manager", company.manager)[1]
            yield Site(url, state, company, keys, screenshots)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Walk:
    """One role's page, with a numbered screenshot per step."""

    def __init__(self, site: Site, browser: object, role: str, name: str | None = None):
        self.site, self.role, self.step, self.name = site, role, 0, name or role
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda message: self.console.append(message.text))

    def shot(self, name: str, section: str | None = None) -> Path:
        """The window (scrolled to ``section`` when given); the whole page is slower to
        render and the steps are what a person looks at."""
        self.step += 1
        path = self.site.shots / f"board-{self.name}-{self.step:02d}-{name}.png"
        if section is not None:
            self.page.locator(section).scroll_into_view_if_needed()
        self.page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path

    def open(self) -> None:
        response = self.page.goto(f"{self.site.url}/board?key={self.site.keys[self.role]}")
        assert response is not None and response.ok
        assert self.page.url == f"{self.site.url}/board"  # the key left the address bar

    def close(self) -> None:
        assert not [m for m in self.console if "Content Security Policy" in m], self.console
        self.context.close()


def _node_title(walk: Walk) -> str:
    return walk.page.locator("#node-title").inner_text()


def _commit_and_read(walk: Walk, amount: str) -> str:
    """Submit a commit for the node on screen; the row of the saved call, as text."""
    form = walk.page.locator("#commit-form")
    form.locator("select[name=category]").select_option("commit")
    form.locator("input[name=amount]").fill(amount)
    form.locator("input[name=note]").fill(f"{walk.role}'s call")
    form.locator("button[type=submit]").click()
    walk.page.wait_for_load_state()
    if walk.page.locator("#commit-saved").count() == 0:
        walk.shot("commit-refused")
        raise AssertionError(walk.page.content()[:3000])
    saved = walk.page.locator("#commit-saved").inner_text()
    assert "Saved: commit of" in saved and "probability of reaching it" in saved
    assert re.search(r"\d+%\.$", saved.strip()), saved
    node = walk.page.locator("#commit-form input[name=node]").get_attribute("value")
    row = walk.page.locator(f'#commits-table tr[data-key="{node}"][data-category="commit"]')
    assert row.count() == 1
    assert row.locator("td.p-reach").inner_text().strip().endswith("%")
    return row.inner_text()


def _trend(walk: Walk) -> None:
    trend = walk.page.locator("#trend")
    trend.scroll_into_view_if_needed()
    assert trend.locator("svg.trend").is_visible()
    dates = trend.locator("#trend-table tbody tr td:first-child").all_inner_texts()
    assert set(EVALUATED) <= set(dates), dates


@pytest.mark.parametrize("role", ["planner", "sales_ops", "admin"])
def test_a_planning_role_walks_the_board(site: Site, browser: object, role: str) -> None:
    walk = Walk(site, browser, role)
    walk.open()
    assert _node_title(walk).startswith("company: 2026Q4 as of 2026-11-16")
    walk.shot("company")
    for level in ("region", "team", "rep"):  # drill down by the first child's link
        link = walk.page.locator(f'table.children[data-level="{level}"] tbody tr td:first-child a')
        name = link.first.inner_text()
        link.first.click()
        walk.page.wait_for_load_state()
        assert _node_title(walk).startswith(f"{level} {name}: 2026Q4")
        crumbs = walk.page.locator("#breadcrumb li").all_inner_texts()
        assert crumbs[0] == "company" and crumbs[-1] == f"{level} {name}"
        walk.shot(level)
    walk.page.locator("#breadcrumb a").first.click()  # back to the company
    walk.page.wait_for_load_state()
    walk.page.locator("#period-select").select_option("2026Q3")
    walk.page.locator("#picker button[type=submit]").click()
    walk.page.wait_for_load_state()
    assert _node_title(walk).startswith("company: 2026Q3")
    assert "2026Q3 ended on 2026-09-30" in walk.page.locator("#period-notice").inner_text()
    walk.shot("period-2026Q3")
    walk.page.goto(f"{site.url}/board")  # back to the current period
    walk.page.locator("a.deals-link").first.click()  # the largest gap's deals
    walk.page.wait_for_load_state()
    assert walk.page.url.endswith("#deals")
    deals = walk.page.locator("#deals-table tbody tr")
    assert deals.count() >= 1
    drops = [float(t.rstrip("%")) for t in
             deals.locator("td:last-child").all_inner_texts()]
    assert drops == sorted(drops, reverse=True)
    walk.shot("deals", "#deals")
    row = _commit_and_read(walk, "2500000")
    assert "2.5M" in row
    walk.shot("commit", "#commits")
    walk.page.goto(f"{site.url}/board")
    _trend(walk)
    walk.shot("trend", "#trend")
    walk.close()


def _amount(text: str) -> float:
    """An amount as the board prints it (``3.56M``, ``40.3k``, ``950``)."""
    text = text.strip().replace(",", "")
    scale = {"k": 1e3, "M": 1e6, "B": 1e9}.get(text[-1:], 1.0)
    return float(text.rstrip("kMB")) * scale


def _dimension_link(walk: Walk, level: str) -> object:
    """The company board's links to the ``level`` nodes (a product, segment... no target names),
    once their simulation is done (the page says when it is still running: reload)."""
    for _ in range(20):
        links = walk.page.locator(
            f'#dimensions table.children[data-level="{level}"] tbody tr td:first-child a')
        if links.count():
            return links
        walk.page.wait_for_timeout(500)
        walk.page.reload()
    raise AssertionError(walk.page.locator("#dimensions").inner_text())


@pytest.mark.parametrize("level", ["product", "segment"])
def test_a_planner_walks_onto_a_product_and_a_segment(site: Site, browser: object,
                                                      level: str) -> None:
    walk = Walk(site, browser, "planner", f"planner-{level}")
    walk.open()
    links = _dimension_link(walk, level)
    name = links.first.inner_text()  # type: ignore[attr-defined]
    walk.shot(f"company-by-{level}", "#dimensions")
    links.first.click()  # type: ignore[attr-defined]
    walk.page.wait_for_load_state()
    node_url = walk.page.url
    assert _node_title(walk).startswith(f"{level} {name}: 2026Q4 as of 2026-11-16")
    crumbs = walk.page.locator("#breadcrumb li").all_inner_texts()
    assert crumbs[0] == "company" and crumbs[-1] == f"{level} {name}"
    assert walk.page.locator("#node svg.fan").is_visible()
    assert "no target" in walk.page.locator("#node-numbers").inner_text()
    walk.shot(level)
    # Its deals: no target, so sorted by the drop of its expected total if lost.
    walk.page.locator("#deals").scroll_into_view_if_needed()
    assert "expected total drop if lost" in walk.page.locator("#deals").inner_text()
    deals = walk.page.locator("#deals-table tbody tr")
    assert deals.count() >= 1
    walk.shot("deals", "#deals")
    # A commit of its median, beside the probability of reaching it: from the draws of its
    # fan, so about even.
    median = _amount(walk.page.locator("#node-numbers tr", has_text="median").locator(
        "td").inner_text())
    row = _commit_and_read(walk, f"{median:.0f}")
    assert f"{level} {name}" in row
    reach = walk.page.locator(f'#commits-table tr[data-level="{level}"] td.p-reach').inner_text()
    assert 0.2 <= float(reach.strip().rstrip("%")) / 100 <= 0.8, reach
    walk.shot("commit", "#commits")
    # Its trend: the snapshots the two `warnings evaluate` runs left of it (the latest one
    # the service's own simulation of the as-of replaces), and what changed.
    walk.page.goto(node_url)
    _trend(walk)
    points = dict(zip(*(walk.page.locator(f"#trend-table tbody tr td:{cell}").all_inner_texts()
                        for cell in ("first-child", "last-child")), strict=True))
    assert points[EVALUATED[0]] == "warnings", points
    assert "What changed from 2026-11-09 to 2026-11-16" in walk.page.locator(
        "#changes-title").inner_text()
    assert walk.page.locator("#changes-table tbody tr").count() == 5  # 4 groups and other
    walk.shot("trend", "#trend")
    walk.close()


def _nothing_of_others(walk: Walk, where: str) -> None:
    """The page names no rep but the account manager, no team or region, and lists no deal,
    customer or commit of anyone else."""
    me = walk.site.company.manager
    org = walk.site.company.tables["org"]
    text = walk.page.content()
    named = [name for name in {*org["rep"], *org["team"], *org["region"]} - {me}
             if re.search(rf"\b{re.escape(str(name))}\b", text)]
    assert named == [], (where, named)
    opps = walk.site.company.tables[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    managed = walk.site.company.tables.customers.set_index("customer_id")["account_manager"]
    listed = walk.page.locator("[data-deal], [data-customer], [data-rep], [data-key]").evaluate_all(
        "rows => rows.map(r => [r.dataset.deal, r.dataset.customer, r.dataset.rep, r.dataset.key])")
    for deal, customer, rep, key in listed:
        assert deal is None or opps.loc[deal, OWNER] == me, (where, deal)
        assert customer is None or managed[customer] == me, (where, customer)
        assert rep in (None, me) and key in (None, me), (where, rep, key)


def test_an_account_manager_walks_their_own_board_only(site: Site, browser: object) -> None:
    walk = Walk(site, browser, "account_manager")
    me, other = site.company.manager, site.company.other_manager
    walk.open()
    assert _node_title(walk).startswith(f"rep {me}: 2026Q4")
    assert walk.page.locator("#breadcrumb li").all_inner_texts() == [f"rep {me}"]
    assert walk.page.locator("#children, #scenario, #recalibration").count() == 0
    walk.shot("my-rep")
    _nothing_of_others(walk, "my-rep")
    opps = site.company.tables[OPPORTUNITIES]
    product = str(opps["product"].value_counts().index[0])
    segment = str(site.company.tables.customers["segment"].value_counts().index[0])
    for level, node in (("region", "North"), ("rep", other), ("company", "all"),
                        ("product", product), ("segment", segment)):
        response = walk.page.goto(f"{site.url}/board?level={level}&node={node}")
        assert response is not None and response.status == 403
        assert "not yours" in walk.page.locator("#not-yours").inner_text()
        assert other not in walk.page.content() or level == "rep"
        assert walk.page.locator("#node, #deals, #commits, #trend").count() == 0
    walk.shot("not-yours")
    walk.page.goto(f"{site.url}/board")
    walk.page.locator("#period-select").select_option("2026Q3")
    walk.page.locator("#picker button[type=submit]").click()
    walk.page.wait_for_load_state()
    assert _node_title(walk).startswith(f"rep {me}: 2026Q3")
    walk.shot("period-2026Q3")
    _nothing_of_others(walk, "period-2026Q3")
    walk.page.goto(f"{site.url}/board#deals")
    opps = site.company.tables[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    shown = walk.page.locator("#deals-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.deal)")
    assert shown and {opps.loc[d, OWNER] for d in shown} == {me}
    walk.shot("deals", "#deals")
    _nothing_of_others(walk, "deals")
    row = _commit_and_read(walk, "900000")
    assert "900k" in row
    assert walk.page.locator("#commits-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.key)") == [me] * walk.page.locator(
        "#commits-table tbody tr").count()
    walk.shot("commit", "#commits")
    _nothing_of_others(walk, "commit")
    walk.page.goto(f"{site.url}/board")
    _trend(walk)
    customers = walk.page.locator("#at-risk-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.customer)")
    managed = site.company.tables.customers.set_index("customer_id")["account_manager"]
    assert customers and {managed[c] for c in customers} == {me}
    walk.shot("trend", "#trend")
    _nothing_of_others(walk, "trend")
    walk.close()


# What a person with a screen reader, or without a mouse, or with low vision needs of a page,
# checked in the browser on the rendered page (its computed styles): every control and link has
# a name, every chart a role and a label, every table a caption or a label; and every visible
# text's contrast with what is behind it is at least WCAG AA's 4.5:1 (3:1 for large text),
# the colours blended through any translucent background or opacity on the way up.
_AUDIT = (Path(__file__).parent / "audit.js").read_text(encoding="utf-8")


def _audit(walk: Walk, where: str) -> None:
    problems = walk.page.evaluate(_AUDIT)
    assert problems == [], (where, problems)


def _tab_to(walk: Walk, selector: str, limit: int = 250) -> list[str]:
    """Press Tab until ``selector`` has the focus (the names of what was focused on the way);
    each focused element shows a visible focus outline."""
    passed: list[str] = []
    for _ in range(limit):
        walk.page.keyboard.press("Tab")
        found = walk.page.evaluate(
            """(selector) => {
                 const el = document.activeElement;
                 const s = getComputedStyle(el);
                 return {hit: el.matches(selector), tag: el.tagName.toLowerCase(),
                         id: el.id, text: (el.textContent || '').trim().slice(0, 40),
                         outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2,
                         style: [s.outlineStyle, s.outlineWidth, s.outlineColor].join(' ')};
               }""", selector)
        passed.append(found["id"] or f"{found['tag']}:{found['text']}")
        assert found["outline"], f"no visible focus on {passed[-1]}: {found['style']}"
        if found["hit"]:
            return passed
    raise AssertionError(f"{selector} was never reached by Tab: {passed[:40]}")


def test_the_board_is_labelled_contrasted_and_usable_from_the_keyboard(site: Site,
                                                                        browser: object) -> None:
    """Every page kind of the walk passes the audit above, as a planner (with a scenario and
    the recalibration) and as an account manager; and a planner without a mouse changes the
    period, drills down and submits a commit with the keyboard only."""
    walk = Walk(site, browser, "planner", "planner-keyboard")
    walk.open()
    _audit(walk, "company")
    region = walk.page.locator('table.children[data-level="region"] tbody tr td:first-child a')
    region.first.click()
    walk.page.wait_for_load_state()
    _audit(walk, "region")
    walk.page.goto(f"{site.url}/board?scenario=budget-freeze&method=proportional_p50")
    assert walk.page.locator("#scenario-table").count() == 1
    assert walk.page.locator("#recalibration-table").count() == 1
    _audit(walk, "scenario and recalibration")
    walk.page.goto(f"{site.url}/board?period=2027Q1")
    _audit(walk, "a period after the as-of")
    # The keyboard only, from the top of the company page.
    walk.page.goto(f"{site.url}/board")
    first = _tab_to(walk, "a.skip", limit=1)
    assert first == ["a:Skip to the content"]
    _tab_to(walk, "#period-select")
    before = walk.page.evaluate(
        "(() => { const s = document.activeElement; "
        "return s.options[s.selectedIndex - 1].value; })()")
    walk.page.keyboard.press("ArrowUp")  # the period listed before the current one
    _tab_to(walk, "#picker button[type=submit]")
    walk.page.keyboard.press("Enter")
    walk.page.wait_for_load_state()
    assert _node_title(walk).startswith(f"company: {before} as of 2026-11-16")
    walk.page.goto(f"{site.url}/board")
    _tab_to(walk, 'table.children[data-level="region"] tbody tr td:first-child a')
    name = walk.page.evaluate("document.activeElement.textContent.trim()")
    walk.page.keyboard.press("Enter")
    walk.page.wait_for_load_state()
    assert _node_title(walk).startswith(f"region {name}: 2026Q4")
    _tab_to(walk, "#commit-amount")
    walk.page.keyboard.type("1234567")
    walk.page.keyboard.press("Enter")
    walk.page.wait_for_load_state()
    saved = walk.page.locator("#commit-saved").inner_text()
    assert "Saved: commit of 1.23M" in saved, saved
    _audit(walk, "a saved commit")
    walk.shot("keyboard-commit", "#commits")
    walk.close()
    manager = Walk(site, browser, "account_manager", "account_manager-audit")
    manager.open()
    _audit(manager, "an account manager's rep")
    manager.page.goto(f"{site.url}/board?level=region&node=North")
    _audit(manager, "not yours")
    manager.close()
