"""The stripe adapter's pure parts: status and event mapping, webhook signatures, request building."""

from __future__ import annotations

import hashlib
import hmac
import json
import typing
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import stripe
from structlog.testing import capture_logs

from shared.events import PaymentStatus
from shared.providers import build_provider
from shared.providers.base import IntentRequest, WebhookEvent
from shared.providers.errors import InvalidWebhookError, PermanentGatewayError, SignatureError
from shared.providers.settings import ProviderSettings
from shared.providers.stripe import (
    CLOCK_MARGIN_SECONDS,
    METADATA_MAX_VALUE_LENGTH,
    STRIPE_API_VERSION,
    STRIPE_EVENT_MAP,
    STRIPE_EVENT_TYPES,
    STRIPE_INTENT_STATUS_MAP,
    STRIPE_SESSION_STATUS_MAP,
    StripeProvider,
    encode_form,
    map_session_status,
    session_expires_at,
    stripe_metadata,
    with_payment_id,
)
from tests.fakes.stripe_shapes import published

NOW = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
SECRET = "whsec_current"


def _provider(secrets: list[str] | None = None) -> StripeProvider:
    return StripeProvider("sk_test_unit", [SECRET] if secrets is None else secrets, clock=lambda: NOW)


def _v1(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _session(**overrides: Any) -> dict[str, Any]:
    session: dict[str, Any] = {
        "id": "cs_test_abc",
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid",
        "amount_total": 1999,
        "currency": "usd",
        "client_reference_id": "pay_1",
        "metadata": {"payment_id": "pay_1", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        "url": None,
    }
    session.update(overrides)
    return session


def _event(event_type: str, session: dict[str, Any] | None = None, **overrides: Any) -> bytes:
    event: dict[str, Any] = {
        "id": "evt_test_1",
        "object": "event",
        "created": int(NOW.timestamp()),
        "type": event_type,
        "data": {"object": _session() if session is None else session},
    }
    event.update(overrides)
    return json.dumps(event).encode()


# --- session status mapping: one test per row, and the explicit unknown -----------------------

STATUS_ROWS = [
    ("open", "unpaid", PaymentStatus.PENDING),
    ("complete", "paid", PaymentStatus.SUCCEEDED),
    ("complete", "no_payment_required", PaymentStatus.SUCCEEDED),
    ("complete", "unpaid", PaymentStatus.PENDING),
    ("expired", "unpaid", PaymentStatus.EXPIRED),
]


@pytest.mark.parametrize(("status", "payment_status", "expected"), STATUS_ROWS, ids=lambda v: str(v))
def test_session_status_maps_onto_ours(status: str, payment_status: str, expected: PaymentStatus) -> None:
    assert map_session_status(status, payment_status) is expected


def test_every_row_of_the_status_table_is_tested() -> None:
    assert len(STRIPE_SESSION_STATUS_MAP) == len(STATUS_ROWS)


@pytest.mark.parametrize(
    ("status", "payment_status"),
    [("complete", "refunded"), ("processing", "unpaid"), (None, "paid"), ("", "")],
)
def test_an_unknown_session_status_is_refused_not_guessed(status: str | None, payment_status: str) -> None:
    with pytest.raises(PermanentGatewayError, match="unknown"):
        map_session_status(status, payment_status)


# --- webhook event mapping: one test per event type ---------------------------------------------


def test_completed_and_paid_is_succeeded_with_the_amount_echoed() -> None:
    event = _provider().parse_webhook(_event("checkout.session.completed"))
    assert event is not None
    assert event.status is PaymentStatus.SUCCEEDED
    assert event.failure_code is None
    assert event.provider_event_id == "evt_test_1"
    assert event.provider_payment_id == "cs_test_abc"
    assert event.payment_id == "pay_1"
    assert (event.amount, event.currency) == (1999, "USD")
    assert event.occurred_at == NOW
    assert event.metadata["traceparent"].startswith("00-")


def test_completed_with_no_payment_required_is_succeeded() -> None:
    body = _event("checkout.session.completed", _session(payment_status="no_payment_required"))
    event = _provider().parse_webhook(body)
    assert event is not None and event.status is PaymentStatus.SUCCEEDED


def test_completed_but_unpaid_is_acknowledged_and_awaits_the_async_outcome() -> None:
    body = _event("checkout.session.completed", _session(payment_status="unpaid"))
    assert _provider().parse_webhook(body) is None


def test_async_payment_succeeded_is_succeeded() -> None:
    event = _provider().parse_webhook(_event("checkout.session.async_payment_succeeded"))
    assert event is not None and event.status is PaymentStatus.SUCCEEDED


def test_async_payment_failed_is_failed_with_payment_failed() -> None:
    body = _event("checkout.session.async_payment_failed", _session(payment_status="unpaid"))
    event = _provider().parse_webhook(body)
    assert event is not None
    assert (event.status, event.failure_code) == (PaymentStatus.FAILED, "payment_failed")


def test_expired_is_expired_with_expired() -> None:
    body = _event("checkout.session.expired", _session(status="expired", payment_status="unpaid"))
    event = _provider().parse_webhook(body)
    assert event is not None
    assert (event.status, event.failure_code) == (PaymentStatus.EXPIRED, "expired")


def test_every_event_type_of_the_table_is_tested() -> None:
    assert {t for t, _ in STRIPE_EVENT_MAP} == {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
    }


@pytest.mark.parametrize("event_type", ["payment_intent.created", "charge.refunded", "customer.created"])
def test_other_event_types_are_acknowledged_and_not_acted_on(event_type: str) -> None:
    body = _event(event_type, {"id": "pi_1", "object": "payment_intent"})
    assert _provider().parse_webhook(body) is None


def test_completed_with_an_unknown_payment_status_is_invalid() -> None:
    body = _event("checkout.session.completed", _session(payment_status="mystery"))
    with pytest.raises(InvalidWebhookError):
        _provider().parse_webhook(body)


def test_payment_id_falls_back_to_metadata() -> None:
    body = _event("checkout.session.completed", _session(client_reference_id=None))
    event = _provider().parse_webhook(body)
    assert event is not None and event.payment_id == "pay_1"


def test_payment_id_comes_from_client_reference_id_without_metadata() -> None:
    body = _event("checkout.session.completed", _session(metadata={}))
    event = _provider().parse_webhook(body)
    assert event is not None and event.payment_id == "pay_1"


@pytest.mark.parametrize("event_type", sorted(STRIPE_EVENT_TYPES))
def test_a_session_we_did_not_open_is_acknowledged_and_ignored(event_type: str) -> None:
    # A Payment Link's session, or another integration's on the same account, as Stripe publishes one:
    # no client_reference_id, empty metadata. Refusing it (400) would make Stripe resend it for days.
    foreign = published("checkout.session")
    foreign.update(status="complete", payment_status="paid")
    assert (foreign["client_reference_id"], foreign["metadata"]) == (None, {})
    assert _provider().parse_webhook(_event(event_type, foreign)) is None


def test_an_event_in_another_api_version_is_read_and_the_endpoints_version_is_logged() -> None:
    body = _event("checkout.session.completed", api_version="2024-06-20")
    with capture_logs() as logs:
        event = _provider().parse_webhook(body)
    assert event is not None and event.status is PaymentStatus.SUCCEEDED
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert (warning["event_api_version"], warning["pinned_api_version"]) == ("2024-06-20", STRIPE_API_VERSION)


def test_an_event_in_the_pinned_api_version_logs_nothing() -> None:
    with capture_logs() as logs:
        assert _provider().parse_webhook(_event("checkout.session.completed", api_version=STRIPE_API_VERSION))
    assert logs == []


def test_disagreeing_payment_ids_are_invalid() -> None:
    body = _event("checkout.session.completed", _session(metadata={"payment_id": "pay_other"}))
    with pytest.raises(InvalidWebhookError, match="disagree"):
        _provider().parse_webhook(body)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"id": "evt_1", "type": "checkout.session.completed"}',
        _event("checkout.session.completed", created="yesterday"),
        _event("checkout.session.completed", {"id": "pi_1", "object": "payment_intent"}),
        _event("checkout.session.expired", {"object": "checkout.session"}),
    ],
    ids=["not-json", "not-an-object", "no-data", "bad-created", "not-a-session", "session-without-id"],
)
def test_a_body_that_is_not_a_valid_event_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidWebhookError):
        _provider().parse_webhook(body)


