"""The signature header is found whatever the case of its name (HTTP/2 proxies lower-case every header)."""

from __future__ import annotations

import pytest

from shared.providers.base import signature_header
from shared.providers.errors import SignatureError
from shared.providers.sandbox import SandboxProvider
from shared.providers.stripe import StripeProvider

BODY = b'{"id":"evt_1"}'


@pytest.mark.parametrize("name", ["Paystream-Signature", "paystream-signature", "PAYSTREAM-SIGNATURE"])
def test_the_sandbox_signature_header_is_found_in_any_case(name: str) -> None:
    SandboxProvider("http://sandbox.invalid", ["whsec_a"]).verify_webhook_source(
        {name: signature_header("whsec_a", BODY)}, BODY
    )


@pytest.mark.parametrize("name", ["Stripe-Signature", "stripe-signature"])
def test_the_stripe_signature_header_is_found_in_any_case(name: str) -> None:
    StripeProvider("sk_test_x", ["whsec_b"]).verify_webhook_source({name: signature_header("whsec_b", BODY)}, BODY)


def test_another_header_is_not_taken_for_the_signature() -> None:
    with pytest.raises(SignatureError, match="missing"):
        SandboxProvider("http://sandbox.invalid", ["whsec_a"]).verify_webhook_source(
            {"Stripe-Signature": signature_header("whsec_a", BODY)}, BODY
        )
