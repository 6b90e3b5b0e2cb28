"""The ledger's sweeps against the real database and broker: expiration due once per payment (even with several
ledger processes sweeping at once), again only if nothing came of it; reconciliation of quiet payments."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.ledger.postgres_store import PostgresLedgerStore
from services.ledger.sweeps import request_expirations, request_reconciliations
from shared.broker import Broker
from shared.db import create_pool
from shared.events import Envelope, PaymentStatus
from tests.support.brokers import connected_broker, take_all
from tests.support.infra import Servers, create_database, drop_database
from tests.support.ledger import record_event
from tests.support.payment_histories import intent_created, requested, status_changed


@pytest.fixture(scope="module")
async def sweep_database(servers: Servers) -> AsyncIterator[asyncpg.Pool]:
    """A database of these tests' own: a sweep looks at every payment, so it must see only the test's."""
    url = await create_database(servers.database_url)
    pool = await create_pool(url, max_size=6)
    yield pool
    await pool.close()
    await drop_database(url)


@pytest.fixture
async def own_pool(sweep_database: asyncpg.Pool) -> asyncpg.Pool:
    """The sweeps' database, emptied of the previous test's payments."""
    await sweep_database.execute("TRUNCATE ledger.refunds, ledger.payment_logs, ledger.payment_requests")
    return sweep_database


@pytest.fixture
async def brokers(amqp_url: str, namespace: str) -> AsyncIterator[list[Broker]]:
    """Three ledger processes' broker connections on one namespace."""
    connected = [await connected_broker(amqp_url, namespace, f"test-ledger-{n}") for n in range(3)]
    yield connected
    for broker in connected:
        await broker.close()


async def payment(pool: asyncpg.Pool, *, ttl: float, with_intent: bool = True) -> str:
    payment_id = f"pay_{secrets.token_hex(8)}"
    await record_event(PostgresLedgerStore(pool), requested(payment_id, ttl=ttl))
    if with_intent:
        await record_event(PostgresLedgerStore(pool), intent_created(payment_id))
    return payment_id


async def commands_sent(broker: Broker) -> list[Envelope]:
    """Everything published to the gateway_worker's queue so far (publishes are confirmed, so it is all there)."""
    taken = await take_all(broker.connection, broker.names.queue("gateway_worker"))
    return [Envelope.from_bytes(message.body) for message in taken]


async def test_several_ledgers_sweeping_at_once_send_one_expiration_per_due_payment(
    own_pool: asyncpg.Pool, brokers: list[Broker]
) -> None:
    due = [await payment(own_pool, ttl=-1) for _ in range(3)]

    await asyncio.gather(
        *(
            request_expirations(PostgresLedgerStore(own_pool), broker, resend_after_seconds=60)
            for broker in brokers
            for _ in range(2)
        )
    )

    sent = await commands_sent(brokers[0])
    assert sorted(e.payment_id for e in sent) == sorted(due)
    assert {(e.type, e.source) for e in sent} == {("payment.expiration_due", "expiry")}
    assert {e.data["provider_payment_id"] for e in sent} == {f"pi_{p}" for p in due}


async def test_an_expiration_is_sent_again_only_once_nothing_came_of_it_for_a_while(
    own_pool: asyncpg.Pool, brokers: list[Broker]
) -> None:
    payment_id = await payment(own_pool, ttl=-1)
    await request_expirations(PostgresLedgerStore(own_pool), brokers[0], resend_after_seconds=60)

    soon = await request_expirations(PostgresLedgerStore(own_pool), brokers[0], resend_after_seconds=60)
    later = await request_expirations(PostgresLedgerStore(own_pool), brokers[0], resend_after_seconds=0)

    assert (soon, later) == (0, 1)
    assert [e.payment_id for e in await commands_sent(brokers[0])] == [payment_id, payment_id]


