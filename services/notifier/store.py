"""The notifier's database work (schema `notifier`), and its reads of the ledger's payments (ledger.payments_v1)."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from services.notifier.handlers import Attempt, DeliveryTarget
from services.notifier.rules import AttemptResult, MerchantEvent, NextStep
from shared.payment_resource import LEDGER_COLUMNS, payment_of
from shared.refund_resource import REFUND_COLUMNS, refund_of
from shared.webhook_secrets import SecretBox


def _matching_endpoints(merchant: str, event_type: str) -> str:
    """The merchant's enabled endpoints subscribed to the type (SQL over the two given parameters)."""
    return f"""
    SELECT id FROM notifier.webhook_endpoints
    WHERE merchant_id = {merchant} AND status = 'enabled' AND deleted_at IS NULL
      AND ({event_type} = ANY (events) OR '*' = ANY (events))
    """


# Each event once (in the order given: their listing order), then a pending delivery per matching endpoint;
# `pending` is every delivery of these events still pending. $5: each event's data as JSON text.
_STORE_EVENTS = f"""
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
        WITH ORDINALITY AS given (id, merchant_id, type, payment_id, data, created_at, position)
), event AS (
    INSERT INTO notifier.events (id, merchant_id, type, payment_id, data, created_at)
    SELECT id, merchant_id, type, payment_id, data::jsonb, created_at FROM given ORDER BY position
    ON CONFLICT (id) DO NOTHING
    RETURNING id, merchant_id, type
), opened AS (
    INSERT INTO notifier.deliveries (event_id, endpoint_id, status, pending_since)
    SELECT event.id, endpoint.id, 'pending', clock_timestamp()
    FROM event, LATERAL ({_matching_endpoints("event.merchant_id", "event.type")}) endpoint
    RETURNING event_id, endpoint_id
), pending AS (
    SELECT event_id, endpoint_id FROM opened
    UNION
    SELECT event_id, endpoint_id FROM notifier.deliveries WHERE event_id = ANY ($1) AND status = 'pending'
)
"""
_RECORD_EVENTS = _STORE_EVENTS + "SELECT event_id, endpoint_id FROM pending"
# The same, answering with what delivering each pending one needs of its endpoint (open_deliveries): the delivery
# targets in the statement that opened them, with no read of their own.
_OPEN_DELIVERIES = (
    _STORE_EVENTS
    + """
SELECT p.event_id, p.endpoint_id, w.url, w.status AS endpoint_status, w.deleted_at, w.secret_sealed,
       w.previous_secret_sealed, w.previous_secret_expires_at, w.failing_since
FROM pending p JOIN notifier.webhook_endpoints w ON w.id = p.endpoint_id
"""
)

_PAYMENTS = f"SELECT merchant_id, {', '.join(LEDGER_COLUMNS)} FROM ledger.payments_v1 WHERE id = ANY ($1)"
_REFUNDS = f"SELECT merchant_id, {', '.join(REFUND_COLUMNS)} FROM ledger.refunds_v1 WHERE id = ANY ($1)"

# What one delivery needs, and the event's payment as it stands now (ledger_*; null if it has none), together.
_TARGETS = f"""
SELECT e.id AS event_id, e.type, e.merchant_id, e.payment_id, e.data, e.created_at,
       w.id AS endpoint_id, w.url, w.status AS endpoint_status, w.deleted_at, w.secret_sealed,
       w.previous_secret_sealed, w.previous_secret_expires_at, w.failing_since,
       d.status AS delivery_status, {", ".join(f"p.{name} AS ledger_{name}" for name in LEDGER_COLUMNS)},
       {", ".join(f"rf.{name} AS refund_{name}" for name in REFUND_COLUMNS)}
FROM notifier.deliveries d
JOIN notifier.events e ON e.id = d.event_id
JOIN notifier.webhook_endpoints w ON w.id = d.endpoint_id
LEFT JOIN ledger.payments_v1 p ON p.id = e.payment_id AND e.type LIKE 'payment.%'
-- A refund's event carries the refund as it stands now (ledger.refunds_v1), by the id of the refund it recorded.
LEFT JOIN ledger.refunds_v1 rf ON e.type LIKE 'refund.%' AND rf.id = e.data -> 'object' ->> 'id'
"""
_TARGET = _TARGETS + "WHERE d.event_id = $1 AND d.endpoint_id = $2"


