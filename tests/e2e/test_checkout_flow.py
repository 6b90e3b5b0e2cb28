"""The walking skeleton: a payment from POST to the ledger through every service as a real process."""

from __future__ import annotations

from tests.support.client import IntakeClient, simulate_card
from tests.support.own_stack import payment_log_rows
from tests.support.processes import Stack


async def test_paying_with_4242_ends_succeeded_in_the_ledger(stack: Stack, intake: IntakeClient, http) -> None:
    status, payment, headers = await intake.create(wait=10)
    assert status == 201, payment
    assert headers["Location"] == f"/v1/payments/{payment['id']}"
    assert payment["status"] == "PENDING"
    assert payment["checkout_url"], "the checkout URL should be ready within Prefer: wait=10"

    await simulate_card(http, payment["checkout_url"], "4242424242424242")
    final = await intake.terminal(payment["id"])

    assert final["status"] == "SUCCEEDED"
    assert final["failure_code"] is None
    rows = await payment_log_rows(stack, payment["id"])
    # The ledger handles events concurrently: the intent and the outcome may be recorded in either order.
    assert sorted((r["event_type"], r["source"], r["outcome"]) for r in rows) == [
        ("payment.intent_created", "gateway", "applied"),
        ("payment.requested", "intake", "applied"),
        ("payment.status_changed", "webhook", "applied"),
    ]
    assert rows[0]["event_type"] == "payment.requested"
    success = next(r for r in rows if r["event_type"] == "payment.status_changed")
    assert (success["from_status"], success["to_status"]) == ("PENDING", "SUCCEEDED")


async def test_declined_card_ends_failed_with_card_declined(intake: IntakeClient, http) -> None:
    status, payment, _ = await intake.create(wait=10)
    assert status == 201

    await simulate_card(http, payment["checkout_url"], "4000000000000002")
    final = await intake.terminal(payment["id"])

    assert final["status"] == "FAILED"
    assert final["failure_code"] == "card_declined"
