"""The AsyncAPI 3.0 document of Paystream's messages, generated from the code, never written by hand.

Every message type comes from `shared.events.MESSAGE_TYPES` (its pydantic model is the payload schema), the
exchange and queue names from the broker's `Names`, and which queue receives which types from the consumer
groups (shared/consumers.py). `python -m tools.asyncapi` (or `make asyncapi`) rewrites docs/asyncapi.json; a test
fails while the committed file differs from what the code says.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from shared.broker import REPLY_TO_HEADER
from shared.consumers import CONSUMER_GROUPS, PRIVATE_CONSUMERS
from shared.events import MESSAGE_TYPES, Envelope, Message
from shared.topology import REPLY_PREFIX, Names

DOCUMENT_PATH = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.json"
# The document shows the default BROKER_NAMESPACE; every name starts with the deployment's own.
NAMESPACE = "paystream"
AMQP_BINDING_VERSION = "0.3.0"
SCHEMA_REF = "#/components/schemas/{model}"


def consumer_groups() -> list[tuple[str, tuple[str, ...]]]:
    """(group, the message types its queue receives): each service's registry says which it handles."""
    return [(group.name, group.routing_keys) for group in CONSUMER_GROUPS]


def private_consumers() -> list[tuple[str, tuple[str, ...]]]:
    """(service, the message types each of its processes hears of on a queue of its own: the outcomes of the
    requests waiting in that process, sent to its reply key)."""
    return list(PRIVATE_CONSUMERS)


def _summary(cls: type[Any]) -> str:
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0]


def _schema(model: type[Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema as a reference into components/schemas, its nested definitions hoisted there."""
    schema = model.model_json_schema(ref_template=SCHEMA_REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": SCHEMA_REF.format(model=model.__name__)}


def _message(cls: type[Message], schemas: dict[str, Any]) -> dict[str, Any]:
    data = _schema(cls, schemas)
    return {
        "name": cls.TYPE,
        "title": cls.__name__,
        "summary": _summary(cls),
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {
                "traceparent": {"type": "string", "description": "W3C trace context of the payment's trace"},
                "tracestate": {"type": "string"},
                "x-paystream-attempt": {"type": "integer", "minimum": 1, "description": "retry attempt"},
                REPLY_TO_HEADER: {
                    "type": "string",
                    "pattern": f"^{re.escape(REPLY_PREFIX)}",
                    "description": (
                        "On a payment.requested whose HTTP request waits (Prefer: wait > 0): the reply routing key "
                        "of the intake process it waits in. The outcome is published to it too, in the same "
                        "publish (a BCC header, which the broker strips before delivery)."
                    ),
                },
            },
        },
        "payload": {
            "allOf": [
                {"$ref": SCHEMA_REF.format(model="Envelope")},
                {
                    "type": "object",
                    "properties": {"type": {"const": cls.TYPE}, "version": {"const": cls.VERSION}, "data": data},
                },
            ]
        },
        "correlationId": {"description": "The payment it is about", "location": "$message.payload#/payment_id"},
        "bindings": {"amqp": {"messageType": cls.TYPE, "bindingVersion": AMQP_BINDING_VERSION}},
    }


def _listed(types: Iterable[str]) -> str:
    return ", ".join(f"`{t}`" for t in types)


def _add_queue(
    channels: dict[str, Any],
    operations: dict[str, Any],
    channel_id: str,
    types: Iterable[str],
    *,
    address: str | None,
    title: str,
    description: str,
    queue: dict[str, Any],
    summary: str,
) -> None:
    """A queue's channel, carrying the messages bound to it, and the operation that consumes it."""
    consumed = [MESSAGE_TYPES[t].__name__ for t in types]
    channels[channel_id] = {
        "address": address,
        "title": title,
        "description": description,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in consumed},
        "bindings": {"amqp": {"is": "queue", "queue": {**queue, "vhost": "/"}, "bindingVersion": AMQP_BINDING_VERSION}},
    }
    operations[channel_id.removesuffix("Queue") + "Receive"] = {
        "action": "receive",
        "summary": summary,
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"} for name in consumed],
        "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
    }


def asyncapi_document(namespace: str = NAMESPACE) -> dict[str, Any]:
    """The whole document: one channel per routing key on the topic exchange, one per consumer group's queue."""
    names = Names(namespace)
    schemas: dict[str, Any] = {}
    _schema(Envelope, schemas)
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    exchange = {"name": names.exchange, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"}

    for message_type, cls in MESSAGE_TYPES.items():
        name = cls.__name__
        messages[name] = _message(cls, schemas)
        channels[name] = {
            "address": message_type,
            "title": f"routing key {message_type}",
            "description": f"Published to the topic exchange `{names.exchange}` with routing key `{message_type}`.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": AMQP_BINDING_VERSION}},
        }
        operations[f"publish{name}"] = {
            "action": "send",
            "summary": f"Publish {message_type}, persistent, with publisher confirms.",
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/{name}"}],
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": AMQP_BINDING_VERSION}},
        }

    for group, types in consumer_groups():
        _add_queue(
            channels,
            operations,
            f"{group}Queue",
            types,
            address=names.queue(group),
            title=f"queue of the {group} consumer group",
            description=(
                f"Durable quorum queue bound to `{names.exchange}` by {_listed(types)}. Poison messages go to "
                f"`{names.dlq(group)}`; retry attempt n waits in `{names.queue(group)}.delay.<n>` and comes back."
            ),
            queue={"name": names.queue(group), "durable": True, "exclusive": False, "autoDelete": False},
            summary=f"{group} consumes its queue; a message is acked only after its effect is committed.",
        )
    for group, types in private_consumers():
        _add_queue(
            channels,
            operations,
            f"{group}PrivateQueue",
            types,
            # Named per process at run time (it goes with the process's connection).
            address=None,
            title=f"private queue of each {group} process",
            description=(
                f"Exclusive, auto-deleted queue of one {group} process, bound to `{names.exchange}` by its own "
                f"reply key `{Names.reply_key(group, '<token>')}` alone: it receives {_listed(types)} only for "
                f"the requests waiting in that process (their `{REPLY_TO_HEADER}` header names the key, and the "
                "outcome is published with it in its `BCC` header). Notifications only: nothing is retried or "
                "dead-lettered."
            ),
            queue={"durable": False, "exclusive": True, "autoDelete": True},
            summary=f"Each {group} process hears of these on its own queue, for the requests waiting in it.",
        )

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Paystream messages",
            "version": version("paystream"),
            "description": (
                "Every event and command Paystream's services exchange over RabbitMQ, generated from the pydantic "
                f"models in shared/events.py. Names are shown under the default BROKER_NAMESPACE `{namespace}`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The broker at AMQP_URL.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def render(document: dict[str, Any]) -> str:
    """The document as committed: stable key order, two-space indent, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write docs/asyncapi.json (or the path given)."""
    path = Path(argv[0]) if argv else DOCUMENT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(asyncapi_document()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
