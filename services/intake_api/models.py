"""The intake API's request and response bodies: they validate requests and generate /openapi.json."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, Literal

import pycountry
from pydantic import AfterValidator, AnyUrl, BaseModel, ConfigDict, Field, TypeAdapter, UrlConstraints

from shared.endpoint_urls import MAX_URL_LENGTH, UnsafeUrlError, parse_endpoint_url
from shared.events import CaptureMethod, PaymentStatus, RefundReason, RefundStatus
from shared.merchant_events import ALL_EVENTS, MERCHANT_EVENT_TYPES
from shared.payment_resource import Payment
from shared.refund_resource import Refund

__all__ = [
    "CaptureCreate",
    "Payment",
    "PaymentCreate",
    "PaymentEvent",
    "PaymentEventList",
    "ProblemDetails",
    "Refund",
    "field_errors",
]

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


AbsoluteHttpUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["http", "https"], host_required=True)]
_ABSOLUTE_HTTP_URL: TypeAdapter[AnyUrl] = TypeAdapter(AbsoluteHttpUrl)


# Whitespace (what str.isspace() calls so: `\s` of a str pattern is the same set), C0 controls and DEL. One regex
# scan rather than a Python test per character: a sixth of the time, twice per payment request.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def _http_url(value: str) -> str:
    """An absolute http(s) URL, kept exactly as the merchant sent it (so it must need no clean-up)."""
    if _SPACE_OR_CONTROL.search(value):
        raise ValueError("must not contain spaces or control characters")
    _ABSOLUTE_HTTP_URL.validate_python(value)
    return value


HttpUrl = Annotated[str, Field(max_length=2048, json_schema_extra={"format": "uri"}), AfterValidator(_http_url)]


def _webhook_url(value: str) -> str:
    """A URL Paystream will POST to: read by the sender's own parser, and refused if a browser reads it otherwise."""
    try:
        parse_endpoint_url(value)
    except UnsafeUrlError as exc:
        raise ValueError(str(exc)) from None
    return value


# For clients and fuzzers reading /openapi.json: http(s), then printable ASCII without a backslash.
_WEBHOOK_URL_FORM = r"^[hH][tT][tT][pP][sS]?://[!-\[\]-~]+$"
# The host-level checks (public address) need DNS and run in the handler; this is the URL's form alone.
WebhookUrl = Annotated[
    str,
    Field(max_length=MAX_URL_LENGTH, json_schema_extra={"format": "uri", "pattern": _WEBHOOK_URL_FORM}),
    AfterValidator(_webhook_url),
]


# ISO 4217 codes that no customer pays in: precious metals (XAU, XAG, XPD, XPT), bond-market units (XBA-XBD),
# SDRs and other accounting units (XDR, XSU, XUA), the testing code (XTS), "no currency" (XXX) and the funds
# codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW).
NON_TENDER_CODES = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
    | {"BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW"}
)
# The ISO 4217 alphabetic codes of money a customer can pay with; listed in /openapi.json too, so a client or
# fuzzer sees the same set.
ISO_4217_CODES = tuple(sorted(c.alpha_3 for c in pycountry.currencies if c.alpha_3 not in NON_TENDER_CODES))
_ISO_4217 = frozenset(ISO_4217_CODES)


def _currency(code: str) -> str:
    if code in NON_TENDER_CODES:
        raise ValueError(f"{code!r} is an ISO 4217 code for no currency a customer can pay with")
    if code not in _ISO_4217:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


# What `json.dumps(document, sort_keys=True, separators=(",", ":"))` writes, from one encoder built once (json.dumps
# builds one per call when given options). Fingerprints already stored depend on every byte of it.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


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
    capture_method: CaptureMethod = Field(
        default="automatic",
        description='"automatic" (default): the money is taken when the customer pays. "manual": it is only held '
        "(the payment becomes AUTHORIZED) until POST /v1/payments/{id}/capture takes it or cancel voids it.",
    )

    @cached_property
    def document(self) -> dict[str, Any]:
        """The validated request as JSON data: dumped once, for the fingerprint and the stored request both.
        Read it, never change it."""
        document = self.model_dump(mode="json")
        if document["capture_method"] == "automatic":
            # The default is left out, so a request from before capture_method existed keeps its fingerprint.
            del document["capture_method"]
        return document

    def fingerprint(self) -> str:
        """A canonical digest of the validated request: key order and whitespace make no difference."""
        canonical = _CANONICAL_JSON.encode(self.document)
        return hashlib.sha256(canonical.encode()).hexdigest()


