"""/openapi.json: the OpenAPI 3.1 document, generated from the pydantic models that validate requests."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from services.intake_api.models import Payment, PaymentCreate, PaymentEventList, ProblemDetails

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


def _operation(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "responses": responses, **extra}


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document; the request schema is the validation schema of `PaymentCreate` itself."""
    _, schemas = models_json_schema(
        [
            (model, "validation" if model is PaymentCreate else "serialization")
            for model in (PaymentCreate, Payment, PaymentEventList, ProblemDetails)
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
        "202": _json("Payment", "Cancel requested; the payment becomes CANCELED once the gateway confirms."),
        "401": _UNAUTHORIZED,
        "404": _NOT_FOUND,
        "409": _problem("The payment is already terminal."),
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
                "post": _operation("cancelPayment", "Cancel a PENDING payment", cancel, parameters=[_PAYMENT_ID]),
            },
        },
    }
