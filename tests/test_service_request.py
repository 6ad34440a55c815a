"""The request resolver: as-of, period and level, the same rules for the CLI and HTTP."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from service.usecases.request import (
    AS_OF_SLACK,
    DataSpan,
    RequestError,
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
