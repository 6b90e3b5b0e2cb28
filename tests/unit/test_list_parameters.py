"""The list parameters' one validator (services/intake_api/listing.py): bounded in length before any conversion,
then in value, each refusal a 422 naming the parameter (issue 24 §1, §2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import MultiDict

from services.intake_api.listing import choice_filter, parse_page, text_filter, time_filter
from shared.web import Problem


def refused_parameter(call: Problem) -> str:
    assert call.status == 422
    [error] = call.extra["errors"]
    return str(error["field"])


@pytest.mark.parametrize(
    "raw", ["9" * 4301, "9" * 10_000, "0", "101", "-1", "+5", "1.0", "1e2", "٣", "10 ", " 10", "0x10", "", "\x00"]
)
def test_a_limit_outside_1_to_100_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(Problem) as refused:
        parse_page(MultiDict(limit=raw))
    assert refused_parameter(refused.value) == "limit"


@pytest.mark.parametrize(("raw", "limit"), [("1", 1), ("100", 100), ("007", 7)])
def test_a_limit_from_1_to_100_is_taken(raw: str, limit: int) -> None:
    assert parse_page(MultiDict(limit=raw)).limit == limit


def test_a_parameter_given_twice_is_refused_naming_it() -> None:
    with pytest.raises(Problem) as refused:
        parse_page(MultiDict([("limit", "5"), ("limit", "6")]))
    assert refused_parameter(refused.value) == "limit"


@pytest.mark.parametrize("cursor", ["x" * 65, "pay_\x00", "pay 1", "pay_\u00e9", ""])
def test_a_cursor_that_cannot_be_an_id_is_refused_naming_it(cursor: str) -> None:
    with pytest.raises(Problem) as refused:
        parse_page(MultiDict(starting_after=cursor))
    assert refused_parameter(refused.value) == "starting_after"


EDGES_OF_THE_CALENDAR = [
    "0001-01-01T00:00:00+01:00",  # UTC: year 0
    "9999-12-31T23:59:59-01:00",  # UTC: year 10000
    "0001-01-01T00:30:00+00:31",
    "9" * 4301,
    "99999999999999999999",
    "2026-13-01T00:00:00Z",
    "2026-01-01T00:00:00" + "0" * 100,
    "yesterday",
]


@pytest.mark.parametrize("raw", EDGES_OF_THE_CALENDAR)
@pytest.mark.parametrize("name", ["created[gte]", "created[lte]"])
def test_a_time_the_database_cannot_hold_is_refused_naming_it(name: str, raw: str) -> None:
    with pytest.raises(Problem) as refused:
        time_filter(MultiDict({name: raw}), name)
    assert refused_parameter(refused.value) == name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("0001-01-01T01:00:00+01:00", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("2026-12-06T10:00:00", datetime(2026, 12, 6, 10, tzinfo=UTC)),
        ("1796600000", datetime.fromtimestamp(1796600000, UTC)),
    ],
)
def test_a_time_within_the_years_1_to_9999_in_utc_is_taken(raw: str, expected: datetime) -> None:
    assert time_filter(MultiDict({"created[gte]": raw}), "created[gte]") == expected


@pytest.mark.parametrize("raw", ["", "x" * 129, "ref\x00"])
def test_a_reference_that_cannot_be_stored_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(Problem) as refused:
        text_filter(MultiDict(reference=raw), "reference")
    assert refused_parameter(refused.value) == "reference"


@pytest.mark.parametrize("raw", ["PENDINGX", "pending", "P" * 10_000, ""])
def test_a_status_not_in_the_list_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(Problem) as refused:
        choice_filter(MultiDict(status=raw), "status", ("PENDING", "SUCCEEDED"))
    assert refused_parameter(refused.value) == "status"
