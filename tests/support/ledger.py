"""Driving the ledger's recording in tests: one event as a batch of one, through the same code the ledger runs."""

from __future__ import annotations

from services.ledger.handlers import LedgerHandlers, Publish, Recorded, record_events
from services.ledger.store import LedgerStore
from shared.broker import RetryLater
from shared.events import Envelope
from tests.support.messages import consumed


async def record_event(store: LedgerStore, envelope: Envelope, publish: Publish | None = None) -> Recorded:
    """Record one event exactly once and apply it (`record_events` with a batch of one); raises RetryLater if its
    payment is not known yet."""
    (recorded,) = await record_events(store, [envelope], publish)
    if isinstance(recorded, RetryLater):
        raise recorded
    return recorded


async def consume(handlers: LedgerHandlers, envelope: Envelope) -> None:
    """Hand one event to the ledger's consumer as the broker does (its batch handler, a batch of one); raises what
    would settle it other than an ack (RetryLater, PoisonMessage)."""
    (result,) = await handlers.record_batch([consumed(envelope)])
    if result is not None:
        raise result
