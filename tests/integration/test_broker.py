"""The broker layer against the real RabbitMQ: once per group, redelivery after a crash, DLQ after failing."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import aiormq
import pytest

from services.gateway_worker.handlers import GATEWAY_MESSAGES
from shared.broker import Broker, Delivery, Handler, PoisonMessage, RetryLater, RetryPolicy
from shared.consumers import CONSUMER_GROUPS
from shared.events import Envelope, PaymentIntentCreated
from shared.metrics import EVENTS_PROCESSED
from tests.support.brokers import queue_depth
from tests.support.messages import payment_requested
from tests.support.processes import eventually

FAST = RetryPolicy(max_attempts=3, base_seconds=0.05)


def intent_created(payment_id: str | None = None) -> Envelope:
    message = PaymentIntentCreated(provider="sandbox", provider_payment_id="pi_1", checkout_url="http://x/pay/pi_1")
    return Envelope.wrap(message, payment_id=payment_id or f"pay_{uuid.uuid4().hex}", source="gateway")


async def test_declaring_the_topology_twice_is_harmless(broker: Broker) -> None:
    await asyncio.gather(broker.declare_topology(CONSUMER_GROUPS), broker.declare_topology(CONSUMER_GROUPS))
    assert await queue_depth(broker, broker.names.queue("ledger")) == 0


async def test_an_event_published_once_is_handled_once_per_consumer_group(broker: Broker) -> None:
    seen: dict[str, list[uuid.UUID]] = {"ledger": [], "gateway_worker": []}
    envelope = intent_created()
    # The gateway_worker is bound to payment requests, not to intent events: this one comes after the
    # intent event in both queues it reaches, so once it is handled the intent event would have been too.
    marker = payment_requested()

    def handler_for(group: str) -> Handler:
        async def handle(received: Envelope, _: Delivery) -> None:
            seen[group].append(received.id)

        return handle

    # Two consumers in the ledger group compete; one consumes the gateway_worker's queue.
    await broker.consume("ledger", handler_for("ledger"), retry=FAST)
    await broker.consume("ledger", handler_for("ledger"), retry=FAST)
    await broker.consume("gateway_worker", handler_for("gateway_worker"), retry=FAST)
    await broker.publish(envelope)
    await broker.publish(marker)

    await eventually(lambda: _async(marker.id in seen["gateway_worker"]), what="the gateway_worker to get the request")
    await eventually(lambda: _async(len(seen["ledger"]) == 2), what="the ledger group to handle both")
    assert sorted(seen["ledger"]) == sorted([envelope.id, marker.id])
    assert seen["gateway_worker"] == [marker.id]
    # Both settled: no copy is left waiting to be delivered a second time.
    assert await queue_depth(broker, broker.names.queue("ledger")) == 0


def _handled(group: str, envelope_type: str) -> float:
    return EVENTS_PROCESSED.labels(group, envelope_type, "handled")._value.get()


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


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RetryLater("never ready"), id="a message that keeps failing ends in the DLQ"),
        pytest.param(RuntimeError("bug"), id="an unexpected error is retried then dead-lettered"),
    ],
)
async def test_a_handler_that_always_raises_is_retried_then_dead_lettered(broker: Broker, error: Exception) -> None:
    attempts: list[int] = []

    async def always_fails(_: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise error

    await broker.consume("ledger", always_fails, retry=FAST)
    await broker.publish(intent_created())

    await eventually(lambda: queue_depth(broker, broker.names.dlq("ledger")), what="the message in the DLQ")
    assert attempts == [1, 2, 3]


async def test_a_retried_message_is_handled_when_it_succeeds_later(broker: Broker) -> None:
    attempts: list[int] = []

    async def ready_on_second_try(_: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            raise RetryLater("not yet")

    before = _handled("ledger", PaymentIntentCreated.TYPE)
    await broker.consume("ledger", ready_on_second_try, retry=FAST)
    await broker.publish(intent_created())

    # Settled as handled (acked) on the second attempt: nothing is left to make a third.
    await eventually(lambda: _async(_handled("ledger", PaymentIntentCreated.TYPE) == before + 1), what="the ack")
    assert attempts == [1, 2]
    assert await queue_depth(broker, broker.names.dlq("ledger")) == 0


async def test_a_poison_message_goes_to_the_dlq_at_once(broker: Broker) -> None:
    attempts: list[int] = []

    async def poison(_: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise PoisonMessage("cannot ever be handled")

    await broker.consume("ledger", poison, retry=FAST)
    await broker.publish(intent_created())

    await eventually(lambda: queue_depth(broker, broker.names.dlq("ledger")), what="the message in the DLQ")
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

    await eventually(lambda: queue_depth(broker, broker.names.dlq("ledger")), what="the message in the DLQ")
    assert handled == []


async def test_publishing_an_event_no_queue_is_bound_to_fails_loudly(broker: Broker) -> None:
    envelope = Envelope.wrap(intent_created().message(), payment_id="pay_x", source="gateway")
    stray = envelope.model_copy(update={"type": "nobody.listens"})
    with pytest.raises(aio_pika.exceptions.PublishError):
        await broker.publish(stray)


async def _is_quorum(broker: Broker, name: str) -> bool:
    """Whether `name` is a quorum queue: re-declaring it as classic is refused if so."""
    channel = await broker.connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "classic"})
    except aiormq.exceptions.ChannelPreconditionFailed:
        return True
    await channel.close()
    return False


async def test_every_queue_of_a_group_is_a_quorum_queue_its_delay_queues_too(broker: Broker) -> None:
    async def handle(_: Envelope, __: Delivery) -> None:
        return None

    await broker.consume("ledger", handle, retry=FAST)
    names = broker.names
    for name in (
        names.queue("ledger"),
        names.dlq("ledger"),
        names.delay_queue("ledger", 2),
        names.delay_queue("ledger", 3),
    ):
        assert await _is_quorum(broker, name), name


async def test_an_empty_classic_delay_queue_left_by_an_older_version_is_replaced_by_a_quorum_one(
    broker: Broker,
) -> None:
    old = broker.names.delay_queue("ledger", 2)
    channel = await broker.connection.channel()
    await channel.declare_queue(old, durable=True, arguments={"x-dead-letter-exchange": ""})
    await channel.close()
    attempts: list[int] = []

    async def ready_on_second_try(_: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            raise RetryLater("not yet")

    await broker.consume("ledger", ready_on_second_try, retry=FAST)
    assert await _is_quorum(broker, old)
    await broker.publish(intent_created())
    await eventually(lambda: _async(attempts == [1, 2]), what="the retry through the new delay queue")


async def test_retries_of_a_named_queue_go_back_to_that_queue(broker: Broker) -> None:
    side = broker.names.queue("side")
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(side, durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(broker.names.exchange, routing_key=PaymentIntentCreated.TYPE)
    attempts: list[int] = []

    async def ready_on_second_try(_: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            raise RetryLater("not yet")

    try:
        await broker.consume("side-consumer", ready_on_second_try, retry=FAST, queue_name=side)
        await broker.publish(intent_created())
        await eventually(lambda: _async(attempts == [1, 2]), what="the retry back on the named queue")
        # The group's own queue holds only its copy of the publish, not the retry.
        assert await queue_depth(broker, broker.names.queue("ledger")) == 1
    finally:
        for attempt in range(2, FAST.max_attempts + 1):
            await channel.queue_delete(broker.names.retry_queue(side, attempt))
        await channel.queue_delete(side)
        await channel.close()


async def test_a_type_a_registry_does_not_handle_is_dead_lettered_not_acked(broker: Broker) -> None:
    registry = GATEWAY_MESSAGES
    # Bound by mistake (an old binding, a typo): the gateway_worker's queue gets an intent event.
    channel = await broker.connection.channel()
    queue = await channel.get_queue(broker.names.queue(registry.name))
    await queue.bind(broker.names.exchange, routing_key=PaymentIntentCreated.TYPE)
    await channel.close()

    await broker.consume(registry.name, registry.dispatcher(None), retry=FAST)  # type: ignore[arg-type]
    await broker.publish(intent_created())

    dlq = broker.names.dlq(registry.name)
    await eventually(lambda: queue_depth(broker, dlq), what="the message in the gateway_worker's DLQ")
