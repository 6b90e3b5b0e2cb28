"""The webhook_receiver is down while the customer pays: the sandbox keeps retrying, and once the receiver is
back the payment ends SUCCEEDED, exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.support.client import IntakeClient, simulate_card
from tests.support.infra import Servers
from tests.support.own_stack import own_stack, payment_log_rows
from tests.support.processes import Stack, eventually

FAILED_ATTEMPTS_BEFORE_RESTART = 2


async def delivery_log(http: aiohttp.ClientSession, stack: Stack, checkout_url: str) -> list[dict[str, Any]]:
    intent_id = checkout_url.rpartition("/pay/")[2]
    async with http.get(f"{stack.url('sandbox_gateway')}/v1/intents/{intent_id}/webhooks") as response:
        assert response.status == 200, await response.text()
        return (await response.json())["data"]


async def test_a_payment_made_while_the_webhook_receiver_is_down_succeeds_once_it_is_back(
    servers: Servers, tmp_path: Path
) -> None:
    async with (
        own_stack(
            servers, tmp_path, ("intake_api", "gateway_worker", "webhook_receiver", "ledger", "sandbox_gateway")
        ) as stack,
        aiohttp.ClientSession() as http,
    ):
        intake = IntakeClient(http, stack.url("intake_api"))
        status, payment, _ = await intake.create(wait=10)
        assert status == 201 and payment["checkout_url"], payment
        receiver = stack["webhook_receiver"]

        receiver.stop()
        await simulate_card(http, payment["checkout_url"], "4242424242424242")

        async def failed_attempts() -> list[dict[str, Any]] | None:
            attempts = await delivery_log(http, stack, payment["checkout_url"])
            return attempts if len(attempts) >= FAILED_ATTEMPTS_BEFORE_RESTART else None

        failed = await eventually(failed_attempts, what="the sandbox retrying the webhook")
        assert all(a["status"] is None and a["error"] for a in failed), failed
        assert (await intake.get(payment["id"]))["status"] == "PENDING"

        receiver.start()
        await receiver.wait_ready()
        final = await intake.terminal(payment["id"], timeout=60)

        assert final["status"] == "SUCCEEDED"
        attempts = await delivery_log(http, stack, payment["checkout_url"])
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
        assert len({a["event_id"] for a in attempts}) == 1
        assert all(a["error"] for a in attempts[:-1]) and attempts[-1]["status"] == 200, attempts
        rows = await payment_log_rows(stack, payment["id"])
        applied = [r for r in rows if (r["event_type"], r["outcome"]) == ("payment.status_changed", "applied")]
        assert [r["to_status"] for r in applied] == ["SUCCEEDED"]
