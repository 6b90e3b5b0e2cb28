"""The sandbox's intent store and state rules, and the webhook event and retry schedule built from them."""

from __future__ import annotations

import random
import re

import pytest
import stamina

from services.sandbox_gateway.checkout import return_link, with_payment_id
from services.sandbox_gateway.faults import Faults, FaultsUpdate, create_intent_fault, delivery_copies
from services.sandbox_gateway.intents import (
    IdempotencyKeyReusedError,
    IntentClosedError,
    IntentDraft,
    IntentNotFoundError,
    IntentStatus,
    IntentStore,
)
from services.sandbox_gateway.pages import format_amount
from services.sandbox_gateway.webhooks import (
    RETRY_CAP_SECONDS,
    WebhookUndelivered,
    build_event,
    first_retry_wait,
    webhook_retries,
)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def draft(**overrides: object) -> IntentDraft:
    fields: dict[str, object] = {
        "amount": 1999,
        "currency": "USD",
        "reference": "order-42",
        "return_url": "https://shop.example/orders/42",
        "cancel_url": "https://shop.example/cart",
        "expires_at": 1_800_000_600,
        "metadata": {"payment_id": "pay_1"},
    }
    fields.update(overrides)
    return IntentDraft(**fields)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> IntentStore:
    return IntentStore("http://sandbox.test/", clock=clock)


def test_a_new_intent_is_open_with_a_pi_id_and_a_checkout_url(store: IntentStore) -> None:
    intent, created = store.open(draft(), "key-1")
    assert created
    assert re.fullmatch(r"pi_[0-9a-f]{24}", intent.id)
    assert intent.status is IntentStatus.OPEN
    assert intent.checkout_url == f"http://sandbox.test/pay/{intent.id}"
    assert intent.created == 1_800_000_000


def test_the_same_idempotency_key_gives_the_same_intent(store: IntentStore) -> None:
    first, _ = store.open(draft(), "key-1")
    again, created = store.open(draft(metadata={"payment_id": "pay_1", "traceparent": "00-other"}), "key-1")
    assert again is first and not created


def test_another_idempotency_key_gives_another_intent(store: IntentStore) -> None:
    first, _ = store.open(draft(), "key-1")
    second, created = store.open(draft(), "key-2")
    assert created and second.id != first.id


def test_the_same_key_for_another_amount_is_refused(store: IntentStore) -> None:
    store.open(draft(), "key-1")
    with pytest.raises(IdempotencyKeyReusedError):
        store.open(draft(amount=5000), "key-1")


def test_without_expires_at_an_intent_lives_an_hour(store: IntentStore) -> None:
    intent, _ = store.open(draft(expires_at=None))
    assert intent.expires_at == intent.created + 3600


def test_an_unknown_id_is_not_found(store: IntentStore) -> None:
    with pytest.raises(IntentNotFoundError):
        store.get("pi_missing")


def test_settling_without_failure_code_succeeds_and_keeps_last4(store: IntentStore) -> None:
    intent, _ = store.open(draft())
    store.settle(intent.id, last4="4242", failure_code=None)
    assert (intent.status, intent.last4, intent.failure_code) == (IntentStatus.SUCCEEDED, "4242", None)


def test_settling_with_a_failure_code_fails(store: IntentStore) -> None:
    intent, _ = store.open(draft())
    store.settle(intent.id, last4="0002", failure_code="card_declined")
    assert (intent.status, intent.failure_code) == (IntentStatus.FAILED, "card_declined")


@pytest.mark.parametrize("status", [s for s in IntentStatus if s.is_closed])
def test_a_closed_intent_cannot_be_settled(store: IntentStore, status: IntentStatus) -> None:
    intent, _ = store.open(draft())
    intent.status = status
    with pytest.raises(IntentClosedError):
        store.settle(intent.id, last4="4242", failure_code=None)
    assert intent.status is status and intent.last4 is None


def test_canceling_an_open_intent_cancels_it(store: IntentStore) -> None:
    intent, _ = store.open(draft())
    closed, changed = store.close(intent.id, "canceled")
    assert changed and closed.status is IntentStatus.CANCELED and closed.failure_code is None


