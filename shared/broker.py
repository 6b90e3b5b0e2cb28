"""RabbitMQ: the topology, publishing with confirms, and consuming with acks only after the effect.

Names (all under BROKER_NAMESPACE `ns`):
  ns.events                 topic exchange every event and command is published to (routing key = type)
  ns.<group>                durable quorum queue of one consumer group, bound by routing keys
  ns.<group>.dlq            its dead-letter queue (via the ns.dead-letter exchange, at-least-once)
  ns.<group>.delay.<n>      delay queue for retry attempt n: messages wait out their expiration there,
                            then dead-letter back into ns.<group> through the default exchange
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared.events import Envelope
from shared.logs import get_logger
from shared.metrics import DLQ_MESSAGES, EVENT_PROCESSING_SECONDS, EVENTS_PROCESSED, MESSAGE_RETRIES
from shared.telemetry import extract_context, inject_context

log = get_logger(__name__)
_tracer = trace.get_tracer(__name__)

ATTEMPT_HEADER = "x-paystream-attempt"
# A consumer that dies mid-message this many times makes the message poison: it goes to the DLQ.
DELIVERY_LIMIT = 10

# Which message types each consumer group receives (routing keys on the topic exchange).
CONSUMER_GROUPS: dict[str, tuple[str, ...]] = {
    "gateway_worker": (
        "payment.requested",
        "payment.cancel_requested",
        "payment.expiration_due",
        "payment.reconciliation_due",
    ),
    "ledger": ("payment.#",),
}


@dataclass(frozen=True)
class Names:
    namespace: str

    @property
    def exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dead-letter"

    def queue(self, group: str) -> str:
        return f"{self.namespace}.{group}"

    def dlq(self, group: str) -> str:
        return f"{self.namespace}.{group}.dlq"

    def delay_queue(self, group: str, attempt: int) -> str:
        return f"{self.namespace}.{group}.delay.{attempt}"


class RetryLater(Exception):
    """The message cannot be handled yet (its payment is unknown, a dependency is down): try again later."""


class PoisonMessage(Exception):
    """The message can never be handled: dead-letter it at once."""


@dataclass(frozen=True)
class Delivery:
    """What a handler may know about the delivery besides the envelope."""

    attempt: int
    max_attempts: int
    redelivered: bool
    # The W3C trace context the message was published with: the same on every redelivery and retry.
    trace_headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


Handler = Callable[[Envelope, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits base * 2**(n-1), capped, ±20 %."""

    max_attempts: int
    base_seconds: float
    cap_seconds: float = 300.0

    def delay(self, attempt: int) -> float:
        nominal = min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1))
        return nominal * random.uniform(0.8, 1.2)


