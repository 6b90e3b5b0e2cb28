"""The messages services exchange: one envelope, every event and command a pydantic model, defined only here.

Events are named in the past tense (something happened), commands as orders (please do this).
The routing key of each is its `type`; consumers bind by it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

# Stable ids for messages that must deduplicate across producers (webhooks, reconciliation).
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c2a8e-3d4b-5e6f-8a9b-0c1d2e3f4a5b")


def deterministic_event_id(*parts: str) -> uuid.UUID:
    """The same parts always give the same id, so the ledger records a repeated fact once."""
    return uuid.uuid5(_EVENT_ID_NAMESPACE, "|".join(parts))


def utcnow() -> datetime:
    return datetime.now(UTC)


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    # Paid by the customer with capture_method "manual": the money is held, not taken (docs/reference/capture.md).
    AUTHORIZED = "AUTHORIZED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"

    @property
    def is_terminal(self) -> bool:
        return self not in (PaymentStatus.PENDING, PaymentStatus.AUTHORIZED)


# When the money is taken: at once ("automatic"), or held at payment and taken by a capture ("manual").
CaptureMethod = Literal["automatic", "manual"]


class RefundStatus(StrEnum):
    """A refund's status (docs/reference/refunds.md): pending, then succeeded or failed for good."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self is not RefundStatus.PENDING


RefundReason = Literal["requested_by_customer", "duplicate", "fraudulent"]

Source = Literal["intake", "gateway", "webhook", "reconciliation", "expiry", "merchant", "ledger", "notifier"]


class Message(BaseModel):
    """Base of every payload; `TYPE` is the envelope type and routing key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1


class PaymentRequested(Message):
    """A merchant asked for a payment and the intake accepted it (source: intake)."""

    TYPE = "payment.requested"
    merchant_id: str
    idempotency_key: str
    request_fingerprint: str
    amount: int
    currency: str
    reference: str
    description: str | None = None
    customer_email: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    return_url: str
    cancel_url: str | None = None
    created_at: datetime
    expires_at: datetime
    capture_method: CaptureMethod = "automatic"


class PaymentIntentCreated(Message):
    """The provider holds an intent for the payment and a page to pay on (source: gateway)."""

    TYPE = "payment.intent_created"
    provider: str
    provider_payment_id: str
    checkout_url: str


class PaymentIntentFailed(Message):
    """No intent could be made: the payment cannot be paid (source: gateway)."""

    TYPE = "payment.intent_failed"
    provider: str
    failure_code: str = "gateway_error"
    reason: str


class PaymentStatusChanged(Message):
    """The provider says the payment reached `status` (source: webhook, reconciliation, expiry or gateway).

    `amount` is what the intent was opened (authorized) for; `amount_captured` what the provider took, when it says
    (a partial capture takes less than `amount`).
    """

    TYPE = "payment.status_changed"
    status: PaymentStatus
    provider: str
    provider_payment_id: str | None = None
    provider_event_id: str | None = None
    failure_code: str | None = None
    amount: int | None = None
    currency: str | None = None
    amount_captured: int | None = None


class CancelPayment(Message):
    """The merchant asked to cancel a PENDING payment, or to void an AUTHORIZED one's hold (source: merchant)."""

    TYPE = "payment.cancel_requested"
    reason: str = "requested_by_merchant"
    provider: str | None = None
    provider_payment_id: str | None = None


class ExpirePayment(Message):
    """The payment outlived its TTL, or its authorization outlived AUTHORIZATION_TTL_SECONDS (`authorization`):
    close it at the provider, voiding the hold (source: expiry)."""

    TYPE = "payment.expiration_due"
    provider: str | None = None
    provider_payment_id: str | None = None
    authorization: bool = False


class CapturePayment(Message):
    """The merchant asked to take `amount_to_capture` of an AUTHORIZED payment's hold (source: merchant).

    The gateway_worker asks the provider with `idempotency_key` (a retry never captures twice) and publishes what
    the provider then says is true; the rest of the hold is released.
    """

    TYPE = "payment.capture_requested"
    amount_to_capture: int = Field(gt=0)
    idempotency_key: str
    provider: str | None = None
    provider_payment_id: str | None = None


class ReconcilePayment(Message):
    """No outcome has arrived for a while: ask the provider for the truth (source: reconciliation)."""

    TYPE = "payment.reconciliation_due"
    provider: str
    provider_payment_id: str


class PaymentStatusRecorded(Message):
    """The ledger committed a new payment (`from_status` null) or a change of its status (source: ledger).

    Published after the commit, with an id derived from the ledger event that caused it, so a republish is the
    same fact. Merchants hear it as `payment.created` or `payment.<status>`.
    """

    TYPE = "ledger.status_recorded"
    from_status: PaymentStatus | None
    status: PaymentStatus
    ledger_event_id: str

    @property
    def merchant_event_type(self) -> str:
        return "payment.created" if self.from_status is None else f"payment.{self.status.value.lower()}"


