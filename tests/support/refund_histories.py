"""One refund's realistic history, for the property tests of the refund state machine and its recording.

A refund is requested (the intake), submitted to the provider (the gateway, which learns the provider's id), and
gets one outcome, the provider's one truth, reported by one or more of the gateway's answer, the webhook and a
reconciliation; reconciliation commands may be recorded along the way.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import strategies as st

from shared.events import (
    Envelope,
    Message,
    ReconcileRefund,
    RefundRequested,
    RefundStatus,
    RefundStatusChanged,
    RefundSubmitted,
    Source,
    deterministic_event_id,
)

AMOUNT, CURRENCY = 500, "USD"
REPORTERS: tuple[Source, ...] = ("gateway", "webhook", "reconciliation")


@dataclass(frozen=True)
class RefundTruth:
    """What the provider did with a refund, and who told us."""

    status: RefundStatus
    failure_code: str | None
    reporters: frozenset[Source]
    reconciliations: int


@st.composite
def refund_truths(draw: st.DrawFn) -> RefundTruth:
    status = draw(st.sampled_from([RefundStatus.SUCCEEDED, RefundStatus.FAILED]))
    failure = draw(st.sampled_from(["expired_or_canceled_card", None])) if status is RefundStatus.FAILED else None
    reporters = draw(st.frozensets(st.sampled_from(REPORTERS), min_size=1))
    return RefundTruth(status, failure, reporters, draw(st.integers(0, 2)))


def refund_requested(payment_id: str, refund_id: str, *, amount: int = AMOUNT) -> Envelope:
    message = RefundRequested(
        refund_id=refund_id,
        merchant_id="demo",
        idempotency_key=secrets.token_hex(8),
        request_fingerprint="f" * 64,
        amount=amount,
        currency=CURRENCY,
        reason="requested_by_customer",
        provider="sandbox",
        provider_payment_id=f"pi_{payment_id}",
        created_at=datetime.now(UTC),
    )
    return Envelope.wrap(message, payment_id=payment_id, source="intake")


def provider_refund_id(refund_id: str) -> str:
    return f"rf_{refund_id}"


def _event(message: Message, payment_id: str, source: Source, *label: str) -> Envelope:
    return Envelope.wrap(message, payment_id=payment_id, source=source, event_id=deterministic_event_id(*label))


def refund_outcome(payment_id: str, refund_id: str, source: Source, status: RefundStatus, code: str | None) -> Envelope:
    changed = RefundStatusChanged(
        refund_id=refund_id,
        status=status,
        provider="sandbox",
        provider_refund_id=provider_refund_id(refund_id),
        failure_code=code,
        amount=AMOUNT,
        currency=CURRENCY,
    )
    return _event(changed, payment_id, source, refund_id, source, status.value)


def build_refund_history(truth: RefundTruth, payment_id: str, refund_id: str) -> list[Envelope]:
    """Every event of the refund but its request (which creates it), each once."""
    submitted = RefundSubmitted(
        refund_id=refund_id, provider="sandbox", provider_refund_id=provider_refund_id(refund_id)
    )
    events = [_event(submitted, payment_id, "gateway", refund_id, "submitted")]
    events += [
        refund_outcome(payment_id, refund_id, s, truth.status, truth.failure_code) for s in sorted(truth.reporters)
    ]
    for n in range(truth.reconciliations):
        command = ReconcileRefund(
            refund_id=refund_id,
            provider="sandbox",
            provider_payment_id=f"pi_{payment_id}",
            amount=AMOUNT,
            currency=CURRENCY,
        )
        events.append(Envelope.wrap(command, payment_id=payment_id, source="reconciliation", event_id=uuid.uuid4()))
        del n
    return events


@st.composite
def shuffled_with_duplicates(draw: st.DrawFn, events: list[Envelope]) -> list[Envelope]:
    """The events in an order hypothesis draws, some of them twice (a redelivery: the same envelope)."""
    copies = [e for e in events for _ in range(draw(st.integers(1, 2)))]
    return draw(st.permutations(copies))
