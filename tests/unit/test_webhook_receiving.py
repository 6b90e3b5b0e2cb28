"""The webhook rule (services/webhook_receiver/handlers.py) without a broker: what is published, what is refused,
and in which order the checks run. The real broker is in tests/integration/test_webhook_receiver.py."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from services.webhook_receiver.handlers import BrokerUnavailable, WebhookRejected, receive_webhook
from shared.events import Envelope, PaymentStatus, deterministic_event_id
from shared.providers.sandbox import SandboxProvider
from shared.providers.stripe import StripeProvider
from tests.support.messages import Published
from tests.support.sandbox_webhooks import encode, sandbox_event, signed

SECRET = "whsec_unit"
SANDBOX = SandboxProvider("http://sandbox.invalid", [SECRET])


async def broker_down(envelope: Envelope) -> None:
    raise ConnectionError("broker unreachable")


def count(outcome: str, provider: str = "sandbox") -> float:
    return (
        REGISTRY.get_sample_value("paystream_webhooks_received_total", {"provider": provider, "outcome": outcome})
        or 0.0
    )


async def test_a_verified_webhook_publishes_its_status_change() -> None:
    body = encode(sandbox_event("pay_1", event_type="payment.expired", event_id="evt_1", failure_code="expired"))
    published = Published()

    result = await receive_webhook(SANDBOX, signed(body, SECRET), body, published)

    assert result.outcome == "accepted"
    [envelope] = published
    assert (envelope.type, envelope.source, envelope.payment_id) == ("payment.status_changed", "webhook", "pay_1")
    message = envelope.message()
    assert message.status is PaymentStatus.EXPIRED  # type: ignore[attr-defined]
    assert message.provider_payment_id == "pi_pay_1"  # type: ignore[attr-defined]


async def test_a_redelivered_webhook_publishes_the_same_event_id() -> None:
    body = encode(sandbox_event("pay_1", event_id="evt_again"))
    published = Published()

    await receive_webhook(SANDBOX, signed(body, SECRET), body, published)
    await receive_webhook(SANDBOX, signed(body, SECRET), body, published)

    assert published[0].id == published[1].id == deterministic_event_id("sandbox", "evt_again")


async def test_the_signature_is_checked_before_the_body_is_parsed() -> None:
    not_json = b"\x00 not even json"
    published = Published()
    before = count("invalid_signature"), count("invalid_event")

    with pytest.raises(WebhookRejected, match="signature"):
        await receive_webhook(SANDBOX, signed(not_json, "whsec_other"), not_json, published)

    assert (count("invalid_signature"), count("invalid_event")) == (before[0] + 1, before[1])
    assert published == []


async def test_a_signed_body_that_is_not_an_event_is_rejected_unpublished() -> None:
    body = json.dumps({"id": "evt_1", "type": "payment.succeeded"}).encode()
    published = Published()
    before = count("invalid_event")

    with pytest.raises(WebhookRejected, match="not a valid event"):
        await receive_webhook(SANDBOX, signed(body, SECRET), body, published)

    assert count("invalid_event") == before + 1
    assert published == []


async def test_a_publish_the_broker_does_not_confirm_is_broker_unavailable() -> None:
    body = encode(sandbox_event("pay_1"))
    before = count("broker_unavailable")

    with pytest.raises(BrokerUnavailable):
        await receive_webhook(SANDBOX, signed(body, SECRET), body, broker_down)

    assert count("broker_unavailable") == before + 1


async def test_an_event_type_the_provider_does_not_act_on_is_acknowledged_unpublished() -> None:
    stripe = StripeProvider("sk_test_unused", [SECRET])
    body = json.dumps({"id": "evt_s", "type": "customer.created", "created": 1795460000, "data": {"object": {}}})
    raw = body.encode()
    headers = {"Stripe-Signature": signed(raw, SECRET)["Paystream-Signature"]}
    published = Published()

    result = await receive_webhook(stripe, headers, raw, published)

    assert result.outcome == "ignored"
    assert published == []
