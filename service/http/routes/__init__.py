"""One router per resource, mounted by the app from :data:`ROUTERS` in this order.

Adding an endpoint: a route file here whose routes call one use case of
:mod:`service.usecases` and build the response body, one entry below, and its test.
"""

from __future__ import annotations

from fastapi import APIRouter

from service.http.routes import (
    board,
    customers,
    dashboard,
    deals,
    feasibility,
    forecasts,
    health,
    models,
    scenario,
    warnings,
)

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    feasibility.router,
    scenario.router,
    board.router,
    deals.router,
    customers.router,
    forecasts.router,
    warnings.router,
    models.router,
    dashboard.router,
)
