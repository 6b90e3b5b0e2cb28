"""The notifier's handlers, the methods of `NotifierHandlers`; the database, the broker and HTTP are ports.

- `record_batch`: the ledger records that queued up together become merchant events, stored with a delivery per
  matching endpoint in two statements for all of them; each delivery's first attempt is made at once, and only a
  retry (or an endpoint slower than `first_attempt_budget`) becomes a delivery command; a merchant's redelivery
  request in the batch is handled too.
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
from shared.registry import BatchRegistry, MessageRegistry, Received

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
# Publish a delivery command as attempt n of the deliveries queue, after a delay (Broker.publish_retry).
ScheduleRetry = Callable[[Envelope, int, float], Awaitable[None]]


class SlowEndpoint(Exception):
    """The endpoint did not answer a first attempt made at once within its budget: the deliveries queue takes over."""


@dataclass
class NotifierHandlers:
    """The notifier's handlers (docs/explanation/handlers.md) and their dependencies: real ones from `app.py`,
    fakes in unit tests."""

    store: NotifierStore
    send: Send
    publish: Publish
    schedule: Sequence[float]
    disable_after_seconds: float
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    jitter: Callable[[], float] = field(default=lambda: random.uniform(0.9, 1.1))
    # Where a first attempt made at once sends its retry; None: every first attempt goes through the deliveries
    # queue as a command (one more message each, and a queue a slow endpoint holds alone).
    retry_later: ScheduleRetry | None = None
    # A first attempt made at once holds the batch of ledger records it came with until the endpoint answers: an
    # endpoint slower than this is handed over to the deliveries queue (the attempt is made again from there).
    first_attempt_budget: float = 1.0

    async def record_batch(self, batch: Sequence[Consumed]) -> list[BaseException | None]:
        """The events group's batch handler: per message None once handled, RetryLater if its payment is not
        readable yet, PoisonMessage if it is no message the registry knows, or the error that kept its delivery
        commands from being published (retried: a replay publishes the pending ones again).

        The ledger records of the batch are stored together (`_record_statuses`), then their commands published
        all at once, each in its record's trace; a redelivery request is handled alone. Replayed (the ledger
        announced a record again, or this process died before publishing), a record's event is the same and the
        commands of its deliveries still pending are published again: at least once. Raises only if storing the
        records failed (the broker then hands the batch's messages over one at a time).
        """
        results, decoded = NOTIFIER_MESSAGES.decode_batch([item.envelope for item in batch])
        records = [(i, message) for i, message in decoded if isinstance(message, PaymentStatusRecorded)]
        requests = [(i, message) for i, message in decoded if isinstance(message, RedeliverEvent)]
        refunds = [(i, message) for i, message in decoded if isinstance(message, RefundStatusRecorded)]
        if records:
            outcomes, pending = await self._record_statuses([(batch[i].envelope, m) for i, m in records])

            async def announce(item: Consumed, event: MerchantEvent) -> None:
                with item.context():  # the delivery commands continue the record's trace
                    await self._announce(event, pending[event.id])

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
        for i, request in requests:
            with batch[i].context():
                try:
                    await self.redeliver(request)
                except Exception as exc:
                    results[i] = exc
        for i, refund in refunds:
            with batch[i].context():
                try:
                    await self.record_refund(batch[i].envelope, refund)
                except Exception as exc:
                    results[i] = exc
        return results

    async def record_refund(self, envelope: Envelope, message: RefundStatusRecorded) -> MerchantEvent:
        """Make the merchant event for a ledger's refund record (refund.created, refund.succeeded, refund.failed)
        and send one delivery command per matching endpoint; replayed, it sends the pending ones again."""
        found = await self.store.current_refunds([message.refund_id])
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
        pending = await self.store.record_events([event])
        await self._announce(event, pending[event.id])
        return event

    async def _record_statuses(
        self, records: Sequence[tuple[Envelope, PaymentStatusRecorded]]
    ) -> tuple[list[MerchantEvent | RetryLater], dict[str, list[str]]]:
        """Per record its merchant event, stored (RetryLater: its payment is not readable yet), and by event id the
        deliveries still pending: the payments read in one statement, the events and deliveries written in one."""
        found = await self.store.current_payments({envelope.payment_id for envelope, _ in records})
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
        return outcomes, (await self.store.record_events(events) if events else {})

    async def _announce(self, event: MerchantEvent, pending: Sequence[str]) -> None:
        if self.retry_later is None:
            await self._dispatch(event, pending, redelivery=False)
        else:
            # Stored and committed already: each delivery is attempted now rather than after a round trip through
            # the deliveries queue. An attempt that fails raises after the others are done, so the record is
            # retried, and its replay attempts again what is still pending: at least once, as with a command.
            errors = await asyncio.gather(*(self._attempt_now(event, e) for e in pending), return_exceptions=True)
            for error in errors:
                if isinstance(error, BaseException):
                    raise error
        log.info(
            "merchant event recorded", merchant_event=event.id, merchant_event_type=event.type, endpoints=len(pending)
        )

    async def _dispatch(self, event: MerchantEvent, endpoint_ids: Sequence[str], *, redelivery: bool) -> None:
        for endpoint_id in endpoint_ids:
            command = DeliverWebhook(event_id=event.id, endpoint_id=endpoint_id, redelivery=redelivery)
            await self.publish(Envelope.wrap(command, payment_id=event.payment_id or "", source="notifier"))

    async def _attempt_now(self, event: MerchantEvent, endpoint_id: str) -> None:
        """The first attempt of one delivery, made here; its retry (or a slow endpoint) goes to the deliveries
        queue, whose consumer makes attempt 2 onwards exactly as it would have made them after attempt 1."""
        assert self.retry_later is not None
        command = DeliverWebhook(event_id=event.id, endpoint_id=endpoint_id)
        envelope = Envelope.wrap(command, payment_id=event.payment_id or "", source="notifier")
        try:
            await self.deliver(command, 1, budget=self.first_attempt_budget)
        except SlowEndpoint:
            await self.publish(envelope)
        except RetryLater as later:
            await self.retry_later(envelope, 2, later.delay_seconds or 0.0)

    async def redeliver(self, message: RedeliverEvent) -> list[str]:
        """Deliver the event again now, to every enabled endpoint of the merchant that subscribes to it."""
        reopened = await self.store.reopen_deliveries(message.event_id, message.merchant_id)
        if reopened is None:
            return []
        event, endpoint_ids = reopened
        await self._dispatch(event, endpoint_ids, redelivery=True)
        log.info("merchant event redelivery requested", merchant_event=event.id, endpoints=len(endpoint_ids))
        return endpoint_ids

    async def deliver_due(self, received: Received[DeliverWebhook]) -> None:
        """The deliveries group's handler: one attempt, numbered by the broker's delivery attempt."""
        await self.deliver(received.message, received.delivery.attempt)

    async def deliver(self, command: DeliverWebhook, position: int, *, budget: float | None = None) -> NextStep | None:
        """One attempt: POST the event, signed, with its object as it stands now; then decide what follows.

        A failure with tries left raises RetryLater with the schedule's wait (the broker's delay queue holds the
        message meanwhile: nothing here sleeps). None: nothing to do (delivered already, endpoint gone or disabled).
        With a `budget`, an endpoint that has not answered within it raises SlowEndpoint, nothing recorded.
        """
        now = self.clock()
        target = await self.store.delivery_target(command.event_id, command.endpoint_id, now)
        if target is None or not target.endpoint_enabled:
            return None
        if target.delivery_status != "pending" and not command.redelivery:
            return None  # delivered, or given up on: a duplicate of a message already handled
        # A payment or refund event carries its object as it is now, so a late or retried delivery is never stale.
        current = target.refund or target.payment or dict(target.event.data.get("object") or {})
        body = delivery_body(target.event, current)
        secrets = signing_secrets(target.secret, target.previous_secret, target.previous_secret_expires_at, now)
        headers = signature_headers(target.event.id, now, body, secrets)
        if budget is None:
            result = await self.send(target.url, body, headers)
        else:
            try:
                async with asyncio.timeout(budget):
                    result = await self.send(target.url, body, headers)
            except TimeoutError:
                raise SlowEndpoint(f"no answer within {budget:g} s of a first attempt made at once") from None
        finished = self.clock()
        step = after_attempt(
            result,
            position=position,
            schedule=self.schedule,
            failing_since=target.failing_since,
            now=finished,
            disable_after_seconds=self.disable_after_seconds,
            jitter=self.jitter(),
        )
        attempt = await self.store.record_attempt(target, result, step, now)
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
            await self._endpoint_disabled(target.endpoint_id)
        if step.kind == "retry":
            raise RetryLater(
                f"endpoint answered {result.status_code or result.error}", delay_seconds=step.delay_seconds
            )
        return step

    async def _endpoint_disabled(self, endpoint_id: str) -> None:
        WEBHOOK_ENDPOINTS_DISABLED.inc()
        merchant_id, endpoint = await self.store.endpoint_resource(endpoint_id)
        event = MerchantEvent(
            id=merchant_event_id(f"disabled:{endpoint_id}:{endpoint.get('disabled_at')}"),
            type="webhook_endpoint.disabled",
            merchant_id=merchant_id,
            payment_id=None,
            created=self.clock(),
            data={"object": endpoint},
        )
        pending = (await self.store.record_events([event]))[event.id]
        await self._dispatch(event, pending, redelivery=False)
        log.warning("webhook endpoint disabled after failing too long", endpoint_id=endpoint_id)


# Ledger records and merchants' redelivery requests become merchant events and delivery commands, in batches.
NOTIFIER_MESSAGES: BatchRegistry[NotifierHandlers] = BatchRegistry(
    "notifier", (PaymentStatusRecorded, RefundStatusRecorded, RedeliverEvent), NotifierHandlers.record_batch
)
# One message per (event, endpoint) delivery, in a queue of their own: a slow endpoint holds only its own.
NOTIFIER_DELIVERIES: MessageRegistry[NotifierHandlers] = MessageRegistry(
    "notifier_deliveries", {DeliverWebhook: NotifierHandlers.deliver_due}
)
