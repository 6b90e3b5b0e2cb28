"""The sandbox's refunds: pending when asked for, then succeeded or failed (asynchronously, announced by webhook).

A refund gives back part or all of a succeeded intent, never more in total than the intent's amount (failed
refunds do not count). A refund of an intent paid with a refund-failing test card fails with that card's code.
In memory, on one event loop, like the intents: each operation is atomic without locks; written through to the
sandbox's storage (SANDBOX_DATA_DIR) when it has one, and read back at start.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from services.sandbox_gateway.intents import Intent, IntentStatus
from services.sandbox_gateway.storage import SandboxStorage


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RefundRefusedError(Exception):
    """The refund cannot be made: `slug` names why (it becomes the problem type, and the caller's failure code)."""

    def __init__(self, status: int, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail


class RefundKeyReusedError(Exception):
    """An Idempotency-Key already made a refund of another intent or amount."""


class RefundNotFoundError(Exception):
    """No refund has this id."""


def new_refund_id() -> str:
    return "rf_" + secrets.token_hex(12)


@dataclass(frozen=True)
class RefundDraft:
    intent_id: str
    amount: int | None
    reason: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)  # every refund is kept in memory, as every intent is
class SandboxRefund:
    id: str
    intent_id: str
    amount: int
    currency: str
    reason: str | None
    metadata: dict[str, str]
    created: int
    status: RefundStatus = RefundStatus.PENDING
    failure_code: str | None = None

    @property
    def payment_id(self) -> str | None:
        return self.metadata.get("payment_id")

    @classmethod
    def from_record(cls, body: dict[str, Any]) -> SandboxRefund:
        return cls(**{**body, "status": RefundStatus(body["status"])})

    def to_json(self) -> dict[str, Any]:
        """The refund as the API answers it and as webhooks carry it."""
        return {
            "id": self.id,
            "object": "refund",
            "intent_id": self.intent_id,
            "amount": self.amount,
            "currency": self.currency,
            "status": str(self.status),
            "reason": self.reason,
            "failure_code": self.failure_code,
            "metadata": dict(self.metadata),
            "created": self.created,
        }


class RefundStore:
    """Every refund, by id and by the Idempotency-Key that made it."""

    def __init__(self, storage: SandboxStorage | None = None) -> None:
        self._storage = storage
        self._by_id: dict[str, SandboxRefund] = {}
        self._by_key: dict[str, str] = {}
        self._key_by_id: dict[str, str] = {}
        self._by_intent: dict[str, list[str]] = {}
        if storage is not None:
            for record in storage.all("refund"):
                self._index(SandboxRefund.from_record(record.body), record.key)

    def _index(self, refund: SandboxRefund, idempotency_key: str | None) -> None:
        self._by_id[refund.id] = refund
        self._by_intent.setdefault(refund.intent_id, []).append(refund.id)
        if idempotency_key is not None:
            self._by_key[idempotency_key] = refund.id
            self._key_by_id[refund.id] = idempotency_key

    def _keep(self, refund: SandboxRefund) -> None:
        if self._storage is not None:
            key = self._key_by_id.get(refund.id)
            self._storage.put("refund", refund.id, asdict(refund), key=key, parent=refund.intent_id)

    def for_intent(self, intent_id: str) -> list[SandboxRefund]:
        """Every refund of one intent, oldest first."""
        return [self._by_id[i] for i in self._by_intent.get(intent_id, [])]

    def pending(self) -> list[SandboxRefund]:
        """The refunds still waiting for their outcome (after a restart, they are settled anew)."""
        return [r for r in self._by_id.values() if r.status is RefundStatus.PENDING]

    def get(self, refund_id: str) -> SandboxRefund:
        try:
            return self._by_id[refund_id]
        except KeyError:
            raise RefundNotFoundError(refund_id) from None

    def refundable(self, intent: Intent) -> int:
        """What is left to refund of a succeeded intent: what it took (its amount, or what a capture took of a
        held one) less its refunds that have not failed."""
        taken = sum(
            r.amount for r in (self._by_id[i] for i in self._by_intent.get(intent.id, [])) if r.status != "failed"
        )
        return (intent.amount if intent.captured is None else intent.captured) - taken

    def create(
        self, intent: Intent, draft: RefundDraft, idempotency_key: str | None, now: int
    ) -> tuple[SandboxRefund, bool]:
        """The refund for this key (made now if the key is new); True when it was made now."""
        if idempotency_key is not None and idempotency_key in self._by_key:
            existing = self._by_id[self._by_key[idempotency_key]]
            if existing.intent_id != intent.id or (draft.amount is not None and draft.amount != existing.amount):
                raise RefundKeyReusedError(idempotency_key)
            return existing, False
        if intent.status is not IntentStatus.SUCCEEDED:
            raise RefundRefusedError(
                409, "intent-not-paid", f"Only a succeeded intent can be refunded: {intent.status}."
            )
        left = self.refundable(intent)
        amount = draft.amount if draft.amount is not None else left
        if left <= 0 or amount > left:
            raise RefundRefusedError(422, "amount-too-large", f"At most {max(left, 0)} of this intent is refundable.")
        refund = SandboxRefund(
            id=new_refund_id(),
            intent_id=intent.id,
            amount=amount,
            currency=intent.currency,
            reason=draft.reason,
            metadata=dict(draft.metadata),
            created=now,
        )
        self._index(refund, idempotency_key)
        self._keep(refund)
        return refund, True

    def settle(self, refund_id: str, failure_code: str | None) -> SandboxRefund | None:
        """Give a pending refund its outcome; None if it already had one."""
        refund = self.get(refund_id)
        if refund.status is not RefundStatus.PENDING:
            return None
        refund.status = RefundStatus.FAILED if failure_code else RefundStatus.SUCCEEDED
        refund.failure_code = failure_code
        self._keep(refund)
        return refund
