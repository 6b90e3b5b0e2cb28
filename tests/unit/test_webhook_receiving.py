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


# --- content that cannot become our event: 400 (WebhookRejected), never BrokerUnavailable (issue 24 §3) -------------

DEEP = "[" * 5000 + "]" * 5000


def _sandbox_body(**changes: object) -> bytes:
    """A signed-able sandbox event with `changes` applied: top-level keys, or `object.<key>` inside the intent."""
    event = sandbox_event("pay_1", event_type="payment.failed", failure_code="card_declined")
    for key, value in changes.items():
        if key.startswith("object."):
            event["data"]["object"][key.removeprefix("object.")] = value
        else:
            event[key] = value
    return encode(event)


HOSTILE_SANDBOX_EVENTS = {
    "a lone surrogate in the payment id": _sandbox_body(**{"object.metadata": {"payment_id": "pay_\ud800x"}}),
    "a NUL in the payment id": _sandbox_body(**{"object.metadata": {"payment_id": "pay_\x00x"}}),
    "a payment id that is not one of ours": _sandbox_body(**{"object.metadata": {"payment_id": "pay 1; drop"}}),
    "a lone surrogate in the event id": _sandbox_body(id="evt_\udfff"),
    "a NUL in the intent id": _sandbox_body(**{"object.id": "pi_\x00"}),
    "a lone surrogate in the failure code": _sandbox_body(**{"object.failure_code": "declined_\ud800"}),
    "a NUL in the currency": _sandbox_body(**{"object.currency": "U\x00D"}),
    "an amount beyond a bigint": _sandbox_body(**{"object.amount": 10**40}),
    "a negative amount": _sandbox_body(**{"object.amount": -1}),
    "an amount of 4,301 digits": _sandbox_body().replace(b'"amount":1999', b'"amount":' + b"9" * 4301),
    "a time past the year 9999": _sandbox_body(created=10**15),
    "a time of 120 digits": _sandbox_body().replace(b'"created":', b'"created":' + b"9" * 120 + b',"was":'),
    "nesting 5,000 deep": _sandbox_body().replace(b'"data":', b'"deep":' + DEEP.encode() + b',"data":'),
}


@pytest.mark.parametrize("body", HOSTILE_SANDBOX_EVENTS.values(), ids=HOSTILE_SANDBOX_EVENTS.keys())
async def test_a_signed_sandbox_event_that_cannot_become_ours_is_refused_and_nothing_published(body: bytes) -> None:
    published = Published()
    before = count("invalid_event")

    with pytest.raises(WebhookRejected):
        await receive_webhook(SANDBOX, signed(body, SECRET), body, published)

    assert published == []
    assert count("invalid_event") == before + 1


def _stripe_body(session: dict[str, object], **event: object) -> bytes:
    document: dict[str, object] = {
        "id": "evt_s1",
        "object": "event",
        "type": "checkout.session.completed",
        "created": 1795460000,
        "data": {
            "object": {
                "id": "cs_test_1",
                "object": "checkout.session",
                "status": "complete",
                "payment_status": "paid",
                "amount_total": 1999,
                "currency": "usd",
                "client_reference_id": "pay_1",
                "metadata": {"payment_id": "pay_1"},
                **session,
            }
        },
        **event,
    }
    return json.dumps(document).encode()


HOSTILE_STRIPE_EVENTS = {
    "a lone surrogate in client_reference_id": _stripe_body(
        {"client_reference_id": "pay_\ud800x", "metadata": {"payment_id": "pay_\ud800x"}}
    ),
    "a NUL in the payment id": _stripe_body({"client_reference_id": "pay_\x00", "metadata": {}}),
    "a lone surrogate in the session id": _stripe_body({"id": "cs_\udc00"}),
    "a lone surrogate in the event id": _stripe_body({}, id="evt_\ud800"),
    "an amount beyond a bigint": _stripe_body({"amount_total": 10**30}),
    "a time past the year 9999": _stripe_body({}, created=10**14),
}


@pytest.mark.parametrize("body", HOSTILE_STRIPE_EVENTS.values(), ids=HOSTILE_STRIPE_EVENTS.keys())
async def test_a_signed_stripe_event_that_cannot_become_ours_is_refused_and_nothing_published(body: bytes) -> None:
    stripe = StripeProvider("sk_test_unused", [SECRET])
    headers = {"Stripe-Signature": signed(body, SECRET)["Paystream-Signature"]}
    published = Published()

    with pytest.raises(WebhookRejected):
        await receive_webhook(stripe, headers, body, published)

    assert published == []


async def test_content_errors_are_refused_even_with_the_broker_down() -> None:
    """The order that made issue 24's 503: the event is made (and serialised) before the publish is tried."""
    body = HOSTILE_SANDBOX_EVENTS["a lone surrogate in the payment id"]
    before = count("broker_unavailable")

    with pytest.raises(WebhookRejected):
        await receive_webhook(SANDBOX, signed(body, SECRET), body, broker_down)

    assert count("broker_unavailable") == before
