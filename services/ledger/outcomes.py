"""What the ledger tells the rest of the system once a payment's record changed: `PaymentStatusRecorded`.

Published after the commit, under an id derived from the ledger event that caused it. If the publish fails the
event is retried; the retry finds the event already recorded and publishes the same fact again from its log row,
so a recorded change is announced at least once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.ledger.state_machine import Decision
from services.ledger.store import LedgerStore
from shared.events import Envelope, PaymentRequested, PaymentStatus, PaymentStatusRecorded, deterministic_event_id

Announce = Callable[[Envelope], Awaitable[Envelope | None]]


def _announcement(envelope: Envelope, from_status: PaymentStatus | None, status: PaymentStatus) -> Envelope:
    return Envelope.wrap(
        PaymentStatusRecorded(from_status=from_status, status=status, ledger_event_id=str(envelope.id)),
        payment_id=envelope.payment_id,
        source="ledger",
        event_id=deterministic_event_id("status-recorded", str(envelope.id)),
    )


def status_recorded(envelope: Envelope, outcome: str, decision: Decision | None) -> Envelope | None:
    """The announcement of what recording `envelope` changed: a new payment or a new status; else None."""
    if outcome == "applied" and envelope.type == PaymentRequested.TYPE:  # its payload was validated when recorded
        return _announcement(envelope, None, PaymentStatus.PENDING)
    if decision is None or not decision.applied or decision.after.status == decision.before.status:
        return None
    return _announcement(envelope, decision.before.status, decision.after.status)


async def status_recorded_before(store: LedgerStore, envelope: Envelope) -> Envelope | None:
    """For an event recorded on an earlier delivery: the announcement it made (or should have made) then."""
    change = await store.status_change(envelope.id)
    if change is None:
        return None
    from_status, to_status = change
    return _announcement(envelope, from_status, to_status)
