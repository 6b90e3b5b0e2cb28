"""How LedgerHandlers.record_batch announces a batch's status changes (over the in-memory store): all together, each
in its own event's trace, and an announcement that fails defers only its own event."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext

from services.ledger.handlers import LedgerHandlers
from services.ledger.outcomes import status_recorded_before
from services.ledger.store import InMemoryLedgerStore
from shared.batches import Consumed
from shared.broker import RetryLater
from shared.events import Envelope, PaymentStatus, PaymentStatusRecorded
from shared.telemetry import inject_context
from tests.support.messages import consumed
from tests.support.payment_histories import requested


def batch_of_requests(count: int) -> list[Consumed]:
    return [consumed(requested(f"pay_{secrets.token_hex(4)}")) for _ in range(count)]


Bundle = Sequence[tuple[Envelope, Callable[[], AbstractContextManager[Any]]]]


def announced_event(announcement: Envelope) -> str:
    message = announcement.message()
    assert isinstance(message, PaymentStatusRecorded)
    return message.ledger_event_id


async def test_a_batchs_announcements_are_all_in_flight_together() -> None:
    batch = batch_of_requests(5)
    in_flight: list[Envelope] = []
    all_in_flight = asyncio.Event()

    async def publish(announcement: Envelope) -> None:
        in_flight.append(announcement)
        if len(in_flight) == len(batch):
            all_in_flight.set()
        await all_in_flight.wait()  # a publish awaited before the next starts never gets here

    results = await asyncio.wait_for(LedgerHandlers(InMemoryLedgerStore(), publish).record_batch(batch), 5)

    assert results == [None] * len(batch)
    assert sorted(announced_event(a) for a in in_flight) == sorted(str(item.envelope.id) for item in batch)


async def test_each_announcement_continues_the_trace_of_its_event() -> None:
    batch = batch_of_requests(4)
    published: dict[str, tuple[SpanContext, str]] = {}

    async def publish(announcement: Envelope) -> None:
        await asyncio.sleep(0)  # let the others start: each must still see its own context
        current = trace.get_current_span().get_span_context()
        published[announced_event(announcement)] = (current, inject_context({})["traceparent"])

    await LedgerHandlers(InMemoryLedgerStore(), publish).record_batch(batch)

    for item in batch:
        context = item.span.get_span_context()
        current, traceparent = published[str(item.envelope.id)]
        assert current == context
        assert traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


async def test_a_failed_announcement_defers_its_event_alone() -> None:
    batch = batch_of_requests(4)
    failing = str(batch[2].envelope.id)
    published: list[str] = []

    async def publish(announcement: Envelope) -> None:
        await asyncio.sleep(0)
        if announced_event(announcement) == failing:
            raise ConnectionError("broker gone")
        published.append(announced_event(announcement))

    store = InMemoryLedgerStore()
    results = await LedgerHandlers(store, publish).record_batch(batch)

    assert [type(r).__name__ for r in results] == ["NoneType", "NoneType", "RetryLater", "NoneType"]
    assert isinstance(results[2], RetryLater)
    assert sorted(published) == sorted(str(item.envelope.id) for i, item in enumerate(batch) if i != 2)
    # Recorded all the same: its retry is a duplicate, which announces it again.
    assert all(store.state(item.envelope.payment_id) is not None for item in batch)
    assert store.state(batch[2].envelope.payment_id).status is PaymentStatus.PENDING  # type: ignore[union-attr]


async def test_with_bundles_a_batchs_announcements_go_as_one_message_each_in_its_events_trace() -> None:
    batch = batch_of_requests(5)
    bundles: list[list[tuple[Envelope, SpanContext]]] = []

    async def publish(announcement: Envelope) -> None:
        raise AssertionError("announced one at a time although bundles are on")

    async def publish_bundle(items: Bundle) -> None:
        bundle = []
        for envelope, context in items:
            with context():  # each envelope's producer span is made in its own event's context
                bundle.append((envelope, trace.get_current_span().get_span_context()))
        bundles.append(bundle)

    handlers = LedgerHandlers(InMemoryLedgerStore(), publish, publish_bundle=publish_bundle)
    results = await handlers.record_batch(batch)

    assert results == [None] * len(batch)
    assert len(bundles) == 1
    by_event = {announced_event(envelope): context for envelope, context in bundles[0]}
    assert by_event == {str(item.envelope.id): item.span.get_span_context() for item in batch}


async def test_a_bundle_that_fails_defers_every_event_it_carried_and_their_retry_announces_them() -> None:
    batch = batch_of_requests(3)
    attempts: list[list[str]] = []

    async def publish_bundle(items: Bundle) -> None:
        attempts.append([announced_event(envelope) for envelope, _ in items])
        if len(attempts) == 1:
            raise ConnectionError("broker gone")

    async def publish(announcement: Envelope) -> None:
        raise AssertionError("announced one at a time although bundles are on")

    store = InMemoryLedgerStore()

    async def announced_before(envelope: Envelope) -> Envelope | None:
        return await status_recorded_before(store, envelope)

    handlers = LedgerHandlers(store, publish, announced_before, publish_bundle=publish_bundle)
    first = await handlers.record_batch(batch)
    assert all(isinstance(result, RetryLater) for result in first)

    again = await handlers.record_batch(batch)  # redelivered: recorded already, announced now

    assert again == [None] * len(batch)
    assert sorted(attempts[1]) == sorted(attempts[0]) == sorted(str(item.envelope.id) for item in batch)
