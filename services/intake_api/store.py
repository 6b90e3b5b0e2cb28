"""The intake's database work: accepting a payment atomically with its outbox row, and answering reads.

Reads come from the ledger (the record of truth), through the views it publishes to the intake (ledger.payments_v1,
ledger.payment_events_v1), falling back to the intake's own record while the ledger has not caught up with a
payment just accepted.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.intake_api.models import Payment, PaymentCreate, PaymentEvent
from services.intake_api.outbox import OutboxRow, enqueue, insert_sql
from shared.events import CancelPayment, PaymentRequested, PaymentStatus
from shared.payment_resource import LEDGER_COLUMNS

# The payment resource's columns, and what the intake needs besides to cancel it at the provider.
_LEDGER_FIELDS = (*LEDGER_COLUMNS, "provider", "provider_payment_id")
_LEDGER_SELECT = ", ".join(f"l.{name}" for name in _LEDGER_FIELDS)


def new_payment_id() -> str:
    return "pay_" + secrets.token_hex(16)


@dataclass(frozen=True)
class Existing:
    """A payment already accepted under an Idempotency-Key."""

    payment_id: str
    fingerprint: str


@dataclass(frozen=True)
class PaymentView:
    payment: Payment
    provider: str | None = None
    provider_payment_id: str | None = None


_ACCEPT = f"""
WITH existing AS (
    SELECT id, request_fingerprint FROM intake.payments WHERE merchant_id = $2 AND idempotency_key = $3
    UNION ALL
    -- A key whose intake record was purged is still the ledger's: it stays taken for good.
    SELECT id, request_fingerprint FROM ledger.payments_v1 WHERE merchant_id = $2 AND idempotency_key = $3
    LIMIT 1
), payment AS (
    INSERT INTO intake.payments (id, merchant_id, idempotency_key, request_fingerprint, request, created_at, expires_at)
    SELECT $1, $2, $3, $4, $5::jsonb, $6::timestamptz, $7::timestamptz
    WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING id
), outbox AS (
    {insert_sql(8)} FROM payment
    RETURNING payment_id
)
SELECT (SELECT payment_id FROM outbox) AS accepted_id,
       (SELECT id FROM existing) AS existing_id,
       (SELECT request_fingerprint FROM existing) AS existing_fingerprint
