"""The simulation a board node lives in: the period's feasibility, or the dimensions' one.

A node of the hierarchy (company, region, team, rep) or of a level the period's targets name is
a node of the period's feasibility simulation (:func:`service.usecases.planning.feasibility_run`).
The data's own product, segment and channel that no target names are nodes of a second
simulation of the same period, as-of and models with :data:`service.usecases.board.
DIMENSION_DRAWS` draws (:func:`service.usecases.board.dimension_run`), cached beside the first
(``served.feasibility_cache``, emptied with it when the data or the models change). The deals,
commits and what-if of a node read the draws of the simulation it lives in, so its P(reach) and
the P(attain) drop of its deals agree with the fan the board draws for it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import date
from typing import Any

import pandas as pd

from engine.io import Tables
from engine.schemas import CUSTOMER_ID, LEVEL, OPPORTUNITIES
from features.hierarchy import customer_column
from service.usecases.board import dimension_levels, dimension_run
from service.usecases.planning import FeasibilityRun, feasibility_run, simulated
from service.usecases.request import BadRequest, NotFound, resolve_period
from service.usecases.served import Memo, Served

__all__ = ["deals_carry", "dimension_feasibility", "has_node", "node_run", "record_dimensions",
           "run_dimensions"]


def has_node(run: FeasibilityRun, level: str, key: str) -> bool:
    """Whether the run's simulation has the node."""
    try:
        run.simulation.node_index(level, key)
    except KeyError:
        return False
    return True


# Answers read off the loaded tables (which levels are dimensions, which the deals carry):
# a scan of every table, asked on every deals or commits request of a dimension node.
_OF_TABLES: Memo[tuple[Tables, Any]] = Memo(size=32)


def _of_tables(tables: Tables, key: Hashable, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per loaded tables and ``key`` (tables loaded anew are new tables,
    even when Python reuses the old ones' id)."""
    found = _OF_TABLES.get((id(tables), key), lambda: (tables, compute()))
    if found[0] is not tables:
        _OF_TABLES.clear()
        found = _OF_TABLES.get((id(tables), key), lambda: (tables, compute()))
    return found[1]


def run_dimensions(served: Served, run: FeasibilityRun) -> list[str]:
    """The data's dimensions the run does not simulate (no target of its period names them)."""
    tables = served.tables()
    simulated = frozenset(str(v) for v in run.simulation.nodes[LEVEL].unique())
    return list(_of_tables(tables, ("dimensions", simulated),
                           lambda: tuple(dimension_levels(tables, set(simulated)))))


def dimension_feasibility(served: Served, run: FeasibilityRun,
                          levels: list[str] | None = None) -> FeasibilityRun:
    """The (cached) simulation of the run's period and as-of with the dimension ``levels``
    (default: :func:`run_dimensions`) as nodes.

    Raises:
        BadRequest: the period cannot be simulated.
    """
    chosen = run_dimensions(served, run) if levels is None else list(levels)
    models = dict(served.models)  # a copy: a reload may change the models meanwhile
    versions = tuple(sorted((k, m.version) for k, m in models.items()))
    key = ("dimensions", run.period, run.as_of, tuple(chosen), versions)

    def compute() -> FeasibilityRun:
        try:
            result = dimension_run(served, run.period, run.as_of, chosen, models)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        return FeasibilityRun(run.period, run.as_of, result.frame, result.simulation,
                              result.notes, len(result.simulation.draws))

    return served.feasibility_cache.get(key, compute)


def record_dimensions(served: Served, as_of: date) -> bool:
    """After an evaluation at ``as_of`` that computed the feasibility of its period (a rule on
    the attainment, whose nodes it snapshots): the dimensions' simulation of the same period
    and as-of too (:func:`dimension_feasibility`, cached for the board), which snapshots the
    product, segment and channel nodes, so their trend and "what changed" fill with the
    evaluations like the hierarchy's (once: a simulation cached since wrote its snapshot
    then). Whether the dimensions are simulated (not when the period's feasibility was not
    computed, or the data has no such dimension)."""
    span = served.span()
    stamp = pd.Timestamp(as_of)
    period = resolve_period(None, stamp, span)
    if not simulated(served, period, stamp):
        return False
    run = feasibility_run(served, period, stamp.date())
    levels = run_dimensions(served, run)
    if not levels:
        return False
    try:
        dimension_feasibility(served, run, levels)
    except BadRequest:
        return False
    return True


def node_run(served: Served, period: str | None, as_of: date | None, level: str, key: str
             ) -> FeasibilityRun:
    """The simulation holding the node: the period's feasibility, else (a product, segment or
    channel no target names) the dimensions' simulation of the same period and as-of.

    Raises:
        RequestError / OutsideData: the period or as-of cannot be answered.
        NotFound: neither simulation has the node.
    """
    run = feasibility_run(served, period, as_of)
    if has_node(run, level, key):
        return run
    levels = run_dimensions(served, run)
    if level in levels:
        found = dimension_feasibility(served, run, levels)
        if has_node(found, level, key):
            return found
    raise NotFound(f"no node {level}={key!r} in the simulation of {run.period} as of "
                   f"{run.as_of.date()}")


def deals_carry(tables: Tables, level: str) -> bool:
    """Whether a deal can be placed at ``level``: the opportunities table has the column, or
    its customers' rows do (a deal's segment is its customer's). Orders carry a channel, deals
    do not: a deal has no channel unless the data gives it one."""
    return bool(_of_tables(tables, ("deals carry", level), lambda: _deals_carry(tables, level)))


def _deals_carry(tables: Tables, level: str) -> bool:
    opps = tables.get(OPPORTUNITIES)
    if opps is None:
        return False
    if level in opps.columns:
        return True
    if CUSTOMER_ID not in opps.columns:
        return False
    return bool(customer_column(tables, level, opps[CUSTOMER_ID]).notna().any())
