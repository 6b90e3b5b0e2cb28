"""docs/asyncapi.json: generated from the code, valid AsyncAPI 3.0, and its schemas the real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from shared.events import (
    MESSAGE_TYPES,
    CancelPayment,
    Envelope,
    Message,
    PaymentStatus,
    PaymentStatusChanged,
)
from tests.support.messages import payment_requested
from tools.asyncapi import DOCUMENT_PATH, asyncapi_document, consumer_groups, render

ASYNCAPI_SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "asyncapi-3.0.0.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document()


def test_the_committed_document_is_what_the_code_generates(document: dict[str, Any]) -> None:
    committed = DOCUMENT_PATH.read_text() if DOCUMENT_PATH.exists() else ""
    assert committed == render(document), "docs/asyncapi.json is stale: run `make asyncapi` and commit it"


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(document)


def test_an_invalid_document_is_caught_by_the_schema(document: dict[str, Any]) -> None:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    broken = {**document, "channels": {"x": {"address": 42}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_every_message_type_has_a_message_and_a_channel_by_its_routing_key(document: dict[str, Any]) -> None:
    routing_keys = {
        channel["address"]
        for channel in document["channels"].values()
        if channel["bindings"]["amqp"]["is"] == "routingKey"
    }
    assert routing_keys == set(MESSAGE_TYPES)
    assert {m["name"] for m in document["components"]["messages"].values()} == set(MESSAGE_TYPES)
    for channel in document["channels"].values():
        if channel["bindings"]["amqp"]["is"] == "routingKey":
            assert channel["bindings"]["amqp"]["exchange"]["name"] == "paystream.events"


def test_each_consumer_groups_queue_lists_the_types_bound_to_it(document: dict[str, Any]) -> None:
    groups = consumer_groups()
    assert groups, "no consumer group found"
    for group, types in groups:
        channel = document["channels"][f"{group}Queue"]
        assert channel["bindings"]["amqp"]["queue"]["name"] == f"paystream.{group}"
        listed = {document["components"]["messages"][name]["name"] for name in channel["messages"]}
        assert listed == set(types)


def test_the_intakes_private_queue_lists_the_intent_outcomes(document: dict[str, Any]) -> None:
    channel = document["channels"]["intake_apiPrivateQueue"]
    assert set(channel["messages"]) == {"PaymentIntentCreated", "PaymentIntentFailed"}
    assert channel["bindings"]["amqp"]["queue"]["exclusive"] is True


def test_the_intakes_private_queue_is_bound_by_its_reply_key_which_the_request_carries(
    document: dict[str, Any],
) -> None:
    channel = document["channels"]["intake_apiPrivateQueue"]
    assert "`reply.intake_api.<token>` alone" in channel["description"]
    headers = document["components"]["messages"]["PaymentRequested"]["headers"]["properties"]
    assert "x-paystream-reply-to" in headers


def _payload_validator(document: dict[str, Any], message: type[Message]) -> jsonschema.Validator:
    registry: Registry[Any] = Registry().with_resource(
        "urn:paystream:asyncapi", Resource.from_contents(document, default_specification=DRAFT202012)
    )
    schema = {"$ref": f"urn:paystream:asyncapi#/components/messages/{message.__name__}/payload"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize(
    "message",
    [
        payment_requested().message(),
        PaymentStatusChanged(status=PaymentStatus.SUCCEEDED, provider="sandbox"),
        CancelPayment(),
    ],
    ids=lambda m: m.TYPE,
)
def test_an_envelope_as_published_matches_its_message_schema(document: dict[str, Any], message: Message) -> None:
    envelope = Envelope.wrap(message, payment_id="pay_1", source="intake")
    _payload_validator(document, type(message)).validate(json.loads(envelope.to_bytes()))


def test_an_envelope_with_another_types_payload_does_not_match(document: dict[str, Any]) -> None:
    envelope = payment_requested()
    with pytest.raises(jsonschema.ValidationError):
        _payload_validator(document, PaymentStatusChanged).validate(json.loads(envelope.to_bytes()))
