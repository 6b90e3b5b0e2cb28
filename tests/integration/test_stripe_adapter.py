"""The stripe adapter over HTTP against a local fake of Stripe's API (nothing here reaches the real Stripe)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
import stripe
from aiohttp.test_utils import TestServer

from shared.events import PaymentStatus
from shared.providers.errors import NoSuchIntentError, PermanentGatewayError, TransientGatewayError
from shared.providers.stripe import STRIPE_API_VERSION, StripeProvider
from tests.fakes.stripe_fake import StripeFake
from tests.support.messages import intent_request


class _Clock:
    """The adapter's clock, movable to play a retry that comes minutes later."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def fake() -> StripeFake:
    return StripeFake()


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
async def provider(fake: StripeFake, clock: _Clock) -> AsyncIterator[StripeProvider]:
    server = TestServer(fake.app())
    await server.start_server()
    adapter = StripeProvider(
        fake.api_key,
        [fake.webhook_secret],
        api_base=str(server.make_url("")),
        timeout_seconds=5,
        clock=clock,
    )
    try:
        yield adapter
    finally:
        await adapter.close()
        await server.close()


async def test_create_sends_a_form_encoded_checkout_session_and_maps_the_answer(
    provider: StripeProvider, fake: StripeFake
) -> None:
    request = intent_request()
    intent = await provider.create_intent(request)

    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/checkout/sessions")
    assert sent.headers["Authorization"] == f"Bearer {fake.api_key}"
    assert sent.headers["Idempotency-Key"] == request.payment_id
    assert sent.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    params = sent.params
    assert params["mode"] == "payment"
    assert params["line_items"] == [
        {
            "price_data": {"currency": "usd", "unit_amount": "1999", "product_data": {"name": "2 books"}},
            "quantity": "1",
        }
    ]
    assert params["metadata"]["payment_id"] == request.payment_id
    assert params["metadata"]["traceparent"] == request.metadata["traceparent"]
    assert params["payment_intent_data"] == {"metadata": {"payment_id": request.payment_id}}

    session = fake.sessions[intent.provider_payment_id]
    assert intent.provider_payment_id.startswith("cs_test_")
    assert intent.checkout_url == session["url"]
    assert (intent.status, intent.amount, intent.currency) == (PaymentStatus.PENDING, 1999, "USD")
    assert session["client_reference_id"] == request.payment_id
    assert session["customer_email"] == "a@b.example"
    assert session["success_url"] == f"https://shop.example/orders/42?lang=en&payment_id={request.payment_id}"
    assert session["cancel_url"] == f"https://shop.example/cart?payment_id={request.payment_id}"


async def test_two_creates_for_one_payment_make_one_session(provider: StripeProvider, fake: StripeFake) -> None:
    request = intent_request()
    first = await provider.create_intent(request)
    second = await provider.create_intent(request)
    assert second.provider_payment_id == first.provider_payment_id
    assert len(fake.sessions) == 1


async def test_a_create_retried_minutes_later_replays_the_same_session(
    provider: StripeProvider, fake: StripeFake, clock: _Clock
) -> None:
    # The fake, like Stripe, refuses a reused Idempotency-Key whose parameters changed.
    request = intent_request()
    first = await provider.create_intent(request)
    clock.offset = timedelta(minutes=4)
    second = await provider.create_intent(request)
    assert second.provider_payment_id == first.provider_payment_id
    assert len(fake.sessions) == 1


async def test_retrieve_reports_an_open_session_as_pending(provider: StripeProvider) -> None:
    created = await provider.create_intent(intent_request())
    intent = await provider.retrieve_intent(created.provider_payment_id)
    assert intent.status is PaymentStatus.PENDING
    assert intent.checkout_url == created.checkout_url


async def test_retrieve_reports_a_paid_session_as_succeeded(provider: StripeProvider, fake: StripeFake) -> None:
    created = await provider.create_intent(intent_request())
    fake.complete_session(created.provider_payment_id)
    intent = await provider.retrieve_intent(created.provider_payment_id)
    assert (intent.status, intent.amount, intent.currency) == (PaymentStatus.SUCCEEDED, 1999, "USD")


async def test_canceling_an_open_session_expires_it_and_reports_canceled(
    provider: StripeProvider, fake: StripeFake
) -> None:
    created = await provider.create_intent(intent_request())
    intent = await provider.cancel_intent(created.provider_payment_id, reason="canceled")
    assert (intent.status, intent.failure_code) == (PaymentStatus.CANCELED, None)
    assert fake.sessions[created.provider_payment_id]["status"] == "expired"
    assert fake.requests[-1].path == f"/v1/checkout/sessions/{created.provider_payment_id}/expire"


