"""An intent the gateway opens after its payment was canceled or expired is closed again, never left payable."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from services.ledger.postgres_store import PostgresLedgerStore
from shared.events import CancelPayment, ExpirePayment, PaymentStatus
from tests.support.ledger import record_event
from tests.support.messages import Published
from tests.support.payment_histories import intent_created, intent_id_of, requested, status_changed


@pytest.mark.parametrize(
    ("ended_as", "command", "source"),
    [(PaymentStatus.CANCELED, CancelPayment, "merchant"), (PaymentStatus.EXPIRED, ExpirePayment, "expiry")],
)
async def test_an_intent_created_after_the_payment_ended_is_closed_at_the_provider(
    pool: asyncpg.Pool, ended_as: PaymentStatus, command: type[CancelPayment | ExpirePayment], source: str
) -> None:
    payment_id = f"pay_{secrets.token_hex(8)}"
    published = Published()

    await record_event(PostgresLedgerStore(pool), requested(payment_id), published)
    await record_event(
        PostgresLedgerStore(pool), status_changed(payment_id, ended_as, "gateway", "ended-first"), published
    )
    assert published == []

    late = intent_created(payment_id)
    await record_event(PostgresLedgerStore(pool), late, published)
    await record_event(PostgresLedgerStore(pool), late, published)  # a redelivery sends nothing more

    assert len(published) == 1
    closing = published[0]
    assert (closing.type, closing.source, closing.payment_id) == (command.TYPE, source, payment_id)
    assert closing.message() == command(provider="sandbox", provider_payment_id=intent_id_of(payment_id))
    status = await pool.fetchval("SELECT status FROM ledger.payment_requests WHERE id = $1", payment_id)
    assert status == ended_as.value


async def test_an_intent_created_for_a_pending_payment_needs_no_follow_up(pool: asyncpg.Pool) -> None:
    payment_id = f"pay_{secrets.token_hex(8)}"
    published = Published()

    await record_event(PostgresLedgerStore(pool), requested(payment_id), published)
    await record_event(PostgresLedgerStore(pool), intent_created(payment_id), published)

    assert published == []


async def test_a_payment_canceled_without_naming_its_known_intent_gets_the_intent_closed(pool: asyncpg.Pool) -> None:
    payment_id = f"pay_{secrets.token_hex(8)}"
    published = Published()

    await record_event(PostgresLedgerStore(pool), requested(payment_id), published)
    await record_event(PostgresLedgerStore(pool), intent_created(payment_id), published)
    # The cancel was asked before the intake knew the intent, so its outcome names none.
    closed_on_our_side = status_changed(payment_id, PaymentStatus.CANCELED, "gateway", "no-intent")
    closed_on_our_side = closed_on_our_side.model_copy(
        update={"data": {**closed_on_our_side.data, "provider_payment_id": None}}
    )
    await record_event(PostgresLedgerStore(pool), closed_on_our_side, published)

    assert [e.message() for e in published] == [
        CancelPayment(provider="sandbox", provider_payment_id=intent_id_of(payment_id))
    ]
