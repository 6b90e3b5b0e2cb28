"""Faults the sandbox injects on request, so tests can prove the rest of the system copes with them."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

CreateFault = Literal["before_storing", "after_storing"]


class Faults(BaseModel):
    """The faults in force; all off by default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Share of POST /v1/intents answered 500: half before storing the intent, half after.
    create_intent_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # POST /v1/intents stores the intent, then waits this long before answering: room to kill the caller
    # between the provider's effect and its answer.
    create_intent_delay_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    # Share of webhooks delivered twice, with the same event id.
    webhook_duplicate_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Wait before the first attempt of every webhook.
    webhook_delay_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    # A random 0..1 s extra wait per delivery, so deliveries overtake each other.
    webhook_shuffle: StrictBool = False
    # Extra wait before a refund gets its outcome (and its webhook): refunds stay pending that long.
    refund_delay_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)


class FaultsUpdate(BaseModel):
    """Any subset of the faults, merged into the current ones."""

    model_config = ConfigDict(extra="forbid")

    create_intent_error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    create_intent_delay_seconds: float | None = Field(default=None, ge=0.0, le=3600.0)
    webhook_duplicate_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    webhook_delay_seconds: float | None = Field(default=None, ge=0.0, le=3600.0)
    webhook_shuffle: StrictBool | None = None
    refund_delay_seconds: float | None = Field(default=None, ge=0.0, le=3600.0)

    def merged_into(self, current: Faults) -> Faults:
        return current.model_copy(update=self.model_dump(exclude_none=True))


def create_intent_fault(faults: Faults, rng: random.Random) -> CreateFault | None:
    """Whether this POST /v1/intents fails, and on which side of storing the intent."""
    if faults.create_intent_error_rate <= 0 or rng.random() >= faults.create_intent_error_rate:
        return None
    return "before_storing" if rng.random() < 0.5 else "after_storing"


def delivery_copies(faults: Faults, rng: random.Random) -> int:
    """How many times one webhook event is delivered: twice for the duplicated share."""
    if faults.webhook_duplicate_rate > 0 and rng.random() < faults.webhook_duplicate_rate:
        return 2
    return 1


def delay_before_first_attempt(faults: Faults, rng: random.Random) -> float:
    extra = rng.uniform(0.0, 1.0) if faults.webhook_shuffle else 0.0
    return faults.webhook_delay_seconds + extra
