"""What the ledger announces after a commit (services/ledger/outcomes.py): a new payment or a new status, once."""

from __future__ import annotations

from services.ledger.outcomes import status_recorded
from services.ledger.state_machine import PaymentState, decide
from shared.events import (
    Envelope,
    PaymentIntentCreated,
    PaymentStatus,
    PaymentStatusChanged,
    PaymentStatusRecorded,
)
from tests.support.messages import payment_requested

PENDING = PaymentState(status=PaymentStatus.PENDING, amount=1999, currency="USD")


def succeeded() -> Envelope:
    message = PaymentStatusChanged(status=PaymentStatus.SUCCEEDED, provider="sandbox", amount=1999, currency="USD")
    return Envelope.wrap(message, payment_id="pay_1", source="webhook")


def test_a_new_payment_is_announced_as_recorded_pending() -> None:
    envelope = payment_requested("pay_1")
    announcement = status_recorded(envelope, "applied", None)
    assert announcement is not None and announcement.type == "ledger.status_recorded"
    message = announcement.message()
    assert isinstance(message, PaymentStatusRecorded)
    assert message.from_status is None and message.merchant_event_type == "payment.created"
    assert message.ledger_event_id == str(envelope.id) and announcement.payment_id == "pay_1"


def test_a_payment_already_recorded_is_not_announced_again_as_new() -> None:
    assert status_recorded(payment_requested("pay_1"), "ignored: payment already recorded", None) is None


def test_a_status_change_is_announced_under_an_id_derived_from_its_event() -> None:
    envelope = succeeded()
    decision = decide(PENDING, envelope.message())
    first, again = status_recorded(envelope, decision.outcome, decision), status_recorded(envelope, "applied", decision)
    assert first is not None and again is not None and first.id == again.id
    message = first.message()
    assert isinstance(message, PaymentStatusRecorded) and message.merchant_event_type == "payment.succeeded"


def test_an_event_that_changes_no_status_is_not_announced() -> None:
    intent = Envelope.wrap(
        PaymentIntentCreated(provider="sandbox", provider_payment_id="pi_1", checkout_url="https://pay.example/pi_1"),
        payment_id="pay_1",
        source="gateway",
    )
    decision = decide(PENDING, intent.message())
    assert decision.applied and status_recorded(intent, decision.outcome, decision) is None
    succeeded_state = decide(PENDING, succeeded().message()).after
    duplicate = decide(succeeded_state, succeeded().message())
    assert status_recorded(succeeded(), duplicate.outcome, duplicate) is None
