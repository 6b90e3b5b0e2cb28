"""Refunds on the intake API (docs/reference/refunds.md): accepting a refund within what is left to refund, and
reading refunds.

The intake owns refund requests (`intake.refunds`); the ledger owns their status (`ledger.refunds_v1`). What a
payment has left to refund is its captured amount less every refund accepted here that the ledger has not
recorded as failed. It is checked and reserved in one transaction that holds a lock on the payment
(`pg_advisory_xact_lock`), so two requests, on one intake or on two, are never both let through on the same
money: the second waits for the first to commit and then counts it.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from opentelemetry import trace
from pydantic import BaseModel

from services.intake_api.listing import invalid, newest_first, parse_page, text_filter
from services.intake_api.models import Refund, RefundCreate, RefundList
from services.intake_api.outbox import OutboxRow, insert_sql
from services.intake_api.routes import MAX_BODY_BYTES, POOL, idempotency_key, validated
from shared.events import PaymentStatus, RefundRequested, RefundStatus
from shared.logs import bind_payment, get_logger
from shared.metrics import REFUNDS_REQUESTED
from shared.refund_resource import refund_of
from shared.telemetry import extract_context
from shared.web import MERCHANT, Problem, read_json

log = get_logger(__name__)
_tracer = trace.get_tracer(__name__)

_PAYMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REFUND_ID = re.compile(r"^re_[0-9a-f]{32}$")


def new_refund_id() -> str:
    return "re_" + secrets.token_hex(16)


# The refund resource from the intake's record, with its status as the ledger has it (pending until it does).
_REFUND_SELECT = """
SELECT r.id, r.payment_id, r.amount, r.currency, coalesce(l.status, 'pending') AS status, r.reason,
       l.failure_code, r.metadata, r.created_at, coalesce(l.updated_at, r.created_at) AS updated_at,
       coalesce(l.payment_amount_refunded, p.amount_refunded, 0) AS payment_amount_refunded
