"""Holding a POST for its checkout URL: the waiter is woken by the gateway's outcome for its payment only."""

from __future__ import annotations

import asyncio

from services.intake_api.intents import INTAKE_MESSAGES, IntentOutcome, IntentWaiters
from shared.broker import Delivery
from shared.events import Envelope, PaymentIntentCreated, PaymentIntentFailed

DELIVERY = Delivery(attempt=1, max_attempts=1, redelivered=False)


def created(payment_id: str) -> Envelope:
    return Envelope.wrap(
        PaymentIntentCreated(provider="sandbox", provider_payment_id="pi_1", checkout_url="http://sandbox/pay/pi_1"),
        payment_id=payment_id,
        source="gateway",
    )


async def test_the_intent_created_for_a_waiting_payment_hands_back_its_checkout_url() -> None:
    waiters = IntentWaiters()
    future = waiters.register("pay_1")
    waiting = asyncio.create_task(waiters.wait("pay_1", future, 5))

    await INTAKE_MESSAGES.dispatcher(waiters)(created("pay_1"), DELIVERY)

    assert await waiting == IntentOutcome("http://sandbox/pay/pi_1", None)


async def test_a_failed_intent_hands_back_its_failure_code() -> None:
    waiters = IntentWaiters()
    future = waiters.register("pay_1")
    failed = PaymentIntentFailed(provider="sandbox", failure_code="gateway_error", reason="500")

    await INTAKE_MESSAGES.dispatcher(waiters)(Envelope.wrap(failed, payment_id="pay_1", source="gateway"), DELIVERY)

    assert await waiters.wait("pay_1", future, 5) == IntentOutcome(None, "gateway_error")


async def test_an_outcome_for_another_payment_does_not_wake_the_waiter() -> None:
    waiters = IntentWaiters()
    future = waiters.register("pay_1")

    await INTAKE_MESSAGES.dispatcher(waiters)(created("pay_2"), DELIVERY)

    assert await waiters.wait("pay_1", future, 0.05) is None


async def test_wait_0_returns_at_once_even_when_the_outcome_is_there() -> None:
    waiters = IntentWaiters()
    future = waiters.register("pay_1")
    await INTAKE_MESSAGES.dispatcher(waiters)(created("pay_1"), DELIVERY)

    assert await waiters.wait("pay_1", future, 0) is None


async def test_a_finished_wait_forgets_the_payment() -> None:
    waiters = IntentWaiters()
    future = waiters.register("pay_1")

    await waiters.wait("pay_1", future, 0.01)

    assert future.cancelled()
    await INTAKE_MESSAGES.dispatcher(waiters)(created("pay_1"), DELIVERY)  # nobody waits any more: ignored, no error
