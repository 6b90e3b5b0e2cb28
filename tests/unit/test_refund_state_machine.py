"""The refund state machine (services/ledger/refund_state_machine.py): its table, and as properties (hypothesis)
that any order and duplication of a refund's events ends in the same state, and a final status never changes."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger.refund_state_machine import (
    REFUND_TRANSITIONS,
    RefundRule,
    RefundState,
    decide_refund,
)
from shared.events import Envelope, RefundStatus, RefundStatusChanged
from tests.support.refund_histories import (
    AMOUNT,
    CURRENCY,
    RefundTruth,
    build_refund_history,
    provider_refund_id,
    refund_outcome,
    refund_truths,
    shuffled_with_duplicates,
)

PENDING = RefundState(status=RefundStatus.PENDING, amount=AMOUNT, currency=CURRENCY)


def fold(events: list[Envelope]) -> RefundState:
    """The ledger's rule: each event id applied once, in delivery order."""
    state, seen = PENDING, set()
    for envelope in events:
        if envelope.id in seen:
            continue
        seen.add(envelope.id)
        state = decide_refund(state, envelope.message()).after
    return state


def expected(truth: RefundTruth) -> RefundState:
    failed = truth.status is RefundStatus.FAILED
    return replace(
        PENDING,
        status=truth.status,
        provider_refund_id=provider_refund_id("re_1"),
        failure_code=(truth.failure_code or "refund_failed") if failed else None,
    )


def test_every_pair_of_statuses_has_a_rule() -> None:
    assert set(REFUND_TRANSITIONS) == {(a, b) for a in RefundStatus for b in RefundStatus}
    applied = {pair for pair, rule in REFUND_TRANSITIONS.items() if rule is RefundRule.APPLY}
    assert applied == {(RefundStatus.PENDING, RefundStatus.SUCCEEDED), (RefundStatus.PENDING, RefundStatus.FAILED)}


@settings(max_examples=300, deadline=None)
@given(truth=refund_truths(), data=st.data())
def test_any_order_and_duplication_of_a_refunds_events_ends_in_the_same_state(
    truth: RefundTruth, data: st.DataObject
) -> None:
    events = build_refund_history(truth, "pay_1", "re_1")
    order = data.draw(shuffled_with_duplicates(events))

    assert fold(order) == expected(truth)


@settings(max_examples=200, deadline=None)
@given(truth=refund_truths(), data=st.data())
def test_a_final_status_never_changes_whatever_contradicts_it_later(truth: RefundTruth, data: st.DataObject) -> None:
    events = build_refund_history(truth, "pay_1", "re_1")
    other = RefundStatus.FAILED if truth.status is RefundStatus.SUCCEEDED else RefundStatus.SUCCEEDED
    contradiction = refund_outcome("pay_1", "re_1", "webhook", other, None)
    first_outcome = data.draw(st.sampled_from([e for e in events if isinstance(e.message(), RefundStatusChanged)]))
    later = data.draw(st.permutations([e for e in events if e is not first_outcome] + [contradiction]))

    assert fold([first_outcome, *later]).status is truth.status


def test_an_outcome_for_another_amount_is_ignored_as_a_mismatch() -> None:
    changed = RefundStatusChanged(
        refund_id="re_1", status=RefundStatus.SUCCEEDED, provider="sandbox", amount=AMOUNT + 1
    )
    decision = decide_refund(PENDING, changed)
    assert decision.after == PENDING
    assert decision.amount_mismatch
    assert decision.outcome.startswith("ignored: amount mismatch")


def test_a_failed_refund_without_a_code_gets_the_default_one() -> None:
    changed = RefundStatusChanged(refund_id="re_1", status=RefundStatus.FAILED, provider="sandbox")
    assert decide_refund(PENDING, changed).after.failure_code == "refund_failed"


def test_pending_is_never_an_outcome() -> None:
    changed = RefundStatusChanged(refund_id="re_1", status=RefundStatus.PENDING, provider="sandbox")
    decision = decide_refund(PENDING, changed)
    assert not decision.applied
    assert decision.outcome == "ignored: not an outcome: pending"
