"""The request resolver: as-of, period and level, the same rules for the CLI and HTTP."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.io import Tables, load_tables
from engine.schemas import ORDERS
from service.usecases.request import (
    AS_OF_SLACK,
    DataSpan,
    OutsideData,
    RequestError,
    known_levels,
    parse_as_of,
    resolve_as_of,
    resolve_level,
    resolve_period,
)

SPAN = DataSpan(start=pd.Timestamp("2016-01-04"), end=pd.Timestamp("2017-09-30"))


def test_default_as_of_is_the_day_after_the_last_row() -> None:
    assert resolve_as_of(None, SPAN) == pd.Timestamp("2017-10-01")


@pytest.mark.parametrize("given", ["2017-08-31", date(2017, 8, 31), pd.Timestamp("2017-08-31")])
def test_as_of_of_any_form_is_one_timestamp(given: str | date | pd.Timestamp) -> None:
    assert resolve_as_of(given, SPAN) == pd.Timestamp("2017-08-31")


@pytest.mark.parametrize("given", ["2016-01-04", "2015-06-01",
                                   str((SPAN.end + AS_OF_SLACK + pd.Timedelta(days=1)).date())])
def test_as_of_outside_the_data_is_refused_naming_the_parameter(given: str) -> None:
    with pytest.raises(RequestError, match="outside the data") as caught:
        resolve_as_of(given, SPAN)
    assert caught.value.parameter == "as_of" and caught.value.option == "--as-of"
    assert resolve_as_of(given, SPAN, bounded=False) == pd.Timestamp(given)


def test_as_of_a_month_past_the_data_is_accepted() -> None:
    last = SPAN.end + AS_OF_SLACK
    assert resolve_as_of(last.date(), SPAN) == last


def test_as_of_that_is_not_a_date_is_a_request_error() -> None:
    with pytest.raises(RequestError, match="ISO date"):
        parse_as_of("31/08/2017")
    assert parse_as_of(None) is None


def test_default_period_is_the_quarter_of_the_day_before_as_of() -> None:
    assert resolve_period(None, pd.Timestamp("2017-10-01")) == "2017Q3"
    assert resolve_period("2017-08", pd.Timestamp("2017-10-01"), SPAN) == "2017-08"


@pytest.mark.parametrize(("period", "message"), [("2017Q5", "must look like"),
                                                 ("2019", "too far from the data")])
def test_bad_periods_are_refused(period: str, message: str) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        resolve_period(period, pd.Timestamp("2017-10-01"), SPAN)
    assert caught.value.parameter == "period"


def test_a_period_far_from_the_data_passes_without_a_span() -> None:
    assert resolve_period("2019", pd.Timestamp("2017-10-01")) == "2019"


def test_level_is_checked_against_the_known_ones() -> None:
    known = ["company", "region", "product"]
    assert resolve_level(None, known) is None
    assert resolve_level("product", known) == "product"
    with pytest.raises(RequestError, match="unknown level 'planet'") as caught:
        resolve_level("planet", known)
    assert caught.value.parameter == "level"


REAL = Path(__file__).parent / "fixtures" / "real"


def test_numeric_columns_are_not_levels_and_asking_for_one_says_why() -> None:
    tables = load_tables(str(REAL / "online-retail"))  # quantity and n_lines: numbers as text
    assert known_levels(tables) == {"company", "region", "team", "rep"}
    for column in ("quantity", "n_lines"):
        with pytest.raises(OutsideData, match=f"'{column}' is a column of orders but not a "
                                               "level: it holds numbers") as caught:
            resolve_level(column, tables)
        assert caught.value.parameter == "level"
    with pytest.raises(OutsideData, match="unknown level 'colour'"):
        resolve_level("colour", tables)


def test_text_and_few_valued_number_columns_are_levels() -> None:
    tables = load_tables(str(REAL / "online-retail"))
    orders = tables[ORDERS].copy()
    orders["tier"] = (orders.index % 3 + 1).astype(str)  # a code of three values: a level
    orders["brand"] = np.where(orders.index % 2 == 0, "acme", "12")  # text, some look numeric
    orders["lines"] = orders["n_lines"]  # many distinct numbers: a measure
    extended = Tables({**tables.frames, ORDERS: orders}, tables.source, tables.derived)
    assert {"tier", "brand"} <= known_levels(extended)
    assert "lines" not in known_levels(extended)
    assert resolve_level("tier", extended) == "tier"
