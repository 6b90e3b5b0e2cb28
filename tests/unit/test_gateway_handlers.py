"""The gateway_worker's rules, with a fake provider and a list standing in for the broker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import pytest
from prometheus_client import REGISTRY

from services.gateway_worker.handlers import GATEWAY_MESSAGES, GatewayHandlers
from shared.broker import Delivery, Handler, PoisonMessage, RetryLater
from shared.events import (
    CancelPayment,
    CapturePayment,
    Envelope,
    ExpirePayment,
    Message,
    PaymentIntentCreated,
    PaymentIntentFailed,
    PaymentRequested,
    PaymentStatus,
    PaymentStatusChanged,
    ReconcilePayment,
    ReconcileRefund,
    RefundRequested,
    Source,
)
from shared.providers.base import ProviderIntent
from shared.providers.errors import NoSuchIntentError, PermanentGatewayError, TransientGatewayError
from tests.fakes.provider import FakeCapturingProvider, FakeProvider
from tests.support.messages import FIRST_DELIVERY, Published, payment_requested

LAST = Delivery(attempt=5, max_attempts=5, redelivered=False)


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def handlers(provider: FakeProvider, published: Published) -> Handler:
    """The gateway_worker as the broker calls it: its registry dispatching to GatewayHandlers."""

    return GATEWAY_MESSAGES.dispatcher(GatewayHandlers({"fake": provider}, "fake", published))


def command(message: Message, payment_id: str) -> Envelope:
    source: Source = "expiry" if isinstance(message, ExpirePayment) else "merchant"
    return Envelope.wrap(message, payment_id=payment_id, source=source)


async def open_intent(handlers: Handler, provider: FakeProvider, published: Published) -> tuple[str, str]:
    """A payment with an open intent at the provider, and what opening it published cleared away:
    (payment id, intent id)."""
    envelope = payment_requested()
    await handlers(envelope, FIRST_DELIVERY)
    published.clear()
    return envelope.payment_id, provider.by_payment[envelope.payment_id]


def only(published: Published) -> tuple[Envelope, Message]:
    assert len(published) == 1, [e.type for e in published]
    return published[0], published[0].message()


# --- opening the intent ---------------------------------------------------------------------------------


async def test_a_payment_request_opens_an_intent_with_the_payment_id_as_idempotency_key(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    envelope = payment_requested()
    await handlers(envelope, FIRST_DELIVERY)

    [request] = provider.requests
    assert request.payment_id == envelope.payment_id
    assert (request.amount, request.currency, request.reference) == (1999, "USD", "order-42")
    _, message = only(published)
    assert isinstance(message, PaymentIntentCreated)
    assert message.provider_payment_id == provider.by_payment[envelope.payment_id]
    assert message.checkout_url == f"https://fake.example/pay/{message.provider_payment_id}"


async def test_the_trace_context_of_the_message_rides_with_the_intent(
    handlers: Handler, provider: FakeProvider
) -> None:
    await handlers(payment_requested(), FIRST_DELIVERY)
    assert provider.requests[0].metadata == FIRST_DELIVERY.trace_headers


async def test_the_intent_names_the_merchant_as_merchant_names_says_or_by_its_id(
    provider: FakeProvider, published: Published
) -> None:
    named = GatewayHandlers({"fake": provider}, "fake", published, merchant_names={"demo": "Ada's Books"})
    await GATEWAY_MESSAGES.dispatcher(named)(payment_requested(), FIRST_DELIVERY)
    unnamed = GatewayHandlers({"fake": provider}, "fake", published)
    await GATEWAY_MESSAGES.dispatcher(unnamed)(payment_requested(), FIRST_DELIVERY)
    assert [r.merchant_name for r in provider.requests] == ["Ada's Books", "demo"]


async def test_a_payment_request_handled_twice_publishes_the_same_event_twice(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    envelope = payment_requested()
    await handlers(envelope, FIRST_DELIVERY)
    await handlers(envelope, replace(FIRST_DELIVERY, redelivered=True))

    assert len(provider.intents) == 1
    assert [e.type for e in published] == ["payment.intent_created"] * 2
    assert published[0].id == published[1].id


WAITING = replace(FIRST_DELIVERY, reply_to="reply.intake_api.0123456789ab")


async def test_the_intent_created_goes_to_the_waiting_intake_in_the_same_publish(
    handlers: Handler, published: Published
) -> None:
    await handlers(payment_requested(), WAITING)

    sent, message = only(published)
    assert isinstance(message, PaymentIntentCreated)
    assert published.replies[sent.id] == ("reply.intake_api.0123456789ab",)


@pytest.mark.parametrize(
    "error",
    [PermanentGatewayError("POST /v1/intents answered 422"), TransientGatewayError("connection refused")],
    ids=["permanent", "transient-on-the-last-attempt"],
)
async def test_a_failed_intent_goes_to_the_waiting_intake_too(
    handlers: Handler, provider: FakeProvider, published: Published, error: Exception
) -> None:
    provider.error = error
    await handlers(payment_requested(), replace(WAITING, attempt=5))

    sent, message = only(published)
    assert isinstance(message, PaymentIntentFailed)
    assert published.replies[sent.id] == ("reply.intake_api.0123456789ab",)


async def test_an_outcome_nobody_waits_for_goes_to_its_subscribers_only(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    payment_id, intent_id = await open_intent(handlers, provider, published)
    await handlers(command(CancelPayment(provider="fake", provider_payment_id=intent_id), payment_id), WAITING)

    # Only an intent outcome answers a waiting intake; a cancel's outcome goes to its subscribers alone.
    sent, message = only(published)
    assert isinstance(message, PaymentStatusChanged)
    assert published.replies[sent.id] == ()


async def test_a_transient_error_asks_for_a_retry_and_publishes_nothing(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    provider.error = TransientGatewayError("POST /v1/intents answered 503")
    with pytest.raises(RetryLater):
        await handlers(payment_requested(), FIRST_DELIVERY)
    assert published == []


async def test_a_transient_error_on_the_last_attempt_fails_the_intent_with_gateway_error(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    provider.error = TransientGatewayError("connection refused")
    envelope = payment_requested()
    await handlers(envelope, LAST)

    sent, message = only(published)
    assert isinstance(message, PaymentIntentFailed)
    assert message.failure_code == "gateway_error"
    assert "retries exhausted" in message.reason
    assert (sent.payment_id, sent.source) == (envelope.payment_id, "gateway")


async def test_a_permanent_error_fails_the_intent_on_the_first_attempt(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    provider.error = PermanentGatewayError("POST /v1/intents answered 422")
    await handlers(payment_requested(), FIRST_DELIVERY)

    _, message = only(published)
    assert isinstance(message, PaymentIntentFailed)
    assert message.failure_code == "gateway_error"
    assert "422" in message.reason


async def test_an_intent_without_a_checkout_url_fails_the_intent(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    provider.checkout_url = None
    await handlers(payment_requested(), FIRST_DELIVERY)
    _, message = only(published)
    assert isinstance(message, PaymentIntentFailed)


@pytest.mark.parametrize("echo", [(1998, "USD"), (1999, "EUR")], ids=["amount", "currency"])
async def test_an_intent_for_another_amount_or_currency_fails_the_payment_as_amount_mismatch_and_is_counted(
    handlers: Handler, provider: FakeProvider, published: Published, echo: tuple[int, str]
) -> None:
    provider.echo = echo
    before = REGISTRY.get_sample_value("paystream_amount_mismatches_total") or 0.0

    await handlers(payment_requested(), FIRST_DELIVERY)

    _, message = only(published)
    assert isinstance(message, PaymentIntentFailed)
    assert message.failure_code == "amount_mismatch"
    assert f"{echo[0]} {echo[1]}" in message.reason
    assert REGISTRY.get_sample_value("paystream_amount_mismatches_total") == before + 1


async def test_an_intent_echoing_the_currency_in_lower_case_is_no_mismatch(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    provider.echo = (1999, "usd")
    await handlers(payment_requested(), FIRST_DELIVERY)
    _, message = only(published)
    assert isinstance(message, PaymentIntentCreated)


# --- cancel and expiration due: ask the provider, publish what it says ------------------------------------


def closing(kind: type[CancelPayment] | type[ExpirePayment], payment_id: str, intent_id: str) -> Envelope:
    """The command to cancel or expire the payment's intent at the fake provider."""
    return command(kind(provider="fake", provider_payment_id=intent_id), payment_id)


