"""Recording events: per event, one transaction that writes its log row and applies the state machine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.ledger.state_machine import Decision, PaymentState, decide, intent_left_open
from shared.broker import Delivery, RetryLater
from shared.events import Envelope, ExpirePayment, PaymentRequested, PaymentStatus, Source, deterministic_event_id
from shared.logs import get_logger
from shared.metrics import AMOUNT_MISMATCHES, LATE_SUCCESSES, PAYMENT_COMPLETION_SECONDS, PAYMENTS_COMPLETED

log = get_logger(__name__)

_STATE_COLUMNS = "status, amount, currency, provider, provider_payment_id, checkout_url, failure_code, created_at"


@dataclass(frozen=True)
class Recorded:
    """What recording an event did (for metrics and tests)."""

    outcome: str
    decision: Decision | None = None
    created_at: datetime | None = None


async def _insert_log(
    conn: asyncpg.Connection,
    envelope: Envelope,
    *,
    from_status: str | None,
    to_status: str | None,
    outcome: str,
    late_success: bool = False,
) -> None:
    await conn.execute(
        """
        INSERT INTO ledger.payment_logs
            (payment_request_id, event_id, event_type, from_status, to_status, source, outcome,
             late_success, payload, occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        """,
        envelope.payment_id,
        envelope.id,
        envelope.type,
        from_status,
        to_status,
        envelope.source,
        outcome,
        late_success,
        envelope.model_dump(mode="json"),
        envelope.occurred_at,
    )


async def _create_payment(conn: asyncpg.Connection, envelope: Envelope, message: PaymentRequested) -> bool:
    inserted = await conn.fetchval(
        """
        INSERT INTO ledger.payment_requests
            (id, merchant_id, idempotency_key, request_fingerprint, reference, amount, currency, description,
             customer_email, metadata, return_url, cancel_url, status, created_at, updated_at, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'PENDING', $13, $13, $14)
        ON CONFLICT DO NOTHING
        RETURNING true
        """,
        envelope.payment_id,
        message.merchant_id,
        message.idempotency_key,
        message.request_fingerprint,
        message.reference,
        message.amount,
        message.currency,
        message.description,
        message.customer_email,
        message.metadata,
        message.return_url,
        message.cancel_url,
        message.created_at,
        message.expires_at,
    )
    return bool(inserted)


Publish = Callable[[Envelope], Awaitable[None]]


async def record_event(pool: asyncpg.Pool, envelope: Envelope, publish: Publish | None = None) -> Recorded:
    """Record one event exactly once and apply it; RetryLater if its payment is not known yet.

    A follow-up command (closing an intent opened after the payment ended) is published inside the
    transaction, so it is never lost: if the commit then fails, the event is retried and the command
    sent again under the same id.
    """
    message = envelope.message()
    async with pool.acquire() as conn, conn.transaction():
        if isinstance(message, PaymentRequested):
            created = await _create_payment(conn, envelope, message)
        row = await conn.fetchrow(
            f"SELECT {_STATE_COLUMNS} FROM ledger.payment_requests WHERE id = $1 FOR UPDATE", envelope.payment_id
        )
        if row is None:
            raise RetryLater(f"payment {envelope.payment_id} is not in the ledger yet")
        # The row lock serialises every event of this payment, so this check cannot race a twin delivery.
        if await conn.fetchval("SELECT 1 FROM ledger.payment_logs WHERE event_id = $1", envelope.id):
            return Recorded(outcome="duplicate event")
        if isinstance(message, PaymentRequested):
            outcome = "applied" if created else "ignored: payment already recorded"
            await _insert_log(conn, envelope, from_status=None, to_status=row["status"], outcome=outcome)
            return Recorded(outcome=outcome)

        state = PaymentState(
            status=PaymentStatus(row["status"]),
            amount=row["amount"],
            currency=row["currency"],
            provider=row["provider"],
            provider_payment_id=row["provider_payment_id"],
            checkout_url=row["checkout_url"],
            failure_code=row["failure_code"],
        )
        decision = decide(state, message)
        if decision.applied and decision.after != decision.before:
            after = decision.after
            await conn.execute(
                """
                UPDATE ledger.payment_requests
                SET status = $2, provider = $3, provider_payment_id = $4, checkout_url = $5, failure_code = $6,
                    completed_at = CASE WHEN $7 THEN clock_timestamp() ELSE completed_at END,
                    updated_at = clock_timestamp()
                WHERE id = $1
                """,
                envelope.payment_id,
                after.status.value,
                after.provider,
                after.provider_payment_id,
                after.checkout_url,
                after.failure_code,
                decision.completed,
            )
        await _insert_log(
            conn,
            envelope,
            from_status=decision.before.status.value,
            to_status=decision.after.status.value,
            outcome=decision.outcome,
            late_success=decision.late_success,
        )
        follow_up = intent_left_open(decision, message)
        if follow_up is not None and publish is not None:
            source: Source = "expiry" if isinstance(follow_up, ExpirePayment) else "merchant"
            await publish(
                Envelope.wrap(
                    follow_up,
                    payment_id=envelope.payment_id,
                    source=source,
                    event_id=deterministic_event_id(envelope.payment_id, "close-late-intent", str(envelope.id)),
                )
            )
            log.warning("the payment ended with its intent still open; closing it", command=follow_up.TYPE)
        return Recorded(outcome=decision.outcome, decision=decision, created_at=row["created_at"])


def _observe(recorded: Recorded) -> None:
    decision = recorded.decision
    if decision is None:
        return
    if decision.amount_mismatch:
        AMOUNT_MISMATCHES.inc()
        log.warning("amount mismatch: event not applied", outcome=recorded.outcome)
    if decision.late_success:
        LATE_SUCCESSES.inc()
        log.warning("late success applied over a terminal status; review", from_status=decision.before.status)
    if decision.completed:
        PAYMENTS_COMPLETED.labels(decision.after.status.value).inc()
        if recorded.created_at is not None:
            PAYMENT_COMPLETION_SECONDS.labels(decision.after.status.value).observe(
                (datetime.now(UTC) - recorded.created_at).total_seconds()
            )


class EventRecorder:
    """The ledger's consumer: records each event, then lets the broker ack it."""

    def __init__(self, pool: asyncpg.Pool, publish: Publish | None = None) -> None:
        self._pool = pool
        self._publish = publish

    async def __call__(self, envelope: Envelope, delivery: Delivery) -> None:
        recorded = await record_event(self._pool, envelope, self._publish)
        _observe(recorded)
        log.info("event recorded", outcome=recorded.outcome, attempt=delivery.attempt)