async def test_expiring_an_open_session_reports_expired(provider: StripeProvider) -> None:
    created = await provider.create_intent(intent_request())
    intent = await provider.cancel_intent(created.provider_payment_id, reason="expired")
    assert (intent.status, intent.failure_code) == (PaymentStatus.EXPIRED, "expired")


async def test_a_cancel_retried_after_it_took_effect_still_reports_canceled(
    provider: StripeProvider, fake: StripeFake
) -> None:
    created = await provider.create_intent(intent_request())
    fake.expire_session(created.provider_payment_id)
    intent = await provider.cancel_intent(created.provider_payment_id, reason="canceled")
    assert intent.status is PaymentStatus.CANCELED


async def test_canceling_a_paid_session_reports_succeeded(provider: StripeProvider, fake: StripeFake) -> None:
    created = await provider.create_intent(intent_request())
    fake.complete_session(created.provider_payment_id)
    intent = await provider.cancel_intent(created.provider_payment_id, reason="canceled")
    assert intent.status is PaymentStatus.SUCCEEDED
    assert [r.method for r in fake.requests[-2:]] == ["POST", "GET"]


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_a_server_error_or_rate_limit_is_transient(
    provider: StripeProvider, fake: StripeFake, status: int
) -> None:
    request = intent_request()
    fake.fail_next(1, status=status)
    with pytest.raises(TransientGatewayError):
        await provider.create_intent(request)
    intent = await provider.create_intent(request)
    assert intent.status is PaymentStatus.PENDING
    assert len(fake.sessions) == 1


async def test_an_invalid_request_is_permanent(provider: StripeProvider, fake: StripeFake) -> None:
    with pytest.raises(PermanentGatewayError, match="400"):
        await provider.create_intent(intent_request(currency="US"))
    assert fake.sessions == {}


async def test_an_unknown_session_is_permanent(provider: StripeProvider) -> None:
    with pytest.raises(PermanentGatewayError, match="404"):
        await provider.retrieve_intent("cs_test_missing")


@pytest.mark.parametrize("reason", ["canceled", "expired"])
async def test_closing_an_unknown_session_is_the_final_answer_no_such_intent(
    provider: StripeProvider, reason: Literal["canceled", "expired"]
) -> None:
    """The gateway_worker closes the payment on its side on this answer, instead of dead-lettering the command."""
    with pytest.raises(NoSuchIntentError, match="404"):
        await provider.cancel_intent("cs_test_missing", reason=reason)


async def test_a_wrong_api_key_is_permanent(provider: StripeProvider, fake: StripeFake) -> None:
    fake.api_key = "sk_test_rotated"
    with pytest.raises(PermanentGatewayError, match="401"):
        await provider.create_intent(intent_request())


async def test_a_webhook_signed_like_stripe_verifies_and_maps(provider: StripeProvider, fake: StripeFake) -> None:
    request = intent_request()
    created = await provider.create_intent(request)
    fake.complete_session(created.provider_payment_id)
    body, headers = fake.webhook(created.provider_payment_id, "checkout.session.completed")

    provider.verify_webhook_source(headers, body)
    event = provider.parse_webhook(body)

    assert event is not None
    assert event.status is PaymentStatus.SUCCEEDED
    assert event.payment_id == request.payment_id
    assert event.provider_payment_id == created.provider_payment_id
    assert (event.amount, event.currency) == (1999, "USD")
    assert event.metadata["traceparent"] == request.metadata["traceparent"]


# --- Stripe's behaviours a shop meets in earnest (issue: the adapter against Stripe's published API) ---------------


async def test_a_409_for_an_idempotency_key_still_in_flight_is_transient_and_the_retry_opens_one_session(
    provider: StripeProvider, fake: StripeFake
) -> None:
    # A create that timed out on our side and was retried while Stripe still worked on the first.
    request = intent_request()
    fake.in_flight.add(request.payment_id)
    with pytest.raises(TransientGatewayError, match="409"):
        await provider.create_intent(request)
    fake.in_flight.clear()
    intent = await provider.create_intent(request)
    assert intent.status is PaymentStatus.PENDING
    assert len(fake.sessions) == 1