def reconciling(payment_id: str, intent_id: str) -> Envelope:
    return Envelope.wrap(
        ReconcilePayment(provider="fake", provider_payment_id=intent_id), payment_id=payment_id, source="reconciliation"
    )


def only_change(published: Published) -> tuple[Envelope, PaymentStatusChanged]:
    sent, message = only(published)
    assert isinstance(message, PaymentStatusChanged)
    return sent, message


@pytest.mark.parametrize(
    ("kind", "closed_as", "status", "failure_code", "source"),
    [
        pytest.param(CancelPayment, "canceled", PaymentStatus.CANCELED, None, "gateway", id="cancel"),
        pytest.param(ExpirePayment, "expired", PaymentStatus.EXPIRED, "expired", "expiry", id="expiration due"),
    ],
)
async def test_a_close_command_closes_the_intent_and_publishes_the_closed_status(
    handlers: Handler,
    provider: FakeProvider,
    published: Published,
    kind: type[CancelPayment] | type[ExpirePayment],
    closed_as: str,
    status: PaymentStatus,
    failure_code: str | None,
    source: str,
) -> None:
    payment_id, intent_id = await open_intent(handlers, provider, published)

    await handlers(closing(kind, payment_id, intent_id), FIRST_DELIVERY)

    assert provider.cancels == [(intent_id, closed_as)]
    sent, message = only_change(published)
    assert (message.status, message.provider_payment_id, message.failure_code) == (status, intent_id, failure_code)
    assert (sent.payment_id, sent.source) == (payment_id, source)


