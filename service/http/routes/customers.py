"""At-risk customers and one customer's churn score, scoped to the key's account manager."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.http import operations as ops
from service.http.deps import CustomerReader, StateDep
from service.http.routes import errors
from service.http.schemas import AtRiskPage, CustomerDetail

__all__ = ["router"]

router = APIRouter(prefix="/v1/customers", tags=["customers"],
                   responses=errors(401, 403, 429, 503))


@router.get("/at-risk", response_model=AtRiskPage, responses=errors(400))
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
    return ops.at_risk(state, user, owner, min_probability, page, page_size)


@router.get("/{customer_id}", response_model=CustomerDetail, responses=errors(404))
def get_customer(
    user: CustomerReader,
    state: StateDep,
    customer_id: Annotated[str, Path(min_length=1, max_length=200)],
) -> CustomerDetail:
    """One customer's churn probability, revenue at risk and reasons."""
    return ops.customer(state, user, customer_id)
