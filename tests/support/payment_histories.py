"""Realistic event histories of one payment, for property-based tests of the ledger.

A history follows one gateway truth: the intent is created (or could not be), then the gateway reports at most
one unsuccessful outcome and possibly a success after it (a late success), each through any of its reporters
(webhook, reconciliation, expiry, a merchant's cancel), plus commands and a forged event with another amount.
A manual-capture payment may be held first (AUTHORIZED), then captured in part, voided or lapse, each reported by
the provider's webhooks and by whichever command asked it (a capture, a void or an expiry that lost the race
reports the winner's truth), with the captures, voids and expiries themselves among the events.
`deliver` then plays a delivery order through the ledger's `record_event` (over either store), modelling
"payment unknown → retry later" as a deferral behind the payment's request, as the ledger's delay queue does.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from hypothesis import strategies as st

from services.ledger.state_machine import A, C, E, F, P, S
from services.ledger.store import LogEntry
from shared.broker import RetryLater
from shared.events import (
    CancelPayment,
    CaptureMethod,
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
    Source,
)

# The failure code the gateway gives each outcome: one truth, whoever reports it.
FAILURE_CODES: dict[PaymentStatus, str | None] = {S: None, F: "card_declined", C: None, E: "expired", A: None}
AMOUNT, CURRENCY = 1999, "USD"
# What a capture of a held payment takes: part of it.
CAPTURED = 1200
Reporter = Literal["webhook", "webhook_again", "reconciliation", "expiry", "gateway"]


@dataclass(frozen=True)
class Truth:
    """What the gateway knows about one payment, and who tells the ledger about it."""

    intent_created: bool
    # Reported outcomes, in the order they happened at the gateway: [], [T], or [X, SUCCEEDED] (late success);
    # for a held payment [AUTHORIZED] or [AUTHORIZED, T] (captured, voided or lapsed).
    outcomes: tuple[tuple[PaymentStatus, frozenset[Reporter]], ...]
    commands: frozenset[Literal["expire", "reconcile", "cancel", "capture", "capture_again"]]
    forged_amount: bool
    capture_method: CaptureMethod = "automatic"

    @property
    def final_status(self) -> PaymentStatus:
        if not self.intent_created:
            return F
        return self.outcomes[-1][0] if self.outcomes else P

    @property
    def held(self) -> bool:
        """The customer paid a manual payment: the provider held the money first."""
        return bool(self.outcomes) and self.outcomes[0][0] is A

    def failure_code(self, status: PaymentStatus) -> str | None:
        """The provider's failure code for `status`: a hold that lapsed says so."""
        return "authorization_expired" if status is E and self.held else FAILURE_CODES.get(status)

    def amount_captured(self, status: PaymentStatus) -> int | None:
        """What the provider says it took, in an event reporting `status` (None: it does not say)."""
        if status is not S:
            return None
        return CAPTURED if self.held else None


@dataclass(frozen=True)
class Expected:
    status: PaymentStatus
    failure_code: str | None
    provider_payment_id: str | None
    checkout_url: str | None
    amount_captured: int = 0


@dataclass(frozen=True)
class History:
    payment_id: str
    events: tuple[Envelope, ...]
    expected: Expected

    @property
    def event_ids(self) -> set[uuid.UUID]:
        return {e.id for e in self.events}


def _reporters(status: PaymentStatus, *, after_hold: bool = False) -> st.SearchStrategy[frozenset[Reporter]]:
    # Who can report what: the cancel path (source gateway) only brings CANCELED; the rest bring any outcome.
    possible: list[Reporter] = ["webhook", "webhook_again", "reconciliation", "expiry"]
    if status is C:
        possible.append("gateway")
    if status is A:
        # A hold is heard of by webhook or found by reconciliation (a held payment is not swept before it lapses).
        possible = ["webhook", "webhook_again", "reconciliation"]
    elif after_hold:
        # The end of a hold comes by webhook and from the commands that asked the provider: a capture, a void and
        # an expiry (source gateway, gateway and expiry), any of which reports whichever of them won.
        possible = ["webhook", "webhook_again", "gateway", "expiry"]
    return st.frozensets(st.sampled_from(possible), min_size=1)


