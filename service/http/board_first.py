"""The first view of a board page whose simulation nobody computed yet, answered at once.

The warm-up computes the current period, the previous quarter and the ready scenarios ahead
(:mod:`service.http.reload`); any other period (two quarters back, another as-of) or a scenario
of one takes seconds to simulate at a medium company. Rather than keep the browser waiting,
:func:`board_page` starts the whole page on a background thread and waits for it at most
``first_view_seconds`` (``QUOTACAST_FIRST_VIEW_SECONDS``); when it is not done by then, the
page answers 202 at once with the period picker and a plain sentence: what is being computed,
with how many draws, and a link to reload. The reload shows the full page, from the full
simulation (every number labelled with its draws, as always): nothing approximate is ever
shown. Without the warm-up (``QUOTACAST_WARM_UP=false``: no background work) or with
``QUOTACAST_FIRST_VIEW_SECONDS`` unset, a page waits for its simulation as before.
"""

from __future__ import annotations

from collections.abc import Hashable
from concurrent.futures import wait
from functools import partial
from typing import Any

from fastapi import status

from service.http.auth import Permission, Principal, names_other_node
from service.http.charts import risk_colour
from service.http.dashboard import (
    Background,
    Picker,
    _resolve_picker,
    _versions,
    board_context,
    board_url,
)
from service.http.state import AppState
from service.usecases.planning import simulated
from service.usecases.request import Refusal
from service.usecases.scenario import scenario_simulated

__all__ = ["board_page", "forget_first_views", "not_computed"]

class _FirstViews(Background):
    """The pages being computed for their first view (one thread: the other core serves)."""

    def running(self, key: Hashable) -> bool:
        """Whether the page of ``key`` is being computed (started and not done)."""
        with self._lock:
            found = self._futures.get(key)
            return found is not None and not found.done()


_FIRST = _FirstViews(size=32)


def forget_first_views() -> None:
    """Forget the pages being computed (the data changed)."""
    _FIRST.clear()


def not_computed(state: AppState, principal: Principal, picker: Picker,
                 scenario: str | None) -> list[str]:
    """What the page of ``picker``'s period and as-of needs that is not computed yet: its
    simulation, and the picked ready scenario's (a planning role's page only)."""
    missing = []
    if not simulated(state, picker.period, picker.as_of):
        missing.append(f"the simulation of {picker.period} as of {picker.as_of.date()}")
    if (scenario and principal.can(Permission.PLANNING)
            and not scenario_simulated(state, scenario, picker.period, picker.as_of)):
        missing.append(f"the scenario {scenario} beside it")
    return missing


def board_page(state: AppState, principal: Principal, *, period: str | None = None,
               as_of: str | None = None, level: str | None = None, key: str | None = None,
               scenario: str | None = None, method: str | None = None
               ) -> tuple[int, dict[str, Any]]:
    """The board page (:func:`service.http.dashboard.board_context`), or, when its simulation
    is not computed and not done within ``first_view_seconds``, a 202 page saying it is being
    computed (see the module)."""
    params: dict[str, Any] = {"period": period, "as_of": as_of, "level": level, "key": key,
                              "scenario": scenario, "method": method}
    patience = state.options.first_view_seconds
    if not state.options.warm_up or patience is None or names_other_node(principal, level, key):
        return board_context(state, principal, **params)
    try:
        picker = _resolve_picker(state, (period or "")[:40] or None, (as_of or "")[:40] or None)
    except Refusal:  # said by the page itself
        return board_context(state, principal, **params)
    missing = not_computed(state, principal, picker, scenario)
    asked = (state.name, state.data.source, state.settings.database_url, principal.key_id,
             picker.period, picker.as_of, level, key, scenario, method, _versions(state))
    if not missing and not _FIRST.running(asked):
        return board_context(state, principal, **params)
    # Its simulation done, the rest of a page being computed is not computed by a reload too
    # (that would take the reload a second): it is said, once more, to be computed.
    missing = missing or [f"the page of {picker.period} as of {picker.as_of.date()}"]
    future = _FIRST.future(asked, partial(board_context, state, principal, **params))
    if patience > 0:
        wait([future], timeout=patience)
    if future.done():
        _FIRST.forget(asked)
        answer: tuple[int, dict[str, Any]] = future.result()
        return answer
    return status.HTTP_202_ACCEPTED, _computing(state, principal, picker, missing, params)


def _computing(state: AppState, principal: Principal, picker: Picker, missing: list[str],
               params: dict[str, Any]) -> dict[str, Any]:
    """The page's variables while it is computed: the picker and what is being computed."""
    here = board_url(period=picker.period, as_of=str(picker.as_of.date()),
                     level=params["level"], node=params["key"], scenario=params["scenario"],
                     method=params["method"])
    return {
        "principal": principal, "data": state.data, "colour": risk_colour,
        "planning": principal.can(Permission.PLANNING), "board_url": board_url,
        "picked_scenario": params["scenario"] or "",
        "method": params["method"] or "even_probability", "picker": picker,
        "url": lambda **extra: board_url(**{"period": picker.period,
                                            "as_of": str(picker.as_of.date()), **extra}),
        "computing": {
            "what": " and ".join(missing), "draws": state.draws, "url": here},
    }
