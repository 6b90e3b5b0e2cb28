"""Broker connections for integration tests: on the test's own namespace, with every consumer group declared."""

from __future__ import annotations

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from shared.broker import Broker
from shared.consumers import CONSUMER_GROUPS


async def connected_broker(amqp_url: str, namespace: str, name: str, *, coalesce: bool = False) -> Broker:
    """A connected Broker named `name` (as the management UI shows it), every group's queue declared."""
    broker = Broker(amqp_url, namespace, name=name, coalesce=coalesce)
    await broker.connect()
    await broker.declare_topology(CONSUMER_GROUPS)
    return broker


async def queue_depth(broker: Broker, name: str) -> int:
    """How many messages are ready in the queue `name`."""
    channel = await broker.connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def take_all(connection: AbstractConnection, name: str) -> list[AbstractIncomingMessage]:
    """Every message now ready in the queue `name`, taken off it (in queue order)."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        taken = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
        return taken
    finally:
        await channel.close()
