"""The HTTP API over a real app: roles, scoping, errors, limits, contents and the OpenAPI document.

One app per module (start-up loads the data and the registry once): a generated small company,
a temporary SQLite database and a temporary MLflow registry holding stub champions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    Company,
    fresh_registry,
    make_company,
    quiet_options,
    quiet_registry,
    register_stubs,
    settings_for,
)

from engine.schemas import ACCOUNT_MANAGER, CUSTOMER_ID
from models.feasibility.scenario import (
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_NAMES,
    MAX_SHOCKS,
    MAX_TITLE_LENGTH,
)
from service.http.app import create_app
from service.http.config import ServiceSettings
from service.http.jsonbody import MAX_INT_DIGITS
from service.http.ratelimit import TokenBucketLimiter
from service.http.state import AppState

ROLES = ("admin", "planner", "sales_ops", "account_manager")


@dataclass
class World:
    client: TestClient
    state: AppState
    company: Company
    keys: dict[str, str]
    versions: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[who]}

    def get(self, path: str, who: str = "admin", **params: Any) -> Any:
        return self.client.get(path, headers=self.headers(who), params=params or None)

    def post(self, path: str, body: Any = None, who: str = "admin") -> Any:
        return self.client.post(path, headers=self.headers(who), json=body)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("service-api")
    company = make_company(root)
    uri = fresh_registry(root)
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        versions = register_stubs(uri, company.tables)
        app = create_app(settings_for(root, company.data, uri), quiet_options())
        with TestClient(app) as client:
            state: AppState = app.state.quotacast
            keys = {role: state.keys.create(role)[1] for role in ROLES[:3]}
            keys["account_manager"] = state.keys.create("account_manager", company.manager)[1]
            keys["other_manager"] = state.keys.create("account_manager",
                                                      company.other_manager)[1]
            yield World(client, state, company, keys, versions)


# --- access -------------------------------------------------------------------------------------

WHAT_IF = {"level": "company", "key": "all", "target": 1_000_000}
SILENCE = {"matchers": ["alertname=PaceBehindPlan"], "starts_at": "2026-11-01",
           "days": 30, "comment": "known, being handled"}
PLANNING = {"admin", "planner", "sales_ops"}
EDITORS = {"admin", "sales_ops"}
MATRIX: list[tuple[str, str, Any, set[str], int]] = [
    ("GET", "/v1/feasibility", None, PLANNING, 200),
    ("POST", "/v1/feasibility/what-if", WHAT_IF, PLANNING, 200),
    ("GET", "/v1/recalibration", None, PLANNING, 200),
    ("POST", "/v1/scenario", {"scenario": "budget-freeze"}, PLANNING, 200),
    ("GET", "/v1/scenarios", None, PLANNING, 200),
    ("GET", "/v1/forecasts", None, PLANNING, 200),
    ("GET", "/v1/warnings", None, PLANNING, 200),
    ("GET", "/v1/silences", None, PLANNING, 200),
    ("POST", "/v1/warnings/evaluate", {}, EDITORS, 200),
    ("POST", "/v1/silences", SILENCE, EDITORS, 201),
    ("DELETE", "/v1/silences/no-such-silence", None, EDITORS, 404),
    ("GET", "/v1/customers/at-risk", None, set(ROLES), 200),
    ("GET", "/v1/customers/no-such-customer", None, set(ROLES), 404),
    ("GET", "/v1/models", None, PLANNING, 200),
    ("POST", "/v1/models/reload", None, {"admin"}, 200),
    ("GET", "/v1/trend", None, set(ROLES), 200),
    ("GET", "/v1/changes", None, set(ROLES), 200),
    ("GET", "/v1/commits", None, set(ROLES), 200),
    ("POST", "/v1/commits", {"amount": 1000}, set(ROLES), 201),
    ("GET", "/v1/deals", None, set(ROLES), 200),
]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_endpoints(world: World, role: str) -> None:
    for method, path, body, allowed, code in MATRIX:
        response = world.client.request(method, path, headers=world.headers(role),
                                        json=body)
        expected = code if role in allowed else 403
        assert response.status_code == expected, (role, method, path, response.text)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_the_account_managers_customer(world: World, role: str) -> None:
    mine = world.company.customer_of(world.company.manager)
    assert world.get(f"/v1/customers/{mine}", who=role).status_code == 200


def test_missing_unknown_or_malformed_key_is_401(world: World) -> None:
    attempts: list[dict[str, str]] = [
        {}, {"X-API-Key": "qk_00000000_" + "A" * 43}, {"X-API-Key": "not-a-key"},
        {"Authorization": "Basic " + world.keys["admin"]},
        {"Authorization": "Bearer qk_deadbeef_" + "B" * 43},
    ]
    for headers in attempts:
        response = world.client.get("/v1/feasibility", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "API key" in response.json()["detail"]


def test_bearer_token_works_like_the_header(world: World) -> None:
    response = world.client.get("/v1/models",
                                headers={"Authorization": f"Bearer {world.keys['planner']}"})
    assert response.status_code == 200


def test_revoked_key_is_401_at_once(world: World) -> None:
    key, token = world.state.keys.create("planner")
    assert world.client.get("/v1/warnings", headers={"X-API-Key": token}).status_code == 200
    assert world.state.keys.revoke(key.key_id)
    assert world.client.get("/v1/warnings", headers={"X-API-Key": token}).status_code == 401


def test_the_key_is_checked_before_the_parameters(world: World) -> None:
    assert world.client.get("/v1/feasibility", params={"period": "bad"}).status_code == 401
    assert world.get("/v1/feasibility", who="account_manager", period="bad").status_code == 403


def test_account_manager_sees_only_own_customers(world: World) -> None:
    company = world.company
    page = world.get("/v1/customers/at-risk", who="account_manager", page_size=500).json()
    assert page["owner"] == company.manager
    assert page["total"] > 0
    assert {item["account_manager"] for item in page["items"]} == {company.manager}
    everyone = world.get("/v1/customers/at-risk", who="admin", page_size=500).json()
    assert page["total"] < everyone["total"]
    own = world.get("/v1/customers/at-risk", who="account_manager", owner=company.manager)
    assert own.status_code == 200


def test_account_manager_asking_for_another_owner_is_403(world: World) -> None:
    response = world.get("/v1/customers/at-risk", who="account_manager",
                         owner=world.company.other_manager)
    assert response.status_code == 403


def test_another_managers_customer_is_404_like_an_unknown_one(world: World) -> None:
    theirs = world.company.customer_of(world.company.other_manager)
    hidden = world.get(f"/v1/customers/{theirs}", who="account_manager")
    unknown = world.get("/v1/customers/NO-SUCH-CUSTOMER", who="account_manager")
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["detail"] == f"no customer {theirs!r}"
    assert unknown.json()["detail"] == "no customer 'NO-SUCH-CUSTOMER'"
    assert world.get(f"/v1/customers/{theirs}", who="other_manager").status_code == 200


def test_planner_filters_by_owner_and_unknown_owner_is_404(world: World) -> None:
    manager = world.company.other_manager
    page = world.get("/v1/customers/at-risk", who="planner", owner=manager).json()
    assert page["items"] and {i["account_manager"] for i in page["items"]} == {manager}
    assert world.get("/v1/customers/at-risk", who="planner",
                     owner="Nobody Here").status_code == 404


# --- validation and refusals --------------------------------------------------------------------

INVALID: list[tuple[str, str, dict[str, Any] | None, Any]] = [
    ("GET", "/v1/feasibility", {"period": "2026Q5"}, None),
    ("GET", "/v1/feasibility", {"as_of": "yesterday"}, None),
    ("GET", "/v1/recalibration", {"method": "magic"}, None),
    ("GET", "/v1/customers/at-risk", {"page": 0}, None),
    ("GET", "/v1/customers/at-risk", {"page_size": 10_000}, None),
    ("GET", "/v1/customers/at-risk", {"min_probability": 2}, None),
    ("GET", "/v1/forecasts", {"freq": "X"}, None),
    ("GET", "/v1/forecasts", {"horizon": 0}, None),
    ("GET", "/v1/warnings", {"state": "on-fire"}, None),
    ("POST", "/v1/feasibility/what-if", None, {"level": "company", "key": "all", "target": -5}),
    ("POST", "/v1/feasibility/what-if", None, {**WHAT_IF, "surprise": 1}),
    ("POST", "/v1/feasibility/what-if", None, {"level": "company"}),
    ("POST", "/v1/silences", None, {**SILENCE, "matchers": ["not a matcher"]}),
    ("POST", "/v1/silences", None, {**SILENCE, "matchers": []}),
    ("POST", "/v1/silences", None, {**SILENCE, "matchers": ["rep=~A\u0000"]}),
    ("POST", "/v1/silences", None, {**SILENCE, "comment": "known\u0000"}),
    ("POST", "/v1/warnings/evaluate", None, {"as_of": "2026-13-01"}),
]


@pytest.mark.parametrize(("method", "path", "params", "body"), INVALID)
def test_invalid_input_is_422(world: World, method: str, path: str,
                              params: dict[str, Any] | None, body: Any) -> None:
    response = world.client.request(method, path, headers=world.headers("admin"),
                                    params=params, json=body)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


def _messages(response: Any) -> str:
    return " ".join(str(error["msg"]) for error in response.json()["detail"])


def test_a_silence_is_a_start_and_a_length_so_every_window_is_real(world: World) -> None:
    made = world.post("/v1/silences", SILENCE)
    assert made.status_code == 201 and made.json()["ends_at"] == "2026-12-01"
    for days in (0, -3):  # the schema says so: 422 without reaching the store
        assert world.post("/v1/silences", {**SILENCE, "days": days}).status_code == 422
    old = world.post("/v1/silences", {**{k: v for k, v in SILENCE.items() if k != "days"},
                                      "ends_at": "2026-12-01"})
    assert old.status_code == 422  # the window's end is no longer an input


def test_a_regex_outside_the_api_grammar_is_422_in_words(world: World) -> None:
    regex = world.post("/v1/silences", {**SILENCE, "matchers": ["rep=~(unclosed"]})
    assert regex.status_code == 422 and "not a matcher the API takes" in _messages(regex)


@pytest.mark.parametrize("pattern", [
    r'rep=~"(a)\\1"',  # a backreference: exponential in a backtracking engine
    'rep=~"(?=a)a"',  # lookahead
    'rep=~"a{5000}"',  # a repetition too large to compile safely
    "rep=~" + "(a|a)*" * 60,  # over the length cap of a matcher
])
def test_pathological_silence_regexes_are_422(world: World, pattern: str) -> None:
    response = world.post("/v1/silences", {**SILENCE, "matchers": [pattern]}, who="sales_ops")
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
    listed = world.get("/v1/silences").json()
    assert all(pattern not in s["matchers"] for s in listed)


def test_a_backtracking_silence_is_stored_and_matched_in_linear_time(world: World) -> None:
    # The issue's (.|.)*Z hung a backtracking engine for minutes on a long label; the
    # matchers run on RE2, so it is a safe silence and the evaluation that uses it answers.
    created = world.post("/v1/silences", {**SILENCE, "matchers": ["rep=~(.|.)*Z"]},
                         who="sales_ops")
    assert created.status_code == 201, created.text
    assert world.post("/v1/warnings/evaluate", who="sales_ops").status_code in (200, 409)
    world.client.delete(f"/v1/silences/{created.json()['id']}", headers=world.headers("admin"))


NON_STANDARD_JSON = [
    b'{"level": "company", "key": "all", "target": NaN}',
    b'{"level": "company", "key": "all", "target": Infinity}',
    b'{"level": "company", "key": "all", "target": -Infinity}',
    b'{"level": "company", "key": "all", "target": 1e400}',
    b'{"level": "company", "key": "all", "target": 1' + b"0" * 5000 + b"}",
    b'{"level": "company", "key": "\xff\xfe", "target": 5}',  # not UTF-8
]


@pytest.mark.parametrize("body", NON_STANDARD_JSON, ids=range(len(NON_STANDARD_JSON)))
@pytest.mark.parametrize("path", ["/v1/feasibility/what-if", "/v1/warnings/evaluate",
                                  "/v1/silences"])
def test_non_standard_json_is_422_never_500(world: World, path: str, body: bytes) -> None:
    headers = {**world.headers("admin"), "content-type": "application/json"}
    response = world.client.post(path, headers=headers, content=body)
    assert response.status_code == 422, (body[:60], response.status_code, response.text[:200])
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_405_lists_every_method_of_the_path(world: World) -> None:
    response = world.client.put("/v1/silences", headers=world.headers("admin"))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


def test_requests_outside_the_data_are_404(world: World) -> None:
    # Well-formed, but the data has nothing there: not found (a schema-valid request is never
    # answered 400, so generated clients and schemathesis's default checks agree).
    outside = world.get("/v1/feasibility", as_of="1999-01-01")
    assert outside.status_code == 404 and "outside the data" in outside.json()["detail"]
    assert world.get("/v1/feasibility", as_of="2030-01-01").status_code == 404
    assert world.get("/v1/feasibility", period="1990Q1").status_code == 404
    assert world.post("/v1/warnings/evaluate", {"as_of": "1999-01-01"}).status_code == 404


# --- contents -----------------------------------------------------------------------------------


def test_feasibility_defaults_to_the_current_quarter(world: World) -> None:
    body = world.get("/v1/feasibility").json()
    assert (body["period"], body["as_of"]) == ("2026Q4", "2026-11-16")
    company = next(n for n in body["nodes"] if n["level"] == "company")
    assert company["target"] > 0 and 0 <= company["p_attain"] <= 1
    assert company["p10"] <= company["p50"] <= company["p90"]
    assert company["must_hit"] <= company["stretch"]
    levels = {n["level"] for n in body["nodes"]}
    assert {"company", "region", "team", "rep"} <= levels
    assert any("win model: champion" in note for note in body["notes"])


def test_what_if_reuses_the_same_draws(world: World) -> None:
    feasibility = world.get("/v1/feasibility").json()
    north = next(n for n in feasibility["nodes"] if n["level"] == "region")
    ask = {"level": "region", "key": north["key"]}
    at_current = world.post("/v1/feasibility/what-if", {**ask, "target": north["target"]}).json()
    assert at_current["p_attain"] == pytest.approx(north["p_attain"])
    assert at_current["p_attain_current"] == pytest.approx(north["p_attain"])
    at_median = world.post("/v1/feasibility/what-if", {**ask, "target": north["p50"]}).json()
    assert at_median["p_attain"] == pytest.approx(0.5, abs=0.02)
    easy = world.post("/v1/feasibility/what-if", {**ask, "target": 1.0}).json()
    assert easy["p_attain"] == 1.0
    assert easy["gap"] == pytest.approx(1.0 - easy["expected"])
    missing = world.post("/v1/feasibility/what-if", {"level": "region", "key": "Atlantis",
                                                     "target": 5.0})
    assert missing.status_code == 404


def test_recalibration_keeps_the_parents_total(world: World) -> None:
    body = world.get("/v1/recalibration", method="proportional_p50").json()
    assert body["method"] == "proportional_p50"
    nodes = body["nodes"]
    company = next(n for n in nodes if n["level"] == "company")
    regions = [n for n in nodes if n["level"] == "region"]
    total = sum(n["recalibrated_target"] for n in regions)
    assert total == pytest.approx(company["recalibrated_target"], rel=1e-6)


def test_at_risk_is_paged_riskiest_first(world: World) -> None:
    first = world.get("/v1/customers/at-risk", page_size=5).json()
    second = world.get("/v1/customers/at-risk", page_size=5, page=2).json()
    amounts = [i["revenue_at_risk"] for i in first["items"] + second["items"]]
    assert amounts == sorted(amounts, reverse=True) and len(amounts) == 10
    assert first["total"] == second["total"]
    risky = world.get("/v1/customers/at-risk", min_probability=0.9, page_size=500).json()
    assert all(i["churn_probability"] >= 0.9 for i in risky["items"])
    assert 0 < risky["total"] < first["total"]


def test_customer_detail_has_score_and_reasons(world: World) -> None:
    top = world.get("/v1/customers/at-risk", page_size=1, min_probability=0.6).json()["items"][0]
    detail = world.get(f"/v1/customers/{top['customer_id']}").json()
    assert detail["scored"] and detail["rank"] >= 1
    assert detail["churn_probability"] == pytest.approx(top["churn_probability"])
    assert detail["reasons"] == top["reasons"] and detail["reasons"]


def test_forecasts_of_the_served_forecaster(world: World) -> None:
    body = world.get("/v1/forecasts", level="region", horizon=2).json()
    assert body["freq"] == "M" and body["model_version"] == world.versions["forecast"]
    keys = {p["key"] for p in body["points"]}
    assert len(body["points"]) == 2 * len(keys) and len(keys) >= 2
    for point in body["points"]:
        assert point["yhat_p10"] <= point["yhat_p50"] <= point["yhat_p90"]
    assert world.get("/v1/forecasts", freq="W").status_code == 404
    assert world.get("/v1/forecasts", horizon=12).status_code == 404
    assert world.get("/v1/forecasts", level="rep").status_code == 404


def test_warnings_evaluate_list_and_silence(world: World) -> None:
    evaluated = world.post("/v1/warnings/evaluate", {"as_of": "2026-11-16"}, who="sales_ops")
    assert evaluated.status_code == 200
    report = evaluated.json()
    assert report["evaluated"] or report["already"]
    # This service does not deliver: whatever the outbox holds is said to be undelivered.
    outbox = world.state.alerts.outbox()
    assert report["undelivered"] == sum(m.status != "delivered" for m in outbox)
    listed = world.get("/v1/warnings", who="planner", state="all").json()
    assert listed["count"] >= len(report["alerts"])
    firing = world.get("/v1/warnings", state="firing").json()["alerts"]
    assert all(a["state"] == "firing" and a["summary"] for a in firing)
    assert world.post("/v1/warnings/evaluate", {"as_of": "2026-10-01"}).status_code == 409
    made = world.post("/v1/silences", SILENCE, who="sales_ops").json()
    assert made["created_by"].startswith("sales_ops key")
    assert made["id"] in {s["id"] for s in world.get("/v1/silences").json()}
    gone = world.client.delete(f"/v1/silences/{made['id']}", headers=world.headers("admin"))
    assert gone.status_code == 204
    again = world.client.delete(f"/v1/silences/{made['id']}", headers=world.headers("admin"))
    assert again.status_code == 404


# --- limits -------------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(world: World,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(world.state, "limiter",
                        TokenBucketLimiter(60, burst=2, clock=lambda: now[0]))
    assert [world.get("/v1/warnings").status_code for _ in range(2)] == [200, 200]
    refused = world.get("/v1/warnings")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert world.get("/v1/warnings", who="planner").status_code == 200  # per key
    now[0] += 1.0
    assert world.get("/v1/warnings").status_code == 200


def test_bodies_over_the_limit_are_413(world: World) -> None:
    big = json.dumps({**WHAT_IF, "pad": "x" * 70_000})
    headers = {**world.headers("admin"), "content-type": "application/json"}
    declared = world.client.post("/v1/feasibility/what-if", headers=headers, content=big)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b" " * 4096
        yield json.dumps(WHAT_IF).encode()

    streamed = world.client.post("/v1/feasibility/what-if", headers=headers, content=chunks())
    assert streamed.status_code == 413
    small = world.client.post("/v1/feasibility/what-if", headers=headers,
                              content=json.dumps(WHAT_IF))
    assert small.status_code == 200


BODY_LIMIT: int = ServiceSettings.model_fields["max_body_bytes"].default

# The longest compact UTF-8 JSON a string can take per character: 4 bytes, or 6 for a control
# character (written \u001f) unless its pattern is one negated class that leaves them out (or
# only the two-byte escapes \t \n \r \b \f in).
_CONTROLS = [chr(c) for c in (*range(0x20), 0x7F)]
_SHORT_ESCAPES = set("\t\n\r\b\f")


def _bytes_per_char(schema: dict[str, Any]) -> int:
    match = re.fullmatch(r"\^(\[\^[^\]]*\])[+*]\$", schema.get("pattern", ""))
    if match is None:
        return 6
    allowed = [c for c in _CONTROLS if re.fullmatch(match.group(1), c)]
    return 4 if set(allowed) <= _SHORT_ESCAPES else 6


def _longest(schema: dict[str, Any], components: dict[str, Any]) -> float:
    """The most bytes a value valid under ``schema`` takes as compact UTF-8 JSON (inf when the
    schema does not bound it)."""
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return max(_longest(part, components) for part in schema[key])
    for key in ("const", "enum"):
        if key in schema:
            values = [schema[key]] if key == "const" else schema[key]
            return max(len(json.dumps(v, ensure_ascii=False).encode()) for v in values)
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "date":  # YYYY-MM-DD (IsoDate refuses anything else)
            return 12
        return 2 + _bytes_per_char(schema) * schema.get("maxLength", math.inf)
    if kind in ("number", "integer"):  # repr of a float; the strict parser's longest integer
        return 24 if kind == "number" else MAX_INT_DIGITS + 1
    if kind in ("boolean", "null"):
        return 5
    if kind == "array":
        return 2 + schema.get("maxItems", math.inf) * (_longest(schema["items"], components) + 1)
    if kind == "object":
        if schema.get("additionalProperties", True) is not False:
            return math.inf
        sizes = sorted((len(json.dumps(name).encode()) + 2 + _longest(part, components)
                        for name, part in schema.get("properties", {}).items()), reverse=True)
        return 2 + sum(sizes[:schema.get("maxProperties", len(sizes))])
    return math.inf


def test_every_schema_valid_body_fits_well_under_the_body_limit(world: World) -> None:
    """The OpenAPI document bounds every request body (maxItems, maxLength, maxProperties) so
    that the longest body it allows is at most half the default limit: a valid request is never
    a 413."""
    document = world.client.get("/openapi.json").json()
    components = document["components"]["schemas"]
    longest = {(method, path): _longest(op["requestBody"]["content"]["application/json"]
                                        ["schema"], components)
               for path, ops in document["paths"].items() for method, op in ops.items()
               if "requestBody" in op}
    assert ("post", "/v1/scenario") in longest and ("post", "/v1/silences") in longest
    assert all(size <= BODY_LIMIT / 2 for size in longest.values()), longest


def _largest_scenario(char: str) -> dict[str, Any]:
    """The biggest scenario the bounds allow, every name of ``char``s."""
    names = [char * MAX_NAME_LENGTH] * MAX_NAMES
    where = {"customer_id": names, "segment": names, "region": names}
    return {"name": char * MAX_TITLE_LENGTH, "description": char * MAX_DESCRIPTION_LENGTH,
            "shocks": [{"kind": "win_rate", "factor": 0.5, "where": where}] * MAX_SHOCKS}


def test_the_largest_scenario_is_taken_and_one_more_is_a_422_not_a_413(world: World) -> None:
    largest = _largest_scenario("\U0001f600")  # 4 bytes each in UTF-8
    body = json.dumps({"scenario": largest}, ensure_ascii=False).encode()
    assert len(body) < BODY_LIMIT / 2
    answer = world.post("/v1/scenario", {"scenario": largest})
    assert answer.status_code == 200, answer.text[:300]
    where = largest["shocks"][0]["where"]
    over = [
        {**largest, "shocks": largest["shocks"] * 2},
        {**largest, "shocks": [{**largest["shocks"][0],
                                "where": {**where, "customer_id": where["customer_id"] * 2}}]},
        {**largest, "shocks": [{**largest["shocks"][0], "where": {**where, "rep": "Ana"}}]},
        {**largest, "name": largest["name"] + "x"},
        {**largest, "shocks": [{"kind": "lose", "where": {"segment": "x" * 41}}]},
        {**largest, "shocks": [{"kind": "lose", "where": {"segment": "a\x00b"}}]},
    ]
    for scenario in over:
        refused = world.post("/v1/scenario", {"scenario": scenario})
        assert refused.status_code == 422, refused.text


def test_scenario_outside_the_data_is_a_documented_404(world: World) -> None:
    documented = _operations(world)
    assert {"400", "404", "413", "503"} <= set(documented[("POST", "/v1/scenario")]["responses"])
    assert not {"400", "404", "503"} & set(documented[("GET", "/v1/scenarios")]["responses"])
    for body, says in [({"scenario": "budget-freeze", "as_of": "1990-01-01"}, "1990-01-01"),
                       ({"scenario": "budget-freeze", "period": "1990Q1"}, "1990Q1"),
                       ({"scenario": "no-such-scenario"}, "no-such-scenario")]:
        answer = world.post("/v1/scenario", body)
        assert answer.status_code == 404, (body, answer.text)
        assert says in answer.json()["detail"]


def test_a_scenario_body_over_the_limit_is_a_plain_413(world: World) -> None:
    big = {"scenario": "budget-freeze", "pad": "x" * 70_000}
    refused = world.post("/v1/scenario", big)
    assert refused.status_code == 413
    detail = refused.json()["detail"]
    assert detail.startswith("request body larger than 65,536 bytes") and "smaller" in detail


# --- health, metrics, OpenAPI -------------------------------------------------------------------


def test_health_endpoints_need_no_key(world: World) -> None:
    assert world.client.get("/livez").json() == {"status": "ok"}
    ready = world.client.get("/readyz", headers=world.headers("planner"))
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] and body["registry"]["reachable"]
    assert {k: m["version"] for k, m in body["models"].items()} == world.versions
    assert body["data"]["tables"]["orders"] > 0 and body["data"]["end"] == "2026-11-15"


def test_metrics_count_requests_per_route_and_status(world: World) -> None:
    world.get("/v1/models")
    world.client.get("/v1/models")
    text = world.client.get("/metrics").text
    assert 'quotacast_http_requests_total{method="GET",route="/v1/models",status="200"}' in text
    assert 'quotacast_http_requests_total{method="GET",route="/v1/models",status="401"}' in text
    assert ('quotacast_http_request_duration_seconds_bucket{method="GET",'
            'route="/v1/models",status="200",le="+Inf"}') in text
    assert f'quotacast_model_info{{kind="churn",version="{world.versions["churn"]}"}} 1' in text


def _operations(world: World) -> dict[tuple[str, str], dict[str, Any]]:
    document = world.client.get("/openapi.json").json()
    return {(method.upper(), path): op for path, ops in document["paths"].items()
            for method, op in ops.items()}


def test_every_v1_route_has_its_roles_in_the_matrix(world: World) -> None:
    """A new endpoint states who may call it: its row in MATRIX (one router per resource in
    service/http/routes, one entry in ROUTERS, one row here)."""
    templates = {(method, path) for method, path in _operations(world) if path.startswith("/v1/")}

    def template_of(method: str, path: str) -> tuple[str, str] | None:
        if (method, path) in templates:  # a literal path wins over a template matching it
            return method, path
        for m, template in templates:
            pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
            if m == method and re.fullmatch(pattern, path):
                return m, template
        return None

    assert {template_of(method, path) for method, path, *_ in MATRIX} == templates


def test_openapi_documents_the_error_codes_of_every_route(world: World) -> None:
    for (method, path), op in _operations(world).items():
        codes = set(op["responses"])
        if path.startswith("/v1/"):
            assert {"401", "403", "429"} <= codes, (method, path)
            assert op["security"], (method, path)
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in codes, (method, path)
        if method == "POST":
            assert "413" in codes, (method, path)
    documented = _operations(world)
    assert "404" in documented[("GET", "/v1/customers/{customer_id}")]["responses"]
    assert "409" in documented[("POST", "/v1/warnings/evaluate")]["responses"]
    retry = documented[("GET", "/v1/feasibility")]["responses"]["429"]["headers"]
    assert "Retry-After" in retry


def test_every_status_code_answered_is_documented(world: World) -> None:
    # A battery that provokes each code, then every (route, status) the app has answered in
    # this module (counted by the metrics) must be in the OpenAPI document.
    world.client.get("/v1/feasibility")  # 401
    world.get("/v1/feasibility", who="account_manager")  # 403
    world.get("/v1/customers/NOPE")  # 404
    world.get("/v1/feasibility", as_of="1999-01-01")  # 404 (outside the data)
    world.get("/v1/feasibility", period="x")  # 422
    documented = _operations(world)
    answered = world.state.metrics.counts()  # (method, route, status) -> n
    checked = 0
    for (method, route, code) in answered:
        if route in ("/", "/logout", "unmatched", "/openapi.json"):
            continue
        if (method, route) not in documented:  # a method the path does not serve
            assert code == "405", (method, route, code)
            continue
        assert code in documented[(method, route)]["responses"], (method, route, code)
        checked += 1
    assert checked >= 20


# --- dashboard ----------------------------------------------------------------------------------


def test_dashboard_sign_in_keeps_the_key_in_an_httponly_cookie(world: World) -> None:
    client = world.client
    client.cookies.clear()
    assert client.get("/").status_code == 401
    assert "Sign in" in client.get("/").text
    assert client.get("/", params={"key": "qk_bad"}).status_code == 401
    signed = client.get("/", params={"key": world.keys["planner"]}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    page = client.get("/")
    assert page.status_code == 200
    for section in ('id="feasibility"', 'id="warnings"', 'id="at-risk"', "<svg"):
        assert section in page.text
    # The cookie signs in the page only, never the API.
    assert client.get("/v1/warnings").status_code == 401
    client.cookies.clear()


def test_dashboard_of_an_account_manager_shows_their_customers_only(world: World) -> None:
    page = world.client.get("/", headers=world.headers("account_manager")).text
    assert 'id="feasibility"' not in page and 'id="warnings"' not in page
    assert "My customers at risk" in page
    other = world.company.other_manager
    assert f"<td>{other}</td>" not in page
    rows = [line for line in page.splitlines() if "data-customer=" in line]
    mine = set(world.company.tables.customers.loc[
        world.company.tables.customers[ACCOUNT_MANAGER] == world.company.manager,
        CUSTOMER_ID])
    assert rows and all(line.split('"')[1] in mine for line in rows)


# --- abuse --------------------------------------------------------------------------------------


def test_readyz_without_a_key_reveals_nothing_but_readiness(world: World) -> None:
    bare = world.client.get("/readyz")
    assert bare.status_code == 200 and bare.json() == {"ready": True}
    customers = set(world.company.tables.customers[CUSTOMER_ID].astype(str))
    assert not any(c in bare.text for c in customers) and "metrics" not in bare.text
    detailed = world.client.get("/readyz", headers=world.headers("account_manager"))
    assert detailed.status_code == 200 and "models" in detailed.json()
    wrong = world.client.get("/readyz", headers={"X-API-Key": "qk_00000000_" + "A" * 43})
    assert wrong.status_code == 401


@pytest.mark.parametrize(("path", "who"), [
    ("/", None), ("/", "planner"), ("/v1/warnings", "planner"), ("/v1/warnings", None),
    ("/v1/customers/NOPE", "admin"), ("/livez", None), ("/readyz", None), ("/docs", None),
    ("/openapi.json", None), ("/no-such-page", None),
])
def test_every_response_carries_the_security_headers(world: World, path: str,
                                                     who: str | None) -> None:
    headers = world.headers(who) if who else {}
    response = world.client.get(path, headers=headers)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    if path != "/docs":
        assert "script-src" not in csp  # the dashboard runs no script at all


def test_security_headers_on_a_413_too(world: World) -> None:
    big = json.dumps({**WHAT_IF, "pad": "x" * 70_000})
    headers = {**world.headers("admin"), "content-type": "application/json"}
    response = world.client.post("/v1/feasibility/what-if", headers=headers, content=big)
    assert response.status_code == 413
    assert response.headers["x-content-type-options"] == "nosniff"


def test_wrong_keys_are_throttled_per_client_never_valid_keys(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(world.state, "failures",
                        TokenBucketLimiter(6, burst=3, clock=lambda: now[0]))
    wrong = {"X-API-Key": "qk_00000000_" + "A" * 43}
    codes = [world.client.get("/v1/warnings", headers=wrong).status_code for _ in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    refused = world.client.get("/v1/warnings", headers=wrong)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "10"
    # A valid key from the same client is not locked out, on the API or the dashboard.
    assert world.get("/v1/warnings", who="planner").status_code == 200
    assert world.client.get("/", headers=world.headers("planner")).status_code == 200
    # The dashboard's sign-in with a wrong key spends from the same budget.
    assert world.client.get("/", params={"key": "qk_bad"}).status_code == 429
    now[0] += 10.0
    assert world.client.get("/v1/warnings", headers=wrong).status_code == 401
    # No key at all is not a guess: always 401.
    assert world.client.get("/v1/warnings").status_code == 401
