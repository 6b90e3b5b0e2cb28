"""The broker's names and topology: what exists on RabbitMQ, apart from how messages are sent or settled.

Names (all under BROKER_NAMESPACE `ns`):
  ns.events                 topic exchange every event and command is published to (routing key = type)
  ns.<group>                durable quorum queue of one consumer group, bound by the types its registry handles
  ns.<group>.dlq            its dead-letter queue (via the ns.dead-letter exchange, at-least-once)
  ns.<group>.<token>        exclusive queue of one process: bound by message types (`consume_private`) or by
                            its own reply key `reply.<group>.<token>` alone (`consume_replies`)
  <queue>.delay.<n>         quorum delay queue for retry attempt n of messages consumed from <queue>: they wait
                            out their expiration there, then dead-letter back into <queue> (default exchange)

Which group consumes which types is not written here: each service's message registry says it
(shared/registry.py), and shared/consumers.py writes down which types reach which group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

# Routing keys of reply queues start with this; no message type does (they are `payment.*`, `ledger.*`, `webhook.*`).
REPLY_PREFIX = "reply."

# A consumer that dies mid-message this many times makes the message poison: it goes to the DLQ.
DELIVERY_LIMIT = 10


@dataclass(frozen=True)
class ConsumerGroup:
    """A queue shared by competing consumers, and the message types (routing keys) bound to it."""

    name: str
    routing_keys: tuple[str, ...]


@dataclass(frozen=True)
class Names:
    namespace: str

    @property
    def exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dead-letter"

    def queue(self, group: str) -> str:
        return f"{self.namespace}.{group}"

    def dlq(self, group: str) -> str:
        return f"{self.namespace}.{group}.dlq"

    def delay_queue(self, group: str, attempt: int) -> str:
        return self.retry_queue(self.queue(group), attempt)

    @staticmethod
    def retry_queue(queue: str, attempt: int) -> str:
        """Where attempt `attempt` of a message consumed from `queue` waits before going back to `queue`."""
        return f"{queue}.delay.{attempt}"

    def private_queue(self, group: str, token: str) -> str:
        """One process's own queue: client-named, so a reconnect re-declares the same queue."""
        return f"{self.namespace}.{group}.{token}"

    @staticmethod
    def reply_key(group: str, token: str) -> str:
        """The routing key that reaches one process's reply queue (on the exchange; no message type is `reply.*`)."""
        return f"{REPLY_PREFIX}{group}.{token}"

    @staticmethod
    def is_reply_key(key: str) -> bool:
        return key.startswith(REPLY_PREFIX) and 0 < len(key) <= 255


# Quorum queues replicate over the cluster's nodes, honour per-message TTL and dead-letter at least once
# (RabbitMQ >= 3.10). At-least-once dead-lettering needs reject-publish overflow.
_QUORUM = {"x-queue-type": "quorum"}
_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def group_queue_arguments(names: Names, group: str) -> dict[str, Any]:
    """A consumer group's queue: poison after DELIVERY_LIMIT crashes, dead-lettered into its DLQ."""
    return {
        **_QUORUM,
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": names.dead_letter_exchange,
        "x-dead-letter-routing-key": group,
        # Losing a poisoned payment event is not acceptable: dead-letter at least once.
        **_AT_LEAST_ONCE,
    }


def delay_queue_arguments(queue: str) -> dict[str, Any]:
    """A retry delay queue: nothing consumes it; each message expires back into `queue`.

    Quorum like the queue it feeds, so a retry waiting on a node that dies is still there on the others.
    """
    return {**_QUORUM, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue, **_AT_LEAST_ONCE}


async def declare_exchanges(channel: AbstractChannel, names: Names) -> None:
    await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(names.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)


async def declare_groups(channel: AbstractChannel, names: Names, groups: Iterable[ConsumerGroup]) -> None:
    """Declare the exchanges and each group's queue, DLQ and bindings; safe to repeat and to race."""
    await declare_exchanges(channel, names)
    exchange = await channel.get_exchange(names.exchange, ensure=False)
    dlx = await channel.get_exchange(names.dead_letter_exchange, ensure=False)
    for group in groups:
        dlq = await channel.declare_queue(names.dlq(group.name), durable=True, arguments=dict(_QUORUM))
        await dlq.bind(dlx, routing_key=group.name)
        queue = await channel.declare_queue(
            names.queue(group.name), durable=True, arguments=group_queue_arguments(names, group.name)
        )
        for key in group.routing_keys:
            await queue.bind(exchange, routing_key=key)


async def declare_delay_queue(channel: AbstractChannel, queue: str, attempt: int) -> str:
    name = Names.retry_queue(queue, attempt)
    await channel.declare_queue(name, durable=True, arguments=delay_queue_arguments(queue))
    return name