# --- a complete but unpaid session, settled by its PaymentIntent (read with expand[]=payment_intent) -------------

DECLINED = {"type": "card_error", "code": "card_declined", "decline_code": "lost_card"}
UNACTIVATED = {"type": "invalid_request_error", "code": "payment_method_unactivated"}
INTENT_ROWS = [
    ("processing", None, PaymentStatus.PENDING, None),
    ("requires_action", None, PaymentStatus.PENDING, None),
    ("requires_confirmation", None, PaymentStatus.PENDING, None),
    ("requires_capture", None, PaymentStatus.AUTHORIZED, None),
    ("succeeded", None, PaymentStatus.SUCCEEDED, None),
    (
        "requires_payment_method",
        {"type": "card_error", "code": "card_declined", "decline_code": "lost_card"},
        PaymentStatus.FAILED,
        "lost_card",
    ),
    (
        "requires_payment_method",
        {"type": "invalid_request_error", "code": "payment_method_unactivated"},
        PaymentStatus.FAILED,
        "payment_method_unactivated",
    ),
    ("requires_payment_method", None, PaymentStatus.FAILED, "payment_failed"),
    ("canceled", None, PaymentStatus.FAILED, "canceled"),
]


def _with_intent(session_status: str, intent_status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
    intent = published("payment_intent")
    intent.update(status=intent_status, last_payment_error=error)
    return _session(status=session_status, payment_status="unpaid", payment_intent=intent)


@pytest.mark.parametrize(("intent_status", "error", "expected", "failure_code"), INTENT_ROWS)
def test_a_complete_unpaid_session_takes_its_payment_intents_word(
    intent_status: str, error: dict[str, Any] | None, expected: PaymentStatus, failure_code: str | None
) -> None:
    intent = StripeProvider._intent(_with_intent("complete", intent_status, error))
    assert (intent.status, intent.failure_code) == (expected, failure_code)


def test_every_payment_intent_status_stripe_has_is_mapped() -> None:
    statuses = typing.get_args(typing.get_args(stripe.PaymentIntent.__annotations__["status"])[0])
    assert set(statuses) == set(STRIPE_INTENT_STATUS_MAP) == {row[0] for row in INTENT_ROWS}


def test_an_open_session_whose_card_was_declined_stays_pending_for_another_try() -> None:
    # On an open session a failed attempt leaves the PaymentIntent requires_payment_method, but the customer can
    # still pay with another card on the same page.
    declined = _with_intent("open", "requires_payment_method", {"type": "card_error", "code": "card_declined"})
    assert StripeProvider._intent(declined).status is PaymentStatus.PENDING


def test_an_unknown_payment_intent_status_is_refused_not_guessed() -> None:
    with pytest.raises(PermanentGatewayError, match="payment_intent status"):
        StripeProvider._intent(_with_intent("complete", "requires_reauthorization"))


# --- webhook signatures (checked by the base class with Stripe's header) ------------------------

BODY = _event("checkout.session.completed")
T = int(NOW.timestamp())


def _verify(provider: StripeProvider, header: str | None, body: bytes = BODY, now: float = T) -> None:
    headers = {} if header is None else {"Stripe-Signature": header}
    provider.verify_webhook_source(headers, body, now=now)


def test_a_valid_signature_passes() -> None:
    _verify(_provider(), f"t={T},v1={_v1(SECRET, T, BODY)}")


def test_a_v0_entry_beside_v1_is_ignored() -> None:
    _verify(_provider(), f"t={T},v1={_v1(SECRET, T, BODY)},v0={'0' * 64}")


def test_one_matching_v1_among_several_passes() -> None:
    _verify(_provider(), f"t={T},v1={'0' * 64},v1={_v1(SECRET, T, BODY)},v1={'f' * 64}")


def test_a_signature_made_with_the_second_secret_passes_during_rotation() -> None:
    provider = _provider(["whsec_new", "whsec_old"])
    _verify(provider, f"t={T},v1={_v1('whsec_old', T, BODY)}")


def test_a_tampered_body_fails() -> None:
    header = f"t={T},v1={_v1(SECRET, T, BODY)}"
    with pytest.raises(SignatureError):
        _verify(_provider(), header, body=BODY.replace(b"1999", b"1"))


def test_a_signature_with_an_unknown_secret_fails() -> None:
    with pytest.raises(SignatureError):
        _verify(_provider(), f"t={T},v1={_v1('whsec_stranger', T, BODY)}")


@pytest.mark.parametrize("age", [301, 3600])
def test_a_timestamp_more_than_300_seconds_old_fails(age: int) -> None:
    stale = T - age
    with pytest.raises(SignatureError, match="older than the 300 s tolerance"):
        _verify(_provider(), f"t={stale},v1={_v1(SECRET, stale, BODY)}")


def _stripes_sdk_accepts(header: str) -> None:
    """Stripe's own check, at our test's "now", with its default tolerance (it raises if it refuses)."""
    with mock.patch("time.time", return_value=float(T)):
        stripe.WebhookSignature.verify_header(BODY, header, SECRET, tolerance=stripe.Webhook.DEFAULT_TOLERANCE)


def test_a_timestamp_in_the_future_within_the_clock_skew_passes_as_in_stripes_sdk() -> None:
    ahead = T + 300
    header = f"t={ahead},v1={_v1(SECRET, ahead, BODY)}"
    _stripes_sdk_accepts(header)
    _verify(_provider(), header)


@pytest.mark.parametrize("ahead", [301, 3600])
def test_a_timestamp_further_in_the_future_than_the_clock_skew_fails_naming_the_clock(ahead: int) -> None:
    # Stripe's SDK accepts any future timestamp; we bound it (SIGNATURE_CLOCK_SKEW_SECONDS): such a timestamp
    # stays "fresh" for as long as it is ahead, and it means a clock that is off by minutes.
    future = T + ahead
    header = f"t={future},v1={_v1(SECRET, future, BODY)}"
    _stripes_sdk_accepts(header)
    with pytest.raises(SignatureError, match=f"{ahead} s in the future, past the 300 s allowed for clock skew"):
        _verify(_provider(), header)


def test_a_timestamp_300_seconds_old_still_passes() -> None:
    old = T - 300
    _verify(_provider(), f"t={old},v1={_v1(SECRET, old, BODY)}")


def test_a_missing_header_fails() -> None:
    with pytest.raises(SignatureError, match="missing"):
        _verify(_provider(), None)


@pytest.mark.parametrize(
    "header",
    ["garbage", f"t={T}", f"v1={'0' * 64}", f"t=soon,v1={'0' * 64}", f"t={T};v1={'0' * 64}", ""],
    ids=["no-pairs", "no-v1", "no-t", "t-not-a-number", "wrong-separator", "empty"],
)
def test_a_malformed_header_fails(header: str) -> None:
    with pytest.raises(SignatureError):
        _verify(_provider(), header)


def test_with_no_secret_configured_every_webhook_fails() -> None:
    with pytest.raises(SignatureError):
        _verify(_provider([]), f"t={T},v1={_v1(SECRET, T, BODY)}")


# --- expires_at: the requested expiry moved into Stripe's window --------------------------------

EARLIEST = NOW + timedelta(minutes=30, seconds=CLOCK_MARGIN_SECONDS)
LATEST = NOW + timedelta(hours=24, seconds=-CLOCK_MARGIN_SECONDS)


def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


def test_an_expiry_inside_the_window_is_kept() -> None:
    requested = NOW + timedelta(hours=2)
    assert session_expires_at(requested, NOW) == _ts(requested)


@pytest.mark.parametrize(
    "offset",
    [timedelta(minutes=30), timedelta(minutes=5), timedelta(0), timedelta(hours=-3), timedelta(seconds=1859)],
    ids=["ttl-30min", "5min", "now", "past", "just-short"],
)
def test_an_expiry_too_soon_is_moved_into_the_window(offset: timedelta) -> None:
    result = session_expires_at(NOW + offset, NOW)
    assert _ts(EARLIEST) <= result <= _ts(LATEST)
    assert result <= _ts(EARLIEST) + 30 * 60


@pytest.mark.parametrize("offset", [timedelta(hours=25), timedelta(days=3), timedelta(hours=24)])
def test_an_expiry_too_late_is_moved_into_the_window(offset: timedelta) -> None:
    result = session_expires_at(NOW + offset, NOW)
    assert _ts(EARLIEST) <= result <= _ts(LATEST)
    assert result >= _ts(LATEST) - 30 * 60


def test_the_window_bounds_themselves_are_kept() -> None:
    assert session_expires_at(EARLIEST, NOW) == _ts(EARLIEST)
    assert session_expires_at(LATEST, NOW) == _ts(LATEST)


def test_retries_of_one_create_send_the_same_expiry() -> None:
    # A payment created at NOW with the default 30 min TTL, its create retried over the next minutes:
    # Stripe refuses a reused Idempotency-Key whose parameters changed.
    requested = NOW + timedelta(minutes=30)
    results = {session_expires_at(requested, NOW + timedelta(seconds=s)) for s in range(0, 25 * 60, 7)}
    assert len(results) == 1


# --- success_url / cancel_url ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://shop.example/orders/42", "https://shop.example/orders/42?payment_id=pay_1"),
        ("https://shop.example/o?a=1&b=x%20y", "https://shop.example/o?a=1&b=x%20y&payment_id=pay_1"),
        ("https://shop.example/o?payment_id=old&a=1", "https://shop.example/o?a=1&payment_id=pay_1"),
        ("https://shop.example/o?a=1#done", "https://shop.example/o?a=1&payment_id=pay_1#done"),
        ("https://shop.example/o?flag", "https://shop.example/o?flag&payment_id=pay_1"),
    ],
    ids=["no-query", "query-kept", "stale-payment-id-replaced", "fragment-kept", "bare-key-kept"],
)
def test_the_return_url_gets_the_payment_id(url: str, expected: str) -> None:
    assert with_payment_id(url, "pay_1") == expected


