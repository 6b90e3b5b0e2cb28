"""/openapi.json: OpenAPI 3.1, generated from the models that validate, listing every status of
docs/reference/intake-api.md."""

from __future__ import annotations

import json

import jsonschema_rs
import pytest

from services.intake_api.models import PaymentCreate
from services.intake_api.openapi import openapi_document

CONTRACT_STATUSES = {
    ("/v1/payments", "post"): {"201", "200", "400", "401", "409", "413", "415", "422", "503"},
    ("/v1/payments/{payment_id}", "get"): {"200", "401", "404", "503"},
    ("/v1/payments/{payment_id}/events", "get"): {"200", "401", "404", "503"},
    ("/v1/payments/{payment_id}/cancel", "post"): {"202", "401", "404", "409", "503"},
}


def test_the_document_is_openapi_3_1_and_plain_json() -> None:
    document = json.loads(json.dumps(openapi_document()))

    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] and document["info"]["version"]


@pytest.mark.parametrize(("path", "method"), list(CONTRACT_STATUSES))
def test_every_status_code_of_the_contract_is_listed(path: str, method: str) -> None:
    assert set(openapi_document()["paths"][path][method]["responses"]) == CONTRACT_STATUSES[(path, method)]


def test_every_v1_operation_requires_the_bearer_key() -> None:
    document = openapi_document()

    assert document["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert all("security" not in op for item in document["paths"].values() for op in item.values())


def test_every_error_answer_is_problem_json() -> None:
    for item in openapi_document()["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], status


def test_the_request_body_schema_is_the_one_that_validates_requests() -> None:
    schemas = openapi_document()["components"]["schemas"]
    expected = PaymentCreate.model_json_schema(ref_template="#/components/schemas/{model}")

    assert schemas["PaymentCreate"] == expected
    assert schemas["PaymentCreate"]["additionalProperties"] is False
    assert set(schemas["PaymentCreate"]["required"]) == {"amount", "currency", "reference", "return_url"}


@pytest.mark.parametrize(
    ("status", "header"), [("201", "Location"), ("200", "Idempotent-Replayed"), ("503", "Retry-After")]
)
def test_the_create_answers_document_their_headers(status: str, header: str) -> None:
    assert header in openapi_document()["paths"]["/v1/payments"]["post"]["responses"][status]["headers"]


def test_the_create_requires_an_idempotency_key_and_offers_prefer_wait() -> None:
    parameters = {p["name"]: p for p in openapi_document()["paths"]["/v1/payments"]["post"]["parameters"]}

    assert parameters["Idempotency-Key"]["required"] is True
    assert parameters["Idempotency-Key"]["schema"]["maxLength"] == 255
    assert parameters["Prefer"]["required"] is False


def test_the_request_schema_accepts_the_contracts_example_and_refuses_an_unknown_field() -> None:
    document = openapi_document()
    validator = jsonschema_rs.validator_for({**document["components"]["schemas"]["PaymentCreate"]})
    example = {
        "amount": 1999,
        "currency": "USD",
        "reference": "order-42",
        "return_url": "https://shop.example/orders/42",
        "metadata": {"cart": "c-9"},
    }

    assert validator.is_valid(example)
    assert not validator.is_valid({**example, "capture": True})
    assert not validator.is_valid({**example, "currency": "XYZ"})


def test_a_created_payment_links_to_its_reads_cancel_capture_and_refunds() -> None:
    links = openapi_document()["paths"]["/v1/payments"]["post"]["responses"]["201"]["links"]

    assert {link["operationId"] for link in links.values()} == {
        "getPayment",
        "listPaymentEvents",
        "cancelPayment",
        "capturePayment",
        "createRefund",
    }


def test_refunds_are_in_the_document() -> None:
    paths = openapi_document()["paths"]

    assert set(paths["/v1/payments/{payment_id}/refunds"]) == {"post"}
    assert set(paths["/v1/refunds"]) == {"get"}
    assert set(paths["/v1/refunds/{refund_id}"]) == {"get"}
    assert "amount_refunded" in openapi_document()["components"]["schemas"]["Payment"]["properties"]
