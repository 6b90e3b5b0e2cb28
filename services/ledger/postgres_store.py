"""The ledger's store in PostgreSQL (schema `ledger`): each operation of the port is one statement for a batch; the
sweeps' half (SweepStore) claims due rows in the transaction that sends their commands.

A statement is atomic on its own, so no explicit transaction is needed unless work must happen before the
commit (`before_commit`: a follow-up command published with the write, all or nothing).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

import asyncpg

from services.ledger.state_machine import PaymentState
from services.ledger.store import (
    ALREADY_RECORDED,
    BeforeCommit,
    PaymentWrite,
    SendClaimed,
    StoredPayment,
    WriteResult,
)
from shared.db import dump_json
from shared.events import Envelope, PaymentRequested, PaymentStatus

_LOG_COLUMNS = """payment_request_id, event_id, event_type, from_status, to_status, source, outcome,
    late_success, payload, occurred_at"""

# New payments and their log rows. A payment that exists already gets its log row marked ALREADY_RECORDED;
# an event logged before gets nothing (ON CONFLICT on event_id). Rows are taken in id order so that two
# ledgers inserting overlapping batches wait for each other instead of deadlocking.
_RECORD_REQUESTS = f"""
WITH incoming AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::timestamptz[],
                         $14::timestamptz[], $15::uuid[], $16::text[], $17::text[], $18::text[], $19::timestamptz[],
                         $20::text[])
        WITH ORDINALITY AS r(id, merchant_id, idempotency_key, request_fingerprint, reference, amount, currency,
                             description, customer_email, metadata, return_url, cancel_url, created_at, expires_at,
                             event_id, event_type, source, payload, occurred_at, capture_method, n)
), created AS (
    INSERT INTO ledger.payment_requests
        (id, merchant_id, idempotency_key, request_fingerprint, reference, amount, currency, description,
         customer_email, metadata, return_url, cancel_url, status, created_at, updated_at, expires_at, capture_method)
    SELECT id, merchant_id, idempotency_key, request_fingerprint, reference, amount, currency, description,
           customer_email, metadata::jsonb, return_url, cancel_url, 'PENDING', created_at, created_at, expires_at,
           capture_method
    FROM incoming ORDER BY id
    ON CONFLICT DO NOTHING
    RETURNING id
)
INSERT INTO ledger.payment_logs ({_LOG_COLUMNS})
SELECT i.id, i.event_id, i.event_type, NULL, coalesce(p.status, 'PENDING'), i.source,
       CASE WHEN i.id IN (SELECT id FROM created) THEN 'applied' ELSE '{ALREADY_RECORDED}' END,
       false, i.payload::jsonb, i.occurred_at
FROM incoming i LEFT JOIN ledger.payment_requests p ON p.id = i.id
ORDER BY i.n
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id, outcome
"""

# The payments' state and version, with which of the asked events each has logged (one round trip).
_READ = """
SELECT p.id, p.status, p.amount, p.currency, p.provider, p.provider_payment_id, p.checkout_url, p.failure_code,
       p.capture_method, p.amount_captured, p.created_at, p.version,
       ARRAY(SELECT l.event_id FROM ledger.payment_logs l
             WHERE l.payment_request_id = p.id AND l.event_id = ANY($2::uuid[])) AS seen
