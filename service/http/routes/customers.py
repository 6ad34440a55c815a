"""At-risk customers and one customer's churn score, scoped to the key's account manager."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from engine.schemas import ACCOUNT_MANAGER, CUSTOMER_ID, REGION, SEGMENT
from models.churn import CHURN_PROBABILITY, REASON_SEPARATOR, REASONS
from service.http.auth import Principal, customer_owner
from service.http.deps import CustomerReader, StateDep
from service.http.errors import errors
from service.http.jsonbody import StrictJSONRoute
from service.http.present import number, text
from service.http.schemas import AtRiskPage, CustomerDetail, CustomerRisk
from service.usecases.churn import EXPECTED_REVENUE, REVENUE_AT_RISK
from service.usecases.customers import at_risk, find_customer
from service.usecases.served import Served

__all__ = ["at_risk_page", "router"]

router = APIRouter(prefix="/v1/customers", tags=["customers"],
                   responses=errors(401, 403, 429, 503), route_class=StrictJSONRoute)


def _reasons(value: Any) -> list[str]:
    shown = text(value)
    return [r for r in shown.split(REASON_SEPARATOR) if r] if shown else []


def _risk(row: Mapping[Any, Any]) -> CustomerRisk:
    return CustomerRisk(
        customer_id=str(row[CUSTOMER_ID]), account_manager=text(row[ACCOUNT_MANAGER]),
        churn_probability=number(row[CHURN_PROBABILITY]) or 0.0,
        revenue_at_risk=number(row[REVENUE_AT_RISK]) or 0.0,
        expected_revenue=number(row.get(EXPECTED_REVENUE)), reasons=_reasons(row[REASONS]))


def at_risk_page(served: Served, principal: Principal, owner: str | None,
                 min_probability: float, page: int, page_size: int) -> AtRiskPage:
    """One page of the caller's at-risk customers (also the dashboard's)."""
    chosen = customer_owner(principal, owner)
    found = at_risk(served, chosen, min_probability, page, page_size,
                    check_owner=principal.scoped_to is None)
    return AtRiskPage(as_of=found.as_of.date(), owner=chosen, min_probability=min_probability,
                      total=found.total, page=page, page_size=page_size,
                      items=[_risk(r) for r in found.rows])


@router.get("/at-risk", response_model=AtRiskPage, responses=errors(404))
def get_at_risk(
    user: CustomerReader,
    state: StateDep,
    owner: Annotated[str | None, Query(
        min_length=1, max_length=200,
        description="Only this account manager's customers (an account manager key: itself "
                    "only).")] = None,
    min_probability: Annotated[float, Query(ge=0, le=1)] = 0.0,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AtRiskPage:
    """Active customers, riskiest first by revenue at risk, with the reasons in plain words."""
    return at_risk_page(state, user, owner, min_probability, page, page_size)


@router.get("/{customer_id}", response_model=CustomerDetail, responses=errors(404))
def get_customer(
    user: CustomerReader,
    state: StateDep,
    customer_id: Annotated[str, Path(min_length=1, max_length=200)],
) -> CustomerDetail:
    """One customer's churn probability, revenue at risk and reasons."""
    found = find_customer(state, customer_id, user.scoped_to)
    row = found.customer
    detail = CustomerDetail(
        customer_id=customer_id, account_manager=text(row.get(ACCOUNT_MANAGER)),
        region=text(row.get(REGION)), segment=text(row.get(SEGMENT)),
        as_of=found.as_of.date(), scored=False)
    if found.score is None:
        return detail
    risk = _risk(found.score)
    return detail.model_copy(update={
        "scored": True, "rank": found.rank,
        "churn_probability": risk.churn_probability, "revenue_at_risk": risk.revenue_at_risk,
        "expected_revenue": risk.expected_revenue, "reasons": risk.reasons})
