"""The deals behind a node's gap: open deals sorted by their effect on the node's P(attain),
and the pipeline by stage (:mod:`service.usecases.deals`).

Every node of the board: the hierarchy's and the data's product, segment and channel
(``level=product&key=...``, from the dimensions' simulation when no target names them).
An account manager's key sees its own rep node and its own deals only: without ``level`` it
answers for ``rep=<owner>``, and naming another node (a product or segment too, whose deals
are other reps') answers 403.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from service.http.auth import Principal, board_node
from service.http.deps import CustomerReader, StateDep
from service.http.errors import errors
from service.http.jsonbody import StrictJSONRoute
from service.http.present import number, records, text
from service.http.routes.feasibility import AsOf, Period
from service.usecases.deals import DEAL_COLUMNS, DealsView, deals_behind
from service.usecases.served import Served

__all__ = ["Deal", "DealsOut", "StagePipeline", "deals_for", "router", "scoped_node"]

router = APIRouter(prefix="/v1", tags=["deals"],
                   responses=errors(400, 401, 403, 404, 429, 503), route_class=StrictJSONRoute)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Deal(_Out):
    """One open deal counted in the period."""

    opportunity_id: str
    customer_id: str | None = None
    rep: str
    team: str
    region: str
    stage: str
    amount: float
    close_date: date | None = Field(default=None, description="expected close at as_of")
    win_probability: float = Field(description="won inside the period")
    slip_risk: float = Field(description="won in the next period instead")
    expected_amount: float = Field(description="amount x win_probability")
    days_slipped: float | None = Field(default=None,
                                       description="days its expected close was pushed out")
    p_attain_if_lost: float | None = None
    p_attain_drop: float | None = Field(
        default=None, description="the node's P(attain) minus P(attain) if this deal is lost")


class StagePipeline(_Out):
    """The node's open deals counted in the period, summed per stage."""

    stage: str
    deals: int
    amount: float
    expected_amount: float


class DealsOut(_Out):
    period: str
    as_of: date
    level: str
    key: str
    target: float | None = None
    expected: float
    p_attain: float | None = None
    gap: float | None = None
    effect_measure: str = Field(description="how the deals are sorted")
    total: int = Field(description="deals counted in the period (before limit)")
    later: int = Field(description="open deals expected to close after the period")
    placed: bool = Field(default=True, description=(
        "false for a level the deals do not carry (channel: orders have one, deals do not): "
        "no deal is listed and the notes say why"))
    deals: list[Deal]
    stages: list[StagePipeline]
    notes: list[str]


def scoped_node(principal: Principal, level: str | None, key: str | None
                ) -> tuple[str, str, str | None]:
    """The node a caller may ask about and the owner filter its deals take: the board's one
    scope rule (:func:`service.http.auth.board_node`): an account manager its own rep node
    only (403 for another), the other roles any node (default: the company)."""
    node_level, node_key = board_node(principal, level, key)
    return node_level, node_key, principal.scoped_to


def _out(view: DealsView) -> DealsOut:
    rows = records(view.deals, DEAL_COLUMNS)
    deals = [Deal(**{**row, "customer_id": text(row.get("customer_id")),
                     "close_date": (None if row.get("close_date") is None
                                    or str(row["close_date"]) == "NaT"
                                    else row["close_date"].date()),
                     "stage": str(row["stage"])})
             for row in rows]
    stages = [StagePipeline(stage=str(r["stage"]), deals=int(r["deals"]),
                            amount=number(r["amount"]) or 0.0,
                            expected_amount=number(r["expected_amount"]) or 0.0)
              for r in records(view.stages, view.stages.columns)]
    return DealsOut(period=view.period, as_of=view.as_of, level=view.level, key=view.key,
                    target=number(view.target), expected=number(view.expected) or 0.0,
                    p_attain=number(view.p_attain), gap=number(view.gap),
                    effect_measure=view.effect_measure, total=view.total, later=view.later,
                    placed=view.placed, deals=deals, stages=stages, notes=view.notes)


def deals_for(served: Served, principal: Principal, period: str | None, as_of: date | None,
              level: str | None, key: str | None, limit: int = 50) -> DealsOut:
    """The deals of a node for this caller (also the board's)."""
    node_level, node_key, owner = scoped_node(principal, level, key)
    return _out(deals_behind(served, period, as_of, node_level, node_key, owner=owner,
                             limit=limit))


@router.get("/deals", response_model=DealsOut)
def get_deals(
    user: CustomerReader, state: StateDep, period: Period = None, as_of: AsOf = None,
    level: Annotated[str | None, Query(
        min_length=1, max_length=100,
        description="The node's level (default: the company; an account manager: its rep)."
    )] = None,
    key: Annotated[str | None, Query(min_length=1, max_length=200,
                                     description="The node's key.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DealsOut:
    """Open deals of a node sorted by their effect on its P(attain), and its pipeline by stage.

    404 when the period or as_of lies outside the data, or the node is not in its simulation.
    """
    return deals_for(state, user, period, as_of, level, key, limit)
