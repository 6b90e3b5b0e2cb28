"""The notifier's handlers, the methods of `NotifierHandlers`; the database, the broker and HTTP are ports.

- `record_batch`: the ledger's payment and refund records that queued up together become merchant events: the
  payments (and refunds) read in one statement, the events stored with a delivery per matching endpoint in one
  more, which answers what each delivery needs; each delivery's first attempt is made at once (the attempts
  recorded in one statement), and only a retry (or an endpoint slower than `first_attempt_budget`) becomes a
  delivery command; a merchant's redelivery request in the batch is handled too.
- `deliver`: one attempt of one (event, endpoint) delivery; a failure asks the broker to try again later.
- `redeliver`: the merchant asked for an event again: every matching endpoint gets it anew.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
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

    async def open_deliveries(self, events: Sequence[MerchantEvent]) -> dict[tuple[str, str], DeliveryTarget]:
        """`record_events`, answering instead with the target of every delivery of these events still pending (by
        (event id, endpoint id); a deleted endpoint's left out), in the same statement: each event as given, its
        payment or refund the object it carries."""

    async def reopen_deliveries(self, event_id: str, merchant_id: str) -> tuple[MerchantEvent, list[str]] | None:
        """Open the event's deliveries again, to every matching enabled endpoint: the event and their ids."""

    async def delivery_target(self, event_id: str, endpoint_id: str, now: datetime) -> DeliveryTarget | None:
        """What delivering the event to the endpoint needs, its payment as it stands now included."""

    async def record_attempt(
        self, target: DeliveryTarget, result: AttemptResult, step: NextStep, attempted_at: datetime
    ) -> int:
        """Record the attempt and its consequence (delivered, next try, gave up, endpoint disabled); its number."""

    async def record_attempts(self, attempts: Sequence[Attempt]) -> list[int]:
        """`record_attempt` of many attempts at once, in one statement (none of them disabling its endpoint); their
        numbers, in order."""

    async def endpoint_resource(self, endpoint_id: str) -> tuple[str, dict[str, Any]]:
        """(merchant id, the endpoint resource), for the webhook_endpoint.disabled event."""


@dataclass(frozen=True)
class Attempt:
    """One attempt made, to be recorded: where it went, what came back, what follows, when it was made."""

    target: DeliveryTarget
    result: AttemptResult
    step: NextStep
    attempted_at: datetime


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
        """The events group's batch handler: per message None once handled, RetryLater if its payment (or
        refund) is not readable yet, PoisonMessage if it is no message the registry knows, or the error that kept
        its deliveries from being attempted or handed over (retried: a replay attempts the pending ones again).

        The ledger's payment and refund records of the batch become merchant events together (`_merchant_events`),
        stored in one statement that opens their deliveries and answers their targets (`open_deliveries`), then
        the first attempts of those deliveries are made together (`_attempt_now`; without `retry_later`, the
        events are stored by `record_events` and a delivery command each is published instead), each in its
        record's trace; a redelivery request is handled alone.
        Replayed (the ledger announced a record again, or this process died before its attempts), a record's
        event is the same and its deliveries still pending are attempted again: at least once. Raises only if
        storing the records failed (the broker then hands the batch's messages over one at a time).
        """
        results, decoded = NOTIFIER_MESSAGES.decode_batch([item.envelope for item in batch])
        records = [(i, m) for i, m in decoded if isinstance(m, PaymentStatusRecorded | RefundStatusRecorded)]
        requests = [(i, message) for i, message in decoded if isinstance(message, RedeliverEvent)]
        if records:
            outcomes = await self._merchant_events([(batch[i].envelope, m) for i, m in records])
            announcing: list[tuple[int, MerchantEvent]] = []
            for (i, _), outcome in zip(records, outcomes, strict=True):
                if isinstance(outcome, RetryLater):
                    results[i] = outcome
                else:
                    announcing.append((i, outcome))
            events = [event for _, event in announcing]
            errors: Sequence[BaseException | None]
            if self.retry_later is None:
                pending = await self.store.record_events(events) if events else {}

                async def announce(item: Consumed, event: MerchantEvent) -> None:
                    with item.context():  # the delivery commands continue the record's trace
                        await self._announce(event, pending[event.id])

                errors = await asyncio.gather(*(announce(batch[i], e) for i, e in announcing), return_exceptions=True)
            else:
                targets = await self.store.open_deliveries(events) if events else {}
                errors = await self._attempt_now([(batch[i].context, e) for i, e in announcing], targets)
            for (i, _), error in zip(announcing, errors, strict=True):
                if isinstance(error, BaseException):
                    results[i] = error
        for i, request in requests:
            with batch[i].context():
                try:
                    await self.redeliver(request)
                except Exception as exc:
                    results[i] = exc
        return results

    async def _merchant_events(
        self, records: Sequence[tuple[Envelope, PaymentStatusRecorded | RefundStatusRecorded]]
    ) -> list[MerchantEvent | RetryLater]:
        """Per record its merchant event, to be stored (RetryLater: its payment or refund is not readable yet): the
        payments read in one statement, the refunds in one."""
        payment_ids = {e.payment_id for e, m in records if isinstance(m, PaymentStatusRecorded)}
        refund_ids = {m.refund_id for _, m in records if isinstance(m, RefundStatusRecorded)}
        payments = await self.store.current_payments(payment_ids) if payment_ids else {}
        refunds = await self.store.current_refunds(refund_ids) if refund_ids else {}
        outcomes: list[MerchantEvent | RetryLater] = []
        for envelope, message in records:
            # A payment's record carries the payment as the ledger has it now; a refund's, the refund.
            if isinstance(message, RefundStatusRecorded):
                name, found = f"refund {message.refund_id}", refunds.get(message.refund_id)
            else:
                name, found = f"payment {envelope.payment_id}", payments.get(envelope.payment_id)
            if found is None:
                outcomes.append(RetryLater(f"{name} is not readable in the ledger yet"))
                continue
            merchant_id, resource = found
            outcomes.append(
                MerchantEvent(
                    id=merchant_event_id(envelope.id),
                    type=message.merchant_event_type,
                    merchant_id=merchant_id,
                    payment_id=envelope.payment_id,
                    created=envelope.occurred_at,
                    data={"object": resource},
                )
            )
        return outcomes

    async def _announce(self, event: MerchantEvent, pending: Sequence[str]) -> None:
        await self._dispatch(event, pending, redelivery=False)
        log.info(
            "merchant event recorded", merchant_event=event.id, merchant_event_type=event.type, endpoints=len(pending)
        )

    async def _dispatch(self, event: MerchantEvent, endpoint_ids: Sequence[str], *, redelivery: bool) -> None:
        for endpoint_id in endpoint_ids:
            command = DeliverWebhook(event_id=event.id, endpoint_id=endpoint_id, redelivery=redelivery)
            await self.publish(Envelope.wrap(command, payment_id=event.payment_id or "", source="notifier"))

    async def _attempt_now(
        self,
        events: Sequence[tuple[Callable[[], AbstractContextManager[None]], MerchantEvent]],
        targets: Mapping[tuple[str, str], DeliveryTarget],
    ) -> list[BaseException | None]:
        """The first attempts of the pending deliveries (`targets`, as `open_deliveries` opened them) of a batch's
        stored events, made here rather than through the deliveries queue: the POSTs made together, the attempts
        recorded in one statement. A retry goes to the delay queue of attempt 2 and an endpoint slower than the
        budget to the deliveries queue, whose consumer carries on from there. Per event None, or the error that
        kept one of its deliveries from being attempted and recorded (its record is then retried, and the replay
        attempts again what is still pending: at least once). Each event comes with the context its work runs in
        (its record's trace and log context)."""
        retry_later = self.retry_later
        assert retry_later is not None
        errors: list[BaseException | None] = [None] * len(events)
        # One delivery per (event, endpoint), whichever record of the batch brought it (a record delivered twice).
        index = {event.id: n for n, (_, event) in enumerate(events)}
        owner = {key: index[key[0]] for key in targets if key[0] in index}
        if not owner:
            return errors
        try:
            now = self.clock()
            due = [(key, t) for key, t in targets.items() if key in owner and self._due(t, redelivery=False)]

            async def post(key: tuple[str, str], target: DeliveryTarget) -> AttemptResult | None:
                with events[owner[key]][0]():  # the POST continues its record's trace
                    try:
                        return await self._post(target, now, budget=self.first_attempt_budget)
                    except SlowEndpoint:
                        await self.publish(self._command(target, redelivery=False))
                        return None

            answers = await asyncio.gather(*(post(key, t) for key, t in due), return_exceptions=True)
            made: list[tuple[tuple[str, str], Attempt]] = []
            for (key, target), answer in zip(due, answers, strict=True):
                if isinstance(answer, BaseException):
                    errors[owner[key]] = answer
                elif answer is not None:
                    made.append((key, Attempt(target, answer, self._next_step(target, answer, 1), now)))
            batched = [(key, a) for key, a in made if a.step.kind != "disable"]
            numbers = await self.store.record_attempts([a for _, a in batched]) if batched else []
            recorded = [(key, a, n) for (key, a), n in zip(batched, numbers, strict=True)]
            for key, a in made:
                if a.step.kind == "disable":  # rare, and more than one row: a transaction of its own
                    recorded.append((key, a, await self.store.record_attempt(a.target, a.result, a.step, now)))
        except Exception as exc:
            return [exc] * len(events)
        for key, a, number in recorded:
            with events[owner[key]][0]():
                try:
                    await self._after_attempt(a, number)
                except RetryLater as later:
                    command = self._command(a.target, redelivery=False)
                    try:
                        await retry_later(command, 2, later.delay_seconds or 0.0)
                    except Exception as exc:
                        errors[owner[key]] = exc
                except Exception as exc:
                    errors[owner[key]] = exc
        return errors

    @staticmethod
    def _command(target: DeliveryTarget, *, redelivery: bool) -> Envelope:
        command = DeliverWebhook(event_id=target.event.id, endpoint_id=target.endpoint_id, redelivery=redelivery)
        return Envelope.wrap(command, payment_id=target.event.payment_id or "", source="notifier")

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

    async def deliver(self, command: DeliverWebhook, position: int) -> NextStep | None:
        """One attempt: POST the event, signed, with its object as it stands now; then decide what follows.

        A failure with tries left raises RetryLater with the schedule's wait (the broker's delay queue holds the
        message meanwhile: nothing here sleeps). None: nothing to do (delivered already, endpoint gone or disabled).
        """
        now = self.clock()
        target = await self.store.delivery_target(command.event_id, command.endpoint_id, now)
        if target is None or not self._due(target, redelivery=command.redelivery):
            return None
        result = await self._post(target, now)
        step = self._next_step(target, result, position)
        number = await self.store.record_attempt(target, result, step, now)
        await self._after_attempt(Attempt(target, result, step, now), number)
        return step

    @staticmethod
    def _due(target: DeliveryTarget, *, redelivery: bool) -> bool:
        """Whether the delivery is to be attempted: its endpoint is enabled, and it is pending (or asked again)."""
        # Not pending: delivered, or given up on; a duplicate of a message already handled.
        return target.endpoint_enabled and (target.delivery_status == "pending" or redelivery)

    async def _post(self, target: DeliveryTarget, now: datetime, *, budget: float | None = None) -> AttemptResult:
        """POST the event, signed, with its payment as it stands now. With a `budget`, an endpoint that has not
        answered within it raises SlowEndpoint."""
        # A payment or refund event carries its object as it is now, so a late or retried delivery is never stale.
        current = target.refund or target.payment or dict(target.event.data.get("object") or {})
        body = delivery_body(target.event, current)
        secrets = signing_secrets(target.secret, target.previous_secret, target.previous_secret_expires_at, now)
        headers = signature_headers(target.event.id, now, body, secrets)
        if budget is None:
            return await self.send(target.url, body, headers)
        try:
            async with asyncio.timeout(budget):
                return await self.send(target.url, body, headers)
        except TimeoutError:
            raise SlowEndpoint(f"no answer within {budget:g} s of a first attempt made at once") from None

    def _next_step(self, target: DeliveryTarget, result: AttemptResult, position: int) -> NextStep:
        return after_attempt(
            result,
            position=position,
            schedule=self.schedule,
            failing_since=target.failing_since,
            now=self.clock(),
            disable_after_seconds=self.disable_after_seconds,
            jitter=self.jitter(),
        )

    async def _after_attempt(self, attempt: Attempt, number: int) -> None:
        """What follows a recorded attempt: metrics, its log line, the endpoint's disabling; RetryLater with the
        schedule's wait if it is to be tried again."""
        target, result, step = attempt.target, attempt.result, attempt.step
        outcome = {"delivered": "delivered", "retry": "failed", "give_up": "gave_up", "disable": "endpoint_disabled"}[
            step.kind
        ]
        WEBHOOK_DELIVERIES.labels(outcome).inc()
        WEBHOOK_ATTEMPT_SECONDS.labels(outcome).observe(result.duration_ms / 1000)
        log.info(
            "webhook attempt",
            merchant_event=target.event.id,
            endpoint_id=target.endpoint_id,
            attempt=number,
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
