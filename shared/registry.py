"""One message registry per service: {message type: handler}, the way cosmicpython's EVENT_HANDLERS is.

A service writes its handlers as one explicit map from message class to handler. The map is static (module
level), so the broker topology can be derived from it before any dependency exists; the handlers take the
service's dependencies as their first argument, bound at wiring time:

    GATEWAY_MESSAGES = MessageRegistry("gateway_worker", {PaymentRequested: GatewayHandlers.open_intent, ...})
    await broker.consume(GATEWAY_MESSAGES.group, GATEWAY_MESSAGES.dispatcher(handlers), retry=...)

`group` is the ConsumerGroup to declare (its routing keys are the map's types); `dispatcher(deps)` is the
`Handler` that `Broker.consume` calls. A message whose type the map does not hold is a PoisonMessage: it is
logged and dead-lettered, never acked silently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shared.broker import Delivery, Handler
from shared.events import Envelope, Message
from shared.settlement import PoisonMessage
from shared.topology import ConsumerGroup

D = TypeVar("D")
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Received(Generic[M]):
    """One consumed message as a handler sees it: the envelope, its typed payload, and the delivery."""

    envelope: Envelope
    message: M
    delivery: Delivery


# A handler of one message type, given the service's dependencies first.
MessageHandler = Callable[[D, Received[Any]], Awaitable[None]]


class MessageRegistry(Generic[D]):
    """A consumer group's handlers, one per message type, and the bindings that follow from them."""

    def __init__(self, name: str, handlers: Mapping[type[Message], MessageHandler[D]]) -> None:
        if not handlers:
            raise ValueError(f"consumer group {name!r} handles no message type")
        self.name = name
        self.handlers: Mapping[type[Message], MessageHandler[D]] = dict(handlers)

    @property
    def group(self) -> ConsumerGroup:
        """The queue to declare and the routing keys (message types) to bind it by."""
        return ConsumerGroup(self.name, tuple(cls.TYPE for cls in self.handlers))

    @property
    def message_types(self) -> tuple[str, ...]:
        return self.group.routing_keys

    def decode(self, envelope: Envelope) -> Message:
        """The envelope's payload, one of this registry's types; PoisonMessage if it is invalid or not ours."""
        try:
            message = envelope.message()
        except ValueError as exc:
            raise PoisonMessage(f"invalid {envelope.type!r} payload: {exc}") from exc
        if type(message) not in self.handlers:
            # Bound to this queue by mistake or by an old binding: no retry makes a handler appear.
            raise PoisonMessage(f"{self.name} has no handler for {envelope.type!r}")
        return message

    def decode_batch(
        self, envelopes: Sequence[Envelope]
    ) -> tuple[list[BaseException | None], list[tuple[int, Message]]]:
        """A batch's payloads (`decode` each): per envelope None or its PoisonMessage, and (index, message) of
        those decoded, in batch order. The starting point of a batch handler's results."""
        results: list[BaseException | None] = [None] * len(envelopes)
        decoded: list[tuple[int, Message]] = []
        for i, envelope in enumerate(envelopes):
            try:
                decoded.append((i, self.decode(envelope)))
            except PoisonMessage as exc:
                results[i] = exc
        return results, decoded

    def dispatcher(self, deps: D) -> Handler:
        """The broker-facing handler: decode the payload, find its handler, call it with `deps`."""

        async def dispatch(envelope: Envelope, delivery: Delivery) -> None:
            message = self.decode(envelope)
            await self.handlers[type(message)](deps, Received(envelope, message, delivery))

        return dispatch


def consumer_groups(registries: Iterable[MessageRegistry[Any]]) -> tuple[ConsumerGroup, ...]:
    """The consumer groups of these registries, each once (several processes may share one registry)."""
    groups: dict[str, ConsumerGroup] = {}
    for registry in registries:
        known = groups.setdefault(registry.name, registry.group)
        if known != registry.group:
            raise ValueError(f"two registries name consumer group {registry.name!r} differently")
    return tuple(groups.values())
