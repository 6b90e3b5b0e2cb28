"""Authorize now, capture later, through the real services (docs/reference/capture.md): a manual payment paid on
the sandbox is AUTHORIZED; a capture of part of it makes it SUCCEEDED with what was taken; a void makes it
CANCELED; one left past AUTHORIZATION_TTL_SECONDS is voided at the sandbox and EXPIRED (authorization_expired).
Races of a capture with a void, and of two captures, end in one outcome that the sandbox and the ledger agree on.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.support.client import IntakeClient, payment_body, sandbox_intent, simulate_card
from tests.support.infra import Servers
from tests.support.own_stack import own_stack, payment_log_rows
from tests.support.processes import Stack

SERVICES = ("intake_api", "gateway_worker", "webhook_receiver", "ledger", "sandbox_gateway")
# Long enough for a capture or a void to finish first, short enough to watch a hold lapse.
AUTHORIZATION_TTL_SECONDS = 8


@pytest.fixture(scope="module")
async def capture_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("capture"),
        SERVICES,
        AUTHORIZATION_TTL_SECONDS=str(AUTHORIZATION_TTL_SECONDS),
        EXPIRY_SWEEP_INTERVAL_SECONDS="0.3",
    ) as stack:
        yield stack


@pytest.fixture
def intake(capture_stack: Stack, http: aiohttp.ClientSession) -> IntakeClient:
    return IntakeClient(http, capture_stack.url("intake_api"))


async def authorized(intake: IntakeClient, http: aiohttp.ClientSession, amount: int = 1999) -> dict[str, Any]:
    """A manual payment the customer paid with the 4242 card: AUTHORIZED, the money held at the sandbox."""
    status, payment, _ = await intake.create(payment_body(amount=amount, capture_method="manual"), wait=10)
    assert status == 201, payment
    assert (payment["capture_method"], payment["amount_capturable"], payment["amount_captured"]) == ("manual", 0, 0)
    # The checkout URL as a shop reads it: in the answer if it came within the wait, else by polling GET.
    checkout_url = payment["checkout_url"] or await intake.checkout_url(payment["id"])
    held = await simulate_card(http, checkout_url, "4242424242424242")
    assert held["status"] == "authorized"
    return await intake.in_status(payment["id"], "AUTHORIZED")


async def test_a_held_payment_captured_in_part_succeeds_with_what_was_taken(
    intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await authorized(intake, http)
    assert (payment["amount_capturable"], payment["amount_captured"], payment["failure_code"]) == (1999, 0, None)

    key = secrets.token_hex(8)
    status, answer, _ = await intake.capture(payment["id"], 1200, key=key)
    assert (status, answer["status"]) == (202, "AUTHORIZED")

    final = await intake.terminal(payment["id"])
    assert (final["status"], final["amount_captured"], final["amount_capturable"]) == ("SUCCEEDED", 1200, 0)
    intent = await sandbox_intent(http, payment["checkout_url"])
    assert (intent["status"], intent["amount_captured"]) == ("succeeded", 1200)
    # The capture is in the payment's history, and a retry with its key replays it: nothing is taken twice.
    assert "payment.capture_requested" in [e["event_type"] for e in await intake.events(payment["id"])]
    status, _, headers = await intake.capture(payment["id"], 1200, key=key)
    assert (status, headers.get("Idempotent-Replayed")) == (202, "true")
    status, problem, _ = await intake.capture(payment["id"], 100)
    assert (status, problem["type"].rpartition("/")[2]) == (409, "payment-not-capturable")
    assert (await sandbox_intent(http, payment["checkout_url"]))["amount_captured"] == 1200


async def test_a_held_payment_captured_without_an_amount_takes_all_of_it(
    intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await authorized(intake, http)

    status, _, _ = await intake.capture(payment["id"])

    assert status == 202
    final = await intake.terminal(payment["id"])
    assert (final["status"], final["amount_captured"]) == ("SUCCEEDED", 1999)


async def test_a_voided_hold_is_canceled_at_the_sandbox_and_here(
    intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await authorized(intake, http)

    status, _ = await intake.cancel(payment["id"])

    assert status == 202
    final = await intake.terminal(payment["id"])
    assert (final["status"], final["amount_captured"], final["amount_capturable"]) == ("CANCELED", 0, 0)
    assert (await sandbox_intent(http, payment["checkout_url"]))["status"] == "canceled"


async def test_a_hold_left_past_its_ttl_is_voided_and_expires_as_authorization_expired(
    capture_stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await authorized(intake, http)

    final = await intake.terminal(payment["id"], timeout=AUTHORIZATION_TTL_SECONDS + 20)

    assert (final["status"], final["failure_code"], final["amount_captured"]) == (
        "EXPIRED",
        "authorization_expired",
        0,
    )
    intent = await sandbox_intent(http, payment["checkout_url"])
    assert (intent["status"], intent["failure_code"]) == ("expired", "authorization_expired")
    sources = [(r["event_type"], r["source"]) for r in await payment_log_rows(capture_stack, payment["id"])]
    assert ("payment.expiration_due", "expiry") in sources


async def test_a_capture_and_a_void_sent_together_end_in_the_one_outcome_the_sandbox_chose(
    intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await authorized(intake, http)

    (capture_status, _, _), (cancel_status, _) = await asyncio.gather(
        intake.capture(payment["id"], 1500), intake.cancel(payment["id"])
    )

    assert (capture_status, cancel_status) == (202, 202)
    final = await intake.terminal(payment["id"])
    intent = await sandbox_intent(http, payment["checkout_url"])
    assert (final["status"], intent["status"]) in (("SUCCEEDED", "succeeded"), ("CANCELED", "canceled"))
    assert final["amount_captured"] == intent["amount_captured"] == (1500 if intent["status"] == "succeeded" else 0)
    await asyncio.sleep(1)  # every answer to the losing command is in by now: the outcome does not move
    assert (await intake.get(payment["id"]))["status"] == final["status"]


async def test_two_captures_with_different_keys_take_the_money_once(
    intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await authorized(intake, http)

    answers = await asyncio.gather(intake.capture(payment["id"], 1000), intake.capture(payment["id"], 1500))

    assert [status for status, _, _ in answers] == [202, 202]
    final = await intake.terminal(payment["id"])
    intent = await sandbox_intent(http, payment["checkout_url"])
    assert final["status"] == "SUCCEEDED" and intent["status"] == "succeeded"
    assert final["amount_captured"] == intent["amount_captured"] in (1000, 1500)


async def test_what_cannot_be_captured_is_refused_with_a_problem(
    intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    status, pending, _ = await intake.create(payment_body(capture_method="manual"), wait=10)
    assert status == 201
    status, problem, _ = await intake.capture(pending["id"])
    assert (status, problem["type"].rpartition("/")[2]) == (409, "payment-not-capturable")

    payment = await authorized(intake, http)
    status, problem, _ = await intake.capture(payment["id"], 2000)
    assert (status, problem["type"].rpartition("/")[2], problem["amount_capturable"]) == (
        422,
        "amount-exceeds-capturable",
        1999,
    )
    status, problem, _ = await intake.capture(payment["id"], 0)
    assert (status, problem["errors"][0]["field"]) == (422, "amount_to_capture")
    async with http.post(
        f"{intake.base_url}/v1/payments/{payment['id']}/capture", headers=intake.headers()
    ) as response:
        assert response.status == 400
        assert response.content_type == "application/problem+json"
    status, problem, _ = await intake.capture("pay_" + secrets.token_hex(16))
    assert status == 404
    key = secrets.token_hex(8)
    assert (await intake.capture(payment["id"], 1000, key=key))[0] == 202
    status, problem, _ = await intake.capture(payment["id"], 900, key=key)
    assert (status, problem["type"].rpartition("/")[2]) == (422, "idempotency-key-reuse")


async def test_an_automatic_payment_takes_all_of_its_amount_and_cannot_be_captured(
    intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    status, payment, _ = await intake.create(wait=10)
    assert status == 201 and payment["capture_method"] == "automatic"
    await simulate_card(http, payment["checkout_url"] or await intake.checkout_url(payment["id"]), "4242424242424242")

    final = await intake.terminal(payment["id"])

    assert (final["status"], final["amount_captured"], final["amount_capturable"]) == ("SUCCEEDED", 1999, 0)
    assert (await intake.capture(payment["id"]))[0] == 409


async def test_a_capture_racing_the_holds_expiry_ends_as_the_sandbox_decided(
    capture_stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await authorized(intake, http)
    lapses_at = datetime.fromisoformat(payment["expires_at"])
    # Sent just as the hold lapses: the sweep's void and the capture reach the sandbox about together.
    await asyncio.sleep(max(0.0, (lapses_at - datetime.now(UTC)).total_seconds() - 0.2))

    status, _, _ = await intake.capture(payment["id"], 1500)

    assert status in (202, 409)
    final = await intake.terminal(payment["id"], timeout=AUTHORIZATION_TTL_SECONDS + 20)
    intent = await sandbox_intent(http, payment["checkout_url"])
    assert (final["status"], intent["status"]) in (("SUCCEEDED", "succeeded"), ("EXPIRED", "expired"))
    assert final["amount_captured"] == intent["amount_captured"] == (1500 if intent["status"] == "succeeded" else 0)
    await asyncio.sleep(1)  # the losing command's answer is in by now: the outcome does not move
    assert (await intake.get(payment["id"]))["status"] == final["status"]
