"""The ledger's periodic work: expiring payments past their TTL (and holds past theirs), reconciling payments and
refunds whose outcome never came, and the gauges of what is open. Over the SweepStore port
(services/ledger/store.py): the SQL is the store's; here is what each claimed row is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from services.ledger.store import Claimed, SendClaimed, SweepStore
from shared.broker import Broker
from shared.events import Envelope, ExpirePayment, Message, ReconcilePayment, ReconcileRefund, Source
from shared.logs import get_logger
from shared.metrics import (
    AUTHORIZATIONS_EXPIRING_SOON,
    AUTHORIZATIONS_OPEN,
    EXPIRATIONS_REQUESTED,
    PAYMENTS_PENDING,
    PAYMENTS_PENDING_OLDEST_AGE,
    RECONCILIATIONS_REQUESTED,
    REFUND_RECONCILIATIONS_REQUESTED,
    REFUNDS_PENDING,
    REFUNDS_PENDING_OLDEST_AGE,
)

log = get_logger(__name__)

SWEEP_BATCH = 100


def _publishing(
    broker: Broker, command: Callable[[Claimed], Message], *, source: Source, payment_id_column: str = "id"
) -> SendClaimed:
    """What a claim sends its rows with: each row's `command`, published all at once, keyed by its payment."""

    async def send(rows: Sequence[Claimed]) -> None:
        await asyncio.gather(
            *(broker.publish(Envelope.wrap(command(r), payment_id=r[payment_id_column], source=source)) for r in rows)
        )

    return send


def _expiration(row: Claimed) -> Message:
    # A hold is voided at the provider, never lapsed on our side only (docs/reference/capture.md).
    return ExpirePayment(
        provider=row["provider"],
        provider_payment_id=row["provider_payment_id"],
        authorization=row["status"] == "AUTHORIZED",
    )


def _reconciliation(row: Claimed) -> Message:
    return ReconcilePayment(provider=row["provider"], provider_payment_id=row["provider_payment_id"])


async def request_expirations(store: SweepStore, broker: Broker, *, resend_after_seconds: float) -> int:
    """Send ExpirePayment once for each PENDING payment past `expires_at`, and for each AUTHORIZED one whose hold
    is past it (again if nothing came of it)."""

    send = _publishing(broker, _expiration, source="expiry")
    sent = await store.claim_expirations(SWEEP_BATCH, resend_after_seconds=resend_after_seconds, send=send)
    EXPIRATIONS_REQUESTED.inc(sent)
    return sent


async def request_reconciliations(
    store: SweepStore, broker: Broker, *, older_than_seconds: float, every_seconds: float
) -> int:
    """Ask the gateway_worker to look up PENDING payments that have an intent but no outcome for a while."""

    send = _publishing(broker, _reconciliation, source="reconciliation")
    sent = await store.claim_reconciliations(
        SWEEP_BATCH, older_than_seconds=older_than_seconds, every_seconds=every_seconds, send=send
    )
    RECONCILIATIONS_REQUESTED.inc(sent)
    return sent


async def measure_pending(store: SweepStore) -> None:
    pending, oldest = await store.pending_payments()
    PAYMENTS_PENDING.set(pending)
    PAYMENTS_PENDING_OLDEST_AGE.set(oldest)


async def measure_authorizations(store: SweepStore) -> None:
    """The holds open now, and those in the last seventh of their life (due for capture or void soon)."""
    open_now, expiring_soon = await store.open_authorizations()
    AUTHORIZATIONS_OPEN.set(open_now)
    AUTHORIZATIONS_EXPIRING_SOON.set(expiring_soon)


def _refund_reconciliation(row: Claimed) -> Message:
    return ReconcileRefund(
        refund_id=row["id"],
        provider=row["provider"],
        provider_payment_id=row["provider_payment_id"],
        provider_refund_id=row["provider_refund_id"],
        amount=row["amount"],
        currency=row["currency"],
        reason=row["reason"],
    )


async def request_refund_reconciliations(
    store: SweepStore, broker: Broker, *, older_than_seconds: float, every_seconds: float
) -> int:
    """Ask the gateway_worker about refunds still pending after `older_than_seconds` (RECONCILE_AFTER_SECONDS):
    it looks them up at the provider, or submits them again under their idempotency key if the provider never
    had them, so no refund stays pending forever."""

    send = _publishing(broker, _refund_reconciliation, source="reconciliation", payment_id_column="payment_request_id")
    sent = await store.claim_refund_reconciliations(
        SWEEP_BATCH, older_than_seconds=older_than_seconds, every_seconds=every_seconds, send=send
    )
    REFUND_RECONCILIATIONS_REQUESTED.inc(sent)
    return sent


async def measure_pending_refunds(store: SweepStore) -> None:
    pending, oldest = await store.pending_refunds()
    REFUNDS_PENDING.set(pending)
    REFUNDS_PENDING_OLDEST_AGE.set(oldest)
