"""Expiry through the real services (PAYMENT_TTL_SECONDS=2): the ledger's sweep sends expiration due, the
gateway_worker closes the sandbox's intent and publishes what the sandbox says, so an unpaid payment ends
EXPIRED (and a late card is refused) while one paid just before the end ends SUCCEEDED.

The sandbox's webhooks are delayed (fault `webhook_delay_seconds`) so that the sweep is first to act, as it is
whenever a webhook is late; the webhook still arrives afterwards and changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.client import IntakeClient, simulate_card
from tests.support.infra import Servers
from tests.support.own_stack import own_stack, payment_log_rows
from tests.support.processes import Stack, eventually

SERVICES = ("intake_api", "gateway_worker", "webhook_receiver", "ledger", "sandbox_gateway")
WEBHOOK_DELAY_SECONDS = 3


@pytest.fixture(scope="module")
async def expiring_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with (
        own_stack(
            servers,
            tmp_path_factory.mktemp("expiry"),
            SERVICES,
            PAYMENT_TTL_SECONDS="2",
            EXPIRY_SWEEP_INTERVAL_SECONDS="0.3",
        ) as stack,
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.url('sandbox_gateway')}/_sandbox/faults",
            json={"webhook_delay_seconds": WEBHOOK_DELAY_SECONDS},
            headers=stack.sandbox_admin_headers,
        ) as response,
    ):
        assert response.status == 200, await response.text()
        yield stack


@pytest.fixture
def intake(expiring_stack: Stack, http: aiohttp.ClientSession) -> IntakeClient:
    return IntakeClient(http, expiring_stack.url("intake_api"))


async def new_payment(intake: IntakeClient) -> dict[str, Any]:
    status, payment, _ = await intake.create(wait=10)
    assert status == 201 and payment["checkout_url"], payment
    return payment


async def test_an_unpaid_payment_expires_and_the_sandbox_then_refuses_the_card(
    expiring_stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await new_payment(intake)

    final = await intake.terminal(payment["id"], timeout=20)

    assert (final["status"], final["failure_code"]) == ("EXPIRED", "expired")
    rows = [
        (r["event_type"], r["source"], r["from_status"], r["to_status"], r["outcome"])
        for r in await payment_log_rows(expiring_stack, payment["id"])
    ]
    assert ("payment.expiration_due", "expiry") in [(r[0], r[1]) for r in rows]
    assert [r for r in rows if r[0] == "payment.status_changed" and r[4] == "applied"] == [
        ("payment.status_changed", "expiry", "PENDING", "EXPIRED", "applied")
    ]

    base, _, intent_id = payment["checkout_url"].rpartition("/pay/")
    async with http.post(f"{base}/v1/intents/{intent_id}/simulate", json={"card_number": "4242424242424242"}) as r:
        assert r.status == 409, await r.text()

    async def webhook_recorded() -> list[tuple[Any, ...]] | None:
        late = [r for r in await payment_log_rows(expiring_stack, payment["id"]) if r["source"] == "webhook"]
        return [(r["event_type"], r["to_status"], r["outcome"]) for r in late] or None

    # The sandbox's own (delayed) webhook about the expiry arrives last and changes nothing.
    assert await eventually(webhook_recorded, timeout=WEBHOOK_DELAY_SECONDS + 10, what="the delayed webhook") == [
        ("payment.status_changed", "EXPIRED", "ignored: duplicate: already EXPIRED")
    ]
    assert (await intake.get(payment["id"]))["status"] == "EXPIRED"


async def test_a_payment_paid_just_before_its_expiry_ends_succeeded(
    expiring_stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await new_payment(intake)

    await simulate_card(http, payment["checkout_url"], "4242424242424242")
    final = await intake.terminal(payment["id"], timeout=20)

    assert (final["status"], final["failure_code"]) == ("SUCCEEDED", None)
    rows = await payment_log_rows(expiring_stack, payment["id"])
    # The expiry asked the sandbox to close the intent and learnt it had been paid. (The command's own row may
    # be recorded after the answer it brought, and then says "ignored: already terminal": either is right.)
    assert ("payment.expiration_due", "expiry") in [(r["event_type"], r["source"]) for r in rows]
    assert [
        (r["source"], r["from_status"], r["to_status"])
        for r in rows
        if r["event_type"] == "payment.status_changed" and r["outcome"] == "applied"
    ] == [("expiry", "PENDING", "SUCCEEDED")]
