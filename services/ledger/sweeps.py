"""The ledger's periodic work: expiring payments past their TTL (and holds past theirs), reconciling ones whose
outcome never came."""

from __future__ import annotations

import asyncio

import asyncpg

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


def _claiming(due: str, *, oldest_first_by: str, mark: str, statuses: str = "'PENDING'") -> str:
    """The query that claims up to $1 payments in one of `statuses` which are `due`, oldest first, and were not
    claimed in the last $2 seconds (the `mark` column says when), marking them claimed now."""
    return f"""
WITH due AS (
    SELECT id FROM ledger.payment_requests
    WHERE status IN ({statuses}) AND {due}
      AND ({mark} IS NULL OR {mark} < now() - make_interval(secs => $2))
    ORDER BY {oldest_first_by}
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE ledger.payment_requests p SET {mark} = now()
FROM due WHERE p.id = due.id
RETURNING p.id, p.provider, p.provider_payment_id, p.status
"""


# A PENDING payment past its TTL, and an AUTHORIZED one whose hold is past AUTHORIZATION_TTL_SECONDS (expires_at
# was moved to the hold's end when it was authorized).
_DUE_FOR_EXPIRY = _claiming(
    "expires_at <= now()",
    oldest_first_by="expires_at",
    mark="expiration_requested_at",
    statuses="'PENDING', 'AUTHORIZED'",
)
# $3: how long a payment waits for its outcome before it is reconciled.
_DUE_FOR_RECONCILIATION = _claiming(
    "provider_payment_id IS NOT NULL AND created_at < now() - make_interval(secs => $3) AND expires_at > now()",
    oldest_first_by="created_at",
    mark="reconciliation_requested_at",
)


async def _claim_and_send(
    pool: asyncpg.Pool,
    broker: Broker,
    claim: str,
    *args: float,
    command: type[ExpirePayment] | type[ReconcilePayment],
    source: Source,
) -> int:
    """Claim due payments and send each its command, in one transaction.

    Rows are claimed with SKIP LOCKED and marked in the same transaction that publishes, so several
    ledger processes never send one payment's command twice in one round; a failed publish unmarks them.
    """
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(claim, SWEEP_BATCH, *args)
        await asyncio.gather(
            *(
                broker.publish(Envelope.wrap(_command(command, row), payment_id=row["id"], source=source))
                for row in rows
            )
        )
    return len(rows)


def _command(command: type[ExpirePayment] | type[ReconcilePayment], row: asyncpg.Record) -> Message:
    if command is ExpirePayment:
        # A hold is voided at the provider, never lapsed on our side only (docs/reference/capture.md).
        return ExpirePayment(
            provider=row["provider"],
            provider_payment_id=row["provider_payment_id"],
            authorization=row["status"] == "AUTHORIZED",
        )
    return command(provider=row["provider"], provider_payment_id=row["provider_payment_id"])


async def request_expirations(pool: asyncpg.Pool, broker: Broker, *, resend_after_seconds: float) -> int:
    """Send ExpirePayment once for each PENDING payment past `expires_at`, and for each AUTHORIZED one whose hold
    is past it (again if nothing came of it)."""
    sent = await _claim_and_send(
        pool, broker, _DUE_FOR_EXPIRY, resend_after_seconds, command=ExpirePayment, source="expiry"
    )
    EXPIRATIONS_REQUESTED.inc(sent)
    return sent


async def request_reconciliations(
    pool: asyncpg.Pool, broker: Broker, *, older_than_seconds: float, every_seconds: float
) -> int:
    """Ask the gateway_worker to look up PENDING payments that have an intent but no outcome for a while."""
    sent = await _claim_and_send(
        pool,
        broker,
        _DUE_FOR_RECONCILIATION,
        every_seconds,
        older_than_seconds,
        command=ReconcilePayment,
        source="reconciliation",
    )
    RECONCILIATIONS_REQUESTED.inc(sent)
    return sent


async def measure_pending(pool: asyncpg.Pool) -> None:
    row = await pool.fetchrow(
        """
        SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
        FROM ledger.payment_requests WHERE status = 'PENDING'
        """
    )
    assert row is not None
    PAYMENTS_PENDING.set(row["pending"])
    PAYMENTS_PENDING_OLDEST_AGE.set(float(row["oldest"]))


async def measure_authorizations(pool: asyncpg.Pool) -> None:
    """The holds open now, and those in the last seventh of their life (due for capture or void soon)."""
    row = await pool.fetchrow(
        """
        SELECT count(*) AS open,
               count(*) FILTER (WHERE expires_at - now() < (expires_at - coalesce(authorized_at, created_at)) / 7)
                   AS expiring_soon
        FROM ledger.payment_requests WHERE status = 'AUTHORIZED'
        """
    )
    assert row is not None
    AUTHORIZATIONS_OPEN.set(row["open"])
    AUTHORIZATIONS_EXPIRING_SOON.set(row["expiring_soon"])


# Refunds pending longer than $3 seconds, not asked about in the last $2: claimed like payments (SKIP LOCKED,
# marked in the transaction that publishes), with what the gateway_worker needs to ask the provider.
_REFUNDS_DUE_FOR_RECONCILIATION = """
WITH due AS (
    SELECT id FROM ledger.refunds
    WHERE status = 'pending' AND created_at < now() - make_interval(secs => $3)
      AND (reconciliation_requested_at IS NULL OR reconciliation_requested_at < now() - make_interval(secs => $2))
    ORDER BY created_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE ledger.refunds r SET reconciliation_requested_at = now()
FROM due, ledger.payment_requests p
WHERE r.id = due.id AND p.id = r.payment_request_id
RETURNING r.id, r.payment_request_id, r.amount, r.currency, r.reason, r.provider_refund_id,
          coalesce(r.provider, p.provider) AS provider, p.provider_payment_id
"""


async def request_refund_reconciliations(
    pool: asyncpg.Pool, broker: Broker, *, older_than_seconds: float, every_seconds: float
) -> int:
    """Ask the gateway_worker about refunds still pending after `older_than_seconds` (RECONCILE_AFTER_SECONDS):
    it looks them up at the provider, or submits them again under their idempotency key if the provider never
    had them, so no refund stays pending forever."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_REFUNDS_DUE_FOR_RECONCILIATION, SWEEP_BATCH, every_seconds, older_than_seconds)
        await asyncio.gather(
            *(
                broker.publish(
                    Envelope.wrap(
                        ReconcileRefund(
                            refund_id=row["id"],
                            provider=row["provider"],
                            provider_payment_id=row["provider_payment_id"],
                            provider_refund_id=row["provider_refund_id"],
                            amount=row["amount"],
                            currency=row["currency"],
                            reason=row["reason"],
                        ),
                        payment_id=row["payment_request_id"],
                        source="reconciliation",
                    )
                )
                for row in rows
            )
        )
    REFUND_RECONCILIATIONS_REQUESTED.inc(len(rows))
    return len(rows)


async def measure_pending_refunds(pool: asyncpg.Pool) -> None:
    row = await pool.fetchrow(
        """
        SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
        FROM ledger.refunds WHERE status = 'pending'
        """
    )
    assert row is not None
    REFUNDS_PENDING.set(row["pending"])
    REFUNDS_PENDING_OLDEST_AGE.set(float(row["oldest"]))
