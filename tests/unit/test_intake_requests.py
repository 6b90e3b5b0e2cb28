"""Request handling rules of the intake that need no server: API keys and `Prefer: wait=N`."""

from __future__ import annotations

import hmac

import pytest

from services.intake_api import routes
from services.intake_api.routes import authenticate, requested_wait

KEYS = {"sk_test_demo": "demo", "sk_test_other": "other"}


@pytest.mark.parametrize(("header", "merchant"), [("Bearer sk_test_demo", "demo"), ("Bearer sk_test_other", "other")])
def test_a_known_bearer_key_authenticates_its_merchant(header: str, merchant: str) -> None:
    assert authenticate(KEYS, header) == merchant


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer sk_test_unknown",
        "Bearer sk_test_dem",
        "Basic sk_test_demo",
        "sk_test_demo",
    ],
)
def test_a_missing_malformed_or_unknown_key_authenticates_no_one(header: str | None) -> None:
    assert authenticate(KEYS, header) is None


def test_a_key_that_is_not_utf_8_authenticates_no_one_without_an_error() -> None:
    # aiohttp hands over header bytes that are not UTF-8 as surrogate escapes.
    assert authenticate(KEYS, "Bearer sk_\udcff\udcfe") is None
    assert authenticate(KEYS, "Bearer sk_\ud800") is None


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert authenticate(KEYS, "bearer sk_test_demo") == "demo"


def test_the_key_is_compared_in_constant_time_against_every_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    compare_digest = hmac.compare_digest

    def recording_compare_digest(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return compare_digest(a, b)

    monkeypatch.setattr(routes.hmac, "compare_digest", recording_compare_digest)

    assert authenticate(KEYS, "Bearer sk_test_demo") == "demo"
    # No early exit on a match: the time taken does not tell which key (or how many) matched.
    assert sorted(compared) == [b"sk_test_demo", b"sk_test_other"]


@pytest.mark.parametrize(
    ("prefer", "seconds"),
    [
        (None, 3.0),
        ("", 3.0),
        ("wait=0", 0.0),
        ("wait=5", 5.0),
        ("wait=10", 10.0),
        ("wait=11", 10.0),
        ("wait=3600", 10.0),
        ("respond-async, wait=7", 7.0),
        ("WAIT = 2", 2.0),
        ("wait=abc", 3.0),
        ("return=minimal", 3.0),
    ],
)
def test_prefer_wait_is_0_to_10_seconds_defaulting_to_3(prefer: str | None, seconds: float) -> None:
    assert requested_wait(prefer) == seconds
