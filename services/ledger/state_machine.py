"""The payment state machine, written once as data; pure (no I/O), so it is tested on its own.

PENDING → SUCCEEDED | FAILED | CANCELED | EXPIRED, and with manual capture PENDING → AUTHORIZED → SUCCEEDED
(captured) | CANCELED (voided) | EXPIRED (the hold lapsed). Terminal states stay, except that a gateway-confirmed
success or capture wins over FAILED/CANCELED/EXPIRED (money moved): that is applied and flagged as a late success.

Why the order of events does not matter: AUTHORIZED is only ever entered from PENDING and left for a terminal
status; the first terminal status sticks, except that SUCCEEDED overrides any other. So once every event of a
payment is in, it is SUCCEEDED if any event said so, else the one unsuccessful outcome the gateway reported, else
AUTHORIZED if the gateway said the money is held (one gateway truth: its webhook, a reconciliation, a capture, a
void and an expiry all say the same; a capture racing a void or an expiry is decided by the provider first).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from services.ledger.transitions import consult, names_another_object, reports_another_amount
from shared.events import (
    CancelPayment,
    CaptureMethod,
    CapturePayment,
    ExpirePayment,
    Message,
    PaymentIntentCreated,
    PaymentIntentFailed,
    PaymentStatus,
    PaymentStatusChanged,
    ReconcilePayment,
)

P, A, S, F, C, E = (
    PaymentStatus.PENDING,
    PaymentStatus.AUTHORIZED,
    PaymentStatus.SUCCEEDED,
    PaymentStatus.FAILED,
    PaymentStatus.CANCELED,
    PaymentStatus.EXPIRED,
)


class Rule(StrEnum):
    APPLY = "apply"
    LATE_SUCCESS = "late_success"
    DUPLICATE = "duplicate"
    STALE = "stale"
    ALREADY_TERMINAL = "already_terminal"
    NOT_AN_OUTCOME = "not_an_outcome"


# (current status, status an event reports) → what to do. Every pair is listed: nothing is implicit.
# fmt: off
TRANSITIONS: dict[tuple[PaymentStatus, PaymentStatus], Rule] = {
    (P, A): Rule.APPLY,
    (P, S): Rule.APPLY, (P, F): Rule.APPLY, (P, C): Rule.APPLY, (P, E): Rule.APPLY,
    # A hold is captured (SUCCEEDED), voided (CANCELED) or lapses (EXPIRED); a failure cannot follow it.
    (A, A): Rule.DUPLICATE,
    (A, S): Rule.APPLY, (A, F): Rule.STALE, (A, C): Rule.APPLY, (A, E): Rule.APPLY,
    # A hold reported after the payment ended is no way back: a success stays, an unsuccessful end stays (and
    # the hold it left at the provider is voided: see `intent_left_open`).
    (S, A): Rule.STALE, (F, A): Rule.ALREADY_TERMINAL, (C, A): Rule.ALREADY_TERMINAL, (E, A): Rule.ALREADY_TERMINAL,
    (S, S): Rule.DUPLICATE, (S, F): Rule.STALE, (S, C): Rule.STALE, (S, E): Rule.STALE,
    (F, S): Rule.LATE_SUCCESS, (F, F): Rule.DUPLICATE, (F, C): Rule.ALREADY_TERMINAL, (F, E): Rule.ALREADY_TERMINAL,
    (C, S): Rule.LATE_SUCCESS, (C, F): Rule.ALREADY_TERMINAL, (C, C): Rule.DUPLICATE, (C, E): Rule.ALREADY_TERMINAL,
    (E, S): Rule.LATE_SUCCESS, (E, F): Rule.ALREADY_TERMINAL, (E, C): Rule.ALREADY_TERMINAL, (E, E): Rule.DUPLICATE,
    # PENDING is where a payment starts, never an outcome an event can bring.
    (P, P): Rule.NOT_AN_OUTCOME, (A, P): Rule.NOT_AN_OUTCOME, (S, P): Rule.NOT_AN_OUTCOME,
    (F, P): Rule.NOT_AN_OUTCOME, (C, P): Rule.NOT_AN_OUTCOME, (E, P): Rule.NOT_AN_OUTCOME,
}
# fmt: on

# Why an event is ignored, per rule: the text after "ignored: " in its log row.
IGNORED_BECAUSE: dict[Rule, str] = {
    Rule.DUPLICATE: "duplicate: already {current}",
    Rule.STALE: "stale: already {current}",
    Rule.ALREADY_TERMINAL: "already terminal: {current}",
    Rule.NOT_AN_OUTCOME: "not an outcome: {reported}",
}

# The failure code a status carries when the event names none.
DEFAULT_FAILURE_CODE = {F: "gateway_error", E: "expired"}


@dataclass(frozen=True)
class PaymentState:
    """What the state machine reads and changes of one `ledger.payment_requests` row."""

    status: PaymentStatus
    amount: int
    currency: str
    provider: str | None = None
    provider_payment_id: str | None = None
    checkout_url: str | None = None
    failure_code: str | None = None
    capture_method: CaptureMethod = "automatic"
    # What the provider took: 0 until SUCCEEDED, then the whole amount or (manual capture) what was captured.
    amount_captured: int = 0

    @property
    def amount_capturable(self) -> int:
        """What a capture may still take: the held amount while AUTHORIZED, else nothing."""
        return self.amount if self.status is A else 0


@dataclass(frozen=True)
class Decision:
    """The effect of one event: the new state, and what the log row says about it."""

    before: PaymentState
    after: PaymentState
    outcome: str
    late_success: bool = False
    amount_mismatch: bool = False

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"

    @property
    def completed(self) -> bool:
        """This event moved the payment into a terminal status (first time or late success)."""
        return self.applied and self.after.status.is_terminal and self.after.status != self.before.status


def _ignored(state: PaymentState, reason: str, *, amount_mismatch: bool = False) -> Decision:
    return Decision(before=state, after=state, outcome=f"ignored: {reason}", amount_mismatch=amount_mismatch)


def _status_change(
    state: PaymentState,
    status: PaymentStatus,
    *,
    failure_code: str | None,
    provider: str | None,
    provider_payment_id: str | None,
    amount_captured: int | None = None,
) -> Decision:
    rule, ignored_because = consult(TRANSITIONS, IGNORED_BECAUSE, state.status, status)
    if ignored_because is not None:
        return _ignored(state, ignored_because)
    after = replace(
        state,
        status=status,
        failure_code=None if status in (A, S) else (failure_code or DEFAULT_FAILURE_CODE.get(status)),
        provider=state.provider or provider,
        provider_payment_id=state.provider_payment_id or provider_payment_id,
        # A provider that does not say how much it took took all of it.
        amount_captured=(state.amount if amount_captured is None else amount_captured) if status is S else 0,
    )
    return Decision(before=state, after=after, outcome="applied", late_success=rule is Rule.LATE_SUCCESS)


def decide(state: PaymentState, message: Message) -> Decision:
    """What `message` does to a payment in `state` (PaymentRequested is the row's creation, not here)."""
    if isinstance(message, PaymentIntentCreated):
        if state.provider_payment_id not in (None, message.provider_payment_id):
            return _ignored(state, "another intent is already recorded")
        after = replace(
            state,
            provider=message.provider,
            provider_payment_id=message.provider_payment_id,
            checkout_url=message.checkout_url,
        )
        return Decision(before=state, after=after, outcome="applied")
    if isinstance(message, PaymentIntentFailed):
        return _status_change(
            state, F, failure_code=message.failure_code, provider=message.provider, provider_payment_id=None
        )
    if isinstance(message, PaymentStatusChanged):
        if reports_another_amount(
            message.amount, message.currency, expected=state.amount, expected_currency=state.currency
        ):
            return _ignored(
                state,
                f"amount mismatch: provider says {message.amount} {message.currency},"
                f" payment is {state.amount} {state.currency}",
                amount_mismatch=True,
            )
        if message.amount_captured is not None and not 0 < message.amount_captured <= state.amount:
            return _ignored(
                state,
                f"amount mismatch: provider says it captured {message.amount_captured},"
                f" payment is {state.amount} {state.currency}",
                amount_mismatch=True,
            )
        if names_another_object(message.provider_payment_id, state.provider_payment_id):
            return _ignored(state, "event is about another intent")
        return _status_change(
            state,
            message.status,
            failure_code=message.failure_code,
            provider=message.provider,
            provider_payment_id=message.provider_payment_id,
            amount_captured=message.amount_captured,
        )
    if isinstance(message, CancelPayment | ExpirePayment | ReconcilePayment | CapturePayment):
        # Commands are recorded for the audit trail; their outcome arrives later as a status change.
        if state.status.is_terminal:
            return _ignored(state, f"already terminal: {state.status}")
        return Decision(before=state, after=state, outcome="applied")
    return _ignored(state, f"not a ledger event: {message.TYPE}")


def intent_left_open(decision: Decision, message: Message) -> Message | None:
    """The command that closes an intent the payment's end left open at the provider, if any.

    Three ways to get there: the gateway opens an intent late (a create retried after the merchant
    canceled, or after the sweep expired the payment); or the payment was closed on our side without
    naming its intent (the cancel was asked before the intent was known); or the provider reports a hold
    on a payment that had already ended unsuccessfully. Either way the customer could still pay on the
    hosted page, or their money stays held, so the intent is closed (the hold voided) too.
    """
    provider: str | None
    intent: str | None
    if (
        isinstance(message, PaymentStatusChanged)
        and message.status is A
        and decision.before.status in (F, C, E)
        and not decision.amount_mismatch
    ):
        ended = E if decision.before.status is E else C
        provider = decision.before.provider or message.provider
        intent = decision.before.provider_payment_id or message.provider_payment_id
        if ended is C:
            return CancelPayment(provider=provider, provider_payment_id=intent)
        return ExpirePayment(provider=provider, provider_payment_id=intent, authorization=True)
    if not decision.applied:
        return None
    if isinstance(message, PaymentIntentCreated) and decision.before.status in (C, E):
        ended, provider, intent = decision.before.status, message.provider, message.provider_payment_id
    elif (
        isinstance(message, PaymentStatusChanged)
        and decision.after.status in (C, E)
        and decision.before.status is not A  # a hold's end is reported by the provider that released it
        and message.provider_payment_id is None
        and decision.before.provider_payment_id is not None
    ):
        ended, provider, intent = decision.after.status, decision.before.provider, decision.before.provider_payment_id
    else:
        return None
    if ended is C:
        return CancelPayment(provider=provider, provider_payment_id=intent)
    return ExpirePayment(provider=provider, provider_payment_id=intent)