@pytest.mark.parametrize(
    ("send", "settled", "source"),
    [
        pytest.param(
            partial(closing, CancelPayment),
            (PaymentStatus.SUCCEEDED, None),
            "gateway",
            id="cancel after the customer paid",
        ),
        pytest.param(
            partial(closing, ExpirePayment),
            (PaymentStatus.SUCCEEDED, None),
            "expiry",
            id="expiration due after the customer paid",
        ),
        pytest.param(
            partial(closing, CancelPayment),
            (PaymentStatus.FAILED, "card_declined"),
            "gateway",
            id="cancel after a decline",
        ),
        pytest.param(reconciling, (PaymentStatus.SUCCEEDED, None), "reconciliation", id="reconciliation"),
    ],
)
async def test_a_command_for_an_intent_the_provider_settled_publishes_the_providers_outcome(
    handlers: Handler,
    provider: FakeProvider,
    published: Published,
    send: Callable[[str, str], Envelope],
    settled: tuple[PaymentStatus, str | None],
    source: str,
) -> None:
    payment_id, intent_id = await open_intent(handlers, provider, published)
    provider.settle(intent_id, *settled)

    await handlers(send(payment_id, intent_id), FIRST_DELIVERY)

    sent, message = only_change(published)
    assert (message.status, message.failure_code) == settled
    assert (message.amount, message.currency, sent.source) == (1999, "USD", source)


