"""The Stripe provider: Checkout Sessions over Stripe's REST API (aiohttp, no SDK), both halves.

Calling: form-encoded requests in Stripe's bracket notation, Bearer auth, JSON answers, every request pinned to
STRIPE_API_VERSION so that the shapes we read do not follow the account's default version.
Reading webhooks: `Stripe-Signature` (`t=`, one or more `v1=`), checked by the base class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from shared.events import PaymentStatus, RefundStatus
from shared.logs import get_logger
from shared.providers.base import (
    CapturingProvider,
    IntentRequest,
    PaymentProvider,
    ProviderIntent,
    ProviderRefund,
    RefundRequest,
    RefundWebhookEvent,
    WebhookEvent,
    event_time,
    webhook_envelope,
)
from shared.providers.errors import InvalidWebhookError, NoSuchIntentError, PermanentGatewayError
from shared.providers.http import request_json

if TYPE_CHECKING:
    from shared.providers.settings import ProviderSettings, StripeWebhookSettings

log = get_logger(__name__)

# The one API version every request is made with (the `Stripe-Version` header). The webhook endpoint must be
# created with the same version (docs/how-to/stripe.md): an event's shape follows its endpoint's version, not this.
STRIPE_API_VERSION = "2026-10-28.endive"

# Stripe's limits on metadata: 50 keys, key names of at most 40 characters, values of at most 500.
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500
# W3C Trace Context: a tracestate list-member longer than this is the first to go when the header is cut down.
TRACESTATE_MEMBER_MAX_LENGTH = 128

# Stands for "whatever the session's payment_status is" in the tables below.
ANY = "*"

# (session status, session payment_status) → our status. Anything not listed is unknown and refused
# loudly (PermanentGatewayError), never guessed.
STRIPE_SESSION_STATUS_MAP: dict[tuple[str, str], PaymentStatus] = {
    ("open", ANY): PaymentStatus.PENDING,
    ("complete", "paid"): PaymentStatus.SUCCEEDED,
    ("complete", "no_payment_required"): PaymentStatus.SUCCEEDED,
    # Complete but unpaid: an asynchronous method (e.g. a bank debit) is still settling.
    ("complete", "unpaid"): PaymentStatus.PENDING,
    ("expired", ANY): PaymentStatus.EXPIRED,
}

# A complete session whose payment_status is `unpaid` is settled by its PaymentIntent (read with
# `expand[]=payment_intent`): an asynchronous method that failed leaves the session `complete`/`unpaid` for good
# (payment_status has no failed value), and only the PaymentIntent says it failed.
STRIPE_INTENT_STATUS_MAP: dict[str, PaymentStatus] = {
    "processing": PaymentStatus.PENDING,
    "requires_action": PaymentStatus.PENDING,
    "requires_confirmation": PaymentStatus.PENDING,
    # Authorized, not yet captured (capture_method manual): the money is held, not taken.
    "requires_capture": PaymentStatus.AUTHORIZED,
    # The attempt failed and the completed session cannot take another one.
    "requires_payment_method": PaymentStatus.FAILED,
    "canceled": PaymentStatus.FAILED,
    # The session's payment_status lags its PaymentIntent by a moment.
    "succeeded": PaymentStatus.SUCCEEDED,
}

# (event type, session payment_status) → (our status, failure code), or None: acknowledged, not acted on.
# Event types not listed at all are acknowledged and ignored; a listed type with an unlisted
# payment_status is not an event we understand (InvalidWebhookError).
STRIPE_EVENT_MAP: dict[tuple[str, str], tuple[PaymentStatus, str | None] | None] = {
    ("checkout.session.completed", "paid"): (PaymentStatus.SUCCEEDED, None),
    ("checkout.session.completed", "no_payment_required"): (PaymentStatus.SUCCEEDED, None),
    # An asynchronous method: the outcome arrives later as async_payment_succeeded/failed.
    ("checkout.session.completed", "unpaid"): None,
    ("checkout.session.async_payment_succeeded", ANY): (PaymentStatus.SUCCEEDED, None),
    ("checkout.session.async_payment_failed", ANY): (PaymentStatus.FAILED, "payment_failed"),
    ("checkout.session.expired", ANY): (PaymentStatus.EXPIRED, "expired"),
}
STRIPE_EVENT_TYPES = frozenset(event_type for event_type, _ in STRIPE_EVENT_MAP)

# A Refund's status as ours (docs/reference/refunds.md). `requires_action` waits for the customer (some payment
# methods), `canceled` ends it without the money moving: for us, failed.
STRIPE_REFUND_STATUS_MAP: dict[str, RefundStatus] = {
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.PENDING,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.FAILED,
}
# The events that carry a Refund object (`refund.failed` is newer than the last full spec: SDK only). A pending
# refund's event is acknowledged and not acted on; its outcome comes in a later one.
STRIPE_REFUND_EVENT_TYPES = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
# A manual-capture PaymentIntent's events (docs/reference/capture.md): the hold, its capture, its void. Those of a
# PaymentIntent that captures at once are acknowledged and not acted on: its session's events report it.
STRIPE_HOLD_EVENTS: dict[str, PaymentStatus] = {
    "payment_intent.amount_capturable_updated": PaymentStatus.AUTHORIZED,
    "payment_intent.succeeded": PaymentStatus.SUCCEEDED,
    "payment_intent.canceled": PaymentStatus.CANCELED,
}
# Why a held PaymentIntent was canceled → how the hold ended for us: released on our (or the merchant's) word, or
# lapsed (we void a hold past AUTHORIZATION_TTL_SECONDS as `abandoned`; Stripe's own lapse says `automatic` or
# `expired`).
LAPSED_HOLD_REASONS = frozenset({"abandoned", "automatic", "expired"})
VOID_REASONS: dict[str, str] = {"canceled": "requested_by_customer", "expired": "abandoned"}

# Every read of a session brings its PaymentIntent along (see STRIPE_INTENT_STATUS_MAP).
SESSION_READ_PARAMS: dict[str, Any] = {"expand": ["payment_intent"]}

# Stripe accepts a session `expires_at` between 30 minutes and 24 hours after its own "now".
SESSION_MIN_LIFETIME_SECONDS = 30 * 60
SESSION_MAX_LIFETIME_SECONDS = 24 * 60 * 60
# Room for network latency and clock skew between us and Stripe, at both ends of the window.
CLOCK_MARGIN_SECONDS = 60
# When the requested expiry lies outside the window it moves by whole steps of this size, so that
# retries of the same create (same Idempotency-Key) send the same value: Stripe refuses a reused key
# whose parameters differ.
EXPIRY_STEP_SECONDS = 30 * 60


def map_session_status(status: str | None, payment_status: str | None) -> PaymentStatus:
    """A Checkout Session's (status, payment_status) as our status; unknown → PermanentGatewayError."""
    key_status = status or ""
    mapped = STRIPE_SESSION_STATUS_MAP.get((key_status, payment_status or ""))
    if mapped is None:
        mapped = STRIPE_SESSION_STATUS_MAP.get((key_status, ANY))
    if mapped is None:
        raise PermanentGatewayError(
            f"unknown stripe checkout session status {status!r} / payment_status {payment_status!r}"
        )
    return mapped


