"""Batch consumption (shared/batches.py) against the real broker: what queued up comes as one batch, each message
settled on its own result, a failing handler never takes a batch's other messages with it, and nothing is acked
before the handler returned."""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Sequence

from shared.batches import Consumed
from shared.broker import BATCH_ACK_DELAY_SECONDS, Broker, PoisonMessage, RetryLater, RetryPolicy
from shared.events import Envelope, PaymentStatus
from tests.support.brokers import connected_broker
from tests.support.payment_histories import status_changed
from tests.support.processes import eventually

GROUP = "ledger"  # a group the topology declares; the tests publish status changes, which only it receives
FAST = RetryPolicy(max_attempts=3, base_seconds=0.05)


def events(count: int) -> list[Envelope]:
    return [status_changed(f"pay_{secrets.token_hex(6)}", PaymentStatus.SUCCEEDED) for _ in range(count)]


async def messages_in_queue(amqp_url: str, namespace: str, group: str = GROUP) -> int:
    """Ready messages of the group's queue, seen from a connection of its own."""
    probe = await connected_broker(amqp_url, namespace, "test-batches-probe")
    try:
        channel = await probe.connection.channel()
        queue = await channel.declare_queue(probe.names.queue(group), passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await probe.close()


class HeldHandler:
    """A batch handler whose first batch waits for `release`, so that what is published meanwhile queues up."""

    def __init__(self, result: object = None) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self._result = result

    def seen(self) -> list[tuple[str, int]]:
        return [entry for batch in self.batches for entry in batch]

    async def __call__(self, batch: Sequence[Consumed]) -> Sequence[BaseException | None]:
        self.batches.append([(item.envelope.payment_id, item.delivery.attempt) for item in batch])
        self.started.set()
        await self.release.wait()
        if callable(self._result):
            return [self._result(item) for item in batch]
        return [None] * len(batch)


async def released(broker: Broker, *, ack_delay: float = BATCH_ACK_DELAY_SECONDS) -> HeldHandler:
    """A handler that holds nothing back, consuming the group's queue on `broker`."""
    handler = HeldHandler()
    handler.release.set()
    await broker.consume_batches(GROUP, handler, retry=FAST, prefetch=100, max_batch=50, ack_delay=ack_delay)
    return handler


async def publish_while_held(broker: Broker, handler: HeldHandler, amqp_url: str, namespace: str, count: int) -> None:
    """One message to start a batch, then `count` more that queue up behind it, then the handler released."""
    first, *rest = events(count + 1)
    await broker.publish(first)
    await handler.started.wait()
    await asyncio.gather(*(broker.publish(e) for e in rest))
    # Every message handed to the consumer (prefetch allows it): none left ready in the queue.
    await eventually(lambda: _none_ready(amqp_url, namespace), what="all messages delivered to the consumer")
    handler.release.set()


async def _none_ready(amqp_url: str, namespace: str) -> bool:
    return await messages_in_queue(amqp_url, namespace) == 0


async def test_messages_that_queue_up_during_a_batch_come_as_the_next_batch_each_once_and_all_acked(
    amqp_url: str, namespace: str
) -> None:
    broker = await connected_broker(amqp_url, namespace, "test-batches")
    handler = HeldHandler()
    await broker.consume_batches(GROUP, handler, retry=FAST, prefetch=100, max_batch=50)

    await publish_while_held(broker, handler, amqp_url, namespace, 30)
    await eventually(lambda: _count_at_least(handler, 31), what="31 messages handled")
    await broker.close()  # what was not acked would now be ready again

    assert max(len(batch) for batch in handler.batches) > 1
    assert len(handler.batches) < 31
    payments = [payment for payment, _ in handler.seen()]
    assert len(payments) == len(set(payments)) == 31
    assert await messages_in_queue(amqp_url, namespace) == 0


async def _count_at_least(handler: HeldHandler, count: int) -> bool:
    return len(handler.seen()) >= count


async def test_a_message_failing_in_a_batch_is_retried_alone(broker: Broker, amqp_url: str, namespace: str) -> None:
    flaky: set[str] = set()

    def result(item: Consumed) -> BaseException | None:
        if not flaky:
            flaky.add(item.envelope.payment_id)  # the first message of the held batch fails its first attempt
        if item.envelope.payment_id in flaky and item.delivery.attempt == 1:
            return RetryLater("not yet")
        return None

    handler = HeldHandler(result)
    await broker.consume_batches(GROUP, handler, retry=FAST, prefetch=100, max_batch=50)

    await publish_while_held(broker, handler, amqp_url, namespace, 10)
    await eventually(lambda: _count_at_least(handler, 12), what="11 messages and one retry handled")
    (failing,) = flaky

    seen = handler.seen()
    assert sorted(attempt for payment, attempt in seen if payment == failing) == [1, 2]
    others = [payment for payment, _ in seen if payment != failing]
    assert len(others) == len(set(others)) == 10


async def test_a_batch_whose_handler_raises_is_handled_one_message_at_a_time(
    broker: Broker, amqp_url: str, namespace: str
) -> None:
    poisoned = events(1)[0]
    handled: list[str] = []
    sizes: list[int] = []

    async def handler(batch: Sequence[Consumed]) -> Sequence[BaseException | None]:
        sizes.append(len(batch))
        if any(item.envelope.id == poisoned.id for item in batch):
            raise ValueError("a message this handler cannot take")
        handled.extend(item.envelope.payment_id for item in batch)
        return [None] * len(batch)

    await broker.consume_batches(GROUP, handler, retry=RetryPolicy(1, 0.05), prefetch=100, max_batch=50)
    # Published together, before anything is consumed would be best; a channel on its own makes them queue.
    healthy = events(12)
    await asyncio.gather(*(broker.publish(e) for e in [*healthy[:6], poisoned, *healthy[6:]]))

    await eventually(lambda: broker.dlq_depth(GROUP), timeout=15, what="the poisoned message dead-lettered")
    await eventually(lambda: _all(handled, healthy), what="every healthy message handled")

    assert sorted(handled) == sorted(e.payment_id for e in healthy)


async def _all(handled: list[str], healthy: list[Envelope]) -> bool:
    return len(handled) >= len(healthy)


async def test_a_poison_result_dead_letters_only_its_message(broker: Broker, amqp_url: str, namespace: str) -> None:
    chosen: set[str] = set()

    def result(item: Consumed) -> BaseException | None:
        if not chosen:
            chosen.add(item.envelope.payment_id)
        return PoisonMessage("never") if item.envelope.payment_id in chosen else None

    handler = HeldHandler(result)
    await broker.consume_batches(GROUP, handler, retry=FAST, prefetch=100, max_batch=50)

    await publish_while_held(broker, handler, amqp_url, namespace, 5)
    await eventually(lambda: broker.dlq_depth(GROUP), timeout=15, what="the poison message dead-lettered")
    await eventually(lambda: _count_at_least(handler, 6), what="the batch handled")

    assert await broker.dlq_depth(GROUP) == 1
    assert len(handler.seen()) == 6


async def test_nothing_is_acked_before_the_handler_returns(amqp_url: str, namespace: str) -> None:
    crashing = await connected_broker(amqp_url, namespace, "test-batches-crashing")
    never = HeldHandler()  # never released: its process "dies" mid-batch
    await crashing.consume_batches(GROUP, never, retry=FAST, prefetch=100, max_batch=50)
    published = events(8)
    await asyncio.gather(*(crashing.publish(e) for e in published))
    await eventually(lambda: _count_at_least(never, 1), what="a batch in the handler")
    await crashing.close()

    survivor = await connected_broker(amqp_url, namespace, "test-batches-survivor")
    try:
        again = await released(survivor)
        await eventually(lambda: _count_at_least(again, 8), what="every message delivered again")
        assert sorted(p for p, _ in again.seen()) == sorted(e.payment_id for e in published)
    finally:
        await survivor.close()


async def test_acks_held_back_are_sent_when_the_broker_closes_and_nothing_is_delivered_again(
    amqp_url: str, namespace: str
) -> None:
    """Messages handled one by one, their acks held for a minute (longer than the test): closing the broker sends
    them, so a consumer after it gets none of them again."""
    first = await connected_broker(amqp_url, namespace, "test-batches-held-acks")
    handler = await released(first, ack_delay=60.0)
    published = events(5)
    for n, envelope in enumerate(published, start=1):  # one at a time: five batches of one
        await first.publish(envelope)
        await eventually(functools.partial(_count_at_least, handler, n), what=f"message {n} handled")
    assert len(handler.batches) == 5
    await first.close()

    after = await connected_broker(amqp_url, namespace, "test-batches-after-held-acks")
    try:
        again = await released(after)
        late = events(1)[0]
        await after.publish(late)
        await eventually(lambda: _count_at_least(again, 1), what="a message published after the close handled")
        await asyncio.sleep(0.3)  # a message delivered again would come before or with it
        assert [payment for payment, _ in again.seen()] == [late.payment_id]
    finally:
        await after.close()


async def test_acks_held_back_go_out_after_the_delay_without_a_close(amqp_url: str, namespace: str) -> None:
    """A consumer that keeps running acks what it handled once the delay has passed: a crash after it delivers
    nothing again."""
    running = await connected_broker(amqp_url, namespace, "test-batches-delayed-acks")
    handler = await released(running, ack_delay=0.1)
    published = events(3)
    for n, envelope in enumerate(published, start=1):
        await running.publish(envelope)
        await eventually(functools.partial(_count_at_least, handler, n), what=f"message {n} handled")
    await asyncio.sleep(0.5)  # the delay, five times over
    # A crash: the connection drops with nothing sent first (what was not acked becomes ready again).
    assert running.connection is not None
    await running.connection.close()
    try:
        assert await messages_in_queue(amqp_url, namespace) == 0
    finally:
        await running.close()