def test_the_payment_id_is_escaped_in_the_query() -> None:
    assert with_payment_id("https://s.example/", "pay 1&x") == "https://s.example/?payment_id=pay%201%26x"


# --- the create-session request -------------------------------------------------------------------


def _request(**overrides: Any) -> IntentRequest:
    fields: dict[str, Any] = {
        "payment_id": "pay_1",
        "amount": 1999,
        "currency": "USD",
        "reference": "order-42",
        "return_url": "https://shop.example/orders/42?x=1",
        "cancel_url": "https://shop.example/cart",
        "expires_at": NOW + timedelta(hours=1),
        "description": "2 books",
        "customer_email": "a@b.example",
        "metadata": {"traceparent": "00-abc-def-01"},
    }
    fields.update(overrides)
    return IntentRequest(**fields)


def test_the_create_request_is_stripe_form_fields() -> None:
    fields = dict(encode_form(_provider().checkout_session_params(_request())))
    assert fields == {
        "mode": "payment",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "1999",
        "line_items[0][price_data][product_data][name]": "2 books",
        "line_items[0][quantity]": "1",
        "success_url": "https://shop.example/orders/42?x=1&payment_id=pay_1",
        "cancel_url": "https://shop.example/cart?payment_id=pay_1",
        "client_reference_id": "pay_1",
        "metadata[traceparent]": "00-abc-def-01",
        "metadata[payment_id]": "pay_1",
        "payment_intent_data[metadata][payment_id]": "pay_1",
        "customer_email": "a@b.example",
        "expires_at": str(_ts(NOW + timedelta(hours=1))),
    }