class CaptureCreate(BaseModel):
    """POST /v1/payments/{id}/capture body (optional: without it, the whole hold is taken)."""

    model_config = ConfigDict(extra="forbid")

    amount_to_capture: int | None = Field(
        default=None,
        gt=0,
        le=MAX_AMOUNT,
        strict=True,
        description="Minor units to take, at most the amount held (`amount_capturable`); the rest is released. "
        "Omitted: all of it.",
    )

    def fingerprint(self, payment_id: str) -> str:
        """The capture's identity under its Idempotency-Key: which payment, how much."""
        canonical = json.dumps({"payment_id": payment_id, "amount_to_capture": self.amount_to_capture})
        return hashlib.sha256(canonical.encode()).hexdigest()


class PaymentEvent(BaseModel):
    event_id: str
    event_type: str
    from_status: PaymentStatus | None
    to_status: PaymentStatus | None
    source: Literal["intake", "gateway", "webhook", "reconciliation", "expiry", "merchant"]
    outcome: str
    occurred_at: datetime
    recorded_at: datetime
    refund_id: str | None = Field(default=None, description="The refund this event is about, for a refund's event.")
    refund_status: RefundStatus | None = Field(
        default=None, description="The refund's status after this event, for a refund's event."
    )


class PaymentEventList(BaseModel):
    data: list[PaymentEvent]


class RefundCreate(BaseModel):
    """POST /v1/payments/{id}/refunds body: every field optional."""

    model_config = ConfigDict(extra="forbid")

    amount: int | None = Field(
        default=None,
        gt=0,
        le=MAX_AMOUNT,
        strict=True,
        description="Minor units to give back; omitted: all that is still refundable.",
    )
    reason: RefundReason | None = Field(default=None, description="Why the money goes back.")
    metadata: dict[MetadataKey, Annotated[Text, Field(max_length=500)]] = Field(
        default_factory=dict,
        max_length=MAX_METADATA_KEYS,
        description="At most 20 string keys (1-40 chars) with string values of at most 500 chars.",
        json_schema_extra=_metadata_schema,
    )

    def fingerprint(self, payment_id: str) -> str:
        """A canonical digest of the request and the payment it is for: the same key on another body differs."""
        document = {"payment_id": payment_id, **self.model_dump(mode="json")}
        canonical = _CANONICAL_JSON.encode(document)
        return hashlib.sha256(canonical.encode()).hexdigest()


class RefundList(BaseModel):
    data: list[Refund]
    has_more: bool


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


# What a shop developer reads for each kind of pydantic error: sentences, never a pattern or a Python type.
_FIELD_FORMATS = {
    "currency": "must be a three-letter ISO 4217 currency code in upper case, such as USD",
    "customer_email": "must be an e-mail address such as customer@example.com",
}


def _message(error: Any, field: str) -> str:
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    given = error.get("input")
    if kind == "missing":
        return "Field required"
    if kind == "extra_forbidden":
        return "is not a field of this request"
    if kind == "model_type":
        return "the body must be a JSON object"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be a whole number of minor units (1999 for 19.99), not a string or a decimal"
    if kind == "string_type":
        return "must be a string"
    if kind in ("dict_type", "mapping_type"):
        return "must be an object of string keys and string values"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le'):,}" if isinstance(ctx.get("le"), int) else "is too large"
    if kind in ("string_too_long", "too_long") and (kind == "string_too_long" or isinstance(given, str)):
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"may hold at most {ctx.get('max_length')} entries"
    if kind == "string_too_short":
        return (
            "must not be empty"
            if ctx.get("min_length") == 1
            else f"must be at least {ctx.get('min_length')} characters"
        )
    if kind == "string_pattern_mismatch":
        return _FIELD_FORMATS.get(field, "is not in the expected format")
    if kind.startswith("url_"):
        return "must be an absolute http or https URL, such as https://shop.example/orders/42"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "value_error":  # our own validators: their messages are written for the developer already
        return str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    return "is invalid"


