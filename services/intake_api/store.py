"""The intake's database work: accepting a payment atomically with its outbox row, and answering reads.

Reads come from the ledger (the record of truth), through the views it publishes to the intake (ledger.payments_v1,
ledger.payment_events_v1), falling back to the intake's own record while the ledger has not caught up with a
payment just accepted.
"""

from __future__ import annotations

import asyncio
import contextvars
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from opentelemetry import trace

from services.intake_api.models import Payment, PaymentCreate, PaymentEvent
from services.intake_api.outbox import OutboxRow, enqueue, insert_sql
from shared.db import dump_json
from shared.events import CancelPayment, CapturePayment, Message, PaymentRequested, PaymentStatus
from shared.payment_resource import LEDGER_COLUMNS
from shared.telemetry import trace_parent

_tracer = trace.get_tracer(__name__)

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
    # The trace context of the request that created it (W3C headers), for the commands that follow.
    trace_headers: Mapping[str, str] = field(default_factory=dict)


# Every acceptance of a batch in one statement: the values of each come as arrays, one element a payment.
_ACCEPT_MANY = """
WITH input AS (
    SELECT *
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[],
                $8::uuid[], $9::text[], $10::text[], $11::text[], $12::text[])
        WITH ORDINALITY AS i(id, merchant_id, idempotency_key, request_fingerprint, request, created_at, expires_at,
                             event_id, event_type, envelope, headers, trace_headers, n)
), existing AS (
    SELECT i.n, e.id, e.request_fingerprint
    FROM input i
    CROSS JOIN LATERAL (
        SELECT id, request_fingerprint FROM intake.payments
        WHERE merchant_id = i.merchant_id AND idempotency_key = i.idempotency_key
        UNION ALL
        -- A key whose intake record was purged is still the ledger's: it stays taken for good.
        SELECT id, request_fingerprint FROM ledger.payments_v1
        WHERE merchant_id = i.merchant_id AND idempotency_key = i.idempotency_key
        LIMIT 1
    ) e
), payment AS (
    INSERT INTO intake.payments
        (id, merchant_id, idempotency_key, request_fingerprint, request, created_at, expires_at, trace_headers)
    SELECT i.id, i.merchant_id, i.idempotency_key, i.request_fingerprint, i.request::jsonb, i.created_at,
           i.expires_at, i.trace_headers::jsonb
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM existing x WHERE x.n = i.n)
    ORDER BY i.n
    -- The same key twice in one batch: the first is written, the second finds it taken (below).
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING id
), outbox AS (
    INSERT INTO intake.outbox (event_id, payment_id, event_type, envelope, headers)
    SELECT i.event_id, i.id, i.event_type, i.envelope, i.headers::jsonb
    FROM input i JOIN payment p ON p.id = i.id
    ORDER BY i.n
    RETURNING payment_id
)
SELECT i.n, o.payment_id AS accepted_id, x.id AS existing_id, x.request_fingerprint AS existing_fingerprint
FROM input i
LEFT JOIN outbox o ON o.payment_id = i.id
LEFT JOIN existing x ON x.n = i.n
ORDER BY i.n
"""
# The most acceptances one statement writes.
MAX_BATCH = 100

_Values = tuple[Any, ...]
_Outcome = tuple[str | None, str | None, str | None]  # accepted id, existing id, existing fingerprint


class _Acceptances:
    """Writes the acceptances that arrive while one statement is at the database together, in the next one.

    A payment costs the intake a statement (a pool checkout, a round trip, a NOTIFY received), and under load many
    arrive at once: written one statement per batch, they cost one between them. Nothing waits for a batch to
    fill: the first acceptance goes at once, and those that arrive meanwhile go together when it is answered.
    Each payment is still written atomically with its outbox row, and each gets the outcome it would alone (its
    own payment, or the one already under its key: also one accepted earlier in the same statement). One exists
    per pool while it has acceptances to write (`_WRITING`), and ends with the last.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiting: list[tuple[_Values, asyncio.Future[_Outcome]]] = []
        # A context of its own: the statement belongs to no one request's trace or log lines.
        self._writer = asyncio.create_task(self._write(), context=contextvars.Context())

    async def accept(self, values: _Values) -> _Outcome:
        future: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((values, future))
        return await future

    async def _write(self) -> None:
        batch: list[tuple[_Values, asyncio.Future[_Outcome]]] = []
        try:
            await asyncio.sleep(0)  # the acceptance that started it is queued first
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                columns = [list(column) for column in zip(*(values for values, _ in batch), strict=True)]
                try:
                    rows = await self._pool.fetch(_ACCEPT_MANY, *columns)
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    batch = []
                    continue
                for (_, future), row in zip(batch, rows, strict=True):
                    if not future.done():
                        future.set_result((row["accepted_id"], row["existing_id"], row["existing_fingerprint"]))
                batch = []
        finally:
            if _WRITING.get(self._pool) is self:
                del _WRITING[self._pool]
            # Cancelled (the process stopping): nothing it held is left waiting.
            for _, future in batch + self._waiting:
                if not future.done():
                    future.set_exception(ConnectionError("the intake stopped before the payment was written"))
            self._waiting = []


# The pools whose acceptances are being written, and by what.
_WRITING: dict[asyncpg.Pool, _Acceptances] = {}


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
    commit together (with the other acceptances of its batch: `_Acceptances`). Returns (the new payment,
    None), or (None, the existing one). A concurrent request holding the same key makes the insert wait on
    the unique index and then do nothing; the first request's row is then read. `reply_to`: the reply routing
    key of the process waiting for the intent's outcome, if the request waits (it rides with the outbox row).
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
    trace_headers = {k: v for k, v in outbox_row.headers.items() if k in ("traceparent", "tracestate")}
    event_id, row_payment_id, event_type, envelope, headers = outbox_row.values()
    assert row_payment_id == payment_id
    acceptances = _WRITING.get(pool)
    if acceptances is None:
        acceptances = _WRITING[pool] = _Acceptances(pool)
    accepted_id, existing_id, existing_fingerprint = await acceptances.accept(
        (
            payment_id,
            merchant_id,
            key,
            fingerprint,
            dump_json(body),
            now,
            expires_at,
            event_id,
            event_type,
            envelope,
            dump_json(headers),
            dump_json(trace_headers),
        )
    )
    if existing_id is not None:
        assert existing_fingerprint is not None
        return None, Existing(existing_id, existing_fingerprint)
    if accepted_id is None:
        taken = await pool.fetchrow(
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
               p.expires_at AS intake_expires_at, p.trace_headers
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
        return PaymentView(Payment(**fields), provider, provider_payment_id, row["trace_headers"] or {})
    if row["intake_id"] is None:
        return None
    return PaymentView(_from_intake(row), trace_headers=row["trace_headers"] or {})


async def list_events(pool: asyncpg.Pool, payment_id: str) -> list[PaymentEvent]:
    rows = await pool.fetch(
        """
        SELECT event_id::text, event_type, from_status, to_status, source, outcome, occurred_at, recorded_at,
               refund_id, refund_to_status AS refund_status
        FROM ledger.payment_events_v1 WHERE payment_id = $1 ORDER BY id
        """,
        payment_id,
    )
    return [PaymentEvent(**dict(r)) for r in rows]


@contextmanager
def in_payment_trace(view: PaymentView, name: str) -> Iterator[None]:
    """A span continuing the payment's trace (linked to the current request's), so that a command written inside
    it carries the payment's trace context: a capture or void days later joins the trace its payment began."""
    parent, links = trace_parent(view.trace_headers)
    with _tracer.start_as_current_span(name, context=parent, links=links, attributes={"payment.id": view.payment.id}):
        yield