def test_without_description_cancel_url_or_email_the_request_falls_back() -> None:
    request = _request(description=None, cancel_url=None, customer_email=None)
    fields = dict(encode_form(_provider().checkout_session_params(request)))
    assert fields["line_items[0][price_data][product_data][name]"] == "order-42"
    assert fields["cancel_url"] == "https://shop.example/orders/42?x=1&payment_id=pay_1"
    assert "customer_email" not in fields


def test_a_tracestate_past_stripes_500_character_limit_is_cut_at_its_members_and_never_fails_the_create() -> None:
    members = [f"vendor{i}=" + "x" * 60 for i in range(12)]  # 12 members of 68 characters: 827 in all
    traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    request = _request(metadata={"traceparent": traceparent, "tracestate": ",".join(members)})
    metadata = _provider().checkout_session_params(request)["metadata"]
    assert metadata["traceparent"] == traceparent
    assert metadata["tracestate"] == ",".join(members[:7])  # 7 members of 68 + 6 commas = 482; an 8th would pass 500
    assert all(len(value) <= METADATA_MAX_VALUE_LENGTH for value in metadata.values())


def test_a_tracestate_member_over_128_characters_goes_first() -> None:
    members = ["big=" + "y" * 200, *[f"v{i}=" + "z" * 100 for i in range(4)]]
    kept = stripe_metadata({"tracestate": ",".join(members)})["tracestate"]
    assert kept == ",".join(members[1:5])


