"""Bundles (Broker.publish_bundle) against the real broker: several envelopes as one broker message, taken by a batch
consumer as each envelope in its own trace, settled once; a bundle deferred comes back whole, its envelopes again
each in its trace."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shared.batches import Consumed
from shared.broker import (
    BUNDLE_CONTENT_TYPE,
    REPLY_TO_HEADER,
    Delivery,
    RetryLater,
    RetryPolicy,
    bundle_body,
    bundle_items,
)
from shared.events import Envelope, PaymentStatus
from shared.topology import Names
from tests.support.brokers import connected_broker
from tests.support.payment_histories import requested, status_changed
from tests.support.processes import eventually

GROUP = "ledger"  # a group the topology declares; status changes go to it alone
FAST = RetryPolicy(max_attempts=3, base_seconds=0.05)


def in_trace(trace_id: int) -> Callable[[], AbstractContextManager[Any]]:
    """A context whose current span is of trace `trace_id` (as a payment's event would be)."""

    @contextmanager
    def context() -> Iterator[None]:
        span = NonRecordingSpan(
            SpanContext(trace_id, secrets.randbits(64) | 1, is_remote=False, trace_flags=TraceFlags(1))
        )
        with trace.use_span(span):
            yield

    return context


def bundle(count: int) -> list[tuple[Envelope, Callable[[], AbstractContextManager[Any]], int]]:
    return [
        (status_changed(f"pay_{secrets.token_hex(6)}", PaymentStatus.SUCCEEDED), in_trace(n), n)
        for n in range(1, count + 1)
    ]


def test_a_bundles_body_gives_back_each_envelope_with_its_trace_headers_and_refuses_a_broken_one() -> None:
    items = [({"traceparent": f"00-{n:032x}-{n:016x}-01"}, envelope) for envelope, _, n in bundle(3)]

    assert bundle_items(bundle_body(items)) == items
    for broken in (b"", b"{}", b"[]\n{}", b'{"traceparent": "x"}\nnot json'):
        with pytest.raises(ValueError):
            bundle_items(broken)


async def test_a_bundle_is_one_broker_message_whose_envelopes_each_keep_their_trace(
    amqp_url: str, namespace: str
) -> None:
    broker = await connected_broker(amqp_url, namespace, "test-bundles")
    seen: list[tuple[str, int, int, str]] = []

    async def handler(batch: Sequence[Consumed]) -> list[BaseException | None]:
        for item in batch:
            trace_id = item.span.get_span_context().trace_id
            seen.append((item.envelope.payment_id, trace_id, item.bundled, item.message.content_type or ""))
        return [None] * len(batch)

    try:
        await broker.consume_batches(GROUP, handler, retry=FAST, prefetch=10, max_batch=10)
        sent = bundle(5)
        await broker.publish_bundle([(envelope, context) for envelope, context, _ in sent])

        async def all_handled() -> bool:
            return len(seen) >= 5

        await eventually(all_handled, what="the bundle's five envelopes handled")
        assert sorted(seen) == sorted((e.payment_id, n, 5, BUNDLE_CONTENT_TYPE) for e, _, n in sent)
    finally:
        await broker.close()


async def test_a_deferred_bundle_comes_back_whole_and_a_single_envelope_goes_as_a_message_of_its_own(
    amqp_url: str, namespace: str
) -> None:
    broker = await connected_broker(amqp_url, namespace, "test-bundles")
    attempts: list[tuple[int, list[str]]] = []
    single: list[str] = []

    async def handler(batch: Sequence[Consumed]) -> list[BaseException | None]:
        bundled = [item for item in batch if item.bundled > 1]
        single.extend(item.message.content_type or "" for item in batch if item.bundled == 1)
        if bundled:
            attempts.append((bundled[0].delivery.attempt, sorted(item.envelope.payment_id for item in bundled)))
        # The bundle's first delivery defers one of its envelopes: the whole bundle is retried.
        return [
            RetryLater("early") if item.bundled > 1 and item.delivery.attempt == 1 and n == 0 else None
            for n, item in enumerate(batch)
        ]

    try:
        await broker.consume_batches(GROUP, handler, retry=FAST, prefetch=10, max_batch=10)
        sent = bundle(3)
        await broker.publish_bundle([(envelope, context) for envelope, context, _ in sent])
        ((lone, lone_context, _),) = bundle(1)
        await broker.publish_bundle([(lone, lone_context)])

        async def retried_and_lone_handled() -> bool:
            return len(attempts) >= 2 and bool(single)

        await eventually(retried_and_lone_handled, what="the bundle retried and the lone one")
        ids = sorted(e.payment_id for e, _, _ in sent)
        assert attempts[:2] == [(1, ids), (2, ids)]
        assert single == ["application/json"]
    finally:
        await broker.close()


async def test_a_one_at_a_time_consumer_handles_each_bundled_envelope_with_its_trace_and_reply_key(
    amqp_url: str, namespace: str
) -> None:
    # The gateway_worker's way: `consume`, a handler per envelope. Its group takes PaymentRequested, which the
    # ledger takes in batches too: both get the bundle.
    broker = await connected_broker(amqp_url, namespace, "test-bundles")
    handled: list[tuple[str, str, str | None, int]] = []

    async def handler(envelope: Envelope, delivery: Delivery) -> None:
        traceparent = delivery.trace_headers.get("traceparent", "")
        handled.append((envelope.payment_id, traceparent, delivery.reply_to, delivery.attempt))
        if envelope.payment_id == first and delivery.attempt == 1:
            raise RetryLater("early")

    try:
        await broker.consume("gateway_worker", handler, retry=FAST, prefetch=4)
        envelopes = [requested(f"pay_{secrets.token_hex(6)}") for _ in range(3)]
        first = envelopes[0].payment_id
        reply_key = Names.reply_key("intake_api", secrets.token_hex(6))
        stored = [
            {"traceparent": f"00-{n + 1:032x}-{n + 1:016x}-01", REPLY_TO_HEADER: reply_key if n == 1 else "x"}
            for n in range(3)
        ]
        await broker.publish_bundle(list(zip(envelopes, stored, strict=True)))

        async def retried() -> bool:
            return len(handled) >= 6

        await eventually(retried, what="the bundle handled, deferred by one envelope, and handled again")
        for attempt in (1, 2):
            got = sorted(h for h in handled if h[3] == attempt)
            expected = sorted(
                (e.payment_id, f"00-{n + 1:032x}", reply_key if n == 1 else None, attempt)
                for n, e in enumerate(envelopes)
            )
            # Each envelope's span continues its own stored trace (a new span id, the same trace id).
            assert [(p, t[:35], r, a) for p, t, r, a in got] == expected
    finally:
        await broker.close()


async def test_a_coalescing_broker_sends_a_lone_publish_alone_and_concurrent_ones_as_bundles(
    amqp_url: str, namespace: str
) -> None:
    # The gateway_worker's and webhook_receiver's publisher: each handler publishes one message and awaits it.
    publisher = await connected_broker(amqp_url, namespace, "test-coalescing", coalesce=True)
    consumer = await connected_broker(amqp_url, namespace, "test-bundles")
    seen: list[tuple[str, int]] = []

    async def handler(batch: Sequence[Consumed]) -> list[BaseException | None]:
        seen.extend((item.envelope.payment_id, item.bundled) for item in batch)
        return [None] * len(batch)

    try:
        await consumer.consume_batches(GROUP, handler, retry=FAST, prefetch=10, max_batch=10)
        alone = status_changed(f"pay_{secrets.token_hex(6)}", PaymentStatus.SUCCEEDED)
        await asyncio.wait_for(publisher.publish(alone), 10)
        together = [status_changed(f"pay_{secrets.token_hex(6)}", PaymentStatus.SUCCEEDED) for _ in range(30)]
        await asyncio.wait_for(asyncio.gather(*(publisher.publish(e) for e in together)), 10)

        async def all_handled() -> bool:
            return len(seen) >= 31

        await eventually(all_handled, what="every published envelope handled")
        assert sorted(p for p, _ in seen) == sorted(e.payment_id for e in [alone, *together])
        assert dict(seen)[alone.payment_id] == 1  # nothing in flight: it went at once, on its own
        assert max(n for _, n in seen) > 1  # the 30 published at once shared messages
    finally:
        await publisher.close()
        await consumer.close()
