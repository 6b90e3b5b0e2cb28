"""Publishes coalesced without a timer (shared/broker.py PublishCoalescer): a lone publish goes at once; what is
published while one of its type awaits the broker goes together next; each caller hears its own bundle's outcome."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shared.broker import BundleOrigin, ChannelLost, PublishCoalescer
from shared.events import Envelope, PaymentStatus
from tests.support.payment_histories import requested, status_changed


class SlowBroker:
    """Records each bundle (its payment ids and the trace each envelope was published in); confirms on release."""

    def __init__(self) -> None:
        self.bundles: list[list[tuple[str, int]]] = []
        self.release = asyncio.Event()
        self.fail_next: Exception | None = None

    async def publish_bundle(self, items: Sequence[tuple[Envelope, BundleOrigin]]) -> None:
        bundle = []
        for envelope, origin in items:
            assert callable(origin)
            with origin():
                bundle.append((envelope.payment_id, trace.get_current_span().get_span_context().trace_id))
        self.bundles.append(bundle)
        await self.release.wait()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error


def event(n: int) -> Envelope:
    return status_changed(f"pay_{n}_{secrets.token_hex(3)}", PaymentStatus.SUCCEEDED)


async def publish_in_trace(coalescer: PublishCoalescer, envelope: Envelope, trace_id: int) -> None:
    span = NonRecordingSpan(SpanContext(trace_id, 1, is_remote=False, trace_flags=TraceFlags(1)))
    with trace.use_span(span):
        await coalescer.publish(envelope)


async def test_a_lone_publish_goes_at_once_and_those_made_meanwhile_go_together_each_in_its_trace() -> None:
    broker = SlowBroker()
    coalescer = PublishCoalescer(broker.publish_bundle)
    first = event(0)
    first_done = asyncio.create_task(publish_in_trace(coalescer, first, 1))
    await asyncio.sleep(0.01)
    assert broker.bundles == [[(first.payment_id, 1)]]  # sent without waiting for company

    others = [event(n) for n in range(1, 6)]
    rest = [asyncio.create_task(publish_in_trace(coalescer, e, n + 2)) for n, e in enumerate(others)]
    await asyncio.sleep(0.01)
    assert len(broker.bundles) == 1 and not first_done.done()  # they wait for the first's confirm

    broker.release.set()
    await asyncio.wait_for(asyncio.gather(first_done, *rest), 5)

    assert broker.bundles[1] == [(e.payment_id, n + 2) for n, e in enumerate(others)]
    assert len(broker.bundles) == 2


async def test_each_caller_hears_its_own_bundles_failure_and_the_next_bundle_still_goes() -> None:
    broker = SlowBroker()
    coalescer = PublishCoalescer(broker.publish_bundle)
    broker.fail_next = ConnectionError("broker gone")
    failing = asyncio.create_task(coalescer.publish(event(0)))
    await asyncio.sleep(0.01)
    later = asyncio.create_task(coalescer.publish(requested(f"pay_{secrets.token_hex(3)}")))  # another type: at once
    following = asyncio.create_task(coalescer.publish(event(1)))
    await asyncio.sleep(0.01)
    assert len(broker.bundles) == 2

    broker.release.set()

    with pytest.raises(ConnectionError):
        await asyncio.wait_for(failing, 5)
    await asyncio.wait_for(asyncio.gather(later, following), 5)
    assert len(broker.bundles) == 3


async def test_callers_waiting_when_the_publisher_stops_are_told_the_channel_is_lost() -> None:
    broker = SlowBroker()
    coalescer = PublishCoalescer(broker.publish_bundle)
    first = asyncio.create_task(coalescer.publish(event(0)))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(coalescer.publish(event(1)))
    await asyncio.sleep(0.01)

    for task in asyncio.all_tasks():
        if task.get_coro().__qualname__.endswith("_flush"):  # type: ignore[union-attr]
            task.cancel()

    for waiting in (first, second):
        with pytest.raises(ChannelLost):
            await asyncio.wait_for(waiting, 5)
