"""The board's JSON API over a real app: trend from the service's own feasibility snapshots, what
changed between two weeks, commits beside their probability, and role scoping.

One app per module (a tiny generated company with a ``commits`` table, stub champions, a
temporary SQLite database): every feasibility the service computes stores a snapshot, so two
``/v1/feasibility`` calls a week apart make a two-point trend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    SEED,
    Company,
    StubWin,
    quiet_options,
    quiet_registry,
    settings_for,
)

from engine.io import load_tables, write_data_dir
from engine.synthetic import SizeSpec, generate
from engine.tracking import LoadedModel
from service.http.app import create_app
from service.http.state import AppState

PERIOD = "2026Q4"
WEEK1, WEEK2 = "2026-11-09", "2026-11-16"
ROLES = ("admin", "planner", "sales_ops", "account_manager")
TINY = SizeSpec("tiny", 150, 2, 2, (1, 1), (2, 2))  # four reps: fast to generate and simulate


@dataclass
class World:
    client: TestClient
    state: AppState
    company: Company
    keys: dict[str, str]

    def get(self, path: str, who: str = "admin", **params: Any) -> Any:
        return self.client.get(path, headers={"X-API-Key": self.keys[who]},
                               params=params or None)

    def post(self, path: str, body: Any, who: str = "admin") -> Any:
        return self.client.post(path, headers={"X-API-Key": self.keys[who]}, json=body)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("board-api")
    frames = generate(TINY, seed=SEED)
    managers = frames["customers"]["account_manager"].value_counts().index
    # The reps' own commits, as an export carries them: the history before any submission.
    frames["commits"] = pd.DataFrame({
        "period": [PERIOD, PERIOD], "rep": [managers[0]] * 2, "amount": [100_000.0, 150_000.0],
        "category": ["commit", "commit"], "submitted_at": ["2026-10-01", "2026-10-15"]})
    data = write_data_dir(frames, root / "data")
    company = Company(data, load_tables(str(data)), str(managers[0]), str(managers[1]))
    # No registry: the stub win model of the other service tests is served as the champion
    # (the board needs no model of its own; fitting stage rates per as_of would cost seconds).
    uri = f"sqlite:///{root / 'no-registry' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        app = create_app(settings_for(root, company.data, uri), quiet_options())
        with TestClient(app) as client:
            state: AppState = app.state.quotacast
            state.models["win"] = LoadedModel(StubWin(), "stub-win", "1", "stub", {})
            keys = {role: state.keys.create(role)[1] for role in ROLES[:3]}
            keys["account_manager"] = state.keys.create("account_manager", company.manager)[1]
            keys["other_manager"] = state.keys.create("account_manager",
                                                      company.other_manager)[1]
            found = World(client, state, company, keys)
            for day in (WEEK1, WEEK2):  # the dashboard's feasibility, a week apart
                assert found.get("/v1/feasibility", period=PERIOD,
                                 as_of=day).status_code == 200
            yield found


def _company(world: World, day: str) -> dict[str, Any]:
    body = world.get("/v1/feasibility", period=PERIOD, as_of=day).json()
    return next(n for n in body["nodes"] if n["level"] == "company")


def test_two_feasibility_dates_a_week_apart_make_a_two_point_trend(world: World) -> None:
    response = world.get("/v1/trend", period=PERIOD, as_of=WEEK2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["level"], body["key"]) == ("company", "all")
    assert [p["as_of"] for p in body["points"]] == [WEEK1, WEEK2]
    for point, day in zip(body["points"], (WEEK1, WEEK2), strict=True):
        node = _company(world, day)
        assert point["p_attain"] == pytest.approx(node["p_attain"])
        assert point["p50"] == pytest.approx(node["p50"])
        assert point["closed_to_date"] == pytest.approx(node["closed_to_date"])
        assert point["source"] == "service"
    first, second = body["points"]
    assert second["p_attain_delta"] == pytest.approx(second["p_attain"] - first["p_attain"])
    assert second["closed_to_date"] >= first["closed_to_date"]


def test_the_trend_is_point_in_time(world: World) -> None:
    body = world.get("/v1/trend", period=PERIOD, as_of="2026-11-12").json()
    assert [p["as_of"] for p in body["points"]] == [WEEK1]


def test_a_node_without_snapshots_says_so(world: World) -> None:
    body = world.get("/v1/trend", period="2026Q3", as_of=WEEK2).json()
    assert body["points"] == [] and "no snapshot" in body["notes"][0]


def test_what_changed_explains_the_p_attain_delta(world: World) -> None:
    response = world.get("/v1/changes", period=PERIOD, until=WEEK2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["since"], body["until"]) == (WEEK1, WEEK2)
    delta = _company(world, WEEK2)["p_attain"] - _company(world, WEEK1)["p_attain"]
    assert body["p_attain_delta"] == pytest.approx(delta)
    groups = {g["change"]: g for g in body["groups"]}
    assert set(groups) == {"won", "lost", "slipped", "created", "other"}
    assert sum(g["p_attain_effect"] for g in groups.values()) == pytest.approx(delta)
    deals = pd.DataFrame(body["deals"])
    assert not deals.empty
    for change, rows in deals.groupby("change"):
        assert len(rows) == groups[change]["deals"]
        assert rows["amount"].sum() == pytest.approx(groups[change]["amount"])
    opps = world.company.tables["opportunities"].set_index("opportunity_id")
    won = deals[deals["change"] == "won"]
    assert (opps.loc[won["opportunity_id"], "status"] == "won").all()
    closes = pd.to_datetime(won["close_date_after"])
    assert ((closes >= WEEK1) & (closes < WEEK2)).all()
    assert (won["expected_effect"] > 0).all()
    assert (deals.loc[deals["change"].isin(["lost", "slipped"]), "expected_effect"] <= 0).all()


def test_changes_of_a_rep_are_its_own_deals(world: World) -> None:
    rep = world.company.manager
    body = world.get("/v1/changes", level="rep", key=rep, period=PERIOD, since=WEEK1,
                     until=WEEK2).json()
    owners = {d["owner"] for d in body["deals"]}
    assert owners <= {rep}


def test_commits_are_kept_latest_wins_beside_p_reach(world: World) -> None:
    team = str(world.company.tables["org"]["team"].iloc[0])
    for amount in (400_000, 250_000):
        response = world.post("/v1/commits", {"level": "team", "key": team, "amount": amount,
                                              "period": PERIOD, "as_of": WEEK2},
                              who="planner")
        assert response.status_code == 201, response.text
        assert response.json()["submitted_by"] == "planner key " + response.json()[
            "submitted_by"].split()[-1]
    what_if = world.post("/v1/feasibility/what-if", {"level": "team", "key": team,
                                                     "target": 250_000, "period": PERIOD,
                                                     "as_of": WEEK2}).json()
    body = world.get("/v1/commits", period=PERIOD, as_of=WEEK2, level="team", key=team).json()
    [latest] = body["commits"]
    assert latest["amount"] == 250_000 and latest["submissions"] == 2
    assert latest["p_reach"] == pytest.approx(what_if["p_attain"])
    assert [h["amount"] for h in body["history"]] == [400_000, 250_000]
    higher = world.post("/v1/commits", {"level": "team", "key": team, "amount": 900_000,
                                        "category": "best_case", "period": PERIOD,
                                        "as_of": WEEK2}).json()
    assert higher["p_reach"] <= latest["p_reach"]


def test_the_commits_table_seeds_the_history(world: World) -> None:
    body = world.get("/v1/commits", period=PERIOD, as_of=WEEK2, who="account_manager").json()
    seeded = [h for h in body["history"] if h["source"] == "data"]
    assert [h["amount"] for h in seeded] == [100_000, 150_000]
    commit = next(c for c in body["commits"] if c["category"] == "commit")
    assert commit["key"] == world.company.manager
    assert commit["p_reach"] is not None


def test_an_account_manager_sees_and_submits_for_its_own_rep_only(world: World) -> None:
    me, other = world.company.manager, world.company.other_manager
    mine = world.get("/v1/trend", period=PERIOD, as_of=WEEK2, who="account_manager").json()
    assert (mine["level"], mine["key"]) == ("rep", me)
    assert len(mine["points"]) == 2
    for path in ("/v1/trend", "/v1/changes", "/v1/commits"):
        team = str(world.company.tables["org"]["team"].iloc[0])
        for level, key in (("rep", other), ("company", "all"), ("team", team)):
            response = world.get(path, who="account_manager", level=level, key=key)
            assert response.status_code == 403, (path, level, response.text)
    refused = world.post("/v1/commits", {"level": "rep", "key": other, "amount": 1},
                         who="account_manager")
    assert refused.status_code == 403
    done = world.post("/v1/commits", {"amount": 123_456, "period": PERIOD, "as_of": WEEK2},
                      who="account_manager")
    assert done.status_code == 201, done.text
    assert (done.json()["level"], done.json()["key"]) == ("rep", me)
    theirs = world.get("/v1/commits", period=PERIOD, as_of=WEEK2, who="other_manager").json()
    assert all(c["key"] == other for c in theirs["commits"] + theirs["history"])
    assert all(h["amount"] != 123_456 for h in theirs["history"])
    everyone = world.get("/v1/commits", period=PERIOD, as_of=WEEK2, who="sales_ops").json()
    assert any(h["amount"] == 123_456 and h["key"] == me for h in everyone["history"])


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_the_board(world: World, role: str) -> None:
    for path in ("/v1/trend", "/v1/commits"):
        assert world.get(path, who=role, period=PERIOD, as_of=WEEK2).status_code == 200


@pytest.mark.parametrize(("params", "code"), [
    ({"level": "rep", "key": "Nobody Atall"}, 404),
    ({"level": "planet", "key": "Mars"}, 404),
    ({"level": "company", "key": "everyone"}, 404),
    ({"as_of": "1999-01-01"}, 404),
    ({"level": "rep"}, 404),
    ({"key": "Nobody Atall"}, 404),
    ({"period": "2026Q5"}, 422),
    ({"key": "x" * 201, "level": "rep"}, 422),
])
def test_outside_the_data_is_404_and_bad_parameters_4xx(world: World, params: dict[str, str],
                                                       code: int) -> None:
    response = world.get("/v1/trend", **params)
    assert response.status_code == code, response.text


@pytest.mark.parametrize("since", ["1677-01-01", "1999-01-01", "2999-12-31"])
def test_changes_since_a_day_outside_the_data_is_404(world: World, since: str) -> None:
    response = world.get("/v1/changes", since=since)
    assert response.status_code == 404, response.text
    assert "since" in response.json()["detail"]


@pytest.mark.parametrize("body", [
    {"amount": -1},
    {"amount": 1e16},
    {"amount": "100"},
    {"amount": 1, "category": "pipeline"},
    {"amount": 1, "note": "n" * 2001},
    {"amount": 1, "extra": True},
    {"amount": 1, "level": "rep", "key": "k" * 201},
])
def test_a_bad_commit_is_422_and_stores_nothing(world: World, body: dict[str, Any]) -> None:
    before = len(world.get("/v1/commits", period=PERIOD, as_of=WEEK2).json()["history"])
    assert world.post("/v1/commits", body).status_code == 422
    after = len(world.get("/v1/commits", period=PERIOD, as_of=WEEK2).json()["history"])
    assert after == before


def test_a_commit_for_an_unknown_node_is_404(world: World) -> None:
    response = world.post("/v1/commits", {"level": "rep", "key": "Nobody Atall", "amount": 5})
    assert response.status_code == 404