@st.composite
def truths(draw: st.DrawFn) -> Truth:
    # Most payments get an intent; some never do (the gateway refused it).
    intent_created = draw(st.sampled_from([True, True, True, False]))
    capture_method: CaptureMethod = draw(st.sampled_from(["automatic", "manual"]))
    outcomes: list[tuple[PaymentStatus, frozenset[Reporter]]] = []
    if intent_created and capture_method == "manual" and draw(st.booleans()):
        # The customer paid: the money is held, then captured, voided, left to lapse, or still held.
        outcomes.append((A, draw(_reporters(A))))
        end = draw(st.sampled_from([None, S, C, E]))
        if end is not None:
            outcomes.append((end, draw(_reporters(end, after_hold=True))))
    elif intent_created:
        # Unpaid, or (taking the money at once) paid; a success may come late, over an unsuccessful end.
        final = draw(st.sampled_from([None, F, C, E] if capture_method == "manual" else [None, S, F, C, E]))
        if final is S and draw(st.booleans()):
            earlier = draw(st.sampled_from([F, C, E]))
            outcomes.append((earlier, draw(_reporters(earlier))))
        if final is not None:
            outcomes.append((final, draw(_reporters(final))))
    commands: frozenset[str] = frozenset()
    if intent_created:
        possible = ["expire", "reconcile", "cancel"]
        if outcomes and outcomes[0][0] is A:
            possible += ["capture", "capture_again"]  # two captures with different keys
        commands = draw(st.frozensets(st.sampled_from(possible)))
    return Truth(
        intent_created=intent_created,
        outcomes=tuple(outcomes),
        commands=commands,  # type: ignore[arg-type]
        forged_amount=intent_created and draw(st.booleans()),
        capture_method=capture_method,
    )


def intent_id_of(payment_id: str) -> str:
    return f"pi_{payment_id}"


def event(message: Message, payment_id: str, source: Source, label: str | None = None) -> Envelope:
    """An envelope for `payment_id`; the same `label` gives the same event id (a redelivery), None a new one."""
    return Envelope.wrap(
        message,
        payment_id=payment_id,
        source=source,
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{payment_id}/{label}") if label else uuid.uuid4(),
    )


def requested(
    payment_id: str,
    *,
    amount: int = AMOUNT,
    currency: str = CURRENCY,
    ttl: float = 1800,
    capture_method: CaptureMethod = "automatic",
) -> Envelope:
    created_at = datetime.now(UTC)
    message = PaymentRequested(
        merchant_id="demo",
        idempotency_key=f"key-{payment_id}",
        request_fingerprint="f" * 64,
        amount=amount,
        currency=currency,
        reference=f"order-{payment_id}",
        return_url="https://shop.example/done",
        created_at=created_at,
        expires_at=created_at + timedelta(seconds=ttl),
        capture_method=capture_method,
    )
    return event(message, payment_id, "intake", "requested")


def intent_created(payment_id: str) -> Envelope:
    intent_id = intent_id_of(payment_id)
    message = PaymentIntentCreated(
        provider="sandbox", provider_payment_id=intent_id, checkout_url=f"http://sandbox.test/pay/{intent_id}"
    )
    return event(message, payment_id, "gateway", "intent_created")


def status_changed(
    payment_id: str,
    status: PaymentStatus,
    source: Source = "webhook",
    label: str | None = None,
    *,
    amount: int = AMOUNT,
    currency: str = CURRENCY,
    failure_code: str | None = None,
    amount_captured: int | None = None,
) -> Envelope:
    """The gateway reports `status` (with the failure code its truth has, unless told) through `source`."""
    message = PaymentStatusChanged(
        status=status,
        provider="sandbox",
        provider_payment_id=intent_id_of(payment_id),
        provider_event_id=f"evt_{label or uuid.uuid4().hex}" if source == "webhook" else None,
        failure_code=failure_code or FAILURE_CODES[status],
        amount=amount,
        currency=currency,
        amount_captured=amount_captured,
    )
    return event(message, payment_id, source, label)


