"""The ledger's refund recording (services/ledger/refunds.py) against the real database: exactly once in any
order, amount_refunded kept with each success, an event about an unknown refund retried, and every refund event in
the payment's log."""

from __future__ import annotations

import secrets
from collections import deque

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger.handlers import LedgerHandlers
from services.ledger.postgres_store import PostgresLedgerStore
from services.ledger.refunds import RefundRecorder
from shared.events import Envelope, PaymentStatus, RefundStatus
from shared.settlement import RetryLater
from tests.support.ledger import record_event
from tests.support.messages import consumed
from tests.support.payment_histories import intent_created, requested, status_changed
from tests.support.refund_histories import (
    AMOUNT,
    RefundTruth,
    build_refund_history,
    refund_outcome,
    refund_requested,
    refund_truths,
    shuffled_with_duplicates,
)


async def succeeded_payment(pool: asyncpg.Pool, amount: int = 1999) -> str:
    payment_id = f"pay_{secrets.token_hex(8)}"
    store = PostgresLedgerStore(pool)
    await record_event(store, requested(payment_id, amount=amount))
    await record_event(store, intent_created(payment_id))
    await record_event(store, status_changed(payment_id, PaymentStatus.SUCCEEDED, amount=amount))
    return payment_id


async def deliver_all(recorder: RefundRecorder, order: list[Envelope]) -> None:
    """Deliver in order; an event the ledger cannot take yet goes to the back, as its delay queue would send it."""
    queue = deque(order)
    for _ in range(10 * len(order)):
        if not queue:
            return
        envelope = queue.popleft()
        try:
            await recorder(envelope, envelope.message())
        except RetryLater:
            queue.append(envelope)
    raise AssertionError(f"events never recorded: {[e.type for e in queue]}")


async def test_a_refund_event_before_its_refund_is_retried_not_dropped(pool: asyncpg.Pool) -> None:
    payment_id = await succeeded_payment(pool)
    recorder = RefundRecorder(pool)
    outcome = refund_outcome(payment_id, "re_early", "webhook", RefundStatus.SUCCEEDED, None)

    try:
        await recorder(outcome, outcome.message())
        raise AssertionError("an outcome before its refund was recorded")
    except RetryLater:
        pass
    await recorder(request := refund_requested(payment_id, "re_early"), request.message())
    await recorder(outcome, outcome.message())

    row = await pool.fetchrow("SELECT status FROM ledger.refunds WHERE id = 're_early'")
    assert row is not None
    assert row["status"] == "succeeded"
    assert (
        await pool.fetchval("SELECT amount_refunded FROM ledger.payment_requests WHERE id = $1", payment_id) == AMOUNT
    )


@settings(max_examples=30, deadline=None)
@given(truth=refund_truths(), data=st.data())
async def test_any_order_and_duplication_of_a_refunds_events_is_recorded_once_with_the_same_end(
    pool: asyncpg.Pool, truth: RefundTruth, data: st.DataObject
) -> None:
    payment_id = await succeeded_payment(pool)
    refund_id = f"re_{secrets.token_hex(8)}"
    request = refund_requested(payment_id, refund_id)
    events = [request, *build_refund_history(truth, payment_id, refund_id)]
    order = data.draw(shuffled_with_duplicates(events))

    await deliver_all(RefundRecorder(pool), order)

    refund = await pool.fetchrow("SELECT status, failure_code FROM ledger.refunds WHERE id = $1", refund_id)
    assert refund is not None
    assert refund["status"] == truth.status.value
    refunded = AMOUNT if truth.status is RefundStatus.SUCCEEDED else 0
    paid = await pool.fetchrow("SELECT amount_refunded, status FROM ledger.payment_requests WHERE id = $1", payment_id)
    assert paid is not None
    assert (paid["amount_refunded"], paid["status"]) == (refunded, "SUCCEEDED")
    logged = await pool.fetch(
        "SELECT event_id, refund_from_status, refund_to_status, outcome FROM ledger.payment_logs"
        " WHERE refund_id = $1 ORDER BY id",
        refund_id,
    )
    assert sorted(str(r["event_id"]) for r in logged) == sorted(str(e.id) for e in events)
    changes = [(r["refund_from_status"], r["refund_to_status"]) for r in logged if r["outcome"] == "applied"]
    assert changes.count(("pending", truth.status.value)) == 1


async def test_a_batchs_refunds_are_recorded_together_and_each_refunds_events_in_their_order(
    pool: asyncpg.Pool,
) -> None:
    # Two refunds of one payment and one of another, each requested and succeeded in the same batch: a refund's
    # outcome comes after its request (never before its refund exists), the two of one payment both count.
    shared, other = await succeeded_payment(pool, amount=2 * AMOUNT), await succeeded_payment(pool)
    refunds = [(shared, f"re_{secrets.token_hex(8)}"), (shared, f"re_{secrets.token_hex(8)}"), (other, "")]
    refunds[2] = (other, f"re_{secrets.token_hex(8)}")
    requests = [refund_requested(payment_id, refund_id) for payment_id, refund_id in refunds]
    outcomes = [
        refund_outcome(payment_id, refund_id, "webhook", RefundStatus.SUCCEEDED, None)
        for payment_id, refund_id in refunds
    ]
    batch = [consumed(envelope) for pair in zip(requests, outcomes, strict=True) for envelope in pair]
    ledger = LedgerHandlers(PostgresLedgerStore(pool), refunds=RefundRecorder(pool))

    assert await ledger.record_batch(batch) == [None] * len(batch)

    statuses = await pool.fetch(
        "SELECT status FROM ledger.refunds WHERE id = ANY ($1)", [refund_id for _, refund_id in refunds]
    )
    assert [r["status"] for r in statuses] == ["succeeded"] * 3
    refunded = await pool.fetch(
        "SELECT id, amount_refunded FROM ledger.payment_requests WHERE id = ANY ($1)", [shared, other]
    )
    assert {r["id"]: r["amount_refunded"] for r in refunded} == {shared: 2 * AMOUNT, other: AMOUNT}
