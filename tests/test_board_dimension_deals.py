"""The deals behind the gap and commits on product, segment and channel nodes (issue 18).

The data's product, segment and channel, which no target names, are nodes of the dimensions'
simulation (:func:`service.usecases.dimensions.node_run`): their deals, commits and P(reach) read
its draws, the ones their fan shows. Deals carry a product (their own, else their customer's)
and a segment (their customer's), but no channel: a channel page says so instead of an empty
list. An account manager's board is its own rep node: a product or segment node (other reps'
deals and revenue) answers 403 on every page, route and form.

One app over the tiny generated company (no registry: stage rates), 500 draws; the CLI through
typer's runner on the same data.
"""

from __future__ import annotations

import getpass
import html
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_service_support import SEED, quiet_options, quiet_registry, settings_for
from typer.testing import CliRunner

from engine.io import Tables, load_tables, write_data_dir
from engine.schemas import (
    ACCOUNT_MANAGER,
    CUSTOMER_ID,
    CUSTOMERS,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    PRODUCT,
    SEGMENT,
)
from engine.synthetic import SizeSpec, generate
from models.feasibility import attained
from service.cli.app import app as cli
from service.http.app import create_app
from service.http.state import AppState
from service.usecases.dimensions import node_run
from service.usecases.planning import feasibility_run

TINY = SizeSpec("tiny", 150, 2, 2, (1, 1), (2, 2))
PERIOD = "2026Q4"
_CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


@dataclass
class World:
    client: TestClient
    state: AppState
    tables: Tables
    data: Path
    root: Path
    manager: str
    keys: dict[str, str]

    def get(self, path: str, who: str = "planner", **params: Any) -> Any:
        return self.client.get(path, headers={"X-API-Key": self.keys[who]},
                               params=params or None)

    def post(self, path: str, body: dict[str, Any], who: str = "planner") -> Any:
        return self.client.post(path, headers={"X-API-Key": self.keys[who]}, json=body)

    def form(self, who: str, **form: str) -> Any:
        return self.client.post("/board/commit", headers={"X-API-Key": self.keys[who]},
                                data=form)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("board-dimension-deals")
    data = write_data_dir(generate(TINY, seed=SEED), root / "data")
    tables = load_tables(str(data))
    manager = str(tables.customers[ACCOUNT_MANAGER].value_counts().index[0])
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        app = create_app(settings_for(root, data, f"sqlite:///{root / 'none' / 'm.db'}"),
                         quiet_options(draws=500))
        with TestClient(app) as client:
            state: AppState = app.state.quotacast
            keys = {"planner": state.keys.create("planner")[1],
                    "manager": state.keys.create("account_manager", manager)[1]}
            yield World(client, state, tables, data, root, manager, keys)


def _deal_values(tables: Tables, level: str) -> dict[str, str]:
    """Each deal's product (its own, else its customer's) or segment (its customer's)."""
    opps = tables[OPPORTUNITIES]
    customers = tables[CUSTOMERS].set_index(CUSTOMER_ID)
    own = opps[level] if level in opps.columns else None
    by_customer = opps[CUSTOMER_ID].map(customers[level]) if level in customers.columns else None
    values = own if by_customer is None else (by_customer if own is None
                                              else own.fillna(by_customer))
    assert values is not None
    return dict(zip(opps[OPPORTUNITY_ID].astype(str), values.astype(str), strict=True))


def _busiest(world: World, level: str) -> str:
    """The value of ``level`` with the most open deals counted in the period."""
    company = world.get("/v1/deals", period=PERIOD, limit=500).json()
    values = _deal_values(world.tables, level)
    counts: dict[str, int] = {}
    for deal in company["deals"]:
        counts[values[deal["opportunity_id"]]] = counts.get(
            values[deal["opportunity_id"]], 0) + 1
    assert counts, "the tiny company has open deals in the period"
    return max(counts, key=lambda k: counts[k])


def _section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}"')
    return page[start:page.index("</section>", start)]


# --- deals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [PRODUCT, SEGMENT])
def test_a_dimension_nodes_deals_are_its_own_sorted_by_their_effect(world: World,
                                                                    level: str) -> None:
    company = world.get("/v1/deals", period=PERIOD, limit=500).json()
    values = _deal_values(world.tables, level)
    seen = 0
    for key in sorted({values[d["opportunity_id"]] for d in company["deals"]}):
        response = world.get("/v1/deals", period=PERIOD, level=level, key=key, limit=500)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["level"], body["key"], body["placed"]) == (level, key, True)
        assert body["target"] is None and body["p_attain"] is None
        assert any("no target" in n for n in body["notes"])
        assert "expected total" in body["effect_measure"]
        assert {values[d["opportunity_id"]] for d in body["deals"]} == {key}
        expected = [d["expected_amount"] for d in body["deals"]]
        assert expected == sorted(expected, reverse=True)  # the drop of the expected total
        assert all(d["p_attain_drop"] is None for d in body["deals"])
        assert sum(s["deals"] for s in body["stages"]) == body["total"] == len(body["deals"])
        # Its outlook is the dimensions' simulation's, the fan the board draws for it.
        run = node_run(world.state, PERIOD, None, level, key)
        assert run is not feasibility_run(world.state, PERIOD, None)
        column = run.simulation.node_index(level, key)
        assert body["expected"] == pytest.approx(float(run.simulation.draws[:, column].mean()))
        seen += body["total"]
    assert seen == company["total"]  # every deal of the period under exactly one value


