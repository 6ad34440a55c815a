"""Customer metrics computed from the data (complaints, receivables), and the rollup of
per-customer numbers to account managers, teams, regions and the company that the churn
metrics share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from engine.alerting.catalogue import EXPLANATION, SCOPE_COLUMN
from engine.compute import TableRead
from engine.schemas import (
    AMOUNT,
    COMPANY_KEY,
    CUSTOMER_ID,
    DS,
    DUE_DATE,
    INTERACTIONS,
    ISSUED_AT,
    KIND,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    OCCURRED_AT,
    PAID_AT,
    RECEIVABLES,
)
from features.customer import KIND_COMPLAINT
from features.hierarchy import customer_nodes
from features.metrics.base import (
    NODE_SCOPES,
    level_key,
    metric_frame,
    money,
    node_labels,
    pct,
    require_tables,
    revenue_events,
    stack,
)
from features.metrics.context import KeyedPart, MetricContext

__all__ = [
    "CUSTOMER_SCOPES",
    "TOP_CUSTOMERS",
    "cached_customer_nodes",
    "complaint_counts",
    "complaint_part",
    "complaint_spike",
    "customer_rollup",
    "invoice_part",
    "invoice_sums",
    "overdue_receivables_ratio",
    "with_top_customers",
]


def cached_customer_nodes(context: MetricContext) -> pd.DataFrame:
    """Per customer: ``customer_id, rep, team, region`` (of its account manager)."""
    return context.cached(("customer_nodes",), lambda: customer_nodes(context.tables)
                          .set_index(CUSTOMER_ID))


def customer_rollup(context: MetricContext, sums: pd.DataFrame, scopes: tuple[str, ...],
                    finish: Callable[[pd.DataFrame], tuple[pd.Series, pd.Series]],
                     ) -> pd.DataFrame:
    """Sum per-customer columns up to each scope and turn each row into (value, explanation).

    Args:
        sums: per customer (index ``customer_id``) additive columns.
        finish: ``rows -> (value, explanation)`` on the summed rows.
    """
    nodes = cached_customer_nodes(context).reindex(sums.index)
    parts = []
    for scope in scopes:
        if scope == "customer":
            rows = sums.copy()
            labels = nodes.assign(**{CUSTOMER_ID: sums.index.to_series()})
        else:
            key = level_key(nodes.reset_index(), scope).to_numpy()
            rows = sums.groupby(key).sum()
            labels = node_labels(context.tables, scope, rows.index.to_series())
        value, words = finish(rows)
        parts.append(metric_frame(scope, labels.reset_index(drop=True),
                                  value.reset_index(drop=True), words.reset_index(drop=True),
                                  {c: rows[c].reset_index(drop=True) for c in rows.columns}))
    return stack(parts)


TOP_CUSTOMERS = "top_customers"


def with_top_customers(context: MetricContext, frame: pd.DataFrame, weight: pd.Series,
                       describe: Callable[[str], str], n: int = 3) -> pd.DataFrame:
    """Name the ``n`` customers that weigh most under each node row, in its explanation.

    A rollup (an account manager, a team, a region) is explainable when it says which
    customers make it up: ``... ; most: C12 40k overdue (75 days), C7 ...``. Customer rows
    are left alone. The names are also in the detail column ``top_customers``.

    Args:
        weight: per customer (index ``customer_id``) what ranks them; only positive weights
            are named.
        describe: ``customer_id -> short text``.
    """
    frame = frame.copy()
    frame[TOP_CUSTOMERS] = ""
    ranked = weight[weight > 0].sort_values(ascending=False, kind="stable")
    if frame.empty or ranked.empty:
        return frame
    where = cached_customer_nodes(context).reindex(ranked.index).reset_index()
    where[LEVEL_COMPANY] = COMPANY_KEY
    named: dict[tuple[str, str], str] = {}
    for scope in NODE_SCOPES:
        top = where.groupby(scope, sort=False, observed=True).head(n)
        for key, ids in top.groupby(scope, sort=False, observed=True)[CUSTOMER_ID]:
            named[(scope, str(key))] = ", ".join(describe(str(c)) for c in ids)
    for i, row in frame.iterrows():  # one row per node (tens), not per customer
        scope = str(row[SCOPE_COLUMN])
        if scope not in NODE_SCOPES:
            continue
        key = COMPANY_KEY if scope == LEVEL_COMPANY else str(row[scope])
        text = named.get((scope, key), "")
        if text:
            frame.at[i, TOP_CUSTOMERS] = text
            frame.at[i, EXPLANATION] = f"{row[EXPLANATION]}; most: {text}"
    return frame


def _yearly_revenue(context: MetricContext, as_of: pd.Timestamp) -> pd.Series:
    """Per customer: revenue of the 365 days before ``as_of`` (what makes an account matter)."""
    def compute() -> pd.Series:
        events = revenue_events(context, as_of)
        recent = events[events[DS] >= as_of - pd.Timedelta(days=365)]
        return recent[AMOUNT].groupby(recent[CUSTOMER_ID].astype(object)).sum()

    series: pd.Series = context.cached(("yearly_revenue", as_of), compute)
    return series


CUSTOMER_SCOPES = ("company", LEVEL_REGION, LEVEL_TEAM, LEVEL_REP, "customer")


def complaint_counts(frames: dict[str, pd.DataFrame], as_of: pd.Timestamp, window_days: int,
                     baseline_days: int) -> pd.DataFrame:
    """Per customer with any (a :class:`KeyedPart`, one bucket of customers): ``complaints``
    in the ``window_days`` before ``as_of`` and ``baseline_complaints`` in the
    ``baseline_days`` before those."""
    found = frames[INTERACTIONS]
    complaints = found[found[KIND].astype(str).str.strip().str.lower() == KIND_COMPLAINT]
    recent_from = as_of - pd.Timedelta(days=window_days)
    baseline_from = recent_from - pd.Timedelta(days=baseline_days)
    when = complaints[OCCURRED_AT]
    counts = pd.DataFrame({
        "complaints": (when >= recent_from) & (when < as_of),
        "baseline_complaints": (when >= baseline_from) & (when < recent_from),
    }).astype(float).groupby(complaints[CUSTOMER_ID].to_numpy(dtype=object)).sum()
    counts = counts[counts.sum(axis=1) > 0]
    return pd.DataFrame({CUSTOMER_ID: counts.index.to_numpy(dtype=object),
                         "complaints": counts["complaints"].to_numpy(dtype=float),
                         "baseline_complaints": counts["baseline_complaints"].to_numpy(
                             dtype=float)})


def complaint_part(as_of: pd.Timestamp, window_days: int, baseline_days: int) -> KeyedPart:
    """:func:`complaint_counts` as a part computed customer by customer."""
    return KeyedPart(
        name=f"complaint_counts:{window_days}:{baseline_days}", key=CUSTOMER_ID,
        reads=(TableRead(INTERACTIONS, (CUSTOMER_ID, OCCURRED_AT, KIND), OCCURRED_AT),),
        fn=partial(complaint_counts, as_of=pd.Timestamp(as_of), window_days=window_days,
                   baseline_days=baseline_days))


def complaint_spike(context: MetricContext, as_of: pd.Timestamp,
                    params: Mapping[str, Any]) -> pd.DataFrame:
    """Recent complaints against their trailing rate, per customer and per account manager."""
    require_tables(context.tables, "complaint_spike", INTERACTIONS)
    window, baseline = int(params["window_days"]), int(params["baseline_days"])
    counts = context.by_key(complaint_part(as_of, window, baseline), as_of)
    counts = counts.set_index(CUSTOMER_ID)[["complaints", "baseline_complaints"]]
    floor = float(params["min_revenue"])
    if floor > 0:
        revenue = _yearly_revenue(context, as_of).reindex(counts.index).fillna(0.0)
        counts = counts[revenue >= floor].assign(revenue_last_year=revenue[revenue >= floor])

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        usual = rows["baseline_complaints"] * window / baseline
        value = rows["complaints"] / usual.clip(lower=float(params["min_rate"]))
        value = value.where(rows["complaints"] >= float(params["min_complaints"]))
        words = [f"{c:.0f} complaints in the last {window} days against {u:.2g} per {window} "
                 f"days over the {baseline} days before" for c, u in
                 zip(rows["complaints"], usual, strict=True)]
        if "revenue_last_year" in rows.columns:
            words = [f"{w} (revenue {money(r)} in the last 365 days)"
                     for w, r in zip(words, rows["revenue_last_year"], strict=True)]
        return value, pd.Series(words, index=rows.index, dtype=object)

    frame = customer_rollup(context, counts, CUSTOMER_SCOPES, finish)
    recent = counts["complaints"]
    return with_top_customers(context, frame, recent,
                              lambda c: f"{c} ({recent[c]:.0f} complaints)")


def _usual_lateness(invoices: pd.DataFrame, paid_at: pd.Series, as_of: pd.Timestamp
                    ) -> pd.Series:
    """Per customer: the 90th percentile of days late of its invoices paid in the last 365
    days before ``as_of`` (0 when on time or no history)."""
    paid = paid_at.notna() & (paid_at < as_of) & (paid_at >= as_of - pd.Timedelta(days=365))
    late = ((paid_at[paid] - invoices.loc[paid, DUE_DATE]).dt.days.astype(float)
            .clip(lower=0.0))
    return late.groupby(invoices.loc[paid, CUSTOMER_ID].to_numpy()).quantile(0.9)


def _open_invoices(invoices: pd.DataFrame, as_of: pd.Timestamp, grace_days: float,
                   usual_lateness: bool, max_days_overdue: float) -> pd.DataFrame:
    """Invoices outstanding at ``as_of`` with ``days_overdue``, ``allowed`` (days of lateness
    that count as normal) and ``late``; those past ``max_days_overdue`` are left out."""
    paid_at = invoices[PAID_AT] if PAID_AT in invoices.columns else pd.Series(
        pd.NaT, index=invoices.index)
    # Outstanding at T: issued before T and not paid before T (a later payment was not known).
    open_ = (invoices[ISSUED_AT] < as_of) & (paid_at.isna() | (paid_at >= as_of))
    allowed = pd.Series(float(grace_days), index=invoices.index)
    if usual_lateness:
        usual = _usual_lateness(invoices, paid_at, as_of)
        allowed = allowed + invoices[CUSTOMER_ID].map(usual).astype(float).fillna(0.0)
    days = (as_of - invoices[DUE_DATE]).dt.days.astype(float)
    out = invoices[open_].assign(days_overdue=days[open_], allowed=allowed[open_])
    if max_days_overdue > 0:  # longer overdue: written off or with collections, no longer news
        out = out[out["days_overdue"] <= max_days_overdue]
    return out.assign(late=out["days_overdue"] > out["allowed"])


INVOICE_SUMS = ("outstanding", "overdue", "overdue_invoices")


def invoice_sums(frames: dict[str, pd.DataFrame], as_of: pd.Timestamp, grace_days: float,
                 usual_lateness: bool, max_days_overdue: float) -> pd.DataFrame:
    """Per customer with outstanding invoices at ``as_of`` (a :class:`KeyedPart`, one bucket
    of customers): ``outstanding``, ``overdue`` (amounts), ``overdue_invoices``,
    ``oldest_days_overdue`` (NaN when none is late) and ``allowed`` (days of lateness that
    count as normal)."""
    invoices = _open_invoices(frames[RECEIVABLES], as_of, grace_days, usual_lateness,
                              max_days_overdue)
    late = invoices["late"]
    owner = invoices[CUSTOMER_ID].to_numpy(dtype=object)
    amount = invoices[AMOUNT].astype(float)
    sums = pd.DataFrame({
        "outstanding": amount,
        "overdue": amount.where(late, 0.0),
        "overdue_invoices": late.astype(float),
        "oldest_days_overdue": invoices["days_overdue"].where(late),
        "allowed": invoices["allowed"],
    }).groupby(owner).agg({"outstanding": "sum", "overdue": "sum", "overdue_invoices": "sum",
                           "oldest_days_overdue": "max", "allowed": "max"})
    out = pd.DataFrame({CUSTOMER_ID: sums.index.to_numpy(dtype=object)})
    for column in sums.columns:
        out[column] = sums[column].to_numpy(dtype=float)
    return out


def invoice_part(as_of: pd.Timestamp, params: Mapping[str, Any]) -> KeyedPart:
    """:func:`invoice_sums` as a part computed customer by customer."""
    grace, usual = float(params["grace_days"]), bool(params["usual_lateness"])
    cap = float(params["max_days_overdue"])
    return KeyedPart(
        name=f"invoice_sums:{grace}:{usual}:{cap}", key=CUSTOMER_ID,
        reads=(TableRead(RECEIVABLES, (CUSTOMER_ID, ISSUED_AT, DUE_DATE, PAID_AT, AMOUNT),
                         ISSUED_AT),),
        fn=partial(invoice_sums, as_of=pd.Timestamp(as_of), grace_days=grace,
                   usual_lateness=usual, max_days_overdue=cap))


def overdue_receivables_ratio(context: MetricContext, as_of: pd.Timestamp,
                              params: Mapping[str, Any]) -> pd.DataFrame:
    """Overdue share of outstanding receivables, per customer, account manager and region."""
    require_tables(context.tables, "overdue_receivables_ratio", RECEIVABLES)
    per_customer = context.by_key(invoice_part(as_of, params), as_of).set_index(CUSTOMER_ID)
    sums = per_customer[list(INVOICE_SUMS)]
    oldest = per_customer["oldest_days_overdue"]
    allowed = per_customer["allowed"]
    floor = float(params["min_overdue"])

    def finish(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        share = rows["overdue"] / rows["outstanding"].where(rows["outstanding"] > 0)
        words = [f"overdue {money(o)} of {money(t)} outstanding ({pct(v)}), {n:.0f} invoices "
                 "past due" for o, t, v, n in zip(rows["overdue"], rows["outstanding"], share,
                                                  rows["overdue_invoices"], strict=True)]
        return share.where(rows["overdue"] >= floor), pd.Series(words, index=rows.index,
                                                                 dtype=object)

    frame = customer_rollup(context, sums, CUSTOMER_SCOPES, finish)
    is_customer = frame[SCOPE_COLUMN] == "customer"
    customer = frame[CUSTOMER_ID]
    frame["oldest_days_overdue"] = np.where(is_customer, customer.map(oldest).astype(float),
                                            np.nan)
    frame["usual_days_late"] = np.where(is_customer, customer.map(allowed).astype(float)
                                        - float(params["grace_days"]), np.nan)
    if params["usual_lateness"]:
        said = is_customer & frame["oldest_days_overdue"].notna()
        frame.loc[said, EXPLANATION] = [
            f"{w}, oldest {d:.0f} days past due; usually pays {u:.0f} days late"
            for w, d, u in zip(frame.loc[said, EXPLANATION], frame.loc[said, "oldest_days_overdue"],
                               frame.loc[said, "usual_days_late"], strict=True)]
    overdue = sums["overdue"]
    return with_top_customers(
        context, frame, overdue,
        lambda c: f"{c} {money(overdue[c])}" + (
            f" ({oldest[c]:.0f} days)" if pd.notna(oldest.get(c)) else ""))
