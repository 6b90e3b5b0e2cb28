"""The gateway_worker's retry budget: exponential backoff with jitter, about a minute by default."""

from __future__ import annotations

import random

from services.gateway_worker.settings import GatewayWorkerSettings
from shared.broker import RetryPolicy


def default_policy() -> RetryPolicy:
    settings = GatewayWorkerSettings(_env_file=None)  # type: ignore[call-arg]
    return RetryPolicy(settings.gateway_max_attempts, settings.gateway_retry_base_seconds)


def test_the_default_budget_is_five_attempts() -> None:
    assert default_policy().max_attempts == 5


def test_the_default_waits_between_five_attempts_add_up_to_about_a_minute() -> None:
    random.seed(4)
    policy = default_policy()
    # Four waits separate five attempts: 4 + 8 + 16 + 32 = 60 s, each within ±20 %.
    total = sum(policy.delay(attempt) for attempt in range(1, policy.max_attempts))
    assert 48 <= total <= 72


def test_each_wait_doubles_the_previous_one_within_the_jitter() -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=4)
    for attempt, nominal in [(1, 4), (2, 8), (3, 16), (4, 32)]:
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(0.8 * nominal <= w <= 1.2 * nominal for w in waits)


def test_the_waits_are_jittered_so_failures_together_do_not_retry_together() -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=4)
    assert len({round(policy.delay(2), 6) for _ in range(20)}) > 1