def test_metadata_stripe_would_refuse_is_left_out_not_sent() -> None:
    metadata = stripe_metadata(
        {
            "payment_id": "pay_1",
            "k" * 41: "a key over 40 characters",
            "baggage": "v" * 501,
            "a[b]": "brackets would nest the form field",
            **{f"extra{i}": "x" for i in range(60)},
        }
    )
    assert metadata["payment_id"] == "pay_1"
    assert len(metadata) == 50
    assert all(len(k) <= 40 and "[" not in k and len(v) <= 500 for k, v in metadata.items())


def test_the_payment_id_survives_any_cut_of_the_metadata() -> None:
    request = _request(metadata={f"header{i}": "x" for i in range(60)})
    metadata = _provider().checkout_session_params(request)["metadata"]
    assert (len(metadata), metadata["payment_id"]) == (50, "pay_1")


def test_metadata_cannot_override_the_payment_id() -> None:
    request = _request(metadata={"payment_id": "pay_forged"})
    assert _provider().checkout_session_params(request)["metadata"]["payment_id"] == "pay_1"


def test_form_encoding_uses_brackets_and_skips_none() -> None:
    encoded = encode_form({"a": {"b": [{"c": 1}, {"d": True}]}, "e": None, "f": False})
    assert encoded == [("a[b][0][c]", "1"), ("a[b][1][d]", "true"), ("f", "false")]


