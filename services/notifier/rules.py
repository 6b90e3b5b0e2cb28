"""The notifier's rules, pure: what an event is called, how a delivery is signed, what follows an attempt."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from standardwebhooks import Webhook

# The catalogue of event types is shared with the intake, which validates subscriptions against it.
from shared.merchant_events import ALL_EVENTS as ALL_EVENTS
from shared.merchant_events import MERCHANT_EVENT_TYPES as MERCHANT_EVENT_TYPES
from shared.merchant_events import subscribes as subscribes


def merchant_event_id(cause: uuid.UUID | str) -> str:
    """The merchant event's id, derived from what caused it: a replayed cause is the same event."""
    return "evt_" + uuid.uuid5(uuid.NAMESPACE_URL, f"paystream:merchant-event:{cause}").hex


@dataclass(frozen=True)
class MerchantEvent:
    """An event as merchants see it: listed by GET /v1/events and delivered to their endpoints."""

    id: str
    type: str
    merchant_id: str
    payment_id: str | None
    created: datetime
    data: dict[str, Any]


def delivery_body(event: MerchantEvent, current_object: dict[str, Any]) -> str:
    """The exact bytes sent (and signed): the event with its object as it stands now."""
    document = {
        "id": event.id,
        "type": event.type,
        "created": int(event.created.timestamp()),
        "data": {"object": current_object},
    }
    return orjson.dumps(document).decode()


def signature_headers(event_id: str, timestamp: datetime, body: str, secrets: Sequence[str]) -> dict[str, str]:
    """Standard Webhooks headers; during a rotation's grace both secrets sign (space-separated)."""
    signatures = [Webhook(secret).sign(event_id, timestamp, body) for secret in secrets]
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }


def signing_secrets(
    current: str, previous: str | None, previous_expires_at: datetime | None, now: datetime
) -> list[str]:
    if previous is not None and previous_expires_at is not None and previous_expires_at > now:
        return [current, previous]
    return [current]


@dataclass(frozen=True)
class AttemptResult:
    """What one POST to an endpoint gave: an HTTP status, or an error (refused, timed out, …)."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


NextKind = Literal["delivered", "retry", "give_up", "disable"]


@dataclass(frozen=True)
class NextStep:
    kind: NextKind
    delay_seconds: float | None = None
    failing_since: datetime | None = field(default=None)

    def next_attempt_at(self, now: datetime) -> datetime | None:
        return None if self.delay_seconds is None else now + timedelta(seconds=self.delay_seconds)


def after_attempt(
    result: AttemptResult,
    *,
    position: int,
    schedule: Sequence[float],
    failing_since: datetime | None,
    now: datetime,
    disable_after_seconds: float,
    jitter: float = 1.0,
) -> NextStep:
    """What follows attempt number `position` (1-based, in `schedule`) of a delivery.

    `schedule[n]` is the wait before attempt n+1; the endpoint has been failing since `failing_since` (None:
    its last attempt succeeded). An endpoint failing for longer than `disable_after_seconds` is disabled.
    """
    if result.delivered:
        return NextStep("delivered")
    since = failing_since or now
    if (now - since).total_seconds() > disable_after_seconds:
        return NextStep("disable", failing_since=since)
    if position >= len(schedule):
        return NextStep("give_up", failing_since=since)
    return NextStep("retry", delay_seconds=max(0.0, schedule[position] * jitter), failing_since=since)
