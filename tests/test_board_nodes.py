"""The board's nodes beyond the hierarchy, its fan's closed-to-date path and its one scope rule.

- **Dimensions**: the data's product, segment and channel, which no target names, are nodes
  of their own (P10/P50/P90, closed to date, "no target" instead of P(attain)); their closed to
  date adds up to the company's.
- **Closed to date, day by day**: the fan draws the daily cumulative path, which ends at the
  feasibility's closed to date and ignores rows dated on or after the as-of.
- **Scope**: an account manager's node is decided by one function
  (:func:`service.http.auth.names_other_node`), which the board page, ``/v1/deals`` and the
  trend/changes/commits routes all follow, on the edge cases where they used to disagree.

One app over a tiny generated company (no registry: stage rates), 500 draws.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from test_service_support import SEED, quiet_options, quiet_registry, settings_for

from engine.io import load_tables, write_data_dir
from engine.schemas import ACCOUNT_MANAGER, AMOUNT, ORDER_DATE
from engine.synthetic import SizeSpec, generate
from service.http.app import create_app
from service.http.auth import Principal, board_node, names_other_node
from service.http.charts import fan_svg
from service.http.keys import Role
from service.http.routes.deals import scoped_node
from service.http.state import AppState
from service.usecases.board import closed_path
from service.usecases.planning import feasibility_run

TINY = SizeSpec("tiny", 150, 2, 2, (1, 1), (2, 2))
PERIOD = "2026Q4"
_ROW = re.compile(r'<tr data-level="([^"]*)" data-key="([^"]*)"[^>]*>(.*?)</tr>', re.S)
_CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


@dataclass
class World:
    client: TestClient
    state: AppState
    manager: str
    other: str
    keys: dict[str, str]

    def get(self, path: str, who: str = "planner", **params: Any) -> Any:
        return self.client.get(path, headers={"X-API-Key": self.keys[who]},
                               params=params or None)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("board-nodes")
    data = write_data_dir(generate(TINY, seed=SEED), root / "data")
    managers = load_tables(str(data)).customers[ACCOUNT_MANAGER].value_counts().index
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        app = create_app(settings_for(root, data, f"sqlite:///{root / 'none' / 'm.db'}"),
                         quiet_options(draws=500))
        with TestClient(app) as client:
            state: AppState = app.state.quotacast
            keys = {"planner": state.keys.create("planner")[1],
                    "manager": state.keys.create("account_manager", str(managers[0]))[1]}
            yield World(client, state, str(managers[0]), str(managers[1]), keys)


def _section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}"')
    return page[start:page.index("</section>", start)]


def _rows(section: str) -> list[tuple[str, str, list[str]]]:
    return [(html.unescape(level), html.unescape(key),
             [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in _CELL.findall(body)])
            for level, key, body in _ROW.findall(section)]


def _page(world: World, expect: int = 200, who: str = "planner", **params: str) -> str:
    response = world.get("/board", who, **params)
    assert response.status_code == expect, response.text[-1500:]
    return str(response.text)


# --- dimensions -----------------------------------------------------------------------------


def _dimension_rows(world: World) -> list[tuple[str, str, list[str]]]:
    """The company page's dimension rows, once simulated (in the background)."""
    for _ in range(600):
        section = _section(_page(world), "dimensions")
        if "being simulated" not in section:
            return _rows(section)
        time.sleep(0.05)
    raise AssertionError("the dimensions were never simulated")


def test_product_segment_and_channel_are_nodes_without_a_target(world: World) -> None:
    rows = _dimension_rows(world)
    levels = {level for level, _, _ in rows}
    assert levels == {"product", "segment", "channel"}
    assert all(cells[1] == "no target" for _, _, cells in rows)
    run = feasibility_run(world.state, PERIOD, None)
    company = float(run.simulation.closed[run.simulation.node_index("company", "all")])
    from service.http.dashboard import _BACKGROUND  # the dimensions' simulation, computed

    found = [f.result() for f in _BACKGROUND._futures.values() if f.done()]
    assert found
    nodes = found[-1].nodes
    for level in levels:  # each dimension splits the company's closed to date
        total = sum(n.closed for n in nodes if n.level == level)
        assert total == pytest.approx(company)
    for node in (n for n in nodes if n.level in levels):
        assert node.p10 <= node.p50 <= node.p90

    channel = next(key for level, key, _ in rows if level == "channel")
    page = _page(world, level="channel", node=channel)
    numbers = _section(page, "node")
    assert f"channel {channel}: {PERIOD}" in numbers and "no target" in numbers
    assert "P90" in numbers and 'class="chart fan"' in numbers
    crumbs = re.findall(r"<li>(.*?)</li>", page[page.index('<nav id="breadcrumb"'):], re.S)[:2]
    assert "company" in crumbs[0] and f"channel {channel}" in html.unescape(crumbs[1])
    assert "deals carry no channel" in _section(page, "deals")  # orders have one, deals not
    # An account manager has no dimension nodes: its own rep node only.
    assert _page(world, 403, "manager", level="channel", node=channel)


