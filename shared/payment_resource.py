"""The payment resource (docs/reference/intake-api.md): what the intake API answers and what merchant webhooks carry."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.events import CaptureMethod, PaymentStatus

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
    "capture_method",
    "amount_captured",
    "amount_refunded",
)


class Payment(BaseModel):
    """The payment resource."""

    # Every field is in every answer: the schema says so, defaults or not.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

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
    expires_at: datetime = Field(
        description="When the payment expires if nothing happens: while PENDING, the end of its TTL; while "
        "AUTHORIZED, when the hold lapses (AUTHORIZATION_TTL_SECONDS after the customer paid)."
    )
    capture_method: CaptureMethod = Field(
        default="automatic",
        description='"automatic": the money is taken when the customer pays; "manual": it is held (AUTHORIZED) '
        "until captured.",
    )
    amount_capturable: int = Field(
        default=0, description="What a capture may take: the amount while AUTHORIZED, else 0 (minor units)."
    )
    amount_refunded: int = Field(default=0, description="The sum of the payment's succeeded refunds (minor units).")
    amount_captured: int = Field(
        default=0,
        description="What was taken (minor units): 0 until SUCCEEDED, then the whole amount, or for a manual "
        "payment what the capture took. Refunds are of this amount.",
    )

    @model_validator(mode="before")
    @classmethod
    def _capturable(cls, data: Any) -> Any:
        # Derived, never stored: the held amount while AUTHORIZED.
        if isinstance(data, dict) and "amount_capturable" not in data:
            held = data.get("status") in (PaymentStatus.AUTHORIZED, PaymentStatus.AUTHORIZED.value)
            data = {**data, "amount_capturable": data.get("amount", 0) if held else 0}
        return data


def payment_of(row: Mapping[str, Any], prefix: str = "") -> Payment:
    """The payment resource from a row that holds LEDGER_COLUMNS, each named `prefix` + the column's name."""
    return Payment(**{name: row[prefix + name] for name in LEDGER_COLUMNS})
