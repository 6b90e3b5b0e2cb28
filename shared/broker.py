"""RabbitMQ: connecting over a cluster's nodes, publishing with confirms, and consuming with acks only after
the effect. The names and queues are in shared/topology.py, the settlement rule in shared/settlement.py, and
which service handles which message in each service's registry (shared/registry.py).

The consumer API, in full:
    await broker.consume(group, handler, retry=RetryPolicy(...), prefetch=32)
where `handler(envelope, delivery)` returns to have the message acked, raises RetryLater (or anything else)
to have it retried through a delay queue until `retry.max_attempts`, or PoisonMessage to dead-letter it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any, cast

import aio_pika
import aiormq
import orjson
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from yarl import URL

from shared.batches import BatchConsumer, BatchHandler, Consumed, consumer_span, settling
from shared.cancellation import ChannelLost, being_cancelled
from shared.config import split_amqp_urls
from shared.events import Envelope
from shared.logs import get_logger
from shared.metrics import DLQ_MESSAGES, EVENT_PROCESSING_SECONDS, EVENTS_PROCESSED, MESSAGE_RETRIES
from shared.settlement import Action, Delivery, Handler, PoisonMessage, RetryLater, RetryPolicy, Settlement, settle
from shared.supervisor import Backoff, Supervisor
from shared.telemetry import extract_context, inject_context, recording
from shared.topology import (
    DELIVERY_LIMIT,
    ConsumerGroup,
    Names,
    declare_delay_queue,
    declare_exchanges,
    declare_groups,
)

__all__ = [
    "ATTEMPT_HEADER",
    "DELIVERY_LIMIT",
    "REPLY_TO_HEADER",
    "Broker",
    "ChannelLost",
    "ConsumerGroup",
    "Delivery",
    "FailoverConnection",
    "Handler",
    "Names",
    "PoisonMessage",
    "RetryLater",
    "RetryPolicy",
]

log = get_logger(__name__)
_tracer = trace.get_tracer(__name__)

ATTEMPT_HEADER = "x-paystream-attempt"
# On a message whose answer a process waits for: the routing key of that process's reply queue
# (`Broker.consume_replies`). The consumer sends its answer there too, in the same publish (`also_to`).
REPLY_TO_HEADER = "x-paystream-reply-to"
# RabbitMQ's sender-selected distribution: the message is routed by its routing key and, besides, by each
# routing key listed here; the broker strips this header before delivery (rabbitmq.com/docs/sender-selected).
_BCC_HEADER = "BCC"


async def _always_ready() -> bool:
    return True


CONSUMER_BACKOFF = Backoff(initial=0.5, maximum=5.0)
# How long a batch consumer holds the acks of handled batches to send them as one (shared/batches.py): under a light
# load a quorum queue then settles one ack command for what came in that time rather than one a message.
BATCH_ACK_DELAY_SECONDS = 0.02


# --- connecting over several nodes --------------------------------------------------------------------
class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection over the nodes of one cluster: each connection attempt goes to the next node.

    aio-pika reconnects to a single URL. Here the first attempt goes to the first node; when a connection
    is lost, or an attempt fails, the next attempt goes to the next node, round the list. Channels, queues
    and consumers are then restored by aio-pika on whichever node answered.
    """

    def __init__(self, nodes: Sequence[URL]) -> None:
        if not nodes:
            raise ValueError("no broker node to connect to")
        self._nodes = tuple(nodes)
        self._current = 0
        self._next = 0
        self._rotating = False
        super().__init__(url=self._nodes[0])
        self._rotating = True

    # aio-pika's Connection.connect reads `self.url` exactly once per attempt (it is how the robust
    # reconnection loop reaches a node), so that read is where the node rotates.
    @property  # type: ignore[override]
    def url(self) -> URL:
        if not self._rotating:
            return self._nodes[self._current]
        self._current, self._next = self._next, (self._next + 1) % len(self._nodes)
        return self._nodes[self._current]

    @url.setter
    def url(self, value: URL) -> None:
        # Connection.__init__ sets the first node; update_secret sets a new password for every node.
        self._nodes = tuple(node.with_password(value.password) for node in self._nodes)

    @property
    def current_url(self) -> URL:
        """The node of the last connection attempt (the one in use while connected)."""
        return self._nodes[self._current]

    def __str__(self) -> str:
        url = self.current_url
        return str(url.with_password("******") if url.password else url)


