"""Cancel and expiration due through the real services: the gateway_worker closes the sandbox's intent and
the payment ends as the sandbox says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.support.client import IntakeClient
from tests.support.infra import Servers
from tests.support.own_stack import own_stack
from tests.support.processes import Stack


async def sandbox_intent(http: aiohttp.ClientSession, checkout_url: str) -> dict[str, Any]:
    base, _, intent_id = checkout_url.rpartition("/pay/")
    async with http.get(f"{base}/v1/intents/{intent_id}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_a_canceled_payment_ends_canceled_with_its_sandbox_intent_canceled(
    stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    status, payment, _ = await intake.create(wait=10)
    assert status == 201 and payment["checkout_url"], payment

    async with http.post(f"{intake.base_url}/v1/payments/{payment['id']}/cancel", headers=intake.headers()) as r:
        assert r.status == 202, await r.text()
    final = await intake.terminal(payment["id"])

    assert (final["status"], final["failure_code"]) == ("CANCELED", None)
    assert (await sandbox_intent(http, payment["checkout_url"]))["status"] == "canceled"


async def test_a_payment_past_its_ttl_ends_expired_with_its_sandbox_intent_expired(
    servers: Servers, tmp_path: Path
) -> None:
    async with (
        own_stack(
            servers,
            tmp_path,
            ("intake_api", "gateway_worker", "ledger", "sandbox_gateway"),
            PAYMENT_TTL_SECONDS="2",
        ) as stack,
        aiohttp.ClientSession() as http,
    ):
        intake = IntakeClient(http, stack.url("intake_api"))
        status, payment, _ = await intake.create(wait=10)
        assert status == 201 and payment["checkout_url"], payment

        final = await intake.terminal(payment["id"])

        assert (final["status"], final["failure_code"]) == ("EXPIRED", "expired")
        assert (await sandbox_intent(http, payment["checkout_url"]))["status"] == "expired"
        events = await intake.events(payment["id"])
        assert [e["source"] for e in events if e["event_type"] == "payment.status_changed"] == ["expiry"]
