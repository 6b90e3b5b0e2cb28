"""Messages as the services send them, for tests that need a realistic one."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from shared.events import Envelope, PaymentRequested


def payment_requested(payment_id: str | None = None) -> Envelope:
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
    )
    return Envelope.wrap(message, payment_id=payment_id or f"pay_{secrets.token_hex(8)}", source="intake")
