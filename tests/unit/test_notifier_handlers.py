"""The notifier's handlers over fakes: fan-out per endpoint, one attempt per message, retries, disabling."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanContext

from services.notifier.handlers import Attempt, DeliveryTarget, NotifierHandlers
from services.notifier.rules import AttemptResult, MerchantEvent, NextStep, merchant_event_id, subscribes
from shared.batches import Consumed
from shared.broker import PoisonMessage, RetryLater
from shared.events import (
    DeliverWebhook,
    Envelope,
    PaymentStatus,
    PaymentStatusRecorded,
    RedeliverEvent,
    RefundStatus,
    RefundStatusRecorded,
)
from shared.webhook_secrets import new_signing_secret
from tests.support.messages import consumed

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@dataclass
class FakeEndpoint:
    id: str
    merchant_id: str
    events: list[str]
    url: str
    enabled: bool = True
    secret: str = field(default_factory=new_signing_secret)
    failing_since: datetime | None = None


@dataclass
class FakeStore:
    payments: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    refunds: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    endpoints: dict[str, FakeEndpoint] = field(default_factory=dict)
    events: dict[str, MerchantEvent] = field(default_factory=dict)
    deliveries: dict[tuple[str, str], str] = field(default_factory=dict)
    attempts: list[tuple[str, str, int | None, str]] = field(default_factory=list)

    calls: list[str] = field(default_factory=list)

    async def current_payments(self, payment_ids: Collection[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        self.calls.append("current_payments")
        return {p: self.payments[p] for p in payment_ids if p in self.payments}

    async def current_refunds(self, refund_ids: Collection[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        self.calls.append("current_refunds")
        return {r: self.refunds[r] for r in refund_ids if r in self.refunds}

    def _matching(self, event: MerchantEvent) -> list[str]:
        return sorted(
            e.id
            for e in self.endpoints.values()
            if e.merchant_id == event.merchant_id and e.enabled and subscribes(e.events, event.type)
        )

    async def record_events(self, events: Sequence[MerchantEvent]) -> dict[str, list[str]]:
        self.calls.append("record_events")
        return self._store(events)

    def _store(self, events: Sequence[MerchantEvent]) -> dict[str, list[str]]:
        for event in events:
            if event.id not in self.events:
                self.events[event.id] = event
                for endpoint_id in self._matching(event):
                    self.deliveries[(event.id, endpoint_id)] = "pending"
        return {
            event.id: sorted(e for (ev, e), status in self.deliveries.items() if ev == event.id and status == "pending")
            for event in events
        }

    async def open_deliveries(self, events: Sequence[MerchantEvent]) -> dict[tuple[str, str], DeliveryTarget]:
        """As the real store: the events stored as record_events stores them, and the targets of their pending
        deliveries, with each event as given and its payment the object it carries."""
        self.calls.append("open_deliveries")
        by_id = {event.id: event for event in events}
        targets = {}
        for event_id, endpoint_ids in self._store(events).items():
            event = by_id[event_id]
            current = event.data.get("object")
            for endpoint_id in endpoint_ids:
                stored = await self.delivery_target(event_id, endpoint_id, datetime.now(UTC))
                if stored is not None:
                    targets[(event_id, endpoint_id)] = replace(
                        stored,
                        event=event,
                        payment=current if event.type.startswith("payment.") else None,
                        refund=current if event.type.startswith("refund.") else None,
                    )
        return targets

    async def reopen_deliveries(self, event_id: str, merchant_id: str) -> tuple[MerchantEvent, list[str]] | None:
        event = self.events.get(event_id)
        if event is None or event.merchant_id != merchant_id:
            return None
        matching = self._matching(event)
        for endpoint_id in matching:
            self.deliveries[(event_id, endpoint_id)] = "pending"
        return event, matching

    async def delivery_target(self, event_id: str, endpoint_id: str, now: datetime) -> DeliveryTarget | None:
        status = self.deliveries.get((event_id, endpoint_id))
        if status is None:
            return None
        endpoint = self.endpoints[endpoint_id]
        event = self.events[event_id]
        payment = self.payments.get(event.payment_id) if event.payment_id else None
        return DeliveryTarget(
            event=event,
            endpoint_id=endpoint_id,
            url=endpoint.url,
            endpoint_enabled=endpoint.enabled,
            delivery_status=status,
            secret=endpoint.secret,
            previous_secret=None,
            previous_secret_expires_at=None,
            failing_since=endpoint.failing_since,
            payment=None if payment is None else payment[1],
        )

    async def record_attempt(
        self, target: DeliveryTarget, result: AttemptResult, step: NextStep, attempted_at: datetime
    ) -> int:
        key = (target.event.id, target.endpoint_id)
        endpoint = self.endpoints[target.endpoint_id]
        self.deliveries[key] = {"delivered": "delivered", "retry": "pending"}.get(step.kind, "failed")
        endpoint.failing_since = None if step.kind == "delivered" else (endpoint.failing_since or attempted_at)
        if step.kind == "disable":
            endpoint.enabled = False
        self.attempts.append((target.event.id, target.endpoint_id, result.status_code, step.kind))
        return sum(1 for a in self.attempts if a[:2] == key)

    async def record_attempts(self, attempts: Sequence[Attempt]) -> list[int]:
        self.calls.append("record_attempts")
        return [await self.record_attempt(a.target, a.result, a.step, a.attempted_at) for a in attempts]

    async def endpoint_resource(self, endpoint_id: str) -> tuple[str, dict[str, Any]]:
        endpoint = self.endpoints[endpoint_id]
        return endpoint.merchant_id, {"id": endpoint.id, "url": endpoint.url, "status": "disabled"}


@dataclass
class Sender:
    """Answers per URL from a script (last answer repeats); records what was sent."""

    answers: dict[str, list[int | None]] = field(default_factory=dict)
    sent: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    async def __call__(self, url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        self.sent.append((url, body, headers))
        script = self.answers.get(url, [200])
        status = script.pop(0) if len(script) > 1 else script[0]
        return AttemptResult(status, None if status else "connection: refused", 5)


def make_notifier(
    store: FakeStore, sender: Sender, *, disable_after: float = 3600
) -> tuple[NotifierHandlers, list[Envelope]]:
    published: list[Envelope] = []

    async def publish(envelope: Envelope) -> None:
        published.append(envelope)

    notifier = NotifierHandlers(
        store=store,
        send=sender,
        publish=publish,
        schedule=(0, 5, 60),
        disable_after_seconds=disable_after,
        clock=lambda: NOW,
        jitter=lambda: 1.0,
    )
    return notifier, published


def a_store() -> FakeStore:
    store = FakeStore(payments={"pay_1": ("shop", {"id": "pay_1", "status": "SUCCEEDED"})})
    store.endpoints = {
        "we_all": FakeEndpoint("we_all", "shop", ["*"], "http://a.example/hook"),
        "we_paid": FakeEndpoint("we_paid", "shop", ["payment.succeeded"], "http://b.example/hook"),
        "we_failed": FakeEndpoint("we_failed", "shop", ["payment.failed"], "http://c.example/hook"),
        "we_off": FakeEndpoint("we_off", "shop", ["*"], "http://d.example/hook", enabled=False),
        "we_other": FakeEndpoint("we_other", "another-shop", ["*"], "http://e.example/hook"),
    }
    return store


def succeeded(payment_id: str = "pay_1") -> tuple[Envelope, PaymentStatusRecorded]:
    message = PaymentStatusRecorded(
        from_status=PaymentStatus.PENDING, status=PaymentStatus.SUCCEEDED, ledger_event_id=str(uuid.uuid4())
    )
    return Envelope.wrap(message, payment_id=payment_id, source="ledger"), message


async def record_status(
    notifier: NotifierHandlers, envelope: Envelope, message: PaymentStatusRecorded
) -> MerchantEvent:
    """One ledger record through the production path, the events group's batch handler, as a batch of one: its
    merchant event, or the exception that would settle its message raised."""
    assert envelope.message() == message
    (result,) = await notifier.record_batch([consumed(envelope)])
    if result is not None:
        raise result
    assert isinstance(notifier.store, FakeStore)
    return notifier.store.events[merchant_event_id(envelope.id)]


def commands(published: list[Envelope]) -> list[DeliverWebhook]:
    return [m for m in (e.message() for e in published) if isinstance(m, DeliverWebhook)]


async def test_a_recorded_status_becomes_one_delivery_per_matching_endpoint_of_the_merchant() -> None:
    store = a_store()
    notifier, published = make_notifier(store, Sender())
    envelope, message = succeeded()
    event = await record_status(notifier, envelope, message)
    assert event.type == "payment.succeeded" and event.merchant_id == "shop"
    assert sorted(c.endpoint_id for c in commands(published)) == ["we_all", "we_paid"]
    assert all(c.event_id == event.id for c in commands(published))


async def test_a_replayed_record_is_the_same_event_and_resends_only_what_is_pending() -> None:
    store = a_store()
    notifier, published = make_notifier(store, Sender())
    envelope, message = succeeded()
    first = await record_status(notifier, envelope, message)
    await notifier.deliver(commands(published)[0], position=1)
    published.clear()
    again = await record_status(notifier, envelope, message)
    assert again.id == first.id and len(store.events) == 1
    assert [c.endpoint_id for c in commands(published)] == ["we_paid"]


async def test_a_record_for_a_payment_not_readable_yet_is_retried() -> None:
    store = a_store()
    store.payments.clear()
    notifier, _ = make_notifier(store, Sender())
    with pytest.raises(RetryLater):
        await record_status(notifier, *succeeded())


async def test_a_delivery_posts_the_payment_as_it_stands_now_and_is_recorded_delivered() -> None:
    store = a_store()
    sender = Sender()
    notifier, published = make_notifier(store, sender)
    await record_status(notifier, *succeeded())
    store.payments["pay_1"] = ("shop", {"id": "pay_1", "status": "SUCCEEDED", "note": "changed since"})
    step = await notifier.deliver(commands(published)[0], position=1)
    assert step is not None and step.kind == "delivered"
    _, body, headers = sender.sent[0]
    assert '"note":"changed since"' in body and headers["webhook-signature"].startswith("v1,")
    assert store.attempts[-1][2:] == (200, "delivered")


async def test_a_failed_attempt_asks_the_broker_for_the_schedules_next_delay() -> None:
    store = a_store()
    notifier, published = make_notifier(store, Sender({"http://a.example/hook": [500, None, 200]}))
    await record_status(notifier, *succeeded())
    command = next(c for c in commands(published) if c.endpoint_id == "we_all")
    with pytest.raises(RetryLater) as first:
        await notifier.deliver(command, position=1)
    assert first.value.delay_seconds == 5
    with pytest.raises(RetryLater) as second:
        await notifier.deliver(command, position=2)
    assert second.value.delay_seconds == 60
    step = await notifier.deliver(command, position=3)
    assert step is not None and step.kind == "delivered"
    assert [a[2] for a in store.attempts if a[1] == "we_all"] == [500, None, 200]


async def test_a_delivery_already_made_or_to_a_disabled_endpoint_is_not_sent() -> None:
    store = a_store()
    sender = Sender()
    notifier, published = make_notifier(store, sender)
    await record_status(notifier, *succeeded())
    command = commands(published)[0]
    await notifier.deliver(command, position=1)
    assert await notifier.deliver(command, position=1) is None  # a duplicate message
    store.endpoints["we_paid"].enabled = False
    assert await notifier.deliver(commands(published)[1], position=1) is None
    assert len(sender.sent) == 1


async def test_a_redelivery_sends_a_delivered_event_again() -> None:
    store = a_store()
    sender = Sender()
    notifier, published = make_notifier(store, sender)
    event = await record_status(notifier, *succeeded())
    for command in commands(published):
        await notifier.deliver(command, position=1)
    published.clear()
    assert await notifier.redeliver(RedeliverEvent(event_id=event.id, merchant_id="shop")) == ["we_all", "we_paid"]
    assert all(c.redelivery for c in commands(published))
    for command in commands(published):
        await notifier.deliver(command, position=1)
    assert len(sender.sent) == 4
    assert await notifier.redeliver(RedeliverEvent(event_id=event.id, merchant_id="another-shop")) == []


async def test_an_endpoint_failing_too_long_is_disabled_and_the_others_hear_of_it() -> None:
    store = a_store()
    store.endpoints["we_paid"].failing_since = NOW - timedelta(hours=2)
    notifier, published = make_notifier(store, Sender({"http://b.example/hook": [500]}), disable_after=3600)
    await record_status(notifier, *succeeded())
    command = next(c for c in commands(published) if c.endpoint_id == "we_paid")
    published.clear()
    step = await notifier.deliver(command, position=1)
    assert step is not None and step.kind == "disable"
    assert not store.endpoints["we_paid"].enabled
    (notice,) = [e for e in store.events.values() if e.type == "webhook_endpoint.disabled"]
    assert notice.data["object"]["id"] == "we_paid" and notice.payment_id is None
    assert [c.endpoint_id for c in commands(published)] == ["we_all"]


async def test_a_slow_endpoint_does_not_hold_the_delivery_to_another() -> None:
    store = a_store()
    release = asyncio.Event()
    fast_done: list[str] = []

    async def send(url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        if url == "http://a.example/hook":
            await release.wait()
        else:
            fast_done.append(url)
        return AttemptResult(200, None, 1)

    notifier, published = make_notifier(store, Sender())
    notifier.send = send
    await record_status(notifier, *succeeded())
    slow = asyncio.create_task(notifier.deliver(next(c for c in commands(published) if c.endpoint_id == "we_all"), 1))
    await notifier.deliver(next(c for c in commands(published) if c.endpoint_id == "we_paid"), 1)
    assert fast_done == ["http://b.example/hook"] and not slow.done()
    release.set()
    assert (await slow) is not None


def a_batch_store(payments: int) -> tuple[FakeStore, list[Consumed]]:
    """A store knowing `payments` payments of the shop, and a batch of one succeeded record for each."""
    store = a_store()
    batch = []
    for n in range(payments):
        payment_id = f"pay_batch_{n}"
        store.payments[payment_id] = ("shop", {"id": payment_id, "status": "SUCCEEDED"})
        batch.append(consumed(succeeded(payment_id)[0]))
    return store, batch


async def test_a_batch_of_records_is_read_and_stored_at_once_and_each_gets_its_deliveries() -> None:
    store, batch = a_batch_store(4)
    notifier, published = make_notifier(store, Sender())

    results = await notifier.record_batch(batch)

    assert results == [None] * 4
    assert store.calls == ["current_payments", "record_events"]
    by_event = {merchant_event_id(item.envelope.id): item.envelope.payment_id for item in batch}
    assert sorted((by_event[c.event_id], c.endpoint_id) for c in commands(published)) == sorted(
        (payment_id, endpoint) for payment_id in by_event.values() for endpoint in ("we_all", "we_paid")
    )
    assert {e.data["object"]["id"] for e in store.events.values()} == set(by_event.values())


async def test_in_a_batch_only_the_record_of_a_payment_not_readable_yet_is_retried() -> None:
    store, batch = a_batch_store(3)
    del store.payments[batch[1].envelope.payment_id]
    notifier, published = make_notifier(store, Sender())

    results = await notifier.record_batch(batch)

    assert results[0] is None and results[2] is None and isinstance(results[1], RetryLater)
    assert {c.event_id for c in commands(published)} == {merchant_event_id(batch[i].envelope.id) for i in (0, 2)}


async def test_in_a_batch_a_redelivery_request_is_handled_and_an_unknown_message_is_poison() -> None:
    store, batch = a_batch_store(1)
    notifier, published = make_notifier(store, Sender())
    event = await record_status(notifier, *succeeded())
    published.clear()
    redelivery = Envelope.wrap(RedeliverEvent(event_id=event.id, merchant_id="shop"), payment_id="", source="merchant")
    unknown = Envelope.wrap(DeliverWebhook(event_id=event.id, endpoint_id="we_all"), payment_id="", source="notifier")

    results = await notifier.record_batch([consumed(redelivery), *batch, consumed(unknown)])

    assert results[:2] == [None, None] and isinstance(results[2], PoisonMessage)
    redelivered = [c for c in commands(published) if c.redelivery]
    assert sorted(c.endpoint_id for c in redelivered) == ["we_all", "we_paid"]
    assert all(c.event_id == event.id for c in redelivered)


async def test_each_records_commands_continue_its_trace_and_a_failed_publish_retries_its_record_alone() -> None:
    store, batch = a_batch_store(3)
    failing = merchant_event_id(batch[1].envelope.id)
    seen: dict[str, SpanContext] = {}

    async def publish(envelope: Envelope) -> None:
        await asyncio.sleep(0)  # let the others start: each must still see its own context
        command = envelope.message()
        assert isinstance(command, DeliverWebhook)
        if command.event_id == failing:
            raise ConnectionError("broker gone")
        seen[command.event_id] = trace.get_current_span().get_span_context()

    notifier, _ = make_notifier(store, Sender())
    notifier.publish = publish

    results = await notifier.record_batch(batch)

    assert results[0] is None and results[2] is None and isinstance(results[1], ConnectionError)
    for i in (0, 2):
        assert seen[merchant_event_id(batch[i].envelope.id)] == batch[i].span.get_span_context()
    # Stored all the same: its retry is a replay, which publishes its pending deliveries again.
    assert failing in store.events


def attempting_now(
    store: FakeStore, sender: Sender, *, budget: float = 1.0
) -> tuple[NotifierHandlers, list[Envelope], list[tuple[DeliverWebhook, int, float]]]:
    """A notifier that makes each first attempt at once (as the service runs it): what it published as delivery
    commands, and what it handed to a delay queue (command, attempt, delay)."""
    notifier, published = make_notifier(store, sender)
    retries: list[tuple[DeliverWebhook, int, float]] = []

    async def retry_later(envelope: Envelope, attempt: int, delay_seconds: float) -> None:
        message = envelope.message()
        assert isinstance(message, DeliverWebhook)
        retries.append((message, attempt, delay_seconds))

    notifier.retry_later, notifier.first_attempt_budget = retry_later, budget
    return notifier, published, retries


async def test_a_first_attempt_made_at_once_delivers_without_a_delivery_command() -> None:
    store, sender = a_store(), Sender()
    notifier, published, retries = attempting_now(store, sender)
    event = await record_status(notifier, *succeeded())
    assert sorted(url for url, _, _ in sender.sent) == ["http://a.example/hook", "http://b.example/hook"]
    assert store.deliveries[(event.id, "we_all")] == store.deliveries[(event.id, "we_paid")] == "delivered"
    assert published == [] and retries == []


async def test_the_first_attempts_of_a_batch_are_read_and_recorded_in_one_statement_each() -> None:
    store, batch = a_batch_store(4)
    sender = Sender()
    notifier, published, retries = attempting_now(store, sender)
    assert await notifier.record_batch(batch) == [None] * 4
    assert store.calls == ["current_payments", "open_deliveries", "record_attempts"]
    assert len(sender.sent) == 8 and set(store.deliveries.values()) == {"delivered"}
    assert published == [] and retries == []


async def test_a_failed_first_attempt_made_at_once_goes_to_the_delay_queue_as_attempt_two() -> None:
    store = a_store()
    notifier, published, retries = attempting_now(store, Sender({"http://a.example/hook": [500, 200]}))
    event = await record_status(notifier, *succeeded())
    assert published == []
    ((command, attempt, delay),) = retries
    assert (command.event_id, command.endpoint_id, attempt, delay) == (event.id, "we_all", 2, 5)
    assert store.deliveries[(event.id, "we_all")] == "pending"
    # The deliveries queue's consumer makes attempt 2 from there, as it would have after its own attempt 1.
    step = await notifier.deliver(command, attempt)
    assert step is not None and step.kind == "delivered"


async def test_an_endpoint_slower_than_the_budget_is_handed_to_the_deliveries_queue_unrecorded() -> None:
    store = a_store()

    async def send(url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        if url == "http://a.example/hook":
            await asyncio.sleep(5)
        return AttemptResult(200, None, 1)

    notifier, published, retries = attempting_now(store, Sender(), budget=0.05)
    notifier.send = send
    event = await record_status(notifier, *succeeded())
    assert [(c.endpoint_id, c.redelivery) for c in commands(published)] == [("we_all", False)] and retries == []
    assert store.deliveries[(event.id, "we_all")] == "pending"
    assert [a[1] for a in store.attempts] == ["we_paid"]


async def test_a_first_attempt_that_cannot_be_recorded_retries_its_record_and_the_replay_attempts_again() -> None:
    store, sender = a_store(), Sender()
    notifier, published, _ = attempting_now(store, sender)
    envelope, message = succeeded()
    recorded = store.record_attempt
    failures = iter([True])

    async def record_attempt(*args: Any) -> int:
        if next(failures, False):
            raise ConnectionError("database gone")
        return await recorded(*args)

    store.record_attempt = record_attempt  # type: ignore[method-assign,assignment]
    (result,) = await notifier.record_batch([consumed(envelope)])
    assert store.calls.count("record_attempts") == 1
    assert isinstance(result, ConnectionError)
    event = await record_status(notifier, envelope, message)
    assert store.deliveries[(event.id, "we_all")] == store.deliveries[(event.id, "we_paid")] == "delivered"
    # At least once: the attempts whose record failed (one statement for both) are made again.
    assert len(sender.sent) == 4 and published == []


async def test_a_refund_records_deliveries_are_attempted_at_once_too() -> None:
    store, sender = a_store(), Sender({"http://a.example/hook": [500]})
    store.refunds["re_1"] = ("shop", {"id": "re_1", "object": "refund", "status": "succeeded"})
    notifier, published, retries = attempting_now(store, sender)
    message = RefundStatusRecorded(
        refund_id="re_1", from_status=RefundStatus.PENDING, status=RefundStatus.SUCCEEDED, ledger_event_id="led_1"
    )
    envelope = Envelope.wrap(message, payment_id="pay_1", source="ledger")
    assert await notifier.record_batch([consumed(envelope)]) == [None]
    event = store.events[merchant_event_id(envelope.id)]
    assert event.type == "refund.succeeded" and [url for url, _, _ in sender.sent] == ["http://a.example/hook"]
    ((command, attempt, _),) = retries  # the failed first attempt goes on from the delay queue of attempt 2
    assert (command.event_id, command.endpoint_id, attempt, published) == (event.id, "we_all", 2, [])


async def test_a_batch_of_payment_and_refund_records_is_read_and_stored_together() -> None:
    store, batch = a_batch_store(2)
    for n in range(2):
        store.refunds[f"re_{n}"] = ("shop", {"id": f"re_{n}", "object": "refund", "status": "succeeded"})
        message = RefundStatusRecorded(
            refund_id=f"re_{n}", from_status=None, status=RefundStatus.PENDING, ledger_event_id=f"led_{n}"
        )
        batch.append(consumed(Envelope.wrap(message, payment_id=f"pay_batch_{n}", source="ledger")))
    unknown = RefundStatusRecorded(
        refund_id="re_unknown", from_status=None, status=RefundStatus.PENDING, ledger_event_id="led_x"
    )
    batch.append(consumed(Envelope.wrap(unknown, payment_id="pay_batch_0", source="ledger")))
    notifier, published, _ = attempting_now(store, Sender())
    results = await notifier.record_batch(batch)
    assert results[:4] == [None] * 4 and isinstance(results[4], RetryLater)
    assert store.calls == [
        "current_payments",
        "current_refunds",
        "open_deliveries",
        "record_attempts",
    ]
    assert sorted(e.type for e in store.events.values()) == ["payment.succeeded"] * 2 + ["refund.created"] * 2
    assert published == []


async def test_a_held_payment_is_announced_as_payment_authorized_to_the_endpoints_that_want_it() -> None:
    store = a_store()
    store.endpoints["we_held"] = FakeEndpoint("we_held", "shop", ["payment.authorized"], "http://f.example/hook")
    notifier, published = make_notifier(store, Sender())
    message = PaymentStatusRecorded(
        from_status=PaymentStatus.PENDING, status=PaymentStatus.AUTHORIZED, ledger_event_id=str(uuid.uuid4())
    )

    event = await record_status(notifier, Envelope.wrap(message, payment_id="pay_1", source="ledger"), message)

    assert event.type == "payment.authorized"
    assert sorted(c.endpoint_id for c in commands(published)) == ["we_all", "we_held"]


def test_a_captured_hold_is_announced_as_payment_succeeded() -> None:
    captured = PaymentStatusRecorded(
        from_status=PaymentStatus.AUTHORIZED, status=PaymentStatus.SUCCEEDED, ledger_event_id=str(uuid.uuid4())
    )
    assert captured.merchant_event_type == "payment.succeeded"