def _command_row(view: PaymentView, command: Message, span: str) -> OutboxRow:
    with in_payment_trace(view, span):
        return OutboxRow.of(command, payment_id=view.payment.id, source="merchant")


async def request_cancel(pool: asyncpg.Pool, view: PaymentView) -> None:
    """Queue the cancel (or, for a held payment, void) command: one statement, so it commits on its own."""
    command = CancelPayment(provider=view.provider, provider_payment_id=view.provider_payment_id)
    async with pool.acquire() as conn:
        await enqueue(conn, _command_row(view, command, "cancel requested"))


@dataclass(frozen=True)
class CaptureRecord:
    """A capture accepted under an Idempotency-Key."""

    payment_id: str
    fingerprint: str
    amount_to_capture: int


async def find_capture(pool: asyncpg.Pool, merchant_id: str, key: str) -> CaptureRecord | None:
    """The capture the merchant already asked for under this key, if any."""
    row = await pool.fetchrow(
        "SELECT payment_id, request_fingerprint, amount_to_capture FROM intake.captures"
        " WHERE merchant_id = $1 AND idempotency_key = $2",
        merchant_id,
        key,
    )
    return (
        None if row is None else CaptureRecord(row["payment_id"], row["request_fingerprint"], row["amount_to_capture"])
    )


_ACCEPT_CAPTURE = f"""
WITH capture AS (
    INSERT INTO intake.captures (merchant_id, idempotency_key, payment_id, request_fingerprint, amount_to_capture)
    VALUES ($6, $7, $2, $8, $9)
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING payment_id
), outbox AS (
    {insert_sql(1)} FROM capture
    RETURNING payment_id
)
SELECT (SELECT payment_id FROM outbox) AS accepted
"""


async def request_capture(
    pool: asyncpg.Pool, view: PaymentView, *, merchant_id: str, key: str, fingerprint: str, amount: int
) -> CaptureRecord | None:
    """Record the capture under (merchant, key) and queue its command, in one statement; None when accepted now,
    else the capture a concurrent request with the same key recorded first."""
    command = CapturePayment(
        amount_to_capture=amount,
        # The provider's idempotency key: ours per merchant and key, so a retried command never takes twice.
        idempotency_key=f"{view.payment.id}:{merchant_id}:{key}",
        provider=view.provider,
        provider_payment_id=view.provider_payment_id,
    )
    row = _command_row(view, command, "capture requested")
    accepted = await pool.fetchval(_ACCEPT_CAPTURE, *row.values(), merchant_id, key, fingerprint, amount)
    if accepted is not None:
        return None
    return await find_capture(pool, merchant_id, key)


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
    # A held payment's record stays until the hold ends: its capture or void continues the trace it keeps.
    result = await pool.execute(
        """
        DELETE FROM intake.payments p
        WHERE p.created_at < now() - make_interval(secs => $1)
          AND EXISTS (SELECT 1 FROM ledger.payments_v1 l WHERE l.id = p.id AND l.status <> 'AUTHORIZED')
        """,
        retention_hours * 3600,
    )
    await pool.execute(
        "DELETE FROM intake.captures WHERE created_at < now() - make_interval(secs => $1)", retention_hours * 3600
    )
    await pool.execute(
        "DELETE FROM intake.outbox WHERE published_at < now() - make_interval(secs => $1)", retention_hours * 3600
    )
    return int(result.split()[-1])
