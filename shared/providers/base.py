"""The one interface every payment provider adapter implements, and the webhook check written once.

An adapter owns both halves of talking to its provider: calling it (create, retrieve, cancel an intent)
and reading what it sends back (verify and parse a webhook). Amounts stay integer minor units.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from shared.events import CaptureMethod, PaymentStatus, RefundStatus
from shared.providers.errors import InvalidWebhookError, SignatureError
from shared.strict_json import StrictJSONError, loads_strict

# How old a signature may be: Stripe's own default, and as long as a captured delivery can be replayed.
SIGNATURE_TOLERANCE_SECONDS = 300
# How far ahead of our clock a signature may be dated: the provider's clock and ours disagree a little.
# Stripe's SDK sets no bound here; we keep one, because a timestamp that is far ahead stays inside the window
# above for as long as it is ahead (a captured delivery could be replayed all that time), and such a timestamp
# means a clock that is wrong by minutes, which an operator should hear of.
SIGNATURE_CLOCK_SKEW_SECONDS = 300
_Envelope = TypeVar("_Envelope", bound=BaseModel)
_PLAIN_TIMESTAMP = re.compile(r"(?:0|[1-9][0-9]{0,11})")


def webhook_document(body: bytes) -> Any:
    """A verified webhook body as JSON, read strictly: UTF-8, no key twice (which copy would we apply?).

    Raises InvalidWebhookError. Every provider reads its body through this before mapping it.
    """
    try:
        return loads_strict(body)
    except StrictJSONError as exc:
        raise InvalidWebhookError(f"the body is not strict JSON: {exc}") from None


def webhook_envelope(body: bytes, envelope: type[_Envelope], provider: str) -> _Envelope:
    """A verified webhook body read strictly (see `webhook_document`) into the provider's event envelope.

    Raises InvalidWebhookError, naming the provider and how many fields did not fit.
    """
    try:
        return envelope.model_validate(webhook_document(body))
    except ValidationError as exc:
        raise InvalidWebhookError(f"not a {provider} event ({exc.error_count()} errors)") from None


@dataclass(frozen=True)
class IntentRequest:
    """What the provider needs to open a hosted payment page for one payment."""

    payment_id: str
    amount: int
    currency: str
    reference: str
    return_url: str
    cancel_url: str | None
    expires_at: datetime
    description: str | None = None
    customer_email: str | None = None
    # The shop's name as its customers know it, for the provider's hosted page.
    merchant_name: str | None = None
    # Carried through the provider and back in its webhooks (payment id, W3C trace context).
    metadata: Mapping[str, str] = field(default_factory=dict)
    # "manual": the customer's payment only holds the money, a capture takes it (a CapturingProvider's business).
    capture_method: CaptureMethod = "automatic"


@dataclass(frozen=True)
class ProviderIntent:
    """The provider's view of an intent, its status already mapped onto ours (PENDING while open, AUTHORIZED
    while the money is held); `amount_captured` is what it took, when it says."""

    provider_payment_id: str
    status: PaymentStatus
    amount: int
    currency: str
    checkout_url: str | None = None
    failure_code: str | None = None
    amount_captured: int | None = None


# What each field of a provider's event must look like before it becomes ours; a field outside its rule is
# the provider's (or a forger's) error, refused with 400, never an input the broker or database chokes on.
PAYMENT_ID_RULE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # as the intake API's routes accept a payment id
_PROVIDER_ID_RULE = re.compile(r"[!-~]{1,255}")  # printable ASCII: no NUL, space, control or surrogate
_CURRENCY_RULE = re.compile(r"[A-Za-z]{3}")
_MAX_AMOUNT = 2**63 - 1  # what a PostgreSQL bigint holds
_EARLIEST_EVENT = 0
_LATEST_EVENT = 253_402_300_799  # 9999-12-31T23:59:59Z: the last second a datetime (and our tables) hold


def event_time(created: int) -> datetime:
    """A provider's Unix `created` as an aware datetime; InvalidWebhookError outside 1970 to 9999."""
    if not _EARLIEST_EVENT <= created <= _LATEST_EVENT:
        raise InvalidWebhookError(f"created {created} is not a time from 1970 to 9999")
    return datetime.fromtimestamp(created, UTC)


