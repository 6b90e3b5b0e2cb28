"""Message registries (shared/registry.py): dispatch by type, poison for the rest, bindings from the map."""

from __future__ import annotations

import pytest

from services.gateway_worker.handlers import GATEWAY_MESSAGES
from services.intake_api.intents import INTAKE_MESSAGES
from services.ledger.handlers import LEDGER_MESSAGES
from services.notifier.handlers import NOTIFIER_DELIVERIES, NOTIFIER_MESSAGES
from shared.broker import Delivery
from shared.consumers import CONSUMER_GROUPS, PRIVATE_CONSUMERS
from shared.events import (
    MESSAGE_TYPES,
    NOTIFICATION_MESSAGE_TYPES,
    PAYMENT_MESSAGE_TYPES,
    CancelPayment,
    Envelope,
    ExpirePayment,
)
from shared.registry import MessageRegistry, Received, consumer_groups
from shared.settlement import PoisonMessage
from shared.topology import Names

DELIVERY = Delivery(attempt=1, max_attempts=1, redelivered=False)


class Cancels:
    def __init__(self) -> None:
        self.seen: list[Received[CancelPayment]] = []

    async def on_cancel(self, received: Received[CancelPayment]) -> None:
        self.seen.append(received)


REGISTRY: MessageRegistry[Cancels] = MessageRegistry("cancels", {CancelPayment: Cancels.on_cancel})


async def test_a_message_reaches_the_handler_of_its_type_with_its_typed_payload() -> None:
    cancels = Cancels()
    envelope = Envelope.wrap(CancelPayment(provider="sandbox"), payment_id="pay_1", source="merchant")

    await REGISTRY.dispatcher(cancels)(envelope, DELIVERY)

    assert [(r.envelope.id, r.message, r.delivery) for r in cancels.seen] == [
        (envelope.id, CancelPayment(provider="sandbox"), DELIVERY)
    ]


async def test_a_type_without_a_handler_is_poison_not_acked_silently() -> None:
    cancels = Cancels()
    envelope = Envelope.wrap(ExpirePayment(), payment_id="pay_1", source="expiry")

    with pytest.raises(PoisonMessage, match=r"cancels has no handler for 'payment\.expiration_due'"):
        await REGISTRY.dispatcher(cancels)(envelope, DELIVERY)
    assert cancels.seen == []


async def test_an_unknown_type_is_poison() -> None:
    envelope = Envelope(type="payment.teleported", source="merchant", payment_id="pay_1", data={})
    with pytest.raises(PoisonMessage):
        await REGISTRY.dispatcher(Cancels())(envelope, DELIVERY)


def test_the_bindings_are_the_types_of_the_map() -> None:
    assert REGISTRY.group.name == "cancels"
    assert REGISTRY.group.routing_keys == ("payment.cancel_requested",)


def test_the_ledger_records_every_payment_message_type_there_is() -> None:
    assert set(LEDGER_MESSAGES.group.routing_keys) == set(PAYMENT_MESSAGE_TYPES)


def test_every_notification_message_has_a_notifier_handler_and_none_reaches_the_ledger() -> None:
    notified = set(NOTIFIER_MESSAGES.group.routing_keys) | set(NOTIFIER_DELIVERIES.group.routing_keys)
    assert notified == set(NOTIFICATION_MESSAGE_TYPES)
    assert not notified & set(LEDGER_MESSAGES.group.routing_keys)


def test_no_message_type_or_group_binding_can_take_a_reply_meant_for_one_intake_process() -> None:
    # A reply goes to `reply.<group>.<token>` on the exchange: no group queue may be bound to match it.
    reply = Names.reply_key("intake_api", "0123456789ab")
    assert Names.is_reply_key(reply)
    assert not any(Names.is_reply_key(t) for t in MESSAGE_TYPES)
    keys = [key for group in CONSUMER_GROUPS for key in group.routing_keys]
    assert keys and not any(Names.is_reply_key(key) or "#" in key or "*" in key for key in keys)


def test_every_consumer_group_is_declared_once() -> None:
    assert [g.name for g in CONSUMER_GROUPS] == ["gateway_worker", "ledger", "notifier", "notifier_deliveries"]
    assert consumer_groups([GATEWAY_MESSAGES, GATEWAY_MESSAGES]) == (GATEWAY_MESSAGES.group,)


def test_the_shared_routing_is_exactly_what_each_service_registry_handles() -> None:
    # Every service declares every group from shared/consumers.py without loading the others' handlers: the data
    # must say what the registries handle, type for type and in the same order.
    registries = (GATEWAY_MESSAGES, LEDGER_MESSAGES, NOTIFIER_MESSAGES, NOTIFIER_DELIVERIES)
    assert consumer_groups(registries) == CONSUMER_GROUPS
    assert PRIVATE_CONSUMERS == ((INTAKE_MESSAGES.name, INTAKE_MESSAGES.message_types),)


def test_two_registries_may_not_claim_one_group_with_different_types() -> None:
    other: MessageRegistry[Cancels] = MessageRegistry("gateway_worker", {CancelPayment: Cancels.on_cancel})
    with pytest.raises(ValueError, match="gateway_worker"):
        consumer_groups([GATEWAY_MESSAGES, other])


def test_a_registry_without_handlers_is_refused() -> None:
    with pytest.raises(ValueError):
        MessageRegistry("nobody", {})
