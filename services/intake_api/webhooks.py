"""Merchant webhooks on the intake API (docs/reference/merchant-webhooks.md): endpoints, their secrets, events,
deliveries, lists."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel

from services.intake_api.listing import (
    choice_filter,
    cursor_not_found,
    keyset_page,
    list_payments,
    parse_page,
    text_filter,
)
from services.intake_api.models import (
    DeliveryAttempt,
    Event,
    EventList,
    EventWithDeliveries,
    PaymentList,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointList,
    WebhookEndpointWithSecret,
)
from services.intake_api.outbox import OutboxRow, enqueue
from services.intake_api.routes import MAX_BODY_BYTES, POOL, SETTINGS, Handler, validated
from shared.endpoint_urls import UnsafeUrlError, check_public_url
from shared.events import RedeliverEvent
from shared.logs import get_logger
from shared.merchant_events import MERCHANT_EVENT_TYPES
from shared.web import MERCHANT, Problem, read_json
from shared.webhook_secrets import SecretBox, new_signing_secret

log = get_logger(__name__)

SECRET_BOX = web.AppKey("secret_box", SecretBox)
# Enough for any real shop; bounds the fan-out of every payment event.
MAX_ENDPOINTS_PER_MERCHANT = 20
_ENDPOINT_ID = re.compile(r"^we_[0-9a-f]{24}$")
_EVENT_ID = re.compile(r"^evt_[0-9a-f]{32}$")
_EVENT_TYPES = frozenset(MERCHANT_EVENT_TYPES)
_ENDPOINT_COLUMNS = "id, url, events, status, created_at, disabled_at"


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json")


def _endpoint_not_found() -> Problem:
    return Problem(404, "webhook-endpoint-not-found", "No such webhook endpoint.")


def _event_not_found() -> Problem:
    return Problem(404, "event-not-found", "No such event.")


def _endpoint_id(request: web.Request) -> str:
    endpoint_id = request.match_info["endpoint_id"]
    if not _ENDPOINT_ID.fullmatch(endpoint_id):
        raise _endpoint_not_found()
    return endpoint_id


def _event_id(request: web.Request) -> str:
    event_id = request.match_info["event_id"]
    if not _EVENT_ID.fullmatch(event_id):
        raise _event_not_found()
    return event_id


# --- endpoints ---------------------------------------------------------------------------------------------------


async def create_endpoint(request: web.Request) -> web.Response:
    """Register an endpoint: its URL must be http(s) and public (unless private URLs are allowed)."""
    body = validated(WebhookEndpointCreate, await read_json(request, limit=MAX_BODY_BYTES), "webhook endpoint")
    settings = request.app[SETTINGS]
    try:
        await check_public_url(body.url, allow_private=settings.webhook_allow_private_urls)
    except UnsafeUrlError as exc:
        raise Problem(
            422,
            "url-not-allowed",
            "The URL cannot receive webhooks.",
            errors=[{"field": "url", "message": str(exc)}],
        ) from None
    events = sorted(set(body.events or ["*"]))
    if "*" in events:
        events = ["*"]
    secret = new_signing_secret()
    endpoint_id = "we_" + secrets.token_hex(12)
    # The endpoints are the notifier's: it registers them, through the function it publishes for the intake.
    row = await request.app[POOL].fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM notifier.register_webhook_endpoint_v1($1, $2, $3, $4, $5, $6)",
        endpoint_id,
        request[MERCHANT],
        body.url,
        events,
        request.app[SECRET_BOX].seal(secret),
        MAX_ENDPOINTS_PER_MERCHANT,
    )
    if row is None:
        raise Problem(
            409, "too-many-endpoints", f"A merchant may have at most {MAX_ENDPOINTS_PER_MERCHANT} webhook endpoints."
        )
    log.info("webhook endpoint created", endpoint_id=endpoint_id)
    return _json(WebhookEndpointWithSecret(**dict(row), secret=secret), 201)


async def list_endpoints(request: web.Request) -> web.Response:
    rows = await request.app[POOL].fetch(
        f"SELECT {_ENDPOINT_COLUMNS} FROM notifier.webhook_endpoints_v1 WHERE merchant_id = $1 AND deleted_at IS NULL"
        " ORDER BY created_at DESC, id DESC",
        request[MERCHANT],
    )
    return _json(WebhookEndpointList(data=[WebhookEndpoint(**dict(r)) for r in rows]))


async def get_endpoint(request: web.Request) -> web.Response:
    row = await request.app[POOL].fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM notifier.webhook_endpoints_v1"
        " WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL",
        _endpoint_id(request),
        request[MERCHANT],
    )
    if row is None:
        raise _endpoint_not_found()
    return _json(WebhookEndpoint(**dict(row)))


async def delete_endpoint(request: web.Request) -> web.Response:
    """Stop delivering to it; its delivery history stays readable on the events."""
    deleted = await request.app[POOL].fetchval(
        "SELECT notifier.delete_webhook_endpoint_v1($1, $2)", _endpoint_id(request), request[MERCHANT]
    )
    if not deleted:
        raise _endpoint_not_found()
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret; the old one keeps signing beside it for WEBHOOK_SECRET_GRACE_SECONDS."""
    settings = request.app[SETTINGS]
    secret = new_signing_secret()
    grace_ends = datetime.now(UTC) + timedelta(seconds=settings.webhook_secret_grace_seconds)
    row = await request.app[POOL].fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM notifier.rotate_webhook_endpoint_secret_v1($1, $2, $3, $4)",
        _endpoint_id(request),
        request[MERCHANT],
        grace_ends,
        request.app[SECRET_BOX].seal(secret),
    )
    if row is None:
        raise _endpoint_not_found()
    log.info("webhook endpoint secret rotated", endpoint_id=row["id"])
    return _json(WebhookEndpointWithSecret(**dict(row), secret=secret))


