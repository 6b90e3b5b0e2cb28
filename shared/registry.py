"""One message registry per consumer group: which message types it handles, and which handler takes them.

The one handler style of every service (docs/explanation/handlers.md): a service's handlers are the methods of one
class that holds its dependencies (`GatewayHandlers`, `LedgerHandlers`, `NotifierHandlers`, `IntentWaiters`),
built once in its app.py. A registry names them as unbound methods, at module level, so the bindings can be
derived before any dependency exists:

    GATEWAY_MESSAGES = MessageRegistry("gateway_worker", {PaymentRequested: GatewayHandlers.open_intent, ...})
    await broker.consume(GATEWAY_MESSAGES.name, GATEWAY_MESSAGES.dispatcher(handlers), retry=...)

A group consumed in batches has a `BatchRegistry` instead: its message types and the one method that takes a
batch of them (the ledger records a batch in a few statements whatever its types):

    LEDGER_MESSAGES = BatchRegistry("ledger", PAYMENT_MESSAGE_TYPES.values(), LedgerHandlers.record_batch)
    await broker.consume_batches(LEDGER_MESSAGES.name, LEDGER_MESSAGES.dispatcher(handlers), ...)

`group` is the ConsumerGroup its types make (shared/consumers.py writes them down; a test holds the two together);
`dispatcher(deps)` is what the broker calls. A message whose type the registry does not hold is a PoisonMessage:
it is logged and dead-lettered, never acked silently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shared.batches import BatchHandler, Consumed
from shared.events import Envelope, Message
from shared.settlement import Delivery, Handler, PoisonMessage
from shared.topology import ConsumerGroup

D = TypeVar("D")
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Received(Generic[M]):
    """One consumed message as a handler sees it: the envelope, its typed payload, and the delivery."""

    envelope: Envelope
    message: M
    delivery: Delivery


# A handler of one message type: a method of the service's handler class, so its dependencies come first.
MessageHandler = Callable[[D, Received[Any]], Awaitable[None]]
# The handler of a batch: per message None (ack it) or the exception that settles it (shared/batches.py).
BatchMethod = Callable[[D, Sequence[Consumed]], Awaitable[Sequence[BaseException | None]]]


class _Bindings:
    """A consumer group's name and message classes, and what follows from them: its bindings and decoding."""

    def __init__(self, name: str, messages: Iterable[type[Message]]) -> None:
        self.name = name
        self.messages: tuple[type[Message], ...] = tuple(messages)
        if not self.messages:
            raise ValueError(f"consumer group {name!r} handles no message type")

    @property
    def group(self) -> ConsumerGroup:
        """The queue to declare and the routing keys (message types) to bind it by."""
        return ConsumerGroup(self.name, tuple(cls.TYPE for cls in self.messages))

    @property
    def message_types(self) -> tuple[str, ...]:
        return self.group.routing_keys

    def decode(self, envelope: Envelope) -> Message:
        """The envelope's payload, one of this registry's types; PoisonMessage if it is invalid or not ours."""
        try:
            message = envelope.message()
        except ValueError as exc:
            raise PoisonMessage(f"invalid {envelope.type!r} payload: {exc}") from exc
        if type(message) not in self.messages:
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


class MessageRegistry(_Bindings, Generic[D]):
    """A group consumed one message at a time: one handler per message type."""

    def __init__(self, name: str, handlers: Mapping[type[Message], MessageHandler[D]]) -> None:
        super().__init__(name, handlers)
        self.handlers: Mapping[type[Message], MessageHandler[D]] = dict(handlers)

    def dispatcher(self, deps: D) -> Handler:
        """The broker-facing handler (`Broker.consume`): decode the payload, find its handler, call it with `deps`."""

        async def dispatch(envelope: Envelope, delivery: Delivery) -> None:
            message = self.decode(envelope)
            await self.handlers[type(message)](deps, Received(envelope, message, delivery))

        return dispatch


class BatchRegistry(_Bindings, Generic[D]):
    """A group consumed in batches (`Broker.consume_batches`): its message types, and the one method that takes a
    batch of them and decodes each (`decode_batch`), so a batch of mixed types is handled together."""

    def __init__(self, name: str, messages: Iterable[type[Message]], handler: BatchMethod[D]) -> None:
        super().__init__(name, messages)
        self.handler = handler

    def dispatcher(self, deps: D) -> BatchHandler:
        """The broker-facing batch handler: the registry's method, bound to `deps`."""

        async def dispatch(batch: Sequence[Consumed]) -> Sequence[BaseException | None]:
            return await self.handler(deps, batch)

        return dispatch


def consumer_groups(registries: Iterable[_Bindings]) -> tuple[ConsumerGroup, ...]:
    """The consumer groups of these registries, each once (several processes may share one registry)."""
    groups: dict[str, ConsumerGroup] = {}
    for registry in registries:
        known = groups.setdefault(registry.name, registry.group)
        if known != registry.group:
            raise ValueError(f"two registries name consumer group {registry.name!r} differently")
    return tuple(groups.values())
