"""The intake API's HTTP handlers (docs/reference/intake-api.md): authentication, idempotency, validation, reads,
cancel, and capture (docs/reference/capture.md)."""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from services.intake_api import store
from services.intake_api.intents import IntentOutcome, IntentWaiters
from services.intake_api.models import CaptureCreate, Payment, PaymentCreate, PaymentEventList, field_errors
from services.intake_api.settings import IntakeSettings
from shared.events import PaymentStatus
from shared.logs import bind_payment, get_logger
from shared.metrics import PAYMENTS_CREATED
from shared.web import MERCHANT, Problem, read_json

log = get_logger(__name__)

SETTINGS = web.AppKey("settings", IntakeSettings)
POOL = web.AppKey("pool", asyncpg.Pool)
WAITERS = web.AppKey("waiters", IntentWaiters)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 64 * 1024
DEFAULT_WAIT_SECONDS = 3.0
MAX_WAIT_SECONDS = 10.0
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
_PAYMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
# What asyncpg raises while PostgreSQL is down, unreachable, crashing or restarting. A crash-restart
# (`pg_ctl stop -m immediate`) is more than refused connections: statements cut mid-flight, "starting up" and
# "in recovery" answers, and protocol errors from a torn socket; each of these is a 503, not a 500.
DATABASE_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection closed under a statement (ConnectionDoesNotExistError, ...)
    asyncpg.InternalClientError,  # a reply cut short by the crash (ProtocolError, ...)
    asyncpg.OperatorInterventionError,  # the server shutting down, crashed or starting up
    asyncpg.TooManyConnectionsError,
)
# SQLSTATE classes of a server that cannot serve now rather than of a bad statement: connection (08),
# transaction rollback (40: serialization, deadlock, completion unknown), resources (53), operator
# intervention (57), system (58), internal (XX). A server that dies mid-reply may send no code at all.
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58", "XX"})


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means PostgreSQL cannot serve right now, so the client should retry (503)."""
    if isinstance(exc, DATABASE_DOWN):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or "XX"
        return sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return False


def authenticate(keys: dict[str, str], header: str | None) -> str | None:
    """The merchant owning the Bearer key, compared in constant time against every configured key."""
    scheme, _, credentials = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    # Header bytes that are not UTF-8 arrive as surrogates; encoding them one-to-one keeps the comparison exact.
    presented = credentials.strip().encode("utf-8", "surrogatepass")
    merchant = None
    for key, owner in keys.items():
        if hmac.compare_digest(key.encode(), presented):
            merchant = owner
    return merchant


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in _PUBLIC_PATHS or not request.path.startswith("/v1/"):
        return await handler(request)
    merchant = authenticate(request.app[SETTINGS].merchants_by_key, request.headers.get("Authorization"))
    if merchant is None:
        raise Problem(
            401,
            "unauthorized",
            "A valid API key is required: Authorization: Bearer <api_key>.",
            headers={"WWW-Authenticate": 'Bearer realm="paystream"'},
        )
    request[MERCHANT] = merchant
    return await handler(request)


@web.middleware
async def database_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """PostgreSQL down: 503 with Retry-After; nothing was accepted, so the client may simply retry."""
    try:
        return await handler(request)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        log.warning("database unavailable", error=type(exc).__name__)
        raise Problem(
            503,
            "database-unavailable",
            "The payment store is unavailable; retry shortly.",
            headers={"Retry-After": "2"},
        ) from exc


def _payment_response(payment: Payment, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=payment.model_dump_json(), status=status, content_type="application/json", headers=headers)


def requested_wait(prefer: str | None) -> float:
    if not prefer:
        return DEFAULT_WAIT_SECONDS
    match = _WAIT.search(prefer)
    if match is None:
        return DEFAULT_WAIT_SECONDS
    return min(MAX_WAIT_SECONDS, max(0.0, float(match.group(1))))


def validated(model: type[M], document: Any, what: str) -> M:
    """The document as `model`, or 422 with one `errors` entry per invalid field."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise Problem(
            422,
            "validation-error",
            f"The {what} has invalid fields.",
            errors=field_errors(exc.errors(include_url=False)),
        ) from exc


async def _read_request(request: web.Request) -> PaymentCreate:
    return validated(PaymentCreate, await read_json(request, limit=MAX_BODY_BYTES), "payment request")


def idempotency_key(request: web.Request) -> str:
    """The request's Idempotency-Key header; 400 when it is missing or not 1-255 printable ASCII characters."""
    key = request.headers.get("Idempotency-Key")
    if key is None or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise Problem(
            400,
            "idempotency-key-missing" if key is None else "idempotency-key-invalid",
            "An Idempotency-Key header of 1-255 printable ASCII characters is required.",
        )
    return key