def build_history(truth: Truth, payment_id: str) -> History:
    """The distinct events of `truth` for `payment_id`, each with its own stable id."""
    intent_id = intent_id_of(payment_id)
    events = [requested(payment_id, capture_method=truth.capture_method)]
    if not truth.intent_created:
        failed = PaymentIntentFailed(provider="sandbox", reason="HTTP 400")
        events.append(event(failed, payment_id, "gateway", "intent_failed"))
        return History(payment_id, tuple(events), Expected(F, "gateway_error", None, None))

    events.append(intent_created(payment_id))
    for status, reporters in truth.outcomes:
        for reporter in sorted(reporters):
            source: Source = "webhook" if reporter.startswith("webhook") else reporter  # type: ignore[assignment]
            events.append(
                status_changed(
                    payment_id,
                    status,
                    source,
                    f"{status}/{reporter}",
                    failure_code=truth.failure_code(status),
                    amount_captured=truth.amount_captured(status),
                )
            )

    def capture(key: str) -> CapturePayment:
        return CapturePayment(
            amount_to_capture=CAPTURED, idempotency_key=key, provider="sandbox", provider_payment_id=intent_id
        )

    commands: dict[str, tuple[Message, Source]] = {
        "expire": (
            ExpirePayment(provider="sandbox", provider_payment_id=intent_id, authorization=truth.held),
            "expiry",
        ),
        "reconcile": (ReconcilePayment(provider="sandbox", provider_payment_id=intent_id), "reconciliation"),
        "cancel": (CancelPayment(provider="sandbox", provider_payment_id=intent_id), "merchant"),
        "capture": (capture("k1"), "merchant"),
        "capture_again": (capture("k2"), "merchant"),
    }
    for name in sorted(truth.commands):
        message, source = commands[name]
        events.append(event(message, payment_id, source, f"command/{name}"))
    if truth.forged_amount:
        events.append(status_changed(payment_id, S, "webhook", "forged", amount=AMOUNT + 1))
    final = truth.final_status
    checkout_url = f"http://sandbox.test/pay/{intent_id}"
    captured = (CAPTURED if truth.held else AMOUNT) if final is S else 0
    expected = Expected(final, truth.failure_code(final), intent_id, checkout_url, captured)
    return History(payment_id, tuple(events), expected)


@st.composite
def deliveries(draw: st.DrawFn, history: History) -> list[Envelope]:
    """Every event of `history` at least once (some twice or three times), in any order."""
    copies = [e for e in history.events for _ in range(draw(st.integers(1, 3)))]
    return draw(st.permutations(copies))


@dataclass(frozen=True)
class LogRow:
    """What the ledger's log says about one event."""

    from_status: PaymentStatus | None
    to_status: PaymentStatus | None
    outcome: str
    late_success: bool = False


def log_rows(entries: Iterable[LogEntry]) -> dict[uuid.UUID, LogRow]:
    """What a store's log says, by event id."""
    return {e.event_id: LogRow(e.from_status, e.to_status, e.outcome, e.late_success) for e in entries}


async def deliver(
    queue: list[Envelope],
    record: Callable[[Envelope], Awaitable[object]],
    choose: Callable[[int, int], int],
) -> list[Envelope]:
    """Deliver `queue` through `record`; a RetryLater puts the event back at `choose(low, high)`, somewhere
    behind its payment's request (which is why it is retried). Returns the events in the order they were
    recorded."""
    pending = list(queue)
    recorded: list[Envelope] = []
    while pending:
        envelope = pending.pop(0)
        try:
            await record(envelope)
        except RetryLater:
            request = next(i for i, e in enumerate(pending) if e.type == PaymentRequested.TYPE)
            pending.insert(choose(request + 1, len(pending)), envelope)
            continue
        recorded.append(envelope)
    return recorded
