"""Consuming in batches: the messages that arrived while the last batch was handled are handled together.

    await broker.consume_batches(group, handler, retry=RetryPolicy(...), prefetch=256, max_batch=64)

`handler(batch)` takes a sequence of `Consumed` and returns one result per message, in order: None to have it
acked, or the exception that settles it as in `Broker.consume` (RetryLater or any error: retried through a
delay queue until its attempts run out; PoisonMessage: dead-lettered). A handler that raises fails no message
by itself: the batch is handled again one message at a time, so one bad message never takes its batch-mates
with it. Every message is settled only after the handler returned (its effect committed); the acks of a
batch go out together, as one multiple-ack per channel.

No timer waits for a batch to fill: under a light load a batch is one message (no latency added); under a
heavy one it is what queued up meanwhile, up to `max_batch`. One batch is in flight per consumer, which is
what makes the multiple-ack safe: everything delivered before the batch's last message is settled by then.

With an `ack_delay`, the acks of handled batches are held back that long (or until `max_batch` of them wait) and go
out as one multiple-ack for all of them: under a light load each batch is one message, and the broker settles each
ack of a quorum queue as a command of its log, so acking every 20 ms what came meanwhile spares it most of them
(`python -m tests.ack_cpu`: a paced message cost the node 0.63 to 0.78 times as much CPU). Nothing is acked before
its effect is committed, only later; a crash meanwhile has the broker deliver those messages again, as for any
message not yet acked, and the idempotent handlers record them once. The consumer's owner sends what is held when
it stops (`flush_acks`).

A bundle (several envelopes a producer published as one broker message, `Broker.publish_bundle`) reaches the
handler as one `Consumed` per envelope, each in its own trace. The broker message is settled once, for all of
them: acked if every one was handled, else as the first failure says (a retry hands the whole bundle over
again, which the idempotent handlers of a bundle's messages allow; dead-lettered only if poison is all that
failed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind

from shared.cancellation import being_cancelled
from shared.events import Envelope
from shared.logs import get_logger
from shared.metrics import EVENT_PROCESSING_SECONDS
from shared.settlement import Delivery, PoisonMessage
from shared.telemetry import extract_context

log = get_logger(__name__)
_tracer = trace.get_tracer(__name__)


@dataclass(frozen=True)
class Consumed:
    """One message of a batch: its envelope, its delivery, and its consumer span (of the payment's trace)."""

    envelope: Envelope
    delivery: Delivery
    span: Span
    message: AbstractIncomingMessage
    # How many envelopes came in `message` (a bundle's; 1 for a message of its own): its settlement counts them all.
    bundled: int = 1

    @cached_property
    def log_context(self) -> dict[str, str]:
        """What every log line about this message carries (bound while in its `context`)."""
        return {
            "payment_id": self.envelope.payment_id,
            "event_id": str(self.envelope.id),
            "event_type": self.envelope.type,
        }

    @contextmanager
    def context(self) -> Iterator[None]:
        """Log lines and spans inside belong to this message: its payment's trace and log context.

        The log context is set and then reset by its tokens, which restores whatever was bound before (as
        structlog's bound_contextvars does, without copying and scanning the whole context twice a message)."""
        tokens = structlog.contextvars.bind_contextvars(**self.log_context)
        try:
            with trace.use_span(self.span, end_on_exit=False):
                yield
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


BatchHandler = Callable[[Sequence[Consumed]], Awaitable[Sequence[BaseException | None]]]
# How one message's result is settled (retry, dead-letter, metrics), except the ack itself, which the batch
# sends with the others: returns True if the message is to be acked.
SettleOne = Callable[[Consumed, BaseException | None], Awaitable[bool]]


def acks_together(acked: Sequence[AbstractIncomingMessage]) -> list[AbstractIncomingMessage]:
    """The messages to multiple-ack so that exactly `acked` are acknowledged: the last of each channel.

    Valid because a batch is settled whole before the next is taken, so every message a channel delivered
    before the last acked one is either in `acked` or settled already (rejected, requeued)."""
    last: dict[int, AbstractIncomingMessage] = {}
    for message in acked:
        key = id(message.channel)
        if key not in last or message.delivery_tag > last[key].delivery_tag:  # type: ignore[operator]
            last[key] = message
    return list(last.values())


class DependencyUnavailable(ConnectionError):
    """A batch failed and the consumer's dependency (its database) does not answer: the batch is not the cause."""


async def _always_ready() -> bool:
    return True


async def _nothing() -> None:
    return None


class BatchConsumer:
    """Buffers one queue's deliveries and hands them to `handler` a batch at a time (see the module doc).

    `ready` says whether what the handler needs (its database) answers. A batch that fails while it does not
    is no fault of its messages: rather than retry each (spending their attempts) and take ever more messages
    it cannot handle, the consumer hands back the batch and everything buffered, stops consuming
    (`unsubscribe`) and fails; its supervisor runs it again after a backoff, and it consumes again
    (`subscribe`) once `ready` says yes. Meanwhile the group's other replicas take the work.
    """

    def __init__(
        self,
        group: str,
        handler: BatchHandler,
        *,
        max_batch: int,
        decode: Callable[[AbstractIncomingMessage], Awaitable[Consumed | Sequence[Consumed] | None]],
        settle_one: SettleOne,
        ready: Callable[[], Awaitable[bool]] = _always_ready,
        subscribe: Callable[[], Awaitable[None]] = _nothing,
        unsubscribe: Callable[[], Awaitable[None]] = _nothing,
        ack_delay: float = 0.0,
    ) -> None:
        self._group = group
        self._handler = handler
        self._max_batch = max_batch
        self._decode = decode
        self._settle_one = settle_one
        self._ready = ready
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._buffer: list[AbstractIncomingMessage] = []
        self._arrived = asyncio.Event()
        self._paused = False
        self._ack_delay = ack_delay
        # Handled messages whose ack is held back (`ack_delay`), the timer that sends them, and the lock that keeps
        # the multiple-acks in delivery order (an ack below one already sent would be an unknown tag to the broker).
        self._held: list[AbstractIncomingMessage] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._acking = asyncio.Lock()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self._buffer.append(message)
        self._arrived.set()

    async def run(self) -> None:
        """Handle batches, one at a time, as long as the supervisor runs this (shared/supervisor.py).

        A batch that cannot be settled (a fault of this layer, or its channel closing under an ack: a stray
        CancelledError) is handed back to the broker, requeued, and the failure raised: the supervisor starts
        this again. A stop (a real cancellation) does not ack the batch: the broker delivers it again."""
        if not await self._ready():
            await self._pause([])
            raise DependencyUnavailable(f"{self._group}: its database does not answer; not consuming meanwhile")
        if self._paused:
            log.warning("consuming resumed", consumer=self._group)
            self._paused = False
        await self._subscribe()
        while True:
            await self._arrived.wait()
            batch, self._buffer = self._buffer[: self._max_batch], self._buffer[self._max_batch :]
            if not self._buffer:
                self._arrived.clear()
            try:
                await self.handle(batch)
            except DependencyUnavailable:
                await self._pause(batch)
                raise
            except BaseException:
                if not being_cancelled():
                    log.warning("batch not settled; requeueing it", consumer=self._group, size=len(batch))
                    await _requeue(batch)
                raise

    async def _pause(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        """Stop consuming and hand back `batch` and whatever is buffered, for the group's other replicas."""
        await self.flush_acks()  # what was handled before is committed: acked, not handed back
        await self._unsubscribe()
        self._paused = True
        held, self._buffer = [*batch, *self._buffer], []
        self._arrived.clear()
        if held:
            log.warning("consuming paused; messages handed back", consumer=self._group, size=len(held))
        await _requeue(held)

    async def handle(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        consumed: list[Consumed] = []
        for message in messages:
            decoded = await self._decode(message)
            if isinstance(decoded, Consumed):
                consumed.append(decoded)
            elif decoded is not None:
                consumed.extend(decoded)
        if not consumed:
            return
        started = time.perf_counter()
        try:
            results = await self._results(consumed)
        except DependencyUnavailable:
            for item in consumed:
                item.span.end()
            raise
        finally:
            elapsed = time.perf_counter() - started
            for item in consumed:
                EVENT_PROCESSING_SECONDS.labels(self._group, item.envelope.type).observe(elapsed)
        to_ack = []
        for item, error, bundle in _settlements(consumed, results):
            try:
                with item.context():
                    if await self._settle_one(item, error):
                        to_ack.append(item)
            finally:
                for each in bundle:
                    each.span.end()
        await self._ack([item.message for item in to_ack])

    async def _results(self, batch: Sequence[Consumed]) -> Sequence[BaseException | None]:
        try:
            results = await self._call(batch)
        except Exception as exc:
            if not await self._ready():
                raise DependencyUnavailable(f"{self._group}: its database does not answer") from exc
            if len(batch) == 1:
                return [exc]
            log.warning("batch failed; handling its messages one at a time", consumer=self._group, size=len(batch))
            return [(await self._results([item]))[0] for item in batch]
        if len(results) != len(batch):
            raise RuntimeError(f"{self._group}: batch handler gave {len(results)} results for {len(batch)} messages")
        return results

    async def _call(self, batch: Sequence[Consumed]) -> Sequence[BaseException | None]:
        if len(batch) == 1:  # a batch of one stays in its message's trace, SQL spans included
            with batch[0].context():
                return await self._handler(batch)
        links = [Link(item.span.get_span_context()) for item in batch]
        with _tracer.start_as_current_span(
            f"{self._group} process batch",
            links=links,
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "rabbitmq", "messaging.batch.message_count": len(batch)},
        ):
            return await self._handler(batch)

    async def _ack(self, acked: Sequence[AbstractIncomingMessage]) -> None:
        if self._ack_delay <= 0:
            await self._send_acks(acked)
            return
        self._held.extend(acked)
        if len(self._held) >= self._max_batch:
            await self.flush_acks()
        elif self._held and self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self._ack_delay, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_timer = None
        task = asyncio.ensure_future(self.flush_acks())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush_acks(self) -> None:
        """Send the acks held back (`ack_delay`) now: when the consumer pauses, and by its owner when it stops."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        async with self._acking:
            held, self._held = self._held, []
            await self._send_acks(held)

    async def _send_acks(self, acked: Sequence[AbstractIncomingMessage]) -> None:
        for message in acks_together(acked):
            try:
                await message.ack(multiple=True)
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and being_cancelled():
                    raise
                # The channel went away with the batch unacked: the broker delivers it again (recorded once).
                log.warning("could not ack a batch; it will be redelivered", consumer=self._group, error=str(exc))


def settling(results: Sequence[BaseException | None]) -> int:
    """Which of a bundle's results settles the broker message that brought them (its index): the first failure that
    is not poison (the whole bundle is retried, which its idempotent handlers allow), else the first poison if that
    is all that failed (dead-lettered), else the first result (all handled: acked). The batch consumer and the
    one-at-a-time consumer (`Broker.consume`) settle bundles by this one rule."""
    failed = [n for n, error in enumerate(results) if error is not None]
    retried = [n for n in failed if not isinstance(results[n], PoisonMessage)]
    return (retried or failed or [0])[0]


def _settlements(
    consumed: Sequence[Consumed], results: Sequence[BaseException | None]
) -> Iterator[tuple[Consumed, BaseException | None, list[Consumed]]]:
    """Per broker message, in order: the item whose result settles it (`settling`), that result, and every item
    the message brought (one, or a bundle's)."""
    bundles: dict[int, list[tuple[Consumed, BaseException | None]]] = {}
    for item, error in zip(consumed, results, strict=True):
        bundles.setdefault(id(item.message), []).append((item, error))
    for pairs in bundles.values():
        item, error = pairs[settling([error for _, error in pairs])]
        yield item, error, [each for each, _ in pairs]


async def _requeue(messages: Sequence[AbstractIncomingMessage]) -> None:
    for message in messages:
        try:
            await message.nack(requeue=True)
        except (Exception, asyncio.CancelledError) as exc:  # settled already, or its channel is gone (redelivered)
            if isinstance(exc, asyncio.CancelledError) and being_cancelled():
                raise
            log.warning("could not requeue a message", message_id=message.message_id, error=str(exc))


def consumer_span(group: str, envelope: Envelope, headers: dict[str, Any], attempt: int) -> Span:
    """A message's consumer span, a child of its publisher's (the payment's trace); the caller ends it."""
    return _tracer.start_span(
        f"{group} process {envelope.type}",
        context=extract_context(headers),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.message.id": str(envelope.id),
            "messaging.consumer.group.name": group,
            "payment.id": envelope.payment_id,
            "paystream.event_type": envelope.type,
            "paystream.attempt": attempt,
        },
    )