def session_expires_at(requested: datetime, now: datetime) -> int:
    """The `expires_at` (unix seconds) to send Stripe: the requested expiry, moved into Stripe's window.

    The window is [now + 30 min, now + 24 h], narrowed by CLOCK_MARGIN_SECONDS at each end. A value
    outside it moves by whole EXPIRY_STEP_SECONDS from the requested time (not to `now + 30 min`), so
    the result stays the same across the retries of one create, as Stripe's idempotency requires.
    """
    wanted = int(requested.timestamp())
    current = now.timestamp()
    earliest = current + SESSION_MIN_LIFETIME_SECONDS + CLOCK_MARGIN_SECONDS
    latest = current + SESSION_MAX_LIFETIME_SECONDS - CLOCK_MARGIN_SECONDS
    if wanted < earliest:
        return wanted + math.ceil((earliest - wanted) / EXPIRY_STEP_SECONDS) * EXPIRY_STEP_SECONDS
    if wanted > latest:
        return wanted - math.ceil((wanted - latest) / EXPIRY_STEP_SECONDS) * EXPIRY_STEP_SECONDS
    return wanted


def with_payment_id(url: str, payment_id: str) -> str:
    """`url` with `payment_id=<id>` in its query; the rest of the query and the fragment kept as they are."""
    parts = urlsplit(url)
    kept = [item for item in parts.query.split("&") if item and item.split("=", 1)[0] != "payment_id"]
    kept.append(f"payment_id={quote(payment_id, safe='')}")
    return urlunsplit(parts._replace(query="&".join(kept)))


