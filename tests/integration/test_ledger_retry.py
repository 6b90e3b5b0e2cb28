"""Order through the real broker: an event before its payment is retried via the delay queues, never dropped,
and dead-lettered only once its budget (LEDGER_RETRY_ATTEMPTS) is spent. The ledger's consumer runs in-process:
Broker.consume_batches with LedgerHandlers.record_batch and the ledger's own retry policy, as the ledger runs it."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import aio_pika
import asyncpg

from services.ledger.app import GROUP, retry_policy
from services.ledger.handlers import LedgerHandlers
from services.ledger.postgres_store import PostgresLedgerStore
from services.ledger.settings import LedgerSettings
from shared.batches import Consumed
from shared.broker import Broker
from shared.events import PaymentStatus
from tests.support.payment_histories import requested, status_changed
from tests.support.processes import eventually


class CountingRecorder:
    """The ledger's LedgerHandlers, noting every attempt it is given."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._recorder = LedgerHandlers(PostgresLedgerStore(pool))
        self.attempts: list[tuple[str, int]] = []

    async def __call__(self, batch: Sequence[Consumed]) -> list[BaseException | None]:
        self.attempts.extend((item.envelope.type, item.delivery.attempt) for item in batch)
        return await self._recorder.record_batch(batch)


def settings(attempts: int) -> LedgerSettings:
    return LedgerSettings(_env_file=None, ledger_retry_attempts=attempts, ledger_retry_base_seconds=0.05)  # type: ignore[call-arg]


async def test_a_status_change_before_its_payment_request_is_applied_once_the_request_arrives(
    broker: Broker, pool: asyncpg.Pool
) -> None:
    recorder = CountingRecorder(pool)
    await broker.consume_batches(GROUP, recorder, retry=retry_policy(settings(8)))
    payment_id = f"pay_{secrets.token_hex(8)}"
    success = status_changed(payment_id, PaymentStatus.SUCCEEDED, "webhook", "paid")

    async def deferred_once() -> bool:
        return ("payment.status_changed", 2) in recorder.attempts

    await broker.publish(success)
    await eventually(deferred_once, what="the status change retried through the delay queue")
    await broker.publish(requested(payment_id))

    async def succeeded() -> bool:
        return (
            await pool.fetchval("SELECT status FROM ledger.payment_requests WHERE id = $1", payment_id) == "SUCCEEDED"
        )

    await eventually(succeeded, timeout=15, what="the deferred status change applied")
    rows = await pool.fetch(
        "SELECT event_id, event_type, from_status, to_status, outcome FROM ledger.payment_logs"
        " WHERE payment_request_id = $1 ORDER BY id",
        payment_id,
    )
    assert [(r["event_type"], r["from_status"], r["to_status"], r["outcome"]) for r in rows] == [
        ("payment.requested", None, "PENDING", "applied"),
        ("payment.status_changed", "PENDING", "SUCCEEDED", "applied"),
    ]
    assert rows[1]["event_id"] == success.id
    assert await broker.dlq_depth(GROUP) == 0


async def test_an_event_whose_payment_never_comes_is_dead_lettered_only_after_its_budget(
    broker: Broker, pool: asyncpg.Pool
) -> None:
    recorder = CountingRecorder(pool)
    await broker.consume_batches(GROUP, recorder, retry=retry_policy(settings(3)))
    orphan = status_changed(f"pay_{secrets.token_hex(8)}", PaymentStatus.SUCCEEDED, "webhook", "orphan")

    await broker.publish(orphan)
    await eventually(lambda: broker.dlq_depth(GROUP), timeout=15, what="the orphan in the DLQ")

    assert recorder.attempts == [
        ("payment.status_changed", 1),
        ("payment.status_changed", 2),
        ("payment.status_changed", 3),
    ]
    channel = await broker.connection.channel()
    try:
        queue = await channel.declare_queue(broker.names.dlq(GROUP), passive=True)
        dead = await queue.get(no_ack=True, fail=False)
        assert isinstance(dead, aio_pika.abc.AbstractIncomingMessage)
        assert dead.message_id == str(orphan.id)
    finally:
        await channel.close()
