"""`Prefer: wait=N`, reading a payment and its log, and cancelling it (docs/reference/intake-api.md), against the
running stack."""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
import pytest

from tests.support.client import IntakeClient, payment_body, simulate_card
from tests.support.problem_json import problem_of
from tests.support.processes import Stack, eventually

EVENT_FIELDS = {"event_id", "event_type", "from_status", "to_status", "source", "occurred_at", "recorded_at"}


async def test_prefer_wait_0_answers_at_once_with_checkout_url_null(intake: IntakeClient) -> None:
    status, payment, headers = await intake.create(wait=0)

    assert status == 201
    assert payment["checkout_url"] is None
    assert headers["Preference-Applied"] == "wait=0"


async def test_prefer_wait_holds_the_201_until_the_checkout_url_exists(intake: IntakeClient) -> None:
    status, payment, headers = await intake.create(wait=10)

    assert status == 201
    assert payment["checkout_url"].startswith("http") and "/pay/pi_" in payment["checkout_url"]
    assert headers["Preference-Applied"] == "wait=10"


async def test_without_prefer_the_wait_is_3_seconds(intake: IntakeClient) -> None:
    _, _, headers = await intake.create()

    assert headers["Preference-Applied"] == "wait=3"


@pytest.mark.parametrize(("prefer", "applied"), [("wait=60", "wait=10"), ("wait=soon", "wait=3")])
async def test_prefer_wait_outside_0_to_10_is_brought_into_range(
    http: aiohttp.ClientSession, intake: IntakeClient, prefer: str, applied: str
) -> None:
    headers = intake.headers(**{"Idempotency-Key": secrets.token_hex(8), "Prefer": prefer})
    async with http.post(f"{intake.base_url}/v1/payments", json=payment_body(), headers=headers) as response:
        assert response.status == 201
        assert response.headers["Preference-Applied"] == applied


async def test_a_replay_keeps_the_checkout_url_the_201_handed_out(intake: IntakeClient) -> None:
    key, body = secrets.token_hex(8), payment_body()
    _, first, _ = await intake.create(body, key=key, wait=10)

    _, replay, _ = await intake.create(body, key=key, wait=0)

    assert replay["checkout_url"] == first["checkout_url"] is not None


async def test_get_answers_the_payment_as_created(intake: IntakeClient) -> None:
    body = payment_body(customer_email="a@b.example")
    _, created, _ = await intake.create(body, wait=0)

    payment = await intake.get(created["id"])

    assert payment["id"] == created["id"] and payment["status"] == "PENDING"
    assert {k: payment[k] for k in body} == body
    assert payment["created_at"] == created["created_at"] and payment["expires_at"] == created["expires_at"]


async def test_get_of_an_unknown_payment_answers_404(http: aiohttp.ClientSession, intake: IntakeClient) -> None:
    async with http.get(f"{intake.base_url}/v1/payments/pay_{secrets.token_hex(16)}", headers=intake.headers()) as r:
        await problem_of(r, 404, "payment-not-found")


async def test_events_list_the_payments_log_oldest_first(http: aiohttp.ClientSession, intake: IntakeClient) -> None:
    _, payment, _ = await intake.create(wait=10)
    await simulate_card(http, payment["checkout_url"], "4242424242424242")

    async def whole_log() -> list[dict[str, Any]] | None:
        events = await intake.events(payment["id"])
        return events if len(events) == 3 else None

    events = await eventually(whole_log, what="the payment's three log entries")

    # The ledger may record the intent after the webhook (they race); the log is in the order recorded.
    assert {(e["event_type"], e["source"]) for e in events} == {
        ("payment.requested", "intake"),
        ("payment.intent_created", "gateway"),
        ("payment.status_changed", "webhook"),
    }
    assert events[0]["event_type"] == "payment.requested"
    assert all(EVENT_FIELDS <= set(event) for event in events)
    assert [e["recorded_at"] for e in events] == sorted(e["recorded_at"] for e in events)
    assert [e["to_status"] for e in events if e["event_type"] == "payment.status_changed"] == ["SUCCEEDED"]


async def test_events_of_an_unknown_payment_answer_404(http: aiohttp.ClientSession, intake: IntakeClient) -> None:
    url = f"{intake.base_url}/v1/payments/pay_{secrets.token_hex(16)}/events"
    async with http.get(url, headers=intake.headers()) as response:
        await problem_of(response, 404, "payment-not-found")


async def test_cancel_of_a_pending_payment_answers_202_and_the_gateway_cancels_it(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient
) -> None:
    _, payment, _ = await intake.create(wait=10)
    intent_id = payment["checkout_url"].rpartition("/pay/")[2]

    async def ledger_knows_the_intent() -> bool:
        return (await intake.get(payment["id"]))["checkout_url"] == payment["checkout_url"]

    await eventually(ledger_knows_the_intent, what="the ledger to hold the intent")

    async with http.post(f"{intake.base_url}/v1/payments/{payment['id']}/cancel", headers=intake.headers()) as r:
        assert r.status == 202
        assert (await r.json())["id"] == payment["id"]

    final = await intake.terminal(payment["id"])
    assert final["status"] == "CANCELED"
    async with http.get(f"{stack.url('sandbox_gateway')}/v1/intents/{intent_id}") as response:
        assert (await response.json())["status"] == "canceled"


async def test_cancel_of_a_terminal_payment_answers_409(http: aiohttp.ClientSession, intake: IntakeClient) -> None:
    _, payment, _ = await intake.create(wait=10)
    await simulate_card(http, payment["checkout_url"], "4242424242424242")
    await intake.terminal(payment["id"])

    async with http.post(f"{intake.base_url}/v1/payments/{payment['id']}/cancel", headers=intake.headers()) as r:
        await problem_of(r, 409, "payment-terminal")
    assert (await intake.get(payment["id"]))["status"] == "SUCCEEDED"


async def test_cancel_of_an_unknown_payment_answers_404(http: aiohttp.ClientSession, intake: IntakeClient) -> None:
    url = f"{intake.base_url}/v1/payments/pay_{secrets.token_hex(16)}/cancel"
    async with http.post(url, headers=intake.headers()) as response:
        await problem_of(response, 404, "payment-not-found")


async def test_openapi_json_is_served_as_openapi_3_1(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{stack.url('intake_api')}/openapi.json") as response:
        assert response.status == 200
        document = await response.json()

    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/v1/payments",
        "/v1/payments/summary",
        "/v1/payments/{payment_id}",
        "/v1/payments/{payment_id}/events",
        "/v1/payments/{payment_id}/cancel",
        "/v1/payments/{payment_id}/capture",
        "/v1/webhook_endpoints",
        "/v1/webhook_endpoints/{endpoint_id}",
        "/v1/webhook_endpoints/{endpoint_id}/rotate_secret",
        "/v1/events",
        "/v1/events/{event_id}",
        "/v1/events/{event_id}/redeliver",
        "/v1/payments/{payment_id}/refunds",
        "/v1/refunds",
        "/v1/refunds/{refund_id}",
    }
