"""The console's pure rules: amounts in each currency's minor units, where sign-in may send a person next, and the
overview's chart."""

from __future__ import annotations

import pytest

from services.console.money import AmountError, format_money, major_units, minor_units
from services.console.navigation import cursors, page_links, safe_next
from services.console.overview import chart_bars, totals_by_status


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (1999, "JPY", "1,999 JPY"),
        (1999, "USD", "19.99 USD"),
        (1999, "KWD", "1.999 KWD"),
        (123456789, "USD", "1,234,567.89 USD"),
        (5, "EUR", "0.05 EUR"),
        (0, "KWD", "0.000 KWD"),
    ],
)
def test_amounts_are_shown_in_the_currencys_own_minor_units(amount: int, currency: str, shown: str) -> None:
    assert format_money(amount, currency) == shown


@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [("5", "USD", 500), ("5.5", "USD", 550), ("1,000.25", "USD", 100025), ("1999", "JPY", 1999), ("1.5", "KWD", 1500)],
)
def test_a_typed_amount_becomes_minor_units(typed: str, currency: str, minor: int) -> None:
    assert minor_units(typed, currency) == minor
    assert minor_units(major_units(minor, currency), currency) == minor


@pytest.mark.parametrize(
    ("typed", "currency", "message"),
    [
        ("1.5", "JPY", "no decimal places"),
        ("1.234", "USD", "2 decimal places"),
        ("0", "USD", "greater than zero"),
        ("-3", "USD", "greater than zero"),
        ("ten", "USD", "such as 5.00"),
        ("NaN", "USD", "greater than zero"),
        ("1e30", "USD", "too large"),
    ],
)
def test_a_typed_amount_that_is_not_one_says_why(typed: str, currency: str, message: str) -> None:
    with pytest.raises(AmountError, match=message):
        minor_units(typed, currency)


@pytest.mark.parametrize("target", ["/", "/payments?status=FAILED&q=a%40b", "/payments/pay_1#history"])
def test_a_path_of_the_console_is_followed(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil",
        "javascript:alert(1)",
        "payments",
        "/\x00x",
        "/a\nb",
        "/" + "a" * 3000,
    ],
)
def test_anything_else_goes_to_the_overview(target: str | None) -> None:
    assert safe_next(target) == "/"


def test_only_the_cursors_given_are_passed_on_to_the_api() -> None:
    assert cursors({"starting_after": "pay_2", "ending_before": "", "status": "FAILED"}) == {"starting_after": "pay_2"}


ITEMS = [{"id": "evt_3"}, {"id": "evt_2"}]


def test_the_first_page_links_only_to_older_items_keeping_the_filters_that_are_set() -> None:
    links = page_links({"payment_id": "pay_1", "q": ""}, {"limit": "2"}, ITEMS, has_more=True)
    assert links == {"newer": None, "older": {"payment_id": "pay_1", "starting_after": "evt_2"}}


def test_a_page_after_a_cursor_links_back_to_newer_items_and_on_only_while_more_follow() -> None:
    links = page_links({}, {"starting_after": "evt_4"}, ITEMS, has_more=False)
    assert links == {"newer": {"ending_before": "evt_3"}, "older": None}


def test_a_page_before_a_cursor_links_to_newer_items_only_while_more_follow() -> None:
    assert page_links({}, {"ending_before": "evt_1"}, ITEMS, has_more=False) == {
        "newer": None,
        "older": {"starting_after": "evt_2"},
    }
    assert page_links({}, {"ending_before": "evt_1"}, ITEMS, has_more=True)["newer"] == {"ending_before": "evt_3"}


def test_an_empty_page_links_nowhere() -> None:
    assert page_links({}, {"starting_after": "evt_4"}, [], has_more=False) == {"newer": None, "older": None}


def test_the_chart_draws_each_status_against_the_largest_and_adds_no_currencies_together() -> None:
    totals = totals_by_status(
        [
            {"status": "FAILED", "currency": "USD", "count": 1, "amount": 1},
            {"status": "SUCCEEDED", "currency": "JPY", "count": 1, "amount": 7},
            {"status": "SUCCEEDED", "currency": "USD", "count": 2, "amount": 150},
        ]
    )
    by_status = {total.status: total for total in totals}
    assert by_status["SUCCEEDED"].count == 3
    assert by_status["SUCCEEDED"].volume_text == "7 JPY, 1.50 USD"
    assert by_status["PENDING"].count == 0 and by_status["PENDING"].volume_text == "—"
    bars, height = chart_bars(totals)
    widths = {bar.status: bar.width for bar in bars}
    assert abs(widths["SUCCEEDED"] - 3 * widths["FAILED"]) <= 1 and widths["PENDING"] == 0
    assert height > 0 and len({bar.y for bar in bars}) == len(bars)
    assert chart_bars(totals_by_status([]))[0][0].width == 0