# --- events ------------------------------------------------------------------------------------------------------


def _event(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "created": int(row["created_at"].timestamp()),
        "payment_id": row["payment_id"],
        "data": row["data"],
    }


async def list_events(request: web.Request) -> web.Response:
    """The merchant's events newest first, optionally of one type or one payment."""
    query = request.query
    page = parse_page(query)
    event_type = choice_filter(query, "type", sorted(_EVENT_TYPES))
    payment_id = text_filter(query, "payment_id", 64)
    args: list[Any] = [request[MERCHANT]]
    conditions = ["merchant_id = $1"]
    for column, value in (("type", event_type), ("payment_id", payment_id)):
        if value is not None:
            args.append(value)
            conditions.append(f"{column} = ${len(args)}")
    pool = request.app[POOL]
    for name, cursor, comparison in page.cursors():
        seq = await pool.fetchval(
            "SELECT seq FROM notifier.events_v1 WHERE id = $1 AND merchant_id = $2", cursor, request[MERCHANT]
        )
        if seq is None:
            raise cursor_not_found(name, "event")
        args.append(seq)
        conditions.append(f"seq {comparison} ${len(args)}")
    args.append(page.limit + 1)
    rows = await pool.fetch(
        f"SELECT id, type, payment_id, data, created_at FROM notifier.events_v1 WHERE {' AND '.join(conditions)}"
        f" ORDER BY seq {'ASC' if page.backwards else 'DESC'} LIMIT ${len(args)}",
        *args,
    )
    rows, has_more = keyset_page(list(rows), page)
    return _json(EventList(data=[Event(**_event(r)) for r in rows], has_more=has_more))


async def _owned_event(request: web.Request) -> asyncpg.Record:
    row = await request.app[POOL].fetchrow(
        "SELECT id, type, payment_id, data, created_at FROM notifier.events_v1 WHERE id = $1 AND merchant_id = $2",
        _event_id(request),
        request[MERCHANT],
    )
    if row is None:
        raise _event_not_found()
    return row


async def get_event(request: web.Request) -> web.Response:
    """The event with every delivery attempt, oldest first."""
    row = await _owned_event(request)
    attempts = await request.app[POOL].fetch(
        """
        SELECT endpoint_id, attempt, status_code, error, duration_ms, attempted_at, next_attempt_at
        FROM notifier.delivery_attempts_v1 WHERE event_id = $1 ORDER BY id
        """,
        row["id"],
    )
    deliveries = [DeliveryAttempt(**dict(a)) for a in attempts]
    return _json(EventWithDeliveries(**_event(row), deliveries=deliveries))


async def redeliver_event(request: web.Request) -> web.Response:
    """Deliver the event again now to every enabled endpoint subscribed to it (queued durably: 202)."""
    row = await _owned_event(request)
    command = RedeliverEvent(event_id=row["id"], merchant_id=request[MERCHANT])
    async with request.app[POOL].acquire() as conn:
        await enqueue(conn, OutboxRow.of(command, payment_id=row["payment_id"] or "", source="merchant"))
    log.info("event redelivery requested", merchant_event=row["id"])
    return _json(Event(**_event(row)), 202)


# --- payments ----------------------------------------------------------------------------------------------------


async def list_payment_page(request: web.Request) -> web.Response:
    payments, has_more = await list_payments(request.app[POOL], request[MERCHANT], request.query)
    return _json(PaymentList(data=payments, has_more=has_more))


def _needs_notifier(handler: Handler) -> Handler:
    """The notifier deploys the views and functions these routes use, and grants them to the intake; until it has
    run once they answer 503, not 500. Before then the schema may be missing (UndefinedTable, UndefinedFunction)
    or there without the intake's grants yet (InsufficientPrivilege: the roles are prepared before the notifier
    first starts)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError, asyncpg.InsufficientPrivilegeError) as exc:
            log.warning("merchant webhooks not deployed yet", error=f"{type(exc).__name__}: {exc}")
            raise Problem(
                503,
                "webhooks-unavailable",
                "Merchant webhooks are not deployed yet (the notifier deploys them); retry shortly.",
                headers={"Retry-After": "5"},
            ) from exc

    return guarded


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/webhook_endpoints", _needs_notifier(create_endpoint))
    router.add_get("/v1/webhook_endpoints", _needs_notifier(list_endpoints))
    router.add_get("/v1/webhook_endpoints/{endpoint_id}", _needs_notifier(get_endpoint))
    router.add_delete("/v1/webhook_endpoints/{endpoint_id}", _needs_notifier(delete_endpoint))
    router.add_post("/v1/webhook_endpoints/{endpoint_id}/rotate_secret", _needs_notifier(rotate_secret))
    router.add_get("/v1/events", _needs_notifier(list_events))
    router.add_get("/v1/events/{event_id}", _needs_notifier(get_event))
    router.add_post("/v1/events/{event_id}/redeliver", _needs_notifier(redeliver_event))
    router.add_get("/v1/payments", list_payment_page)