def test_expiring_an_open_intent_sets_failure_code_expired(store: IntentStore) -> None:
    intent, _ = store.open(draft())
    store.close(intent.id, "expired")
    assert (intent.status, intent.failure_code) == (IntentStatus.EXPIRED, "expired")


def test_canceling_twice_changes_nothing_the_second_time(store: IntentStore) -> None:
    intent, _ = store.open(draft())
    store.close(intent.id, "canceled")
    closed, changed = store.close(intent.id, "expired")
    assert not changed and closed.status is IntentStatus.CANCELED


@pytest.mark.parametrize("failure_code", [None, "card_declined"])
def test_a_paid_or_refused_intent_cannot_be_canceled(store: IntentStore, failure_code: str | None) -> None:
    intent, _ = store.open(draft())
    store.settle(intent.id, last4="4242", failure_code=failure_code)
    with pytest.raises(IntentClosedError):
        store.close(intent.id, "canceled")


def test_the_sweep_expires_only_open_intents_past_their_time(store: IntentStore, clock: Clock) -> None:
    due, _ = store.open(draft(expires_at=1_800_000_010))
    later, _ = store.open(draft(expires_at=1_800_000_100))
    paid, _ = store.open(draft(expires_at=1_800_000_010))
    store.settle(paid.id, last4="4242", failure_code=None)
    clock.now = 1_800_000_010
    assert store.expire_due() == [due]
    assert due.status is IntentStatus.EXPIRED and later.status is IntentStatus.OPEN
    assert store.expire_due() == []


def test_the_sweep_expires_intents_soonest_first_each_once(store: IntentStore, clock: Clock) -> None:
    last, _ = store.open(draft(expires_at=1_800_000_030))
    first, _ = store.open(draft(expires_at=1_800_000_010))
    second, _ = store.open(draft(expires_at=1_800_000_020))
    clock.now = 1_800_000_020
    assert store.expire_due() == [first, second]
    clock.now = 1_800_000_030
    assert store.expire_due() == [last]
    assert store.expire_due() == []


def test_the_sweep_looks_only_at_intents_whose_time_is_up(store: IntentStore, clock: Clock) -> None:
    """A sandbox keeps every intent it ever opened; a sweep that visited them all grew with its age. Settled
    intents are passed over once their time comes, and then the sweep never meets them again."""
    settled = [store.open(draft(expires_at=1_800_000_010))[0] for _ in range(50)]
    for intent in settled:
        store.settle(intent.id, last4="4242", failure_code=None)
    still_open, _ = store.open(draft(expires_at=1_800_000_100))
    assert store.expiries_watched == 51
    clock.now = 1_800_000_050
    assert store.expire_due() == []
    assert store.expiries_watched == 1
    clock.now = 1_800_000_100
    assert store.expire_due() == [still_open]
    assert store.expiries_watched == 0


def test_an_intent_is_expired_lazily_when_its_time_is_up(store: IntentStore, clock: Clock) -> None:
    intent, _ = store.open(draft(expires_at=1_800_000_010))
    assert not store.expire_if_due(intent.id)
    clock.now = 1_800_000_011
    assert store.expire_if_due(intent.id)
    assert not store.expire_if_due(intent.id)


def test_intent_json_shows_last4_only_after_payment(store: IntentStore) -> None:
    intent, _ = store.open(draft())
    assert "last4" not in intent.to_json()
    store.settle(intent.id, last4="4242", failure_code=None)
    body = intent.to_json()
    assert body["last4"] == "4242"
    assert {
        "id",
        "status",
        "amount",
        "currency",
        "checkout_url",
        "failure_code",
        "metadata",
        "return_url",
        "cancel_url",
        "reference",
        "created",
        "expires_at",
    } <= set(body)


@pytest.mark.parametrize(
    ("status", "event_type"),
    [
        ("succeeded", "payment.succeeded"),
        ("failed", "payment.failed"),
        ("canceled", "payment.canceled"),
        ("expired", "payment.expired"),
    ],
)
def test_the_webhook_event_type_matches_the_intent_status(store: IntentStore, status: str, event_type: str) -> None:
    intent, _ = store.open(draft())
    intent.status = IntentStatus(status)
    event = build_event(intent, created=1_800_000_005)
    assert re.fullmatch(r"evt_[0-9a-f]{24}", event["id"])
    assert event["type"] == event_type
    assert event["created"] == 1_800_000_005
    assert event["data"]["object"]["status"] == status
    assert event["data"]["object"]["metadata"] == {"payment_id": "pay_1"}


