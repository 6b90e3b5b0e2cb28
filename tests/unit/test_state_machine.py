"""The ledger's state machine (DESIGN §2), rule by rule, on the pure `decide` function."""

from __future__ import annotations

import itertools

import pytest

# The one-letter statuses the transition table is written in, so the tests read like it.
from services.ledger.state_machine import TRANSITIONS, A, C, E, F, P, PaymentState, Rule, S, decide, intent_left_open
from shared.events import (
    CancelPayment,
    CapturePayment,
    ExpirePayment,
    PaymentIntentCreated,
    PaymentIntentFailed,
    PaymentStatus,
    PaymentStatusChanged,
    ReconcilePayment,
)

UNSUCCESSFUL = (F, C, E)


def state(status: PaymentStatus = P, **overrides: object) -> PaymentState:
    values: dict[str, object] = {
        "status": status,
        "amount": 1999,
        "currency": "USD",
        "provider": "sandbox",
        "provider_payment_id": "pi_1",
        "checkout_url": "http://sandbox/pay/pi_1",
        "failure_code": {F: "card_declined", E: "expired"}.get(status),
    }
    values.update(overrides)
    return PaymentState(**values)  # type: ignore[arg-type]


def changed(status: PaymentStatus, **overrides: object) -> PaymentStatusChanged:
    values: dict[str, object] = {
        "status": status,
        "provider": "sandbox",
        "provider_payment_id": "pi_1",
        "amount": 1999,
        "currency": "USD",
        "failure_code": "card_declined" if status is F else None,
    }
    values.update(overrides)
    return PaymentStatusChanged(**values)  # type: ignore[arg-type]


def test_the_transition_table_names_a_rule_for_every_pair_of_statuses() -> None:
    assert set(TRANSITIONS) == set(itertools.product(PaymentStatus, PaymentStatus))


def test_only_a_pending_or_held_payment_or_a_success_over_a_terminal_one_is_applied() -> None:
    applied = {pair for pair, rule in TRANSITIONS.items() if rule in (Rule.APPLY, Rule.LATE_SUCCESS)}
    # fmt: off
    assert applied == {
        (P, A), (P, S), (P, F), (P, C), (P, E),
        (A, S), (A, C), (A, E),  # a hold is captured, voided or lapses
        (F, S), (C, S), (E, S),  # late successes
    }
    # fmt: on


def test_authorized_is_entered_only_from_pending_and_left_only_for_a_terminal_status() -> None:
    entering = {current for (current, reported), rule in TRANSITIONS.items() if reported is A and rule is Rule.APPLY}
    leaving = {reported for (current, reported), rule in TRANSITIONS.items() if current is A and rule is Rule.APPLY}

    assert entering == {P}
    assert leaving == {S, C, E}
    assert all(status.is_terminal for status in leaving) and not A.is_terminal


@pytest.mark.parametrize("outcome", [S, F, C, E])
def test_a_pending_payment_takes_the_status_the_gateway_reports(outcome: PaymentStatus) -> None:
    decision = decide(state(P), changed(outcome))

    assert decision.outcome == "applied"
    assert decision.after.status is outcome
    assert decision.completed and not decision.late_success


def test_a_success_clears_the_failure_code() -> None:
    assert decide(state(P, failure_code="stale"), changed(S)).after.failure_code is None


def test_a_failure_keeps_the_gateways_failure_code() -> None:
    assert decide(state(P), changed(F, failure_code="insufficient_funds")).after.failure_code == "insufficient_funds"


def test_an_expiry_without_a_failure_code_gets_expired() -> None:
    assert decide(state(P), changed(E, failure_code=None)).after.failure_code == "expired"


@pytest.mark.parametrize("terminal", UNSUCCESSFUL)
def test_a_success_after_an_unsuccessful_end_is_applied_and_flagged_late(terminal: PaymentStatus) -> None:
    decision = decide(state(terminal), changed(S))

    assert decision.outcome == "applied"
    assert decision.late_success
    assert decision.after.status is S and decision.after.failure_code is None
    assert decision.completed