def test_a_level_the_data_lacks_is_still_a_plain_404(world: World) -> None:
    assert "No node channel" in _page(world, 404, level="channel", node="carrier pigeon")


# --- closed to date, day by day ---------------------------------------------------------------


def test_the_fan_draws_the_daily_closed_path(world: World) -> None:
    tables = world.state.tables()
    run = feasibility_run(world.state, PERIOD, None)
    as_of = run.as_of
    nodes = run.simulation.nodes
    region = str(nodes.loc[nodes["level"] == "region", "key"].iloc[0])
    for level, key in (("company", "all"), ("region", region)):
        path = closed_path(tables, PERIOD, as_of, level, key)
        closed = float(run.simulation.closed[run.simulation.node_index(level, key)])
        assert path.index[0] == pd.Timestamp("2026-10-01")
        assert path.index[-1] == as_of - pd.Timedelta(days=1)
        assert path.iloc[-1] == pytest.approx(closed)
        assert (path.diff().dropna() >= -1e-9).all() or (tables.orders[AMOUNT] < 0).any()
    company = closed_path(tables, PERIOD, as_of, "company", "all")
    orders = tables.orders
    first_day = orders[(orders[ORDER_DATE] >= "2026-10-01")
                       & (orders[ORDER_DATE] < "2026-10-02")][AMOUNT].sum()
    assert company.iloc[0] >= first_day - 1e-6  # orders (and won deals) of the first day
    # Point in time: an as-of earlier in the period ends the path there.
    earlier = closed_path(tables, PERIOD, pd.Timestamp("2026-10-20"), "company", "all")
    assert len(earlier) == 19 and earlier.iloc[-1] == pytest.approx(company.iloc[18])
    assert closed_path(tables, "2027Q1", as_of, "company", "all").empty

    page = _page(world)
    fan = _section(page, "node")
    assert 'class="closed closed-path"' in fan and "<polyline" in fan
    steps = re.search(r'<polyline points="([^"]+)"[^>]*class="closed closed-path"', fan)
    assert steps is not None and len(steps.group(1).split()) > 10  # a path, not a line


def test_fan_without_a_path_is_a_straight_line() -> None:
    svg = fan_svg(target=10.0, closed=4.0, p10=6.0, p50=8.0, p90=11.0, stretch=9.0,
                  start_day=0, as_of_day=40, end_day=90, label="x")
    assert "<polyline" not in svg and 'class="closed"' in svg
    svg = fan_svg(target=10.0, closed=4.0, p10=6.0, p50=8.0, p90=11.0, stretch=9.0,
                  start_day=0, as_of_day=3, end_day=90, label="x", path=[1.0, 1.0, 4.0])
    points = re.search(r'<polyline points="([^"]+)"', svg)
    assert points is not None
    ys = [float(p.split(",")[1]) for p in points.group(1).split()]
    assert ys == sorted(ys, reverse=True)  # rising revenue is falling y
    assert len(ys) == 6  # start, two steps (days 1 and 3), the as-of


# --- one scope rule -----------------------------------------------------------------------

# (level, key) as sent -> whether an account manager named "me" is refused.
_CASES: list[tuple[str | None, str | None, bool]] = [
    (None, None, False), ("", "", False), ("rep", None, False), ("rep", "", False),
    (None, "me", False), ("rep", "me", False), ("", "me", False),
    ("rep", "other", True), (None, "other", True), ("company", None, True),
    ("company", "all", True), ("team", "me", True), ("region", None, True),
    ("channel", "online", True),
]


@pytest.mark.parametrize(("level", "key", "refused"), _CASES)
def test_one_scope_rule_for_every_board_door(level: str | None, key: str | None,
                                             refused: bool) -> None:
    me = Principal("k", Role.ACCOUNT_MANAGER, owner="me")
    assert names_other_node(me, level, key) is refused
    for door in (board_node, scoped_node):
        if refused:
            with pytest.raises(HTTPException) as caught:
                door(me, level, key)
            assert caught.value.status_code == 403
        else:
            assert tuple(door(me, level, key))[:2] == ("rep", "me")
    planner = Principal("p", Role.PLANNER)
    assert not names_other_node(planner, level, key)


def test_every_page_and_route_follows_the_rule(world: World) -> None:
    me, other = world.manager, world.other
    cases = [({}, 200), ({"key": me}, 200), ({"level": "rep"}, 200),
             ({"level": "rep", "key": me}, 200), ({"key": other}, 403),
             ({"level": "company", "key": "all"}, 403), ({"level": "team", "key": me}, 403),
             ({"level": "rep", "key": other}, 403)]
    for params, expect in cases:
        for path in ("/v1/deals", "/v1/trend", "/v1/commits"):
            response = world.get(path, "manager", period=PERIOD, **params)
            assert response.status_code == expect, (path, params, response.text[:300])
            if expect == 200:
                assert other not in response.text
        page = {("node" if k == "key" else k): v for k, v in params.items()}
        text = _page(world, expect, "manager", **page)
        assert ("not yours" in text) is (expect == 403)
        if expect == 200:
            assert f"rep {me}: {PERIOD}" in html.unescape(text)
