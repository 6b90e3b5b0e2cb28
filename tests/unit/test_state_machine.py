"""The ledger's state machine (DESIGN §2), rule by rule, on the pure `decide` function."""

from __future__ import annotations

import itertools

import pytest

# The one-letter statuses the transition table is written in, so the tests read like it.
from services.ledger.state_machine import TRANSITIONS, C, E, F, P, PaymentState, Rule, S, decide
from shared.events import (
    CancelPayment,
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


def test_only_a_pending_payment_or_a_success_over_a_terminal_one_is_applied() -> None:
    applied = {pair for pair, rule in TRANSITIONS.items() if rule in (Rule.APPLY, Rule.LATE_SUCCESS)}
    assert applied == {(P, S), (P, F), (P, C), (P, E), (F, S), (C, S), (E, S)}


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
    ],
    ids=["cancel", "expire", "reconcile"],
)
def test_a_command_is_recorded_without_changing_the_state(command: object) -> None:
    pending = decide(state(P), command)  # type: ignore[arg-type]
    terminal = decide(state(S), command)  # type: ignore[arg-type]

    assert (pending.outcome, pending.after) == ("applied", pending.before)
    assert (terminal.outcome, terminal.after) == ("ignored: already terminal: SUCCEEDED", terminal.before)
