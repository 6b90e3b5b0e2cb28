"""Every sandbox test card through the whole flow: intake → gateway_worker → sandbox → webhook → ledger."""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest

from tests.support.client import IntakeClient, simulate_card
from tests.support.own_stack import payment_log_rows
from tests.support.processes import Stack


async def status_changes(stack: Stack, payment_id: str) -> list[asyncpg.Record]:
    return [r for r in await payment_log_rows(stack, payment_id) if r["event_type"] == "payment.status_changed"]


async def new_payment(intake: IntakeClient) -> dict:
    status, payment, _ = await intake.create(wait=10)
    assert status == 201, payment
    assert payment["checkout_url"], "the checkout URL should be ready within Prefer: wait=10"
    return payment


@pytest.mark.parametrize(
    ("card", "final_status", "failure_code"),
    [
        ("4242424242424242", "SUCCEEDED", None),
        ("4000000000000002", "FAILED", "card_declined"),
        ("4000000000009995", "FAILED", "insufficient_funds"),
    ],
    ids=["4242-succeeds", "0002-card-declined", "9995-insufficient-funds"],
)
async def test_a_test_card_settles_the_payment_in_the_ledger(
    stack: Stack,
    intake: IntakeClient,
    http: aiohttp.ClientSession,
    card: str,
    final_status: str,
    failure_code: str | None,
) -> None:
    payment = await new_payment(intake)

    await simulate_card(http, payment["checkout_url"], card)
    final = await intake.terminal(payment["id"])

    assert (final["status"], final["failure_code"]) == (final_status, failure_code)
    rows = await status_changes(stack, payment["id"])
    assert [(r["to_status"], r["source"], r["outcome"]) for r in rows] == [(final_status, "webhook", "applied")]


async def test_a_luhn_invalid_card_is_refused_with_422_and_the_payment_stays_pending(
    stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await new_payment(intake)
    base, _, intent_id = payment["checkout_url"].rpartition("/pay/")

    async with http.post(f"{base}/v1/intents/{intent_id}/simulate", json={"card_number": "4242424242424241"}) as r:
        assert r.status == 422
        problem = await r.json(content_type=None)
    async with http.get(f"{base}/v1/intents/{intent_id}") as r:
        intent = await r.json()

    assert [e["field"] for e in problem["errors"]] == ["card_number"]
    assert intent["status"] == "open"
    assert (await intake.get(payment["id"]))["status"] == "PENDING"
    assert await status_changes(stack, payment["id"]) == []
