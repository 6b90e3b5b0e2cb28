"""Intake API keys and merchant isolation (docs/reference/intake-api.md), against the running stack."""

from __future__ import annotations

import asyncio
import json
import secrets

import aiohttp
import pytest

from tests.support.client import IntakeClient, payment_body
from tests.support.problem_json import problem_of
from tests.support.processes import Stack

V1_ROUTES = [
    ("POST", "/v1/payments"),
    ("GET", "/v1/payments/pay_0123456789abcdef0123456789abcdef"),
    ("GET", "/v1/payments/pay_0123456789abcdef0123456789abcdef/events"),
    ("POST", "/v1/payments/pay_0123456789abcdef0123456789abcdef/cancel"),
]
BAD_CREDENTIALS = {
    "no header": {},
    "unknown key": {"Authorization": "Bearer sk_test_unknown"},
    "prefix of a key": {"Authorization": "Bearer sk_test_dem"},
    "other scheme": {"Authorization": "Basic c2tfdGVzdF9kZW1vOg=="},
    "bare key": {"Authorization": "sk_test_demo"},
}


@pytest.fixture
def other(stack: Stack, http: aiohttp.ClientSession) -> IntakeClient:
    return IntakeClient(http, stack.url("intake_api"), api_key="sk_test_other")


@pytest.mark.parametrize("credentials", list(BAD_CREDENTIALS))
@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
async def test_every_v1_route_answers_401_problem_json_without_a_valid_key(
    stack: Stack, http: aiohttp.ClientSession, method: str, path: str, credentials: str
) -> None:
    headers = {**BAD_CREDENTIALS[credentials], "Idempotency-Key": secrets.token_hex(8)}
    async with http.request(method, stack.url("intake_api") + path, json=payment_body(), headers=headers) as r:
        await problem_of(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_request_without_a_valid_key_creates_nothing(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient
) -> None:
    key = secrets.token_hex(8)
    headers = {"Authorization": "Bearer sk_test_unknown", "Idempotency-Key": key}
    async with http.post(f"{stack.url('intake_api')}/v1/payments", json=payment_body(), headers=headers) as r:
        assert r.status == 401

    status, _, _ = await intake.create(key=key, wait=0)
    assert status == 201  # the key was never taken


async def test_a_key_that_is_not_utf_8_answers_401_not_500(stack: Stack) -> None:
    """Raw header bytes a client library would refuse to send, over a plain socket."""
    port = int(stack.env["INTAKE_PORT"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET /v1/payments/pay_x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer sk_\xff\xfe\xed\xa0\x80\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), answer[:300]
    assert json.loads(body)["type"].endswith("unauthorized")


@pytest.mark.parametrize("path", ["/openapi.json", "/healthz", "/readyz", "/metrics"])
async def test_public_routes_need_no_key(stack: Stack, http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(stack.url("intake_api") + path) as response:
        assert response.status == 200


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("GET", "/events"), ("POST", "/cancel")])
async def test_another_merchants_payment_answers_404(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient, other: IntakeClient, method: str, suffix: str
) -> None:
    status, payment, _ = await intake.create(wait=0)
    assert status == 201

    url = f"{stack.url('intake_api')}/v1/payments/{payment['id']}{suffix}"
    async with http.request(method, url, headers=other.headers()) as response:
        await problem_of(response, 404, "payment-not-found")


async def test_another_merchants_cancel_leaves_the_payment_alone(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient, other: IntakeClient
) -> None:
    _, payment, _ = await intake.create(wait=0)
    url = f"{stack.url('intake_api')}/v1/payments/{payment['id']}/cancel"
    async with http.post(url, headers=other.headers()) as response:
        assert response.status == 404

    async with http.post(url, headers=intake.headers()) as response:
        assert response.status == 202  # still PENDING: nobody else could cancel it


async def test_one_idempotency_key_under_two_merchants_makes_two_payments(
    intake: IntakeClient, other: IntakeClient
) -> None:
    key = secrets.token_hex(8)
    body = payment_body()

    demo_status, demo_payment, _ = await intake.create(body, key=key, wait=0)
    other_status, other_payment, _ = await other.create(body, key=key, wait=0)

    assert (demo_status, other_status) == (201, 201)
    assert demo_payment["id"] != other_payment["id"]