FROM intake.refunds r
LEFT JOIN ledger.refunds_v1 l ON l.id = r.id
LEFT JOIN ledger.payments_v1 p ON p.id = r.payment_id
"""

# What the payment has reserved: every refund accepted here that the ledger does not hold as failed.
_RESERVED = """
SELECT coalesce(sum(r.amount), 0) FROM intake.refunds r LEFT JOIN ledger.refunds_v1 l ON l.id = r.id
WHERE r.payment_id = $1 AND coalesce(l.status, 'pending') <> 'failed'
"""

_INSERT = f"""
WITH refund AS (
    INSERT INTO intake.refunds (id, payment_id, merchant_id, idempotency_key, request_fingerprint, amount, currency,
                                reason, metadata, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING id
)
{insert_sql(11)} FROM refund
RETURNING event_id
"""


class RefundRefused(Exception):
    """The refund cannot be accepted: the Problem to answer."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


async def _existing(conn: asyncpg.Connection, merchant_id: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, request_fingerprint FROM intake.refunds WHERE merchant_id = $1 AND idempotency_key = $2",
        merchant_id,
        key,
    )


async def _payment_trace(conn: asyncpg.Connection, payment_id: str) -> dict[str, Any] | None:
    """The trace context the payment was requested in (its outbox row's headers), while the outbox keeps it."""
    headers = await conn.fetchval(
        "SELECT headers FROM intake.outbox WHERE payment_id = $1 AND event_type = 'payment.requested' LIMIT 1",
        payment_id,
    )
    return headers if isinstance(headers, dict) else None


async def accept_refund(
    pool: asyncpg.Pool, *, merchant_id: str, payment_id: str, key: str, body: RefundCreate, fingerprint: str
) -> tuple[Refund | None, str | None]:
    """Accept a refund of the merchant's payment under (merchant, key), or find the one already accepted.

    Returns (the new refund, None) or (None, the id of the refund accepted before under this key; the caller
    compares fingerprints). Raises RefundRefused for an unknown payment (404), one not SUCCEEDED (409) or an
    amount above what is left (422). The check, the reservation (the intake's row) and the RefundRequested
    outbox row commit together, under the payment's lock.
    """
    async with pool.acquire() as conn, conn.transaction():
        # Every acceptance for this payment, on any intake process, queues here until the one before commits.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"refund:{payment_id}")
        existing = await _existing(conn, merchant_id, key)
        if existing is not None:
            return None, existing["id"] if hmac.compare_digest(existing["request_fingerprint"], fingerprint) else ""
        payment = await conn.fetchrow(
            "SELECT status, amount_captured, amount_refunded, currency, provider, provider_payment_id"
            " FROM ledger.payments_v1"
            " WHERE id = $1 AND merchant_id = $2",
            payment_id,
            merchant_id,
        )
        if payment is None:
            known = await conn.fetchval(
                "SELECT 1 FROM intake.payments WHERE id = $1 AND merchant_id = $2", payment_id, merchant_id
            )
            if known is None:
                raise RefundRefused(Problem(404, "payment-not-found", "No such payment."))
            raise RefundRefused(_not_refundable(PaymentStatus.PENDING))
        status = PaymentStatus(payment["status"])
        if status is not PaymentStatus.SUCCEEDED:
            raise RefundRefused(_not_refundable(status))
        # What was taken: the whole amount of an automatic payment, what the capture took of a manual one.
        captured = int(payment["amount_captured"])
        left = captured - int(await conn.fetchval(_RESERVED, payment_id))
        amount = body.amount if body.amount is not None else left
        if left <= 0 or amount > left:
            REFUNDS_REQUESTED.labels("exceeds_refundable").inc()
            raise RefundRefused(
                Problem(
                    422,
                    "amount-exceeds-refundable",
                    f"At most {max(left, 0)} (minor units of {payment['currency']}) of this payment is left to"
                    f" refund: {captured} captured, {captured - max(left, 0)} refunded or being refunded.",
                    refundable=max(left, 0),
                )
            )
        refund_id = new_refund_id()
        now = datetime.now(UTC)
        requested = RefundRequested(
            refund_id=refund_id,
            merchant_id=merchant_id,
            idempotency_key=key,
            request_fingerprint=fingerprint,
            amount=amount,
            currency=payment["currency"],
            reason=body.reason,
            metadata=body.metadata,
            provider=payment["provider"],
            provider_payment_id=payment["provider_payment_id"],
            created_at=now,
        )
        # The refund's events continue the payment's trace when it is still known, so its spans sit in that trace.
        parent = await _payment_trace(conn, payment_id)
        with _tracer.start_as_current_span(
            "refund requested",
            context=extract_context(parent) if parent else None,
            links=[trace.Link(trace.get_current_span().get_span_context())],
            attributes={"payment.id": payment_id, "refund.id": refund_id, "refund.amount": amount},
        ):
            row = OutboxRow.of(requested, payment_id=payment_id, source="intake")
        inserted = await conn.fetchval(
            _INSERT,
            refund_id,
            payment_id,
            merchant_id,
            key,
            fingerprint,
            amount,
            payment["currency"],
            body.reason,
            body.metadata,
            now,
            *row.values(),
        )
        if inserted is None:  # the same key was taken meanwhile by a refund of another payment
            taken = await _existing(conn, merchant_id, key)
            assert taken is not None
            return None, taken["id"] if hmac.compare_digest(taken["request_fingerprint"], fingerprint) else ""
        refund = Refund(
            id=refund_id,
            payment_id=payment_id,
            amount=amount,
            currency=payment["currency"],
            status=RefundStatus.PENDING,
            reason=body.reason,
            failure_code=None,
            metadata=body.metadata,
            created_at=now,
            updated_at=now,
            payment_amount_refunded=int(payment["amount_refunded"]),
        )
    return refund, None


def _not_refundable(status: PaymentStatus) -> Problem:
    return Problem(
        409,
        "payment-not-refundable",
        f"Only a SUCCEEDED payment can be refunded; this one is {status.value}.",
    )


async def get_refund(pool: asyncpg.Pool, merchant_id: str, refund_id: str) -> Refund | None:
    row = await pool.fetchrow(f"{_REFUND_SELECT} WHERE r.id = $1 AND r.merchant_id = $2", refund_id, merchant_id)
    return None if row is None else refund_of(row)


async def list_refunds(pool: asyncpg.Pool, merchant_id: str, query: Any) -> tuple[list[Refund], bool]:
    """The merchant's refunds newest first, optionally of one payment or one status (the list rules of payments)."""
    page = parse_page(query)
    payment_id = text_filter(query, "payment_id", 64)
    status = text_filter(query, "status", 16)
    if status is not None and status not in RefundStatus.__members__.values():
        raise invalid("status", f"must be one of {', '.join(s.value for s in RefundStatus)}")
    rows, has_more = await newest_first(
        pool,
        page,
        merchant_id,
        select=_REFUND_SELECT,
        filters=(("r.payment_id = ?", payment_id), ("coalesce(l.status, 'pending') = ?", status)),
        item="refund",
        cursor_table="intake.refunds",
        alias="r.",
    )
    return [refund_of(row) for row in rows], has_more


# --- HTTP handlers -----------------------------------------------------------------------------------------------


def _json(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json", headers=headers)


async def _read_refund_request(request: web.Request) -> RefundCreate:
    """The body, or `{}` when none was sent (every field is optional)."""
    if not request.body_exists:
        return RefundCreate()
    return validated(RefundCreate, await read_json(request, limit=MAX_BODY_BYTES), "refund request")


async def create_refund(request: web.Request) -> web.Response:
    """POST /v1/payments/{payment_id}/refunds: 201 the refund (pending), 200 a replay of the same key."""
    merchant = request[MERCHANT]
    payment_id = request.match_info["payment_id"]
    key = idempotency_key(request)
    body = await _read_refund_request(request)
    if not _PAYMENT_ID.fullmatch(payment_id):
        raise Problem(404, "payment-not-found", "No such payment.")
    bind_payment(payment_id)
    pool = request.app[POOL]
    try:
        created, existing_id = await accept_refund(
            pool,
            merchant_id=merchant,
            payment_id=payment_id,
            key=key,
            body=body,
            fingerprint=body.fingerprint(payment_id),
        )
    except RefundRefused as refused:
        raise refused.problem from None
    if created is not None:
        REFUNDS_REQUESTED.labels("accepted").inc()
        log.info("refund accepted", refund_id=created.id, amount=created.amount, currency=created.currency)
        return _json(created, 201, {"Location": f"/v1/refunds/{created.id}"})
    if not existing_id:
        raise Problem(
            422, "idempotency-key-reuse", "This Idempotency-Key was already used with a different request body."
        )
    refund = await get_refund(pool, merchant, existing_id)
    if refund is None:  # accepted under this key by this merchant: always readable
        raise Problem(409, "idempotency-conflict", "The refund for this key is not readable yet; retry.")
    return _json(refund, 200, {"Idempotent-Replayed": "true", "Location": f"/v1/refunds/{refund.id}"})


async def get_refund_resource(request: web.Request) -> web.Response:
    refund_id = request.match_info["refund_id"]
    refund = None
    if _REFUND_ID.fullmatch(refund_id):
        refund = await get_refund(request.app[POOL], request[MERCHANT], refund_id)
    if refund is None:
        raise Problem(404, "refund-not-found", "No such refund.")
    bind_payment(refund.payment_id)
    return _json(refund)


async def list_refund_page(request: web.Request) -> web.Response:
    refunds, has_more = await list_refunds(request.app[POOL], request[MERCHANT], request.query)
    return _json(RefundList(data=refunds, has_more=has_more))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/payments/{payment_id}/refunds", create_refund)
    router.add_get("/v1/refunds", list_refund_page)
    router.add_get("/v1/refunds/{refund_id}", get_refund_resource)