# --- configuration -------------------------------------------------------------------------------


def _settings(**values: Any) -> ProviderSettings:
    """Settings from these values only (init arguments win over the environment; no .env file)."""
    return ProviderSettings(**{"_env_file": None, **values})


def test_from_settings_requires_the_api_key() -> None:
    settings = _settings(stripe_api_key=None)
    with pytest.raises(ValueError, match="STRIPE_API_KEY"):
        StripeProvider.from_settings(settings)


def test_from_settings_takes_every_webhook_secret() -> None:
    settings = _settings(stripe_api_key="sk_test_x", stripe_webhook_secret="whsec_a, whsec_b")
    provider = build_provider(settings, "stripe")
    assert isinstance(provider, StripeProvider)
    assert list(provider.webhook_secrets()) == ["whsec_a", "whsec_b"]


def test_from_settings_without_webhook_secrets_verifies_nothing() -> None:
    settings = _settings(stripe_api_key="sk_test_x", stripe_webhook_secret=None)
    provider = StripeProvider.from_settings(settings)
    assert list(provider.webhook_secrets()) == []
    with pytest.raises(SignatureError):
        _verify(provider, f"t={T},v1={_v1(SECRET, T, BODY)}")


# --- manual capture: a PaymentIntent's hold, capture and void -------------------------------------------------