FROM ledger.payment_requests p WHERE p.id = ANY($1::text[])
"""

# The compare-and-set of a batch, in one statement: lock each payment only if it is still at the version its
# decisions were made on (a row that another ledger changed meanwhile is re-checked after its lock and
# skipped), write the log rows of the locked payments, then apply the new state of those whose log rows were
# new, bumping the version. Locks are taken in id order, so concurrent batches do not deadlock. A payment entering
# AUTHORIZED starts its hold now: it lapses $20 seconds later (AUTHORIZATION_TTL_SECONDS), which expires_at says.
_APPLY_IF_UNCHANGED = f"""
WITH expected AS (
    SELECT * FROM unnest($1::text[], $2::bigint[]) AS e(id, version)
), unchanged AS (
    SELECT p.id FROM ledger.payment_requests p JOIN expected e ON p.id = e.id AND p.version = e.version
    ORDER BY p.id
    FOR UPDATE OF p
), logged AS (
    INSERT INTO ledger.payment_logs ({_LOG_COLUMNS})
    SELECT l.payment_request_id, l.event_id, l.event_type, l.from_status, l.to_status, l.source, l.outcome,
           l.late_success, l.payload::jsonb, l.occurred_at
    FROM unnest($3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bool[],
                $11::text[], $12::timestamptz[])
        WITH ORDINALITY AS l(payment_request_id, event_id, event_type, from_status, to_status, source, outcome,
                             late_success, payload, occurred_at, n)
    WHERE l.payment_request_id IN (SELECT id FROM unchanged)
    ORDER BY l.n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING payment_request_id, event_id
), changed AS (
    UPDATE ledger.payment_requests p
    SET status = c.status, provider = c.provider, provider_payment_id = c.provider_payment_id,
        checkout_url = c.checkout_url, failure_code = c.failure_code, amount_captured = c.amount_captured,
        version = p.version + 1,
        completed_at = CASE WHEN c.completed THEN clock_timestamp() ELSE p.completed_at END,
        authorized_at = CASE WHEN c.status = 'AUTHORIZED' AND p.status <> 'AUTHORIZED'
                             THEN c.at ELSE p.authorized_at END,
        expires_at = CASE WHEN c.status = 'AUTHORIZED' AND p.status <> 'AUTHORIZED'
                          THEN c.at + make_interval(secs => $20) ELSE p.expires_at END,
        updated_at = clock_timestamp()
    FROM (SELECT *, clock_timestamp() AS at
          FROM unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::bool[],
                      $21::bigint[])
              AS u(id, status, provider, provider_payment_id, checkout_url, failure_code, completed, amount_captured)
         ) AS c
    WHERE p.id = c.id AND p.id IN (SELECT payment_request_id FROM logged)
    RETURNING p.id
)
SELECT ARRAY(SELECT id FROM unchanged) AS matched, ARRAY(SELECT event_id FROM logged) AS logged
"""


# How long a hold lasts unless the ledger is told otherwise (AUTHORIZATION_TTL_SECONDS' default: 7 days).
DEFAULT_AUTHORIZATION_TTL_SECONDS = 604800


class PostgresLedgerStore:
    """LedgerStore over an asyncpg pool; `authorization_ttl_seconds`: how long a hold lasts once AUTHORIZED."""

    def __init__(
        self, pool: asyncpg.Pool, *, authorization_ttl_seconds: float = DEFAULT_AUTHORIZATION_TTL_SECONDS
    ) -> None:
        self._pool = pool
        self._authorization_ttl = float(authorization_ttl_seconds)

    async def record_requests(self, requests: Sequence[Envelope]) -> dict[uuid.UUID, str]:
        columns: list[list[object]] = [[] for _ in range(20)]
        for envelope in requests:
            request = envelope.message()
            assert isinstance(request, PaymentRequested)
            values = (
                envelope.payment_id,
                request.merchant_id,
                request.idempotency_key,
                request.request_fingerprint,
                request.reference,
                request.amount,
                request.currency,
                request.description,
                request.customer_email,
                dump_json(request.metadata),
                request.return_url,
                request.cancel_url,
                request.created_at,
                request.expires_at,
                envelope.id,
                envelope.type,
                envelope.source,
                envelope.model_dump_json(),
                envelope.occurred_at,
                request.capture_method,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        rows = await self._pool.fetch(_RECORD_REQUESTS, *columns)
        return {row["event_id"]: row["outcome"] for row in rows}

    async def read(self, payment_ids: Collection[str], event_ids: Collection[uuid.UUID]) -> dict[str, StoredPayment]:
        rows = await self._pool.fetch(_READ, list(payment_ids), list(event_ids))
        return {
            row["id"]: StoredPayment(
                state=PaymentState(
                    status=PaymentStatus(row["status"]),
                    amount=row["amount"],
                    currency=row["currency"],
                    provider=row["provider"],
                    provider_payment_id=row["provider_payment_id"],
                    checkout_url=row["checkout_url"],
                    failure_code=row["failure_code"],
                    capture_method=row["capture_method"],
                    amount_captured=row["amount_captured"],
                ),
                version=row["version"],
                created_at=row["created_at"],
                seen=frozenset(row["seen"]),
            )
            for row in rows
        }

    async def apply_if_unchanged(
        self, writes: Sequence[PaymentWrite], *, before_commit: BeforeCommit | None = None
    ) -> WriteResult:
        arguments = _write_arguments(writes, self._authorization_ttl)
        async with self._pool.acquire() as conn:
            if before_commit is None:
                row = await conn.fetchrow(_APPLY_IF_UNCHANGED, *arguments)
                assert row is not None
                return _result(row)
            async with conn.transaction():
                row = await conn.fetchrow(_APPLY_IF_UNCHANGED, *arguments)
                assert row is not None
                result = _result(row)
                await before_commit(result)
            return result

    async def status_change(self, event_id: uuid.UUID) -> tuple[PaymentStatus | None, PaymentStatus] | None:
        row = await self._pool.fetchrow(
            """
            SELECT from_status, to_status FROM ledger.payment_logs
            WHERE event_id = $1 AND outcome = 'applied' AND from_status IS DISTINCT FROM to_status
            """,
            event_id,
        )
        if row is None:
            return None
        return (PaymentStatus(row["from_status"]) if row["from_status"] else None), PaymentStatus(row["to_status"])

    # --- the sweeps' half of the port (SweepStore) ---------------------------------------------------------------

    async def _claim(self, claim: str, send: SendClaimed, *args: object) -> int:
        # Claimed (SKIP LOCKED) and marked in the transaction that sends: several ledgers never send one row's
        # command twice in one round, and a failed send unmarks them.
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(claim, *args)
            await send(rows)
        return len(rows)

    async def claim_expirations(self, limit: int, *, resend_after_seconds: float, send: SendClaimed) -> int:
        return await self._claim(_DUE_FOR_EXPIRY, send, limit, resend_after_seconds)

    async def claim_reconciliations(
        self, limit: int, *, older_than_seconds: float, every_seconds: float, send: SendClaimed
    ) -> int:
        return await self._claim(_DUE_FOR_RECONCILIATION, send, limit, every_seconds, older_than_seconds)

    async def claim_refund_reconciliations(
        self, limit: int, *, older_than_seconds: float, every_seconds: float, send: SendClaimed
    ) -> int:
        return await self._claim(_REFUNDS_DUE_FOR_RECONCILIATION, send, limit, every_seconds, older_than_seconds)

    async def pending_payments(self) -> tuple[int, float]:
        row = await self._pool.fetchrow(
            """
            SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
            FROM ledger.payment_requests WHERE status = 'PENDING'
            """
        )
        assert row is not None
        return int(row["pending"]), float(row["oldest"])

    async def open_authorizations(self) -> tuple[int, int]:
        row = await self._pool.fetchrow(
            """
            SELECT count(*) AS open,
                   count(*) FILTER (WHERE expires_at - now() < (expires_at - coalesce(authorized_at, created_at)) / 7)
                       AS expiring_soon
            FROM ledger.payment_requests WHERE status = 'AUTHORIZED'
            """
        )
        assert row is not None
        return int(row["open"]), int(row["expiring_soon"])

    async def pending_refunds(self) -> tuple[int, float]:
        row = await self._pool.fetchrow(
            """
            SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
            FROM ledger.refunds WHERE status = 'pending'
            """
        )
        assert row is not None
        return int(row["pending"]), float(row["oldest"])


def _result(row: asyncpg.Record) -> WriteResult:
    return WriteResult(frozenset(row["matched"]), frozenset(row["logged"]))


def _write_arguments(writes: Sequence[PaymentWrite], authorization_ttl: float) -> list[object]:
    expected: list[list[object]] = [[], []]
    logs: list[list[object]] = [[] for _ in range(10)]
    changes: list[list[object]] = [[] for _ in range(8)]
    for write in writes:
        expected[0].append(write.payment_id)
        expected[1].append(write.version)
        for entry in write.entries:
            values = (
                write.payment_id,
                entry.event_id,
                entry.event_type,
                None if entry.from_status is None else entry.from_status.value,
                entry.to_status.value,
                entry.source,
                entry.outcome,
                entry.late_success,
                dump_json(entry.payload),
                entry.occurred_at,
            )
            for column, value in zip(logs, values, strict=True):
                column.append(value)
        if write.after is not None:
            after = write.after
            values_after = (
                write.payment_id,
                after.status.value,
                after.provider,
                after.provider_payment_id,
                after.checkout_url,
                after.failure_code,
                write.completed,
                after.amount_captured,
            )
            for column, change in zip(changes, values_after, strict=True):
                column.append(change)
    return [*expected, *logs, *changes[:7], authorization_ttl, changes[7]]


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
# Refunds pending longer than $3 seconds, not asked about in the last $2: claimed like payments, with what the
# gateway_worker needs to ask the provider.
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