"""


async def accept_payment(
    pool: asyncpg.Pool,
    *,
    payment_id: str,
    merchant_id: str,
    key: str,
    request: PaymentCreate,
    fingerprint: str,
    ttl_seconds: int,
    reply_to: str | None = None,
) -> tuple[Payment | None, Existing | None]:
    """Accept a payment under (merchant, key), or find the one already accepted under it.

    The idempotency record and the PaymentRequested outbox row are written by ONE statement, so they
    commit together in a single round trip. Returns (the new payment, None), or (None, the existing
    one). A concurrent request holding the same key makes the insert wait on the unique index and then
    do nothing; the first request's row is then read. `reply_to`: the reply routing key of the process
    waiting for the intent's outcome, if the request waits (it rides with the outbox row).
    """
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=ttl_seconds)
    body = request.document
    requested = PaymentRequested(
        merchant_id=merchant_id,
        idempotency_key=key,
        request_fingerprint=fingerprint,
        created_at=now,
        expires_at=expires_at,
        **body,
    )
    outbox_row = OutboxRow.of(requested, payment_id=payment_id, source="intake", reply_to=reply_to)
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            _ACCEPT, payment_id, merchant_id, key, fingerprint, body, now, expires_at, *outbox_row.values()
        )
        assert row is not None
        if row["existing_id"] is not None:
            return None, Existing(row["existing_id"], row["existing_fingerprint"])
        if row["accepted_id"] is None:
            taken = await conn.fetchrow(
                "SELECT id, request_fingerprint FROM intake.payments WHERE merchant_id = $1 AND idempotency_key = $2",
                merchant_id,
                key,
            )
            assert taken is not None
            return None, Existing(taken["id"], taken["request_fingerprint"])
    payment = Payment(
        id=payment_id,
        status=PaymentStatus.PENDING,
        checkout_url=None,
        failure_code=None,
        created_at=now,
        updated_at=now,
        expires_at=expires_at,
        **body,
    )
    return payment, None


def _from_intake(row: asyncpg.Record) -> Payment:
    request: dict[str, Any] = row["request"]
    return Payment(
        id=row["intake_id"],
        status=PaymentStatus.FAILED if row["intake_failure_code"] else PaymentStatus.PENDING,
        checkout_url=row["intake_checkout_url"],
        failure_code=row["intake_failure_code"],
        created_at=row["intake_created_at"],
        updated_at=row["intake_created_at"],
        expires_at=row["intake_expires_at"],
        **request,
    )


async def get_payment(pool: asyncpg.Pool, merchant_id: str, payment_id: str) -> PaymentView | None:
    """The merchant's payment: the ledger's row, else the intake's own record (one round trip either way).

    A checkout URL the intake already handed out shows even while the ledger has not recorded the intent.
    """
    row = await pool.fetchrow(
        f"""
        SELECT {_LEDGER_SELECT}, p.id AS intake_id, p.request, p.checkout_url AS intake_checkout_url,
               p.failure_code AS intake_failure_code, p.created_at AS intake_created_at,
               p.expires_at AS intake_expires_at
        FROM (SELECT $1::text AS id) wanted
        LEFT JOIN ledger.payments_v1 l ON l.id = wanted.id AND l.merchant_id = $2
        LEFT JOIN intake.payments p ON p.id = wanted.id AND p.merchant_id = $2
        """,
        payment_id,
        merchant_id,
    )
    if row is None:
        return None
    if row["id"] is not None:
        fields = {name: row[name] for name in _LEDGER_FIELDS}
        provider, provider_payment_id = fields.pop("provider"), fields.pop("provider_payment_id")
        if fields["checkout_url"] is None:
            fields["checkout_url"] = row["intake_checkout_url"]
        return PaymentView(Payment(**fields), provider, provider_payment_id)
    if row["intake_id"] is None:
        return None
    return PaymentView(_from_intake(row))


async def list_events(pool: asyncpg.Pool, payment_id: str) -> list[PaymentEvent]:
    rows = await pool.fetch(
        """
        SELECT event_id::text, event_type, from_status, to_status, source, outcome, occurred_at, recorded_at
        FROM ledger.payment_events_v1 WHERE payment_id = $1 ORDER BY id
        """,
        payment_id,
    )
    return [PaymentEvent(**dict(r)) for r in rows]


async def request_cancel(pool: asyncpg.Pool, view: PaymentView) -> None:
    """Queue the cancel command: one statement, so it commits on its own."""
    async with pool.acquire() as conn:
        command = CancelPayment(provider=view.provider, provider_payment_id=view.provider_payment_id)
        await enqueue(conn, OutboxRow.of(command, payment_id=view.payment.id, source="merchant"))


async def remember_intent(pool: asyncpg.Pool, payment_id: str, checkout_url: str | None, failure: str | None) -> None:
    """Keep what the gateway said in the intake's record, for reads before the ledger catches up."""
    await pool.execute(
        "UPDATE intake.payments SET checkout_url = coalesce($2, checkout_url),"
        " failure_code = coalesce($3, failure_code) WHERE id = $1",
        payment_id,
        checkout_url,
        failure,
    )


async def purge_expired_keys(pool: asyncpg.Pool, retention_hours: float) -> int:
    """Forget idempotency records past retention once the ledger holds their payment (it answers for them)."""
    result = await pool.execute(
        """
        DELETE FROM intake.payments p
        WHERE p.created_at < now() - make_interval(secs => $1)
          AND EXISTS (SELECT 1 FROM ledger.payments_v1 l WHERE l.id = p.id)
        """,
        retention_hours * 3600,
    )
    await pool.execute(
        "DELETE FROM intake.outbox WHERE published_at < now() - make_interval(secs => $1)", retention_hours * 3600
    )
    return int(result.split()[-1])
