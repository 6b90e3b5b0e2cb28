"""Recording a refund's events (services/ledger/refund_state_machine.py decides; this writes), and announcing
what changed.

Each event is written in one transaction that holds its refund's row lock: the log row (keyed by event id, so a
redelivery is a no-op), the refund's new state and, when it succeeds, the payment's `amount_refunded`, in one
statement after the lock's. A refund's request is one statement: the refund and the request's log row. An event
about a refund the ledger has not recorded yet is retried (RetryLater), never dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.ledger.refund_state_machine import RefundDecision, RefundState, decide_refund
from shared.events import (
    Envelope,
    Message,
    RefundRequested,
    RefundStatus,
    RefundStatusRecorded,
    deterministic_event_id,
)
from shared.logs import get_logger
from shared.metrics import AMOUNT_MISMATCHES, REFUND_AMOUNT, REFUND_COMPLETION_SECONDS, REFUND_CONTRADICTIONS, REFUNDS
from shared.settlement import RetryLater

log = get_logger(__name__)

Publish = Callable[[Envelope], Awaitable[None]]

REFUND_ALREADY_RECORDED = "ignored: refund already recorded"

_LOG = """
INSERT INTO ledger.payment_logs (payment_request_id, event_id, event_type, from_status, to_status, source, outcome,
                                 payload, occurred_at, refund_id, refund_from_status, refund_to_status)
SELECT p.id, $2, $3, p.status, p.status, $4, $5, $6::jsonb, $7, $8, $9, $10
FROM ledger.payment_requests p WHERE p.id = $1
ON CONFLICT (event_id) DO NOTHING
RETURNING id
"""

# A refund requested: the refund (pending, unless one is already recorded under its id or Idempotency-Key) and the
# event's log row, in one statement; answers the log row (none: the event was logged before) and whether the refund
# was created. $11..$16: the event's id, type, source, outcome if the refund was already recorded, payload, time.
_CREATE = """
WITH created AS (
    INSERT INTO ledger.refunds (id, payment_request_id, merchant_id, idempotency_key, amount, currency, reason,
                                metadata, status, provider, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, 'pending', $9, $10, $10)
    ON CONFLICT DO NOTHING
    RETURNING id
)
INSERT INTO ledger.payment_logs (payment_request_id, event_id, event_type, from_status, to_status, source, outcome,
                                 payload, occurred_at, refund_id, refund_from_status, refund_to_status)
SELECT p.id, $11, $12, p.status, p.status, $13,
       CASE WHEN EXISTS (SELECT 1 FROM created) THEN 'applied' ELSE $14 END,
       $15::jsonb, $16, $1, NULL, CASE WHEN EXISTS (SELECT 1 FROM created) THEN 'pending' END
FROM ledger.payment_requests p WHERE p.id = $2
ON CONFLICT (event_id) DO NOTHING
RETURNING refund_to_status IS NOT NULL AS created
"""

_LOCK = """
SELECT r.status, r.amount, r.currency, r.provider_refund_id, r.failure_code, r.payment_request_id, r.created_at,
       EXISTS (SELECT 1 FROM ledger.payment_logs l WHERE l.event_id = $2) AS seen
FROM ledger.refunds r WHERE r.id = $1
FOR UPDATE OF r
"""

# A refund's event decided under the refund's row lock, written in one statement: its log row ($1..$10, as _LOG;
# $10 the refund's status after it), the refund's new state if it changed ($11 whether it did; $12..$14 its failure
# code, provider refund id, and whether the status changed), and the payment's refunded total grown by $15 if the
# refund succeeded now ($16).
_CHANGE = f"""
WITH logged AS ({_LOG}), refund AS (
    UPDATE ledger.refunds
    SET status = $10, failure_code = $12, provider_refund_id = $13, updated_at = clock_timestamp(),
        completed_at = CASE WHEN $14 THEN clock_timestamp() ELSE completed_at END
    WHERE id = $8 AND $11
), refunded AS (
    UPDATE ledger.payment_requests SET amount_refunded = amount_refunded + $15, updated_at = clock_timestamp()
    WHERE id = $1 AND $16
)
SELECT count(*) FROM logged
"""


@dataclass(frozen=True)
class RefundRecorded:
    """What recording one refund event did: its log row's outcome and, if it applied, the change it made."""

    outcome: str
    refund_id: str
    from_status: RefundStatus | None
    status: RefundStatus
    amount: int
    created_at: datetime | None = None
    decision: RefundDecision | None = None

    @property
    def changed(self) -> bool:
        """A new refund, or a new status of one: what merchants hear about."""
        return self.outcome == "applied" and self.from_status is not self.status


def _payload(envelope: Envelope) -> dict[str, Any]:
    # A dict: the pool's jsonb codec encodes it (a str would be stored as one JSON string).
    return envelope.model_dump(mode="json")


async def record_refund_request(
    pool: asyncpg.Pool, envelope: Envelope, request: RefundRequested
) -> RefundRecorded | None:
    """Create the refund (pending) with its log row; None if this event was logged before.

    RetryLater if its payment is not in the ledger yet.
    """
    try:
        created = await pool.fetchval(
            _CREATE,
            request.refund_id,
            envelope.payment_id,
            request.merchant_id,
            request.idempotency_key,
            request.amount,
            request.currency,
            request.reason,
            dict(request.metadata),
            request.provider,
            request.created_at,
            envelope.id,
            envelope.type,
            envelope.source,
            REFUND_ALREADY_RECORDED,
            _payload(envelope),
            envelope.occurred_at,
        )
    except asyncpg.ForeignKeyViolationError:
        raise RetryLater(f"payment {envelope.payment_id} is not in the ledger yet") from None
    if created is None:  # no log row: the event was logged before
        return None
    outcome = "applied" if created else REFUND_ALREADY_RECORDED
    return RefundRecorded(
        outcome, request.refund_id, None, RefundStatus.PENDING, request.amount, created_at=request.created_at
    )


