"""/openapi.json: the OpenAPI 3.1 document, generated from the pydantic models that validate requests."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from services.intake_api.models import Payment, PaymentCreate, PaymentEventList, ProblemDetails

_REF = "#/components/schemas/{model}"


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="ProblemDetails")}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _json(model: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}},
    }
    if headers:
        response["headers"] = headers
    return response


_STRING = {"schema": {"type": "string"}}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", **_STRING}}
_COMMON = {
    "401": _problem("Missing or unknown API key."),
    "503": _problem("The database is unavailable.", _RETRY_AFTER),
}
_PAYMENT_ID = {"name": "payment_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}


@cache
def openapi_document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(m, "validation" if m is PaymentCreate else "serialization")
         for m in (PaymentCreate, Payment, PaymentEventList, ProblemDetails)],
        ref_template=_REF,
    )
    read = {"200": _json("Payment", "The payment."), "404": _problem("Unknown payment."), **_COMMON}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Paystream intake API",
            "version": "1.0.0",
            "description": "Take payments through a hosted payment page; idempotent by Idempotency-Key.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
        "paths": {
            "/v1/payments": {
                "post": {
                    "operationId": "createPayment",
                    "summary": "Create a payment (idempotent by Idempotency-Key)",
                    "parameters": [
                        {"name": "Idempotency-Key", "in": "header", "required": True,
                         "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"}},
                        {"name": "Prefer", "in": "header", "required": False,
                         "description": "wait=N (0-10 seconds, default 3): hold the answer until checkout_url is ready.",
                         "schema": {"type": "string", "pattern": "^wait=(10|[0-9])$"}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": _REF.format(model="PaymentCreate")}}},
                    },
                    "responses": {
                        "201": _json("Payment", "Created.", {"Location": _STRING}),
                        "200": _json("Payment", "A replay of the request first made with this key.",
                                     {"Idempotent-Replayed": _STRING}),
                        "400": _problem("Missing Idempotency-Key or malformed JSON."),
                        "409": _problem("A request with this key is still in flight."),
                        "413": _problem("Body over 64 KiB."),
                        "415": _problem("Body not JSON."),
                        "422": _problem("Invalid fields, or the key was used with another body (idempotency-key-reuse)."),
                        **_COMMON,
                    },
                }
            },
            "/v1/payments/{payment_id}": {
                "get": {"operationId": "getPayment", "parameters": [_PAYMENT_ID], "responses": read}
            },
            "/v1/payments/{payment_id}/events": {
                "get": {
                    "operationId": "listPaymentEvents",
                    "parameters": [_PAYMENT_ID],
                    "responses": {"200": _json("PaymentEventList", "The payment's log, oldest first."),
                                  "404": _problem("Unknown payment."), **_COMMON},
                }
            },
            "/v1/payments/{payment_id}/cancel": {
                "post": {
                    "operationId": "cancelPayment",
                    "parameters": [_PAYMENT_ID],
                    "responses": {
                        "202": _json("Payment", "Cancel requested; the payment becomes CANCELED once the gateway confirms."),
                        "404": _problem("Unknown payment."),
                        "409": _problem("The payment is already terminal."),
                        **_COMMON,
                    },
                }
            },
        },
    }