@pytest.mark.parametrize("later", UNSUCCESSFUL)
def test_an_unsuccessful_outcome_after_a_success_is_ignored_as_stale(later: PaymentStatus) -> None:
    decision = decide(state(S), changed(later))

    assert decision.outcome == "ignored: stale: already SUCCEEDED"
    assert decision.after == decision.before


@pytest.mark.parametrize("terminal", [S, F, C, E])
def test_the_same_outcome_again_is_ignored_as_a_duplicate(terminal: PaymentStatus) -> None:
    decision = decide(state(terminal), changed(terminal))

    assert decision.outcome == f"ignored: duplicate: already {terminal}"
    assert decision.after == decision.before and not decision.completed


@pytest.mark.parametrize(("current", "later"), [(a, b) for a in UNSUCCESSFUL for b in UNSUCCESSFUL if a != b])
def test_another_unsuccessful_outcome_after_a_terminal_one_is_ignored(
    current: PaymentStatus, later: PaymentStatus
) -> None:
    decision = decide(state(current), changed(later))

    assert decision.outcome == f"ignored: already terminal: {current}"
    assert decision.after == decision.before


def test_a_manual_payment_the_customer_paid_is_held_with_its_whole_amount_capturable() -> None:
    decision = decide(state(P, capture_method="manual"), changed(A))

    assert decision.outcome == "applied"
    assert decision.after.status is A and decision.after.failure_code is None
    assert (decision.after.amount_capturable, decision.after.amount_captured) == (1999, 0)
    assert not decision.completed


def test_a_partial_capture_succeeds_with_what_the_provider_took() -> None:
    decision = decide(state(A, capture_method="manual"), changed(S, amount_captured=1200))

    assert decision.outcome == "applied" and not decision.late_success
    assert decision.after.status is S
    assert (decision.after.amount_captured, decision.after.amount_capturable) == (1200, 0)
    assert decision.completed


def test_a_success_that_does_not_say_how_much_was_taken_took_the_whole_amount() -> None:
    assert decide(state(P), changed(S)).after.amount_captured == 1999


@pytest.mark.parametrize("taken", [0, 2000])
def test_a_capture_of_nothing_or_of_more_than_the_hold_is_not_applied(taken: int) -> None:
    decision = decide(state(A, capture_method="manual"), changed(S, amount_captured=taken))

    assert decision.outcome.startswith("ignored: amount mismatch")
    assert decision.amount_mismatch and decision.after == decision.before


@pytest.mark.parametrize(("outcome", "code"), [(C, None), (E, "authorization_expired")])
def test_a_voided_or_lapsed_hold_ends_unsuccessfully_with_nothing_taken(
    outcome: PaymentStatus, code: str | None
) -> None:
    decision = decide(state(A, capture_method="manual"), changed(outcome, failure_code=code))

    assert decision.outcome == "applied"
    assert (decision.after.status, decision.after.failure_code) == (outcome, code)
    assert (decision.after.amount_captured, decision.after.amount_capturable) == (0, 0)


def test_a_failure_reported_after_the_hold_is_stale() -> None:
    decision = decide(state(A), changed(F))

    assert decision.outcome == "ignored: stale: already AUTHORIZED"


def test_a_hold_reported_after_the_capture_is_stale() -> None:
    decision = decide(state(S, amount_captured=1200), changed(A))

    assert decision.outcome == "ignored: stale: already SUCCEEDED"
    assert decision.after.amount_captured == 1200


@pytest.mark.parametrize(("ended", "command"), [(F, CancelPayment), (C, CancelPayment), (E, ExpirePayment)])
def test_a_hold_reported_after_an_unsuccessful_end_is_ignored_and_voided(ended: PaymentStatus, command: type) -> None:
    message = changed(A)
    decision = decide(state(ended), message)
    follow_up = intent_left_open(decision, message)

    assert decision.outcome == f"ignored: already terminal: {ended}"
    assert isinstance(follow_up, CancelPayment | ExpirePayment) and isinstance(follow_up, command)
    assert follow_up.provider_payment_id == "pi_1"


