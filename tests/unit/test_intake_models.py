"""The POST /v1/payments body rules (docs/reference/intake-api.md) and the request fingerprint behind idempotency."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from services.intake_api.models import PaymentCreate, field_errors


def body(**overrides: Any) -> dict[str, Any]:
    valid: dict[str, Any] = {
        "amount": 1999,
        "currency": "USD",
        "reference": "order-42",
        "return_url": "https://shop.example/orders/42",
        "cancel_url": "https://shop.example/cart",
        "description": "2 books",
        "customer_email": "a@b.example",
        "metadata": {"cart": "c-9"},
    }
    valid.update(overrides)
    return {k: v for k, v in valid.items() if v is not ...}


def refused_fields(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        PaymentCreate.model_validate(document)
    return [error["field"] for error in field_errors(caught.value.errors())]


def test_the_contracts_example_body_is_accepted() -> None:
    request = PaymentCreate.model_validate(body())

    assert request.amount == 1999 and request.currency == "USD" and request.metadata == {"cart": "c-9"}


def test_only_amount_currency_reference_and_return_url_are_required() -> None:
    request = PaymentCreate.model_validate(body(cancel_url=..., description=..., customer_email=..., metadata=...))

    assert request.cancel_url is None and request.description is None and request.metadata == {}


@pytest.mark.parametrize("amount", [1, 99_999_999])
def test_amount_accepts_1_to_99_999_999_minor_units(amount: int) -> None:
    assert PaymentCreate.model_validate(body(amount=amount)).amount == amount


@pytest.mark.parametrize("amount", [0, -5, 100_000_000, 19.99, 1999.0, "1999", True, None])
def test_amount_refuses_anything_but_an_integer_in_range(amount: object) -> None:
    assert refused_fields(body(amount=amount)) == ["amount"]


def test_amount_is_required() -> None:
    assert refused_fields(body(amount=...)) == ["amount"]


@pytest.mark.parametrize("currency", ["EUR", "JPY", "CHF"])
def test_currency_accepts_iso_4217_codes(currency: str) -> None:
    assert PaymentCreate.model_validate(body(currency=currency)).currency == currency


@pytest.mark.parametrize("currency", ["usd", "Usd", "US", "USDD", "XYZ", "ABC", "", 840])
def test_currency_refuses_lower_case_unknown_or_malformed_codes(currency: object) -> None:
    assert refused_fields(body(currency=currency)) == ["currency"]


def test_an_unknown_currency_is_named_in_the_message() -> None:
    with pytest.raises(ValidationError) as caught:
        PaymentCreate.model_validate(body(currency="XYZ"))

    assert field_errors(caught.value.errors()) == [
        {"field": "currency", "message": "'XYZ' is not an ISO 4217 currency code"}
    ]


@pytest.mark.parametrize("reference", ["r", "x" * 128])
def test_reference_accepts_1_to_128_characters(reference: str) -> None:
    assert PaymentCreate.model_validate(body(reference=reference)).reference == reference


@pytest.mark.parametrize("reference", ["", "x" * 129, 42, None])
def test_reference_refuses_empty_too_long_or_non_string(reference: object) -> None:
    assert refused_fields(body(reference=reference)) == ["reference"]


def test_return_url_is_required() -> None:
    assert refused_fields(body(return_url=...)) == ["return_url"]


@pytest.mark.parametrize("url", ["https://shop.example/orders/42?x=1#top", "http://localhost:8000/done"])
def test_urls_accept_absolute_http_and_https_kept_as_sent(url: str) -> None:
    request = PaymentCreate.model_validate(body(return_url=url, cancel_url=url))

    assert request.return_url == url and request.cancel_url == url


@pytest.mark.parametrize(
    "url",
    [
        "/orders/42",
        "shop.example/orders",
        "ftp://shop.example/x",
        "javascript:alert(1)",
        "http://",
        "https://shop.example/a b",
        "https://shop.example/\nx",
        "https://shop.example/\x00",
        "https://" + "a" * 2048 + ".example",
    ],
)
@pytest.mark.parametrize("field", ["return_url", "cancel_url"])
def test_urls_refuse_anything_but_an_absolute_http_url(field: str, url: str) -> None:
    assert refused_fields(body(**{field: url})) == [field]


def test_metadata_accepts_20_keys_with_500_character_values() -> None:
    metadata = {f"k{i}": "v" * 500 for i in range(20)}

    assert PaymentCreate.model_validate(body(metadata=metadata)).metadata == metadata


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({f"k{i}": "v" for i in range(21)}, "metadata"),
        ({"cart": "v" * 501}, "metadata.cart"),
        ({"cart": 9}, "metadata.cart"),
        ({"cart": None}, "metadata.cart"),
        ({"cart": {"nested": "x"}}, "metadata.cart"),
        ({"": "v"}, "metadata"),
        ({"k" * 41: "v"}, "metadata"),
        (["cart"], "metadata"),
    ],
)
def test_metadata_refuses_more_than_20_keys_long_or_non_string_values(metadata: object, field: str) -> None:
    assert refused_fields(body(metadata=metadata)) == [field]


@pytest.mark.parametrize("field", ["reference", "description"])
def test_text_with_a_nul_character_is_refused_before_it_reaches_postgresql(field: str) -> None:
    assert refused_fields(body(**{field: "order\x00"})) == [field]


def test_a_lone_surrogate_is_refused_before_it_reaches_postgresql() -> None:
    assert refused_fields(body(metadata={"cart": "\udc00"})) == ["metadata.cart"]


def test_customer_email_must_look_like_an_address() -> None:
    assert refused_fields(body(customer_email="not-an-address")) == ["customer_email"]


def test_unknown_fields_are_refused_each_by_name() -> None:
    assert sorted(refused_fields(body(amount_cents=1999, capture=True))) == ["amount_cents", "capture"]


def test_a_body_that_is_not_an_object_is_refused_as_a_whole() -> None:
    assert refused_fields(["amount", 1999]) == ["body"]  # type: ignore[arg-type]


def test_every_invalid_field_is_reported_at_once() -> None:
    assert sorted(refused_fields(body(amount=0, currency="usd", reference=""))) == ["amount", "currency", "reference"]


def test_a_bad_metadata_key_is_reported_on_metadata_naming_the_key() -> None:
    with pytest.raises(ValidationError) as caught:
        PaymentCreate.model_validate(body(metadata={"k" * 41: "v"}))

    [error] = field_errors(caught.value.errors())
    assert error["field"] == "metadata" and error["message"].startswith(f'key "{"k" * 41}": ')


def test_field_errors_carry_the_reason_without_pydantics_prefix() -> None:
    with pytest.raises(ValidationError) as caught:
        PaymentCreate.model_validate(body(reference="a\x00"))

    assert field_errors(caught.value.errors()) == [
        {"field": "reference", "message": "must not contain NUL (U+0000) characters"}
    ]


def test_the_fingerprint_ignores_key_order_and_whitespace() -> None:
    document = body(metadata={"a": "1", "b": "2"})
    reordered = json.loads(json.dumps(dict(reversed(document.items())), indent=4))
    reordered["metadata"] = {"b": "2", "a": "1"}

    assert PaymentCreate.model_validate(reordered).fingerprint() == PaymentCreate.model_validate(document).fingerprint()


def test_the_fingerprint_treats_an_omitted_default_like_the_default_sent() -> None:
    omitted = PaymentCreate.model_validate(body(metadata=..., description=...))
    explicit = PaymentCreate.model_validate(body(metadata={}, description=None))

    assert omitted.fingerprint() == explicit.fingerprint()


@pytest.mark.parametrize(
    "change", [{"amount": 2000}, {"currency": "EUR"}, {"metadata": {"cart": "c-10"}}, {"cancel_url": ...}]
)
def test_the_fingerprint_changes_with_any_value(change: dict[str, Any]) -> None:
    assert (
        PaymentCreate.model_validate(body(**change)).fingerprint() != PaymentCreate.model_validate(body()).fingerprint()
    )
