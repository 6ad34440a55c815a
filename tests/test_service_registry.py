"""Start-up and reload against an unreachable registry, a missing champion and bad data.

The service must keep serving what it has and say what is missing on /readyz.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    Company,
    StubChurn,
    closed_port,
    company_frames,
    fresh_registry,
    make_company,
    quiet_options,
    quiet_registry,
    register_stubs,
    settings_for,
)

from engine import tracking
from engine.io import write_data_dir
from service.http.app import create_app
from service.http.state import AppState


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Company:
    return make_company(tmp_path_factory.mktemp("registry-company"))


@pytest.fixture(autouse=True)
def _no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow retries a dead server for minutes by default; these tests want the answer now.
    quiet_registry(monkeypatch)


def _client(root: Path, data: Path | str, uri: str) -> Iterator[tuple[TestClient, AppState]]:
    app = create_app(settings_for(root, data, uri), quiet_options())
    with TestClient(app) as client:
        yield client, app.state.quotacast


@pytest.fixture
def dead_registry_app(tmp_path: Path, company: Company) -> Iterator[tuple[TestClient, AppState]]:
    yield from _client(tmp_path, company.data, f"http://127.0.0.1:{closed_port()}")


@pytest.fixture
def registry_app(tmp_path: Path, company: Company) -> Iterator[tuple[TestClient, AppState, str]]:
    uri = fresh_registry(tmp_path)
    register_stubs(uri, company.tables, kinds=("churn", "win"))  # no forecast champion
    for client, state in _client(tmp_path, company.data, uri):
        yield client, state, uri


def _key(state: AppState, role: str = "admin") -> dict[str, str]:
    return {"X-API-Key": state.keys.create(role)[1]}


def _ready(client: TestClient, state: AppState) -> Any:
    """/readyz with its details (they need a key)."""
    return client.get("/readyz", headers=_key(state, "planner"))


def test_unreachable_registry_at_start_up_serves_without_models(
        dead_registry_app: tuple[TestClient, AppState]) -> None:
    client, state = dead_registry_app
    ready = _ready(client, state)
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["registry"]["reachable"] is False
    assert body["models"] == {"churn": None, "forecast": None, "win": None}
    assert all("registry unreachable" in why for why in body["model_problems"].values())
    headers = _key(state)
    assert client.get("/v1/customers/at-risk", headers=headers).status_code == 503
    assert client.get("/v1/forecasts", headers=headers).status_code == 503
    # Feasibility needs no champion: historical stage win rates stand in, and it says so.
    feasibility = client.get("/v1/feasibility", headers=headers)
    assert feasibility.status_code == 200
    notes = " ".join(feasibility.json()["notes"])
    assert "no champion" in notes and "churn adjustment skipped" in notes
    models = client.get("/v1/models", headers=headers).json()
    assert models["models"] == [] and not models["registry"]["reachable"]


def test_registry_lost_after_start_up_keeps_the_served_models(
        registry_app: tuple[TestClient, AppState, str]) -> None:
    client, state, uri = registry_app
    headers = _key(state)
    before = _ready(client, state).json()
    assert before["registry"]["reachable"] is True
    assert before["models"]["churn"]["version"] == "1"
    tracking.configure(f"http://127.0.0.1:{closed_port()}")
    try:
        after = _ready(client, state).json()
        assert after["registry"]["reachable"] is False
        assert after["models"]["churn"]["version"] == "1"
        reloaded = client.post("/v1/models/reload", headers=headers)
        assert reloaded.status_code == 200
        body = reloaded.json()
        assert {m["kind"] for m in body["models"]} == {"churn", "win"}
        assert body["missing"]["churn"] == "registry unreachable: kept v1"
        assert client.get("/v1/customers/at-risk", headers=headers).status_code == 200
    finally:
        tracking.configure(uri)
    assert _ready(client, state).json()["registry"]["reachable"] is True


def test_a_kind_without_champion_is_reported_and_its_endpoint_is_503(
        registry_app: tuple[TestClient, AppState, str]) -> None:
    client, state, _ = registry_app
    body = _ready(client, state).json()
    assert body["models"]["forecast"] is None
    assert "no champion for quotacast-forecast" in body["model_problems"]["forecast"]
    response = client.get("/v1/forecasts", headers=_key(state, "planner"))
    assert response.status_code == 503
    assert "quotacast train forecast" in response.json()["detail"]


def test_reload_picks_up_a_new_champion_and_drops_stale_results(
        registry_app: tuple[TestClient, AppState, str]) -> None:
    client, state, _ = registry_app
    headers = _key(state)
    client.get("/v1/customers/at-risk", headers=headers)
    run = tracking.log_and_register(
        "churn", StubChurn(), input_example=pd.DataFrame({"customer_id": ["C1"]}),
        params={}, metrics={"pr_auc": 0.9}, gate_metric="pr_auc", greater_is_better=True,
        holdout="stub")
    tracking.promote("churn", run.version, force=True)
    assert _ready(client, state).json()["models"]["churn"]["version"] == "1"
    body = client.post("/v1/models/reload", headers=headers).json()
    assert next(m for m in body["models"] if m["kind"] == "churn")["version"] == run.version
    assert _ready(client, state).json()["models"]["churn"]["version"] == run.version


def test_bad_data_is_not_ready_and_says_why(tmp_path: Path) -> None:
    frames = dict(company_frames())
    frames["orders"] = frames["orders"].drop(columns=["amount"])
    data = write_data_dir(frames, tmp_path / "bad-data")
    for client, state in _client(tmp_path, data, f"http://127.0.0.1:{closed_port()}"):
        assert client.get("/livez").status_code == 200
        ready = _ready(client, state)
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and not body["data"]["ok"]
        assert any(p.startswith("orders:1: amount:") for p in body["data"]["problems"])
        headers = _key(state, "planner")
        response = client.get("/v1/feasibility", headers=headers)
        assert response.status_code == 503 and "orders:1: amount" in response.json()["detail"]
        assert client.get("/v1/feasibility").status_code == 401  # still a key first
        page = client.get("/", headers=headers)
        assert page.status_code == 200 and "is not loaded" in page.text


def test_missing_data_directory_is_not_ready(tmp_path: Path) -> None:
    for client, state in _client(tmp_path, tmp_path / "nowhere", f"http://127.0.0.1:{closed_port()}"):
        body = _ready(client, state).json()
        assert body["ready"] is False
        assert any("data directory not found" in p for p in body["data"]["problems"])