async def _waits(max_attempts: int, base: float, made: int = 0, **cap: float) -> list[float]:
    """The waits stamina schedules between attempts of a webhook that is never delivered."""
    waits: list[float] = []
    attempts = 0
    hooks = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([lambda details: waits.append(details.wait_for)])
    try:
        with pytest.raises(WebhookUndelivered):
            async for attempt in webhook_retries(max_attempts, base, made=made, **cap):
                with attempt:
                    attempts += 1
                    raise WebhookUndelivered("answered 500")
    finally:
        stamina.instrumentation.set_on_retry_hooks(hooks)
    assert attempts == max_attempts - made
    return waits


async def test_retry_delay_doubles_from_the_base_with_a_little_jitter() -> None:
    base = 0.001
    delays = await _waits(6, base)
    assert len(delays) == 5
    for n, delay in enumerate(delays, start=1):
        assert base * 2 ** (n - 1) <= delay <= base * 2 ** (n - 1) * 1.1


async def test_retries_after_a_first_attempt_made_alone_keep_the_schedule() -> None:
    # The sender makes the first attempt outside the loop (no loop for an event delivered at once): the wait
    # after it is first_retry_wait, and the loop's own waits go on doubling from there.
    base = 0.001
    first = first_retry_wait(base, rng=random.Random(7))
    assert base <= first <= base * 1.1
    delays = [first, *await _waits(6, base, made=1)]
    assert len(delays) == 5
    for n, delay in enumerate(delays, start=1):
        assert base * 2 ** (n - 1) <= delay <= base * 2 ** (n - 1) * 1.1
    assert first_retry_wait(120.0, rng=random.Random(7)) == RETRY_CAP_SECONDS  # capped as the loop's waits are


async def test_retry_delay_is_capped_at_sixty_seconds() -> None:
    # The cap as a parameter, so the test need not wait a minute: 0.004, 0.008, then the cap.
    assert (await _waits(5, 0.004, cap_seconds=0.01))[2:] == pytest.approx([0.01, 0.01])
    assert RETRY_CAP_SECONDS == 60


def test_faults_are_merged_into_the_current_ones() -> None:
    current = Faults(webhook_duplicate_rate=0.5)
    merged = FaultsUpdate(webhook_delay_seconds=2).merged_into(current)
    assert merged == Faults(webhook_duplicate_rate=0.5, webhook_delay_seconds=2)


def test_no_create_fault_without_an_error_rate() -> None:
    assert create_intent_fault(Faults(), random.Random(1)) is None


def test_create_faults_fall_on_both_sides_of_storing() -> None:
    rng = random.Random(3)
    faults = {create_intent_fault(Faults(create_intent_error_rate=1.0), rng) for _ in range(50)}
    assert faults == {"before_storing", "after_storing"}


def test_duplicate_rate_one_delivers_every_event_twice() -> None:
    assert delivery_copies(Faults(webhook_duplicate_rate=1.0), random.Random(1)) == 2


def test_payment_id_is_added_to_the_return_url_keeping_its_query() -> None:
    url = with_payment_id("https://shop.example/done?order=42&x=#top", "pay_1")
    assert url == "https://shop.example/done?order=42&x=&payment_id=pay_1#top"


def test_a_canceled_intent_returns_to_the_cancel_url(store: IntentStore) -> None:
    intent, _ = store.open(draft())
    store.close(intent.id, "canceled")
    assert return_link(intent) == "https://shop.example/cart?payment_id=pay_1"


def test_a_canceled_intent_without_cancel_url_returns_to_the_return_url(store: IntentStore) -> None:
    intent, _ = store.open(draft(cancel_url=None))
    store.close(intent.id, "canceled")
    assert return_link(intent) == "https://shop.example/orders/42?payment_id=pay_1"


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [(1999, "USD", "19.99 USD"), (5, "EUR", "0.05 EUR"), (1500, "JPY", "1,500 JPY"), (1234, "KWD", "1.234 KWD")],
)
def test_amounts_are_shown_in_major_units(amount: int, currency: str, shown: str) -> None:
    assert format_amount(amount, currency) == shown