@dataclass(frozen=True)
class WebhookEvent:
    """A verified provider event about one payment, mapped onto our statuses.

    Its fields are checked when it is made (InvalidWebhookError), so every adapter keeps the same rules.
    """

    provider_event_id: str
    provider_payment_id: str
    payment_id: str
    status: PaymentStatus
    amount: int | None
    currency: str | None
    failure_code: str | None
    occurred_at: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)
    amount_captured: int | None = None
    # False when `provider_payment_id` is another object of the provider's than the intent we record (Stripe's
    # PaymentIntent of a Checkout Session): the event is then matched to the payment by its id alone.
    names_intent: bool = True

    def __post_init__(self) -> None:
        if not PAYMENT_ID_RULE.fullmatch(self.payment_id):
            raise InvalidWebhookError("the payment id is not one of ours (1-64 letters, digits, _ or -)")
        for name, value in (("event id", self.provider_event_id), ("object id", self.provider_payment_id)):
            if not _PROVIDER_ID_RULE.fullmatch(value):
                raise InvalidWebhookError(f"the {name} must be 1-255 printable ASCII characters")
        if self.failure_code is not None and not _PROVIDER_ID_RULE.fullmatch(self.failure_code):
            raise InvalidWebhookError("the failure code must be 1-255 printable ASCII characters")
        if self.amount is not None and not 0 <= self.amount <= _MAX_AMOUNT:
            raise InvalidWebhookError(f"the amount must be from 0 to {_MAX_AMOUNT} minor units")
        if self.amount_captured is not None and not 0 <= self.amount_captured <= _MAX_AMOUNT:
            raise InvalidWebhookError(f"the captured amount must be from 0 to {_MAX_AMOUNT} minor units")
        if self.currency is not None and not _CURRENCY_RULE.fullmatch(self.currency):
            raise InvalidWebhookError("the currency must be a three-letter code")
        if self.occurred_at.tzinfo is None:
            raise InvalidWebhookError("the event's time names no time zone")


@dataclass(frozen=True)
class RefundRequest:
    """What the provider needs to give back part or all of a paid intent."""

    refund_id: str  # ours; the provider's idempotency key, so a retry never refunds twice
    payment_id: str
    provider_payment_id: str
    amount: int
    currency: str
    reason: str | None = None
    # Carried through the provider and back in its refund webhooks (payment id, refund id, W3C trace context).
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderRefund:
    """The provider's view of a refund, its status already mapped onto ours."""

    provider_refund_id: str
    status: RefundStatus
    amount: int
    currency: str
    failure_code: str | None = None


@dataclass(frozen=True)
class RefundWebhookEvent:
    """A verified provider event about one refund, mapped onto our refund statuses."""

    provider_event_id: str
    provider_refund_id: str
    refund_id: str
    payment_id: str
    status: RefundStatus
    amount: int | None
    currency: str | None
    failure_code: str | None
    occurred_at: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class RefundingProvider(Protocol):
    """The optional capability of a provider that can refund: an adapter declares it by having these methods.

    The gateway_worker checks `isinstance(provider, RefundingProvider)` before asking for a refund; a provider
    without it makes the refund fail with `refunds_not_supported`.
    """

    async def create_refund(self, request: RefundRequest) -> ProviderRefund:
        """Give back `request.amount` of the intent; idempotent on `request.refund_id`. A refusal (4xx) raises
        PermanentGatewayError, whose `code` says why."""
        ...

    async def retrieve_refund(self, provider_refund_id: str) -> ProviderRefund:
        """The provider's current truth about a refund."""
        ...


