"""The batch consumer's rules without a broker (shared/batches.py): which acks a batch sends, a failing batch handled
one message at a time, nothing acked before the handler returned, and a fault of the layer itself handing the
batch back while its supervisor runs the consumer again. The real broker's side is
tests/integration/test_broker_batches.py."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import structlog
from aio_pika.abc import AbstractIncomingMessage
from opentelemetry.trace import INVALID_SPAN

from shared.batches import BatchConsumer, Consumed, acks_together
from shared.broker import Delivery, PoisonMessage, RetryLater
from shared.events import Envelope, PaymentStatus
from shared.supervisor import Backoff, Supervisor
from tests.support.payment_histories import status_changed
from tests.support.processes import eventually


@dataclass
class FakeMessage:
    """What the consumer uses of an aio-pika message, with what was done to it."""

    channel: object
    delivery_tag: int
    body: bytes = b""
    message_id: str = "m"
    calls: list[tuple[str, bool]] = field(default_factory=list)

    async def ack(self, multiple: bool = False) -> None:
        self.calls.append(("ack", multiple))

    async def nack(self, requeue: bool = True) -> None:
        self.calls.append(("nack", requeue))


def messages(count: int, channel: object | None = None) -> list[FakeMessage]:
    channel = channel if channel is not None else object()
    return [
        FakeMessage(channel, tag, status_changed(new_id(), PaymentStatus.SUCCEEDED).to_bytes())
        for tag in range(1, count + 1)
    ]


def new_id() -> str:
    return f"pay_{secrets.token_hex(4)}"


async def decode(message: AbstractIncomingMessage) -> Consumed:
    envelope = Envelope.from_bytes(message.body)
    return Consumed(envelope, Delivery(attempt=1, max_attempts=3, redelivered=False), INVALID_SPAN, message)


def consumer(handler: Any, settled: list[tuple[int, BaseException | None]] | None = None) -> BatchConsumer:
    async def settle_one(item: Consumed, error: BaseException | None) -> bool:
        if settled is not None:
            settled.append((int(item.message.delivery_tag or 0), error))
        return error is None

    return BatchConsumer("test", handler, max_batch=10, decode=decode, settle_one=settle_one)


def as_messages(fakes: Sequence[FakeMessage]) -> list[AbstractIncomingMessage]:
    return cast(list[AbstractIncomingMessage], list(fakes))


def test_a_batch_is_acked_by_its_last_message_of_each_channel() -> None:
    one, other = object(), object()
    batch = [FakeMessage(one, 3), FakeMessage(other, 9), FakeMessage(one, 7), FakeMessage(other, 2)]

    chosen = acks_together(as_messages(batch))

    assert sorted(int(m.delivery_tag or 0) for m in chosen) == [7, 9]


async def test_messages_are_acked_together_only_after_the_handler_returned() -> None:
    batch = messages(4)
    returned = asyncio.Event()

    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        assert all(m.calls == [] for m in batch), "acked before the handler returned"
        returned.set()
        return [None] * len(items)

    await consumer(handler).handle(as_messages(batch))

    assert returned.is_set()
    assert [m.calls for m in batch] == [[], [], [], [("ack", True)]]


def holding(max_batch: int, ack_delay: float) -> BatchConsumer:
    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        return [None] * len(items)

    async def settle_one(item: Consumed, error: BaseException | None) -> bool:
        return error is None

    return BatchConsumer(
        "test", handler, max_batch=max_batch, decode=decode, settle_one=settle_one, ack_delay=ack_delay
    )


async def test_acks_held_back_go_out_as_one_multiple_ack_after_the_delay() -> None:
    first, second = messages(2)
    held = holding(max_batch=10, ack_delay=0.05)

    await held.handle(as_messages([first]))
    await held.handle(as_messages([second]))
    assert first.calls == second.calls == [], "acked before the delay"
    await eventually(lambda: _acked(second), timeout=2, what="the held acks sent")

    assert (first.calls, second.calls) == ([], [("ack", True)])


async def _acked(message: FakeMessage) -> bool:
    return message.calls == [("ack", True)]


async def test_held_acks_go_out_at_once_when_a_batch_worth_of_them_waits() -> None:
    batch = messages(3)
    held = holding(max_batch=3, ack_delay=60.0)

    await held.handle(as_messages(batch[:2]))
    assert [m.calls for m in batch[:2]] == [[], []]
    await held.handle(as_messages(batch[2:]))

    assert [m.calls for m in batch] == [[], [], [("ack", True)]]


async def test_flushing_sends_the_held_acks_now() -> None:
    batch = messages(2)
    held = holding(max_batch=10, ack_delay=60.0)
    await held.handle(as_messages(batch))

    await held.flush_acks()
    await held.flush_acks()  # nothing left: nothing sent twice

    assert [m.calls for m in batch] == [[], [("ack", True)]]


async def test_a_failed_message_is_settled_alone_and_not_acked() -> None:
    batch = messages(3)
    settled: list[tuple[int, BaseException | None]] = []
    later = RetryLater("not yet")

    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        return [None, later, None]

    await consumer(handler, settled).handle(as_messages(batch))

    assert settled == [(1, None), (2, later), (3, None)]
    assert [m.calls for m in batch] == [[], [], [("ack", True)]]


async def test_a_batch_whose_handler_raises_is_handled_one_message_at_a_time() -> None:
    batch = messages(3)
    sizes: list[int] = []
    settled: list[tuple[int, BaseException | None]] = []
    bad = batch[1]

    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        sizes.append(len(items))
        if any(item.message is bad for item in items):
            raise ValueError("cannot take this one")
        return [None] * len(items)

    await consumer(handler, settled).handle(as_messages(batch))

    assert sizes == [3, 1, 1, 1]
    assert [(tag, type(error).__name__) for tag, error in settled] == [
        (1, "NoneType"),
        (2, "ValueError"),
        (3, "NoneType"),
    ]


async def still_running_after_two_batches(
    handler: Callable[[Sequence[Consumed]], Awaitable[list[BaseException | None]]],
    first: list[FakeMessage],
    second: list[FakeMessage],
    handled: asyncio.Queue[int],
) -> bool:
    """Runs a consumer, feeds it `first`, waits for its handler to take it, then one message of `second`:
    whether the consumer was still running once that second batch was handled."""
    running = consumer(handler)
    supervisor = Supervisor(backoff=Backoff(initial=0.01))
    task = supervisor.start("test batches", running.run)
    try:
        for message in first:
            await running.on_message(cast(AbstractIncomingMessage, message))
        assert await asyncio.wait_for(handled.get(), 5) == len(first)
        await running.on_message(cast(AbstractIncomingMessage, second[0]))
        assert await asyncio.wait_for(handled.get(), 5) == 1
        return not task.done() and not supervisor.failed.done()
    finally:
        await supervisor.stop()


async def test_a_fault_of_the_layer_gives_the_batch_back_and_keeps_consuming() -> None:
    first, second = messages(2), messages(1)
    handled: asyncio.Queue[int] = asyncio.Queue()

    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        handled.put_nowait(len(items))
        return []  # a handler bug: no result per message

    # The consumer takes the next batch, so it survived the first, which it handed back.
    assert await still_running_after_two_batches(handler, first, second, handled)
    assert [m.calls for m in first] == [[("nack", True)], [("nack", True)]]


async def test_a_channel_closing_under_a_batch_gives_it_back_and_the_consumer_goes_on() -> None:
    """aiormq fails a closing channel's pending futures with CancelledError, though nobody cancelled the consumer:
    taken for a stop, the consumer would end and leave every message sent to it unacknowledged for good."""
    first, second = messages(2), messages(1)
    handled: asyncio.Queue[int] = asyncio.Queue()
    calls = 0

    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        nonlocal calls
        calls += 1
        handled.put_nowait(len(items))
        if calls == 1:
            raise asyncio.CancelledError()  # what awaiting a confirm of a closed channel raises
        return [None] * len(items)

    assert await still_running_after_two_batches(handler, first, second, handled)
    assert [m.calls for m in first] == [[("nack", True)], [("nack", True)]]
    assert second[0].calls == [("ack", True)]


async def test_cancelling_the_consumer_stops_it_in_the_middle_of_a_batch() -> None:
    batch = messages(1)
    entered = asyncio.Event()

    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    running = consumer(handler)
    task = asyncio.create_task(running.run())
    await running.on_message(cast(AbstractIncomingMessage, batch[0]))
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert batch[0].calls == []  # not acked: the broker delivers it again


async def test_a_messages_context_binds_its_log_context_and_restores_what_was_bound_before() -> None:
    outer, inner = [await decode(cast(AbstractIncomingMessage, m)) for m in messages(2)]
    structlog.contextvars.bind_contextvars(service="ledger", event_id="before")
    try:
        with outer.context():
            with inner.context():
                assert structlog.contextvars.get_contextvars() == {"service": "ledger", **inner.log_context}
            assert structlog.contextvars.get_contextvars() == {"service": "ledger", **outer.log_context}
        assert structlog.contextvars.get_contextvars() == {"service": "ledger", "event_id": "before"}
        with pytest.raises(ValueError), outer.context():
            raise ValueError("the handler failed")
        assert structlog.contextvars.get_contextvars() == {"service": "ledger", "event_id": "before"}
    finally:
        structlog.contextvars.clear_contextvars()
    assert outer.log_context == {
        "payment_id": outer.envelope.payment_id,
        "event_id": str(outer.envelope.id),
        "event_type": "payment.status_changed",
    }


async def test_a_batch_failing_while_its_database_is_away_pauses_consuming_and_hands_everything_back() -> None:
    """Not the messages' fault: their attempts are not spent, and the consumer takes no more work it cannot do
    until its database answers again; then it consumes again."""
    first, buffered, later = messages(2), messages(3), messages(1)
    database_up = True
    calls: list[str] = []
    handled: asyncio.Queue[int] = asyncio.Queue()

    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        nonlocal database_up
        if any(item.message is first[0] for item in items):
            database_up = False  # the statement timed out: the database is gone
            raise TimeoutError()
        handled.put_nowait(len(items))
        return [None] * len(items)

    async def ready() -> bool:
        calls.append("ready")
        return database_up

    async def subscribe() -> None:
        calls.append("subscribe")

    async def unsubscribe() -> None:
        calls.append("unsubscribe")

    async def settle_one(item: Consumed, error: BaseException | None) -> bool:
        raise AssertionError("nothing is settled while the database is away")

    running = BatchConsumer(
        "test",
        handler,
        max_batch=2,
        decode=decode,
        settle_one=settle_one,
        ready=ready,
        subscribe=subscribe,
        unsubscribe=unsubscribe,
    )
    supervisor = Supervisor(backoff=Backoff(initial=0.01, maximum=0.02))
    for message in (*first, *buffered):
        await running.on_message(cast(AbstractIncomingMessage, message))
    supervisor.start("test batches", running.run)
    try:

        async def handed_back() -> bool:
            return all(m.calls == [("nack", True)] for m in (*first, *buffered))

        await eventually(handed_back, timeout=5, interval=0.01, what="every message handed back")
        assert "unsubscribe" in calls
        await asyncio.sleep(0.05)  # restarts meanwhile find the database away, and do not consume
        assert calls.count("subscribe") == 1

        database_up = True

        async def consuming_again() -> bool:
            return calls.count("subscribe") == 2

        await eventually(consuming_again, timeout=5, interval=0.01, what="consuming again")
        await running.on_message(cast(AbstractIncomingMessage, later[0]))
        assert await asyncio.wait_for(handled.get(), 5) == 1
        assert not supervisor.failed.done()
    finally:
        await supervisor.stop()


def bundle_consumer(handler: Any, bundle_of: int, settled: list[tuple[str, BaseException | None, int]]) -> Any:
    async def decode_bundle(message: AbstractIncomingMessage) -> list[Consumed]:
        delivery = Delivery(attempt=1, max_attempts=3, redelivered=False)
        return [
            Consumed(status_changed(new_id(), PaymentStatus.SUCCEEDED), delivery, INVALID_SPAN, message, bundle_of)
            for _ in range(bundle_of)
        ]

    async def settle_one(item: Consumed, error: BaseException | None) -> bool:
        settled.append((item.envelope.payment_id, error, item.bundled))
        return error is None

    return BatchConsumer("test", handler, max_batch=10, decode=decode_bundle, settle_one=settle_one)


async def test_a_bundle_reaches_the_handler_as_its_envelopes_and_is_settled_and_acked_once() -> None:
    bundle = FakeMessage(object(), 5)
    seen: list[int] = []
    settled: list[tuple[str, BaseException | None, int]] = []

    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        seen.append(len(items))
        return [None] * len(items)

    await bundle_consumer(handler, 4, settled).handle(as_messages([bundle]))

    assert seen == [4]
    assert [(error, count) for _, error, count in settled] == [(None, 4)]
    assert bundle.calls == [("ack", True)]


async def test_a_bundle_with_one_deferred_envelope_is_retried_whole_and_not_acked() -> None:
    bundle = FakeMessage(object(), 5)
    later = RetryLater("not yet")
    settled: list[tuple[str, BaseException | None, int]] = []

    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        return [None, PoisonMessage("bad"), later, None]

    await bundle_consumer(handler, 4, settled).handle(as_messages([bundle]))

    # The retry wins over the poison: dead-lettering would lose the envelope that is only early.
    assert [(error, count) for _, error, count in settled] == [(later, 4)]
    assert bundle.calls == []


async def test_a_bundle_whose_only_failure_is_poison_is_dead_lettered() -> None:
    bundle = FakeMessage(object(), 5)
    poison = PoisonMessage("bad")
    settled: list[tuple[str, BaseException | None, int]] = []

    async def handler(items: Sequence[Consumed]) -> list[BaseException | None]:
        return [None, poison, None]

    await bundle_consumer(handler, 3, settled).handle(as_messages([bundle]))

    assert [(error, count) for _, error, count in settled] == [(poison, 3)]
