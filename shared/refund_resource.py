"""The refund resource (docs/reference/refunds.md): what the intake API answers and what merchant webhooks carry."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.events import RefundStatus

# The columns of ledger.refunds_v1 (and of the intake's reads, which answer the same shape) the resource is made of.
REFUND_COLUMNS = (
    "id",
    "payment_id",
    "amount",
    "currency",
    "status",
    "reason",
    "failure_code",
    "metadata",
    "created_at",
    "updated_at",
    "payment_amount_refunded",
)


class Refund(BaseModel):
    """The refund resource."""

    id: str = Field(examples=["re_3f2a9c0d8e7b4a1f9c2d3e4f5a6b7c8d"])
    payment_id: str
    amount: int = Field(description="Minor units given back by this refund.")
    currency: str
    status: RefundStatus = Field(description="pending, then succeeded or failed; never changes after that.")
    reason: str | None = Field(description="requested_by_customer, duplicate or fraudulent; null if none was given.")
    failure_code: str | None = Field(description="Why the refund failed (expired_or_canceled_card, ...); else null.")
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime
    payment_amount_refunded: int = Field(
        description="The payment's amount_refunded as it stands: the sum of its succeeded refunds."
    )


def refund_of(row: Mapping[str, Any]) -> Refund:
    """The refund resource from a row holding REFUND_COLUMNS."""
    return Refund(**{name: row[name] for name in REFUND_COLUMNS})