# One attempt and what it changes: the delivery's state, the attempt's row, and the endpoint's failure state
# ($9: delivered, so it is not failing; else failing since $10 unless it was already). The endpoint's row, which
# every delivery to it shares, is written only when that state changes: no lock on it to queue behind meanwhile.
_RECORD_ATTEMPT = """
WITH delivery AS (
    UPDATE notifier.deliveries
    SET attempts = attempts + 1, status = $3, next_attempt_at = $4,
        delivered_at = CASE WHEN $3 = 'delivered' THEN clock_timestamp() ELSE delivered_at END
    WHERE event_id = $1 AND endpoint_id = $2
    RETURNING attempts
), attempt AS (
    INSERT INTO notifier.delivery_attempts
        (event_id, endpoint_id, attempt, status_code, error, duration_ms, attempted_at, next_attempt_at)
    SELECT $1, $2, attempts, $5::integer, $6::text, $7::integer, $8::timestamptz, $4 FROM delivery
), endpoint AS (
    UPDATE notifier.webhook_endpoints
    SET failing_since = CASE WHEN $9::boolean THEN NULL ELSE $10::timestamptz END
    WHERE id = $2 AND CASE WHEN $9::boolean THEN failing_since IS NOT NULL ELSE failing_since IS NULL END
)
SELECT attempts FROM delivery
"""


# Many attempts (none disabling its endpoint) in one statement, as _RECORD_ATTEMPT records one. An endpoint with
# several attempts among them is not failing if any was delivered (it answers), else failing since the earliest.
_RECORD_ATTEMPTS = """
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::integer[], $6::text[],
                         $7::integer[], $8::timestamptz[], $9::boolean[], $10::timestamptz[])
        WITH ORDINALITY AS g(event_id, endpoint_id, status, next_attempt_at, status_code, error, duration_ms,
                             attempted_at, delivered, failing_since, n)
), delivery AS (
    UPDATE notifier.deliveries d
    SET attempts = d.attempts + 1, status = g.status, next_attempt_at = g.next_attempt_at,
        delivered_at = CASE WHEN g.status = 'delivered' THEN clock_timestamp() ELSE d.delivered_at END
    FROM given g
    WHERE d.event_id = g.event_id AND d.endpoint_id = g.endpoint_id
    RETURNING d.event_id, d.endpoint_id, d.attempts
), attempt AS (
    INSERT INTO notifier.delivery_attempts
        (event_id, endpoint_id, attempt, status_code, error, duration_ms, attempted_at, next_attempt_at)
    SELECT g.event_id, g.endpoint_id, d.attempts, g.status_code, g.error, g.duration_ms, g.attempted_at,
           g.next_attempt_at
    FROM given g JOIN delivery d ON d.event_id = g.event_id AND d.endpoint_id = g.endpoint_id
), endpoint AS (
    UPDATE notifier.webhook_endpoints w
    SET failing_since = CASE WHEN e.delivered THEN NULL ELSE e.failing_since END
    FROM (SELECT endpoint_id, bool_or(delivered) AS delivered, min(failing_since) AS failing_since
          FROM given GROUP BY endpoint_id) e
    WHERE w.id = e.endpoint_id
      AND CASE WHEN e.delivered THEN w.failing_since IS NOT NULL ELSE w.failing_since IS NULL END
)
SELECT g.n, d.attempts FROM given g JOIN delivery d ON d.event_id = g.event_id AND d.endpoint_id = g.endpoint_id
"""
_STATUS_AFTER = {"delivered": "delivered", "retry": "pending", "give_up": "failed", "disable": "failed"}


def _event(row: asyncpg.Record) -> MerchantEvent:
    return MerchantEvent(
        id=row["event_id"] if "event_id" in row else row["id"],
        type=row["type"],
        merchant_id=row["merchant_id"],
        payment_id=row["payment_id"],
        created=row["created_at"],
        data=row["data"],
    )


