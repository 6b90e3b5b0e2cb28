"""The sandbox provider's status tables: one test per row, and the explicit unknown."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.events import PaymentStatus
from shared.providers.base import WebhookEvent
from shared.providers.errors import InvalidWebhookError, PermanentGatewayError
from shared.providers.sandbox import (
    SANDBOX_EVENT_TYPES,
    SANDBOX_STATUS_MAP,
    SandboxProvider,
    map_sandbox_status,
)

STATUS_ROWS = [
    ("open", PaymentStatus.PENDING),
    ("authorized", PaymentStatus.AUTHORIZED),
    ("succeeded", PaymentStatus.SUCCEEDED),
    ("failed", PaymentStatus.FAILED),
    ("canceled", PaymentStatus.CANCELED),
    ("expired", PaymentStatus.EXPIRED),
]

# (event type, the intent status it carries, our status, failure code in the event)
EVENT_ROWS = [
    ("payment.authorized", "authorized", PaymentStatus.AUTHORIZED, None),
    ("payment.captured", "succeeded", PaymentStatus.SUCCEEDED, None),
    ("payment.succeeded", "succeeded", PaymentStatus.SUCCEEDED, None),
    ("payment.failed", "failed", PaymentStatus.FAILED, "card_declined"),
    ("payment.canceled", "canceled", PaymentStatus.CANCELED, None),
    ("payment.expired", "expired", PaymentStatus.EXPIRED, "expired"),
]


def provider() -> SandboxProvider:
    return SandboxProvider("http://sandbox.invalid", ["whsec_unit"])


def event(event_type: str, status: str, failure_code: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": "evt_1",
        "type": event_type,
        "created": 1795460000,
        "data": {
            "object": {
                "id": "pi_1",
                "status": status,
                "amount": 1999,
                "currency": "USD",
                "metadata": {"payment_id": "pay_1"},
                "failure_code": failure_code,
            }
        },
    }
    return json.dumps(body).encode()


@pytest.mark.parametrize(("raw", "expected"), STATUS_ROWS, ids=[r for r, _ in STATUS_ROWS])
def test_sandbox_intent_status_maps_onto_ours(raw: str, expected: PaymentStatus) -> None:
    assert map_sandbox_status(raw) is expected


def test_every_row_of_the_status_table_is_tested() -> None:
    assert dict(STATUS_ROWS) == SANDBOX_STATUS_MAP


@pytest.mark.parametrize("raw", ["", "OPEN", "processing", "refunded"])
def test_an_unknown_sandbox_status_is_refused_not_guessed(raw: str) -> None:
    with pytest.raises(PermanentGatewayError, match="unknown"):
        map_sandbox_status(raw)


@pytest.mark.parametrize(
    ("event_type", "status", "expected", "failure_code"), EVENT_ROWS, ids=[r[0] for r in EVENT_ROWS]
)
def test_sandbox_event_type_maps_onto_ours(
    event_type: str, status: str, expected: PaymentStatus, failure_code: str | None
) -> None:
    parsed = provider().parse_webhook(event(event_type, status, failure_code))
    assert parsed is not None
    assert parsed.status is expected
    assert parsed.failure_code == failure_code
    assert (parsed.payment_id, parsed.provider_payment_id, parsed.amount) == ("pay_1", "pi_1", 1999)


def test_every_row_of_the_event_table_is_tested() -> None:
    assert {row[0]: row[2] for row in EVENT_ROWS} == SANDBOX_EVENT_TYPES


def test_a_capture_event_says_how_much_was_taken_and_a_hold_event_nothing() -> None:
    captured = json.loads(event("payment.captured", "succeeded"))
    captured["data"]["object"]["amount_captured"] = 1200
    held = json.loads(event("payment.authorized", "authorized"))
    held["data"]["object"]["amount_captured"] = 0

    capture = provider().parse_webhook(json.dumps(captured).encode())
    hold = provider().parse_webhook(json.dumps(held).encode())

    assert isinstance(capture, WebhookEvent) and (capture.amount, capture.amount_captured) == (1999, 1200)
    assert isinstance(hold, WebhookEvent) and hold.amount_captured is None


def test_an_unknown_event_type_is_acknowledged_and_not_acted_on() -> None:
    # The same for every adapter (tests/integration/test_provider_contract.py): Stripe sends many types we ignore.
    assert provider().parse_webhook(event("payment.refunded", "succeeded")) is None


def test_an_event_type_contradicting_the_intent_status_is_invalid() -> None:
    with pytest.raises(InvalidWebhookError, match="contradicts"):
        provider().parse_webhook(event("payment.succeeded", "failed"))


def test_an_intent_answer_with_an_unknown_status_is_a_permanent_error() -> None:
    with pytest.raises(PermanentGatewayError):
        SandboxProvider._intent({"id": "pi_1", "status": "refunded", "amount": 1, "currency": "USD"})


def test_an_intent_answer_missing_its_amount_is_a_permanent_error() -> None:
    with pytest.raises(PermanentGatewayError, match="not an intent"):
        SandboxProvider._intent({"id": "pi_1", "status": "open", "currency": "USD"})
