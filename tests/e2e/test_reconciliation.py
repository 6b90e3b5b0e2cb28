"""Reconciliation through the real services: every webhook the sandbox sends fails (SANDBOX_WEBHOOK_URL points at
a closed port), yet a paid or declined payment is resolved by asking the gateway (RECONCILE_AFTER_SECONDS=1),
with `source` `reconciliation` in its log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.client import IntakeClient, simulate_card
from tests.support.infra import Servers
from tests.support.own_stack import own_stack, payment_log_rows
from tests.support.processes import Stack, eventually, free_port

SERVICES = ("intake_api", "gateway_worker", "ledger", "sandbox_gateway")


@pytest.fixture(scope="module")
async def webhookless_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("reconciliation"),
        SERVICES,
        SANDBOX_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/webhooks/sandbox",  # nothing listens there
        RECONCILE_AFTER_SECONDS="1",
        RECONCILE_INTERVAL_SECONDS="1",
        EXPIRY_SWEEP_INTERVAL_SECONDS="0.3",
    ) as stack:
        yield stack


@pytest.fixture
def intake(webhookless_stack: Stack, http: aiohttp.ClientSession) -> IntakeClient:
    return IntakeClient(http, webhookless_stack.url("intake_api"))


async def status_changes(stack: Stack, payment_id: str) -> list[tuple[str, str, str, str]]:
    rows = await payment_log_rows(stack, payment_id)
    return [
        (r["source"], r["from_status"], r["to_status"], r["outcome"])
        for r in rows
        if r["event_type"] == "payment.status_changed"
    ]


async def webhook_attempts(http: aiohttp.ClientSession, stack: Stack, checkout_url: str) -> list[dict[str, Any]]:
    intent_id = checkout_url.rpartition("/pay/")[2]
    async with http.get(f"{stack.url('sandbox_gateway')}/v1/intents/{intent_id}/webhooks") as response:
        assert response.status == 200, await response.text()
        return (await response.json())["data"]


async def paid_with(intake: IntakeClient, http: aiohttp.ClientSession, card: str) -> dict[str, Any]:
    status, payment, _ = await intake.create(wait=10)
    assert status == 201 and payment["checkout_url"], payment
    await simulate_card(http, payment["checkout_url"], card)
    return payment


async def test_a_paid_payment_whose_webhooks_all_fail_is_resolved_by_reconciliation(
    webhookless_stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await paid_with(intake, http, "4242424242424242")

    final = await intake.terminal(payment["id"], timeout=20)

    assert (final["status"], final["failure_code"]) == ("SUCCEEDED", None)
    assert await status_changes(webhookless_stack, payment["id"]) == [
        ("reconciliation", "PENDING", "SUCCEEDED", "applied")
    ]
    attempts = await webhook_attempts(http, webhookless_stack, payment["checkout_url"])
    assert attempts and all(a["status"] is None and a["error"] for a in attempts), attempts


async def test_a_declined_payment_whose_webhooks_all_fail_is_resolved_failed_by_reconciliation(
    webhookless_stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await paid_with(intake, http, "4000000000000002")

    final = await intake.terminal(payment["id"], timeout=20)

    assert (final["status"], final["failure_code"]) == ("FAILED", "card_declined")
    assert await status_changes(webhookless_stack, payment["id"]) == [
        ("reconciliation", "PENDING", "FAILED", "applied")
    ]


async def test_an_open_payment_is_asked_about_but_stays_pending(webhookless_stack: Stack, intake: IntakeClient) -> None:
    status, payment, _ = await intake.create(wait=10)
    assert status == 201 and payment["checkout_url"], payment

    async def asked_twice() -> bool:
        events = await intake.events(payment["id"])
        return [e["event_type"] for e in events].count("payment.reconciliation_due") >= 2

    await eventually(asked_twice, timeout=20, what="two reconciliation rounds")

    assert (await intake.get(payment["id"]))["status"] == "PENDING"
    assert await status_changes(webhookless_stack, payment["id"]) == []


async def test_a_refund_whose_webhooks_all_fail_is_settled_by_reconciliation(
    webhookless_stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await paid_with(intake, http, "4242424242424242")
    assert (await intake.terminal(payment["id"], timeout=20))["status"] == "SUCCEEDED"
    failing = await paid_with(intake, http, "4000000000005126")
    assert (await intake.terminal(failing["id"], timeout=20))["status"] == "SUCCEEDED"

    status, refund, _ = await intake.refund(payment["id"], {"amount": 700})
    assert status == 201, refund
    status, refused, _ = await intake.refund(failing["id"])
    assert status == 201, refused

    assert (await intake.refund_final(refund["id"], timeout=30))["status"] == "succeeded"
    failed = await intake.refund_final(refused["id"], timeout=30)
    assert (failed["status"], failed["failure_code"]) == ("failed", "expired_or_canceled_card")
    for payment_id, outcome in ((payment["id"], "succeeded"), (failing["id"], "failed")):
        events = await intake.events(payment_id)
        assert [e["source"] for e in events if e["event_type"] == "payment.refund_status_changed"] == [
            "reconciliation"
        ], events
        assert any(e["event_type"] == "payment.refund_reconciliation_due" for e in events)
        assert [e["refund_status"] for e in events if e["event_type"] == "payment.refund_status_changed"] == [outcome]
    assert (await intake.get(payment["id"]))["amount_refunded"] == 700
