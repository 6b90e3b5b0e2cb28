"""The intake API's request and response bodies: they validate requests and generate /openapi.json."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Any, Literal

import pycountry
from pydantic import AfterValidator, AnyUrl, BaseModel, ConfigDict, Field, TypeAdapter, UrlConstraints

from shared.events import PaymentStatus

MAX_AMOUNT = 99_999_999
MAX_METADATA_KEYS = 20

# PostgreSQL stores neither NUL characters nor lone surrogates: such text is refused here, not at the insert.
_NO_NUL = r"^[^\x00]*$"


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


# local@domain.tld with no spaces or control characters. Explicit ranges rather than `\s`, which means other
# things in ECMA regexes (clients, fuzzers reading /openapi.json) than here (U+0085, for one).
_EMAIL = r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+\.[^@\x00-\x20\x7f]+$"

Text = Annotated[str, AfterValidator(_storable), Field(json_schema_extra={"pattern": _NO_NUL})]
# A metadata key: the NUL rule goes into `propertyNames` (a pattern on the key type would turn into
# `patternProperties` and leave other keys unconstrained).
MetadataKey = Annotated[str, AfterValidator(_storable), Field(min_length=1, max_length=40)]


def _metadata_schema(schema: dict[str, Any]) -> None:
    schema.setdefault("propertyNames", {})["pattern"] = _NO_NUL


_ABSOLUTE_HTTP_URL = TypeAdapter(
    Annotated[AnyUrl, UrlConstraints(allowed_schemes=["http", "https"], host_required=True)]
)


def _http_url(value: str) -> str:
    """An absolute http(s) URL, kept exactly as the merchant sent it (so it must need no clean-up)."""
    if any(char.isspace() or ord(char) < 0x20 or char == "\x7f" for char in value):
        raise ValueError("must not contain spaces or control characters")
    _ABSOLUTE_HTTP_URL.validate_python(value)
    return value


HttpUrl = Annotated[str, Field(max_length=2048, json_schema_extra={"format": "uri"}), AfterValidator(_http_url)]


# The active ISO 4217 alphabetic codes; listed in /openapi.json too, so a client or fuzzer sees the same set.
ISO_4217_CODES = tuple(sorted(currency.alpha_3 for currency in pycountry.currencies))
_ISO_4217 = frozenset(ISO_4217_CODES)


def _currency(code: str) -> str:
    if code not in _ISO_4217:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


class PaymentCreate(BaseModel):
    """POST /v1/payments body."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    amount: int = Field(gt=0, le=MAX_AMOUNT, strict=True, description="Minor units (cents), 1..99,999,999.")
    currency: Annotated[
        str,
        Field(
            pattern=r"^[A-Z]{3}$",
            description="ISO 4217 alphabetic code, upper case.",
            json_schema_extra={"enum": list(ISO_4217_CODES)},
        ),
        AfterValidator(_currency),
    ]
    reference: Text = Field(min_length=1, max_length=128, description="The merchant's order reference.")
    return_url: HttpUrl = Field(description="Where the gateway sends the customer back after paying.")
    cancel_url: HttpUrl | None = Field(default=None, description="Where the customer goes on cancel.")
    description: Text | None = Field(default=None, max_length=1000)
    customer_email: str | None = Field(
        default=None, max_length=254, pattern=_EMAIL, description="The customer's e-mail address."
    )
    metadata: dict[MetadataKey, Annotated[Text, Field(max_length=500)]] = Field(
        default_factory=dict,
        max_length=MAX_METADATA_KEYS,
        description="At most 20 string keys (1-40 chars) with string values of at most 500 chars.",
        json_schema_extra=_metadata_schema,
    )

    def fingerprint(self) -> str:
        """A canonical digest of the validated request: key order and whitespace make no difference."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


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


class PaymentEvent(BaseModel):
    event_id: str
    event_type: str
    from_status: PaymentStatus | None
    to_status: PaymentStatus | None
    source: Literal["intake", "gateway", "webhook", "reconciliation", "expiry", "merchant"]
    outcome: str
    occurred_at: datetime
    recorded_at: datetime


class PaymentEventList(BaseModel):
    data: list[PaymentEvent]


class FieldError(BaseModel):
    field: str
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


def field_errors(errors: list[Any]) -> list[dict[str, str]]:
    """pydantic's errors as the contract's `errors: [{field, message}]`."""
    result = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if location[-1:] == ["[key]"]:  # a bad metadata key: the field is the map, the message names the key
            message = f"key {json.dumps(location[-2])}: {message}"
            location = location[:-2]
        result.append({"field": ".".join(location) or "body", "message": message})
    return result