def _node_urls(amqp_url: str | Sequence[str], connection_name: str, heartbeat: int | None = None) -> tuple[URL, ...]:
    urls = split_amqp_urls(amqp_url) if isinstance(amqp_url, str) else tuple(amqp_url)
    # The name shows in the management UI's connection list; a name (or heartbeat) in the URL wins.
    # A lost connection is tried again on the next node after 1 s, not aio-pika's 5 s: the cluster's other nodes
    # are up, and the consumers' prefetched messages wait meanwhile.
    defaults: dict[str, str] = {"name": connection_name, "reconnect_interval": "1"}
    if heartbeat is not None:
        defaults["heartbeat"] = str(heartbeat)
    nodes = []
    for url in map(URL, urls):
        missing = {key: value for key, value in defaults.items() if key not in url.query}
        nodes.append(url.update_query(missing) if missing else url)
    return tuple(nodes)


_TRACE_HEADERS = ("traceparent", "tracestate")


# --- tracing: our own spans, not opentelemetry-instrumentation-aio-pika -----------------------------------
# Tried (0.66b1 with aio-pika 9.6.2): its Exchange.publish wrapper overwrites the traceparent a message already
# carries with its own span's, so a retry re-published to a delay queue would reach the handler with another
# trace context than its first attempt (the gateway_worker sends that context to the provider as intent metadata
# under one Idempotency-Key: Stripe refuses a reused key whose parameters changed). It also names spans
# "<exchange>,<routing key> send" / "<exchange> receive", with no hook for our names or payment.* attributes.
@contextmanager
def _producer_span(
    envelope: Envelope, exchange: str, stored_headers: dict[str, Any] | None
) -> Iterator[dict[str, Any]]:
    """The publish's span; yields the trace headers the message goes with (its context)."""
    if not recording():
        # Nothing would record the span: the message goes on in the context it was stored in (or the current
        # one), the same trace, without extracting it, making a span's ids for nobody and injecting them.
        if stored_headers:
            yield {k: stored_headers[k] for k in _TRACE_HEADERS if k in stored_headers}
        else:
            yield inject_context({})
        return
    parent = extract_context(stored_headers) if stored_headers else None
    with _tracer.start_as_current_span(
        f"publish {envelope.type}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": exchange,
            "messaging.message.id": str(envelope.id),
            "payment.id": envelope.payment_id,
            "paystream.event_type": envelope.type,
        },
    ):
        yield inject_context({})


# Where a bundled envelope's publish span is made: a context to enter (its event's trace), or the headers it was
# stored with (trace context, reply key).
BundleOrigin = Callable[[], AbstractContextManager[Any]] | Mapping[str, Any]

# A bundle: several envelopes of one type published as one broker message (Broker.publish_bundle). Its body is
# two lines per envelope: the envelope's trace headers (JSON), then the envelope (JSON, as a message of its
# own carries it). Compact JSON has no raw newline, so the lines split cleanly.
BUNDLE_CONTENT_TYPE = "application/vnd.paystream.bundle"
# What travels beside each bundled envelope: its trace context, and the reply key of a process waiting for its answer.
_BUNDLED_HEADERS = (*_TRACE_HEADERS, REPLY_TO_HEADER)


def bundle_body(items: Sequence[tuple[dict[str, Any], Envelope]]) -> bytes:
    """The body of a bundle of (trace headers, envelope)."""
    return b"\n".join(orjson.dumps(headers) + b"\n" + envelope.to_bytes() for headers, envelope in items)


def bundle_items(body: bytes) -> list[tuple[dict[str, Any], Envelope]]:
    """(trace headers, envelope) of each envelope of a bundle's body; raises ValueError if it is none."""
    lines = body.split(b"\n")
    if len(lines) % 2 or not lines[0]:
        raise ValueError("a bundle is pairs of lines: trace headers, then the envelope")
    items = []
    for n in range(0, len(lines), 2):
        headers = orjson.loads(lines[n])
        if not isinstance(headers, dict):
            raise ValueError("a bundled envelope's trace headers are not an object")
        kept = {k: v for k, v in headers.items() if k in _BUNDLED_HEADERS}
        items.append((kept, Envelope.from_bytes(lines[n + 1])))
    return items


def _bundled_delivery(delivery: Delivery, headers: dict[str, Any]) -> Delivery:
    """A bundled envelope's delivery: the bundle's (attempt, redelivery), with the envelope's own trace headers and
    reply key."""
    return dataclasses.replace(
        delivery,
        trace_headers={k: str(headers[k]) for k in _TRACE_HEADERS if k in headers},
        reply_to=_reply_to(headers),
    )


