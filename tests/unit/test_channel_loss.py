"""A broker channel closing under an operation (shared/cancellation.py): aiormq fails the operation's futures with
CancelledError although nothing cancelled the task. The publish turns that into ChannelLost, the ledger's batch
defers the announcement it cost. A real cancellation still cancels. (A loop that meets one goes on: its supervisor
restarts it, tests/unit/test_supervisor.py.)"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from services.ledger.handlers import LedgerHandlers
from services.ledger.store import InMemoryLedgerStore
from shared.broker import Broker, ChannelLost, RetryLater
from shared.events import Envelope
from tests.support.messages import consumed
from tests.support.payment_histories import requested


class ClosingChannel:
    """A channel that closes while the confirm is awaited, as aiormq reports it (aio-pika's channel and the aiormq
    channel under it in one)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.wait_forever = False
        self.is_closed = False

    async def get_underlay_channel(self) -> ClosingChannel:
        return self

    async def basic_publish(self, *args: Any, **kwargs: Any) -> None:
        self.entered.set()
        if self.wait_forever:
            await asyncio.Event().wait()
        raise asyncio.CancelledError()


def broker_with(channel: ClosingChannel) -> Broker:
    broker = Broker("amqp://guest:guest@127.0.0.1:5672/", "unit", name="unit")
    broker._channel = cast(Any, channel)
    broker._exchange = cast(Any, object())
    return broker


async def test_a_channel_closing_under_a_publish_raises_channel_lost_not_a_cancellation() -> None:
    with pytest.raises(ChannelLost, match=r"before it confirmed payment\.requested"):
        await broker_with(ClosingChannel()).publish(requested("pay_closing"))


async def test_cancelling_a_publish_still_cancels_it() -> None:
    channel = ClosingChannel()
    channel.wait_forever = True
    task = asyncio.create_task(broker_with(channel).publish(requested("pay_cancelled")))
    await asyncio.wait_for(channel.entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_an_announcement_cut_off_by_its_channel_defers_its_event_alone() -> None:
    batch = [consumed(requested(f"pay_ann{i}")) for i in range(3)]
    lost = batch[1].envelope.payment_id

    async def publish(announcement: Envelope) -> None:
        if announcement.payment_id == lost:
            raise asyncio.CancelledError()  # an announcement's own, as gather returns it

    results = await asyncio.wait_for(LedgerHandlers(InMemoryLedgerStore(), publish).record_batch(batch), 5)

    assert results[0] is None and results[2] is None
    assert isinstance(results[1], RetryLater)