def test_a_capture_wins_over_a_void_the_ledger_recorded_first_as_a_late_success() -> None:
    decision = decide(state(C, capture_method="manual"), changed(S, amount_captured=1500))

    assert decision.outcome == "applied" and decision.late_success
    assert (decision.after.status, decision.after.amount_captured) == (S, 1500)


@pytest.mark.parametrize("current", list(PaymentStatus))
def test_pending_reported_as_an_outcome_changes_nothing(current: PaymentStatus) -> None:
    decision = decide(state(current), changed(P))

    assert decision.outcome == "ignored: not an outcome: PENDING"
    assert decision.after == decision.before


@pytest.mark.parametrize("mismatch", [{"amount": 1998}, {"currency": "EUR"}], ids=["amount", "currency"])
@pytest.mark.parametrize("current", [P, F])
def test_an_outcome_for_another_amount_or_currency_is_not_applied(
    mismatch: dict[str, object], current: PaymentStatus
) -> None:
    decision = decide(state(current), changed(S, **mismatch))

    assert decision.outcome.startswith("ignored: amount mismatch")
    assert decision.amount_mismatch
    assert decision.after == decision.before


def test_the_currency_is_compared_regardless_of_case() -> None:
    assert decide(state(P), changed(S, currency="usd")).outcome == "applied"


def test_an_outcome_without_an_amount_is_not_a_mismatch() -> None:
    assert decide(state(P), changed(E, amount=None, currency=None)).outcome == "applied"


def test_an_outcome_about_another_intent_is_ignored() -> None:
    decision = decide(state(P), changed(S, provider_payment_id="pi_other"))

    assert decision.outcome == "ignored: event is about another intent"
    assert decision.after == decision.before


def test_an_outcome_before_the_intent_is_known_records_the_intent() -> None:
    decision = decide(state(P, provider=None, provider_payment_id=None, checkout_url=None), changed(S))

    assert decision.after.status is S
    assert (decision.after.provider, decision.after.provider_payment_id) == ("sandbox", "pi_1")


def test_intent_created_records_the_intent_and_its_checkout_url() -> None:
    before = state(P, provider=None, provider_payment_id=None, checkout_url=None)
    created = PaymentIntentCreated(provider="sandbox", provider_payment_id="pi_1", checkout_url="http://x/pay/pi_1")

    decision = decide(before, created)

    assert decision.outcome == "applied"
    assert decision.after == state(P, checkout_url="http://x/pay/pi_1")


def test_intent_created_for_a_second_intent_is_ignored() -> None:
    created = PaymentIntentCreated(provider="sandbox", provider_payment_id="pi_2", checkout_url="http://x/pay/pi_2")

    decision = decide(state(P), created)

    assert decision.outcome == "ignored: another intent is already recorded"
    assert decision.after == decision.before


def test_intent_failed_fails_a_pending_payment_with_its_failure_code() -> None:
    failed = PaymentIntentFailed(provider="sandbox", reason="HTTP 400", failure_code="gateway_error")

    decision = decide(state(P, provider_payment_id=None), failed)

    assert decision.outcome == "applied"
    assert (decision.after.status, decision.after.failure_code) == (F, "gateway_error")


@pytest.mark.parametrize(
    "command",
    [
        CancelPayment(),
        ExpirePayment(provider="sandbox", provider_payment_id="pi_1"),
        ReconcilePayment(provider="sandbox", provider_payment_id="pi_1"),
        CapturePayment(amount_to_capture=1200, idempotency_key="k", provider="sandbox", provider_payment_id="pi_1"),
    ],
    ids=["cancel", "expire", "reconcile", "capture"],
)
def test_a_command_is_recorded_without_changing_the_state(command: object) -> None:
    pending = decide(state(P), command)  # type: ignore[arg-type]
    terminal = decide(state(S), command)  # type: ignore[arg-type]

    assert (pending.outcome, pending.after) == ("applied", pending.before)
    assert (terminal.outcome, terminal.after) == ("ignored: already terminal: SUCCEEDED", terminal.before)
