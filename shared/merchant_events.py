"""The catalogue of merchant event types: what a merchant's webhook endpoint may subscribe to.

The notifier makes these events (services/notifier/rules.py); the intake validates subscriptions against them and
lists them in its OpenAPI document; the console offers them on its endpoint form. All read this one catalogue, so
none imports another
(docs/reference/merchant-webhooks.md).
"""

from __future__ import annotations

from collections.abc import Sequence

MERCHANT_EVENT_TYPES = (
    "payment.created",
    "payment.authorized",
    "payment.succeeded",
    "payment.failed",
    "payment.canceled",
    "payment.expired",
    "refund.created",
    "refund.succeeded",
    "refund.failed",
    "webhook_endpoint.disabled",
)
# An endpoint subscribed to this receives every event type, those added later included.
ALL_EVENTS = "*"


def subscribes(events: Sequence[str], event_type: str) -> bool:
    """Whether an endpoint subscribed to `events` receives an event of `event_type`."""
    return ALL_EVENTS in events or event_type in events