def field_errors(errors: list[Any]) -> list[dict[str, str]]:
    """pydantic's errors as the contract's `errors: [{field, message}]`, in words a shop developer reads."""
    result = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        if location[-1:] == ["[key]"]:  # a bad metadata key: the field is the map, the message names the key
            message = f"key {json.dumps(location[-2])}: {_message(error, 'metadata key')}"
            location = location[:-2]
        else:
            message = _message(error, location[0] if location else "body")
        result.append({"field": ".".join(location) or "body", "message": message})
    return result


# --- merchant webhooks and lists (docs/reference/merchant-webhooks.md) -------------------------------------------

_SUBSCRIBABLE = (*MERCHANT_EVENT_TYPES, ALL_EVENTS)


def _event_type(value: str) -> str:
    if value not in _SUBSCRIBABLE:
        raise ValueError(f"must be one of {', '.join(_SUBSCRIBABLE)}")
    return value


WebhookEventType = Annotated[str, AfterValidator(_event_type), Field(json_schema_extra={"enum": list(_SUBSCRIBABLE)})]
MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 10


class WebhookEndpointCreate(BaseModel):
    """POST /v1/webhook_endpoints body."""

    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl = Field(
        description="Where events are POSTed: an absolute http(s) URL on a public address, in plain form"
        " (printable ASCII; no backslash, user name or percent-encoded host)."
    )
    events: list[WebhookEventType] | None = Field(
        default=None,
        min_length=1,
        max_length=len(_SUBSCRIBABLE),
        description='The event types to send; omitted or `["*"]`: all of them.',
    )


class WebhookEndpoint(BaseModel):
    """A merchant's webhook endpoint (its secret is shown only when created or rotated)."""

    id: str = Field(examples=["we_3f2a9c0d8e7b4a1f9c2d3e4f"])
    url: str
    events: list[str]
    status: Literal["enabled", "disabled"]
    created_at: datetime
    disabled_at: datetime | None = None


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: str = Field(description="The signing secret (`whsec_...`): shown only in this answer. Keep it safe.")


class WebhookEndpointList(BaseModel):
    data: list[WebhookEndpoint]


class DeliveryAttempt(BaseModel):
    endpoint_id: str
    attempt: int
    status_code: int | None = Field(description="The endpoint's HTTP status; null when it gave no answer.")
    error: str | None = Field(description="Why the attempt failed without an answer (refused, timeout, ...).")
    duration_ms: int
    attempted_at: datetime
    next_attempt_at: datetime | None = Field(description="When the next try is due; null if none is planned.")


class Event(BaseModel):
    """A merchant event: what was (or will be) delivered to the merchant's webhook endpoints."""

    id: str = Field(examples=["evt_0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b"])
    type: str
    created: int = Field(description="Unix seconds.")
    payment_id: str | None
    data: dict[str, Any] = Field(
        description='`{"object": ...}`: the payment, refund (or endpoint) when it was recorded.'
    )


class EventWithDeliveries(Event):
    deliveries: list[DeliveryAttempt] = Field(description="Every delivery attempt, oldest first.")


class EventList(BaseModel):
    data: list[Event]
    has_more: bool


class PaymentList(BaseModel):
    data: list[Payment]
    has_more: bool


class PaymentTotal(BaseModel):
    """The merchant's payments of one status and one currency: how many, and their amounts added up."""

    status: PaymentStatus
    currency: str
    count: int
    amount: int = Field(description="The sum of their amounts, in the currency's minor units.")


class PaymentSummary(BaseModel):
    """GET /v1/payments/summary: one total per status and currency that has payments (amounts of different
    currencies are never added together), by status then currency."""

    data: list[PaymentTotal]