@pytest.mark.parametrize(
    ("status", "should_retry", "error"),
    [
        (500, False, PermanentGatewayError),  # Stripe says a retry would only replay this answer
        (400, True, TransientGatewayError),  # e.g. a lock timeout: Stripe says to try again
        (409, False, PermanentGatewayError),
    ],
)
async def test_stripe_should_retry_overrides_the_status_code(
    provider: StripeProvider, fake: StripeFake, status: int, should_retry: bool, error: type[Exception]
) -> None:
    fake.fail_next(1, status=status, should_retry=should_retry)
    with pytest.raises(error, match=str(status)):
        await provider.create_intent(intent_request())


async def test_every_request_pins_the_api_version_stripes_sdk_is_built_for(
    provider: StripeProvider, fake: StripeFake
) -> None:
    created = await provider.create_intent(intent_request())
    await provider.retrieve_intent(created.provider_payment_id)
    await provider.cancel_intent(created.provider_payment_id, reason="canceled")
    await provider.cancel_intent(created.provider_payment_id, reason="canceled")  # expire refused, then a GET

    assert STRIPE_API_VERSION == stripe.api_version == "2026-10-28.endive"
    assert [(r.method, r.headers.get("Stripe-Version")) for r in fake.requests] == [
        ("POST", STRIPE_API_VERSION),
        ("GET", STRIPE_API_VERSION),
        ("POST", STRIPE_API_VERSION),
        ("POST", STRIPE_API_VERSION),
        ("GET", STRIPE_API_VERSION),
    ]
    assert all(r.headers.get("Idempotency-Key") for r in fake.requests if r.method == "POST")


async def test_after_an_async_payment_failed_the_lookup_reads_the_payment_intent_and_reports_failed(
    provider: StripeProvider, fake: StripeFake
) -> None:
    # After checkout.session.async_payment_failed the session stays complete/unpaid for good: reconciliation
    # would log "still open" forever. Its PaymentIntent says what happened.
    created = await provider.create_intent(intent_request())
    fake.complete_session(created.provider_payment_id, payment_status="unpaid")
    still_settling = await provider.retrieve_intent(created.provider_payment_id)
    fake.settle_async_payment(created.provider_payment_id, succeeded=False)
    failed = await provider.retrieve_intent(created.provider_payment_id)

    assert still_settling.status is PaymentStatus.PENDING
    assert (failed.status, failed.failure_code) == (PaymentStatus.FAILED, "insufficient_funds")
    assert fake.requests[-1].method == "GET"
    assert ("expand[0]", "payment_intent") in fake.requests[-1].query
    assert fake.sessions[created.provider_payment_id]["status"] == "complete"


async def test_a_cancel_after_an_async_payment_failed_reports_failed_not_pending(
    provider: StripeProvider, fake: StripeFake
) -> None:
    created = await provider.create_intent(intent_request())
    fake.complete_session(created.provider_payment_id, payment_status="unpaid")
    fake.settle_async_payment(created.provider_payment_id, succeeded=False)
    closed = await provider.cancel_intent(created.provider_payment_id, reason="canceled")
    assert closed.status is PaymentStatus.FAILED


async def test_an_async_payment_that_succeeded_reads_succeeded(provider: StripeProvider, fake: StripeFake) -> None:
    created = await provider.create_intent(intent_request())
    fake.complete_session(created.provider_payment_id, payment_status="unpaid")
    fake.settle_async_payment(created.provider_payment_id, succeeded=True)
    intent = await provider.retrieve_intent(created.provider_payment_id)
    assert (intent.status, intent.failure_code) == (PaymentStatus.SUCCEEDED, None)


async def test_a_tracestate_longer_than_stripes_metadata_limit_does_not_fail_the_create(
    provider: StripeProvider, fake: StripeFake
) -> None:
    # The fake refuses, as Stripe does, a metadata value over 500 characters with a 400 (which failed the payment).
    traceparent = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"
    tracestate = ",".join(f"vendor{i}=" + "s" * 90 for i in range(8))  # 8 members of 98 characters
    request = intent_request(metadata={"traceparent": traceparent, "tracestate": tracestate})

    intent = await provider.create_intent(request)

    sent = fake.requests[-1].params["metadata"]
    assert intent.status is PaymentStatus.PENDING
    assert sent["traceparent"] == traceparent
    assert tracestate.startswith(sent["tracestate"]) and len(sent["tracestate"]) <= 500