async def create_payment(request: web.Request) -> web.Response:
    merchant = request[MERCHANT]
    key = idempotency_key(request)
    payment_request = await _read_request(request)
    fingerprint = payment_request.fingerprint()
    pool, settings, waiters = request.app[POOL], request.app[SETTINGS], request.app[WAITERS]

    payment_id = store.new_payment_id()
    wait_seconds = requested_wait(request.headers.get("Prefer"))
    # A request that waits asks the gateway to answer this process (its reply address rides with the
    # outbox row); one that does not wait asks for nothing, and nothing is sent here.
    reply_to = waiters.address if wait_seconds > 0 else None
    # Registered before the commit, so an intent created at once is not missed.
    future = waiters.register(payment_id) if reply_to is not None else None
    try:
        created, existing = await store.accept_payment(
            pool,
            payment_id=payment_id,
            merchant_id=merchant,
            key=key,
            request=payment_request,
            fingerprint=fingerprint,
            ttl_seconds=settings.payment_ttl_seconds,
            reply_to=reply_to,
        )
    except BaseException:
        waiters.forget(payment_id)
        raise
    if created is not None:
        bind_payment(payment_id)
        PAYMENTS_CREATED.inc()
        log.info("payment accepted", amount=created.amount, currency=created.currency)
        outcome = await waiters.wait(payment_id, future, wait_seconds) if future is not None else None
        if outcome is not None:
            created = created.model_copy(update={"checkout_url": outcome.checkout_url})
            if outcome.failure_code:
                created = created.model_copy(update={"status": "FAILED", "failure_code": outcome.failure_code})
            await _remember_intent(pool, payment_id, outcome)
        headers = {"Location": f"/v1/payments/{payment_id}", "Preference-Applied": f"wait={wait_seconds:g}"}
        return _payment_response(created, 201, headers)
    waiters.forget(payment_id)

    assert existing is not None
    bind_payment(existing.payment_id)
    if not hmac.compare_digest(existing.fingerprint, fingerprint):
        raise Problem(
            422, "idempotency-key-reuse", "This Idempotency-Key was already used with a different request body."
        )
    view = await store.get_payment(pool, merchant, existing.payment_id)
    if view is None:  # accepted under this key but purged everywhere: should not happen
        raise Problem(409, "idempotency-conflict", "The payment for this key is not readable yet; retry.")
    return _payment_response(
        view.payment, 200, {"Idempotent-Replayed": "true", "Location": f"/v1/payments/{existing.payment_id}"}
    )


async def _remember_intent(pool: asyncpg.Pool, payment_id: str, outcome: IntentOutcome) -> None:
    """Keep what the gateway said in the intake's record, so reads agree with this answer if the ledger lags.

    The payment is already committed: failing to note this must not turn the 201 into an error.
    """
    try:
        await store.remember_intent(pool, payment_id, outcome.checkout_url, outcome.failure_code)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        log.warning("could not note the intent in the intake record", error=type(exc).__name__)


async def _owned(request: web.Request) -> store.PaymentView:
    payment_id = request.match_info["payment_id"]
    if not _PAYMENT_ID.fullmatch(payment_id):  # not one of ours (and nothing to send the database)
        raise Problem(404, "payment-not-found", "No such payment.")
    view = await store.get_payment(request.app[POOL], request[MERCHANT], payment_id)
    if view is None:
        raise Problem(404, "payment-not-found", "No such payment.")
    bind_payment(view.payment.id)
    return view


async def get_payment(request: web.Request) -> web.Response:
    return _payment_response((await _owned(request)).payment, 200)


async def get_payment_events(request: web.Request) -> web.Response:
    view = await _owned(request)
    events = await store.list_events(request.app[POOL], view.payment.id)
    return web.Response(text=PaymentEventList(data=events).model_dump_json(), content_type="application/json")


async def cancel_payment(request: web.Request) -> web.Response:
    """Cancel a PENDING payment, or void an AUTHORIZED one's hold: 202, then CANCELED once the provider agrees."""
    view = await _owned(request)
    if view.payment.status.is_terminal:
        raise Problem(409, "payment-terminal", f"The payment is already {view.payment.status.value}.")
    await store.request_cancel(request.app[POOL], view)
    log.info("cancel requested", payment_id=view.payment.id, status=view.payment.status.value)
    return _payment_response(view.payment, 202)


async def _capture_request(request: web.Request) -> CaptureCreate:
    # The body is optional: none (or an empty one) takes the whole hold.
    if not request.can_read_body:
        return CaptureCreate()
    return validated(CaptureCreate, await read_json(request, limit=MAX_BODY_BYTES), "capture request")


async def capture_payment(request: web.Request) -> web.Response:
    """Take all or part of an AUTHORIZED payment's hold (docs/reference/capture.md): 202, then SUCCEEDED with
    `amount_captured` once the provider has taken it. Idempotent by Idempotency-Key, like creating a payment."""
    merchant = request[MERCHANT]
    key = idempotency_key(request)
    view = await _owned(request)
    capture = await _capture_request(request)
    fingerprint = capture.fingerprint(view.payment.id)
    pool = request.app[POOL]
    existing = await store.find_capture(pool, merchant, key)
    if existing is None:
        payment = view.payment
        if payment.status is not PaymentStatus.AUTHORIZED:
            raise Problem(
                409,
                "payment-not-capturable",
                f"Only an AUTHORIZED payment can be captured; this one is {payment.status.value}.",
            )
        if view.provider_payment_id is None:
            # Held, but the ledger has not yet recorded which intent holds it (its events crossed): in a moment.
            raise Problem(
                409,
                "payment-not-capturable",
                "The payment's hold is not recorded in full yet; retry in a moment.",
                headers={"Retry-After": "1"},
            )
        amount = payment.amount_capturable if capture.amount_to_capture is None else capture.amount_to_capture
        if amount > payment.amount_capturable:
            raise Problem(
                422,
                "amount-exceeds-capturable",
                f"At most {payment.amount_capturable} can be captured, not {amount}.",
                amount_capturable=payment.amount_capturable,
            )
        existing = await store.request_capture(
            pool, view, merchant_id=merchant, key=key, fingerprint=fingerprint, amount=amount
        )
        if existing is None:
            log.info("capture requested", amount_to_capture=amount, amount_capturable=payment.amount_capturable)
            return _payment_response(payment, 202, {"Location": f"/v1/payments/{payment.id}"})
    if not hmac.compare_digest(existing.fingerprint, fingerprint):
        raise Problem(
            422, "idempotency-key-reuse", "This Idempotency-Key was already used with a different capture request."
        )
    return _payment_response(
        view.payment, 202, {"Idempotent-Replayed": "true", "Location": f"/v1/payments/{view.payment.id}"}
    )
