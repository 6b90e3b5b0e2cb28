"""Property-based tests (hypothesis) of the ledger's rules: any order, any duplication, the same end.

Each example is one payment's realistic history (tests/support/payment_histories.py), delivered in a random
order with random duplicates, through the ledger's real `record_event` over the in-memory store. An event that
arrives before its payment's request is deferred behind it, as the ledger's delay queue does.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger.store import InMemoryLedgerStore
from shared.events import Envelope, PaymentStatus
from tests.support.ledger import record_event
from tests.support.payment_histories import (
    History,
    LogRow,
    Truth,
    build_history,
    deliver,
    deliveries,
    log_rows,
    truths,
)

PAYMENT_ID = "pay_property"


class Ledger:
    """The ledger's recording rules (record_events) over the in-memory store, for one payment."""

    def __init__(self) -> None:
        self.store = InMemoryLedgerStore()

    async def record(self, envelope: Envelope) -> None:
        await record_event(self.store, envelope)

    @property
    def rows(self) -> dict:
        return log_rows(self.store.log(PAYMENT_ID))


def every_history(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """`test(truth, data)` as a property of 200 histories; it draws their delivery order from `data`."""
    return settings(max_examples=200, deadline=None)(given(truth=truths(), data=st.data())(test))


async def _shuffled(truth: Truth, data: st.DataObject) -> tuple[History, Ledger]:
    """The truth's history, delivered in an order (with duplicates) that hypothesis draws."""
    history = build_history(truth, PAYMENT_ID)
    order = data.draw(deliveries(history))
    ledger = Ledger()
    await deliver(order, ledger.record, lambda low, high: data.draw(st.integers(low, high)))
    return history, ledger


async def _in_causal_order(history: History) -> Ledger:
    ledger = Ledger()
    await deliver(list(history.events), ledger.record, lambda low, high: low)
    return ledger


def _final(ledger: Ledger) -> tuple[PaymentStatus, str | None, str | None, str | None, int]:
    s = ledger.store.state(PAYMENT_ID)
    assert s is not None
    return s.status, s.failure_code, s.provider_payment_id, s.checkout_url, s.amount_captured


@every_history
async def test_the_final_state_does_not_depend_on_order_or_duplication(truth: Truth, data: st.DataObject) -> None:
    history, shuffled = await _shuffled(truth, data)
    causal = await _in_causal_order(history)

    expected = history.expected
    assert _final(shuffled) == _final(causal)
    assert _final(shuffled) == (
        expected.status,
        expected.failure_code,
        expected.provider_payment_id,
        expected.checkout_url,
        expected.amount_captured,
    )


@every_history
async def test_every_event_gets_exactly_one_log_row_whatever_the_order(truth: Truth, data: st.DataObject) -> None:
    history, shuffled = await _shuffled(truth, data)

    # `rows` is keyed by event id: one row each, and the set of ids is exactly the set of distinct events.
    assert set(shuffled.rows) == history.event_ids
    assert set(shuffled.rows) == set((await _in_causal_order(history)).rows)


@every_history
async def test_the_final_status_is_entered_by_exactly_one_applied_event(truth: Truth, data: st.DataObject) -> None:
    history, shuffled = await _shuffled(truth, data)

    final = history.expected.status
    entering = [
        row
        for row in shuffled.rows.values()
        if row.outcome == "applied" and row.to_status is final and row.from_status not in (None, final)
    ]
    assert len(entering) == (0 if final is PaymentStatus.PENDING else 1)


@every_history
async def test_a_success_over_an_unsuccessful_end_and_nothing_else_is_flagged_late(
    truth: Truth, data: st.DataObject
) -> None:
    _, shuffled = await _shuffled(truth, data)

    unsuccessful = (PaymentStatus.FAILED, PaymentStatus.CANCELED, PaymentStatus.EXPIRED)
    flagged: list[LogRow] = [row for row in shuffled.rows.values() if row.late_success]
    over_an_end = [
        row
        for row in shuffled.rows.values()
        if row.outcome == "applied" and row.from_status in unsuccessful and row.to_status is PaymentStatus.SUCCEEDED
    ]
    assert flagged == over_an_end
    assert len(flagged) <= 1
    if len(truth.outcomes) < 2:  # no unsuccessful outcome before a success: nothing can be late
        assert flagged == []


@every_history
async def test_a_forged_amount_is_never_applied(truth: Truth, data: st.DataObject) -> None:
    _, shuffled = await _shuffled(truth, data)

    mismatches = [row for row in shuffled.rows.values() if row.outcome.startswith("ignored: amount mismatch")]
    assert len(mismatches) == (1 if truth.forged_amount else 0)


@every_history
async def test_a_hold_is_entered_at_most_once_and_left_at_most_once(truth: Truth, data: st.DataObject) -> None:
    _, shuffled = await _shuffled(truth, data)

    held = PaymentStatus.AUTHORIZED
    applied = [row for row in shuffled.rows.values() if row.outcome == "applied" and row.from_status != row.to_status]
    entering = [row for row in applied if row.to_status is held]
    leaving = [row for row in applied if row.from_status is held]
    assert len(entering) <= (1 if truth.held else 0)
    assert len(leaving) <= len(entering)
    # A capture, a void and an expiry racing each other end the hold in the one way the provider decided.
    assert [row.to_status for row in leaving] in ([], [truth.final_status])
