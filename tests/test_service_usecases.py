"""The service's use cases answer without HTTP and refuse with plain exceptions, which the HTTP
layer maps to one status code each."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from test_service_support import make_company, quiet_options, settings_for

from engine.alerting.store import AlertStore
from service.http.app import create_app
from service.http.errors import refused, status_of
from service.http.routes import ROUTERS
from service.usecases.alerts import add_silence, expire_silence, wanted_states
from service.usecases.customers import churn_scores, find_customer
from service.usecases.forecasts import served_forecast
from service.usecases.planning import feasibility_run
from service.usecases.request import (
    BadRequest,
    Conflict,
    NotFound,
    Refusal,
    RequestError,
    Unavailable,
)
from service.usecases.served import DataState, RegistryStatus, Served, load_data


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The small company served without any model (nothing here needs one)."""
    root = tmp_path_factory.mktemp("usecases")
    company = make_company(root)
    settings = settings_for(root, company.data, "sqlite:///unused.db")
    store = AlertStore(settings.database_url)
    yield Served(settings=settings, data=load_data(str(company.data)), alerts=store,
                 registry=RegistryStatus("unused"), rules=Path("rules/default.yaml"))
    store.close()


def test_without_data_a_use_case_says_the_data_is_not_loaded(served: Served) -> None:
    problems = [f"orders.csv:{n}: amount: not a number" for n in range(5)]
    empty = Served(settings=served.settings, data=DataState("d", problems=problems),
                   alerts=served.alerts, registry=served.registry, rules=served.rules)
    with pytest.raises(Unavailable, match=r"orders.csv:2: .*\(and 2 more problems, see /readyz\)"):
        feasibility_run(empty, None, date(1990, 1, 1))  # the data first, the as_of after


def test_an_as_of_outside_the_data_is_a_request_error_naming_it(served: Served) -> None:
    with pytest.raises(RequestError, match="outside the data") as caught:
        feasibility_run(served, None, date(1990, 1, 1))
    assert caught.value.parameter == "as_of"


def test_without_a_served_model_the_use_case_says_how_to_get_one(served: Served) -> None:
    with pytest.raises(Unavailable, match="quotacast train churn"):
        churn_scores(served)
    with pytest.raises(Unavailable, match="quotacast train forecast"):
        served_forecast(served, "company", None, None)


def test_another_managers_customer_is_not_found_like_an_unknown_one(served: Served) -> None:
    customers = served.tables().customers
    someone = customers.iloc[0]
    with pytest.raises(NotFound, match="no customer 'nobody'"):
        find_customer(served, "nobody", None)
    with pytest.raises(NotFound, match=f"no customer '{someone['customer_id']}'"):
        find_customer(served, str(someone["customer_id"]), "not " + str(someone["account_manager"]))


def test_silences_refuse_a_bad_matcher_and_an_unknown_id(served: Served) -> None:
    with pytest.raises(BadRequest):
        add_silence(served, ['region=~"("'], date(2017, 1, 1), date(2017, 2, 1), "me", "x")
    with pytest.raises(NotFound, match="no active silence with id 'nope'"):
        expire_silence(served, "nope")


@pytest.mark.parametrize(("refusal", "code"), [
    (RequestError("as_of", "x"), 400), (BadRequest("x"), 400), (NotFound("x"), 404),
    (Conflict("x"), 409), (Unavailable("x"), 503)])
def test_each_refusal_has_one_status_code(refusal: Refusal, code: int) -> None:
    assert status_of(refusal) == code


def test_a_refusal_is_answered_with_its_code_and_the_sentence() -> None:
    app = FastAPI()
    app.add_exception_handler(Refusal, refused)

    @app.get("/thing")
    def thing() -> None:
        raise NotFound("no thing 'x'")

    response = TestClient(app).get("/thing")
    assert (response.status_code, response.json()) == (404, {"detail": "no thing 'x'"})


def test_the_app_mounts_every_router_of_the_list(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path, tmp_path, "sqlite:///unused.db"), quiet_options())
    documented = {(path, method.upper()) for path, operations in app.openapi()["paths"].items()
                  for method in operations}
    listed = {(route.path, method) for router in ROUTERS for route in router.routes
              if isinstance(route, APIRoute) and route.include_in_schema
              for method in route.methods}
    assert listed == documented


def test_wanted_states_are_the_same_rule_for_cli_and_http() -> None:
    assert wanted_states(None) == ["firing", "pending", "resolved"]
    assert wanted_states(["firing", "active"]) == ["firing", "pending", "resolved"]
    assert wanted_states(["normal", "all"]) is None
    with pytest.raises(RequestError, match="active or all; got on-fire") as caught:
        wanted_states(["on-fire"])
    assert caught.value.option == "--state"


def test_an_evaluation_says_what_stays_undelivered(tmp_path: Path) -> None:
    """The receiver is down: the notification waits for a retry, and the evaluation says so."""
    from engine.config import Settings
    from service.usecases.alerts import evaluate_rules

    folder = tmp_path / "data"
    folder.mkdir()
    tables = {
        "org": ["rep,team,region", "Ana,N1,North", "Cy,S1,South"],
        "customers": ["customer_id,account_manager", "C1,Ana", "C3,Cy"],
        "orders": ["customer_id,order_date,amount", "C1,2026-10-05,150", "C3,2026-11-01,300",
                   "C3,2026-11-15,1"],
        "targets": ["period,level,key,amount", "2026Q4,region,North,400",
                    "2026Q4,region,South,200"],
    }
    for name, lines in tables.items():
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "receivers:\n  - name: down\n    webhook_configs: [{url: 'http://127.0.0.1:9/hook'}]\n"
        "route: {receiver: down, group_by: [alertname]}\n"
        "groups:\n  - name: plan\n    rules:\n      - alert: PaceBehindPlan\n"
        "        metric: pace_against_plan\n        scope: region\n        op: '<'\n"
        "        threshold: 0.9\n        for: 0\n", encoding="utf-8")
    settings = Settings(data=str(folder), database_url=f"sqlite:///{tmp_path / 'q.db'}",
                        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    store = AlertStore(settings.database_url)
    try:
        served = Served(settings=settings, data=load_data(str(folder)), alerts=store,
                        registry=RegistryStatus("unused"), rules=rules)
        done = evaluate_rules(served, date(2026, 11, 16))
    finally:
        store.close()
    assert done.report.notifications >= 1
    assert done.undelivered == done.report.notifications
