"""/openapi.json: the OpenAPI 3.1 document, generated from the pydantic models that validate requests."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from services.intake_api.models import (
    MAX_LIST_LIMIT,
    CaptureCreate,
    EventList,
    EventWithDeliveries,
    Payment,
    PaymentCreate,
    PaymentEventList,
    PaymentList,
    PaymentSummary,
    ProblemDetails,
    Refund,
    RefundCreate,
    RefundList,
    WebhookEndpointCreate,
    WebhookEndpointList,
    WebhookEndpointWithSecret,
)
from shared.events import PaymentStatus, RefundStatus
from shared.merchant_events import MERCHANT_EVENT_TYPES

_REF = "#/components/schemas/{model}"
_PROBLEM_TYPES = "https://paystream.dev/problems/"


def _headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    return {"headers": headers} if headers else {}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="ProblemDetails")}}},
        **_headers(headers),
    }


def _json(model: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}},
        **_headers(headers),
    }


def _header(description: str, schema: dict[str, Any] | None = None, *, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


_UNAUTHORIZED = _problem(
    "Missing or unknown API key.",
    {"WWW-Authenticate": _header("The scheme to use: Bearer.", required=True)},
)
_DATABASE_DOWN = _problem(
    "The payment store is unreachable; nothing was stored. Retry (with the same Idempotency-Key).",
    {
        "Retry-After": _header(
            "Seconds to wait before retrying.", {"type": "string", "pattern": "^[0-9]+$"}, required=True
        )
    },
)
_NOT_FOUND = _problem("No payment with this id for this merchant.")
_PAYMENT_ID = {
    "name": "payment_id",
    "in": "path",
    "required": True,
    "description": "The payment's id (`pay_...`).",
    "schema": {"type": "string", "maxLength": 64},
}
_LOCATION = {"Location": _header("/v1/payments/{id}", required=True)}

_CREATE_PARAMETERS = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": True,
        "description": "Makes retries safe: the same key (per merchant) never creates a second payment. "
        "Kept at least 24 hours.",
        # Printable ASCII; no space at either end, as HTTP strips it in transit.
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$",
        },
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "`wait=N` (0-10 seconds, default 3): hold the 201 until `checkout_url` is ready, "
        "or at most N seconds.",
        "schema": {"type": "string", "pattern": "^wait=(10|[0-9])$"},
    },
]

# What a client (or a stateful fuzzer) can do next with the payment a POST returns.
_PAYMENT_LINKS = {
    name: {"operationId": operation, "parameters": {"payment_id": "$response.body#/id"}}
    for name, operation in (
        ("GetPayment", "getPayment"),
        ("ListPaymentEvents", "listPaymentEvents"),
        ("CancelPayment", "cancelPayment"),
        ("CapturePayment", "capturePayment"),
        ("CreateRefund", "createRefund"),
    )
}

_CREATE_RESPONSES = {
    "201": _json(
        "Payment",
        "Accepted and durably stored. `checkout_url` is null if not ready within the wait.",
        {
            **_LOCATION,
            "Preference-Applied": _header("The wait applied, e.g. `wait=3`."),
        },
    )
    | {"links": _PAYMENT_LINKS},
    "200": _json(
        "Payment",
        "A retry of the request first made with this key: the same payment, current state.",
        {
            **_LOCATION,
            "Idempotent-Replayed": _header(
                "Always `true` on a replay.", {"type": "string", "enum": ["true"]}, required=True
            ),
        },
    )
    | {"links": _PAYMENT_LINKS},
    "400": _problem("Missing or invalid Idempotency-Key, or malformed JSON."),
    "401": _UNAUTHORIZED,
    "409": _problem("A request with this key is still in flight; retry."),
    "413": _problem("The body is over 64 KiB."),
    "415": _problem("The body is not JSON."),
    "422": _problem(
        f"Invalid fields (`errors: [{{field, message}}]`, type {_PROBLEM_TYPES}validation-error), "
        f"or the key was used with another body (type {_PROBLEM_TYPES}idempotency-key-reuse)."
    ),
    "503": _DATABASE_DOWN,
}


_ENDPOINT_NOT_FOUND = _problem("No webhook endpoint with this id for this merchant.")
_EVENT_NOT_FOUND = _problem("No event with this id for this merchant.")
_INVALID_QUERY = _problem(
    f"Invalid query parameters (`errors: [{{field, message}}]`, type {_PROBLEM_TYPES}validation-error)."
)
_CURSOR_NOT_FOUND = _problem("`starting_after` or `ending_before` names no item of this merchant's list.")


def _path_id(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "maxLength": 64},
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_CURSOR = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[\\x21-\\x7e]+$"}


def _text_filter(max_length: int) -> dict[str, Any]:
    """Text a list matches exactly: any characters but NUL, which PostgreSQL text cannot hold (answered 422)."""
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": "^[^\\x00]+$"}


_PAGE_PARAMETERS = [
    _query(
        "limit",
        f"Items per page, 1-{MAX_LIST_LIMIT} (default 10).",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
    ),
    _query("starting_after", "The id of the last item of the previous page: the next (older) page.", _CURSOR),
    _query("ending_before", "The id of the first item of the next page: the previous (newer) page.", _CURSOR),
]
_CREATED_BOUND = {"type": "string", "format": "date-time"}
_ENDPOINT_ID = _path_id("endpoint_id", "The webhook endpoint's id (`we_...`).")
_EVENT_ID = _path_id("event_id", "The event's id (`evt_...`).")


def _webhook_paths() -> dict[str, Any]:
    """Merchant webhooks, events and the payment list (docs/reference/merchant-webhooks.md)."""
    with_secret = _json("WebhookEndpointWithSecret", "The endpoint, with its signing secret (shown only here).")
    return {
        "/v1/webhook_endpoints": {
            "post": _operation(
                "createWebhookEndpoint",
                "Register a webhook endpoint",
                {
                    "201": with_secret,
                    "400": _problem("Malformed JSON."),
                    "401": _UNAUTHORIZED,
                    "409": _problem("The merchant already has the most endpoints allowed."),
                    "413": _problem("The body is over 64 KiB."),
                    "415": _problem("The body is not JSON."),
                    "422": _problem(
                        f"Invalid fields (type {_PROBLEM_TYPES}validation-error), a URL a browser would read "
                        "differently (backslash, user name, spaces or control characters, percent-encoded host), "
                        f"or one whose host is not a public address (type {_PROBLEM_TYPES}url-not-allowed)."
                    ),
                    "503": _DATABASE_DOWN,
                },
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _REF.format(model="WebhookEndpointCreate")}}},
                },
            ),
            "get": _operation(
                "listWebhookEndpoints",
                "The merchant's webhook endpoints, newest first",
                {
                    "200": _json("WebhookEndpointList", "The endpoints (without secrets)."),
                    "401": _UNAUTHORIZED,
                    "503": _DATABASE_DOWN,
                },
            ),
        },
        "/v1/webhook_endpoints/{endpoint_id}": {
            "get": _operation(
                "getWebhookEndpoint",
                "Read a webhook endpoint",
                {
                    "200": _json("WebhookEndpoint", "The endpoint (without its secret)."),
                    "401": _UNAUTHORIZED,
                    "404": _ENDPOINT_NOT_FOUND,
                    "503": _DATABASE_DOWN,
                },
                parameters=[_ENDPOINT_ID],
            ),
            "delete": _operation(
                "deleteWebhookEndpoint",
                "Delete a webhook endpoint: nothing more is delivered to it",
                {
                    "204": {"description": "Deleted."},
                    "401": _UNAUTHORIZED,
                    "404": _ENDPOINT_NOT_FOUND,
                    "503": _DATABASE_DOWN,
                },
                parameters=[_ENDPOINT_ID],
            ),
        },
        "/v1/webhook_endpoints/{endpoint_id}/rotate_secret": {
            "post": _operation(
                "rotateWebhookEndpointSecret",
                "A new signing secret; the old one keeps signing beside it for the grace period",
                {"200": with_secret, "401": _UNAUTHORIZED, "404": _ENDPOINT_NOT_FOUND, "503": _DATABASE_DOWN},
                parameters=[_ENDPOINT_ID],
            ),
        },
        "/v1/events": {
            "get": _operation(
                "listEvents",
                "The merchant's events, newest first",
                {
                    "200": _json("EventList", "A page of events."),
                    "401": _UNAUTHORIZED,
                    "404": _CURSOR_NOT_FOUND,
                    "422": _INVALID_QUERY,
                    "503": _DATABASE_DOWN,
                },
                parameters=[
                    *_PAGE_PARAMETERS,
                    _query("type", "Only events of this type.", {"type": "string", "enum": list(MERCHANT_EVENT_TYPES)}),
                    _query(
                        "payment_id",
                        "Only events of this payment.",
                        _text_filter(64),
                    ),
                ],
            ),
        },
        "/v1/events/{event_id}": {
            "get": _operation(
                "getEvent",
                "Read an event and every attempt to deliver it",
                {
                    "200": _json("EventWithDeliveries", "The event and its delivery attempts, oldest first."),
                    "401": _UNAUTHORIZED,
                    "404": _EVENT_NOT_FOUND,
                    "503": _DATABASE_DOWN,
                },
                parameters=[_EVENT_ID],
            ),
        },
        "/v1/events/{event_id}/redeliver": {
            "post": _operation(
                "redeliverEvent",
                "Deliver the event again now to every enabled endpoint subscribed to it",
                {
                    "202": _json("Event", "Redelivery queued; the attempts appear on the event."),
                    "401": _UNAUTHORIZED,
                    "404": _EVENT_NOT_FOUND,
                    "503": _DATABASE_DOWN,
                },
                parameters=[_EVENT_ID],
            ),
        },
    }


_LIST_PAYMENTS = {
    "200": _json("PaymentList", "A page of the merchant's payments, newest first."),
    "401": _UNAUTHORIZED,
    "404": _CURSOR_NOT_FOUND,
    "422": _INVALID_QUERY,
    "503": _DATABASE_DOWN,
}
_LIST_PAYMENTS_PARAMETERS = [
    *_PAGE_PARAMETERS,
    _query("status", "Only payments in this status.", {"type": "string", "enum": [s.value for s in PaymentStatus]}),
    _query("reference", "Only payments with this reference.", _text_filter(128)),
    _query(
        "customer_email",
        "Only payments whose customer e-mail is this address (compared without regard to case).",
        _text_filter(254),
    ),
    _query("created[gte]", "Only payments created at or after this time (ISO 8601, or Unix seconds).", _CREATED_BOUND),
    _query("created[lte]", "Only payments created at or before this time (ISO 8601, or Unix seconds).", _CREATED_BOUND),
]


_REFUND_ID = _path_id("refund_id", "The refund's id (`re_...`).")
_REFUND_NOT_FOUND = _problem("No refund with this id for this merchant.")
_REFUND_KEY = {
    **_CREATE_PARAMETERS[0],
    "description": "Makes retries safe: the same key (per merchant) never creates a second refund. "
    "Kept at least 24 hours.",
}
_REFUND_LOCATION = {"Location": _header("/v1/refunds/{id}", required=True)}


def _refund_paths() -> dict[str, Any]:
    """Refunds (docs/reference/refunds.md)."""
    return {
        "/v1/payments/{payment_id}/refunds": {
            "post": _operation(
                "createRefund",
                "Refund all or part of a SUCCEEDED payment (idempotent by Idempotency-Key)",
                {
                    "201": _json("Refund", "Accepted (pending): its amount is reserved.", _REFUND_LOCATION),
                    "200": _json(
                        "Refund",
                        "A retry of the request first made with this key: the same refund, current state.",
                        {
                            **_REFUND_LOCATION,
                            "Idempotent-Replayed": _header(
                                "Always `true` on a replay.", {"type": "string", "enum": ["true"]}, required=True
                            ),
                        },
                    ),
                    "400": _problem("Missing or invalid Idempotency-Key, or malformed JSON."),
                    "401": _UNAUTHORIZED,
                    "404": _NOT_FOUND,
                    "409": _problem(
                        f"The payment is not SUCCEEDED (type {_PROBLEM_TYPES}payment-not-refundable), or the"
                        " refund for this key is not readable yet."
                    ),
                    "413": _problem("The body is over 64 KiB."),
                    "415": _problem("The body is not JSON."),
                    "422": _problem(
                        f"Invalid fields (type {_PROBLEM_TYPES}validation-error), an amount above what is left to"
                        f" refund (type {_PROBLEM_TYPES}amount-exceeds-refundable, with `refundable`), or the key"
                        f" was used with another body (type {_PROBLEM_TYPES}idempotency-key-reuse)."
                    ),
                    "503": _DATABASE_DOWN,
                },
                parameters=[_PAYMENT_ID, _REFUND_KEY],
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": {"$ref": _REF.format(model="RefundCreate")}}},
                },
            ),
        },
        "/v1/refunds": {
            "get": _operation(
                "listRefunds",
                "The merchant's refunds, newest first",
                {
                    "200": _json("RefundList", "A page of refunds."),
                    "401": _UNAUTHORIZED,
                    "404": _CURSOR_NOT_FOUND,
                    "422": _INVALID_QUERY,
                    "503": _DATABASE_DOWN,
                },
                parameters=[
                    *_PAGE_PARAMETERS,
                    _query(
                        "payment_id",
                        "Only refunds of this payment.",
                        _text_filter(64),
                    ),
                    _query(
                        "status",
                        "Only refunds in this status.",
                        {"type": "string", "enum": [s.value for s in RefundStatus]},
                    ),
                ],
            ),
        },
        "/v1/refunds/{refund_id}": {
            "get": _operation(
                "getRefund",
                "Read a refund",
                {
                    "200": _json("Refund", "The refund."),
                    "401": _UNAUTHORIZED,
                    "404": _REFUND_NOT_FOUND,
                    "503": _DATABASE_DOWN,
                },
                parameters=[_REFUND_ID],
            ),
        },
    }


def _operation(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "responses": responses, **extra}


# The request bodies: their schemas are the validation schemas of the models that check them.
_REQUEST_MODELS = (PaymentCreate, WebhookEndpointCreate, CaptureCreate, RefundCreate)


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document; the request schema is the validation schema of `PaymentCreate` itself."""
    _, schemas = models_json_schema(
        [
            (
                model,
                "validation"
                if model in (PaymentCreate, WebhookEndpointCreate, CaptureCreate, RefundCreate)
                else "serialization",
            )
            for model in (
                PaymentCreate,
                CaptureCreate,
                Payment,
                PaymentEventList,
                ProblemDetails,
                WebhookEndpointCreate,
                WebhookEndpointWithSecret,
                WebhookEndpointList,
                EventList,
                EventWithDeliveries,
                PaymentList,
                PaymentSummary,
                RefundCreate,
                Refund,
                RefundList,
            )
        ],
        ref_template=_REF,
    )
    read = {"200": _json("Payment", "The payment."), "401": _UNAUTHORIZED, "404": _NOT_FOUND, "503": _DATABASE_DOWN}
    events = {
        "200": _json("PaymentEventList", "The payment's log entries, oldest first."),
        "401": _UNAUTHORIZED,
        "404": _NOT_FOUND,
        "503": _DATABASE_DOWN,
    }
    cancel = {
        "202": _json(
            "Payment",
            "Cancel requested (for an AUTHORIZED payment: the hold is voided); the payment becomes CANCELED once "
            "the gateway confirms.",
        ),
        "401": _UNAUTHORIZED,
        "404": _NOT_FOUND,
        "409": _problem("The payment is already terminal."),
        "503": _DATABASE_DOWN,
    }
    capture = {
        "202": _json(
            "Payment",
            "Capture requested (or, with `Idempotent-Replayed: true`, the one first made with this key); the payment "
            "becomes SUCCEEDED with `amount_captured` once the provider has taken the money.",
            {
                "Location": _header("/v1/payments/{id}", required=True),
                "Idempotent-Replayed": _header("`true` on a replay.", {"type": "string", "enum": ["true"]}),
            },
        ),
        "400": _problem("Missing or invalid Idempotency-Key, or malformed JSON."),
        "401": _UNAUTHORIZED,
        "404": _NOT_FOUND,
        "409": _problem(f"The payment is not AUTHORIZED (type {_PROBLEM_TYPES}payment-not-capturable)."),
        "413": _problem("The body is over 64 KiB."),
        "415": _problem("The body is not JSON."),
        "422": _problem(
            f"Invalid fields (type {_PROBLEM_TYPES}validation-error), more than the hold "
            f"(type {_PROBLEM_TYPES}amount-exceeds-capturable), or the key was used with another capture "
            f"(type {_PROBLEM_TYPES}idempotency-key-reuse)."
        ),
        "503": _DATABASE_DOWN,
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Paystream intake API",
            "version": "1.0.0",
            "description": "Take payments through a hosted payment page; idempotent by Idempotency-Key. "
            "Every error is RFC 9457 problem JSON.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
        "paths": {
            "/v1/payments": {
                "post": _operation(
                    "createPayment",
                    "Create a payment (idempotent by Idempotency-Key)",
                    _CREATE_RESPONSES,
                    parameters=_CREATE_PARAMETERS,
                    requestBody={
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": _REF.format(model="PaymentCreate")}}},
                    },
                ),
                "get": _operation(
                    "listPayments",
                    "The merchant's payments, newest first",
                    _LIST_PAYMENTS,
                    parameters=_LIST_PAYMENTS_PARAMETERS,
                ),
            },
            "/v1/payments/summary": {
                "get": _operation(
                    "summarizePayments",
                    "The merchant's payments counted and summed by status and currency",
                    {
                        "200": _json("PaymentSummary", "One total per status and currency that has payments."),
                        "401": _UNAUTHORIZED,
                        "422": _INVALID_QUERY,
                        "503": _DATABASE_DOWN,
                    },
                    parameters=_LIST_PAYMENTS_PARAMETERS[-2:],
                ),
            },
            "/v1/payments/{payment_id}": {
                "get": _operation("getPayment", "Read a payment", read, parameters=[_PAYMENT_ID]),
            },
            "/v1/payments/{payment_id}/events": {
                "get": _operation(
                    "listPaymentEvents", "A payment's log, oldest first", events, parameters=[_PAYMENT_ID]
                ),
            },
            "/v1/payments/{payment_id}/cancel": {
                "post": _operation(
                    "cancelPayment",
                    "Cancel a PENDING payment, or void an AUTHORIZED one",
                    cancel,
                    parameters=[_PAYMENT_ID],
                ),
            },
            "/v1/payments/{payment_id}/capture": {
                "post": _operation(
                    "capturePayment",
                    "Take all or part of an AUTHORIZED payment's hold (idempotent by Idempotency-Key)",
                    capture,
                    parameters=[_PAYMENT_ID, _CREATE_PARAMETERS[0]],
                    requestBody={
                        "required": False,
                        "content": {"application/json": {"schema": {"$ref": _REF.format(model="CaptureCreate")}}},
                    },
                ),
            },
            **_webhook_paths(),
            **_refund_paths(),
        },
    }
