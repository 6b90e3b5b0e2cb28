"""Recording events: the rules around the pure state machine, over the LedgerStore port (services/ledger/store.py).

Per event: read its payment's state, decide, then write the log row (keyed by event id, so a redelivery is a
no-op) and the new state together as a compare-and-set on the payment's version. A batch of events shares the
statements: one read and one write for all of them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.ledger.outcomes import Announce, status_recorded
from services.ledger.refunds import RefundRecorder, refund_id_of
from services.ledger.state_machine import Decision, PaymentState, decide, intent_left_open
from services.ledger.store import BeforeCommit, LedgerStore, LogEntry, PaymentWrite, StoredPayment, WriteResult
from shared.batches import Consumed
from shared.broker import RetryLater
from shared.cancellation import being_cancelled
from shared.events import (
    PAYMENT_MESSAGE_TYPES,
    REFUND_MESSAGE_TYPES,
    Envelope,
    ExpirePayment,
    Message,
    PaymentRequested,
    PaymentStatus,
    Source,
    deterministic_event_id,
)
from shared.logs import get_logger
from shared.metrics import (
    AMOUNT_CAPTURED,
    AMOUNT_MISMATCHES,
    AUTHORIZATIONS_CLOSED,
    LATE_SUCCESSES,
    PAYMENT_COMPLETION_SECONDS,
    PAYMENTS_COMPLETED,
)
from shared.registry import BatchRegistry

log = get_logger(__name__)


@dataclass(frozen=True)
class Recorded:
    """What recording an event did (for metrics and tests)."""

    outcome: str
    decision: Decision | None = None
    created_at: datetime | None = None


DUPLICATE = Recorded(outcome="duplicate event")

# Decisions made on a state that changed underneath are retried this often before the broker retries.
_MAX_DECISIONS = 10

Publish = Callable[[Envelope], Awaitable[None]]
# Publish envelopes of one type as one broker message, each in its own context (Broker.publish_bundle).
PublishBundle = Callable[[Sequence[tuple[Envelope, Callable[[], AbstractContextManager[Any]]]]], Awaitable[None]]


@dataclass
class _PaymentPlan:
    """The events of one payment in a batch, decided in batch order on the state the store read."""

    stored: StoredPayment
    state: PaymentState
    seen: set[uuid.UUID]
    # (batch index, decision); None for an event the payment has already logged.
    decisions: list[tuple[int, Decision | None]] = field(default_factory=list)
    entries: list[LogEntry] = field(default_factory=list)
    follow_ups: list[tuple[uuid.UUID, Envelope]] = field(default_factory=list)

    def add(self, index: int, envelope: Envelope, message: Message) -> None:
        if envelope.id in self.seen:
            self.decisions.append((index, None))
            return
        decision = decide(self.state, message)
        self.state = decision.after
        self.seen.add(envelope.id)
        self.decisions.append((index, decision))
        self.entries.append(
            LogEntry.of(
                envelope,
                decision.before.status,
                decision.after.status,
                decision.outcome,
                late_success=decision.late_success,
            )
        )
        follow_up = intent_left_open(decision, message)
        if follow_up is not None:
            self.follow_ups.append((envelope.id, _follow_up_envelope(envelope, follow_up)))

    def write(self, payment_id: str) -> PaymentWrite:
        changed = self.state != self.stored.state
        return PaymentWrite(
            payment_id=payment_id,
            version=self.stored.version,
            entries=tuple(self.entries),
            after=self.state if changed else None,
            completed=any(d is not None and d.completed for _, d in self.decisions),
        )


async def record_events(
    store: LedgerStore,
    envelopes: Sequence[Envelope],
    publish: Publish | None = None,
    *,
    messages: Sequence[Message] | None = None,
) -> list[Recorded | RetryLater]:
    """Record a batch of events, each exactly once, in a few statements; per event, what it did, or RetryLater
    if its payment is not known yet (or kept changing while it was decided).

    Payment requests are created first (later events of the batch may be about them). Then every other
    event is decided by the pure state machine on its payment's current state, the events of one payment
    one after the other in batch order, and each payment's log rows and new state are written together as
    a compare-and-set on its version: a payment another ledger changed meanwhile gets nothing written and
    its events are decided again on the new state. A follow-up command (closing an intent the payment's end
    left open) is published before the write commits, so it is never lost: if publishing fails, nothing is
    written, the events are retried and the command is sent again under the same id. `messages`, if given,
    are the envelopes' payloads already validated (else validated here).
    """
    results: dict[int, Recorded | RetryLater] = {}
    if messages is None:
        messages = [envelope.message() for envelope in envelopes]
    elif len(messages) != len(envelopes):
        raise ValueError(f"{len(messages)} messages for {len(envelopes)} envelopes")
    requests = [(i, envelopes[i]) for i, m in enumerate(messages) if isinstance(m, PaymentRequested)]
    await _record_requests(store, requests, results)
    pending = [i for i, m in enumerate(messages) if not isinstance(m, PaymentRequested)]
    for _ in range(_MAX_DECISIONS):
        if not pending:
            break
        payments = await store.read({envelopes[i].payment_id for i in pending}, {envelopes[i].id for i in pending})
        plans: dict[str, _PaymentPlan] = {}
        for i in pending:
            envelope = envelopes[i]
            stored = payments.get(envelope.payment_id)
            if stored is None:
                results[i] = RetryLater(f"payment {envelope.payment_id} is not in the ledger yet")
                continue
            if envelope.payment_id not in plans:
                plans[envelope.payment_id] = _PaymentPlan(stored, stored.state, set(stored.seen))
            plans[envelope.payment_id].add(i, envelope, messages[i])
        writes = [plan.write(payment_id) for payment_id, plan in plans.items() if plan.entries]
        follow_ups = [f for plan in plans.values() for f in plan.follow_ups]
        result = WriteResult(frozenset(), frozenset())
        if writes:
            before_commit = _publishing(follow_ups, publish) if follow_ups and publish is not None else None
            result = await store.apply_if_unchanged(writes, before_commit=before_commit)
        pending = []
        for payment_id, plan in plans.items():
            if plan.entries and payment_id not in result.matched:
                pending.extend(i for i, _ in plan.decisions)  # another ledger changed it: decide again
                continue
            for i, decision in plan.decisions:
                if decision is None or envelopes[i].id not in result.logged:
                    results[i] = DUPLICATE  # logged before, or by a twin delivery between our read and our write
                else:
                    results[i] = Recorded(decision.outcome, decision, plan.stored.created_at)
        pending.sort()
    for i in pending:
        results[i] = RetryLater(f"payment {envelopes[i].payment_id} kept changing while this event was decided")
    return [results[i] for i in range(len(envelopes))]


async def _record_requests(
    store: LedgerStore, requests: list[tuple[int, Envelope]], results: dict[int, Recorded | RetryLater]
) -> None:
    # The store takes distinct payments and events per call: a repeat waits for the next round, where it finds
    # its payment (ALREADY_RECORDED) or its log row (a duplicate).
    while requests:
        now: list[tuple[int, Envelope]] = []
        later: list[tuple[int, Envelope]] = []
        payments: set[str] = set()
        for i, envelope in requests:
            (later if envelope.payment_id in payments else now).append((i, envelope))
            payments.add(envelope.payment_id)
        outcomes = await store.record_requests([envelope for _, envelope in now])
        for i, envelope in now:
            outcome = outcomes.get(envelope.id)
            results[i] = DUPLICATE if outcome is None else Recorded(outcome=outcome)
        requests = later


def _publishing(follow_ups: list[tuple[uuid.UUID, Envelope]], publish: Publish) -> BeforeCommit:
    async def publish_logged(result: WriteResult) -> None:
        for event_id, command in follow_ups:
            if event_id in result.logged:
                await publish(command)
                log.warning("the payment ended with its intent still open; closing it", command=command.type)

    return publish_logged


def _follow_up_envelope(envelope: Envelope, follow_up: Message) -> Envelope:
    source: Source = "expiry" if isinstance(follow_up, ExpirePayment) else "merchant"
    return Envelope.wrap(
        follow_up,
        payment_id=envelope.payment_id,
        source=source,
        event_id=deterministic_event_id(envelope.payment_id, "close-late-intent", str(envelope.id)),
    )


# How a hold ended, by the status it ended in.
_HOLD_OUTCOMES = {
    PaymentStatus.SUCCEEDED: "captured",
    PaymentStatus.CANCELED: "voided",
    PaymentStatus.EXPIRED: "expired",
    PaymentStatus.FAILED: "failed",
}


def _observe(recorded: Recorded) -> None:
    decision = recorded.decision
    if decision is None:
        return
    if decision.amount_mismatch:
        AMOUNT_MISMATCHES.inc()
        log.warning("amount mismatch: event not applied", outcome=recorded.outcome)
    if decision.late_success:
        LATE_SUCCESSES.inc()
        log.warning("late success applied over a terminal status; review", from_status=decision.before.status)
    before, after = decision.before.status, decision.after.status
    if decision.completed:
        PAYMENTS_COMPLETED.labels(after.value).inc()
    # The customer's part ends when the payment is paid or held: how long a shop keeps a hold is its own business.
    customer_done = decision.completed or (decision.applied and after is PaymentStatus.AUTHORIZED)
    if customer_done and before is not PaymentStatus.AUTHORIZED and recorded.created_at is not None:
        PAYMENT_COMPLETION_SECONDS.labels(after.value).observe(
            (datetime.now(UTC) - recorded.created_at).total_seconds()
        )
    if decision.completed and before is PaymentStatus.AUTHORIZED:
        AUTHORIZATIONS_CLOSED.labels(_HOLD_OUTCOMES[after]).inc()
        if after is PaymentStatus.SUCCEEDED:
            AMOUNT_CAPTURED.labels(decision.after.currency).inc(decision.after.amount_captured)


class LedgerHandlers:
    """The ledger's handlers (docs/explanation/handlers.md): every payment message is recorded by `record_batch`."""

    def __init__(
        self,
        store: LedgerStore,
        publish: Publish | None = None,
        announced_before: Announce | None = None,
        refunds: RefundRecorder | None = None,
        publish_bundle: PublishBundle | None = None,
    ) -> None:
        self._store = store
        # Where a batch's announcements go together, as one broker message per type; None: one message each.
        self._publish_bundle = publish_bundle
        # Where follow-up commands and PaymentStatusRecorded announcements go; None records without telling anyone.
        self._publish = publish
        # For an event recorded on an earlier delivery: the announcement of what it changed then.
        self._announced_before = announced_before
        # A refund is an aggregate of its own, recorded by its own rules (services/ledger/refunds.py).
        self._refunds = refunds

    async def _record_refund(self, envelope: Envelope, message: Message) -> None:
        if self._refunds is None:
            raise RetryLater("this ledger does not record refunds")
        await self._refunds(envelope, message)

    async def record_batch(self, batch: Sequence[Consumed]) -> list[BaseException | None]:
        """Record a batch (the broker's batch handler): per message None once recorded, RetryLater if its payment
        is not known yet, PoisonMessage if it is no message the registry knows. Raises only if the whole batch
        failed (the broker then hands its messages over one at a time)."""
        results, decoded = LEDGER_MESSAGES.decode_batch([item.envelope for item in batch])
        # A refund's events each in a transaction of its own that locks its refund (then, if it succeeded, its
        # payment's row: always in that order, so two refunds of one payment wait for each other, never deadlock).
        # Those of one refund one after another, in the batch's order (its request before its outcome); different
        # refunds' together.
        by_refund: dict[str, list[tuple[int, Message]]] = {}
        for i, message in decoded:
            if type(message) in _REFUND_TYPES:
                by_refund.setdefault(refund_id_of(message), []).append((i, message))

        async def record_refund(events: Sequence[tuple[int, Message]]) -> None:
            for i, message in events:
                with batch[i].context():
                    try:
                        await self._record_refund(batch[i].envelope, message)
                    except Exception as exc:
                        results[i] = exc

        await asyncio.gather(*(record_refund(events) for events in by_refund.values()))
        decoded = [(i, message) for i, message in decoded if type(message) not in _REFUND_TYPES]
        valid = [i for i, _ in decoded]
        messages = [message for _, message in decoded]
        by_payment = {batch[i].envelope.payment_id: batch[i] for i in valid}

        async def publish_in_its_context(command: Envelope) -> None:
            # A follow-up command continues the trace of the event that caused it.
            assert self._publish is not None
            with by_payment[command.payment_id].context():
                await self._publish(command)

        publish = None if self._publish is None else publish_in_its_context
        recorded = await record_events(self._store, [batch[i].envelope for i in valid], publish, messages=messages)
        # Per event to announce, its announcement, or None for a duplicate's (looked up in the log).
        announcing: list[tuple[int, Envelope | None]] = []
        for i, outcome in zip(valid, recorded, strict=True):
            if isinstance(outcome, RetryLater):
                results[i] = outcome
                continue
            with batch[i].context():
                _observe(outcome)
                log.info("event recorded", outcome=outcome.outcome, attempt=batch[i].delivery.attempt, batch=len(batch))
            if self._publish is None:
                continue
            if outcome.outcome == DUPLICATE.outcome:
                if self._announced_before is not None:
                    announcing.append((i, None))
            elif (announcement := status_recorded(batch[i].envelope, outcome.outcome, outcome.decision)) is not None:
                announcing.append((i, announcement))

        async def announcement_of(item: Consumed, announcement: Envelope | None) -> Envelope | None:
            # A duplicate (an event recorded on an earlier delivery) announces again what it changed then, from
            # its log row: if the announcement failed then, this is its retry.
            if announcement is not None:
                return announcement
            assert self._announced_before is not None
            with item.context():
                return await self._announced_before(item.envelope)

        async def announce(item: Consumed, announcement: Envelope | None) -> None:
            # After the commit, tell the rest of the system what changed (PaymentStatusRecorded).
            assert self._publish is not None
            with item.context():  # in a task of its own: the announcement continues its event's trace
                try:
                    if (announcement := await announcement_of(item, announcement)) is not None:
                        await self._publish(announcement)
                except Exception as exc:  # recorded, not announced: its retry announces it
                    log.warning("status change not announced yet", error=f"{type(exc).__name__}: {exc}")
                    raise

        if self._publish_bundle is None:
            # The batch's announcements all at once, their confirms awaited together; one that fails is retried
            # alone (RetryLater), the others are acked.
            errors = await asyncio.gather(*(announce(batch[i], a) for i, a in announcing), return_exceptions=True)
        else:
            errors = await self._announce_together([(batch[i], a) for i, a in announcing], announcement_of)
        for (i, _), error in zip(announcing, errors, strict=True):
            # A CancelledError here is one announcement's, not this task's (gather raises that itself).
            if isinstance(error, Exception | asyncio.CancelledError):
                results[i] = RetryLater("the status change could not be announced yet")
            elif isinstance(error, BaseException):
                raise error
        return results

    async def _announce_together(
        self,
        announcing: Sequence[tuple[Consumed, Envelope | None]],
        announcement_of: Callable[[Consumed, Envelope | None], Awaitable[Envelope | None]],
    ) -> list[BaseException | None]:
        """The batch's announcements as one bundle per message type (one broker message for the notifier to
        take instead of one per payment), each envelope in its event's trace. Per announcement None, or the
        error that kept it from the broker (its bundle's, for all of the bundle: each is retried)."""
        assert self._publish_bundle is not None
        found = await asyncio.gather(*(announcement_of(item, a) for item, a in announcing), return_exceptions=True)
        errors: list[BaseException | None] = [e if isinstance(e, BaseException) else None for e in found]
        by_type: dict[str, list[tuple[int, Envelope]]] = {}
        for n, envelope in enumerate(found):
            if isinstance(envelope, Envelope):
                by_type.setdefault(envelope.type, []).append((n, envelope))
        for envelopes in by_type.values():
            positions = [n for n, _ in envelopes]
            bundle = [(envelope, announcing[n][0].context) for n, envelope in envelopes]
            try:
                await self._publish_bundle(bundle)
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and being_cancelled():
                    raise
                log.warning("status changes not announced yet", error=f"{type(exc).__name__}: {exc}", size=len(bundle))
                for n in positions:
                    errors[n] = exc
        return errors


_REFUND_TYPES = frozenset(REFUND_MESSAGE_TYPES.values())

# The ledger's message registry: it records every payment event and command (its log is the audit trail), in
# batches; the notification messages it announces are not its own to record.
LEDGER_MESSAGES: BatchRegistry[LedgerHandlers] = BatchRegistry(
    "ledger", PAYMENT_MESSAGE_TYPES.values(), LedgerHandlers.record_batch
)
