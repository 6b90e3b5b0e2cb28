"""The webhook check written once (shared/providers/base.py), exercised through the sandbox adapter."""

from __future__ import annotations

import time

import pytest

from shared.providers.base import parse_signature_header, signature_header
from shared.providers.errors import SignatureError
from shared.providers.sandbox import SandboxProvider

BODY = b'{"id": "evt_1"}'


def provider(*secrets: str) -> SandboxProvider:
    return SandboxProvider("http://sandbox.invalid", list(secrets) or ["whsec_a"])


def test_a_signature_made_with_the_secret_verifies() -> None:
    provider("whsec_a").verify_webhook_source({"Paystream-Signature": signature_header("whsec_a", BODY)}, BODY)


def test_a_signature_made_with_any_secret_of_the_rotation_list_verifies() -> None:
    header = signature_header("whsec_old", BODY)
    provider("whsec_new", "whsec_old").verify_webhook_source({"Paystream-Signature": header}, BODY)


def test_one_matching_v1_among_several_is_enough() -> None:
    t = int(time.time())
    good = signature_header("whsec_a", BODY, t).split("v1=")[1]
    header = f"t={t},v1={'0' * 64},v1={good}"
    provider("whsec_a").verify_webhook_source({"Paystream-Signature": header}, BODY)


NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, BODY),
        ({"Paystream-Signature": "garbage"}, BODY),
        ({"Paystream-Signature": "t=abc,v1=00"}, BODY),
        ({"Paystream-Signature": signature_header("whsec_other", BODY, NOW)}, BODY),
        ({"Paystream-Signature": signature_header("whsec_a", BODY, NOW)}, BODY + b" "),
        ({"Paystream-Signature": signature_header("whsec_a", BODY, NOW - 301)}, BODY),
        ({"Paystream-Signature": signature_header("whsec_a", BODY, NOW + 301)}, BODY),
    ],
    ids=["missing", "malformed", "bad-timestamp", "wrong-secret", "tampered-body", "stale", "future"],
)
def test_a_bad_signature_is_refused(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(SignatureError):
        provider("whsec_a").verify_webhook_source(headers, body, now=NOW)


def test_a_signature_at_the_edge_of_the_tolerance_verifies() -> None:
    header = signature_header("whsec_a", BODY, NOW - 300)
    provider("whsec_a").verify_webhook_source({"Paystream-Signature": header}, BODY, now=NOW)


def test_the_header_parser_returns_the_timestamp_and_every_v1() -> None:
    assert parse_signature_header("t=12,v1=aa,v0=zz,v1=bb") == (12, ["aa", "bb"])
