"""Card checks and the sandbox's test cards: pure functions, no I/O.

Card data only passes through here; what leaves is the last four digits and the outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

# Test cards that fail, by their decline code; any other Luhn-valid number succeeds.
DECLINING_CARDS: dict[str, str] = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
}
# Test cards whose payments succeed but whose refunds then fail, by the refunds' failure code (as Stripe's card of
# that number does).
REFUND_FAILING_CARDS: dict[str, str] = {"4000000000005126": "expired_or_canceled_card"}
SUCCEEDING_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"

_SEPARATORS = re.compile(r"[\s-]+")
_EXPIRY = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*$")
_CVC = re.compile(r"^\d{3,4}$")
# A card that expires further ahead than this is a typing mistake.
_MAX_YEARS_AHEAD = 20


@dataclass(frozen=True)
class CardCheck:
    """The verdict on typed card details: field errors, or the last four digits and the outcome."""

    errors: dict[str, str] = field(default_factory=dict)
    last4: str | None = None
    failure_code: str | None = None
    # What every refund of a payment made with this card ends as: None, succeeded; else failed with this code.
    refund_failure_code: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def normalize_card_number(raw: str) -> str:
    """The digits of a number typed with spaces or dashes."""
    return _SEPARATORS.sub("", raw.strip())


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def decline_code_for(digits: str) -> str | None:
    """The failure code a test card settles with; None when it succeeds."""
    return DECLINING_CARDS.get(digits)


def card_number_error(raw: str) -> str | None:
    digits = normalize_card_number(raw)
    if not digits:
        return "Enter the card number."
    if not digits.isdigit():
        return "The card number may only hold digits, spaces and dashes."
    if not 12 <= len(digits) <= 19:
        return "The card number must have 12 to 19 digits."
    if not luhn_valid(digits):
        return "This card number is not valid; check it for typing mistakes."
    return None


def expiry_error(month: int, year: int, today: date) -> str | None:
    """A card is valid through the last day of its expiry month."""
    if year < 100:
        year += 2000
    if not 1 <= month <= 12:
        return "The expiry month must be between 01 and 12."
    if (year, month) < (today.year, today.month):
        return "This card has expired."
    if year > today.year + _MAX_YEARS_AHEAD:
        return "The expiry date is too far in the future."
    return None


def expiry_text_error(text: str, today: date) -> str | None:
    """Check an expiry typed as MM/YY (or MM/YYYY)."""
    if not text.strip():
        return "Enter the expiry date as MM/YY."
    match = _EXPIRY.match(text)
    if match is None:
        return "Enter the expiry date as MM/YY, for example 04/29."
    return expiry_error(int(match.group(1)), int(match.group(2)), today)


def cvc_error(text: str) -> str | None:
    if not _CVC.match(text.strip()):
        return "The security code (CVC) is the 3 or 4 digits on the card."
    return None


def _verdict(errors: dict[str, str], raw_number: str) -> CardCheck:
    if errors:
        return CardCheck(errors=errors)
    digits = normalize_card_number(raw_number)
    return CardCheck(
        last4=digits[-4:], failure_code=decline_code_for(digits), refund_failure_code=REFUND_FAILING_CARDS.get(digits)
    )


def check_card_form(number: str, expiry: str, cvc: str, name: str, today: date) -> CardCheck:
    """Everything the hosted page's form needs: number, expiry MM/YY, CVC and cardholder name."""
    errors: dict[str, str] = {}
    if not name.strip():
        errors["name"] = "Enter the name on the card."
    elif len(name.strip()) > 100:
        errors["name"] = "The name on the card may have at most 100 characters."
    if message := card_number_error(number):
        errors["card_number"] = message
    if message := expiry_text_error(expiry, today):
        errors["expiry"] = message
    if message := cvc_error(cvc):
        errors["cvc"] = message
    return _verdict(errors, number)


def check_card_simulation(
    number: str, exp_month: int | None, exp_year: int | None, cvc: str | None, today: date
) -> CardCheck:
    """The headless variant: only the number is required; expiry and CVC are checked when given."""
    errors: dict[str, str] = {}
    if message := card_number_error(number):
        errors["card_number"] = message
    if (exp_month is None) != (exp_year is None):
        errors["exp_month" if exp_month is None else "exp_year"] = "Give both exp_month and exp_year."
    elif exp_month is not None and exp_year is not None:
        if message := expiry_error(exp_month, exp_year, today):
            errors["exp_month"] = message
    if cvc is not None and (message := cvc_error(cvc)):
        errors["cvc"] = message
    return _verdict(errors, number)
