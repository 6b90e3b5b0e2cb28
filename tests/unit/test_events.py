"""The envelope: round trips, typed payloads, deterministic ids, and refusal of what is not an event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared.events import (
    MESSAGE_TYPES,
    NOTIFICATION_MESSAGE_TYPES,
    PAYMENT_MESSAGE_TYPES,
    Envelope,
    PaymentStatus,
    PaymentStatusChanged,
    deterministic_event_id,
)


def test_an_envelope_survives_the_wire_with_its_typed_payload() -> None:
    changed = PaymentStatusChanged(status=PaymentStatus.SUCCEEDED, provider="sandbox", amount=1999, currency="USD")
    envelope = Envelope.wrap(changed, payment_id="pay_1", source="webhook")

    decoded = Envelope.from_bytes(envelope.to_bytes())

    assert decoded == envelope
    assert decoded.message() == changed
    assert decoded.type == "payment.status_changed" and decoded.version == 1


def test_the_same_parts_give_the_same_event_id_and_others_do_not() -> None:
    assert deterministic_event_id("sandbox", "evt_1") == deterministic_event_id("sandbox", "evt_1")
    assert deterministic_event_id("sandbox", "evt_1") != deterministic_event_id("sandbox", "evt_2")
    assert isinstance(deterministic_event_id("x"), uuid.UUID)


def test_an_unknown_type_is_not_a_message() -> None:
    envelope = Envelope(
        type="payment.teleported", source="intake", payment_id="pay_1", data={}, occurred_at=datetime.now(UTC)
    )
    with pytest.raises(ValueError, match="unknown message type"):
        envelope.message()


def test_a_payload_with_unknown_fields_is_refused() -> None:
    envelope = Envelope(
        type="payment.status_changed",
        source="webhook",
        payment_id="pay_1",
        data={"status": "SUCCEEDED", "provider": "sandbox", "card_number": "4242424242424242"},
    )
    with pytest.raises(ValueError):
        envelope.message()


def test_every_message_type_the_ledger_records_is_routed_by_a_payment_key() -> None:
    assert all(name.startswith("payment.") for name in PAYMENT_MESSAGE_TYPES)
    assert len(PAYMENT_MESSAGE_TYPES) == 12  # eight of payments, four of their refunds


def test_no_notification_message_is_routed_to_the_ledger() -> None:
    assert not any(name.startswith("payment.") for name in NOTIFICATION_MESSAGE_TYPES)
    assert set(MESSAGE_TYPES) == set(PAYMENT_MESSAGE_TYPES) | set(NOTIFICATION_MESSAGE_TYPES)
