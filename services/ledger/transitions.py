"""What the payment and the refund state machines decide the same way; each keeps its own table as data.

Both machines answer a reported status with a rule looked up in a table that lists every (current, reported)
pair, and both refuse, before the table is consulted, an event whose amount or provider object is not theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

StatusT = TypeVar("StatusT", bound=StrEnum)
RuleT = TypeVar("RuleT", bound=StrEnum)


def consult(
    table: Mapping[tuple[StatusT, StatusT], RuleT],
    ignored_because: Mapping[RuleT, str],
    current: StatusT,
    reported: StatusT,
) -> tuple[RuleT, str | None]:
    """The rule for an event reporting `reported` to an aggregate in `current`, and why it is ignored.

    The reason is None when the rule applies the event; otherwise it is the rule's text in `ignored_because`
    filled with both statuses (the words after "ignored: " in the log row).
    """
    rule = table[(current, reported)]
    because = ignored_because.get(rule)
    return rule, None if because is None else because.format(current=current, reported=reported)


def reports_another_amount(amount: int | None, currency: str | None, *, expected: int, expected_currency: str) -> bool:
    """The provider names an amount or a currency (any case) other than the one we recorded; unnamed ones agree."""
    return (amount is not None and amount != expected) or (
        currency is not None and currency.upper() != expected_currency
    )


def names_another_object(reported_id: str | None, recorded_id: str | None) -> bool:
    """The event is about another provider object than the one recorded (either id unknown: no conflict)."""
    return reported_id is not None and recorded_id is not None and reported_id != recorded_id