@contextmanager
def _consumer_span(group: str, envelope: Envelope, headers: dict[str, Any], attempt: int) -> Iterator[None]:
    with trace.use_span(consumer_span(group, envelope, headers, attempt), end_on_exit=True):
        yield


def _reply_to(headers: dict[str, Any]) -> str | None:
    """The reply address a message carries, if it is one (a reply queue's key, never another type's)."""
    value = headers.get(REPLY_TO_HEADER)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and Names.is_reply_key(value) else None


async def _publish_confirmed(
    channel: AbstractChannel, message: aio_pika.Message, exchange: str, routing_key: str
) -> None:
    """What aio-pika's `Exchange.publish` does (mandatory, the broker's confirm awaited), without waiting for the
    frames to be written to the socket before returning the channel to the next publish.

    aio-pika holds the channel's lock until aiormq's writer task has written the frames, so concurrent publishes
    (the outbox relay's batch) went out one per turn of the loop, each a round of task switches and its own
    socket write (a publish cost 360 us of CPU in a batch of 100 on the test machine, 270 without). With aiormq's
    `wait=False` the frames are queued in order under the lock and the writer sends them; the confirm, awaited
    as before, is still what says the broker has the message (a closed connection fails it).
    """
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
    await underlay.basic_publish(
        message.body,
        exchange=exchange,
        routing_key=routing_key,
        properties=message.properties,
        mandatory=True,
        wait=False,
    )


def _delivery(message: AbstractIncomingMessage, retry: RetryPolicy) -> Delivery:
    headers = message.headers or {}
    return Delivery(
        attempt=int(str(headers.get(ATTEMPT_HEADER, 1))),
        max_attempts=retry.max_attempts,
        redelivered=bool(message.redelivered),
        trace_headers={k: str(headers[k]) for k in _TRACE_HEADERS if k in headers},
        reply_to=_reply_to(headers),
    )


