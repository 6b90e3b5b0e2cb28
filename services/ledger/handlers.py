"""Recording events: per event, one transaction that writes its log row and applies the state machine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.ledger.state_machine import Decision, PaymentState, decide, intent_left_open
from shared.broker import Delivery, RetryLater
from shared.events import (
    Envelope,
    ExpirePayment,
    Message,
    PaymentRequested,
    PaymentStatus,
    Source,
    deterministic_event_id,
)
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


_LOG_COLUMNS = """payment_request_id, event_id, event_type, from_status, to_status, source, outcome,
    late_success, payload, occurred_at"""

# A new payment and its log row, in one statement: no explicit transaction, one round trip.
_RECORD_REQUEST = f"""
WITH created AS (
    INSERT INTO ledger.payment_requests
        (id, merchant_id, idempotency_key, request_fingerprint, reference, amount, currency, description,
         customer_email, metadata, return_url, cancel_url, status, created_at, updated_at, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'PENDING', $13, $13, $14)
    ON CONFLICT DO NOTHING
    RETURNING id
)
INSERT INTO ledger.payment_logs ({_LOG_COLUMNS})
SELECT $1, $15, $16, NULL,
       coalesce((SELECT status FROM ledger.payment_requests WHERE id = $1), 'PENDING'), $17,
       CASE WHEN EXISTS (SELECT 1 FROM created) THEN 'applied' ELSE 'ignored: payment already recorded' END,
       false, $18, $19
ON CONFLICT (event_id) DO NOTHING
RETURNING outcome
"""

# The payment's state as this event finds it, and whether the event was recorded before.
_READ_PAYMENT = f"""
SELECT {_STATE_COLUMNS},
       EXISTS (SELECT 1 FROM ledger.payment_logs WHERE event_id = $2) AS seen
FROM ledger.payment_requests WHERE id = $1
"""

# Compare-and-set in one statement: lock the row only if it still holds the state the decision was made
# on ($11..$15), write the log row, and apply the change only if the log row was new. If another event
# changed the payment meanwhile, nothing is written and the event is decided again on the new state.
_APPLY_IF_UNCHANGED = f"""
WITH unchanged AS (
    SELECT id FROM ledger.payment_requests
    WHERE id = $1 AND status = $11 AND provider IS NOT DISTINCT FROM $12
      AND provider_payment_id IS NOT DISTINCT FROM $13 AND checkout_url IS NOT DISTINCT FROM $14
      AND failure_code IS NOT DISTINCT FROM $15
    FOR UPDATE
), logged AS (
    INSERT INTO ledger.payment_logs ({_LOG_COLUMNS})
    SELECT id, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM unchanged
    ON CONFLICT (event_id) DO NOTHING
    RETURNING payment_request_id
), changed AS (
    UPDATE ledger.payment_requests p
    SET status = $16, provider = $17, provider_payment_id = $18, checkout_url = $19, failure_code = $20,
        completed_at = CASE WHEN $21 THEN clock_timestamp() ELSE p.completed_at END,
        updated_at = clock_timestamp()
    FROM logged WHERE p.id = logged.payment_request_id AND $22
    RETURNING p.id
)
SELECT EXISTS (SELECT 1 FROM unchanged) AS matched, EXISTS (SELECT 1 FROM logged) AS logged
"""

# Decisions made on a state that changed underneath are retried this often before the broker retries.
_MAX_DECISIONS = 10


async def _record_request(conn: asyncpg.Connection, envelope: Envelope, message: PaymentRequested) -> Recorded:
    outcome = await conn.fetchval(
        _RECORD_REQUEST,
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
        envelope.id,
        envelope.type,
        envelope.source,
        envelope.model_dump(mode="json"),
        envelope.occurred_at,
    )
    return Recorded(outcome=outcome or "duplicate event")


Publish = Callable[[Envelope], Awaitable[None]]


async def record_event(pool: asyncpg.Pool, envelope: Envelope, publish: Publish | None = None) -> Recorded:
    """Record one event exactly once and apply it; RetryLater if its payment is not known yet.

    Each event is decided by the pure state machine on the payment's current state and written with a
    compare-and-set, so two events of one payment never both apply to the same state (two round trips,
    no explicit transaction). A follow-up command (closing an intent the payment's end left open) is
    published inside a transaction with the write, so it is never lost: if the commit fails, the event is
    retried and the command sent again under the same id.
    """
    message = envelope.message()
    async with pool.acquire() as conn:
        if isinstance(message, PaymentRequested):
            return await _record_request(conn, envelope, message)
        for _ in range(_MAX_DECISIONS):
            row = await conn.fetchrow(_READ_PAYMENT, envelope.payment_id, envelope.id)
            if row is None:
                raise RetryLater(f"payment {envelope.payment_id} is not in the ledger yet")
            if row["seen"]:
                return Recorded(outcome="duplicate event")
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
            follow_up = intent_left_open(decision, message)
            if follow_up is None or publish is None:
                matched, logged = await _apply_if_unchanged(conn, envelope, decision)
            else:
                async with conn.transaction():
                    matched, logged = await _apply_if_unchanged(conn, envelope, decision)
                    if logged:
                        await _publish_follow_up(publish, envelope, follow_up)
            if matched:
                if not logged:  # a twin delivery recorded it between our read and our write
                    return Recorded(outcome="duplicate event")
                return Recorded(outcome=decision.outcome, decision=decision, created_at=row["created_at"])
        raise RetryLater(f"payment {envelope.payment_id} kept changing while this event was decided")


async def _apply_if_unchanged(conn: asyncpg.Connection, envelope: Envelope, decision: Decision) -> tuple[bool, bool]:
    before, after = decision.before, decision.after
    row = await conn.fetchrow(
        _APPLY_IF_UNCHANGED,
        envelope.payment_id,
        envelope.id,
        envelope.type,
        before.status.value,
        after.status.value,
        envelope.source,
        decision.outcome,
        decision.late_success,
        envelope.model_dump(mode="json"),
        envelope.occurred_at,
        before.status.value,
        before.provider,
        before.provider_payment_id,
        before.checkout_url,
        before.failure_code,
        after.status.value,
        after.provider,
        after.provider_payment_id,
        after.checkout_url,
        after.failure_code,
        decision.completed,
        decision.applied and after != before,
    )
    assert row is not None
    return bool(row["matched"]), bool(row["logged"])


async def _publish_follow_up(publish: Publish, envelope: Envelope, follow_up: Message) -> None:
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
