"""Messages as the services send them, for tests that need a realistic one."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shared.batches import Consumed
from shared.broker import Delivery
from shared.events import CaptureMethod, Envelope, PaymentRequested
from shared.providers.base import IntentRequest

# A first delivery of a message that carries its payment's trace (the gateway_worker hands it on to the provider).
FIRST_DELIVERY = Delivery(
    attempt=1,
    max_attempts=5,
    redelivered=False,
    trace_headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
)


class Published(list[Envelope]):
    """Stands in for the broker's publish: keeps every envelope, in order, and by event id the reply keys
    each was published to besides (`also_to`)."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: dict[UUID, tuple[str, ...]] = {}

    async def __call__(self, envelope: Envelope, *, also_to: Sequence[str] = ()) -> None:
        self.append(envelope)
        self.replies[envelope.id] = tuple(also_to)


def payment_requested(payment_id: str | None = None, *, capture_method: CaptureMethod = "automatic") -> Envelope:
    """A `payment.requested` as the intake publishes it: 19.99 USD, a 30-minute TTL, a fresh id and key."""
    now = datetime.now(UTC)
    message = PaymentRequested(
        merchant_id="demo",
        idempotency_key=secrets.token_hex(8),
        request_fingerprint="f" * 64,
        amount=1999,
        currency="USD",
        reference="order-42",
        return_url="https://shop.example/orders/42",
        cancel_url="https://shop.example/cart",
        created_at=now,
        expires_at=now + timedelta(minutes=30),
        capture_method=capture_method,
    )
    return Envelope.wrap(message, payment_id=payment_id or f"pay_{secrets.token_hex(8)}", source="intake")


def intent_request(**overrides: Any) -> IntentRequest:
    """What the gateway_worker asks a provider for: 19.99 USD for a fresh payment id, the trace in the metadata."""
    fields: dict[str, Any] = {
        "payment_id": f"pay_{secrets.token_hex(8)}",
        "amount": 1999,
        "currency": "USD",
        "reference": "order-42",
        "return_url": "https://shop.example/orders/42?lang=en",
        "cancel_url": "https://shop.example/cart",
        "expires_at": datetime.now(UTC) + timedelta(minutes=30),
        "description": "2 books",
        "customer_email": "a@b.example",
        "metadata": {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    }
    fields.update(overrides)
    return IntentRequest(**fields)


def consumed(envelope: Envelope) -> Consumed:
    """A delivered message, as a batch handler gets it, whose consumer span is a fresh span context of its own
    trace."""
    span = NonRecordingSpan(
        SpanContext(
            trace_id=secrets.randbits(128) or 1,
            span_id=secrets.randbits(64) or 1,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )
    delivery = Delivery(attempt=1, max_attempts=3, redelivered=False)
    return Consumed(envelope, delivery, span, cast(AbstractIncomingMessage, object()))
