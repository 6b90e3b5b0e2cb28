"""The intake's access log and Request-Id (issue 13 §5): one structured line per request, refusals included,
naming the route template, status, merchant, request id and problem type; never a body or a key."""

from __future__ import annotations

import json
import secrets
from typing import Any

import aiohttp

from tests.support.client import IntakeClient, payment_body
from tests.support.processes import Stack, eventually


async def access_lines(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stack["intake_api"].log_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "request" and line.get("request_id") == request_id]


async def test_a_refused_request_gets_one_access_line_and_its_request_id_back(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient
) -> None:
    request_id = f"shop-{secrets.token_hex(6)}"
    body = payment_body(amount="19.99", description="a secret description")
    headers = intake.headers(**{"Idempotency-Key": secrets.token_hex(8), "Request-Id": request_id})
    async with http.post(f"{intake.base_url}/v1/payments", json=body, headers=headers) as response:
        assert response.status == 422
        assert response.headers["Request-Id"] == request_id
        assert (await response.json(content_type=None))["request_id"] == request_id

    [line] = await eventually(lambda: access_lines(stack, request_id), what="the access line")
    assert {k: line[k] for k in ("method", "route", "status", "merchant", "problem")} == {
        "method": "POST",
        "route": "/v1/payments",
        "status": 422,
        "merchant": "demo",
        "problem": "validation-error",
    }
    assert isinstance(line["duration_ms"], float | int)
    text = json.dumps(line)
    assert "sk_test_demo" not in text and "secret description" not in text and "19.99" not in text


async def test_an_unauthenticated_request_is_logged_too_with_a_new_request_id(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient
) -> None:
    async with http.get(f"{intake.base_url}/v1/payments/pay_nope?api_key=sk_test_demo") as response:
        assert response.status == 401
        request_id = response.headers["Request-Id"]
    assert request_id.startswith("req_")

    [line] = await eventually(lambda: access_lines(stack, request_id), what="the access line")
    assert line["route"] == "/v1/payments/{payment_id}" and line["status"] == 401 and line["merchant"] is None
    assert line["problem"] == "unauthorized" and "sk_test_demo" not in json.dumps(line)


async def test_a_request_id_that_is_not_a_sane_token_is_replaced(
    http: aiohttp.ClientSession, intake: IntakeClient
) -> None:
    async with http.get(f"{intake.base_url}/healthz", headers={"Request-Id": "x" * 300}) as response:
        assert response.headers["Request-Id"].startswith("req_")


async def test_every_log_line_of_a_request_carries_its_request_id(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient
) -> None:
    request_id = f"shop-{secrets.token_hex(6)}"
    headers = intake.headers(**{"Idempotency-Key": secrets.token_hex(8), "Request-Id": request_id, "Prefer": "wait=0"})
    async with http.post(f"{intake.base_url}/v1/payments", json=payment_body(), headers=headers) as response:
        assert response.status == 201
        payment_id = (await response.json())["id"]

    await eventually(lambda: access_lines(stack, request_id), what="the access line")
    lines = [json.loads(line) for line in stack["intake_api"].log_text().splitlines() if line.startswith("{")]
    accepted = [
        line for line in lines if line.get("event") == "payment accepted" and line.get("payment_id") == payment_id
    ]
    assert accepted and all(line.get("request_id") == request_id for line in accepted)
