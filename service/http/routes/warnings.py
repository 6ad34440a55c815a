"""Early warnings: alerts, evaluation of the rules, silences."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, Response, status

from engine.alerting.store import AlertInstance
from engine.alerting.store import Silence as StoreSilence
from service.http.deps import PlanningUser, StateDep, WarningsEditor
from service.http.errors import errors
from service.http.jsonbody import StrictJSONRoute
from service.http.present import number
from service.http.schemas import (
    AlertList,
    AlertOut,
    EvaluateIn,
    EvaluationOut,
    SilenceIn,
    SilenceOut,
)
from service.usecases.alerts import (
    add_silence,
    current_alerts,
    evaluate_rules,
    expire_silence,
    silences,
)
from service.usecases.served import Served

__all__ = ["alert_list", "router"]

router = APIRouter(prefix="/v1", tags=["warnings"], responses=errors(401, 403, 429),
                   route_class=StrictJSONRoute)

StateName = Literal["normal", "pending", "firing", "resolved", "active", "all"]


def _alert(alert: AlertInstance) -> AlertOut:
    labels = {k: str(v) for k, v in alert.labels.items()}
    return AlertOut(
        rule=alert.rule, labels=labels, state=alert.state, severity=alert.severity,
        value=number(alert.value), threshold=number(alert.threshold), since=alert.since,
        as_of=alert.last_eval_at, message=alert.message,
        summary=alert.annotations.get("summary", alert.message),
        description=alert.annotations.get("description", ""),
        silenced=bool(alert.silenced_by), inhibited=alert.inhibited)


def _silence(silence: StoreSilence) -> SilenceOut:
    return SilenceOut(id=silence.id, matchers=[str(m) for m in silence.matchers],
                      starts_at=silence.starts_at, ends_at=silence.ends_at,
                      created_by=silence.created_by, comment=silence.comment,
                      expired=silence.expired_at is not None)


def alert_list(served: Served, wanted: Iterable[str] | None) -> AlertList:
    """Current alerts, worst first (also the dashboard's)."""
    found = current_alerts(served, wanted)
    return AlertList(count=len(found), alerts=[_alert(a) for a in found])


@router.get("/warnings", response_model=AlertList)
def get_warnings(
    user: PlanningUser,
    state: StateDep,
    alert_state: Annotated[list[StateName] | None, Query(
        alias="state", description="Repeatable; `active` (default) is pending, firing and "
        "resolved; `all` includes normal.")] = None,
) -> AlertList:
    """Current alerts, worst first, with their explanations."""
    return alert_list(state, alert_state)


@router.post("/warnings/evaluate", response_model=EvaluationOut,
             responses=errors(400, 404, 409, 413, 503))
def post_evaluate(
    user: WarningsEditor, state: StateDep,
    body: Annotated[EvaluateIn | None, Body()] = None,
) -> EvaluationOut:
    """Evaluate the rules at as_of: update alert states and history, queue notifications."""
    done = evaluate_rules(state, None if body is None else body.as_of)
    report = done.report
    return EvaluationOut(
        as_of=report.as_of, evaluated=report.evaluated, already=report.already,
        skipped=report.skipped, transitions=len(report.transitions),
        notifications=report.notifications, undelivered=done.undelivered,
        alerts=[_alert(a) for a in done.alerts])


@router.get("/silences", response_model=list[SilenceOut])
def get_silences(
    user: PlanningUser, state: StateDep,
    include_expired: Annotated[bool, Query(description="Also expired silences.")] = False,
) -> list[SilenceOut]:
    """Silences, oldest first."""
    return [_silence(s) for s in silences(state, include_expired)]


@router.post("/silences", response_model=SilenceOut, status_code=status.HTTP_201_CREATED,
             responses=errors(413))
def post_silence(user: WarningsEditor, state: StateDep, body: SilenceIn) -> SilenceOut:
    """Mute notifications of matching alerts for a window of as_of dates."""
    return _silence(add_silence(state, body.matchers, body.starts_at, body.ends_at, user.name,
                                body.comment))


@router.delete("/silences/{silence_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response, responses=errors(404))
def delete_silence(
    user: WarningsEditor, state: StateDep,
    silence_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Response:
    """Expire a silence now."""
    expire_silence(state, silence_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
