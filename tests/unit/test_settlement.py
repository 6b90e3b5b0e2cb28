"""The settlement rule of a consumed message (shared/settlement.py), without a broker."""

from __future__ import annotations

import pytest

from shared.settlement import Action, PoisonMessage, RetryLater, RetryPolicy, settle

POLICY = RetryPolicy(max_attempts=3, base_seconds=2)


def test_a_handled_message_is_acked() -> None:
    settlement = settle(None, 1, POLICY)
    assert (settlement.action, settlement.outcome) == (Action.ACK, "handled")


@pytest.mark.parametrize("error", [RetryLater("payment unknown yet"), RuntimeError("bug")])
def test_a_failure_with_attempts_left_is_retried_after_the_policys_delay(error: Exception) -> None:
    settlement = settle(error, 2, POLICY)
    assert (settlement.action, settlement.outcome, settlement.next_attempt) == (Action.RETRY, "retried", 3)
    # Attempt 2 waits base * 2 = 4 s, within the ±20 % jitter.
    assert settlement.delay_seconds is not None and 3.2 <= settlement.delay_seconds <= 4.8


@pytest.mark.parametrize("error", [RetryLater("still unknown"), RuntimeError("bug")])
def test_a_failure_on_the_last_attempt_is_dead_lettered_never_acked(error: Exception) -> None:
    settlement = settle(error, 3, POLICY)
    assert (settlement.action, settlement.outcome) == (Action.DEAD_LETTER, "dead_lettered")
    assert settlement.next_attempt is None


def test_a_poison_message_is_dead_lettered_on_its_first_attempt() -> None:
    settlement = settle(PoisonMessage("no handler"), 1, POLICY)
    assert settlement.action is Action.DEAD_LETTER


def test_a_policy_of_one_attempt_never_retries() -> None:
    assert settle(RetryLater("x"), 1, RetryPolicy(max_attempts=1, base_seconds=1)).action is Action.DEAD_LETTER


def test_a_retry_may_ask_for_its_own_delay() -> None:
    settlement = settle(RetryLater("endpoint answered 500", delay_seconds=300.0), 2, RetryPolicy(8, 1.0))
    assert settlement.action is Action.RETRY and settlement.delay_seconds == 300.0 and settlement.next_attempt == 3
