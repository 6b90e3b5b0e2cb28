"""Signed webhooks are read strictly (issue 14 §8): one spelling of `t`, no duplicate keys, integer amounts.

The sandbox is trusted, but a signature proves who sent the bytes, not that a lenient parser reads them as the
sender meant: a duplicated key or a string amount must be refused, not guessed at.
"""

from __future__ import annotations

import json
import time

import pytest

from shared.providers.base import parse_signature_header, signature_header
from shared.providers.errors import InvalidWebhookError, SignatureError
from shared.providers.sandbox import SandboxProvider
from shared.providers.stripe import StripeProvider

EVENT = {
    "id": "evt_1",
    "type": "payment.succeeded",
    "created": 1_795_460_000,
    "data": {
        "object": {
            "id": "pi_1",
            "status": "succeeded",
            "amount": 1999,
            "currency": "USD",
            "metadata": {"payment_id": "pay_1"},
            "failure_code": None,
        }
    },
}


def sandbox() -> SandboxProvider:
    return SandboxProvider("http://sandbox.invalid", ["whsec_a"])


NOT_PLAIN = ["01800000000", "+1800000000", "1800000000.0", "0x6B49D200", "\uff11\uff18\uff10\uff10"]


@pytest.mark.parametrize("timestamp", NOT_PLAIN)
def test_a_timestamp_that_is_not_plain_digits_without_leading_zeros_is_malformed(timestamp: str) -> None:
    with pytest.raises(SignatureError, match="malformed timestamp"):
        parse_signature_header(f"t={timestamp},v1={'0' * 64}")


def test_a_header_with_two_timestamps_is_malformed() -> None:
    with pytest.raises(SignatureError, match="malformed timestamp"):
        parse_signature_header(f"t=1800000000,t=1800000001,v1={'0' * 64}")


def test_a_timestamp_with_leading_zeros_does_not_verify_even_when_signed_so() -> None:
    body = json.dumps(EVENT).encode()
    t = int(time.time())
    signed = signature_header("whsec_a", body, t).split("v1=")[1]
    with pytest.raises(SignatureError):
        sandbox().verify_webhook_source({"Paystream-Signature": f"t=0{t},v1={signed}"}, body)


def test_the_well_formed_event_parses() -> None:
    event = sandbox().parse_webhook(json.dumps(EVENT).encode())
    assert event is not None and event.amount == 1999 and event.payment_id == "pay_1"


def test_a_signed_event_with_a_duplicated_key_is_refused() -> None:
    body = json.dumps(EVENT).encode().replace(b'"amount": 1999', b'"amount": 1999, "amount": 1')
    with pytest.raises(InvalidWebhookError, match="appears twice"):
        sandbox().parse_webhook(body)


@pytest.mark.parametrize("amount", ['"1999"', "1999.0", "true"])
def test_a_signed_event_whose_amount_is_not_an_integer_is_refused(amount: str) -> None:
    body = json.dumps(EVENT).encode().replace(b'"amount": 1999', f'"amount": {amount}'.encode())
    with pytest.raises(InvalidWebhookError):
        sandbox().parse_webhook(body)


def test_a_signed_event_not_in_utf8_is_refused() -> None:
    with pytest.raises(InvalidWebhookError, match="UTF-8"):
        sandbox().parse_webhook(json.dumps(EVENT).encode("utf-16"))


def test_a_stripe_event_with_a_duplicated_key_or_a_string_amount_is_refused() -> None:
    stripe = StripeProvider("sk_test_x", ["whsec_s"])
    session = {
        "id": "cs_1",
        "object": "checkout.session",
        "payment_status": "paid",
        "amount_total": 1999,
        "currency": "usd",
        "client_reference_id": "pay_1",
        "metadata": {"payment_id": "pay_1"},
    }
    event = {"id": "evt_s", "type": "checkout.session.completed", "created": 1_795_460_000, "data": {"object": session}}
    assert stripe.parse_webhook(json.dumps(event).encode()) is not None
    twice = json.dumps(event).encode().replace(b'"type":', b'"type": "x", "type":')
    with pytest.raises(InvalidWebhookError, match="appears twice"):
        stripe.parse_webhook(twice)
    as_text = json.dumps(event).encode().replace(b'"amount_total": 1999', b'"amount_total": "1999"')
    with pytest.raises(InvalidWebhookError):
        stripe.parse_webhook(as_text)
