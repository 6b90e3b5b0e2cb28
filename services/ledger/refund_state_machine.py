"""The refund state machine, written once as data; pure (no I/O), so it is tested on its own.

pending → succeeded | failed, final after that. A refund is its own aggregate beside its payment: it is created
by RefundRequested (the ledger's row), then learns its provider id (RefundSubmitted) and its outcome
(RefundStatusChanged, from the gateway's answer, the provider's webhook or a reconciliation).

Why the order of events does not matter: RefundRequested creates the row and every other event waits for it
(the ledger retries them); the provider id is kept once known whatever arrives around it; and the outcome is one
provider truth, reported by any number of sources, of which the first final one sticks. A later event that
contradicts it is logged as ignored (and counted), never applied: a refund's money moves once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from services.ledger.transitions import consult, names_another_object, reports_another_amount
from shared.events import Message, ReconcileRefund, RefundStatus, RefundStatusChanged, RefundSubmitted

PENDING, SUCCEEDED, FAILED = RefundStatus.PENDING, RefundStatus.SUCCEEDED, RefundStatus.FAILED


class RefundRule(StrEnum):
    APPLY = "apply"
    DUPLICATE = "duplicate"
    CONTRADICTS = "contradicts"
    NOT_AN_OUTCOME = "not_an_outcome"


# (current status, status an event reports) → what to do. Every pair is listed: nothing is implicit.
# fmt: off
REFUND_TRANSITIONS: dict[tuple[RefundStatus, RefundStatus], RefundRule] = {
    (PENDING, SUCCEEDED): RefundRule.APPLY, (PENDING, FAILED): RefundRule.APPLY,
    (SUCCEEDED, SUCCEEDED): RefundRule.DUPLICATE, (SUCCEEDED, FAILED): RefundRule.CONTRADICTS,
    (FAILED, FAILED): RefundRule.DUPLICATE, (FAILED, SUCCEEDED): RefundRule.CONTRADICTS,
    # pending is where a refund starts, never an outcome an event can bring.
    (PENDING, PENDING): RefundRule.NOT_AN_OUTCOME, (SUCCEEDED, PENDING): RefundRule.NOT_AN_OUTCOME,
    (FAILED, PENDING): RefundRule.NOT_AN_OUTCOME,
}
# fmt: on

IGNORED_BECAUSE: dict[RefundRule, str] = {
    RefundRule.DUPLICATE: "duplicate: refund already {current}",
    RefundRule.CONTRADICTS: "contradicts final refund status: already {current}, reported {reported}",
    RefundRule.NOT_AN_OUTCOME: "not an outcome: {reported}",
}

# The failure code of a failed refund whose event names none.
DEFAULT_REFUND_FAILURE_CODE = "refund_failed"


@dataclass(frozen=True)
class RefundState:
    """What the refund state machine reads and changes of one `ledger.refunds` row."""

    status: RefundStatus
    amount: int
    currency: str
    provider_refund_id: str | None = None
    failure_code: str | None = None


@dataclass(frozen=True)
class RefundDecision:
    """The effect of one event on a refund: the new state, and what its log row says."""

    before: RefundState
    after: RefundState
    outcome: str
    contradiction: bool = False
    amount_mismatch: bool = False

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"

    @property
    def completed(self) -> bool:
        """This event gave the refund its final status."""
        return self.applied and self.after.status.is_final and not self.before.status.is_final


def _ignored(state: RefundState, reason: str, **flags: bool) -> RefundDecision:
    return RefundDecision(before=state, after=state, outcome=f"ignored: {reason}", **flags)


def decide_refund(state: RefundState, message: Message) -> RefundDecision:
    """What `message` does to a refund in `state` (RefundRequested is the row's creation, not here)."""
    if isinstance(message, RefundSubmitted):
        if state.provider_refund_id not in (None, message.provider_refund_id):
            return _ignored(state, "another provider refund is already recorded")
        return RefundDecision(state, replace(state, provider_refund_id=message.provider_refund_id), "applied")
    if isinstance(message, RefundStatusChanged):
        if reports_another_amount(
            message.amount, message.currency, expected=state.amount, expected_currency=state.currency
        ):
            return _ignored(
                state,
                f"amount mismatch: provider says {message.amount} {message.currency},"
                f" refund is {state.amount} {state.currency}",
                amount_mismatch=True,
            )
        if names_another_object(message.provider_refund_id, state.provider_refund_id):
            return _ignored(state, "event is about another provider refund")
        rule, ignored_because = consult(REFUND_TRANSITIONS, IGNORED_BECAUSE, state.status, message.status)
        if ignored_because is not None:
            return _ignored(state, ignored_because, contradiction=rule is RefundRule.CONTRADICTS)
        after = replace(
            state,
            status=message.status,
            failure_code=(message.failure_code or DEFAULT_REFUND_FAILURE_CODE) if message.status is FAILED else None,
            provider_refund_id=state.provider_refund_id or message.provider_refund_id,
        )
        return RefundDecision(state, after, "applied")
    if isinstance(message, ReconcileRefund):
        # Recorded for the audit trail; the provider's answer comes later as a status change.
        if state.status.is_final:
            return _ignored(state, f"refund already {state.status}")
        return RefundDecision(state, state, "applied")
    return _ignored(state, f"not a refund event: {message.TYPE}")