async def test_cancel_repeated_publishes_the_same_event_id(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    payment_id, intent_id = await open_intent(handlers, provider, published)
    envelope = closing(CancelPayment, payment_id, intent_id)

    await handlers(envelope, FIRST_DELIVERY)
    await handlers(envelope, FIRST_DELIVERY)

    assert published[0].id == published[1].id


async def test_cancel_without_an_intent_anywhere_closes_the_payment_on_our_side(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    await handlers(command(CancelPayment(), "pay_without_intent"), FIRST_DELIVERY)

    assert (provider.lookups, provider.cancels) == (["pay_without_intent"], [])
    _, message = only_change(published)
    assert (message.status, message.provider_payment_id) == (PaymentStatus.CANCELED, None)


async def test_cancel_sent_before_the_intent_was_known_finds_it_by_payment_id_and_cancels_it(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    payment_id, intent_id = await open_intent(handlers, provider, published)

    await handlers(command(CancelPayment(), payment_id), FIRST_DELIVERY)

    assert provider.cancels == [(intent_id, "canceled")]
    _, message = only_change(published)
    assert (message.status, message.provider_payment_id) == (PaymentStatus.CANCELED, intent_id)


async def test_a_failed_lookup_of_the_intent_asks_for_a_retry(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    provider.error = TransientGatewayError("timeout")
    with pytest.raises(RetryLater):
        await handlers(command(ExpirePayment(), "pay_1"), FIRST_DELIVERY)
    assert published == []


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        pytest.param(TransientGatewayError("timeout"), RetryLater, id="transient error asks for a retry"),
        pytest.param(PermanentGatewayError("answered 409"), PoisonMessage, id="refusal is dead-lettered"),
    ],
)
async def test_a_cancel_the_provider_does_not_carry_out_publishes_nothing(
    handlers: Handler, provider: FakeProvider, published: Published, error: Exception, outcome: type[Exception]
) -> None:
    payment_id, intent_id = await open_intent(handlers, provider, published)
    provider.error = error

    with pytest.raises(outcome):
        await handlers(closing(CancelPayment, payment_id, intent_id), FIRST_DELIVERY)
    assert published == []


@pytest.mark.parametrize(
    ("kind", "status", "source"),
    [
        pytest.param(CancelPayment, PaymentStatus.CANCELED, "gateway", id="cancel"),
        pytest.param(ExpirePayment, PaymentStatus.EXPIRED, "expiry", id="expiration due"),
    ],
)
async def test_a_provider_with_no_such_intent_is_a_final_answer_that_closes_the_payment(
    handlers: Handler,
    provider: FakeProvider,
    published: Published,
    kind: type[CancelPayment] | type[ExpirePayment],
    status: PaymentStatus,
    source: str,
) -> None:
    """A provider that lost the intent (a sandbox restarted without its data) answers 404: nothing can be paid
    through it, so the payment closes as asked, recorded by the ledger, instead of a dead letter."""
    payment_id, intent_id = await open_intent(handlers, provider, published)
    provider.error = NoSuchIntentError("answered 404", status=404)

    await handlers(closing(kind, payment_id, intent_id), FIRST_DELIVERY)

    sent, message = only_change(published)
    assert (message.status, message.provider_payment_id, sent.source) == (status, intent_id, source)


async def test_an_expiry_the_provider_refuses_still_expires_the_payment(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    payment_id, intent_id = await open_intent(handlers, provider, published)
    provider.error = PermanentGatewayError("answered 409")

    await handlers(closing(ExpirePayment, payment_id, intent_id), FIRST_DELIVERY)

    _, message = only_change(published)
    assert message.status is PaymentStatus.EXPIRED


async def test_a_command_goes_to_the_provider_it_names_not_the_default(published: Published) -> None:
    old, new = FakeProvider("sandbox"), FakeProvider("stripe")

    handlers = GATEWAY_MESSAGES.dispatcher(GatewayHandlers({"sandbox": old, "stripe": new}, "stripe", published))
    old.by_payment["pay_old"] = "pi_old"
    old.intents["pi_old"] = ProviderIntent("pi_old", PaymentStatus.PENDING, 1999, "USD")

    await handlers(command(CancelPayment(provider="sandbox", provider_payment_id="pi_old"), "pay_old"), FIRST_DELIVERY)

    assert (old.cancels, new.cancels) == ([("pi_old", "canceled")], [])
    assert only(published)[1].provider == "sandbox"  # type: ignore[attr-defined]


async def test_a_command_for_a_provider_not_configured_is_dead_lettered(handlers: Handler) -> None:
    with pytest.raises(PoisonMessage):
        await handlers(command(CancelPayment(provider="stripe", provider_payment_id="cs_1"), "pay_1"), FIRST_DELIVERY)


# --- reconciliation -------------------------------------------------------------------------------------


async def test_reconciliation_of_an_open_intent_publishes_nothing(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    payment_id, intent_id = await open_intent(handlers, provider, published)

    await handlers(reconciling(payment_id, intent_id), FIRST_DELIVERY)

    assert published == []


# --- the registry -------------------------------------------------------------------------------------


async def test_a_message_type_the_gateway_worker_has_no_handler_for_is_poison(handlers: Handler) -> None:
    changed = PaymentStatusChanged(status=PaymentStatus.SUCCEEDED, provider="fake")
    with pytest.raises(PoisonMessage, match="no handler"):
        await handlers(Envelope.wrap(changed, payment_id="pay_1", source="webhook"), FIRST_DELIVERY)


async def test_a_payload_that_does_not_validate_is_poison(handlers: Handler) -> None:
    broken = Envelope(type=PaymentRequested.TYPE, source="intake", payment_id="pay_1", data={"amount": "lots"})
    with pytest.raises(PoisonMessage, match="invalid"):
        await handlers(broken, FIRST_DELIVERY)


def test_the_gateway_worker_queue_is_bound_to_exactly_the_types_it_handles() -> None:
    assert set(GATEWAY_MESSAGES.group.routing_keys) == {
        PaymentRequested.TYPE,
        CancelPayment.TYPE,
        ExpirePayment.TYPE,
        ReconcilePayment.TYPE,
        CapturePayment.TYPE,
        RefundRequested.TYPE,
        ReconcileRefund.TYPE,
    }


# --- manual capture: holds captured, voided and lapsed, the provider asked first ------------------------------


@pytest.fixture
def capturing() -> FakeCapturingProvider:
    return FakeCapturingProvider()


@pytest.fixture
def capturing_handlers(capturing: FakeCapturingProvider, published: Published) -> Handler:
    return GATEWAY_MESSAGES.dispatcher(GatewayHandlers({"fake": capturing}, "fake", published))


async def held_payment(handlers: Handler, provider: FakeCapturingProvider, published: Published) -> tuple[str, str]:
    """A manual payment the customer paid: its intent holds 19.99 USD. (payment id, intent id)"""
    envelope = payment_requested(capture_method="manual")
    await handlers(envelope, FIRST_DELIVERY)
    intent_id = provider.by_payment[envelope.payment_id]
    provider.settle(intent_id, PaymentStatus.AUTHORIZED)
    published.clear()
    return envelope.payment_id, intent_id


def capture_command(intent_id: str, amount: int, key: str) -> CapturePayment:
    return CapturePayment(amount_to_capture=amount, idempotency_key=key, provider="fake", provider_payment_id=intent_id)


async def test_a_manual_payment_asks_the_provider_for_a_hold(
    capturing_handlers: Handler, capturing: FakeCapturingProvider
) -> None:
    await capturing_handlers(payment_requested(capture_method="manual"), FIRST_DELIVERY)

    assert [r.capture_method for r in capturing.requests] == ["manual"]


async def test_a_manual_payment_fails_on_a_provider_that_cannot_hold_money(
    handlers: Handler, provider: FakeProvider, published: Published
) -> None:
    await handlers(payment_requested(capture_method="manual"), FIRST_DELIVERY)

    _, message = only(published)
    assert isinstance(message, PaymentIntentFailed)
    assert message.failure_code == "capture_method_unsupported"
    assert provider.requests == []  # no intent that would take the money at once


async def test_a_capture_publishes_the_amount_the_provider_took(
    capturing_handlers: Handler, capturing: FakeCapturingProvider, published: Published
) -> None:
    payment_id, intent_id = await held_payment(capturing_handlers, capturing, published)

    await capturing_handlers(command(capture_command(intent_id, 1200, "k1"), payment_id), FIRST_DELIVERY)

    _, message = only(published)
    assert isinstance(message, PaymentStatusChanged)
    assert (message.status, message.amount, message.amount_captured) == (PaymentStatus.SUCCEEDED, 1999, 1200)
    assert capturing.captures == {"k1": (intent_id, 1200)}


async def test_a_second_capture_with_another_key_publishes_the_first_ones_truth_under_the_same_id(
    capturing_handlers: Handler, capturing: FakeCapturingProvider, published: Published
) -> None:
    payment_id, intent_id = await held_payment(capturing_handlers, capturing, published)

    await capturing_handlers(command(capture_command(intent_id, 1200, "k1"), payment_id), FIRST_DELIVERY)
    await capturing_handlers(command(capture_command(intent_id, 1999, "k2"), payment_id), FIRST_DELIVERY)

    first, second = (e.message() for e in published)
    assert first == second  # the same truth: 1200 taken, once
    assert published[0].id == published[1].id  # so the ledger records it once
    assert list(capturing.captures) == ["k1"]


async def test_a_capture_that_loses_the_race_to_a_void_publishes_the_void(
    capturing_handlers: Handler, capturing: FakeCapturingProvider, published: Published
) -> None:
    payment_id, intent_id = await held_payment(capturing_handlers, capturing, published)

    await capturing_handlers(
        command(CancelPayment(provider="fake", provider_payment_id=intent_id), payment_id), FIRST_DELIVERY
    )
    await capturing_handlers(command(capture_command(intent_id, 1999, "k1"), payment_id), FIRST_DELIVERY)

    statuses = [e.message().status for e in published]  # type: ignore[attr-defined]
    assert statuses == [PaymentStatus.CANCELED, PaymentStatus.CANCELED]
    assert published[0].id == published[1].id
    assert capturing.captures == {}


async def test_a_capture_the_provider_refuses_leaves_the_hold_for_an_operator(
    capturing_handlers: Handler, capturing: FakeCapturingProvider, published: Published
) -> None:
    payment_id, intent_id = await held_payment(capturing_handlers, capturing, published)

    with pytest.raises(PoisonMessage, match="refused the capture"):
        await capturing_handlers(command(capture_command(intent_id, 5000, "k1"), payment_id), FIRST_DELIVERY)
    assert published == []


async def test_a_capture_that_times_out_is_retried(
    capturing_handlers: Handler, capturing: FakeCapturingProvider, published: Published
) -> None:
    payment_id, intent_id = await held_payment(capturing_handlers, capturing, published)
    capturing.fail_next(TransientGatewayError("timeout"))

    with pytest.raises(RetryLater):
        await capturing_handlers(command(capture_command(intent_id, 1200, "k1"), payment_id), FIRST_DELIVERY)
    assert published == []


async def test_a_lapsed_hold_is_voided_at_the_provider_and_expires_with_authorization_expired(
    capturing_handlers: Handler, capturing: FakeCapturingProvider, published: Published
) -> None:
    payment_id, intent_id = await held_payment(capturing_handlers, capturing, published)

    expire = ExpirePayment(provider="fake", provider_payment_id=intent_id, authorization=True)
    await capturing_handlers(command(expire, payment_id), FIRST_DELIVERY)

    assert capturing.cancels == [(intent_id, "expired")]
    _, message = only(published)
    assert isinstance(message, PaymentStatusChanged)
    assert (message.status, message.failure_code) == (PaymentStatus.EXPIRED, "authorization_expired")


async def test_a_hold_the_provider_will_not_void_is_never_expired_on_our_side_alone(
    capturing_handlers: Handler, capturing: FakeCapturingProvider, published: Published
) -> None:
    payment_id, intent_id = await held_payment(capturing_handlers, capturing, published)
    capturing.fail_next(PermanentGatewayError("answered 400"))

    expire = ExpirePayment(provider="fake", provider_payment_id=intent_id, authorization=True)
    with pytest.raises(PoisonMessage, match="void"):
        await capturing_handlers(command(expire, payment_id), FIRST_DELIVERY)
    assert published == []


async def test_an_expiry_that_loses_the_race_to_a_capture_publishes_the_capture(
    capturing_handlers: Handler, capturing: FakeCapturingProvider, published: Published
) -> None:
    payment_id, intent_id = await held_payment(capturing_handlers, capturing, published)
    await capturing_handlers(command(capture_command(intent_id, 1500, "k1"), payment_id), FIRST_DELIVERY)
    published.clear()

    expire = ExpirePayment(provider="fake", provider_payment_id=intent_id, authorization=True)
    await capturing_handlers(command(expire, payment_id), FIRST_DELIVERY)

    _, message = only(published)
    assert isinstance(message, PaymentStatusChanged)
    assert (message.status, message.amount_captured) == (PaymentStatus.SUCCEEDED, 1500)
