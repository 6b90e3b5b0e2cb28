"""The notifier's pure rules: event names, signatures (checked with standardwebhooks), what follows an attempt."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook, WebhookVerificationError

from services.notifier.rules import (
    AttemptResult,
    MerchantEvent,
    after_attempt,
    delivery_body,
    merchant_event_id,
    signature_headers,
    signing_secrets,
    subscribes,
)
from shared.events import PaymentStatus, PaymentStatusRecorded
from shared.webhook_secrets import DEV_WEBHOOK_SECRETS_KEY, SecretBox, new_signing_secret

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SCHEDULE = (0.0, 5.0, 300.0)
FAILED = AttemptResult(status_code=500, error=None, duration_ms=12)
REFUSED = AttemptResult(status_code=None, error="connection: refused", duration_ms=1)
OK = AttemptResult(status_code=204, error=None, duration_ms=30)


def event() -> MerchantEvent:
    return MerchantEvent(
        id=merchant_event_id(uuid.uuid4()),
        type="payment.succeeded",
        merchant_id="demo",
        payment_id="pay_1",
        created=NOW,
        data={"object": {"id": "pay_1", "status": "PENDING"}},
    )


def test_the_same_cause_names_the_same_event_and_another_cause_another() -> None:
    cause = uuid.uuid4()
    assert merchant_event_id(cause) == merchant_event_id(cause)
    assert merchant_event_id(cause) != merchant_event_id(uuid.uuid4())
    assert merchant_event_id(cause).startswith("evt_") and len(merchant_event_id(cause)) == 36


@pytest.mark.parametrize(
    ("from_status", "status", "merchant_type"),
    [
        (None, PaymentStatus.PENDING, "payment.created"),
        (PaymentStatus.PENDING, PaymentStatus.SUCCEEDED, "payment.succeeded"),
        (PaymentStatus.PENDING, PaymentStatus.FAILED, "payment.failed"),
        (PaymentStatus.PENDING, PaymentStatus.CANCELED, "payment.canceled"),
        (PaymentStatus.PENDING, PaymentStatus.EXPIRED, "payment.expired"),
        (PaymentStatus.EXPIRED, PaymentStatus.SUCCEEDED, "payment.succeeded"),
    ],
)
def test_a_ledger_record_is_heard_as_the_merchant_event_of_its_status(
    from_status: PaymentStatus | None, status: PaymentStatus, merchant_type: str
) -> None:
    recorded = PaymentStatusRecorded(from_status=from_status, status=status, ledger_event_id="x")
    assert recorded.merchant_event_type == merchant_type


def test_an_endpoint_subscribes_to_the_types_it_names_or_to_all() -> None:
    assert subscribes(["*"], "payment.failed")
    assert subscribes(["payment.failed"], "payment.failed")
    assert not subscribes(["payment.succeeded"], "payment.failed")


def test_the_body_carries_the_object_as_it_stands_now_not_as_recorded() -> None:
    body = json.loads(delivery_body(event(), {"id": "pay_1", "status": "SUCCEEDED"}))
    assert body["data"]["object"]["status"] == "SUCCEEDED"
    assert body["type"] == "payment.succeeded" and body["created"] == int(NOW.timestamp())


def test_a_delivery_verifies_with_the_standardwebhooks_library() -> None:
    secret = new_signing_secret()
    now = datetime.now(UTC)
    body = delivery_body(event(), {"id": "pay_1"})
    headers = signature_headers("evt_1", now, body, [secret])
    assert Webhook(secret).verify(body, headers)["data"]["object"] == {"id": "pay_1"}
    assert headers["webhook-id"] == "evt_1" and headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")


def test_a_changed_body_or_another_secret_does_not_verify() -> None:
    secret = new_signing_secret()
    body = delivery_body(event(), {"id": "pay_1"})
    headers = signature_headers("evt_1", datetime.now(UTC), body, [secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("pay_1", "pay_2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(body, headers)


def test_during_the_grace_period_both_secrets_sign_and_after_it_only_the_new() -> None:
    old, new = new_signing_secret(), new_signing_secret()
    assert signing_secrets(new, old, NOW + timedelta(seconds=1), NOW) == [new, old]
    assert signing_secrets(new, old, NOW, NOW) == [new]
    assert signing_secrets(new, None, None, NOW) == [new]
    body = "{}"
    headers = signature_headers("evt_1", datetime.now(UTC), body, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)


def test_secrets_are_stored_sealed_and_open_only_with_the_key() -> None:
    box = SecretBox([SecretStr(DEV_WEBHOOK_SECRETS_KEY)])
    secret = new_signing_secret()
    sealed = box.seal(secret)
    assert secret not in sealed and secret.removeprefix("whsec_") not in sealed
    assert box.open(sealed) == secret
    from cryptography.fernet import Fernet

    with pytest.raises(ValueError, match="WEBHOOK_SECRETS_KEY"):
        SecretBox([SecretStr(Fernet.generate_key().decode())]).open(sealed)


def test_a_2xx_answer_is_delivered() -> None:
    step = after_attempt(OK, position=1, schedule=SCHEDULE, failing_since=None, now=NOW, disable_after_seconds=60)
    assert step.kind == "delivered" and step.delay_seconds is None


def test_a_failure_waits_the_next_delay_of_the_schedule_with_jitter() -> None:
    first = after_attempt(FAILED, position=1, schedule=SCHEDULE, failing_since=None, now=NOW, disable_after_seconds=60)
    assert first.kind == "retry" and first.delay_seconds == 5.0 and first.failing_since == NOW
    second = after_attempt(
        REFUSED, position=2, schedule=SCHEDULE, failing_since=NOW, now=NOW, disable_after_seconds=600, jitter=1.1
    )
    assert second.kind == "retry" and second.delay_seconds == pytest.approx(330.0)
    assert second.next_attempt_at(NOW) == NOW + timedelta(seconds=330)


def test_the_last_attempt_of_the_schedule_gives_up() -> None:
    step = after_attempt(FAILED, position=3, schedule=SCHEDULE, failing_since=NOW, now=NOW, disable_after_seconds=60)
    assert step.kind == "give_up"


def test_an_endpoint_failing_longer_than_the_setting_is_disabled() -> None:
    since = NOW - timedelta(seconds=61)
    step = after_attempt(FAILED, position=1, schedule=SCHEDULE, failing_since=since, now=NOW, disable_after_seconds=60)
    assert step.kind == "disable" and step.failing_since == since
    still = after_attempt(
        FAILED,
        position=1,
        schedule=SCHEDULE,
        failing_since=NOW - timedelta(seconds=59),
        now=NOW,
        disable_after_seconds=60,
    )
    assert still.kind == "retry"