class Broker:
    """One connection per process: a confirming publisher channel, one channel per consumer."""

    def __init__(self, amqp_url: str, namespace: str, *, name: str) -> None:
        self._url = amqp_url
        self.names = Names(namespace)
        self._name = name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._declared_delay_queues: set[str] = set()
        self._consumer_channels: list[AbstractChannel] = []

    async def connect(self, *, timeout: float = 10.0) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, timeout=timeout, client_properties={"connection_name": self._name}
        )
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await self._channel.declare_exchange(
            self.names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("broker not connected")
        return self._connection

    async def is_ready(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def close(self) -> None:
        for channel in self._consumer_channels:
            if not channel.is_closed:
                await channel.close()
        if self._connection is not None:
            await self._connection.close()

    # --- topology -------------------------------------------------------------------------------
    def _queue_arguments(self, group: str) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": self.names.dead_letter_exchange,
            "x-dead-letter-routing-key": group,
            # Losing a poisoned payment event is not acceptable: dead-letter at least once.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def declare_topology(self, groups: Iterable[str] = tuple(CONSUMER_GROUPS)) -> None:
        """Declare the exchanges and every group's queue, DLQ and bindings; safe to repeat and to race."""
        channel = await self.connection.channel()
        try:
            exchange = await channel.declare_exchange(self.names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            dlx = await channel.declare_exchange(
                self.names.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
            )
            for group in groups:
                dlq = await channel.declare_queue(
                    self.names.dlq(group), durable=True, arguments={"x-queue-type": "quorum"}
                )
                await dlq.bind(dlx, routing_key=group)
                queue = await channel.declare_queue(
                    self.names.queue(group), durable=True, arguments=self._queue_arguments(group)
                )
                for key in CONSUMER_GROUPS[group]:
                    await queue.bind(exchange, routing_key=key)
        finally:
            await channel.close()

    # --- publishing -------------------------------------------------------------------------------
    async def publish(
        self, envelope: Envelope, *, headers: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> None:
        """Publish persistently and return only once the broker has confirmed it.

        `headers` may carry a stored W3C trace context (the outbox); otherwise the current one is sent.
        Raises if the broker refuses, returns (unroutable) or does not confirm in time.
        """
        if self._exchange is None:
            raise RuntimeError("broker not connected")
        parent = extract_context(headers) if headers else None
        with _tracer.start_as_current_span(
            f"publish {envelope.type}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": self.names.exchange,
                "messaging.message.id": str(envelope.id),
                "payment.id": envelope.payment_id,
                "paystream.event_type": envelope.type,
            },
        ):
            message = aio_pika.Message(
                body=envelope.to_bytes(),
                message_id=str(envelope.id),
                type=envelope.type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=envelope.occurred_at,
                headers=inject_context({}),
            )
            await self._exchange.publish(message, routing_key=envelope.type, mandatory=True, timeout=timeout)

    async def _publish_for_retry(
        self, group: str, message: AbstractIncomingMessage, attempt: int, delay_seconds: float
    ) -> None:
        if self._channel is None:
            raise RuntimeError("broker not connected")
        name = self.names.delay_queue(group, attempt)
        if name not in self._declared_delay_queues:
            await self._channel.declare_queue(
                name,
                durable=True,
                arguments={
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.names.queue(group),
                },
            )
            self._declared_delay_queues.add(name)
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
        await self._channel.default_exchange.publish(retry, routing_key=name, mandatory=True, timeout=10)

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
        """Start consuming `group`'s queue; each message is acked only after `handler` returned.

        RetryLater (or any unexpected error) sends the message to a delay queue until its attempts run
        out, then to the DLQ; PoisonMessage and undecodable messages go to the DLQ at once.
        """
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        self._consumer_channels.append(channel)
        name = queue_name or self.names.queue(group)
        queue = await channel.get_queue(name, ensure=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._handle(group, message, handler, retry)

        await queue.consume(on_message)
        return queue

    async def _handle(self, group: str, message: AbstractIncomingMessage, handler: Handler, retry: RetryPolicy) -> None:
        attempt = int(str((message.headers or {}).get(ATTEMPT_HEADER, 1)))
        try:
            envelope = Envelope.from_bytes(message.body)
            envelope.message()
        except ValueError as exc:
            log.error(
                "undecodable message dead-lettered", consumer=group, message_id=message.message_id, error=str(exc)[:300]
            )
            EVENTS_PROCESSED.labels(group, message.type or "unknown", "dead_lettered").inc()
            await message.reject(requeue=False)
            return

        headers = message.headers or {}
        delivery = Delivery(
            attempt=attempt,
            max_attempts=retry.max_attempts,
            redelivered=bool(message.redelivered),
            trace_headers={k: str(headers[k]) for k in ("traceparent", "tracestate") if k in headers},
        )
        started = time.perf_counter()
        with (
            structlog.contextvars.bound_contextvars(
                payment_id=envelope.payment_id, event_id=str(envelope.id), event_type=envelope.type
            ),
            _tracer.start_as_current_span(
                f"{group} process {envelope.type}",
                context=extract_context(message.headers),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "rabbitmq",
                    "messaging.message.id": str(envelope.id),
                    "messaging.consumer.group.name": group,
                    "payment.id": envelope.payment_id,
                    "paystream.event_type": envelope.type,
                    "paystream.attempt": attempt,
                },
            ),
        ):
            outcome = "handled"
            try:
                await handler(envelope, delivery)
            except PoisonMessage as exc:
                log.error("poison message dead-lettered", consumer=group, reason=str(exc))
                outcome = "dead_lettered"
            except Exception as exc:
                if isinstance(exc, RetryLater):
                    log.info("message deferred", consumer=group, attempt=attempt, reason=str(exc))
                else:
                    log.exception("handler failed", consumer=group, attempt=attempt)
                outcome = "dead_lettered" if delivery.is_last_attempt else "retried"
            finally:
                EVENT_PROCESSING_SECONDS.labels(group, envelope.type).observe(time.perf_counter() - started)

            if outcome == "retried":
                try:
                    await self._publish_for_retry(group, message, attempt + 1, retry.delay(attempt))
                    MESSAGE_RETRIES.labels(group, envelope.type).inc()
                except Exception:
                    log.exception("could not schedule a retry; requeueing", consumer=group)
                    outcome = "requeued"
            EVENTS_PROCESSED.labels(group, envelope.type, outcome).inc()
            if outcome in ("handled", "retried"):
                await message.ack()
            elif outcome == "dead_lettered":
                await message.reject(requeue=False)
            else:
                await message.nack(requeue=True)

    async def dlq_depth(self, group: str) -> int:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(self.names.dlq(group), passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def watch_dlq(self, group: str, *, interval: float = 15.0) -> None:
        """Keep the DLQ depth gauge current (runs until cancelled)."""
        while True:
            try:
                DLQ_MESSAGES.labels(self.names.dlq(group)).set(await self.dlq_depth(group))
            except Exception as exc:
                log.warning("could not read DLQ depth", queue=self.names.dlq(group), error=str(exc))
            await asyncio.sleep(interval)

    async def declare_private_queue(self, routing_keys: Iterable[str]) -> str:
        """A server-named, exclusive queue for this process alone (it disappears with the connection)."""
        channel = await self.connection.channel()
        self._consumer_channels.append(channel)
        exchange = await channel.get_exchange(self.names.exchange)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        return queue.name