async def record_refund_change(
    pool: asyncpg.Pool, envelope: Envelope, message: Message, refund_id: str
) -> RefundRecorded | None:
    """Decide and apply one event to its refund under the refund's row lock; None if it was logged before.

    RetryLater if the refund is not in the ledger yet (its RefundRequested is still on its way).
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_LOCK, refund_id, envelope.id)
        if row is None:
            raise RetryLater(f"refund {refund_id} is not in the ledger yet")
        if row["seen"]:
            return None
        state = RefundState(
            status=RefundStatus(row["status"]),
            amount=row["amount"],
            currency=row["currency"],
            provider_refund_id=row["provider_refund_id"],
            failure_code=row["failure_code"],
        )
        decision = decide_refund(state, message)
        after = decision.after
        await conn.fetchval(
            _CHANGE,
            row["payment_request_id"],
            envelope.id,
            envelope.type,
            envelope.source,
            decision.outcome,
            _payload(envelope),
            envelope.occurred_at,
            refund_id,
            decision.before.status.value,
            after.status.value,
            after != decision.before,
            after.failure_code,
            after.provider_refund_id,
            after.status is not decision.before.status,
            after.amount,
            # The money went back: the payment's refunded total grows with the event that completed it, once.
            decision.completed and after.status is RefundStatus.SUCCEEDED,
        )
    return RefundRecorded(
        decision.outcome,
        refund_id,
        decision.before.status,
        decision.after.status,
        decision.after.amount,
        created_at=row["created_at"],
        decision=decision,
    )


def refund_recorded(
    envelope: Envelope, refund_id: str, from_status: RefundStatus | None, status: RefundStatus
) -> Envelope:
    """The announcement of a new refund or a refund's new status, under an id derived from the ledger event."""
    return Envelope.wrap(
        RefundStatusRecorded(
            refund_id=refund_id, from_status=from_status, status=status, ledger_event_id=str(envelope.id)
        ),
        payment_id=envelope.payment_id,
        source="ledger",
        event_id=deterministic_event_id("refund-recorded", str(envelope.id)),
    )


async def refund_recorded_before(pool: asyncpg.Pool, envelope: Envelope) -> Envelope | None:
    """For a refund event recorded on an earlier delivery: the announcement it made (or should have made) then."""
    row = await pool.fetchrow(
        """
        SELECT refund_id, refund_from_status, refund_to_status FROM ledger.payment_logs
        WHERE event_id = $1 AND outcome = 'applied' AND refund_id IS NOT NULL
          AND refund_from_status IS DISTINCT FROM refund_to_status
        """,
        envelope.id,
    )
    if row is None:
        return None
    from_status = RefundStatus(row["refund_from_status"]) if row["refund_from_status"] else None
    return refund_recorded(envelope, row["refund_id"], from_status, RefundStatus(row["refund_to_status"]))


def refund_id_of(message: Message) -> str:
    """The refund a refund event or command is about."""
    refund_id = getattr(message, "refund_id", None)
    if not isinstance(refund_id, str):
        raise TypeError(f"{message.TYPE} is not about a refund")
    return refund_id


class RefundRecorder:
    """The ledger's handling of one refund event: record it exactly once, then announce what changed."""

    def __init__(self, pool: asyncpg.Pool, publish: Publish | None = None) -> None:
        self._pool = pool
        self._publish = publish

    async def __call__(self, envelope: Envelope, message: Message) -> RefundRecorded | None:
        """Record and announce; None for an event recorded before (its announcement is made again).

        Raises RetryLater while the refund (or its payment) is not in the ledger yet. If the announcement fails
        the event is retried; its redelivery is a duplicate, announced again from its log row.
        """
        if isinstance(message, RefundRequested):
            recorded = await record_refund_request(self._pool, envelope, message)
        else:
            recorded = await record_refund_change(self._pool, envelope, message, refund_id_of(message))
        if recorded is None:
            log.info("refund event recorded before", refund_id=refund_id_of(message))
            if self._publish is not None and (again := await refund_recorded_before(self._pool, envelope)):
                await self._publish(again)
            return None
        _observe(recorded)
        log.info("refund event recorded", refund_id=recorded.refund_id, outcome=recorded.outcome)
        if self._publish is not None and recorded.changed:
            await self._publish(refund_recorded(envelope, recorded.refund_id, recorded.from_status, recorded.status))
        return recorded


def _observe(recorded: RefundRecorded) -> None:
    decision = recorded.decision
    if decision is not None and decision.contradiction:
        REFUND_CONTRADICTIONS.inc()
        log.warning("refund outcome contradicts its final status; not applied", outcome=recorded.outcome)
    if decision is not None and decision.amount_mismatch:
        AMOUNT_MISMATCHES.inc()
        log.warning("refund amount mismatch: event not applied", outcome=recorded.outcome)
    if recorded.changed:
        REFUNDS.labels(recorded.status.value).inc()
        REFUND_AMOUNT.labels(recorded.status.value).inc(recorded.amount)
        if recorded.status.is_final and recorded.created_at is not None:
            REFUND_COMPLETION_SECONDS.labels(recorded.status.value).observe(
                (datetime.now(UTC) - recorded.created_at).total_seconds()
            )