def test_deals_carry_no_channel_and_the_channel_node_says_so(world: World) -> None:
    channel = str(world.tables.orders["channel"].dropna().iloc[0])
    body = world.get("/v1/deals", period=PERIOD, level="channel", key=channel).json()
    assert body["placed"] is False and body["deals"] == [] and body["stages"] == []
    assert any("deals carry no channel" in n for n in body["notes"])
    page = world.get("/board", period=PERIOD, level="channel", node=channel)
    assert page.status_code == 200, page.text[-1500:]
    deals = html.unescape(_section(page.text, "deals"))
    assert "deals carry no channel" in deals and "deals-table" not in deals
    assert "No open deal" not in deals


def test_a_node_of_no_level_is_still_404(world: World) -> None:
    assert world.get("/v1/deals", period=PERIOD, level=PRODUCT, key="Nothing").status_code \
        == 404
    assert world.get("/v1/deals", period=PERIOD, level="colour", key="red").status_code == 404


def test_the_product_page_lists_its_deals_and_their_effect_on_its_expected_total(
        world: World) -> None:
    product = _busiest(world, PRODUCT)
    api = world.get("/v1/deals", period=PERIOD, level=PRODUCT, key=product).json()
    for _ in range(600):  # the company page lists the product with a link to its deals
        company = html.unescape(_section(world.get("/board", period=PERIOD).text,
                                         "dimensions"))
        if "being simulated" not in company:
            break
        time.sleep(0.05)
    links = re.findall(r'<a class="deals-link" href="([^"]*)"', company)
    assert any(f"level={PRODUCT}&node={product.replace(' ', '+')}" in link
               and link.endswith("#deals") for link in links), links
    page = world.get("/board", period=PERIOD, level=PRODUCT, node=product)
    assert page.status_code == 200, page.text[-1500:]
    deals = html.unescape(_section(page.text, "deals"))
    assert "expected total drop if lost" in deals
    shown = re.findall(r'<tr data-deal="([^"]*)"', deals)
    assert shown == [d["opportunity_id"] for d in api["deals"]][:len(shown)] and shown
    assert "stages-table" in deals
    # Trend and what changed hold for the node too.
    trend = world.get("/v1/trend", period=PERIOD, level=PRODUCT, key=product).json()
    assert trend["points"] and trend["points"][-1]["p50"] is not None
    changes = world.get("/v1/changes", period=PERIOD, level=PRODUCT, key=product)
    assert changes.status_code == 200, changes.text
    values = _deal_values(world.tables, PRODUCT)
    assert {values[str(d["opportunity_id"])] for d in changes.json()["deals"]} <= {product}


# --- commits ----------------------------------------------------------------------------------


def test_a_product_commit_is_kept_with_history_beside_its_probability(world: World) -> None:
    product = _busiest(world, PRODUCT)
    run = node_run(world.state, PERIOD, None, PRODUCT, product)
    draws = run.simulation.draws[:, run.simulation.node_index(PRODUCT, product)]
    amounts = [float(np.quantile(draws, 0.2)), float(np.quantile(draws, 0.6))]
    for amount in amounts:
        response = world.post("/v1/commits", {"level": PRODUCT, "key": product,
                                              "amount": amount, "period": PERIOD})
        assert response.status_code == 201, response.text
        assert response.json()["p_reach"] == pytest.approx(
            attained(draws, amount, float(draws.mean())))
    body = world.get("/v1/commits", period=PERIOD, level=PRODUCT, key=product).json()
    [latest] = body["commits"]
    assert latest["amount"] == pytest.approx(amounts[-1]) and latest["submissions"] == 2
    assert latest["p_reach"] == pytest.approx(attained(draws, amounts[-1], float(draws.mean())))
    assert 0.2 < latest["p_reach"] < 0.6
    assert [h["amount"] for h in body["history"]] == pytest.approx(amounts)
    # The full list (no node named) fills the product's P(reach) from the same draws.
    every = world.get("/v1/commits", period=PERIOD).json()["commits"]
    mine = [c for c in every if (c["level"], c["key"]) == (PRODUCT, product)]
    assert mine and mine[0]["p_reach"] == pytest.approx(latest["p_reach"])


