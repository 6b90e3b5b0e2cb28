"""The ledger's periodic work: expiring payments past their TTL (and holds past theirs), reconciling ones whose
outcome never came."""

from __future__ import annotations

import asyncio

import asyncpg

from shared.broker import Broker
from shared.events import Envelope, ExpirePayment, Message, ReconcilePayment, Source
from shared.logs import get_logger
from shared.metrics import (
    AUTHORIZATIONS_EXPIRING_SOON,
    AUTHORIZATIONS_OPEN,
    EXPIRATIONS_REQUESTED,
    PAYMENTS_PENDING,
    PAYMENTS_PENDING_OLDEST_AGE,
    RECONCILIATIONS_REQUESTED,
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
