"""What the intake refuses, and how (docs/reference/intake-api.md): 400, 413, 415, 422, 404, 405, all RFC 9457 problem
JSON."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from services.intake_api.routes import MAX_BODY_BYTES
from tests.support.client import IntakeClient, payment_body
from tests.support.problem_json import problem_of
from tests.support.processes import Stack


def create_headers(intake: IntakeClient, **extra: str) -> dict[str, str]:
    return intake.headers(**{"Idempotency-Key": secrets.token_hex(8), "Prefer": "wait=0", **extra})


def padded_to(size: int) -> bytes:
    """A valid payment body of exactly `size` bytes (JSON allows any amount of whitespace)."""
    raw = json.dumps(payment_body()).encode()
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


async def chunks(data: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 19.99}, "amount"),
        ({"amount": "1999"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": 100_000_000}, "amount"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "XYZ"}, "currency"),
        ({"reference": ""}, "reference"),
        ({"reference": "r" * 129}, "reference"),
        ({"return_url": "/orders/42"}, "return_url"),
        ({"cancel_url": "ftp://shop.example/cart"}, "cancel_url"),
        ({"metadata": {f"k{i}": "v" for i in range(21)}}, "metadata"),
        ({"metadata": {"cart": "v" * 501}}, "metadata.cart"),
        ({"metadata": {"cart": 9}}, "metadata.cart"),
        ({"reference": "order\u0000"}, "reference"),
        ({"capture": True}, "capture"),
    ],
)
async def test_an_invalid_field_answers_422_naming_the_field(
    http: aiohttp.ClientSession, intake: IntakeClient, change: dict[str, Any], field: str
) -> None:
    async with http.post(
        f"{intake.base_url}/v1/payments", json=payment_body(**change), headers=create_headers(intake)
    ) as response:
        problem = await problem_of(response, 422, "validation-error")

    assert [error["field"] for error in problem["errors"]] == [field]
    assert all(error["message"] for error in problem["errors"])


async def test_a_missing_required_field_answers_422_naming_it(
    http: aiohttp.ClientSession, intake: IntakeClient
) -> None:
    body = payment_body()
    del body["return_url"]
    async with http.post(f"{intake.base_url}/v1/payments", json=body, headers=create_headers(intake)) as response:
        problem = await problem_of(response, 422, "validation-error")

    assert problem["errors"] == [{"field": "return_url", "message": "Field required"}]


async def test_an_invalid_request_creates_nothing(http: aiohttp.ClientSession, intake: IntakeClient) -> None:
    key = secrets.token_hex(8)
    headers = create_headers(intake, **{"Idempotency-Key": key})
    async with http.post(f"{intake.base_url}/v1/payments", json=payment_body(amount=0), headers=headers) as r:
        assert r.status == 422

    status, _, _ = await intake.create(payment_body(), key=key, wait=0)
    assert status == 201  # the key was not taken by the refused request


@pytest.mark.parametrize(
    "raw", [b'{"amount": 1999,', b"", b"{'amount': 1999}", b"\xff\xfe{}", b"[" * 30_000 + b"]" * 30_000]
)
async def test_malformed_json_answers_400(http: aiohttp.ClientSession, intake: IntakeClient, raw: bytes) -> None:
    headers = create_headers(intake, **{"Content-Type": "application/json"})
    async with http.post(f"{intake.base_url}/v1/payments", data=raw, headers=headers) as response:
        await problem_of(response, 400, "malformed-json")


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("text/plain", json.dumps(payment_body()).encode()),
        ("application/x-www-form-urlencoded", b"amount=1999&currency=USD"),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("application/xml", b"<payment/>"),
        (None, json.dumps(payment_body()).encode()),
    ],
)
async def test_a_body_that_is_not_json_answers_415(
    http: aiohttp.ClientSession, intake: IntakeClient, content_type: str | None, raw: bytes
) -> None:
    headers = create_headers(intake)
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with http.post(f"{intake.base_url}/v1/payments", data=raw, headers=headers) as response:
        await problem_of(response, 415, "unsupported-media-type")


async def test_a_body_over_64_kib_answers_413(http: aiohttp.ClientSession, intake: IntakeClient) -> None:
    headers = create_headers(intake, **{"Content-Type": "application/json"})
    async with http.post(
        f"{intake.base_url}/v1/payments", data=padded_to(MAX_BODY_BYTES + 1), headers=headers
    ) as response:
        await problem_of(response, 413, "payload-too-large")


async def test_a_chunked_body_over_64_kib_without_content_length_answers_413(
    http: aiohttp.ClientSession, intake: IntakeClient
) -> None:
    headers = create_headers(intake, **{"Content-Type": "application/json"})
    async with http.post(
        f"{intake.base_url}/v1/payments", data=chunks(padded_to(MAX_BODY_BYTES + 1)), headers=headers
    ) as response:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in response.request_info.headers
        await problem_of(response, 413, "payload-too-large")


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_of_exactly_64_kib_is_accepted(
    http: aiohttp.ClientSession, intake: IntakeClient, chunked: bool
) -> None:
    body = padded_to(MAX_BODY_BYTES)
    headers = create_headers(intake, **{"Content-Type": "application/json"})
    async with http.post(
        f"{intake.base_url}/v1/payments", data=chunks(body) if chunked else body, headers=headers
    ) as response:
        assert response.status == 201, await response.text()


@pytest.mark.parametrize("path", ["/v2/payments", "/nothing-here", "/v1/nothing-here", "/v1/payments/pay_x/refund"])
async def test_an_unknown_route_answers_404_problem_json(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient, path: str
) -> None:
    async with http.get(stack.url("intake_api") + path, headers=intake.headers()) as response:
        await problem_of(response, 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/payments", "POST"),
        ("PUT", "/v1/payments", "POST"),  # GET lists payments since issue 11
        ("PUT", "/v1/payments/pay_x", "GET"),
        ("GET", "/v1/payments/pay_x/cancel", "POST"),
    ],
)
async def test_a_wrong_method_answers_405_problem_json_with_allow(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient, method: str, path: str, allowed: str
) -> None:
    async with http.request(method, stack.url("intake_api") + path, headers=intake.headers()) as response:
        await problem_of(response, 405)
        assert allowed in response.headers["Allow"]


async def test_an_unknown_payment_id_answers_404_problem_json(
    http: aiohttp.ClientSession, intake: IntakeClient
) -> None:
    async with http.get(f"{intake.base_url}/v1/payments/pay_{secrets.token_hex(16)}", headers=intake.headers()) as r:
        await problem_of(r, 404, "payment-not-found")


@pytest.mark.parametrize("payment_id", ["%00", "pay_%F0%9F%92%B3", "x" * 65, "pay_1;DROP%20TABLE"])
async def test_a_payment_id_that_cannot_be_ours_answers_404(
    http: aiohttp.ClientSession, intake: IntakeClient, payment_id: str
) -> None:
    async with http.get(f"{intake.base_url}/v1/payments/{payment_id}", headers=intake.headers()) as response:
        await problem_of(response, 404, "payment-not-found")
