"""The sandbox's card checks and test cards (pure functions)."""

from __future__ import annotations

from datetime import date

import pytest

from services.sandbox_gateway.cards import (
    check_card_form,
    check_card_simulation,
    cvc_error,
    decline_code_for,
    expiry_text_error,
    luhn_valid,
    normalize_card_number,
)

TODAY = date(2026, 11, 23)


@pytest.mark.parametrize(
    "digits", ["4242424242424242", "4000000000000002", "4000000000009995", "5555555555554444", "79927398713"]
)
def test_luhn_accepts_valid_numbers(digits: str) -> None:
    assert luhn_valid(digits)


@pytest.mark.parametrize("digits", ["4242424242424241", "1234567812345678", "79927398710", "", "4242x42424242424"])
def test_luhn_refuses_invalid_numbers(digits: str) -> None:
    assert not luhn_valid(digits)


def test_spaces_and_dashes_are_removed_from_a_typed_number() -> None:
    assert normalize_card_number(" 4242 4242-4242\t4242 ") == "4242424242424242"


def test_4242_card_succeeds() -> None:
    assert decline_code_for("4242424242424242") is None


def test_0002_card_is_declined() -> None:
    assert decline_code_for("4000000000000002") == "card_declined"


def test_9995_card_fails_with_insufficient_funds() -> None:
    assert decline_code_for("4000000000009995") == "insufficient_funds"


def test_any_other_luhn_valid_number_succeeds() -> None:
    check = check_card_form("5555 5555 5555 4444", "12/30", "123", "Ada", TODAY)
    assert check.ok and check.failure_code is None


def test_a_valid_form_keeps_only_the_last_four_digits() -> None:
    check = check_card_form("4000-0000-0000-0002", "04/29", "1234", "Ada Lovelace", TODAY)
    assert check.ok
    assert check.last4 == "0002"
    assert check.failure_code == "card_declined"


def test_luhn_invalid_number_is_refused_by_the_form() -> None:
    check = check_card_form("4242 4242 4242 4241", "12/30", "123", "Ada", TODAY)
    assert set(check.errors) == {"card_number"}
    assert check.last4 is None


def test_number_with_letters_is_refused() -> None:
    assert "card_number" in check_card_form("4242abcd42424242", "12/30", "123", "Ada", TODAY).errors


def test_too_short_number_is_refused() -> None:
    assert "card_number" in check_card_form("42", "12/30", "123", "Ada", TODAY).errors


@pytest.mark.parametrize("expiry", ["11/26", "11/2026", "12/26", "01/27", " 1 / 30 "])
def test_expiry_in_the_current_month_or_later_is_accepted(expiry: str) -> None:
    assert expiry_text_error(expiry, TODAY) is None


@pytest.mark.parametrize("expiry", ["10/26", "12/25", "10/2026"])
def test_expiry_in_the_past_is_refused(expiry: str) -> None:
    assert expiry_text_error(expiry, TODAY) == "This card has expired."


@pytest.mark.parametrize("expiry", ["", "1226", "13/27", "00/27", "12-27", "ab/cd", "12/7"])
def test_malformed_expiry_is_refused(expiry: str) -> None:
    assert expiry_text_error(expiry, TODAY) is not None


@pytest.mark.parametrize("cvc", ["123", "1234"])
def test_cvc_of_three_or_four_digits_is_accepted(cvc: str) -> None:
    assert cvc_error(cvc) is None


@pytest.mark.parametrize("cvc", ["", "12", "12345", "12a"])
def test_cvc_otherwise_is_refused(cvc: str) -> None:
    assert cvc_error(cvc) is not None


def test_cardholder_name_is_required() -> None:
    assert set(check_card_form("4242424242424242", "12/30", "123", "   ", TODAY).errors) == {"name"}


def test_every_mistake_in_the_form_is_reported_at_once() -> None:
    check = check_card_form("1234", "01/20", "1", "", TODAY)
    assert set(check.errors) == {"card_number", "expiry", "cvc", "name"}


def test_simulation_needs_only_the_card_number() -> None:
    check = check_card_simulation("4242424242424242", None, None, None, TODAY)
    assert check.ok and check.last4 == "4242"


def test_simulation_checks_expiry_and_cvc_when_given() -> None:
    check = check_card_simulation("4242424242424242", 1, 2020, "1", TODAY)
    assert set(check.errors) == {"exp_month", "cvc"}


def test_simulation_refuses_a_month_without_a_year() -> None:
    assert set(check_card_simulation("4242424242424242", 12, None, None, TODAY).errors) == {"exp_year"}