async def test_payments_not_due_or_no_longer_pending_are_not_expired(
    own_pool: asyncpg.Pool, brokers: list[Broker]
) -> None:
    await payment(own_pool, ttl=600)
    paid = await payment(own_pool, ttl=-1)
    await record_event(PostgresLedgerStore(own_pool), status_changed(paid, PaymentStatus.SUCCEEDED, "webhook", "paid"))

    assert await request_expirations(PostgresLedgerStore(own_pool), brokers[0], resend_after_seconds=0) == 0
    assert await commands_sent(brokers[0]) == []


async def test_reconciliation_asks_only_about_quiet_pending_payments_with_an_intent(
    own_pool: asyncpg.Pool, brokers: list[Broker]
) -> None:
    quiet = await payment(own_pool, ttl=600)
    await payment(own_pool, ttl=600, with_intent=False)
    settled = await payment(own_pool, ttl=600)
    await record_event(
        PostgresLedgerStore(own_pool), status_changed(settled, PaymentStatus.FAILED, "webhook", "declined")
    )

    await request_reconciliations(PostgresLedgerStore(own_pool), brokers[0], older_than_seconds=0, every_seconds=60)

    sent = await commands_sent(brokers[0])
    assert [(e.type, e.source, e.payment_id) for e in sent] == [("payment.reconciliation_due", "reconciliation", quiet)]
    assert sent[0].data == {"provider": "sandbox", "provider_payment_id": f"pi_{quiet}"}


async def test_a_payment_is_not_reconciled_again_before_its_interval(
    own_pool: asyncpg.Pool, brokers: list[Broker]
) -> None:
    quiet = await payment(own_pool, ttl=600)
    await request_reconciliations(PostgresLedgerStore(own_pool), brokers[0], older_than_seconds=0, every_seconds=60)

    again = await request_reconciliations(
        PostgresLedgerStore(own_pool), brokers[0], older_than_seconds=0, every_seconds=60
    )

    assert again == 0
    assert [e.payment_id for e in await commands_sent(brokers[0])] == [quiet]


async def test_a_payment_younger_than_the_age_is_not_reconciled(own_pool: asyncpg.Pool, brokers: list[Broker]) -> None:
    await payment(own_pool, ttl=600)

    assert (
        await request_reconciliations(
            PostgresLedgerStore(own_pool), brokers[0], older_than_seconds=3600, every_seconds=60
        )
        == 0
    )


async def held(pool: asyncpg.Pool, *, authorization_ttl: float) -> str:
    """A manual payment the customer paid, recorded by a ledger whose holds last `authorization_ttl` seconds."""
    payment_id = f"pay_{secrets.token_hex(8)}"
    store = PostgresLedgerStore(pool, authorization_ttl_seconds=authorization_ttl)
    await record_event(store, requested(payment_id, ttl=1800, capture_method="manual"))
    await record_event(store, intent_created(payment_id))
    await record_event(store, status_changed(payment_id, PaymentStatus.AUTHORIZED))
    return payment_id


async def test_a_hold_lasts_the_authorization_ttl_from_when_it_was_recorded(own_pool: asyncpg.Pool) -> None:
    payment_id = await held(own_pool, authorization_ttl=3600)

    row = await own_pool.fetchrow(
        "SELECT status, capture_method, expires_at - authorized_at AS hold, authorized_at <= now() AS started"
        " FROM ledger.payment_requests WHERE id = $1",
        payment_id,
    )
    assert row is not None
    assert (row["status"], row["capture_method"], row["hold"].total_seconds(), row["started"]) == (
        "AUTHORIZED",
        "manual",
        3600,
        True,
    )


async def test_a_lapsed_hold_is_sent_to_be_voided_at_the_provider_and_a_live_one_is_not(
    own_pool: asyncpg.Pool, brokers: list[Broker]
) -> None:
    lapsed = await held(own_pool, authorization_ttl=0.001)
    await held(own_pool, authorization_ttl=3600)
    await asyncio.sleep(0.01)

    await request_expirations(PostgresLedgerStore(own_pool), brokers[0], resend_after_seconds=60)

    [sent] = await commands_sent(brokers[0])
    assert (sent.payment_id, sent.type, sent.source) == (lapsed, "payment.expiration_due", "expiry")
    assert (sent.data["authorization"], sent.data["provider_payment_id"]) == (True, f"pi_{lapsed}")
