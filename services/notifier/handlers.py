"""The notifier's handlers: plain async functions over plain data; the database, the broker and HTTP are ports.

- `record_status`: a ledger record becomes a merchant event, and one delivery command per matching endpoint;
  `record_batch` does it for the records that queued up together, in two statements for all of them.
- `deliver`: one attempt of one (event, endpoint) delivery; a failure asks the broker to try again later.
- `redeliver`: the merchant asked for an event again: every matching endpoint gets it anew.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from services.notifier.rules import (
    AttemptResult,
    MerchantEvent,
    NextStep,
    after_attempt,
    delivery_body,
    merchant_event_id,
    signature_headers,
    signing_secrets,
)
from shared.batches import Consumed
from shared.broker import RetryLater
from shared.events import DeliverWebhook, Envelope, PaymentStatusRecorded, RedeliverEvent, RefundStatusRecorded
from shared.logs import get_logger
from shared.metrics import WEBHOOK_ATTEMPT_SECONDS, WEBHOOK_DELIVERIES, WEBHOOK_ENDPOINTS_DISABLED
from shared.registry import MessageRegistry, Received

log = get_logger(__name__)


@dataclass(frozen=True)
class DeliveryTarget:
    """What one delivery needs: the event, where it goes, how it is signed, and how things stand."""

    event: MerchantEvent
    endpoint_id: str
    url: str
    endpoint_enabled: bool
    delivery_status: str
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    failing_since: datetime | None
    # The event's payment as the ledger has it now, read with the rest; None: the event is no payment's (or the
    # ledger has it no more), and its object is delivered as recorded.
    payment: dict[str, Any] | None
    # Likewise the refund of a refund's event, as the ledger has it now.
    refund: dict[str, Any] | None = None


class NotifierStore(Protocol):
    async def current_payments(self, payment_ids: Collection[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """By payment id, (merchant id, the payment resource as the ledger has it now); the ledger's only."""

    async def current_refunds(self, refund_ids: Collection[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """By refund id, (merchant id, the refund resource as the ledger has it now)."""

    async def record_events(self, events: Sequence[MerchantEvent]) -> dict[str, list[str]]:
        """Store each event (once) and open a delivery per matching enabled endpoint; by event id, the deliveries
        still pending (their endpoint ids)."""

    async def reopen_deliveries(self, event_id: str, merchant_id: str) -> tuple[MerchantEvent, list[str]] | None:
        """Open the event's deliveries again, to every matching enabled endpoint: the event and their ids."""

    async def delivery_target(self, event_id: str, endpoint_id: str, now: datetime) -> DeliveryTarget | None:
        """What delivering the event to the endpoint needs, its payment as it stands now included."""

    async def record_attempt(
        self, target: DeliveryTarget, result: AttemptResult, step: NextStep, attempted_at: datetime
    ) -> int:
        """Record the attempt and its consequence (delivered, next try, gave up, endpoint disabled); its number."""

    async def endpoint_resource(self, endpoint_id: str) -> tuple[str, dict[str, Any]]:
        """(merchant id, the endpoint resource), for the webhook_endpoint.disabled event."""


Send = Callable[[str, str, dict[str, str]], Awaitable[AttemptResult]]
Publish = Callable[[Envelope], Awaitable[None]]


@dataclass
class Notifier:
    """The notifier's dependencies: real ones from `app.py`, fakes in unit tests."""

    store: NotifierStore
    send: Send
    publish: Publish
    schedule: Sequence[float]
    disable_after_seconds: float
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    jitter: Callable[[], float] = field(default=lambda: random.uniform(0.9, 1.1))


async def _dispatch(notifier: Notifier, event: MerchantEvent, endpoint_ids: Sequence[str], *, redelivery: bool) -> None:
    for endpoint_id in endpoint_ids:
        command = DeliverWebhook(event_id=event.id, endpoint_id=endpoint_id, redelivery=redelivery)
        await notifier.publish(Envelope.wrap(command, payment_id=event.payment_id or "", source="notifier"))


async def record_status(notifier: Notifier, envelope: Envelope, message: PaymentStatusRecorded) -> MerchantEvent:
    """Make the merchant event for a ledger record and send one delivery command per matching endpoint.

    Replayed (the ledger announced it again, or this process died before publishing), it publishes the commands
    of the deliveries still pending again: at least once.
    """
    (outcome,), pending = await _record_statuses(notifier, [(envelope, message)])
    if isinstance(outcome, RetryLater):
        raise outcome
    await _announce(notifier, outcome, pending[outcome.id])
    return outcome


async def _record_statuses(
    notifier: Notifier, records: Sequence[tuple[Envelope, PaymentStatusRecorded]]
) -> tuple[list[MerchantEvent | RetryLater], dict[str, list[str]]]:
    """Per record its merchant event, stored (RetryLater: its payment is not readable yet), and by event id the
    deliveries still pending: the payments read in one statement, the events and deliveries written in one."""
    found = await notifier.store.current_payments({envelope.payment_id for envelope, _ in records})
    outcomes: list[MerchantEvent | RetryLater] = []
    for envelope, message in records:
        if envelope.payment_id not in found:
            outcomes.append(RetryLater(f"payment {envelope.payment_id} is not readable in the ledger yet"))
            continue
        merchant_id, payment = found[envelope.payment_id]
        outcomes.append(
            MerchantEvent(
                id=merchant_event_id(envelope.id),
                type=message.merchant_event_type,
                merchant_id=merchant_id,
                payment_id=envelope.payment_id,
                created=envelope.occurred_at,
                data={"object": payment},
            )
        )
    events = [outcome for outcome in outcomes if isinstance(outcome, MerchantEvent)]
    return outcomes, (await notifier.store.record_events(events) if events else {})


async def record_refund(notifier: Notifier, envelope: Envelope, message: RefundStatusRecorded) -> MerchantEvent:
    """Make the merchant event for a ledger's refund record (refund.created, refund.succeeded, refund.failed) and
    send one delivery command per matching endpoint; replayed, it sends the pending ones again."""
    found = await notifier.store.current_refunds([message.refund_id])
    if message.refund_id not in found:
        raise RetryLater(f"refund {message.refund_id} is not readable in the ledger yet")
    merchant_id, refund = found[message.refund_id]
    event = MerchantEvent(
        id=merchant_event_id(envelope.id),
        type=message.merchant_event_type,
        merchant_id=merchant_id,
        payment_id=envelope.payment_id,
        created=envelope.occurred_at,
        data={"object": refund},
    )
    pending = await notifier.store.record_events([event])
    await _announce(notifier, event, pending[event.id])
    return event


async def _announce(notifier: Notifier, event: MerchantEvent, pending: Sequence[str]) -> None:
    await _dispatch(notifier, event, pending, redelivery=False)
    log.info("merchant event recorded", merchant_event=event.id, merchant_event_type=event.type, endpoints=len(pending))


async def record_batch(notifier: Notifier, batch: Sequence[Consumed]) -> list[BaseException | None]:
    """The events group's batch handler (Broker.consume_batches): per message None once handled, RetryLater if
    its payment is not readable yet, PoisonMessage if it is no message the registry knows, or the error that
    kept its delivery commands from being published (retried: a replay publishes the pending ones again).

    The ledger records of the batch are stored together (`_record_statuses`), then their commands published
    all at once, each in its record's trace; any other message is handled alone. Raises only if storing the
    records failed (the broker then hands the batch's messages over one at a time).
    """
    results, decoded = NOTIFIER_MESSAGES.decode_batch([item.envelope for item in batch])
    records = [(i, message) for i, message in decoded if isinstance(message, PaymentStatusRecorded)]
    others = [(i, message) for i, message in decoded if not isinstance(message, PaymentStatusRecorded)]
    if records:
        outcomes, pending = await _record_statuses(notifier, [(batch[i].envelope, m) for i, m in records])

        async def announce(item: Consumed, event: MerchantEvent) -> None:
            with item.context():  # the delivery commands continue the record's trace
                await _announce(notifier, event, pending[event.id])

        announcing: list[tuple[int, MerchantEvent]] = []
        for (i, _), outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, RetryLater):
                results[i] = outcome
            else:
                announcing.append((i, outcome))
        errors = await asyncio.gather(*(announce(batch[i], e) for i, e in announcing), return_exceptions=True)
        for (i, _), error in zip(announcing, errors, strict=True):
            if isinstance(error, BaseException):
                results[i] = error
    for i, message in others:
        item = batch[i]
        with item.context():
            try:
                await NOTIFIER_MESSAGES.handlers[type(message)](
                    notifier, Received(item.envelope, message, item.delivery)
                )
            except Exception as exc:
                results[i] = exc
    return results


async def redeliver(notifier: Notifier, message: RedeliverEvent) -> list[str]:
    """Deliver the event again now, to every enabled endpoint of the merchant that subscribes to it."""
    reopened = await notifier.store.reopen_deliveries(message.event_id, message.merchant_id)
    if reopened is None:
        return []
    event, endpoint_ids = reopened
    await _dispatch(notifier, event, endpoint_ids, redelivery=True)
    log.info("merchant event redelivery requested", merchant_event=event.id, endpoints=len(endpoint_ids))
    return endpoint_ids


async def deliver(notifier: Notifier, command: DeliverWebhook, position: int) -> NextStep | None:
    """One attempt: POST the event, signed, with its object as it stands now; then decide what follows.

    A failure with tries left raises RetryLater with the schedule's wait (the broker's delay queue holds the
    message meanwhile: nothing here sleeps). None: nothing to do (delivered already, endpoint gone or disabled).
    """
    now = notifier.clock()
    target = await notifier.store.delivery_target(command.event_id, command.endpoint_id, now)
    if target is None or not target.endpoint_enabled:
        return None
    if target.delivery_status != "pending" and not command.redelivery:
        return None  # delivered, or given up on: a duplicate of a message already handled
    # A payment or refund event carries its object as it is now, so a late or retried delivery is never stale.
    current = target.refund or target.payment or dict(target.event.data.get("object") or {})
    body = delivery_body(target.event, current)
    secrets = signing_secrets(target.secret, target.previous_secret, target.previous_secret_expires_at, now)
    result = await notifier.send(target.url, body, signature_headers(target.event.id, now, body, secrets))
    finished = notifier.clock()
    step = after_attempt(
        result,
        position=position,
        schedule=notifier.schedule,
        failing_since=target.failing_since,
        now=finished,
        disable_after_seconds=notifier.disable_after_seconds,
        jitter=notifier.jitter(),
    )
    attempt = await notifier.store.record_attempt(target, result, step, now)
    outcome = {"delivered": "delivered", "retry": "failed", "give_up": "gave_up", "disable": "endpoint_disabled"}[
        step.kind
    ]
    WEBHOOK_DELIVERIES.labels(outcome).inc()
    WEBHOOK_ATTEMPT_SECONDS.labels(outcome).observe(result.duration_ms / 1000)
    log.info(
        "webhook attempt",
        merchant_event=target.event.id,
        endpoint_id=target.endpoint_id,
        attempt=attempt,
        status_code=result.status_code,
        error=result.error,
        outcome=outcome,
        next_in_seconds=step.delay_seconds,
    )
    if step.kind == "disable":
        await _endpoint_disabled(notifier, target.endpoint_id)
    if step.kind == "retry":
        raise RetryLater(f"endpoint answered {result.status_code or result.error}", delay_seconds=step.delay_seconds)
    return step


async def _endpoint_disabled(notifier: Notifier, endpoint_id: str) -> None:
    WEBHOOK_ENDPOINTS_DISABLED.inc()
    merchant_id, endpoint = await notifier.store.endpoint_resource(endpoint_id)
    event = MerchantEvent(
        id=merchant_event_id(f"disabled:{endpoint_id}:{endpoint.get('disabled_at')}"),
        type="webhook_endpoint.disabled",
        merchant_id=merchant_id,
        payment_id=None,
        created=notifier.clock(),
        data={"object": endpoint},
    )
    pending = (await notifier.store.record_events([event]))[event.id]
    await _dispatch(notifier, event, pending, redelivery=False)
    log.warning("webhook endpoint disabled after failing too long", endpoint_id=endpoint_id)


# --- the registries: which message each consumer group handles, and how ---------------------------------------


async def on_status_recorded(notifier: Notifier, received: Received[PaymentStatusRecorded]) -> None:
    await record_status(notifier, received.envelope, received.message)


async def on_refund_recorded(notifier: Notifier, received: Received[RefundStatusRecorded]) -> None:
    await record_refund(notifier, received.envelope, received.message)


async def on_redelivery_requested(notifier: Notifier, received: Received[RedeliverEvent]) -> None:
    await redeliver(notifier, received.message)


async def on_delivery_due(notifier: Notifier, received: Received[DeliverWebhook]) -> None:
    await deliver(notifier, received.message, received.delivery.attempt)


# Ledger records and merchants' redelivery requests become merchant events and delivery commands (consumed in
# batches: `record_batch`).
NOTIFIER_MESSAGES: MessageRegistry[Notifier] = MessageRegistry(
    "notifier",
    {
        PaymentStatusRecorded: on_status_recorded,
        RefundStatusRecorded: on_refund_recorded,
        RedeliverEvent: on_redelivery_requested,
    },
)
# One message per (event, endpoint) delivery, in a queue of their own: a slow endpoint holds only its own.
NOTIFIER_DELIVERIES: MessageRegistry[Notifier] = MessageRegistry(
    "notifier_deliveries", {DeliverWebhook: on_delivery_due}
)