def test_a_what_if_on_a_product_reads_the_draws_of_its_fan(world: World) -> None:
    product = _busiest(world, PRODUCT)
    run = node_run(world.state, PERIOD, None, PRODUCT, product)
    draws = run.simulation.draws[:, run.simulation.node_index(PRODUCT, product)]
    proposed = float(np.quantile(draws, 0.5))
    response = world.post("/v1/feasibility/what-if", {"level": PRODUCT, "key": product,
                                                      "target": proposed, "period": PERIOD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["p_attain"] == pytest.approx(attained(draws, proposed, float(draws.mean())))
    assert body["p50"] == pytest.approx(float(np.quantile(draws, 0.5)))
    assert body["current_target"] is None
    missing = world.post("/v1/feasibility/what-if", {"level": PRODUCT, "key": "Nothing Such",
                                                     "target": 5.0, "period": PERIOD})
    assert missing.status_code == 404


def test_the_board_form_commits_on_a_segment(world: World) -> None:
    segment = _busiest(world, SEGMENT)
    page = world.get("/board", period=PERIOD, level=SEGMENT, node=segment).text
    form = _section(page, "commits")
    assert 'id="commit-form"' in form and f'value="{SEGMENT}"' in form
    saved = world.form("planner", period=PERIOD, as_of="", level=SEGMENT, node=segment,
                       category="best_case", amount="12345", note="segment call")
    assert saved.status_code == 200, saved.text[-1500:]
    text = html.unescape(saved.text)
    assert f"Saved: best case of 12.3k for {SEGMENT} {segment} in {PERIOD}" in text
    assert "probability of reaching it" in text and "n/a" not in text.split("Saved:")[1][:200]
    row = re.search(rf'<tr data-level="{SEGMENT}" data-key="{re.escape(segment)}" '
                    r'data-category="best_case">(.*?)</tr>', saved.text, re.S)
    assert row is not None
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in _CELL.findall(row.group(1))]
    assert cells[2] == "12.3k" and cells[3].endswith("%")


# --- an account manager --------------------------------------------------------------------------


def test_an_account_manager_never_sees_nor_commits_on_a_dimension_node(world: World) -> None:
    product, segment = _busiest(world, PRODUCT), _busiest(world, SEGMENT)
    channel = str(world.tables.orders["channel"].dropna().iloc[0])
    for level, key in ((PRODUCT, product), (SEGMENT, segment), ("channel", channel)):
        for path in ("/v1/deals", "/v1/trend", "/v1/changes", "/v1/commits"):
            response = world.get(path, "manager", period=PERIOD, level=level, key=key)
            assert response.status_code == 403, (path, level, response.text[:300])
        page = world.get("/board", "manager", period=PERIOD, level=level, node=key)
        assert page.status_code == 403 and "not yours" in page.text
        refused = world.post("/v1/commits", {"level": level, "key": key, "amount": 777},
                             who="manager")
        assert refused.status_code == 403
        form = world.form("manager", period=PERIOD, level=level, node=key, amount="777")
        assert form.status_code == 403
    history = world.get("/v1/commits", period=PERIOD).json()["history"]
    assert all(h["amount"] != 777 for h in history)
    # Its own deals only, with no product or segment view of others'.
    own = world.get("/v1/deals", "manager", period=PERIOD).json()
    assert (own["level"], own["key"]) == ("rep", world.manager)
    assert all(d["rep"] == world.manager for d in own["deals"])


# --- the command line -----------------------------------------------------------------------------


def _cli(world: World, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.chdir(world.root)
    env = {"QUOTACAST_DATABASE_URL": f"sqlite:///{world.root / 'cli.db'}",
           "QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{world.root / 'mlflow-cli.db'}",
           "QUOTACAST_N_JOBS": "1"}
    result = CliRunner().invoke(cli, list(args), env=env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return result.exit_code, result.stdout, result.stderr


def test_commit_on_a_product_and_a_segment_from_the_command_line(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    product, segment = _busiest(world, PRODUCT), _busiest(world, SEGMENT)
    for flag, level, key in (("--product", PRODUCT, product), ("--segment", SEGMENT, segment)):
        code, out, err = _cli(world, monkeypatch, "commit", "--data", str(world.data),
                              "--period", PERIOD, flag, key, "--amount", "1000",
                              "--draws", "500", "--json")
        assert code == 0, err
        [latest] = json.loads(out.strip().splitlines()[-1])
        assert (latest["level"], latest["key"]) == (level, key)
        assert latest["p_reach"] is not None and 0 <= latest["p_reach"] <= 1
        assert f"stored the commit of {level} {key}" in err
        # Without --by the submitter is the person at the keyboard, never the product's name.
        assert latest["submitted_by"] == getpass.getuser() != key
    code, _, err = _cli(world, monkeypatch, "commit", "--data", str(world.data), "--product",
                        product, "--segment", segment, "--amount", "5")
    assert code == 2 and "give one node" in err
    code, _, err = _cli(world, monkeypatch, "commit", "--data", str(world.data), "--product",
                        "Nothing Such", "--amount", "5")
    assert code == 2 and "Nothing Such" in err
