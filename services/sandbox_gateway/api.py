"""The sandbox's JSON API: intents (/v1/intents...) and fault injection (/_sandbox/faults)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator, model_validator

from services.sandbox_gateway.cards import check_card_simulation
from services.sandbox_gateway.faults import Faults, FaultsUpdate, create_intent_fault
from services.sandbox_gateway.gateway import GATEWAY, SandboxGateway
from services.sandbox_gateway.intents import (
    CaptureAmountError,
    CaptureMethod,
    IdempotencyKeyReusedError,
    Intent,
    IntentClosedError,
    IntentDraft,
    IntentNotFoundError,
)
from services.sandbox_gateway.refunds import (
    RefundDraft,
    RefundKeyReusedError,
    RefundNotFoundError,
    RefundRefusedError,
)
from shared.strict_json import StrictJSONError, loads_strict
from shared.web import Problem, read_body

ModelT = TypeVar("ModelT", bound=BaseModel)

MAX_BODY_BYTES = 64 * 1024
ADMIN_PREFIX = "/_sandbox/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_guard(token: str | None) -> Middleware:
    """Guard /_sandbox/* (fault injection) with `Authorization: Bearer <SANDBOX_ADMIN_TOKEN>`.

    Without a configured token those endpoints are refused: a sandbox reachable by others must not take orders
    to break itself from anyone.
    """

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        if token is None:
            raise Problem(
                403,
                "sandbox-admin-disabled",
                "Fault injection is switched off: start the sandbox with SANDBOX_ADMIN_TOKEN set, then send "
                "Authorization: Bearer <that token>.",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise Problem(
                401,
                "unauthorized",
                "Send Authorization: Bearer <SANDBOX_ADMIN_TOKEN> to use /_sandbox/ endpoints.",
                headers={"WWW-Authenticate": 'Bearer realm="paystream-sandbox"'},
            )
        return await handler(request)

    return guard


def _absolute_http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class NewIntent(BaseModel):
    """The body of POST /v1/intents (what shared.providers.sandbox sends)."""

    model_config = ConfigDict(extra="forbid")

    amount: int = Field(strict=True, gt=0, le=99_999_999)
    currency: StrictStr = Field(pattern=r"^[A-Z]{3}$")
    reference: StrictStr = Field(min_length=1, max_length=128)
    return_url: StrictStr = Field(max_length=2048)
    cancel_url: StrictStr | None = Field(default=None, max_length=2048)
    description: StrictStr | None = Field(default=None, max_length=1000)
    customer_email: StrictStr | None = Field(default=None, max_length=254)
    merchant_name: StrictStr | None = Field(default=None, max_length=100)
    # Unix seconds no later than 9999-12-31, the last a datetime holds.
    expires_at: int | None = Field(default=None, strict=True, gt=0, le=253_402_300_799)
    capture_method: CaptureMethod = "automatic"
    metadata: dict[
        Annotated[StrictStr, Field(min_length=1, max_length=100)],
        Annotated[StrictStr, Field(max_length=1000)],
    ] = Field(default_factory=dict, max_length=50)

    @field_validator("return_url", "cancel_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _absolute_http_url(value)

    @model_validator(mode="after")
    def _holdable_text(self) -> NewIntent:
        # What Stripe refuses too, and what would come back to us in webhooks: NUL and lone surrogates.
        texts = [value for value in self.__dict__.values() if isinstance(value, str)]
        for text in [*texts, *self.metadata, *self.metadata.values()]:
            if "\x00" in text or not _encodable(text):
                raise ValueError("text must not contain NUL characters or lone surrogates")
        return self

    def draft(self) -> IntentDraft:
        return IntentDraft(**self.model_dump())


class NewRefund(BaseModel):
    """The body of POST /v1/refunds (what shared.providers.sandbox sends)."""

    model_config = ConfigDict(extra="forbid")

    intent_id: StrictStr = Field(min_length=1, max_length=64)
    amount: int | None = Field(default=None, strict=True, gt=0, le=99_999_999)
    reason: Literal["requested_by_customer", "duplicate", "fraudulent"] | None = None
    metadata: dict[
        Annotated[StrictStr, Field(min_length=1, max_length=100)],
        Annotated[StrictStr, Field(max_length=1000)],
    ] = Field(default_factory=dict, max_length=50)


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Literal["canceled", "expired"] = "canceled"


class CaptureRequest(BaseModel):
    """The body of POST /v1/intents/{id}/capture: how much of the hold to take (all of it when omitted)."""

    model_config = ConfigDict(extra="forbid")

    amount: int | None = Field(default=None, strict=True, gt=0, le=99_999_999)


class SimulateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    card_number: StrictStr = Field(max_length=64)
    exp_month: int | None = None
    exp_year: int | None = Field(default=None, ge=0, le=9999)
    cvc: StrictStr | None = Field(default=None, max_length=8)


async def _json_body(request: web.Request, *, required: bool) -> Any:
    raw = await read_body(request)
    if not raw.strip():
        if required:
            raise Problem(400, "malformed-json", "The request body must be a JSON object.")
        return {}
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise Problem(415, "unsupported-media-type", "Send the body as application/json.")
    try:
        return loads_strict(raw)
    except StrictJSONError as exc:
        raise Problem(400, "malformed-json", f"The request body is not valid JSON: {exc}") from None


def _validated(model: type[ModelT], data: Any) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Only where and what: an input (which may be a card number) is never echoed back.
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise Problem(422, "validation-error", "The request body is invalid.", errors=errors) from None


def _gateway(request: web.Request) -> SandboxGateway:
    return request.app[GATEWAY]


def _find(gateway: SandboxGateway, intent_id: str) -> Intent:
    try:
        return gateway.intent(intent_id)
    except IntentNotFoundError:
        raise Problem(404, "intent-not-found", f"No intent has the id {intent_id!r}.") from None


def _addressed(request: web.Request) -> tuple[SandboxGateway, Intent]:
    """The gateway and the intent the path names (404 if there is none)."""
    gateway = _gateway(request)
    return gateway, _find(gateway, request.match_info["intent_id"])


def _closed_problem(exc: IntentClosedError) -> Problem:
    return Problem(409, "intent-closed", f"The intent is already {exc.intent.status}.", intent=exc.intent.to_json())


def _changed(change: Callable[[], Intent]) -> web.Response:
    """The intent as `change` leaves it; 409 if it is closed to that change."""
    try:
        intent = change()
    except IntentClosedError as exc:
        raise _closed_problem(exc) from None
    return web.json_response(intent.to_json())


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all(" " <= c <= "~" for c in key):
        raise Problem(400, "invalid-idempotency-key", "Idempotency-Key must be 1-255 printable ASCII characters.")
    return key


async def create_intent(request: web.Request) -> web.Response:
    """Open an intent; the same Idempotency-Key answers the same intent (200) instead of a new one (201)."""
    gateway = _gateway(request)
    key = _idempotency_key(request)
    body = _validated(NewIntent, await _json_body(request, required=True))
    fault = create_intent_fault(gateway.faults, gateway.rng)
    if fault == "before_storing":
        raise Problem(500, "sandbox-fault", "Injected fault: failed before storing the intent.")
    try:
        answer, created = gateway.open_intent(body.draft(), key)
    except IdempotencyKeyReusedError:
        raise Problem(
            422,
            "idempotency-key-reuse",
            "This Idempotency-Key already opened an intent for another amount, currency or reference.",
        ) from None
    if gateway.faults.create_intent_delay_seconds > 0:
        # Stored but not yet answered: the window in which a caller that dies would lose the answer.
        await asyncio.sleep(gateway.faults.create_intent_delay_seconds)
    if fault == "after_storing":
        raise Problem(500, "sandbox-fault", "Injected fault: failed after storing the intent.")
    return _created(answer, created, f"/v1/intents/{answer['id']}")


def _created(answer: dict[str, object], created: bool, location: str) -> web.Response:
    """201 with its Location for what a POST made now; 200, marked as a replay, for what its key made before."""
    if created:
        return web.json_response(answer, status=201, headers={"Location": location})
    return web.json_response(answer, status=200, headers={"Idempotent-Replayed": "true"})


async def list_intents(request: web.Request) -> web.Response:
    """The intents opened for one payment (`?payment_id=`), oldest first: how a test counts them."""
    payment_id = request.query.get("payment_id")
    if not payment_id:
        raise Problem(400, "payment-id-required", "List intents with ?payment_id=<the payment's id>.")
    intents = _gateway(request).store.for_payment(payment_id)
    return web.json_response({"data": [intent.to_json() for intent in intents]})


async def get_intent(request: web.Request) -> web.Response:
    _, intent = _addressed(request)
    return web.json_response(intent.to_json())


async def cancel_intent(request: web.Request) -> web.Response:
    """Cancel (or expire) an open intent, or void a held one; again is a no-op; 409 once it succeeded or failed."""
    gateway, intent = _addressed(request)
    reason = _validated(CancelRequest, await _json_body(request, required=False)).reason
    return _changed(lambda: gateway.close(intent.id, reason))


async def capture_intent(request: web.Request) -> web.Response:
    """Take all or part of a held (authorized) intent, releasing the rest; Idempotency-Key required.

    409 unless the intent is held (captured already, voided, lapsed or never paid); 422 for more than it holds.
    """
    gateway, intent = _addressed(request)
    key = _idempotency_key(request)
    if key is None:
        raise Problem(400, "idempotency-key-missing", "A capture needs an Idempotency-Key header.")
    amount = _validated(CaptureRequest, await _json_body(request, required=False)).amount
    try:
        captured = gateway.capture(intent.id, amount, key)
    except IntentClosedError as exc:
        raise _closed_problem(exc) from None
    except CaptureAmountError as exc:
        raise Problem(422, "amount-exceeds-capturable", f"The intent holds less: {exc}.") from None
    except IdempotencyKeyReusedError:
        raise Problem(
            422, "idempotency-key-reuse", "This Idempotency-Key already captured another intent or amount."
        ) from None
    return web.json_response(captured.to_json())


async def simulate_payment(request: web.Request) -> web.Response:
    """Pay an intent headlessly, exactly as the hosted page's form would."""
    gateway, intent = _addressed(request)
    body = _validated(SimulateRequest, await _json_body(request, required=True))
    if intent.status.is_closed:
        raise _closed_problem(IntentClosedError(intent))
    today = datetime.fromtimestamp(gateway.store.now(), UTC).date()
    card = check_card_simulation(body.card_number, body.exp_month, body.exp_year, body.cvc, today)
    if not card.ok:
        errors = [{"field": name, "message": message} for name, message in card.errors.items()]
        raise Problem(422, "card-invalid", "The card details are invalid.", errors=errors)
    return _changed(lambda: gateway.pay(intent.id, card))


async def create_refund(request: web.Request) -> web.Response:
    """Refund part or all of a succeeded intent (pending; the outcome comes by webhook); the same Idempotency-Key
    answers the same refund (200) instead of a new one (201)."""
    gateway = _gateway(request)
    key = _idempotency_key(request)
    body = _validated(NewRefund, await _json_body(request, required=True))
    draft = RefundDraft(intent_id=body.intent_id, amount=body.amount, reason=body.reason, metadata=body.metadata)
    try:
        answer, created = gateway.refund(draft, key)
    except IntentNotFoundError:
        raise Problem(404, "intent-not-found", f"No intent has the id {body.intent_id!r}.") from None
    except RefundRefusedError as exc:
        raise Problem(exc.status, exc.slug, exc.detail) from None
    except RefundKeyReusedError:
        raise Problem(
            422, "idempotency-key-reuse", "This Idempotency-Key already made a refund of another intent or amount."
        ) from None
    return _created(answer, created, f"/v1/refunds/{answer['id']}")


async def get_refund(request: web.Request) -> web.Response:
    refund_id = request.match_info["refund_id"]
    try:
        refund = _gateway(request).refunds.get(refund_id)
    except RefundNotFoundError:
        raise Problem(404, "refund-not-found", f"No refund has the id {refund_id!r}.") from None
    return web.json_response(refund.to_json())


async def list_refunds(request: web.Request) -> web.Response:
    """The refunds of one intent (`?intent_id=`), oldest first: how a test counts them."""
    intent_id = request.query.get("intent_id")
    if not intent_id:
        raise Problem(400, "intent-id-required", "List refunds with ?intent_id=<the intent's id>.")
    refunds = _gateway(request).refunds.for_intent(intent_id)
    return web.json_response({"data": [refund.to_json() for refund in refunds]})


async def list_webhook_attempts(request: web.Request) -> web.Response:
    """Every delivery attempt of the intent's webhooks, in the order they finished."""
    gateway, intent = _addressed(request)
    return web.json_response({"data": [a.to_json() for a in gateway.webhooks.attempts(intent.id)]})


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(_gateway(request).faults.model_dump())


async def set_faults(request: web.Request) -> web.Response:
    """Merge the given faults into the ones in force."""
    gateway = _gateway(request)
    update = _validated(FaultsUpdate, await _json_body(request, required=True))
    gateway.faults = update.merged_into(gateway.faults)
    return web.json_response(gateway.faults.model_dump())


async def clear_faults(request: web.Request) -> web.Response:
    gateway = _gateway(request)
    gateway.faults = Faults()
    return web.json_response(gateway.faults.model_dump())


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/intents", create_intent)
    router.add_get("/v1/intents", list_intents)
    router.add_get("/v1/intents/{intent_id}", get_intent)
    router.add_post("/v1/intents/{intent_id}/cancel", cancel_intent)
    router.add_post("/v1/intents/{intent_id}/capture", capture_intent)
    router.add_post("/v1/intents/{intent_id}/simulate", simulate_payment)
    router.add_get("/v1/intents/{intent_id}/webhooks", list_webhook_attempts)
    router.add_post("/v1/refunds", create_refund)
    router.add_get("/v1/refunds", list_refunds)
    router.add_get("/v1/refunds/{refund_id}", get_refund)
    router.add_get("/_sandbox/faults", get_faults)
    router.add_post("/_sandbox/faults", set_faults)
    router.add_delete("/_sandbox/faults", clear_faults)