class PublishCoalescer:
    """Nagle's rule for publishes, without a timer: a publish of a type none of which is in flight goes at once; those
    made while one of their type awaits its confirm wait for it, then go together as one bundle (at most
    COALESCE_MAX), and so on. A lone publish waits for nothing; under load, what a confirm round trip's worth of
    handlers publish shares one broker message. Each caller returns once its own envelope is confirmed, or raises
    what its bundle's publish raised; each envelope keeps the trace of the caller that published it."""

    def __init__(self, publish_bundle: Callable[[Sequence[tuple[Envelope, BundleOrigin]]], Awaitable[None]]) -> None:
        self._publish_bundle = publish_bundle
        self._waiting: dict[str, list[tuple[Envelope, BundleOrigin, asyncio.Future[None]]]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    async def publish(self, envelope: Envelope) -> None:
        span = trace.get_current_span()

        def origin() -> AbstractContextManager[Any]:
            return trace.use_span(span, end_on_exit=False)

        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(envelope.type, []).append((envelope, origin, future))
        if envelope.type not in self._flushers:
            self._flushers[envelope.type] = asyncio.create_task(self._flush(envelope.type))
        await future

    async def _flush(self, message_type: str) -> None:
        waiting = self._waiting
        batch: list[tuple[Envelope, BundleOrigin, asyncio.Future[None]]] = []
        try:
            while queued := waiting.get(message_type):
                batch, waiting[message_type] = queued[:COALESCE_MAX], queued[COALESCE_MAX:]
                try:
                    await self._publish_bundle([(envelope, origin) for envelope, origin, _ in batch])
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_result(None)
                batch = []
        finally:
            # Stopped (the process ending): whoever still waits is told, rather than left waiting.
            left = [*batch, *waiting.pop(message_type, [])]
            for _, _, future in left:
                if not future.done():
                    future.set_exception(ChannelLost(f"the publisher stopped before {message_type} was sent"))
            del self._flushers[message_type]


# At most this many publishes go in one coalesced bundle.
COALESCE_MAX = 64


class Broker:
    """One connection per process: a confirming publisher channel, one channel per consumer.

    `amqp_url` may name several nodes of one cluster (comma-separated, or a sequence): the broker connects
    to the first that answers and moves to another when its node goes away (see FailoverConnection).
    """

    def __init__(
        self,
        amqp_url: str | Sequence[str],
        namespace: str,
        *,
        name: str,
        heartbeat_seconds: int | None = None,
        supervisor: Supervisor | None = None,
        coalesce: bool = False,
    ) -> None:
        """`heartbeat_seconds`: the AMQP heartbeat asked of every node (a `heartbeat` in a URL wins); a connection
        silent for 3 x (heartbeat + 1) seconds is taken for lost and the next node tried (AMQP_HEARTBEAT_SECONDS).
        `supervisor` runs this broker's loops (batch consumers, DLQ watches) and those the service adds.
        `coalesce`: publishes of one type made while another of that type awaits its confirm go together as one
        bundle (PublishCoalescer): for a service whose many concurrent handlers each publish one message."""
        self._coalescer = PublishCoalescer(self.publish_bundle) if coalesce else None
        self._nodes = _node_urls(amqp_url, name, heartbeat_seconds)
        self.names = Names(namespace)
        self._name = name
        self.supervisor = supervisor or Supervisor()
        self._connection: FailoverConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumer_channels: list[AbstractChannel] = []
        self._batch_consumers: list[BatchConsumer] = []

    async def connect(self, *, timeout: float = 10.0) -> None:
        """Connect to the first node that answers, in the order given; raise the last error if none does."""
        last_error: BaseException | None = None
        for start in range(len(self._nodes)):
            connection = FailoverConnection(self._nodes[start:] + self._nodes[:start])
            try:
                await connection.connect(timeout=timeout)
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
                await connection.close()
                if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
                    raise  # the node answered and refused our credentials: not unreachable, and no retry helps
                last_error = exc
                log.warning("broker node unreachable", node=str(connection), error=type(exc).__name__)
                continue
            self._connection = connection
            break
        if self._connection is None:
            assert last_error is not None
            raise last_error
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await self._channel.declare_exchange(
            self.names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._connection.reconnect_callbacks.add(self._on_reconnect)

    def _on_reconnect(self, connection: Any) -> None:
        log.warning("broker connection restored", node=str(connection))

    @property
    def connection(self) -> aio_pika.abc.AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("broker not connected")
        return self._connection

    @property
    def node(self) -> str:
        """The node in use (password hidden), for logs and tests."""
        return str(self._connection) if self._connection is not None else ""

    async def is_ready(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._connection.connected.is_set()
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def close(self) -> None:
        await self.supervisor.stop()  # its loops use the channels closed below
        for consumer in self._batch_consumers:
            # What the consumers handled and hold unacked (BATCH_ACK_DELAY_SECONDS) is acked before the channels go.
            try:
                async with asyncio.timeout(5):
                    await consumer.flush_acks()
            except Exception as exc:
                log.warning("could not ack what was handled before closing", error=f"{type(exc).__name__}: {exc}")
        for channel in self._consumer_channels:
            if not channel.is_closed:
                await channel.close()
        if self._connection is not None:
            await self._connection.close()

    # --- topology -------------------------------------------------------------------------------
    async def declare_topology(self, groups: Iterable[ConsumerGroup] = ()) -> None:
        """Declare the exchanges and these consumer groups' queues, DLQs and bindings; safe to repeat and race."""
        channel = await self.connection.channel()
        try:
            await declare_groups(channel, self.names, groups)
        finally:
            await channel.close()

    async def _declare_delay_queues(self, queue: str, retry: RetryPolicy) -> None:
        """Every delay queue `queue`'s retries can need, declared before consuming, so a conflict shows at start.

        A delay queue declared classic by an older version conflicts with the quorum declaration; an empty
        one is replaced, one still holding retries is used as it is until it drains (and logged).
        """
        for attempt in range(2, retry.max_attempts + 1):
            channel = await self.connection.channel()
            try:
                await declare_delay_queue(channel, queue, attempt)
                continue
            except aiormq.exceptions.ChannelPreconditionFailed:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
            name = Names.retry_queue(queue, attempt)
            channel = await self.connection.channel()
            try:
                await channel.queue_delete(name, if_empty=True)
                await declare_delay_queue(channel, queue, attempt)
                log.warning("delay queue redeclared as a quorum queue", queue=name)
            except aiormq.exceptions.ChannelPreconditionFailed:
                log.warning("delay queue still holds retries as a classic queue; kept until it drains", queue=name)
            finally:
                if not channel.is_closed:
                    await channel.close()

    # --- publishing -------------------------------------------------------------------------------
    async def publish(
        self,
        envelope: Envelope,
        *,
        headers: dict[str, Any] | None = None,
        also_to: Sequence[str] = (),
        timeout: float | None = 10.0,
        body: bytes | None = None,
    ) -> None:
        """Publish persistently and return only once the broker has confirmed it.

        `headers` may carry a stored W3C trace context (the outbox); otherwise the current one is sent. A
        REPLY_TO_HEADER among them goes with the message. `also_to`: reply routing keys the message is routed
        to as well, in this one publish (a BCC header the broker strips; a key nobody binds any more costs
        nothing). `body`: the envelope already serialized (the outbox keeps it so), sent as it is rather than
        serialized again. Raises if the broker refuses, returns (unroutable) or does not confirm within `timeout`
        seconds, also while the connection is down (aio-pika would otherwise wait for it without limit; None: the
        caller's own deadline bounds it, as the outbox relay's does a whole batch), and raises ChannelLost if the
        channel closes before the confirm (shared/cancellation.py).
        """
        if self._coalescer is not None and not headers and not also_to and body is None:
            await self._coalescer.publish(envelope)
            return
        await self._publish_one(envelope, headers=headers, also_to=also_to, timeout=timeout, body=body)

    async def _publish_one(
        self,
        envelope: Envelope,
        *,
        headers: dict[str, Any] | None = None,
        also_to: Sequence[str] = (),
        timeout: float | None = 10.0,
        body: bytes | None = None,
    ) -> None:
        """`publish`, as a message of its own (never coalesced)."""
        if self._exchange is None or self._channel is None:
            raise RuntimeError("broker not connected")
        with _producer_span(envelope, self.names.exchange, headers) as sent:
            if headers and (reply_to := _reply_to(headers)) is not None:
                sent[REPLY_TO_HEADER] = reply_to
            if also_to:
                sent[_BCC_HEADER] = list(also_to)
            message = aio_pika.Message(
                body=envelope.to_bytes() if body is None else body,
                message_id=str(envelope.id),
                type=envelope.type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=envelope.occurred_at,
                headers=sent,
            )
            # The one deadline, for the whole publish and its confirm: a timeout passed to aio-pika would be
            # carried out by aiormq as an asyncio.wait_for around each of its steps, a task each (Python 3.11).
            try:
                async with asyncio.timeout(timeout):
                    await _publish_confirmed(self._channel, message, self.names.exchange, envelope.type)
            except asyncio.CancelledError:
                if being_cancelled():
                    raise
                raise ChannelLost(f"the broker channel closed before it confirmed {envelope.type}") from None

    async def publish_bundle(self, items: Sequence[tuple[Envelope, BundleOrigin]], *, timeout: float = 10.0) -> None:
        """Publish envelopes of one type as ONE broker message, a bundle, and return once the broker confirmed it.

        For a producer that has several messages to send at once (a batch's outcomes, the outbox's rows): the
        broker stores, routes, delivers and acks one message instead of one per envelope. Each envelope keeps its
        own trace: its publish span is made in its origin, which is either a context to enter (its event's trace,
        as `Consumed.context`) or the headers it was stored with (the outbox's trace context and reply key, as
        `publish`'s `headers`), and its trace headers and reply key travel beside it in the bundle. Consumers
        (`consume`, `consume_batches`) hand each envelope to their handler. One envelope alone goes as a message
        of its own. Raises as `publish`; nothing of a bundle is delivered unless all of it is.
        """
        if len(items) == 1:
            envelope, origin = items[0]
            if isinstance(origin, Mapping):
                await self._publish_one(envelope, headers=dict(origin), timeout=timeout)
            else:
                with origin():
                    await self._publish_one(envelope, timeout=timeout)
            return
        if self._exchange is None or self._channel is None:
            raise RuntimeError("broker not connected")
        types = {envelope.type for envelope, _ in items}
        if len(types) != 1:
            raise ValueError(f"a bundle is of one message type, not {sorted(types)}")
        (message_type,) = types
        with ExitStack() as spans:  # every envelope's publish span, open until the broker confirmed the bundle
            bundled: list[tuple[dict[str, Any], Envelope]] = []
            for envelope, origin in items:
                stored = None
                if isinstance(origin, Mapping):
                    stored = dict(origin)
                else:
                    spans.enter_context(origin())
                sent = spans.enter_context(_producer_span(envelope, self.names.exchange, stored))
                if stored and (reply_to := _reply_to(stored)) is not None:
                    sent[REPLY_TO_HEADER] = reply_to
                bundled.append((sent, envelope))
            message = aio_pika.Message(
                body=bundle_body(bundled),
                message_id=str(uuid.uuid4()),
                type=message_type,
                content_type=BUNDLE_CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            try:
                async with asyncio.timeout(timeout):
                    await _publish_confirmed(self._channel, message, self.names.exchange, message_type)
            except asyncio.CancelledError:
                if being_cancelled():
                    raise
                raise ChannelLost(f"the broker channel closed before it confirmed a bundle of {message_type}") from None

    async def publish_retry(self, group: str, envelope: Envelope, attempt: int, delay_seconds: float) -> None:
        """Publish `envelope` as attempt `attempt` of a message of `group`'s queue: into that queue's delay queue,
        which hands it to the queue after `delay_seconds`, as if a consumer of the queue had deferred it.

        For a first attempt made before any message was queued (the notifier delivers a merchant event at once):
        its retries still go through the delay queues. Returns once the broker confirmed it; raises as `publish`.
        """
        if self._channel is None:
            raise RuntimeError("broker not connected")
        with _producer_span(envelope, "", None) as sent:
            sent[ATTEMPT_HEADER] = attempt
            message = aio_pika.Message(
                body=envelope.to_bytes(),
                message_id=str(envelope.id),
                type=envelope.type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=envelope.occurred_at,
                headers=sent,
                expiration=max(0.001, delay_seconds),
            )
            routing_key = Names.retry_queue(self.names.queue(group), attempt)
            try:
                async with asyncio.timeout(10):
                    await self._channel.default_exchange.publish(
                        message, routing_key=routing_key, mandatory=True, timeout=None
                    )
            except asyncio.CancelledError:
                if being_cancelled():
                    raise
                raise ChannelLost(f"the broker channel closed before it confirmed a retry of {envelope.type}") from None

    async def _publish_for_retry(
        self, queue: str, message: AbstractIncomingMessage, attempt: int, delay_seconds: float
    ) -> None:
        if self._channel is None:
            raise RuntimeError("broker not connected")
        headers = dict(message.headers or {})
        headers[ATTEMPT_HEADER] = attempt
        retry = aio_pika.Message(
            body=message.body,
            message_id=message.message_id,
            type=message.type,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            expiration=max(0.001, delay_seconds),
        )
        try:
            async with asyncio.timeout(10):
                await self._channel.default_exchange.publish(
                    retry, routing_key=Names.retry_queue(queue, attempt), mandatory=True, timeout=10
                )
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            raise ChannelLost("the broker channel closed before it confirmed a retry") from None

    # --- consuming --------------------------------------------------------------------------------
    async def consume(
        self,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy,
        prefetch: int = 16,
        queue_name: str | None = None,
    ) -> AbstractQueue:
        """Start consuming `group`'s queue (or `queue_name`); each message is acked only after `handler` returned.

        RetryLater (or any unexpected error) sends the message to a delay queue of the queue it came from
        until its attempts run out, then to the DLQ; PoisonMessage and undecodable messages go to the DLQ at
        once (settlement.settle decides). `group` names the consumer in logs, metrics and spans.
        """
        name = queue_name or self.names.queue(group)
        await self._declare_delay_queues(name, retry)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        self._consumer_channels.append(channel)
        queue = await channel.get_queue(name, ensure=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._handle(group, name, message, handler, retry)

        await queue.consume(on_message)
        return queue

    async def consume_private(
        self, group: str, routing_keys: Iterable[str], handler: Handler, *, prefetch: int = 16
    ) -> str:
        """Consume these message types on a queue of this process alone; returns the queue's name.

        The queue is exclusive (it goes with the connection, so it cannot be a quorum queue) and carries
        notifications only: a handler failure drops the message, nothing is retried or dead-lettered. It is
        declared and consumed on one channel, so a reconnect re-declares it before consuming again.
        """
        return await self._consume_private(group, secrets.token_hex(6), routing_keys, handler, prefetch)

    async def consume_replies(self, group: str, handler: Handler, *, prefetch: int = 16) -> str:
        """Consume the answers addressed to this process alone; returns its reply routing key.

        A message that asks for an answer carries this key (REPLY_TO_HEADER); its consumer publishes the
        answer `also_to` it. The queue is private as in `consume_private`, bound by this key only: the process
        receives the answers it asked for, and no others.
        """
        token = secrets.token_hex(6)
        key = Names.reply_key(group, token)
        await self._consume_private(group, token, (key,), handler, prefetch)
        return key

    async def _consume_private(
        self, group: str, token: str, routing_keys: Iterable[str], handler: Handler, prefetch: int
    ) -> str:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        self._consumer_channels.append(channel)
        await declare_exchanges(channel, self.names)
        exchange = await channel.get_exchange(self.names.exchange, ensure=False)
        name = self.names.private_queue(group, token)
        queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        once = RetryPolicy(max_attempts=1, base_seconds=1.0)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._handle(group, name, message, handler, once)

        await queue.consume(on_message)
        return name

    async def _handle(
        self, group: str, queue: str, message: AbstractIncomingMessage, handler: Handler, retry: RetryPolicy
    ) -> None:
        """Decode, run the handler, decide the settlement (pure), then carry it out. A bundle's envelopes are
        handled together, each in its own trace, and the bundle settled once (shared/batches.py `settling`)."""
        try:
            if message.content_type == BUNDLE_CONTENT_TYPE:
                items = bundle_items(message.body)
            else:
                envelope = Envelope.from_bytes(message.body)
        except ValueError as exc:
            log.error(
                "undecodable message dead-lettered", consumer=group, message_id=message.message_id, error=str(exc)[:300]
            )
            EVENTS_PROCESSED.labels(group, message.type or "unknown", "dead_lettered").inc()
            await message.reject(requeue=False)
            return

        delivery = _delivery(message, retry)
        if message.content_type == BUNDLE_CONTENT_TYPE:
            errors = await asyncio.gather(
                *(
                    self._run(group, envelope, headers, _bundled_delivery(delivery, headers), handler)
                    for headers, envelope in items
                )
            )
            settled_by = settling(errors)
            error, envelope = errors[settled_by], items[settled_by][1]
            settlement = settle(error, delivery.attempt, retry)
            await self._carry_out(settlement, group, queue, message, envelope, count=len(items))
            return
        headers = message.headers or {}
        with _consumer_span(group, envelope, headers, delivery.attempt):
            error = await self._run(group, envelope, None, delivery, handler)
            await self._carry_out(settle(error, delivery.attempt, retry), group, queue, message, envelope)

    async def _run(
        self,
        group: str,
        envelope: Envelope,
        span_headers: dict[str, Any] | None,
        delivery: Delivery,
        handler: Handler,
    ) -> Exception | None:
        """Run the handler on one envelope in its log context (and, given `span_headers`, a consumer span of its
        own continuing their trace); the error it ended with, logged, or None."""
        attempt = delivery.attempt
        started = time.perf_counter()
        with (
            structlog.contextvars.bound_contextvars(
                payment_id=envelope.payment_id, event_id=str(envelope.id), event_type=envelope.type
            ),
            _consumer_span(group, envelope, span_headers, attempt) if span_headers is not None else nullcontext(),
        ):
            try:
                await handler(envelope, delivery)
                return None
            except PoisonMessage as exc:
                log.error("poison message dead-lettered", consumer=group, reason=str(exc))
                return exc
            except RetryLater as exc:
                log.info("message deferred", consumer=group, attempt=attempt, reason=str(exc))
                return exc
            except Exception as exc:
                log.exception("handler failed", consumer=group, attempt=attempt)
                return exc
            finally:
                EVENT_PROCESSING_SECONDS.labels(group, envelope.type).observe(time.perf_counter() - started)

    async def _carry_out(
        self,
        settlement: Settlement,
        group: str,
        queue: str,
        message: AbstractIncomingMessage,
        envelope: Envelope,
        *,
        ack: bool = True,
        count: int = 1,
    ) -> bool:
        """The I/O of a settlement: ack, re-publish to a delay queue then ack, or reject into the DLQ.

        With `ack=False` the ack is left to the caller (a batch acks its messages together): returns whether
        the message is to be acked. `count`: the envelopes the message carries (a bundle's), counted in metrics."""
        outcome = settlement.outcome
        if settlement.action is Action.RETRY:
            assert settlement.next_attempt is not None and settlement.delay_seconds is not None
            try:
                await self._publish_for_retry(queue, message, settlement.next_attempt, settlement.delay_seconds)
                MESSAGE_RETRIES.labels(group, envelope.type).inc(count)
            except Exception:
                # Not acked, so not lost: the broker hands the message out again.
                log.exception("could not schedule a retry; requeueing", consumer=group)
                EVENTS_PROCESSED.labels(group, envelope.type, "requeued").inc(count)
                await message.nack(requeue=True)
                return False
        EVENTS_PROCESSED.labels(group, envelope.type, outcome).inc(count)
        if settlement.action is Action.DEAD_LETTER:
            await message.reject(requeue=False)
            return False
        if ack:
            await message.ack()
        return True

    async def consume_batches(
        self,
        group: str,
        handler: BatchHandler,
        *,
        retry: RetryPolicy,
        prefetch: int = 256,
        max_batch: int = 64,
        ready: Callable[[], Awaitable[bool]] | None = None,
        ack_delay: float = BATCH_ACK_DELAY_SECONDS,
    ) -> None:
        """Start consuming `group`'s queue in batches (shared/batches.py): `handler` gets what queued up while
        the last batch was handled and returns one result per message; each result is settled as in `consume`
        (settlement.settle), and the acks go out together after the handler returned, held `ack_delay` seconds
        to go with the next batches'. A handler that raises has its batch handled one message at a time, unless
        `ready` (whether the handler's database answers) says no: then the consumer stops consuming until it does
        (BatchConsumer)."""
        name = self.names.queue(group)
        await self._declare_delay_queues(name, retry)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        self._consumer_channels.append(channel)
        queue = await channel.get_queue(name, ensure=True)

        async def decode(message: AbstractIncomingMessage) -> Consumed | list[Consumed] | None:
            try:
                if message.content_type == BUNDLE_CONTENT_TYPE:
                    return unbundle(message)
                envelope = Envelope.from_bytes(message.body)
            except ValueError as exc:
                log.error(
                    "undecodable message dead-lettered", consumer=group, message_id=message.message_id, error=str(exc)
                )
                EVENTS_PROCESSED.labels(group, message.type or "unknown", "dead_lettered").inc()
                await message.reject(requeue=False)
                return None
            delivery = _delivery(message, retry)
            span = consumer_span(group, envelope, message.headers or {}, delivery.attempt)
            return Consumed(envelope, delivery, span, message)

        def unbundle(message: AbstractIncomingMessage) -> list[Consumed]:
            # Each envelope of a bundle in its own trace, from the trace headers that came beside it.
            items = bundle_items(message.body)
            delivery = _delivery(message, retry)
            return [
                Consumed(
                    envelope,
                    dataclasses.replace(delivery, trace_headers={k: str(v) for k, v in headers.items()}),
                    consumer_span(group, envelope, headers, delivery.attempt),
                    message,
                    bundled=len(items),
                )
                for headers, envelope in items
            ]

        async def settle_one(item: Consumed, error: BaseException | None) -> bool:
            attempt = item.delivery.attempt
            if isinstance(error, PoisonMessage):
                log.error("poison message dead-lettered", consumer=group, reason=str(error))
            elif isinstance(error, RetryLater):
                log.info("message deferred", consumer=group, attempt=attempt, reason=str(error))
            elif error is not None:
                log.error("handler failed", consumer=group, attempt=attempt, exc_info=error)
            settlement = settle(error, attempt, retry)
            return await self._carry_out(
                settlement, group, name, item.message, item.envelope, ack=False, count=item.bundled
            )

        consumer_tag: str | None = None
        buffered: list[BatchConsumer] = []  # the consumer below, once made

        async def subscribe() -> None:
            nonlocal consumer_tag
            if consumer_tag is None:
                consumer_tag = await queue.consume(buffered[0].on_message)

        async def unsubscribe() -> None:
            nonlocal consumer_tag
            tag, consumer_tag = consumer_tag, None
            if tag is not None:
                try:
                    async with asyncio.timeout(5):
                        await queue.cancel(tag)
                except (Exception, asyncio.CancelledError) as exc:
                    if isinstance(exc, asyncio.CancelledError) and being_cancelled():
                        raise
                    # The channel is gone: the broker has let go of its messages already.
                    log.warning("could not stop consuming", consumer=group, error=f"{type(exc).__name__}: {exc}")

        consumer = BatchConsumer(
            group,
            handler,
            max_batch=max_batch,
            decode=decode,
            settle_one=settle_one,
            ready=ready or _always_ready,
            subscribe=subscribe,
            unsubscribe=unsubscribe,
            ack_delay=ack_delay,
        )
        buffered.append(consumer)
        self._batch_consumers.append(consumer)
        await subscribe()
        # Back within 5 s of its database: a paused consumer's restart costs one round trip.
        self.supervisor.start(f"{group} batches", consumer.run, backoff=CONSUMER_BACKOFF)

    # --- dead letters -----------------------------------------------------------------------------
    async def dlq_depth(self, group: str) -> int:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(self.names.dlq(group), passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    def watch_dlq(self, group: str, *, interval: float = 15.0) -> asyncio.Task[None]:
        """Keep the DLQ depth gauge current, a loop of this broker's supervisor (a read that fails, or hangs on a
        silent connection for 10 s, restarts it after a backoff)."""
        queue = self.names.dlq(group)

        async def measure() -> None:
            DLQ_MESSAGES.labels(queue).set(await self.dlq_depth(group))

        return self.supervisor.every(f"dlq depth {queue}", interval, measure, timeout=10.0)
