"""The whole flow with PAYMENT_PROVIDER=stripe, against a local fake of Stripe's API (never the real Stripe).

The fake runs in this process on a free port; the services run as real processes and reach it through
STRIPE_API_BASE. Webhooks are the fake's own, signed with STRIPE_WEBHOOK_SECRET as Stripe signs them.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.fakes.stripe_fake import StripeFake
from tests.support.client import IntakeClient, payment_body
from tests.support.infra import Servers
from tests.support.own_stack import own_stack, payment_log_rows
from tests.support.processes import Stack, eventually, free_port

API_KEY = "sk_test_x"
WEBHOOK_SECRET = "whsec_x"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[tuple[StripeFake, str]]:
    stripe = StripeFake(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET)
    runner = web.AppRunner(stripe.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield stripe, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def stripe_stack(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, fake: tuple[StripeFake, str]
) -> AsyncIterator[Stack]:
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("stripe"),
        ("intake_api", "gateway_worker", "webhook_receiver", "ledger"),
        PAYMENT_PROVIDER="stripe",
        STRIPE_API_KEY=API_KEY,
        STRIPE_API_BASE=fake[1],
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        GATEWAY_MAX_ATTEMPTS="3",
        GATEWAY_RETRY_BASE_SECONDS="0.1",
        # A payment whose webhook never came is asked about after a second (the async-failure test relies on it).
        RECONCILE_AFTER_SECONDS="1",
        RECONCILE_INTERVAL_SECONDS="1",
    ) as stack:
        yield stack


@pytest.fixture
async def intake(stripe_stack: Stack) -> AsyncIterator[IntakeClient]:
    async with aiohttp.ClientSession() as session:
        yield IntakeClient(session, stripe_stack.url("intake_api"))


def session_of(stripe: StripeFake, payment_id: str) -> dict[str, Any]:
    [session] = [s for s in stripe.sessions.values() if s["client_reference_id"] == payment_id]
    return session


async def paid_with_stripe(intake: IntakeClient) -> dict[str, Any]:
    status, payment, _ = await intake.create(wait=10)
    assert status == 201, payment
    assert payment["checkout_url"], "the checkout URL should be ready within Prefer: wait=10"
    return payment


async def intent_recorded(intake: IntakeClient, payment_id: str) -> bool:
    return any(e["event_type"] == "payment.intent_created" for e in await intake.events(payment_id))


async def test_with_stripe_the_checkout_url_is_the_checkout_sessions_url(
    intake: IntakeClient, fake: tuple[StripeFake, str]
) -> None:
    stripe, _ = fake
    payment = await paid_with_stripe(intake)

    session = session_of(stripe, payment["id"])
    assert payment["checkout_url"] == session["url"]
    assert (session["amount_total"], session["currency"], session["status"]) == (1999, "usd", "open")
    [create] = [
        r
        for r in stripe.requests
        if r.path == "/v1/checkout/sessions" and r.headers.get("Idempotency-Key") == payment["id"]
    ]
    assert create.headers["Authorization"] == f"Bearer {API_KEY}"


async def test_a_completed_session_webhook_makes_the_payment_succeeded(
    stripe_stack: Stack, intake: IntakeClient, fake: tuple[StripeFake, str]
) -> None:
    stripe, _ = fake
    payment = await paid_with_stripe(intake)
    session = session_of(stripe, payment["id"])

    stripe.complete_session(session["id"])
    await post_stripe_webhook(stripe_stack, intake, stripe.webhook(session["id"], "checkout.session.completed"))
    final = await intake.terminal(payment["id"])

    assert (final["status"], final["failure_code"]) == ("SUCCEEDED", None)
    conn = await asyncpg.connect(stripe_stack.env["DATABASE_URL"])
    try:
        row = await conn.fetchrow(
            "SELECT provider, provider_payment_id, status FROM ledger.payment_requests WHERE id = $1", payment["id"]
        )
    finally:
        await conn.close()
    assert tuple(row) == ("stripe", session["id"], "SUCCEEDED")


async def test_an_api_key_stripe_refuses_fails_the_payment_with_gateway_error_without_retrying(
    intake: IntakeClient, fake: tuple[StripeFake, str]
) -> None:
    stripe, _ = fake
    stripe.api_key = "sk_test_rotated"
    try:
        status, payment, _ = await intake.create(wait=10)
        assert status == 201, payment
        final = await intake.terminal(payment["id"])
    finally:
        stripe.api_key = API_KEY

    assert (final["status"], final["failure_code"]) == ("FAILED", "gateway_error")
    creates = [r for r in stripe.requests if r.headers.get("Idempotency-Key") == payment["id"]]
    assert len(creates) == 1


async def test_canceling_a_stripe_payment_expires_its_session_and_ends_canceled(
    intake: IntakeClient, fake: tuple[StripeFake, str]
) -> None:
    stripe, _ = fake
    payment = await paid_with_stripe(intake)
    # Stripe cannot be asked for a session by our payment id, so the cancel must carry the session's id, which
    # the intake takes from the ledger: a cancel sent before the ledger records it reaches no session.
    await eventually(lambda: intent_recorded(intake, payment["id"]), what="the ledger to record the session")

    async with intake.session.post(
        f"{intake.base_url}/v1/payments/{payment['id']}/cancel", headers=intake.headers()
    ) as response:
        assert response.status == 202, await response.text()
    final = await intake.terminal(payment["id"])

    assert final["status"] == "CANCELED"
    assert session_of(stripe, payment["id"])["status"] == "expired"


async def test_a_cancel_sent_while_stripe_is_still_opening_the_session_expires_it_once_it_is_recorded(
    intake: IntakeClient, fake: tuple[StripeFake, str]
) -> None:
    # Stripe offers no lookup of a session by our payment id (no list filter on client_reference_id, no Search for
    # Checkout Sessions), so the gateway cannot find one for a cancel that names none. The session is closed by
    # the id the ledger records: when it records a session for a payment already canceled, it asks the gateway to
    # expire that session (services/ledger/state_machine.py, intent_left_open).
    stripe, _ = fake
    stripe.stall()
    try:
        status, payment, _ = await intake.create()
        assert status == 201 and payment["checkout_url"] is None, payment

        async def create_reached_stripe() -> bool:
            return any(r.headers.get("Idempotency-Key") == payment["id"] for r in stripe.requests)

        await eventually(create_reached_stripe, what="the create to reach Stripe")
        async with intake.session.post(
            f"{intake.base_url}/v1/payments/{payment['id']}/cancel", headers=intake.headers()
        ) as response:
            assert response.status == 202, await response.text()
        assert not await intent_recorded(intake, payment["id"])
    finally:
        stripe.heal()
    final = await intake.terminal(payment["id"])
    assert final["status"] == "CANCELED"

    async def session_closed() -> str | None:
        sessions = [s for s in stripe.sessions.values() if s["client_reference_id"] == payment["id"]]
        return sessions[0]["status"] if sessions and sessions[0]["status"] != "open" else None

    assert await eventually(session_closed, timeout=20, what="the session to be closed at Stripe") == "expired"
    session = session_of(stripe, payment["id"])
    assert any(r.path == f"/v1/checkout/sessions/{session['id']}/expire" for r in stripe.requests)


async def test_a_payment_link_session_completing_is_answered_200_ignored(
    stripe_stack: Stack, intake: IntakeClient, fake: tuple[StripeFake, str]
) -> None:
    # A session another integration (a Payment Link) opened on the same account: Stripe publishes such a session
    # with no client_reference_id and empty metadata. A 400 would make Stripe resend it for days.
    stripe, _ = fake
    session = stripe.foreign_session(status="complete", payment_status="paid", amount_total=500, currency="usd")
    signed = stripe.event("checkout.session.completed", stripe.served(session))
    answer = await post_stripe_webhook(stripe_stack, intake, signed)
    assert answer["outcome"] == "ignored"


async def test_an_async_payment_that_failed_without_a_webhook_ends_failed_by_reconciliation(
    stripe_stack: Stack, intake: IntakeClient, fake: tuple[StripeFake, str]
) -> None:
    # The session stays complete/unpaid for good once an asynchronous method fails; only its PaymentIntent says
    # so. Reconciliation used to find it "still open" at every sweep.
    stripe, _ = fake
    payment = await paid_with_stripe(intake)
    session = session_of(stripe, payment["id"])
    stripe.complete_session(session["id"], payment_status="unpaid")
    stripe.settle_async_payment(session["id"], succeeded=False)  # and checkout.session.async_payment_failed is lost

    final = await intake.terminal(payment["id"])

    assert (final["status"], final["failure_code"]) == ("FAILED", "insufficient_funds")
    changes = [
        (row["source"], row["to_status"])
        for row in await payment_log_rows(stripe_stack, payment["id"])
        if row["event_type"] == "payment.status_changed" and row["outcome"] == "applied"
    ]
    assert changes == [("reconciliation", "FAILED")]


async def post_stripe_webhook(
    stack: Stack, intake: IntakeClient, signed: tuple[bytes, dict[str, str]]
) -> dict[str, Any]:
    """POST a signed Stripe webhook to the webhook_receiver; it must take it (200): its answer."""
    body, headers = signed
    async with intake.session.post(
        f"{stack.url('webhook_receiver')}/webhooks/stripe",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
    ) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def held_with_stripe(stack: Stack, intake: IntakeClient, stripe: StripeFake) -> tuple[dict[str, Any], str]:
    """A manual payment whose Checkout the customer completed: the PaymentIntent holds it, its webhook said so."""
    status, payment, _ = await intake.create(payment_body(capture_method="manual"), wait=10)
    assert status == 201 and payment["checkout_url"], payment
    session = session_of(stripe, payment["id"])
    stripe.authorize_session(session["id"])
    await post_stripe_webhook(
        stack, intake, stripe.intent_webhook(session["id"], "payment_intent.amount_capturable_updated")
    )
    return await intake.in_status(payment["id"], "AUTHORIZED"), session["id"]


async def test_a_manual_stripe_payment_is_held_then_captured_in_part_at_stripe(
    stripe_stack: Stack, intake: IntakeClient, fake: tuple[StripeFake, str]
) -> None:
    stripe, _ = fake
    payment, session_id = await held_with_stripe(stripe_stack, intake, stripe)
    assert payment["amount_capturable"] == 1999

    status, _, _ = await intake.capture(payment["id"], 1200)

    assert status == 202
    final = await intake.terminal(payment["id"])
    intent = stripe.payment_intents[stripe.sessions[session_id]["payment_intent"]]
    assert (final["status"], final["amount_captured"]) == ("SUCCEEDED", 1200)
    assert (intent["status"], intent["amount_received"], intent["capture_method"]) == ("succeeded", 1200, "manual")
    # Stripe's own word on the capture, arriving after ours, changes nothing.
    await post_stripe_webhook(stripe_stack, intake, stripe.intent_webhook(session_id, "payment_intent.succeeded"))
    assert (await intake.get(payment["id"]))["amount_captured"] == 1200


async def test_a_voided_stripe_hold_cancels_its_payment_intent(
    stripe_stack: Stack, intake: IntakeClient, fake: tuple[StripeFake, str]
) -> None:
    stripe, _ = fake
    payment, session_id = await held_with_stripe(stripe_stack, intake, stripe)

    status, _ = await intake.cancel(payment["id"])

    assert status == 202
    final = await intake.terminal(payment["id"])
    intent = stripe.payment_intents[stripe.sessions[session_id]["payment_intent"]]
    assert final["status"] == "CANCELED"
    assert (intent["status"], intent["cancellation_reason"]) == ("canceled", "requested_by_customer")


async def stripe_refund_of(stripe: StripeFake, refund_id: str) -> dict[str, Any] | None:
    found = [r for r in stripe.refunds.values() if (r.get("metadata") or {}).get("refund_id") == refund_id]
    return found[0] if found else None


async def test_with_stripe_refunds_are_asked_by_refund_id_and_settled_by_stripes_refund_webhooks(
    stripe_stack: Stack, intake: IntakeClient, fake: tuple[StripeFake, str]
) -> None:
    stripe, _ = fake
    payment = await paid_with_stripe(intake)
    session = session_of(stripe, payment["id"])
    stripe.complete_session(session["id"])
    await post_stripe_webhook(stripe_stack, intake, stripe.webhook(session["id"], "checkout.session.completed"))
    assert (await intake.terminal(payment["id"]))["status"] == "SUCCEEDED"

    outcomes = []
    for amount, succeeded in ((500, True), (700, False)):
        status, refund, _ = await intake.refund(payment["id"], {"amount": amount, "reason": "requested_by_customer"})
        assert status == 201, refund
        theirs = await eventually(
            functools.partial(stripe_refund_of, stripe, refund["id"]), timeout=20, what="Stripe's refund"
        )
        assert (theirs["amount"], theirs["payment_intent"]) == (amount, session["payment_intent"])
        [post] = [
            r for r in stripe.requests if r.path == "/v1/refunds" and r.headers.get("Idempotency-Key") == refund["id"]
        ]
        assert post.params["metadata"] == {"payment_id": payment["id"], "refund_id": refund["id"]}
        settled = stripe.settle_refund(theirs["id"], succeeded=succeeded, failure_reason="expired_or_canceled_card")
        await post_stripe_webhook(
            stripe_stack, intake, stripe.event("refund.updated" if succeeded else "refund.failed", settled)
        )
        outcomes.append(await intake.refund_final(refund["id"]))

    assert [(r["status"], r["failure_code"]) for r in outcomes] == [
        ("succeeded", None),
        ("failed", "expired_or_canceled_card"),
    ]
    assert (await intake.get(payment["id"]))["amount_refunded"] == 500
