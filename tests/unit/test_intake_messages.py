"""Validation messages read as sentences a shop developer understands (issue 13 §8, §9).

Every message the intake can give for a bad field is generated here from a wide set of bad bodies and scanned:
no regular expression, no Python type or class name, "characters" for strings.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from services.intake_api.models import NON_TENDER_CODES, PaymentCreate, field_errors

GOOD: dict[str, Any] = {"amount": 1999, "currency": "USD", "reference": "order-1", "return_url": "https://s.example/o"}

BAD_VALUES: dict[str, list[Any]] = {
    "amount": ["1999", 19.99, 0, -1, 100_000_000, None, True, [], {}],
    "currency": ["usd", "US", "XYZ", "XXX", 840, None, "€"],
    "reference": ["", "r" * 129, 42, None, "a\x00"],
    "return_url": ["shop.example/o", "ftp://s.example", "https://", 3, "https://s.example/a b", "h" * 3000],
    "cancel_url": ["javascript:alert(1)", 7],
    "description": ["d" * 1001, 5, ["list"]],
    "customer_email": ["nope", "a@b", "a b@c.example", 9, "x" * 255 + "@e.example"],
    "metadata": [[], "m", {"k": 1}, {"k" * 41: "v"}, {str(i): "v" for i in range(21)}, {"k": "v" * 501}, {"": "v"}],
    "unknown_field": [1],
}
# Regex syntax and Python's own vocabulary: what a shop developer should never have to decode.
LEAKS = re.compile(
    r"\^|\$'|\\x|\[\^|\{\d+\}|\bstr\b|\bint\b|\bdict\b|\bfloat\b|\bbool\b|\bNoneType\b|\blist\b|PaymentCreate"
    r"|instance of|\bitems\b|pattern|Input should|Value error"
)


def messages_for(field: str, value: Any) -> list[dict[str, str]]:
    document = {**GOOD, field: value}
    with pytest.raises(ValidationError) as caught:
        PaymentCreate.model_validate(document)
    return field_errors(caught.value.errors(include_url=False))


CASES = [(field, value) for field, values in BAD_VALUES.items() for value in values]


@pytest.mark.parametrize(("field", "value"), CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(CASES)])
def test_every_validation_message_is_plain_words(field: str, value: Any) -> None:
    for error in messages_for(field, value):
        assert not LEAKS.search(error["message"]), error
        assert error["message"].strip() and len(error["message"]) < 200, error


def test_a_string_too_long_is_said_in_characters() -> None:
    assert messages_for("description", "d" * 1001) == [
        {"field": "description", "message": "must be at most 1000 characters"}
    ]


def test_a_bad_email_is_explained_without_a_pattern() -> None:
    [error] = messages_for("customer_email", "nope")
    assert error["message"] == "must be an e-mail address such as customer@example.com"


def test_a_body_that_is_not_an_object_is_said_so() -> None:
    with pytest.raises(ValidationError) as caught:
        PaymentCreate.model_validate([1, 2])
    assert field_errors(caught.value.errors()) == [{"field": "body", "message": "the body must be a JSON object"}]


@pytest.mark.parametrize("code", sorted(NON_TENDER_CODES))
def test_a_code_for_no_money_a_customer_pays_with_is_refused(code: str) -> None:
    [error] = messages_for("currency", code)
    assert error["field"] == "currency" and code in error["message"]


@pytest.mark.parametrize("code", ["USD", "EUR", "JPY", "XOF", "XAF", "XCD", "XPF"])
def test_real_currencies_including_the_x_prefixed_ones_are_accepted(code: str) -> None:
    assert PaymentCreate.model_validate({**GOOD, "currency": code}).currency == code
