"""The broker layer against the real RabbitMQ: once per group, redelivery after a crash, DLQ after failing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from shared.broker import Broker, Delivery, PoisonMessage, RetryLater, RetryPolicy
from shared.events import Envelope, PaymentIntentCreated
from tests.support.processes import eventually

FAST = RetryPolicy(max_attempts=3, base_seconds=0.05)


def intent_created(payment_id: str | None = None) -> Envelope:
    message = PaymentIntentCreated(provider="sandbox", provider_payment_id="pi_1", checkout_url="http://x/pay/pi_1")
    return Envelope.wrap(message, payment_id=payment_id or f"pay_{uuid.uuid4().hex}", source="gateway")


@pytest.fixture
async def broker(amqp_url: str, namespace: str) -> AsyncIterator[Broker]:
    instance = Broker(amqp_url, namespace, name="test")
    await instance.connect()
    await instance.declare_topology()
    yield instance
    await instance.close()


async def _queue_depth(broker: Broker, name: str) -> int:
    channel = await broker.connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def test_declaring_the_topology_twice_is_harmless(broker: Broker) -> None:
    await asyncio.gather(broker.declare_topology(), broker.declare_topology())
    assert await _queue_depth(broker, broker.names.queue("ledger")) == 0


async def test_an_event_published_once_is_handled_once_per_consumer_group(broker: Broker) -> None:
    seen: dict[str, list[uuid.UUID]] = {"ledger": [], "gateway_worker": []}
    envelope = Envelope.wrap(intent_created().message(), payment_id="pay_once", source="gateway")

    def handler_for(group: str):
        async def handle(received: Envelope, _: Delivery) -> None:
            seen[group].append(received.id)

        return handle

    # Two consumers in the ledger group compete; the gateway_worker group is not bound to this type.
    await broker.consume("ledger", handler_for("ledger"), retry=FAST)
    await broker.consume("ledger", handler_for("ledger"), retry=FAST)
    await broker.publish(envelope)

    await eventually(lambda: _async(bool(seen["ledger"])), what="the ledger group to handle the event")
    await asyncio.sleep(0.3)  # room for a wrongful second delivery to show up
    assert seen["ledger"] == [envelope.id]
    assert seen["gateway_worker"] == []


async def _async(value):
    return value


async def test_a_message_whose_consumer_dies_before_acking_is_delivered_again(
    broker: Broker, amqp_url: str, namespace: str
) -> None:
    envelope = intent_created()
    await broker.publish(envelope)

    # A consumer that takes the message and dies (its connection closes) without acking.
    doomed = await aio_pika.connect(amqp_url)
    channel = await doomed.channel()
    queue = await channel.get_queue(broker.names.queue("ledger"))
    taken = await eventually(lambda: queue.get(no_ack=False, fail=False), what="the first delivery")
    assert taken.message_id == str(envelope.id)
    await doomed.close()

    received: list[Delivery] = []

    async def handle(_: Envelope, delivery: Delivery) -> None:
        received.append(delivery)

    await broker.consume("ledger", handle, retry=FAST)
    await eventually(lambda: _async(bool(received)), what="the redelivery")
    assert received[0].redelivered


async def test_a_message_that_keeps_failing_ends_in_the_dlq(broker: Broker) -> None:
    attempts: list[int] = []

    async def always_fails(_: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise RetryLater("never ready")

    await broker.consume("ledger", always_fails, retry=FAST)
    await broker.publish(intent_created())

    await eventually(lambda: _queue_depth(broker, broker.names.dlq("ledger")), what="the message in the DLQ")
    assert attempts == [1, 2, 3]


async def test_an_unexpected_error_is_retried_then_dead_lettered(broker: Broker) -> None:
    attempts: list[int] = []

    async def crashes(_: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise RuntimeError("bug")

    await broker.consume("ledger", crashes, retry=FAST)
    await broker.publish(intent_created())

    await eventually(lambda: _queue_depth(broker, broker.names.dlq("ledger")), what="the message in the DLQ")
    assert attempts == [1, 2, 3]


async def test_a_retried_message_is_handled_when_it_succeeds_later(broker: Broker) -> None:
    attempts: list[int] = []

    async def ready_on_second_try(_: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            raise RetryLater("not yet")

    await broker.consume("ledger", ready_on_second_try, retry=FAST)
    await broker.publish(intent_created())

    await eventually(lambda: _async(len(attempts) == 2), what="the second attempt")
    await asyncio.sleep(0.2)
    assert attempts == [1, 2]
    assert await _queue_depth(broker, broker.names.dlq("ledger")) == 0


async def test_a_poison_message_goes_to_the_dlq_at_once(broker: Broker) -> None:
    attempts: list[int] = []

    async def poison(_: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise PoisonMessage("cannot ever be handled")

    await broker.consume("ledger", poison, retry=FAST)
    await broker.publish(intent_created())

    await eventually(lambda: _queue_depth(broker, broker.names.dlq("ledger")), what="the message in the DLQ")
    assert attempts == [1]


async def test_an_undecodable_message_goes_to_the_dlq_without_reaching_the_handler(broker: Broker) -> None:
    handled: list[Envelope] = []

    async def handle(envelope: Envelope, _: Delivery) -> None:
        handled.append(envelope)

    await broker.consume("ledger", handle, retry=FAST)
    channel = await broker.connection.channel()
    exchange = await channel.get_exchange(broker.names.exchange)
    await exchange.publish(aio_pika.Message(b"not json", message_id="garbage"), routing_key="payment.requested")
    await channel.close()

    await eventually(lambda: _queue_depth(broker, broker.names.dlq("ledger")), what="the message in the DLQ")
    assert handled == []


async def test_publishing_an_event_no_queue_is_bound_to_fails_loudly(broker: Broker) -> None:
    envelope = Envelope.wrap(intent_created().message(), payment_id="pay_x", source="gateway")
    stray = envelope.model_copy(update={"type": "nobody.listens"})
    with pytest.raises(Exception):  # noqa: B017 - aio-pika raises DeliveryError for a returned message
        await broker.publish(stray)
