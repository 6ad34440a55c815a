"""Revenue attribution found once per tables, windows cut from it (issue 19): the same events as
attributing each window from scratch, the linked deal's creation date carried without ids, and
the feasibility inputs' node cells found on the distinct combinations only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.io import Tables, validate_tables
from engine.schemas import (
    AMOUNT,
    CREATED_AT,
    CUSTOMER_ID,
    DS,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDERS,
    PRODUCT,
    REGION,
    REP,
    TEAM,
)
from features import hierarchy
from features.hierarchy import attribute_revenue, revenue_events
from models.feasibility.inputs import _distinct_nodes, _filled


@pytest.fixture(scope="module")
def tables() -> Tables:
    from engine.synthetic import generate

    return validate_tables(generate("small", seed=11))[0]


def _dates(tables: Tables) -> list[pd.Timestamp]:
    orders = tables[ORDERS]
    first, last = orders["order_date"].min(), orders["order_date"].max()
    return [pd.Timestamp(d) for d in pd.date_range(first, last, periods=5)[1:]] + [
        last + pd.Timedelta(days=1)]


def test_windows_are_the_whole_attribution_cut(tables: Tables) -> None:
    for as_of in _dates(tables):
        whole = attribute_revenue(tables, as_of=as_of, columns=[PRODUCT])
        for since in (None, as_of - pd.Timedelta(days=120)):
            lean = revenue_events(tables, as_of=as_of, since=since, columns=[PRODUCT],
                                  with_ids=True)
            expected = whole if since is None else whole[whole[DS] >= since]
            pd.testing.assert_frame_equal(lean[list(whole.columns)],
                                          expected.reset_index(drop=True), check_exact=True)


def test_created_at_is_the_linked_deals(tables: Tables) -> None:
    as_of = _dates(tables)[2]
    events = revenue_events(tables, as_of=as_of, with_ids=True, with_created=True)
    created = tables[OPPORTUNITIES].set_index(OPPORTUNITY_ID)[CREATED_AT]
    expected = events[OPPORTUNITY_ID].map(created).astype("datetime64[ns]")
    assert events[OPPORTUNITY_ID].notna().any() and events[OPPORTUNITY_ID].isna().any()
    pd.testing.assert_series_equal(events[CREATED_AT], expected, check_names=False)


def test_order_rows_are_found_once_and_never_for_other_frames(tables: Tables) -> None:
    hierarchy._ORDER_ROWS.clear()
    revenue_events(tables, as_of=_dates(tables)[1])
    rows = hierarchy._ORDER_ROWS[0][1]
    revenue_events(tables, as_of=_dates(tables)[3])
    assert hierarchy._ORDER_ROWS[0][1] is rows  # the second window reused them
    # Other orders (reversed, one customer moved): found again, and the answer is theirs.
    orders = tables[ORDERS].iloc[::-1].reset_index(drop=True)
    orders.loc[0, CUSTOMER_ID] = orders.loc[len(orders) - 1, CUSTOMER_ID]
    other = Tables({**tables.frames, ORDERS: orders})
    got = revenue_events(other, with_ids=True)
    assert hierarchy._ORDER_ROWS[0][1] is not rows
    hierarchy._ORDER_ROWS.clear()
    fresh = revenue_events(other, with_ids=True)
    pd.testing.assert_frame_equal(got, fresh, check_exact=True)


def test_distinct_nodes_broadcast_to_every_event(tables: Tables) -> None:
    events = revenue_events(tables, columns=[PRODUCT])
    events.loc[events.index[::7], PRODUCT] = np.nan  # missing -> unassigned
    columns = [REP, TEAM, REGION, PRODUCT]
    nodes, row = _distinct_nodes(events, columns)
    assert len(nodes) < len(events) / 10
    pd.testing.assert_frame_equal(nodes.iloc[row].reset_index(drop=True),
                                  _filled(events, columns).reset_index(drop=True))
    assert events[AMOUNT].notna().all()
