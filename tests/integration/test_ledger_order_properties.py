"""The order-independence property against the real database, through record_events (tests/support/ledger.py).

Fewer examples than the pure tests (each one writes real rows): a random history of one payment, delivered in
a random order with duplicates, an event arriving before its payment deferred behind the request (RetryLater,
as the delay queue does), must end in the state the gateway's truth dictates, with one log row per event id,
and record exactly what the same rules (`record_event`) record over the in-memory store for that order: the
Postgres store and its twin behave alike.
"""

from __future__ import annotations

import secrets
import uuid

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger.postgres_store import PostgresLedgerStore
from services.ledger.store import InMemoryLedgerStore
from shared.events import Envelope, PaymentStatus
from tests.support.ledger import record_event
from tests.support.payment_histories import LogRow, Truth, build_history, deliver, deliveries, log_rows, truths


async def _record(pool: asyncpg.Pool, envelope: Envelope) -> None:
    await record_event(PostgresLedgerStore(pool), envelope)


@settings(max_examples=50, deadline=None)
@given(truth=truths(), data=st.data())
async def test_the_database_ends_the_same_whatever_the_order_and_duplication(
    pool: asyncpg.Pool, truth: Truth, data: st.DataObject
) -> None:
    # A fresh payment per example: hypothesis replays examples, the database remembers them.
    history = build_history(truth, f"pay_{secrets.token_hex(8)}")
    order = data.draw(deliveries(history))

    recorded = await deliver(
        order, lambda envelope: _record(pool, envelope), lambda low, high: data.draw(st.integers(low, high))
    )

    row = await pool.fetchrow(
        "SELECT status, failure_code, provider_payment_id, checkout_url, amount_captured, capture_method"
        " FROM ledger.payment_requests WHERE id = $1",
        history.payment_id,
    )
    expected = history.expected
    assert row is not None
    assert (
        PaymentStatus(row["status"]),
        row["failure_code"],
        row["provider_payment_id"],
        row["checkout_url"],
        row["amount_captured"],
        row["capture_method"],
    ) == (
        expected.status,
        expected.failure_code,
        expected.provider_payment_id,
        expected.checkout_url,
        expected.amount_captured,
        truth.capture_method,
    )

    logs = await pool.fetch(
        "SELECT event_id, from_status, to_status, outcome, late_success FROM ledger.payment_logs"
        " WHERE payment_request_id = $1",
        history.payment_id,
    )
    ids = [r["event_id"] for r in logs]
    assert len(ids) == len(set(ids)) and set(ids) == history.event_ids

    # What the database recorded is what the rules record over the in-memory twin, in the same order.
    twin = InMemoryLedgerStore()
    for envelope in recorded:
        await record_event(twin, envelope)
    stored: dict[uuid.UUID, LogRow] = {
        r["event_id"]: LogRow(
            PaymentStatus(r["from_status"]) if r["from_status"] else None,
            PaymentStatus(r["to_status"]) if r["to_status"] else None,
            r["outcome"],
            r["late_success"],
        )
        for r in logs
    }
    assert stored == log_rows(twin.log(history.payment_id))
