"""The payment resource (docs/reference/intake-api.md): what the intake API answers and what merchant webhooks carry."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.events import PaymentStatus

LEDGER_COLUMNS = (
    "id",
    "status",
    "amount",
    "currency",
    "reference",
    "description",
    "metadata",
    "checkout_url",
    "return_url",
    "cancel_url",
    "customer_email",
    "failure_code",
    "created_at",
    "updated_at",
    "expires_at",
    "amount_refunded",
)


class Payment(BaseModel):
    """The payment resource."""

    id: str = Field(examples=["pay_3f2a9c0d8e7b4a1f9c2d3e4f5a6b7c8d"])
    status: PaymentStatus
    amount: int
    currency: str
    reference: str
    description: str | None
    metadata: dict[str, str]
    checkout_url: str | None = Field(description="The hosted payment page; null until the gateway has it.")
    return_url: str
    cancel_url: str | None
    customer_email: str | None = None
    failure_code: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    amount_refunded: int = Field(default=0, description="The sum of the payment's succeeded refunds (minor units).")


def payment_of(row: Mapping[str, Any], prefix: str = "") -> Payment:
    """The payment resource from a row that holds LEDGER_COLUMNS, each named `prefix` + the column's name."""
    return Payment(**{name: row[prefix + name] for name in LEDGER_COLUMNS})