def sign_payload(secret: str, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 over `<t>.<body>`, hex: the `v1` of both the sandbox's and Stripe's scheme."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={sign_payload(secret, t, body)}"


def parse_signature_header(value: str) -> tuple[int, list[str]]:
    """`t=<unix>,v1=<hex>[,v1=<hex>...]` → (t, [v1...]); anything else is a SignatureError."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed signature header")
        if key == "t":
            # Plain decimal digits, no sign, no leading zero, no second `t`: one spelling per timestamp.
            if not _PLAIN_TIMESTAMP.fullmatch(val) or timestamp is not None:
                raise SignatureError("malformed timestamp")
            timestamp = int(val)
        elif key == "v1":
            signatures.append(val.strip())
    if timestamp is None or not signatures:
        raise SignatureError("signature header lacks t or v1")
    return timestamp, signatures


@runtime_checkable
class CapturingProvider(Protocol):
    """A provider that can hold money and take it later (docs/reference/capture.md): an optional capability.

    Its `create_intent` honours `IntentRequest.capture_method == "manual"` (the customer's payment leaves the
    intent AUTHORIZED), and its `cancel_intent` voids a hold. The gateway_worker checks
    `isinstance(provider, CapturingProvider)`; a provider without it makes a manual payment fail with
    `capture_method_unsupported`.
    """

    async def capture(self, provider_payment_id: str, amount: int, idempotency_key: str) -> ProviderIntent:
        """Take `amount` (at most the held amount) of an AUTHORIZED intent and release the rest; the same
        `idempotency_key` never captures twice. Returns what is true afterwards: SUCCEEDED with `amount_captured`,
        or whatever ended the hold first (voided, lapsed). Raises PermanentGatewayError when the provider refuses."""
        ...


class PaymentProvider(ABC):
    """A payment provider, as the gateway_worker and the webhook_receiver see it."""

    name: str
    signature_header_name: str

    # --- calling the provider -------------------------------------------------------------
    @abstractmethod
    async def create_intent(self, request: IntentRequest) -> ProviderIntent:
        """Open an intent; idempotent on `request.payment_id` (a retry never makes a second one)."""

    @abstractmethod
    async def retrieve_intent(self, provider_payment_id: str) -> ProviderIntent:
        """The provider's current truth about an intent."""

    @abstractmethod
    async def cancel_intent(
        self, provider_payment_id: str, *, reason: Literal["canceled", "expired"]
    ) -> ProviderIntent:
        """Close an open intent; returns what is true afterwards (it may have been paid first)."""

    async def find_intent(self, payment_id: str) -> ProviderIntent | None:
        """The intent opened for our `payment_id`, for a provider that can look one up by it.

        None when there is none, or when the provider offers no such lookup (the default).
        """
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook: an adapter without connections has nothing to do
        """Release connections."""

    # --- reading its webhooks ---------------------------------------------------------------
    @abstractmethod
    def webhook_secrets(self) -> Sequence[str]:
        """Every secret a valid signature may be made with (several during a rotation)."""

    @abstractmethod
    def parse_webhook(self, body: bytes) -> WebhookEvent | RefundWebhookEvent | None:
        """The event in a verified body (about a payment, or about a refund for a RefundingProvider); None for an
        event type we do not act on.

        Raises InvalidWebhookError when the body is not a valid event.
        """

    def extract_signature(self, headers: Mapping[str, str]) -> tuple[int, list[str]]:
        # Header names are case-insensitive (HTTP/2 proxies send them in lower case), even in a plain dict.
        wanted = self.signature_header_name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
        if not value:
            raise SignatureError(f"missing {self.signature_header_name} header")
        return parse_signature_header(value)

    def signed_message(self, timestamp: int, body: bytes) -> bytes:
        return f"{timestamp}.".encode() + body

    def expected_signature(self, secret: str, message: bytes) -> str:
        """The provider's algorithm over the signed message (HMAC-SHA256, hex, for the sandbox and Stripe)."""
        return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()

    def verify_webhook_source(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> None:
        """Check the signature on the raw bytes, before any parsing; raise SignatureError if it fails."""
        timestamp, candidates = self.extract_signature(headers)
        current = time.time() if now is None else now
        if current - timestamp > SIGNATURE_TOLERANCE_SECONDS:
            raise SignatureError(f"timestamp older than the {SIGNATURE_TOLERANCE_SECONDS} s tolerance")
        if timestamp - current > SIGNATURE_CLOCK_SKEW_SECONDS:
            # Named apart from a stale one: the fix is a clock (ours or the provider's), not the sender.
            raise SignatureError(
                f"timestamp {int(timestamp - current)} s in the future, past the {SIGNATURE_CLOCK_SKEW_SECONDS} s"
                " allowed for clock skew"
            )
        message = self.signed_message(timestamp, body)
        for secret in self.webhook_secrets():
            expected = self.expected_signature(secret, message).encode()
            # Compare against every candidate: constant time per comparison, no early exit on a match.
            # As bytes: a non-ASCII candidate is simply wrong, not an error (str comparison would raise).
            matched = [hmac.compare_digest(expected, c.encode("utf-8", "surrogateescape")) for c in candidates]
            if any(matched):
                return
        raise SignatureError("no signature matches")