def _event_columns(events: Sequence[MerchantEvent]) -> tuple[list[Any], ...]:
    """The events as the parameters of _STORE_EVENTS, one array per column."""
    return (
        [e.id for e in events],
        [e.merchant_id for e in events],
        [e.type for e in events],
        [e.payment_id for e in events],
        [orjson.dumps(e.data).decode() for e in events],
        [e.created for e in events],
    )


def endpoint_resource(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """The webhook endpoint resource (docs/reference/merchant-webhooks.md), without its secret."""
    return {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "status": row["status"],
        "created_at": row["created_at"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "disabled_at": (
            row["disabled_at"].astimezone(UTC).isoformat().replace("+00:00", "Z") if row["disabled_at"] else None
        ),
    }


def _refund_at(row: asyncpg.Record, prefix: str = "") -> dict[str, Any]:
    return refund_of({name: row[prefix + name] for name in REFUND_COLUMNS}).model_dump(mode="json")


class PostgresNotifierStore:
    """NotifierStore on PostgreSQL; secrets are opened with the SecretBox only when signing."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox) -> None:
        self._pool = pool
        # Opened secrets by ciphertext: one Fernet decryption per endpoint secret, not one per delivery. The key
        # that opens them is in this process anyway; a rotated secret is new ciphertext, the old one ages out.
        self._open = functools.lru_cache(maxsize=1024)(box.open)

    async def current_payments(self, payment_ids: Collection[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        rows = await self._pool.fetch(_PAYMENTS, list(payment_ids))
        return {row["id"]: (row["merchant_id"], payment_of(row).model_dump(mode="json")) for row in rows}

    async def current_refunds(self, refund_ids: Collection[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        rows = await self._pool.fetch(_REFUNDS, list(refund_ids))
        return {row["id"]: (row["merchant_id"], _refund_at(row)) for row in rows}

    async def record_events(self, events: Sequence[MerchantEvent]) -> dict[str, list[str]]:
        unique = list({event.id: event for event in events}.values())  # a message delivered twice in a batch
        rows = await self._pool.fetch(_RECORD_EVENTS, *_event_columns(unique))
        pending: dict[str, list[str]] = {event.id: [] for event in unique}
        for row in rows:
            pending[row["event_id"]].append(row["endpoint_id"])
        return {event_id: sorted(endpoints) for event_id, endpoints in pending.items()}

    async def open_deliveries(self, events: Sequence[MerchantEvent]) -> dict[tuple[str, str], DeliveryTarget]:
        by_id = {event.id: event for event in events}  # a message delivered twice in a batch
        rows = await self._pool.fetch(_OPEN_DELIVERIES, *_event_columns(list(by_id.values())))
        targets = {}
        for row in rows:
            event = by_id[row["event_id"]]
            # The event's object is its payment (or refund) as current_payments (current_refunds) just read it.
            current = event.data.get("object")
            target = self._target(
                row,
                event,
                payment=current if event.type.startswith("payment.") else None,
                refund=current if event.type.startswith("refund.") else None,
                delivery_status="pending",
            )
            if target is not None:
                targets[(event.id, target.endpoint_id)] = target
        return targets

    async def reopen_deliveries(self, event_id: str, merchant_id: str) -> tuple[MerchantEvent, list[str]] | None:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM notifier.events WHERE id = $1 AND merchant_id = $2", event_id, merchant_id
            )
            if row is None:
                return None
            rows = await conn.fetch(
                f"""
                INSERT INTO notifier.deliveries (event_id, endpoint_id, status, pending_since)
                SELECT $3, endpoint.id, 'pending', clock_timestamp() FROM ({_matching_endpoints("$1", "$2")}) endpoint
                ON CONFLICT (event_id, endpoint_id) DO UPDATE
                    SET status = 'pending', pending_since = clock_timestamp(), next_attempt_at = NULL
                RETURNING endpoint_id
                """,
                merchant_id,
                row["type"],
                event_id,
            )
        return _event(row), sorted(r["endpoint_id"] for r in rows)

    async def delivery_target(self, event_id: str, endpoint_id: str, now: datetime) -> DeliveryTarget | None:
        row = await self._pool.fetchrow(_TARGET, event_id, endpoint_id)
        return None if row is None else self._stored_target(row)

    async def record_attempts(self, attempts: Sequence[Attempt]) -> list[int]:
        columns: list[list[object]] = [[] for _ in range(10)]
        for a in attempts:
            values = (
                a.target.event.id,
                a.target.endpoint_id,
                _STATUS_AFTER[a.step.kind],
                a.step.next_attempt_at(a.attempted_at),
                a.result.status_code,
                a.result.error,
                a.result.duration_ms,
                a.attempted_at,
                a.step.kind == "delivered",
                a.step.failing_since,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        rows = await self._pool.fetch(_RECORD_ATTEMPTS, *columns)
        numbers = {row["n"]: int(row["attempts"]) for row in rows}
        # A delivery whose row is gone (its endpoint deleted meanwhile) has no number: counted as its first.
        return [numbers.get(n, 1) for n in range(1, len(attempts) + 1)]

    def _stored_target(self, row: asyncpg.Record) -> DeliveryTarget | None:
        """A target as _TARGETS reads it: the event as stored, its payment or refund as the ledger has it now."""
        return self._target(
            row,
            _event(row),
            payment=None if row["ledger_id"] is None else payment_of(row, "ledger_").model_dump(mode="json"),
            refund=None if row["refund_id"] is None else _refund_at(row, "refund_"),
            delivery_status=row["delivery_status"],
        )

    def _target(
        self,
        row: asyncpg.Record,
        event: MerchantEvent,
        *,
        payment: dict[str, Any] | None,
        refund: dict[str, Any] | None,
        delivery_status: str,
    ) -> DeliveryTarget | None:
        """The target from a row of its endpoint's columns (None: the endpoint is deleted)."""
        if row["deleted_at"] is not None:
            return None
        previous = row["previous_secret_sealed"]
        return DeliveryTarget(
            event=event,
            endpoint_id=row["endpoint_id"],
            url=row["url"],
            endpoint_enabled=row["endpoint_status"] == "enabled",
            delivery_status=delivery_status,
            secret=self._open(row["secret_sealed"]),
            previous_secret=self._open(previous) if previous else None,
            previous_secret_expires_at=row["previous_secret_expires_at"],
            failing_since=row["failing_since"],
            payment=payment,
            refund=refund,
        )

    async def record_attempt(
        self, target: DeliveryTarget, result: AttemptResult, step: NextStep, attempted_at: datetime
    ) -> int:
        next_at = step.next_attempt_at(attempted_at)
        status = _STATUS_AFTER[step.kind]
        arguments = (
            target.event.id,
            target.endpoint_id,
            status,
            next_at,
            result.status_code,
            result.error,
            result.duration_ms,
            attempted_at,
        )
        if step.kind != "disable":
            # One statement, so atomic without a transaction: one round trip where BEGIN, three statements and
            # COMMIT were five.
            return int(
                await self._pool.fetchval(_RECORD_ATTEMPT, *arguments, step.kind == "delivered", step.failing_since)
            )
        async with self._pool.acquire() as conn, conn.transaction():
            attempt = await conn.fetchval(_RECORD_ATTEMPT, *arguments, False, step.failing_since)
            await conn.execute(
                """
                UPDATE notifier.webhook_endpoints
                SET status = 'disabled', disabled_at = clock_timestamp()
                WHERE id = $1
                """,
                target.endpoint_id,
            )
            # Nothing more goes to it: its other deliveries stop counting as waiting.
            await conn.execute(
                "UPDATE notifier.deliveries SET status = 'failed', next_attempt_at = NULL"
                " WHERE endpoint_id = $1 AND status = 'pending'",
                target.endpoint_id,
            )
        return int(attempt)

    async def endpoint_resource(self, endpoint_id: str) -> tuple[str, dict[str, Any]]:
        row = await self._pool.fetchrow("SELECT * FROM notifier.webhook_endpoints WHERE id = $1", endpoint_id)
        assert row is not None
        return row["merchant_id"], endpoint_resource(row)

    async def oldest_undelivered_age(self) -> float:
        age = await self._pool.fetchval(
            "SELECT extract(epoch FROM clock_timestamp() - min(pending_since))"
            " FROM notifier.deliveries WHERE status = 'pending'"
        )
        return float(age or 0.0)
