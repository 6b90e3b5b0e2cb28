"""The outbox relay against the real PostgreSQL and RabbitMQ: confirmed rows are marked, the rest stay queued."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest

from services.intake_api import store
from services.intake_api.models import PaymentCreate
from services.intake_api.outbox import BUNDLE_SIZE, OutboxPublishFailed, OutboxRelay
from shared.broker import BUNDLE_CONTENT_TYPE, REPLY_TO_HEADER, Broker, bundle_items
from shared.consumers import CONSUMER_GROUPS
from shared.db import connect, create_pool
from shared.supervisor import Supervisor
from tests.support.brokers import take_all
from tests.support.infra import Servers, create_database, drop_database
from tests.support.processes import eventually

PAYMENT = PaymentCreate.model_validate(
    {"amount": 1999, "currency": "USD", "reference": "order-42", "return_url": "https://shop.example/orders/42"}
)


@pytest.fixture
async def outbox_db(servers: Servers) -> AsyncIterator[str]:
    """An outbox of this test's own: the relay publishes every unsent row it finds."""
    url = await create_database(servers.database_url)
    yield url
    await drop_database(url)


@pytest.fixture
async def outbox_pool(outbox_db: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(outbox_db, max_size=10)
    yield pool
    await asyncio.wait_for(pool.close(), 10)


@pytest.fixture
async def broker(amqp_url: str, namespace: str) -> AsyncIterator[Broker]:
    instance = Broker(amqp_url, namespace, name="test-outbox")
    await instance.connect()
    yield instance
    await instance.close()


def relay_for(pool: asyncpg.Pool, broker: Broker, url: str, **options: float) -> OutboxRelay:
    return OutboxRelay(pool, broker.publish, connect=lambda: connect(url), **options)  # type: ignore[arg-type]


async def accept_one(pool: asyncpg.Pool, payment_id: str, reply_to: str | None = None) -> None:
    """Accept one payment under a new key; `reply_to`: the reply key of a request waiting for its outcome."""
    await store.accept_payment(
        pool,
        payment_id=payment_id,
        merchant_id="demo",
        key=secrets.token_hex(8),
        request=PAYMENT,
        fingerprint=PAYMENT.fingerprint(),
        ttl_seconds=1800,
        reply_to=reply_to,
    )


async def accept_payments(pool: asyncpg.Pool, count: int) -> set[str]:
    """Accept `count` payments; returns the event ids of their outbox rows."""
    for _ in range(count):
        await accept_one(pool, store.new_payment_id())
    return {str(r["event_id"]) for r in await pool.fetch("SELECT event_id FROM intake.outbox")}


async def unsent(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM intake.outbox WHERE published_at IS NULL"))


async def received_ids(broker: Broker, queue: str) -> list[str]:
    """Every message id now in `queue` (taken off it)."""
    return [str(message.message_id) for message in await take_all(broker.connection, queue)]


async def test_the_relay_publishes_unsent_rows_and_marks_them_sent(
    outbox_db: str, outbox_pool: asyncpg.Pool, broker: Broker
) -> None:
    await broker.declare_topology(CONSUMER_GROUPS)
    event_ids = await accept_payments(outbox_pool, 3)

    assert await relay_for(outbox_pool, broker, outbox_db).publish_batch() == 3

    assert await unsent(outbox_pool) == 0
    assert sorted(await received_ids(broker, broker.names.queue("ledger"))) == sorted(event_ids)


async def test_the_relay_publishes_a_waiting_requests_reply_address_and_none_for_one_that_does_not_wait(
    outbox_db: str, outbox_pool: asyncpg.Pool, broker: Broker
) -> None:
    await broker.declare_topology(CONSUMER_GROUPS)
    reply_to = broker.names.reply_key("intake_api", secrets.token_hex(6))
    waiting, not_waiting = store.new_payment_id(), store.new_payment_id()
    for payment_id, address in ((waiting, reply_to), (not_waiting, None)):
        await accept_one(outbox_pool, payment_id, address)

    assert await relay_for(outbox_pool, broker, outbox_db).publish_batch() == 2

    # What the gateway_worker receives: the address rides with the request it answers.
    received = await take_all(broker.connection, broker.names.queue("gateway_worker"))
    headers = {json.loads(m.body)["payment_id"]: (m.headers or {}).get(REPLY_TO_HEADER) for m in received}
    assert headers == {waiting: reply_to, not_waiting: None}


async def test_rows_the_broker_does_not_confirm_stay_queued_until_it_does(
    outbox_db: str, outbox_pool: asyncpg.Pool, broker: Broker
) -> None:
    # Nothing is bound to the exchange yet: the broker returns every message as unroutable.
    event_ids = await accept_payments(outbox_pool, 2)
    relay = relay_for(outbox_pool, broker, outbox_db)

    with pytest.raises(OutboxPublishFailed):
        await relay.publish_batch()
    assert await unsent(outbox_pool) == 2

    await broker.declare_topology(CONSUMER_GROUPS)
    assert await relay.publish_batch() == 2
    assert sorted(await received_ids(broker, broker.names.queue("ledger"))) == sorted(event_ids)


async def test_the_confirmed_part_of_a_batch_is_marked_even_when_another_row_fails(
    outbox_db: str, outbox_pool: asyncpg.Pool, broker: Broker
) -> None:
    await broker.declare_topology(CONSUMER_GROUPS)
    await accept_payments(outbox_pool, 3)
    refused = await outbox_pool.fetchval("SELECT payment_id FROM intake.outbox ORDER BY id LIMIT 1")

    async def publish_refusing_one(envelope, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if envelope.payment_id == refused:
            raise aio_pika.exceptions.DeliveryError(None, None)  # type: ignore[arg-type]
        await broker.publish(envelope, **kwargs)

    relay = OutboxRelay(outbox_pool, publish_refusing_one, connect=lambda: connect(outbox_db))
    with pytest.raises(OutboxPublishFailed):
        await relay.publish_batch()

    left = await outbox_pool.fetch("SELECT payment_id FROM intake.outbox WHERE published_at IS NULL")
    assert [row["payment_id"] for row in left] == [refused]


class RecordingRelay(OutboxRelay):
    """Notes every wake-up: a NOTIFY calls `wake(connection, pid, channel, payload)`, the listener's start `wake()`."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.wakes: list[tuple[object, ...]] = []

    def wake(self, *args: object) -> None:
        self.wakes.append(args)
        super().wake()


async def test_the_relay_wakes_on_notify_without_waiting_for_the_poll(
    outbox_db: str, outbox_pool: asyncpg.Pool, broker: Broker
) -> None:
    await broker.declare_topology(CONSUMER_GROUPS)
    relay = RecordingRelay(outbox_pool, broker.publish, connect=lambda: connect(outbox_db), poll_interval=3600)
    loops = Supervisor()
    relay.start(loops)
    try:

        async def listening() -> bool:
            return () in relay.wakes

        await eventually(listening, timeout=10, what="the relay to LISTEN")
        await accept_payments(outbox_pool, 1)

        async def drained_on_notify() -> bool:
            notified = any(len(args) == 4 and args[2] == "paystream_outbox" for args in relay.wakes)
            return notified and await unsent(outbox_pool) == 0

        await eventually(drained_on_notify, timeout=10, what="a NOTIFY to wake the relay and the row to go out")
    finally:
        await loops.stop()


async def test_two_relays_sharing_one_outbox_publish_every_row(
    outbox_db: str, outbox_pool: asyncpg.Pool, broker: Broker
) -> None:
    await broker.declare_topology(CONSUMER_GROUPS)
    event_ids = await accept_payments(outbox_pool, 60)
    second_pool = await create_pool(outbox_db, max_size=5)
    relays = [
        relay_for(outbox_pool, broker, outbox_db, batch_size=7),
        relay_for(second_pool, broker, outbox_db, batch_size=7),
    ]
    running = [asyncio.create_task(relay.run()) for relay in relays]
    try:

        async def drained() -> bool:
            return await unsent(outbox_pool) == 0

        await eventually(drained, timeout=20, what="both relays to drain the outbox")
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await second_pool.close()

    received = await received_ids(broker, broker.names.queue("ledger"))
    assert set(received) == event_ids
    # FOR UPDATE SKIP LOCKED: a row claimed by one relay is skipped by the other, so none went out twice.
    assert len(received) == len(event_ids)


def bundling_relay(pool: asyncpg.Pool, broker: Broker, url: str) -> OutboxRelay:
    return OutboxRelay(pool, broker.publish, connect=lambda: connect(url), publish_bundle=broker.publish_bundle)


async def test_with_bundles_a_batch_goes_as_a_few_messages_with_each_row_once_and_its_reply_key(
    outbox_db: str, outbox_pool: asyncpg.Pool, broker: Broker
) -> None:
    await broker.declare_topology(CONSUMER_GROUPS)
    reply_to = broker.names.reply_key("intake_api", secrets.token_hex(6))
    waiting = store.new_payment_id()
    await accept_one(outbox_pool, waiting, reply_to)
    event_ids = await accept_payments(outbox_pool, 2 * BUNDLE_SIZE + 4)

    assert await bundling_relay(outbox_pool, broker, outbox_db).publish_batch() == len(event_ids)

    received = await take_all(broker.connection, broker.names.queue("gateway_worker"))
    assert [m.content_type for m in received] == [BUNDLE_CONTENT_TYPE] * 3  # 20 + 20 + 5 rows
    items = [item for m in received for item in bundle_items(m.body)]
    assert sorted(str(envelope.id) for _, envelope in items) == sorted(event_ids)
    replies = {envelope.payment_id: headers.get(REPLY_TO_HEADER) for headers, envelope in items}
    assert replies.pop(waiting) == reply_to
    assert set(replies.values()) == {None}
    assert await unsent(outbox_pool) == 0


async def test_with_bundles_rows_the_broker_does_not_confirm_stay_queued(
    outbox_db: str, outbox_pool: asyncpg.Pool, broker: Broker
) -> None:
    # Nothing is bound to the exchange yet: the broker returns the bundle as unroutable.
    await accept_payments(outbox_pool, 5)
    relay = bundling_relay(outbox_pool, broker, outbox_db)

    with pytest.raises(OutboxPublishFailed):
        await relay.publish_batch()

    assert await unsent(outbox_pool) == 5
