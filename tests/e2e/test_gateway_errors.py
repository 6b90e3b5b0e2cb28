"""A provider that cannot be reached: the gateway_worker retries within its budget, then the payment FAILS."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from tests.support.client import IntakeClient
from tests.support.infra import Servers
from tests.support.own_stack import own_stack, payment_log_rows
from tests.support.processes import free_port

MAX_ATTEMPTS = 3


async def gateway_errors(http: aiohttp.ClientSession, worker_url: str, kind: str) -> float:
    async with http.get(f"{worker_url}/metrics") as response:
        text = await response.text()
    pattern = (
        r'^paystream_gateway_errors_total\{(?=[^}]*provider="sandbox")(?=[^}]*operation="create_intent")'
        rf'(?=[^}}]*kind="{kind}")[^}}]*\}} (\S+)$'
    )
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_an_unreachable_sandbox_fails_the_payment_with_gateway_error_after_the_retry_budget(
    servers: Servers, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    async with (
        own_stack(
            servers,
            tmp_path,
            ("intake_api", "gateway_worker", "ledger"),
            SANDBOX_URL=closed,
            GATEWAY_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
            GATEWAY_RETRY_BASE_SECONDS="0.1",
        ) as stack,
        aiohttp.ClientSession() as http,
    ):
        intake = IntakeClient(http, stack.url("intake_api"))
        status, payment, _ = await intake.create(wait=0)
        assert status == 201, payment

        final = await intake.terminal(payment["id"])

        assert (final["status"], final["failure_code"], final["checkout_url"]) == ("FAILED", "gateway_error", None)
        assert await gateway_errors(http, stack.url("gateway_worker"), "transient") == MAX_ATTEMPTS
        rows = await payment_log_rows(stack, payment["id"])
        assert [(r["event_type"], r["source"], r["outcome"], r["to_status"]) for r in rows] == [
            ("payment.requested", "intake", "applied", "PENDING"),
            ("payment.intent_failed", "gateway", "applied", "FAILED"),
        ]