class DeliverWebhook(Message):
    """Deliver one merchant event to one endpoint (source: notifier); retried through delay queues."""

    TYPE = "webhook.delivery_due"
    event_id: str
    endpoint_id: str
    redelivery: bool = False


class RedeliverEvent(Message):
    """The merchant asked for an event to be delivered again now (source: merchant)."""

    TYPE = "webhook.redelivery_requested"
    event_id: str
    merchant_id: str


class RefundRequested(Message):
    """A merchant asked to give back `amount` of a SUCCEEDED payment and the intake reserved it (source: intake).

    The ledger records the refund (pending); the gateway_worker asks the provider, with `refund_id` as the
    provider's idempotency key.
    """

    TYPE = "payment.refund_requested"
    refund_id: str
    merchant_id: str
    idempotency_key: str
    request_fingerprint: str
    amount: int
    currency: str
    reason: RefundReason | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    provider: str | None = None
    provider_payment_id: str | None = None
    created_at: datetime


class RefundSubmitted(Message):
    """The provider holds the refund under its own id; its outcome comes later (source: gateway)."""

    TYPE = "payment.refund_submitted"
    refund_id: str
    provider: str
    provider_refund_id: str


class RefundStatusChanged(Message):
    """The provider says the refund reached `status` (source: webhook, reconciliation or gateway)."""

    TYPE = "payment.refund_status_changed"
    refund_id: str
    status: RefundStatus
    provider: str
    provider_refund_id: str | None = None
    provider_event_id: str | None = None
    failure_code: str | None = None
    amount: int | None = None
    currency: str | None = None


class ReconcileRefund(Message):
    """A refund is still pending after a while: ask the provider for its truth, or submit it again under the
    same idempotency key if the provider never answered (source: reconciliation)."""

    TYPE = "payment.refund_reconciliation_due"
    refund_id: str
    provider: str | None
    provider_payment_id: str | None
    provider_refund_id: str | None = None
    amount: int
    currency: str
    reason: RefundReason | None = None


class RefundStatusRecorded(Message):
    """The ledger committed a new refund (`from_status` null) or a change of its status (source: ledger).

    Published after the commit, with an id derived from the ledger event that caused it. Merchants hear it as
    `refund.created` or `refund.<status>`.
    """

    TYPE = "ledger.refund_recorded"
    refund_id: str
    from_status: RefundStatus | None
    status: RefundStatus
    ledger_event_id: str

    @property
    def merchant_event_type(self) -> str:
        return "refund.created" if self.from_status is None else f"refund.{self.status.value}"


# The refund events and commands the ledger records (a refund's history is part of its payment's).
REFUND_MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (RefundRequested, RefundSubmitted, RefundStatusChanged, ReconcileRefund)
}

# What the ledger records: every one routed by a `payment.` key (the ledger binds `payment.#`).
PAYMENT_MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        PaymentRequested,
        PaymentIntentCreated,
        PaymentIntentFailed,
        PaymentStatusChanged,
        CancelPayment,
        ExpirePayment,
        ReconcilePayment,
        CapturePayment,
    )
} | REFUND_MESSAGE_TYPES
# What the ledger announces and the notifier consumes: outside `payment.`, so the ledger never records them.
NOTIFICATION_MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (PaymentStatusRecorded, RefundStatusRecorded, DeliverWebhook, RedeliverEvent)
}
MESSAGE_TYPES: dict[str, type[Message]] = {**PAYMENT_MESSAGE_TYPES, **NOTIFICATION_MESSAGE_TYPES}


class Envelope(BaseModel):
    """What travels on the broker: identity, provenance and the payload (`data`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    source: Source
    payment_id: str
    data: dict[str, Any]

    @classmethod
    def wrap(
        cls,
        message: Message,
        *,
        payment_id: str,
        source: Source,
        event_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
    ) -> Envelope:
        return cls(
            id=event_id or uuid.uuid4(),
            type=message.TYPE,
            version=message.VERSION,
            occurred_at=occurred_at or utcnow(),
            source=source,
            payment_id=payment_id,
            data=message.model_dump(mode="json"),
        )

    def message(self) -> Message:
        """The typed payload; raises ValueError (a poison message) if the type is unknown or data invalid."""
        cls = MESSAGE_TYPES.get(self.type)
        if cls is None:
            raise ValueError(f"unknown message type {self.type!r}")
        return cls.model_validate(self.data)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Envelope:
        return cls.model_validate_json(body)
