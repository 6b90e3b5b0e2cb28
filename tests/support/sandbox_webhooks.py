"""Sandbox webhooks as the sandbox gateway sends them (docs/reference/provider-webhooks.md), signed or deliberately
not."""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any

from shared.providers.base import signature_header

STATUS_OF_TYPE = {
    "payment.succeeded": "succeeded",
    "payment.failed": "failed",
    "payment.canceled": "canceled",
    "payment.expired": "expired",
}


def sandbox_event(
    payment_id: str,
    *,
    event_type: str = "payment.succeeded",
    event_id: str | None = None,
    intent_id: str | None = None,
    amount: int | str = 1999,  # a string makes a deliberately invalid event
    currency: str = "USD",
    failure_code: str | None = None,
    **object_overrides: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": intent_id or f"pi_{payment_id}",
        "status": STATUS_OF_TYPE.get(event_type, "succeeded"),
        "amount": amount,
        "currency": currency,
        "metadata": {"payment_id": payment_id},
        "failure_code": failure_code,
    }
    obj.update(object_overrides)
    return {
        "id": event_id or f"evt_{secrets.token_hex(8)}",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": obj},
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def signed(body: bytes, secret: str, *, age_seconds: int = 0) -> dict[str, str]:
    """The signature headers of `body`, made `age_seconds` ago (negative: in the future)."""
    now = time.time()
    # Round away from "now", so the distance to the receiver's clock is never less than asked.
    timestamp = math.floor(now) - age_seconds if age_seconds >= 0 else math.ceil(now) - age_seconds
    return {"Content-Type": "application/json", "Paystream-Signature": signature_header(secret, body, timestamp)}
