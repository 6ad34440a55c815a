"""Churn scores of the active customers with the served churn model (the service's customers
resource): the riskiest first, one page at a time, and one customer's score.

Who may see which customers is decided by the caller (an account manager's key sees its own
only); these functions take the decision as plain arguments.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.schemas import ACCOUNT_MANAGER, CUSTOMER_ID
from models.churn import CHURN_PROBABILITY
from service.usecases.churn import score_churn
from service.usecases.request import NotFound, Unavailable
from service.usecases.served import Served

__all__ = ["AtRisk", "CustomerFound", "at_risk", "churn_scores", "find_customer"]


@dataclass(frozen=True)
class AtRisk:
    """One page of scored customers, riskiest first.

    Attributes:
        as_of: the scores' as-of (the day after the data's last date).
        total: how many customers pass the filters, over all pages.
        rows: this page's rows of the scores frame (``score_churn``'s columns).
    """

    as_of: pd.Timestamp
    total: int
    rows: list[dict[Hashable, Any]]


@dataclass(frozen=True)
class CustomerFound:
    """One customer: its row of the customers table and, when scored, its score and rank.

    Attributes:
        as_of: the scores' as-of.
        customer: the customer's row of the customers table.
        score: its row of the scores frame; None for a customer that is not scored (no
            purchase in the last year).
        rank: 1 for the riskiest customer of all; None when not scored.
    """

    as_of: pd.Timestamp
    customer: dict[Hashable, Any]
    score: dict[Hashable, Any] | None = None
    rank: int | None = None


def churn_scores(served: Served) -> pd.DataFrame:
    """Every active customer scored as of the default as-of (cached per model version).

    Raises:
        Unavailable: the data or the churn model is not loaded.
    """
    tables = served.tables()
    model = served.model("churn")
    if model is None:
        raise Unavailable("no churn model is served: run `quotacast train churn` and "
                          "`quotacast promote churn`, then POST /v1/models/reload")
    end = served.span().default_as_of
    return served.scores_cache.get(
        ("scores", model.version, end),
        lambda: score_churn(tables, as_of=end, model=model.estimator))


def _known_managers(served: Served) -> set[str]:
    customers = served.tables().customers
    if ACCOUNT_MANAGER not in customers.columns:
        return set()
    return {str(m) for m in customers[ACCOUNT_MANAGER].dropna().unique()}


def at_risk(served: Served, owner: str | None, min_probability: float, page: int,
            page_size: int, *, check_owner: bool = True) -> AtRisk:
    """Scored customers, riskiest first (by revenue at risk), one page of them.

    Args:
        owner: only this account manager's customers (None: everybody's).
        check_owner: refuse an owner no customer has (an account manager asking for its own
            customers is not checked: it may have none yet).

    Raises:
        NotFound: ``owner`` is no customer's account manager.
    """
    if owner is not None and check_owner and owner not in _known_managers(served):
        raise NotFound(f"unknown owner {owner!r}: no customer has this account manager")
    scores = churn_scores(served)
    keep = scores[CHURN_PROBABILITY] >= min_probability
    if owner is not None:
        keep &= scores[ACCOUNT_MANAGER] == owner
    selected = scores.loc[keep]
    start = (page - 1) * page_size
    rows = selected.iloc[start:start + page_size].to_dict("records")
    return AtRisk(as_of=served.span().default_as_of, total=len(selected), rows=rows)


def find_customer(served: Served, customer_id: str, scoped_to: str | None) -> CustomerFound:
    """One customer's row, score and rank.

    Args:
        scoped_to: the account manager the caller is limited to (None: any customer).

    Raises:
        NotFound: no such customer, or another account manager's.
    """
    customers = served.tables().customers
    found = customers.loc[customers[CUSTOMER_ID].astype(str) == customer_id]
    manager = (found.iloc[0][ACCOUNT_MANAGER]
               if len(found) and ACCOUNT_MANAGER in found.columns else None)
    is_missing = manager is None or (isinstance(manager, float) and np.isnan(manager))
    # Another manager's customer answers exactly as an unknown one: a key cannot probe ids.
    if found.empty or (scoped_to is not None and (is_missing or str(manager) != scoped_to)):
        raise NotFound(f"no customer {customer_id!r}")
    scores = churn_scores(served)
    as_of = served.span().default_as_of
    row = found.iloc[0].to_dict()
    position = np.flatnonzero((scores[CUSTOMER_ID].astype(str) == customer_id).to_numpy())
    if position.size == 0:
        return CustomerFound(as_of=as_of, customer=row)
    return CustomerFound(as_of=as_of, customer=row, score=scores.iloc[position[0]].to_dict(),
                         rank=int(position[0]) + 1)
