"""The deals behind a node's gap: ``GET /v1/deals`` over a real app (the small demo company,
stub win and churn champions), and the P(attain)-if-lost measure against an exact one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    Company,
    quiet_options,
    settings_for,
    stubbed_service,
)

from engine.periods import period_bounds
from engine.schemas import OPPORTUNITIES, OPPORTUNITY_ID, OWNER
from service.http.app import create_app
from service.usecases.deals import loss_effect


@dataclass
class World:
    client: TestClient
    company: Company
    keys: dict[str, str]

    def get(self, who: str, **params: str) -> tuple[int, dict]:
        response = self.client.get("/v1/deals", headers={"X-API-Key": self.keys[who]},
                                   params=params or None)
        return response.status_code, response.json()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("deals")
    with stubbed_service(root) as (company, uri, _patch):
        app = create_app(settings_for(root, company.data, uri), quiet_options())
        with TestClient(app) as client:
            state = app.state.quotacast
            keys = {"planner": state.keys.create("planner")[1],
                    "manager": state.keys.create("account_manager", company.manager)[1]}
            yield World(client, company, keys)


def test_company_deals_are_the_open_ones_of_the_period_largest_effect_first(world: World
                                                                            ) -> None:
    code, body = world.get("planner")
    assert code == 200
    assert (body["level"], body["key"]) == ("company", "all")
    deals = body["deals"]
    assert deals and body["total"] >= len(deals)
    _, end = period_bounds(body["period"])
    opps = world.company.tables[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    for deal in deals:
        assert pd.Timestamp(deal["close_date"]) < end  # counted in the period only
        assert opps.loc[deal["opportunity_id"], "status"] == "open" or pd.Timestamp(
            opps.loc[deal["opportunity_id"], "close_date"]) >= pd.Timestamp(body["as_of"])
        assert deal["expected_amount"] == pytest.approx(deal["amount"]
                                                        * deal["win_probability"])
        assert deal["win_probability"] == pytest.approx(0.3)  # the stub champion's
        assert 0 <= deal["p_attain_drop"] <= body["p_attain"] + 1e-12
        assert deal["p_attain_if_lost"] == pytest.approx(body["p_attain"]
                                                         - deal["p_attain_drop"])
    drops = [d["p_attain_drop"] for d in deals]
    assert drops == sorted(drops, reverse=True)
    stages = body["stages"]
    assert sum(s["deals"] for s in stages) == body["total"]
    assert "p_attain_drop" in body["effect_measure"]


def test_a_region_has_its_own_deals_only(world: World) -> None:
    _, company = world.get("planner", limit="500")
    code, north = world.get("planner", level="region", key="North", limit="500")
    assert code == 200
    assert north["deals"] and {d["region"] for d in north["deals"]} == {"North"}
    assert {d["opportunity_id"] for d in north["deals"]} == {
        d["opportunity_id"] for d in company["deals"] if d["region"] == "North"}


def test_an_account_manager_sees_their_own_deals_only(world: World) -> None:
    code, body = world.get("manager")
    assert code == 200
    assert (body["level"], body["key"]) == ("rep", world.company.manager)
    opps = world.company.tables[OPPORTUNITIES].set_index(OPPORTUNITY_ID)
    assert body["deals"]
    assert {opps.loc[d["opportunity_id"], OWNER] for d in body["deals"]} == {
        world.company.manager}
    assert world.get("manager", level="rep", key=world.company.other_manager)[0] == 403
    assert world.get("manager", level="company", key="all")[0] == 403
    assert world.get("manager", level="rep", key=world.company.manager)[0] == 200


def test_outside_the_data_is_404_as_documented(world: World) -> None:
    assert world.get("planner", level="region", key="Atlantis")[0] == 404
    assert world.get("planner", period="2031Q1")[0] == 404
    code, body = world.get("planner", as_of="2001-01-01")
    assert code == 404 and "outside the data" in body["detail"]
    schema = world.client.get("/openapi.json").json()["paths"]["/v1/deals"]["get"]
    assert {"403", "404"} <= set(schema["responses"])


def test_loss_effect_matches_the_exact_drop_of_a_simulated_deal() -> None:
    rng = np.random.default_rng(3)
    rest = rng.normal(100.0, 15.0, 200_000)  # everything but the deal
    amount, p, target = 20.0, 0.4, 110.0
    won = rng.random(rest.size) < p
    draws = rest + amount * won
    exact = (draws >= target).mean() - (rest >= target).mean()
    approx = loss_effect(draws, target, np.array([amount]), np.array([p]))[0]
    assert approx == pytest.approx(exact, abs=0.02)
    # A deal that cannot be won moves nothing; a bigger deal moves more.
    assert loss_effect(draws, target, np.array([amount]), np.array([0.0]))[0] == 0.0
    bigger = loss_effect(draws, target, np.array([amount, 2 * amount]), np.array([p, p]))
    assert bigger[1] > bigger[0]
