"""The service serves every forecaster with a champion in its workspace: one per frequency and
level family (``forecast`` is the monthly company one, ``forecast-W-company`` the weekly...),
each request answered by the champion of the frequency it asks for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    _register,
    fresh_registry,
    make_company,
    quiet_options,
    quiet_registry,
    register_stubs,
    settings_for,
)

from engine.schemas import LEVEL_COMPANY
from features.revenue import revenue_series
from models.forecast import RevenueForecaster
from service.http.app import create_app
from service.usecases.forecast import ServedForecaster


def _weekly(tables: object) -> ServedForecaster:
    series = revenue_series(tables, "W", levels=[LEVEL_COMPANY])  # type: ignore[arg-type]
    fitted = RevenueForecaster(freq="W", horizon=4, n_windows=1,
                               candidates=("seasonal_naive",)).fit(series)
    return ServedForecaster(fitted, "W", [LEVEL_COMPANY])


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, Path]]:
    root = tmp_path_factory.mktemp("service-forecasts")
    company = make_company(root)
    uri = fresh_registry(root)
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        register_stubs(uri, company.tables)
        weekly = _register("forecast-W-company", _weekly(company.tables),
                           pd.DataFrame({"horizon": [4.0]}), "skill")
        app = create_app(settings_for(root, company.data, uri), quiet_options())
        with TestClient(app) as test_client:
            key = app.state.quotacast.keys.create("admin")[1]
            yield test_client, key, root
    assert weekly


def test_each_frequency_is_answered_by_its_own_champion(
        client: tuple[TestClient, str, Path]) -> None:
    http, key, _ = client
    headers = {"X-API-Key": key}
    weekly = http.get("/v1/forecasts", params={"freq": "W"}, headers=headers)
    assert weekly.status_code == 200, weekly.text
    body = weekly.json()
    assert body["freq"] == "W" and len(body["points"]) == 4
    days = pd.to_datetime([p["ds"] for p in body["points"]])
    assert (days.to_series().diff().dropna() == pd.Timedelta(days=7)).all()
    monthly = http.get("/v1/forecasts", headers=headers).json()
    assert monthly["freq"] == "M"  # no freq asked: the monthly company champion, as before
    assert http.get("/v1/forecasts", params={"freq": "Q"}, headers=headers).status_code == 404


def test_the_models_resource_lists_every_served_forecaster(
        client: tuple[TestClient, str, Path]) -> None:
    http, key, _ = client
    listed = http.get("/v1/models", headers={"X-API-Key": key}).json()
    kinds = {m["kind"] for m in listed["models"]}
    assert {"forecast", "forecast-W-company", "churn", "win"} <= kinds
