"""Cancel and expiration due through the real services: the gateway_worker closes the sandbox's intent and
the payment ends as the sandbox says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.support.client import IntakeClient
from tests.support.infra import Servers
from tests.support.own_stack import own_stack
from tests.support.processes import ServiceProcess, Stack


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


async def restart(service: ServiceProcess, **env: str) -> None:
    assert service.stop() == 0
    service.env = {**service.env, **env}
    service.start()
    await service.wait_ready()


async def cancel(http: aiohttp.ClientSession, intake: IntakeClient, payment_id: str) -> dict[str, Any]:
    async with http.post(f"{intake.base_url}/v1/payments/{payment_id}/cancel", headers=intake.headers()) as r:
        assert r.status == 202, await r.text()
    return await intake.terminal(payment_id)


async def test_the_sandbox_keeps_its_intents_across_a_restart_and_a_lost_intent_still_closes_its_payment(
    servers: Servers, tmp_path: Path
) -> None:
    """SANDBOX_DATA_DIR: a restarted sandbox still has the intent, so the cancel is carried out there. One that lost
    its data answers 404, a final answer: the payment closes on our side, recorded by the ledger, no dead letter."""
    services = ("intake_api", "gateway_worker", "ledger", "sandbox_gateway")
    async with own_stack(servers, tmp_path, services) as stack, aiohttp.ClientSession() as http:
        intake = IntakeClient(http, stack.url("intake_api"))
        _, kept, _ = await intake.create(wait=10)
        assert kept["checkout_url"], kept

        await restart(stack["sandbox_gateway"])

        assert (await sandbox_intent(http, kept["checkout_url"]))["status"] == "open"
        assert (await cancel(http, intake, kept["id"]))["status"] == "CANCELED"
        assert (await sandbox_intent(http, kept["checkout_url"]))["status"] == "canceled"

        _, lost, _ = await intake.create(wait=10)
        assert lost["checkout_url"], lost
        await restart(stack["sandbox_gateway"], SANDBOX_DATA_DIR=str(tmp_path / "empty-sandbox"))

        assert (await cancel(http, intake, lost["id"]))["status"] == "CANCELED"
        events = await intake.events(lost["id"])
        assert [e["source"] for e in events if e["event_type"] == "payment.status_changed"] == ["gateway"]
        gateway_log = stack["gateway_worker"].log_text()
        assert "the provider has no such intent" in gateway_log
        assert "dead-lettered" not in gateway_log
