"""How a consumed message is settled: the pure decision (ack, retry after a delay, dead-letter), apart from
the I/O that carries it out (shared/broker.py)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from shared.events import Envelope


@dataclass(frozen=True)
class Delivery:
    """What a handler may know about the delivery besides the envelope."""

    attempt: int
    max_attempts: int
    redelivered: bool
    # The W3C trace context the message was published with: the same on every redelivery and retry.
    trace_headers: dict[str, str] = field(default_factory=dict)
    # The reply routing key of the process waiting for this message's outcome, if one waits (REPLY_TO_HEADER).
    reply_to: str | None = None

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


Handler = Callable[[Envelope, Delivery], Awaitable[None]]


class RetryLater(Exception):
    """The message cannot be handled yet (its payment is unknown, a dependency is down): try again later.

    `delay_seconds`, when given, replaces the policy's delay for this retry: a handler keeping its own schedule
    (the notifier's WEBHOOK_RETRY_SCHEDULE_SECONDS) records the next try it asked for.
    """

    def __init__(self, reason: str = "", *, delay_seconds: float | None = None) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


class PoisonMessage(Exception):
    """The message can never be handled: dead-letter it at once."""


@dataclass(frozen=True)
class RetryPolicy:
    """The delay-queue schedule, the one backoff formula of the broker layer.

    Exponential backoff with jitter: attempt n waits base * 2**(n-1), capped, ±20 %.
    """

    max_attempts: int
    base_seconds: float
    cap_seconds: float = 300.0

    def delay(self, attempt: int) -> float:
        nominal = min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1))
        return nominal * random.uniform(0.8, 1.2)


class Action(StrEnum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Settlement:
    """What to do with a message once its handler returned or raised."""

    action: Action
    # Metric outcome: handled, retried or dead_lettered.
    outcome: str
    next_attempt: int | None = None
    delay_seconds: float | None = None


HANDLED = Settlement(Action.ACK, "handled")
DEAD_LETTERED = Settlement(Action.DEAD_LETTER, "dead_lettered")


def settle(error: BaseException | None, attempt: int, policy: RetryPolicy) -> Settlement:
    """The settlement of attempt `attempt` (1-based) of a message whose handler raised `error` (or None).

    Success acks. PoisonMessage dead-letters at once. RetryLater and any unexpected error are retried
    through a delay queue while attempts remain, then dead-lettered: a failure is never acked away.
    """
    if error is None:
        return HANDLED
    if isinstance(error, PoisonMessage) or attempt >= policy.max_attempts:
        return DEAD_LETTERED
    asked = error.delay_seconds if isinstance(error, RetryLater) else None
    delay = policy.delay(attempt) if asked is None else asked
    return Settlement(Action.RETRY, "retried", next_attempt=attempt + 1, delay_seconds=delay)