def encode_form(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Nested params as Stripe's form fields: `a[b][0][c]=v`; None is left out, booleans are true/false."""
    fields: list[tuple[str, str]] = []

    def add(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                add(f"{key}[{sub_key}]", sub_value)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                add(f"{key}[{index}]", item)
        elif isinstance(value, bool):
            fields.append((key, "true" if value else "false"))
        else:
            fields.append((key, str(value)))

    for name, value in params.items():
        add(name, value)
    return fields


def stripe_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """`metadata` cut to what Stripe accepts, so that carrying it can never fail the payment.

    Stripe refuses the whole request (400) over one value longer than 500 characters, a key longer than 40 or
    more than 50 keys. A too long `tracestate` loses list-members as W3C Trace Context allows (members over 128
    characters first, then from the end); any other key or value over the limits is left out, and so are keys
    past the 50th. The result depends on the input alone, so retries of one create send identical parameters.
    """
    kept: dict[str, str] = {}
    for key, value in metadata.items():
        if len(kept) == METADATA_MAX_KEYS:
            break
        if len(key) > METADATA_MAX_KEY_LENGTH or "[" in key or "]" in key:
            continue
        if key == "tracestate" and len(value) > METADATA_MAX_VALUE_LENGTH:
            value = _shortened_tracestate(value)
        if value and len(value) <= METADATA_MAX_VALUE_LENGTH:
            kept[key] = value
    return kept


def _shortened_tracestate(value: str) -> str:
    members = [m.strip() for m in value.split(",") if m.strip()]
    members = [m for m in members if len(m) <= TRACESTATE_MEMBER_MAX_LENGTH]
    while members and len(",".join(members)) > METADATA_MAX_VALUE_LENGTH:
        members.pop()
    return ",".join(members)


class _PaymentError(BaseModel):
    """A PaymentIntent's `last_payment_error`: why its latest attempt failed."""

    model_config = ConfigDict(extra="allow")
    type: str
    code: str | None = None
    decline_code: str | None = None


class _PaymentIntent(BaseModel):
    """The fields of a PaymentIntent we read: when a session is fetched with `expand[]=payment_intent`, and in the
    `payment_intent.*` events of a manual capture."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["payment_intent"]
    status: str
    last_payment_error: _PaymentError | None = None
    amount: StrictInt | None = None
    amount_received: StrictInt | None = None
    currency: str | None = None
    capture_method: str | None = None
    cancellation_reason: str | None = None
    metadata: dict[str, str] | None = None

    @property
    def manual(self) -> bool:
        return self.capture_method == "manual"


class _Session(BaseModel):
    """The fields of a Checkout Session we read; Stripe sends many more."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["checkout.session"] = "checkout.session"
    status: str | None = None
    payment_status: str | None = None
    amount_total: StrictInt | None = None  # integer minor units, never a string
    currency: str | None = None
    url: str | None = None
    client_reference_id: str | None = None
    metadata: dict[str, str] | None = None
    # An id, or the object itself when expanded; null until the customer confirms the payment.
    payment_intent: _PaymentIntent | str | None = None


class _Refund(BaseModel):
    """The fields of a Refund we read."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["refund"] = "refund"
    amount: StrictInt
    currency: str
    status: str | None = None
    metadata: dict[str, str] | None = None

    @property
    def failure_reason(self) -> str | None:
        """Why a failed refund failed. Stripe sends the field only then (its SDK's Refund declares it, its
        published example, of a refund that did not fail, leaves it out), so it is read as an extra field."""
        value = (self.model_extra or {}).get("failure_reason")
        return value if isinstance(value, str) and value else None


_ObjectT = TypeVar("_ObjectT", bound=BaseModel)


class _EventData(BaseModel):
    object: dict[str, Any]


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: StrictStr
    type: StrictStr
    created: StrictInt
    data: _EventData
    # The version the event is written in: its webhook endpoint's, which should be STRIPE_API_VERSION.
    api_version: str | None = None


def _carried(event: _Event, model: type[_ObjectT], what: str) -> _ObjectT:
    """The event's object read as `model`; one that is not that Stripe object makes the webhook invalid."""
    try:
        return model.model_validate(event.data.object)
    except ValidationError as exc:
        raise InvalidWebhookError(f"{event.type} does not carry {what} ({exc.error_count()} errors)") from None


# Every Stripe object the adapter reads, by Stripe's name for it, with the model it is read through. The provider
# contract suite holds each model to Stripe's published shape: a field read here that Stripe does not send fails it.
STRIPE_OBJECT_MODELS: dict[str, type[BaseModel]] = {
    "checkout.session": _Session,
    "payment_intent": _PaymentIntent,
    "event": _Event,
    "refund": _Refund,
}


def hold_ended(intent: _PaymentIntent) -> tuple[PaymentStatus, str | None]:
    """A canceled manual-capture PaymentIntent: its hold voided (CANCELED) or lapsed (EXPIRED)."""
    if intent.cancellation_reason in LAPSED_HOLD_REASONS:
        return PaymentStatus.EXPIRED, "authorization_expired"
    return PaymentStatus.CANCELED, None


def session_outcome(session: _Session) -> tuple[PaymentStatus, str | None]:
    """A session's status and failure code, its PaymentIntent deciding when the session is complete but unpaid."""
    status = map_session_status(session.status, session.payment_status)
    if status is PaymentStatus.EXPIRED:
        return status, "expired"
    intent = session.payment_intent
    if status is not PaymentStatus.PENDING or session.status != "complete" or not isinstance(intent, _PaymentIntent):
        return status, None
    mapped = STRIPE_INTENT_STATUS_MAP.get(intent.status)
    if mapped is None:
        raise PermanentGatewayError(f"unknown stripe payment_intent status {intent.status!r} of session {session.id}")
    if intent.status == "canceled" and intent.manual:
        return hold_ended(intent)
    if mapped is not PaymentStatus.FAILED:
        return mapped, None
    if intent.status == "canceled":
        return mapped, "canceled"
    error = intent.last_payment_error
    return mapped, (error.decline_code or error.code if error else None) or "payment_failed"


def _refund_failure_code(refund: _Refund) -> str:
    """Why a refund failed: Stripe's failure_reason (`expired_or_canceled_card`, ...), `canceled` for one canceled."""
    if refund.status == "canceled":
        return "canceled"
    return refund.failure_reason or "unknown"


class StripeProvider(PaymentProvider, CapturingProvider):
    """Checkout Sessions, manual capture through their PaymentIntents (hold, capture, void), and refunds (a
    RefundingProvider)."""

    name = "stripe"
    signature_header_name = "Stripe-Signature"

    def __init__(
        self,
        api_key: str,
        secrets: Sequence[str],
        *,
        api_base: str = "https://api.stripe.com",
        timeout_seconds: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api_key = api_key
        self._secrets = list(secrets)
        self._base_url = api_base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> StripeProvider:
        """Configured from STRIPE_API_KEY, STRIPE_WEBHOOK_SECRET and STRIPE_API_BASE."""
        if settings.stripe_api_key is None or not settings.stripe_api_key.get_secret_value():
            raise ValueError("STRIPE_API_KEY must be set when the stripe provider is used")
        return cls(
            settings.stripe_api_key.get_secret_value(),
            # No secret at all is allowed: then every webhook fails verification.
            [s.get_secret_value() for s in settings.stripe_webhook_secret or []],
            api_base=settings.stripe_api_base,
            timeout_seconds=settings.gateway_timeout_seconds,
        )

    @classmethod
    def for_webhooks(cls, settings: StripeWebhookSettings) -> StripeProvider:
        """Only the webhook half (verify, parse): the receiver needs the secrets, not the API key."""
        return cls(
            "", [s.get_secret_value() for s in settings.stripe_webhook_secret or []], api_base=settings.stripe_api_base
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._api_key}", "Stripe-Version": STRIPE_API_VERSION},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        method: Literal["GET", "POST"],
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One request to Stripe's API (`path` like `/v1/refunds`), pinned to STRIPE_API_VERSION; its JSON answer.

        `params` go form-encoded (the body of a POST, the query of a GET). A POST must carry an
        `idempotency_key`, so that its retries are one request to Stripe. A 409 (a request with the same key
        is still running) is transient, and `Stripe-Should-Retry` overrides the status either way, as in
        Stripe's own SDK. Raises TransientGatewayError or PermanentGatewayError.
        """
        fields = encode_form(params or {})
        extra: dict[str, Any] = {}
        if method == "POST":
            if not idempotency_key:
                raise ValueError("every POST to Stripe carries an Idempotency-Key")
            extra = {"data": fields, "headers": {"Idempotency-Key": idempotency_key}}
        elif fields:
            extra = {"params": fields}
        return await request_json(
            self._client(),
            method,
            f"{self._base_url}{path}",
            transient_statuses=(409,),
            retry_advice_header="Stripe-Should-Retry",
            **extra,
        )

    @staticmethod
    def _session_path(session_id: str, action: str = "") -> str:
        return f"/v1/checkout/sessions/{quote(session_id, safe='')}{action}"

    @staticmethod
    def _parse_session(payload: dict[str, Any]) -> _Session:
        try:
            return _Session.model_validate(payload)
        except ValidationError as exc:
            raise PermanentGatewayError(
                f"stripe answered with something that is not a checkout session ({exc.error_count()} errors)"
            ) from None

    @classmethod
    def _intent(cls, payload: dict[str, Any]) -> ProviderIntent:
        session = cls._parse_session(payload)
        status, failure_code = session_outcome(session)
        if session.amount_total is None or session.currency is None:
            raise PermanentGatewayError(f"stripe checkout session {session.id} has no amount_total/currency")
        intent = session.payment_intent
        captured = None
        if status is PaymentStatus.SUCCEEDED and isinstance(intent, _PaymentIntent) and intent.manual:
            # A capture may take less than was held: what the PaymentIntent received is what was taken.
            captured = intent.amount_received
        return ProviderIntent(
            provider_payment_id=session.id,
            status=status,
            amount=session.amount_total,
            currency=session.currency.upper(),
            checkout_url=session.url,
            failure_code=failure_code,
            amount_captured=captured,
        )

    @staticmethod
    def _session_metadata(request: IntentRequest) -> dict[str, str]:
        # Our payment id first, so that no cut to Stripe's limits can drop it; the trace context after it, cut to
        # those limits, so that it can never be why Stripe refuses the create.
        metadata = {"payment_id": request.payment_id}
        metadata.update((key, value) for key, value in request.metadata.items() if key != "payment_id")
        return stripe_metadata(metadata)

    def checkout_session_params(self, request: IntentRequest) -> dict[str, Any]:
        """The create-session parameters for a request, before form encoding (depends on it and now only)."""
        return {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount,
                        "product_data": {"name": request.description or request.reference},
                    },
                    "quantity": 1,
                }
            ],
            "success_url": with_payment_id(request.return_url, request.payment_id),
            "cancel_url": with_payment_id(request.cancel_url or request.return_url, request.payment_id),
            "client_reference_id": request.payment_id,
            "metadata": self._session_metadata(request),
            "payment_intent_data": {
                "metadata": {"payment_id": request.payment_id},
                # Only a manual payment says so: an automatic one's parameters stay as they always were.
                "capture_method": "manual" if request.capture_method == "manual" else None,
            },
            "customer_email": request.customer_email,
            "expires_at": session_expires_at(request.expires_at, self._clock()),
        }

    async def create_intent(self, request: IntentRequest) -> ProviderIntent:
        payload = await self.call(
            "POST",
            "/v1/checkout/sessions",
            self.checkout_session_params(request),
            idempotency_key=request.payment_id,
        )
        return self._intent(payload)

    async def retrieve_intent(self, provider_payment_id: str) -> ProviderIntent:
        # With its PaymentIntent: a complete session that is still `unpaid` may have failed, and only the
        # PaymentIntent says so.
        return self._intent(await self._read_session(provider_payment_id))

    async def _read_session(self, provider_payment_id: str) -> dict[str, Any]:
        """The session; NoSuchIntentError if Stripe has none of this id (404 `resource_missing`)."""
        try:
            return await self.call("GET", self._session_path(provider_payment_id), SESSION_READ_PARAMS)
        except PermanentGatewayError as exc:
            if exc.status == 404:
                raise NoSuchIntentError(f"stripe has no checkout session {provider_payment_id}: {exc}") from exc
            raise

    # No find_intent: Stripe cannot be asked for a session by our payment id (Checkout Sessions are listed by
    # payment_intent, customer or payment link, never by client_reference_id, and Search does not cover them), and
    # an open session has no PaymentIntent to search for yet. A cancel that names no session closes the payment on
    # our side; the session is then expired by the id the ledger records for it (intent_left_open in
    # services/ledger/state_machine.py), whichever of the two arrives first.

    async def _held_intent_id(self, provider_payment_id: str) -> tuple[ProviderIntent, str | None]:
        """The session's truth, and the id of its PaymentIntent when that holds the money."""
        payload = await self.call("GET", self._session_path(provider_payment_id), SESSION_READ_PARAMS)
        truth = self._intent(payload)
        intent = self._parse_session(payload).payment_intent
        if truth.status is PaymentStatus.AUTHORIZED and isinstance(intent, _PaymentIntent):
            return truth, intent.id
        return truth, None

    async def capture(self, provider_payment_id: str, amount: int, idempotency_key: str) -> ProviderIntent:
        """Capture the session's held PaymentIntent (`amount_to_capture`), then read the session's truth."""
        truth, held = await self._held_intent_id(provider_payment_id)
        if held is None:
            return truth  # not held (captured already, voided, lapsed, unpaid): that is the answer
        try:
            await self.call(
                "POST",
                f"/v1/payment_intents/{quote(held, safe='')}/capture",
                {"amount_to_capture": amount},
                idempotency_key=idempotency_key,
            )
        except PermanentGatewayError as exc:
            # Refused (another capture or a void came first, or too much): the session says what is true now.
            log.info("stripe refused the capture", error=str(exc)[:300])
        return await self.retrieve_intent(provider_payment_id)

    async def cancel_intent(
        self, provider_payment_id: str, *, reason: Literal["canceled", "expired"]
    ) -> ProviderIntent:
        try:
            payload = await self.call(
                "POST",
                self._session_path(provider_payment_id, "/expire"),
                SESSION_READ_PARAMS,
                idempotency_key=f"expire-{provider_payment_id}",
            )
        except PermanentGatewayError:
            # Only an open session can be expired: the truth is whatever the session now says (maybe paid, or held).
            payload = await self._read_session(provider_payment_id)
        intent = self._intent(payload)
        held = self._parse_session(payload).payment_intent
        if intent.status is PaymentStatus.AUTHORIZED and isinstance(held, _PaymentIntent):
            # A held payment is voided by canceling its PaymentIntent; the reason says whether the hold lapsed.
            try:
                await self.call(
                    "POST",
                    f"/v1/payment_intents/{quote(held.id, safe='')}/cancel",
                    {"cancellation_reason": VOID_REASONS[reason]},
                    idempotency_key=f"void-{held.id}",
                )
            except PermanentGatewayError as exc:
                log.info("stripe refused the void", error=str(exc)[:300])
            return await self.retrieve_intent(provider_payment_id)
        if intent.status is PaymentStatus.EXPIRED and intent.failure_code == "expired" and reason == "canceled":
            # Stripe only knows "expired"; closed at the merchant's request it is, for us, CANCELED.
            # This holds on the fallback path too: a retried cancel finds the session our first call closed.
            return replace(intent, status=PaymentStatus.CANCELED, failure_code=None)
        return intent

    # --- refunds (a RefundingProvider) ---------------------------------------------------------------------------

    @staticmethod
    def _refund(payload: dict[str, Any]) -> ProviderRefund:
        try:
            refund = _Refund.model_validate(payload)
        except ValidationError as exc:
            raise PermanentGatewayError(
                f"stripe answered with something that is not a refund ({exc.error_count()} errors)"
            ) from None
        status = STRIPE_REFUND_STATUS_MAP.get(refund.status or "")
        if status is None:
            raise PermanentGatewayError(f"unknown stripe refund status {refund.status!r} of {refund.id}")
        return ProviderRefund(
            provider_refund_id=refund.id,
            status=status,
            amount=refund.amount,
            currency=refund.currency.upper(),
            failure_code=_refund_failure_code(refund) if status is RefundStatus.FAILED else None,
        )

    async def create_refund(self, request: RefundRequest) -> ProviderRefund:
        """POST /v1/refunds for the session's PaymentIntent, with our refund id as the Idempotency-Key.

        Only our ids go in its metadata (Stripe does not copy the PaymentIntent's): a retry, even one the ledger's
        reconciliation sends much later, must send identical parameters, or Stripe refuses the reused key.
        """
        session = self._parse_session(await self._read_session(request.provider_payment_id))
        intent = session.payment_intent
        intent_id = intent.id if isinstance(intent, _PaymentIntent) else intent
        if not intent_id:
            raise PermanentGatewayError(
                f"stripe checkout session {session.id} has no PaymentIntent to refund", code="no_payment_intent"
            )
        params: dict[str, Any] = {
            "payment_intent": intent_id,
            "amount": request.amount,
            "metadata": {"payment_id": request.payment_id, "refund_id": request.refund_id},
        }
        if request.reason:
            params["reason"] = request.reason
        return self._refund(await self.call("POST", "/v1/refunds", params, idempotency_key=request.refund_id))

    async def retrieve_refund(self, provider_refund_id: str) -> ProviderRefund:
        return self._refund(await self.call("GET", f"/v1/refunds/{quote(provider_refund_id, safe='')}"))

    def _refund_event(self, event: _Event) -> RefundWebhookEvent | None:
        refund = _carried(event, _Refund, "a refund")
        metadata = refund.metadata or {}
        refund_id, payment_id = metadata.get("refund_id"), metadata.get("payment_id")
        if not refund_id or not payment_id:
            # Made on the dashboard or by another integration: not a refund of ours to record.
            return None
        status = STRIPE_REFUND_STATUS_MAP.get(refund.status or "")
        if status is None:
            raise InvalidWebhookError(f"{event.type} with refund status {refund.status!r}")
        if status is RefundStatus.PENDING:
            return None
        return RefundWebhookEvent(
            provider_event_id=event.id,
            provider_refund_id=refund.id,
            refund_id=refund_id,
            payment_id=payment_id,
            status=status,
            amount=refund.amount,
            currency=refund.currency.upper(),
            failure_code=_refund_failure_code(refund) if status is RefundStatus.FAILED else None,
            occurred_at=event_time(event.created),
            metadata=metadata,
        )

    def webhook_secrets(self) -> Sequence[str]:
        return self._secrets

    def _hold_event(self, event: _Event) -> WebhookEvent | None:
        """A manual-capture PaymentIntent's event (hold, capture, void), or None for an automatic one's."""
        intent = _carried(event, _PaymentIntent, "a payment intent")
        payment_id = (intent.metadata or {}).get("payment_id")
        if not intent.manual or not payment_id:
            return None
        status = STRIPE_HOLD_EVENTS[event.type]
        failure_code = None
        if status is PaymentStatus.CANCELED:
            status, failure_code = hold_ended(intent)
        return WebhookEvent(
            provider_event_id=event.id,
            # The PaymentIntent, not the session we record: the event names no intent of ours (names_intent).
            provider_payment_id=intent.id,
            payment_id=payment_id,
            status=status,
            amount=intent.amount,
            currency=intent.currency.upper() if intent.currency else None,
            failure_code=failure_code,
            occurred_at=event_time(event.created),
            metadata=intent.metadata or {},
            amount_captured=intent.amount_received if status is PaymentStatus.SUCCEEDED else None,
            names_intent=False,
        )

    def parse_webhook(self, body: bytes) -> WebhookEvent | RefundWebhookEvent | None:
        event = webhook_envelope(body, _Event, "stripe")
        if event.api_version not in (None, STRIPE_API_VERSION):
            # Still read (the session fields we use have kept their shape), but an operator should hear of it:
            # the endpoint's version decides every event's shape, and ours is pinned for a reason.
            log.warning(
                "stripe event written in another API version; create the webhook endpoint with the pinned one",
                event_api_version=event.api_version,
                pinned_api_version=STRIPE_API_VERSION,
                provider_event_id=event.id,
            )
        if event.type in STRIPE_REFUND_EVENT_TYPES:
            return self._refund_event(event)
        if event.type in STRIPE_HOLD_EVENTS:
            return self._hold_event(event)
        if event.type not in STRIPE_EVENT_TYPES:
            return None
        session = _carried(event, _Session, "a checkout session")
        metadata = session.metadata or {}
        payment_id = session.client_reference_id or metadata.get("payment_id")
        if not payment_id:
            # Every session we open carries our payment id in both. One with neither was opened by something
            # else on the same account (a Payment Link, another integration): acknowledged, not ours to act on.
            return None
        key = (event.type, session.payment_status or "")
        if key in STRIPE_EVENT_MAP:
            outcome = STRIPE_EVENT_MAP[key]
        elif (event.type, ANY) in STRIPE_EVENT_MAP:
            outcome = STRIPE_EVENT_MAP[(event.type, ANY)]
        else:
            raise InvalidWebhookError(f"{event.type} with payment_status {session.payment_status!r}")
        if outcome is None:
            return None
        status, failure_code = outcome
        if metadata.get("payment_id") not in (None, payment_id):
            raise InvalidWebhookError("client_reference_id and metadata.payment_id disagree")
        return WebhookEvent(
            provider_event_id=event.id,
            provider_payment_id=session.id,
            payment_id=payment_id,
            status=status,
            amount=session.amount_total,
            currency=session.currency.upper() if session.currency else None,
            failure_code=failure_code,
            occurred_at=event_time(event.created),
            metadata=metadata,
        )
