"""The board pages over a real app (the small demo company, stub win and churn champions):
drill-down, the period and as-of picker, the deals behind the gap, scenario, recalibration,
trend and commits, and an account manager who never sees another's data on any of them."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    Company,
    company_frames,
    quiet_options,
    settings_for,
    stubbed_service,
)

from engine.io import load_tables, write_data_dir
from engine.schemas import ORDER_DATE, REP
from features.hierarchy import rep_hierarchy
from service.http.app import create_app
from service.http.dashboard import _resolve_picker
from service.http.state import AppState
from service.usecases.request import DataSpan

_ROW = re.compile(r'<tr data-level="([^"]*)" data-key="([^"]*)"[^>]*>(.*?)</tr>', re.S)
_CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


@dataclass
class World:
    client: TestClient
    company: Company
    state: AppState
    keys: dict[str, str]

    def board(self, who: str, expect: int = 200, **params: str) -> str:
        response = self.client.get("/board", headers={"X-API-Key": self.keys[who]},
                                   params=params or None)
        assert response.status_code == expect, response.text[-2000:]
        return response.text

    def commit(self, who: str, expect: int = 200, **form: str) -> str:
        response = self.client.post("/board/commit", headers={"X-API-Key": self.keys[who]},
                                    data=form)
        assert response.status_code == expect, response.text[-2000:]
        return response.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("board")
    with stubbed_service(root) as (company, uri, _patch):
        app = create_app(settings_for(root, company.data, uri), quiet_options())
        with TestClient(app) as client:
            state: AppState = app.state.quotacast
            keys = {"planner": state.keys.create("planner")[1],
                    "sales_ops": state.keys.create("sales_ops")[1],
                    "manager": state.keys.create("account_manager", company.manager)[1]}
            yield World(client, company, state, keys)


def _section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}"')
    return page[start:page.index("</section>", start)]


def _rows(section: str) -> list[tuple[str, str, list[str]]]:
    return [(html.unescape(level), html.unescape(key),
             [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in _CELL.findall(body)])
            for level, key, body in _ROW.findall(section)]


def _amount(text: str) -> float:
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}
    return float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text)


def test_the_company_page_ranks_its_regions_by_gap_and_links_each(world: World) -> None:
    page = world.board("planner")
    assert '<span aria-current="page">company</span>' in page
    node = _section(page, "node")
    assert 'class="chart fan"' in node and "target-line" in node
    assert re.search(r'aria-label="company, 2026Q4 as of 2026-11-16: closed', node)
    children = _rows(_section(page, "children"))
    regions = [(k, cells) for level, k, cells in children if level == "region"]
    assert len(regions) >= 2
    gaps = [_amount(cells[5]) for _, cells in regions if cells[2] != "n/a"]
    assert gaps == sorted(gaps, reverse=True)
    first = regions[0][0]
    assert f'href="/board?period=2026Q4&amp;as_of=2026-11-16&amp;level=region&amp;node={first}"' \
        in page


def test_drill_from_the_company_to_a_rep(world: World) -> None:
    hierarchy = rep_hierarchy(world.company.tables)
    rep = hierarchy[hierarchy[REP] == world.company.manager].iloc[0]
    for level, key in (("region", rep["region"]), ("team", rep["team"]),
                       ("rep", rep["rep"])):
        page = world.board("planner", level=level, node=key)
        crumbs = re.findall(r"<li>(.*?)</li>", _section_nav(page), re.S)
        assert html.unescape(re.sub(r"<[^>]+>", "", crumbs[-1])).strip() == f"{level} {key}"
        assert len(crumbs) == {"region": 2, "team": 3, "rep": 4}[level]
    assert 'id="children"' not in page  # a rep has no children
    deals = _section(page, "deals")
    reps = set(re.findall(r'data-rep="([^"]*)"', deals))
    assert reps == {world.company.manager}


def _section_nav(page: str) -> str:
    start = page.index('<nav id="breadcrumb"')
    return page[start:page.index("</nav>", start)]


def test_the_picker_changes_the_period_and_says_why_a_period_looks_empty(world: World
                                                                        ) -> None:
    page = world.board("planner", period="2026Q3")
    assert "2026Q3 ended on 2026-09-30" in page
    assert '<option value="2026Q3" selected>' in page
    ahead = world.board("planner", period="2027Q1")
    assert "2027Q1 starts on 2027-01-01, after the as-of 2026-11-16" in ahead
    earlier = world.board("planner", as_of="2026-10-20")
    assert "company: 2026Q4 as of 2026-10-20" in earlier
    outside = world.board("planner", expect=404, as_of="2001-01-01")
    assert "outside the data" in outside and "Traceback" not in outside
    assert "expected an ISO date" in world.board("planner", expect=400, as_of="yesterday")


def test_odd_parameters_are_plain_messages_never_a_traceback(world: World) -> None:
    long = "x" * 5000
    for params, code, said in (({"period": long}, 400, "period must look like"),
                               ({"level": "region", "node": long}, 404, "No node region"),
                               ({"level": "team"}, 404, "Give the team too"),
                               ({"as_of": "2026-02-30"}, 400, "expected an ISO date")):
        page = world.board("planner", expect=code, **params)
        assert said in html.unescape(page) and "Traceback" not in page
        assert len(page) < 20_000  # the odd text is not echoed whole
    refused = world.board("manager", expect=403, level=long, node=long)
    assert "not yours" in refused and len(refused) < 20_000


def test_a_period_without_revenue_yet_opens_on_the_last_one_with_revenue(tmp_path: Path
                                                                         ) -> None:
    frames = dict(company_frames())
    orders = frames["orders"]
    frames["orders"] = orders[pd.to_datetime(orders[ORDER_DATE]) < "2026-09-20"]
    tables = load_tables(str(write_data_dir(frames, tmp_path / "data")))

    class Data:  # what the picker reads of the served state
        name, models = "cut", {}
        data = type("Source", (), {"source": str(tmp_path / "data")})
        settings = type("Settings", (), {"database_url": None})

        def tables(self) -> object:
            return tables

        def span(self) -> DataSpan:
            return DataSpan.of(tables)

    span = DataSpan.of(tables)
    assert span.end > pd.Timestamp("2026-10-01")  # deals go on after the orders stop
    picker = _resolve_picker(Data(), None, None)  # type: ignore[arg-type]
    assert picker.period == "2026Q3"
    assert picker.notice is not None and "2026Q4" in picker.notice
    assert "ends on 2026-09-19" in picker.notice
    asked = _resolve_picker(Data(), "2026Q4", None)  # type: ignore[arg-type]
    assert asked.period == "2026Q4" and asked.notice_link == "2026Q3"
    assert "No revenue is dated in 2026Q4" in (asked.notice or "")


def test_the_deals_behind_the_gap_are_the_apis(world: World) -> None:
    page = world.board("planner", level="region", node="North")
    deals = _section(page, "deals")
    shown = re.findall(r'data-deal="([^"]*)"', deals)
    api = world.client.get("/v1/deals", headers={"X-API-Key": world.keys["planner"]},
                           params={"level": "region", "key": "North", "limit": "25"}).json()
    assert shown == [d["opportunity_id"] for d in api["deals"]]
    assert "P(attain) drop if lost" in deals and 'id="stages-table"' in deals


def test_scenario_and_recalibration_of_the_children(world: World) -> None:
    page = world.board("planner", level="region", node="North", scenario="budget-freeze")
    scenario = _section(page, "scenario")
    assert 'class="chart pairs"' in scenario
    rows = _rows(scenario)
    assert rows[0][:2] == ("region", "North")
    assert {level for level, _, _ in rows[1:]} == {"team"}
    recal = _rows(_section(page, "recalibration"))
    assert recal and {level for level, _, _ in recal} == {"team"}
    teams = [key for level, key, _ in _rows(_section(page, "children")) if level == "team"]
    assert {key for _, key, _ in recal} <= set(teams)
    unknown = world.board("planner", scenario="no-such-thing")
    assert "There is no ready scenario named 'no-such-thing'" in html.unescape(unknown)


def test_a_commit_is_shown_beside_its_probability(world: World) -> None:
    page = world.commit("planner", period="2026Q4", as_of="2026-11-16", level="region",
                        node="North", category="commit", amount="3000000", note="call")
    assert "Saved: commit of 3M for region North in 2026Q4" in page
    rows = _rows(_section(page, "commits"))
    mine = [cells for level, key, cells in rows if (level, key) == ("region", "North")]
    assert mine and mine[-1][2] == "3M" and mine[-1][3].endswith("%")
    bad = world.commit("planner", expect=400, period="2026Q4", level="region", node="North",
                       amount="lots")
    assert "is not a number" in bad


def test_a_commit_form_of_another_site_is_refused(world: World) -> None:
    form = {"period": "2026Q4", "level": "region", "node": "North", "amount": "1"}
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        response = world.client.post("/board/commit", data=form,
                                     headers={"X-API-Key": world.keys["planner"], **headers})
        assert response.status_code == 403
    history = world.client.get("/v1/commits", params={"level": "region", "key": "North"},
                               headers={"X-API-Key": world.keys["planner"]}).json()["history"]
    assert all(h["amount"] != 1 for h in history)


def test_the_trend_has_a_point_per_week_computed(world: World) -> None:
    # Each feasibility the service computes is a snapshot (so is each warnings evaluate,
    # which the browser walk uses): the board as of a week earlier writes one.
    world.board("planner", as_of="2026-11-09")
    page = world.board("planner")
    trend = _section(page, "trend")
    assert 'class="chart trend"' in trend
    dates = re.findall(r"<tr><td>(\d{4}-\d\d-\d\d)</td>", trend)
    assert {"2026-11-09", "2026-11-16"} <= set(dates) and dates == sorted(dates)
    earlier = _section(world.board("planner", as_of="2026-11-09"), "trend")
    assert "2026-11-16" not in earlier  # point in time: nothing after the as-of


def test_an_account_manager_never_sees_another_node(world: World) -> None:
    me, other = world.company.manager, world.company.other_manager
    page = world.board("manager")
    assert f"rep {me}: 2026Q4" in page
    assert ">company<" not in _section_nav(page)  # no company numbers above the rep
    assert 'id="scenario"' not in page and 'id="recalibration"' not in page
    assert set(re.findall(r'data-rep="([^"]*)"', page)) <= {me}
    assert other not in page
    assert 'id="at-risk-table"' in page
    for params in ({"level": "region", "node": "North"}, {"level": "company", "node": "all"},
                   {"level": "rep", "node": other}, {"level": "team", "node": "North A"}):
        refused = world.board("manager", expect=403, **params)
        assert "not yours" in refused and "deals-table" not in refused
        assert 'id="node"' not in refused
    refused = world.commit("manager", expect=403, period="2026Q4", level="rep", node=other,
                           amount="1000")
    assert "not yours" in refused
    mine = world.commit("manager", level="rep", node=me, amount="1000000",
                        category="best_case")
    assert f"best case of 1M for rep {me}" in mine
    assert {key for _, key, _ in _rows(_section(mine, "commits"))} == {me}


def test_sign_in_keeps_the_board_address(world: World) -> None:
    response = world.client.get("/board", params={"key": world.keys["planner"],
                                                  "level": "region", "node": "North"},
                                follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/board?level=region&node=North"
    cookie = world.client.cookies
    try:
        page = world.client.get("/board?level=region&node=North")  # signed in by the cookie
        assert page.status_code == 200 and "region North: 2026Q4" in page.text
    finally:
        cookie.clear()
    assert world.client.get("/board").status_code == 401  # the sign-in form again
