"""Commits: a rep's or manager's own forecast of a period (commit or best case, Salesforce's
forecast categories) beside quotacast's probability of reaching it.

Every submission is kept (:class:`engine.board_store.BoardStore` ``board_commits``); the latest
submission of a (period, node, category) is the one that counts. The input table ``commits``
(``period, rep, amount, category, submitted_at``), when the data has it, is the history before
the first submission made here: its rows are listed as submitted by ``data`` (a row without
``submitted_at`` counts as the oldest).

The probability of a commit is P(total >= amount) from the draws of the node's feasibility
simulation (:func:`service.usecases.planning.what_if` in the service; the CLI's own
:func:`service.usecases.feasibility.run_feasibility` simulation), the same draws as its
P(attain). A product, segment or channel node no target names is a node of the dimensions'
simulation (:func:`service.usecases.dimensions.node_run`), whose draws its fan shows: its
commits' P(reach) is read off those.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pandas as pd

from engine.alerting.store import utcnow
from engine.board_store import BoardStore, CommitRecord
from engine.io import Tables
from engine.schemas import (
    AMOUNT,
    CATEGORY,
    COMMIT_CATEGORIES,
    COMMITS,
    KEY,
    LEVEL,
    LEVEL_REP,
    PERIOD,
    REP,
    SUBMITTED_AT,
)
from models.feasibility import Simulation, attained
from service.usecases.board import board_store
from service.usecases.request import BadRequest
from service.usecases.served import Served

__all__ = [
    "COMMIT_COLUMNS",
    "HISTORY_COLUMNS",
    "CommitBoard",
    "Submitted",
    "commit_history",
    "commit_probabilities",
    "latest_commits",
    "list_commits",
    "submit",
    "submit_commit",
]

HISTORY_COLUMNS = (PERIOD, LEVEL, KEY, CATEGORY, AMOUNT, "submitted_by", SUBMITTED_AT, "source",
                   "note")
COMMIT_COLUMNS = (PERIOD, LEVEL, KEY, CATEGORY, AMOUNT, "submitted_by", SUBMITTED_AT, "source",
                  "p_reach", "target", "p_attain", "p50", "expected", "submissions")
MAX_AMOUNT = 1e15


def submit(store: BoardStore, period: str, level: str, key: str, amount: float,
           category: str = COMMIT_CATEGORIES[0], submitted_by: str = "", *,
           as_of: date | None = None, note: str = "", now: datetime | None = None
           ) -> CommitRecord:
    """Keep one submission (checked: a known category, a finite amount >= 0).

    Raises:
        BadRequest: the category or amount cannot be a commit.
    """
    if category not in COMMIT_CATEGORIES:
        raise BadRequest(f"category must be one of {', '.join(COMMIT_CATEGORIES)}, "
                         f"got {category!r}")
    if not np.isfinite(amount) or not 0 <= amount <= MAX_AMOUNT:
        raise BadRequest(f"amount must be a number from 0 to {MAX_AMOUNT:.0e}, got {amount}")
    return store.add_commit(period, level, key, category, float(amount),
                            submitted_by or "unknown", as_of=as_of, note=note[:2000],
                            now=now or utcnow())


def _seeded(tables: Tables | None) -> pd.DataFrame:
    """The input table ``commits`` as history rows (submitted by ``data``)."""
    frame = None if tables is None else tables.get(COMMITS)
    if frame is None or frame.empty:
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))
    when = (pd.to_datetime(frame[SUBMITTED_AT]) if SUBMITTED_AT in frame.columns
            else pd.Series(pd.NaT, index=frame.index))
    category = (frame[CATEGORY].fillna(COMMIT_CATEGORIES[0]) if CATEGORY in frame.columns
                else COMMIT_CATEGORIES[0])
    return pd.DataFrame({
        PERIOD: frame[PERIOD].astype(str), LEVEL: LEVEL_REP, KEY: frame[REP].astype(str),
        CATEGORY: category, AMOUNT: frame[AMOUNT].astype(float), "submitted_by": "data",
        SUBMITTED_AT: when, "source": "data", "note": ""})


def commit_history(store: BoardStore, tables: Tables | None, period: str | None = None,
                   nodes: Iterable[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Every submission (the data's ``commits`` table first, then those made here), oldest
    first; of ``period`` and of ``nodes`` (``(level, key)`` pairs) when given. Columns
    :data:`HISTORY_COLUMNS`."""
    wanted = None if nodes is None else {(str(lv), str(k)) for lv, k in nodes}
    seeded = _seeded(tables)
    stored = pd.DataFrame(
        [{PERIOD: r.period, LEVEL: r.level, KEY: r.key, CATEGORY: r.category,
          AMOUNT: r.amount, "submitted_by": r.submitted_by,
          SUBMITTED_AT: pd.Timestamp(r.submitted_at), "source": "submitted", "note": r.note}
         for r in store.commits(period, None if wanted is None else sorted(wanted))],
        columns=list(HISTORY_COLUMNS))
    frame = pd.concat([f for f in (seeded, stored) if not f.empty] or [seeded],
                      ignore_index=True)
    if period is not None:
        frame = frame[frame[PERIOD] == period]
    if wanted is not None:
        pairs = list(zip(frame[LEVEL].astype(str), frame[KEY].astype(str), strict=True))
        frame = frame[np.array([p in wanted for p in pairs], dtype=bool)]
    frame = frame.assign(_order=np.arange(len(frame)))
    frame[SUBMITTED_AT] = pd.to_datetime(frame[SUBMITTED_AT])
    frame = frame.sort_values([SUBMITTED_AT, "_order"], kind="stable", na_position="first")
    return frame.drop(columns="_order").reset_index(drop=True)[list(HISTORY_COLUMNS)]