def _held_intent(**overrides: Any) -> dict[str, Any]:
    intent: dict[str, Any] = {
        "id": "pi_test_1",
        "object": "payment_intent",
        "status": "requires_capture",
        "amount": 1999,
        "amount_capturable": 1999,
        "amount_received": 0,
        "currency": "usd",
        "capture_method": "manual",
        "cancellation_reason": None,
        "metadata": {"payment_id": "pay_1"},
    }
    intent.update(overrides)
    return intent


@pytest.mark.parametrize(
    ("event_type", "intent", "expected"),
    [
        ("payment_intent.amount_capturable_updated", {}, (PaymentStatus.AUTHORIZED, None, None)),
        (
            "payment_intent.succeeded",
            {"status": "succeeded", "amount_received": 1200, "amount_capturable": 0},
            (PaymentStatus.SUCCEEDED, None, 1200),
        ),
        (
            "payment_intent.canceled",
            {"status": "canceled", "cancellation_reason": "requested_by_customer"},
            (PaymentStatus.CANCELED, None, None),
        ),
        (
            "payment_intent.canceled",
            {"status": "canceled", "cancellation_reason": "abandoned"},
            (PaymentStatus.EXPIRED, "authorization_expired", None),
        ),
        (
            "payment_intent.canceled",
            {"status": "canceled", "cancellation_reason": "automatic"},
            (PaymentStatus.EXPIRED, "authorization_expired", None),
        ),
    ],
    ids=["hold", "capture", "void", "lapsed (ours)", "lapsed (stripe's)"],
)
def test_a_manual_payment_intents_events_are_its_hold_capture_and_void(
    event_type: str, intent: dict[str, Any], expected: tuple[PaymentStatus, str | None, int | None]
) -> None:
    event = _provider().parse_webhook(_event(event_type, _held_intent(**intent)))

    assert isinstance(event, WebhookEvent)
    assert (event.status, event.failure_code, event.amount_captured) == expected
    assert (event.payment_id, event.provider_payment_id, event.amount, event.currency) == (
        "pay_1",
        "pi_test_1",
        1999,
        "USD",
    )
    assert not event.names_intent  # the PaymentIntent, not the session the ledger records


@pytest.mark.parametrize("event_type", ["payment_intent.succeeded", "payment_intent.canceled"])
def test_an_automatic_payment_intents_events_are_left_to_its_sessions(event_type: str) -> None:
    intent = _held_intent(capture_method="automatic", status="succeeded", amount_received=1999)
    assert _provider().parse_webhook(_event(event_type, intent)) is None


def test_a_manual_checkout_session_asks_stripe_for_a_hold() -> None:
    request = IntentRequest(
        payment_id="pay_1",
        amount=1999,
        currency="USD",
        reference="order-1",
        return_url="https://shop.example/done",
        cancel_url=None,
        expires_at=NOW + timedelta(minutes=45),
        capture_method="manual",
    )
    automatic = IntentRequest(**{**request.__dict__, "capture_method": "automatic"})

    manual_fields = dict(encode_form(_provider().checkout_session_params(request)))
    automatic_fields = dict(encode_form(_provider().checkout_session_params(automatic)))

    assert manual_fields["payment_intent_data[capture_method]"] == "manual"
    assert "payment_intent_data[capture_method]" not in automatic_fields
