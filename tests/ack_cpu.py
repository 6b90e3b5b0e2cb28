"""`python -m tests.ack_cpu [--rate R] [--seconds S] [--rounds N]`: what holding acks back saves the broker.

Messages go through a quorum queue of their own on the local RabbitMQ, paced at R a second (persistent, each
publish confirmed), to one consumer that acks each as it comes, then (the same stream again) to one that holds
its acks for BATCH_ACK_DELAY_SECONDS and sends them as one multiple-ack, as the services' batch consumers do
(shared/batches.py). Prints the RabbitMQ node's CPU per message (utime + stime of its processes) for each, in N
alternated rounds, and their ratio. Paced messages are where the difference shows: a quorum queue settles each ack
as a command of its log. A diagnostic, like `python -m tests.ledger_cpu`; not a test (it asserts nothing about
time). On a broker other work shares, that work's CPU is in the figures too.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.broker import BATCH_ACK_DELAY_SECONDS
from tests.bench import _cpu_seconds, rabbitmq_pids, run_paced
from tests.support.infra import find_servers, unique_name
from tests.support.processes import eventually


async def node_cpu_ms_per_message(amqp_url: str, rate: float, seconds: float, ack_delay: float) -> float:
    """The node's CPU per message of a paced stream through a new quorum queue, acks held `ack_delay` (0: none)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        publishing = await connection.channel(publisher_confirms=True)
        name = unique_name("ackcpu")
        queue = await publishing.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=256)
        loop = asyncio.get_running_loop()
        consumed = 0
        held: list[AbstractIncomingMessage] = []
        timer: asyncio.TimerHandle | None = None
        acks: set[asyncio.Task[None]] = set()

        def send_held() -> None:
            nonlocal timer
            timer = None
            last, held[:] = held[-1], []
            task = asyncio.ensure_future(last.ack(multiple=True))
            acks.add(task)
            task.add_done_callback(acks.discard)

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal consumed, timer
            consumed += 1
            if not ack_delay:
                await message.ack()
                return
            held.append(message)
            if timer is None:
                timer = loop.call_later(ack_delay, send_held)

        await (await consuming.get_queue(name)).consume(on_message)

        async def publish() -> bool:
            message = aio_pika.Message(b"x" * 600, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await publishing.default_exchange.publish(message, routing_key=name)
            return True

        await asyncio.sleep(0.5)  # the queue's start-up is not the stream's cost
        before = sum(_cpu_seconds(pid) for pid in rabbitmq_pids())
        made = (await run_paced(seconds, rate, publish))["ops"]

        async def all_acked() -> bool:
            return consumed >= made and not held and not acks

        await eventually(all_acked, timeout=60, interval=0.05, what="every message consumed and acked")
        await asyncio.sleep(0.2)  # the last acks settled
        spent = sum(_cpu_seconds(pid) for pid in rabbitmq_pids()) - before
        await queue.delete(if_unused=False, if_empty=False)
        return spent * 1000 / max(1, consumed)
    finally:
        await connection.close()


async def main(rate: float, seconds: float, rounds: int) -> None:
    amqp_url = find_servers().amqp_url
    at_once, held = [], []
    for n in range(1, rounds + 1):
        at_once.append(await node_cpu_ms_per_message(amqp_url, rate, seconds, 0.0))
        held.append(await node_cpu_ms_per_message(amqp_url, rate, seconds, BATCH_ACK_DELAY_SECONDS))
        print(
            f"round {n}: {rate:g} messages/s, node CPU per message: each ack at once {at_once[-1]:.3f} ms,"
            f" acks held {BATCH_ACK_DELAY_SECONDS * 1000:g} ms {held[-1]:.3f} ms ({held[-1] / at_once[-1]:.2f} x)",
            flush=True,
        )
    first, second = statistics.median(at_once), statistics.median(held)
    print(f"median: {first:.3f} ms against {second:.3f} ms ({second / first:.2f} x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.ack_cpu")
    parser.add_argument("--rate", type=float, default=100.0, help="messages a second (default 100)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each stream (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3)")
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.seconds, args.rounds))