def latest_commits(history: pd.DataFrame) -> pd.DataFrame:
    """The latest submission per (period, level, key, category), with ``submissions`` (how
    many were made)."""
    keys = [PERIOD, LEVEL, KEY, CATEGORY]
    if history.empty:
        return history.assign(submissions=pd.Series(dtype=int))
    counts = history.groupby(keys, sort=False).size().rename("submissions")
    latest = history.drop_duplicates(keys, keep="last")
    return latest.merge(counts.reset_index(), on=keys, how="left").sort_values(
        [PERIOD, LEVEL, KEY, CATEGORY], kind="stable").reset_index(drop=True)


def commit_probabilities(latest: pd.DataFrame, simulation: Simulation,
                         feasibility: pd.DataFrame | None = None) -> pd.DataFrame:
    """Latest commits with P(total >= amount) of each node's simulated draws (``p_reach``),
    and the node's target, P(attain), P50 and expected from the same simulation (NaN for a
    node the simulation does not have). Columns :data:`COMMIT_COLUMNS`."""
    out = latest.copy()
    p_reach, p50, expected = [], [], []
    for level, key, amount in zip(out[LEVEL], out[KEY], out[AMOUNT], strict=True):
        try:
            column = simulation.node_index(str(level), str(key))
        except KeyError:
            p_reach.append(np.nan)
            p50.append(np.nan)
            expected.append(np.nan)
            continue
        draws = simulation.draws[:, column]
        mean = float(draws.mean()) if len(draws) else float(simulation.closed[column])
        p_reach.append(attained(draws, float(amount), mean))
        p50.append(float(np.quantile(draws, 0.5)) if len(draws) else mean)
        expected.append(mean)
    out["p_reach"], out["p50"], out["expected"] = p_reach, p50, expected
    out["target"], out["p_attain"] = np.nan, np.nan
    if feasibility is not None and not feasibility.empty:
        index = feasibility.set_index([LEVEL, KEY])
        pairs = pd.MultiIndex.from_arrays([out[LEVEL].astype(str), out[KEY].astype(str)])
        for name in ("target", "p_attain"):
            values = index[name]
            values = values[~values.index.duplicated()]
            out[name] = values.reindex(pairs).to_numpy()
    if "submissions" not in out.columns:
        out["submissions"] = 1
    return out[list(COMMIT_COLUMNS)]


# --- the service ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitBoard:
    """Latest commits of a period beside their probabilities, and every submission."""

    period: str
    as_of: date
    commits: pd.DataFrame
    history: pd.DataFrame
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Submitted:
    """One submission as stored, with its probability."""

    record: CommitRecord
    p_reach: float | None
    as_of: date


def list_commits(served: Served, period: str | None = None, as_of: date | None = None,
                 nodes: Iterable[tuple[str, str]] | None = None) -> CommitBoard:
    """The latest commits of ``period`` (of ``nodes`` when given) beside P(reach) from the
    period's feasibility simulation as of ``as_of`` (defaults as the feasibility's); those of
    product, segment and channel nodes no target names from the dimensions' simulation."""
    from service.usecases.dimensions import dimension_feasibility, run_dimensions
    from service.usecases.planning import feasibility_run

    run = feasibility_run(served, period, as_of)
    history = commit_history(board_store(served), served.tables(), run.period, nodes)
    latest = latest_commits(history)
    table = commit_probabilities(latest, run.simulation, run.frame)
    if not table.empty:
        levels = run_dimensions(served, run)
        elsewhere = (table["p_reach"].isna() & table[LEVEL].isin(levels)).to_numpy()
        if elsewhere.any():
            dims = dimension_feasibility(served, run, levels)
            filled = commit_probabilities(latest[elsewhere], dims.simulation, dims.frame)
            table = pd.concat([table[~elsewhere], filled]).sort_index()
    notes = []
    if table.empty:
        notes.append(f"no commit for {run.period} yet: submit one with POST /v1/commits or "
                     "`quotacast commit`")
    elif table["p_reach"].isna().any():
        notes.append("p_reach is empty for nodes the simulation does not have")
    return CommitBoard(run.period, run.as_of.date(), table, history, notes)


def submit_commit(served: Served, level: str, key: str, amount: float,
                  category: str = COMMIT_CATEGORIES[0], period: str | None = None,
                  as_of: date | None = None, submitted_by: str = "", note: str = ""
                  ) -> Submitted:
    """Store a submission for a node and return it with P(total >= amount) (the what-if of
    the same simulation; a product, segment or channel node no target names: the draws of
    the dimensions' simulation).

    Raises:
        NotFound: neither simulation has such a node (nothing is stored).
        BadRequest: a bad category or amount.
    """
    from service.usecases.dimensions import has_node, node_run
    from service.usecases.planning import feasibility_run, what_if

    # First the chance (an unknown node is NotFound there), then the submission: nothing is
    # stored for a node the simulation does not have.
    main = feasibility_run(served, period, as_of)
    if has_node(main, level, key):
        chance = what_if(served, level, key, float(amount), period, as_of)
        chosen, p, day = chance.period, float(chance.p_attain), chance.as_of
    else:
        run = node_run(served, period, as_of, level, key)
        column = run.simulation.node_index(level, key)
        draws = run.simulation.draws[:, column]
        mean = float(draws.mean()) if len(draws) else float(run.simulation.closed[column])
        chosen, p, day = run.period, attained(draws, float(amount), mean), run.as_of.date()
    record = submit(board_store(served), chosen, level, key, amount, category,
                    submitted_by, as_of=day, note=note)
    return Submitted(record, p if np.isfinite(p) else None, day)
