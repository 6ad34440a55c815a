"""The dashboard's scenario section over a real app: a ready scenario picked on the page shows
the numbers ``POST /v1/scenario`` answers, an unknown name a plain message, and an account
manager never sees it."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    quiet_options,
    settings_for,
    stubbed_service,
)

from service.http.app import create_app
from service.http.dashboard import SCENARIO_ROWS, money, percent, signed_change
from service.http.state import AppState

_ROW = re.compile(r'<tr data-level="([^"]*)" data-key="([^"]*)">(.*?)</tr>', re.S)
_CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


@dataclass
class World:
    client: TestClient
    keys: dict[str, str]

    def page(self, who: str, **params: str) -> str:
        response = self.client.get("/", headers={"X-API-Key": self.keys[who]},
                                   params=params or None)
        assert response.status_code == 200
        return response.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("dashboard-scenario")
    with stubbed_service(root) as (company, uri, _patch):
        app = create_app(settings_for(root, company.data, uri), quiet_options())
        with TestClient(app) as client:
            state: AppState = app.state.quotacast
            keys = {"planner": state.keys.create("planner")[1],
                    "account_manager": state.keys.create("account_manager", company.manager)[1]}
            yield World(client, keys)


def _section(page: str) -> str:
    start = page.index('<section id="scenario">')
    return page[start:page.index("</section>", start)]


def _rows(section: str) -> dict[tuple[str, str], list[str]]:
    return {(html.unescape(level), html.unescape(key)):
            [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in _CELL.findall(body)]
            for level, key, body in _ROW.findall(section)}


def test_no_scenario_picked_shows_the_picker_only(world: World) -> None:
    section = _section(world.page("planner"))
    assert 'name="scenario"' in section and 'value="budget-freeze"' in section
    assert "Scenario:" not in section and "scenario-table" not in section


def test_picked_scenario_shows_the_numbers_of_the_api(world: World) -> None:
    section = _section(world.page("planner", scenario="budget-freeze"))
    answer = world.client.post("/v1/scenario", headers={"X-API-Key": world.keys["planner"]},
                               json={"scenario": "budget-freeze"}).json()
    assert f"Scenario: {answer['name']}" in section
    assert f"as of {answer['as_of']}" in section and answer["period"] in section
    # The same answer when the period and as_of are named.
    named = world.client.post("/v1/scenario", headers={"X-API-Key": world.keys["planner"]},
                              json={"scenario": "budget-freeze", "period": answer["period"],
                                    "as_of": answer["as_of"]}).json()
    assert named["nodes"] == answer["nodes"]
    nodes = {(n["level"], n["key"]): n for n in answer["nodes"]}
    rows = _rows(section)
    assert 0 < len(rows) <= SCENARIO_ROWS
    assert next(iter(rows)) == ("company", "all")
    regions = {k for k, n in nodes.items() if k[0] == "region" and n["expected_baseline"]}
    assert regions <= set(rows)
    hurt = [k for k in rows if k[0] not in ("company", "region")]
    deltas = [nodes[k]["expected_delta"] for k in hurt]
    assert deltas == sorted(deltas) and all(d < 0 for d in deltas)
    assert any(n["expected_delta"] < 0 for n in answer["nodes"])
    for key, cells in rows.items():
        n = nodes[key]
        assert cells[2:5] == [money(n["expected_baseline"]), money(n["expected_scenario"]),
                              signed_change(n["expected_delta"])], key
        if n["target_baseline"] is not None:
            assert cells[1] == money(n["target_baseline"])
            assert cells[6:8] == [percent(n["p_attain_baseline"]),
                                  percent(n["p_attain_scenario"])], key
        else:
            assert cells[6:8] == ["", ""]
    company = nodes[("company", "all")]
    assert company["expected_scenario"] < company["expected_baseline"]
    shown = html.unescape(section)  # Jinja writes ' as &#39;, html.escape as &#x27;
    for note in answer["notes"]:
        assert note in shown


def test_unknown_scenario_is_a_plain_message(world: World) -> None:
    page = world.page("planner", scenario="no-such-thing")
    section = _section(page)
    assert "There is no ready scenario named" in section and "budget-freeze" in section
    assert "scenario-table" not in section
    assert 'id="feasibility"' in page  # the rest of the page is there
    odd = _section(world.page("planner", scenario='<script>alert(1)</script>' + "x" * 500))
    assert "<script>" not in odd and "&lt;script&gt;" in odd and "x" * 200 not in odd


def test_account_manager_does_not_see_the_scenario(world: World) -> None:
    page = world.page("account_manager", scenario="budget-freeze")
    assert 'id="scenario"' not in page and "Scenario:" not in page
    assert "My customers at risk" in page


def test_sign_in_keeps_the_picked_scenario(world: World) -> None:
    client = world.client
    client.cookies.clear()
    signed = client.get("/", params={"key": world.keys["planner"], "scenario": "price-cut"},
                        follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/?scenario=price-cut"
    page = client.get(signed.headers["location"])
    assert page.status_code == 200 and "Scenario: " in _section(page.text)
    client.cookies.clear()
