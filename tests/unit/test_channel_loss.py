"""A broker channel closing under an operation (shared/cancellation.py): aiormq fails the operation's futures with
CancelledError although nothing cancelled the task. The publish turns that into ChannelLost, the ledger's batch
defers the announcement it cost, and a background task that ends anyway stops the service instead of leaving it
alive with its work undone. A real cancellation still cancels."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiohttp import web

from services.ledger.handlers import LedgerHandlers
from services.ledger.store import InMemoryLedgerStore
from shared import runtime
from shared.broker import Broker, ChannelLost, RetryLater
from shared.events import Envelope
from shared.web import create_base_app
from tests.support.messages import consumed
from tests.support.payment_histories import requested


class ClosingExchange:
    """An exchange whose channel closes while the confirm is awaited, as aiormq reports it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.wait_forever = False

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        self.entered.set()
        if self.wait_forever:
            await asyncio.Event().wait()
        raise asyncio.CancelledError()


def broker_with(exchange: ClosingExchange) -> Broker:
    broker = Broker("amqp://guest:guest@127.0.0.1:5672/", "unit", name="unit")
    broker._exchange = cast(Any, exchange)
    return broker


async def test_a_channel_closing_under_a_publish_raises_channel_lost_not_a_cancellation() -> None:
    with pytest.raises(ChannelLost, match=r"before it confirmed payment\.requested"):
        await broker_with(ClosingExchange()).publish(requested("pay_closing"))


async def test_cancelling_a_publish_still_cancels_it() -> None:
    exchange = ClosingExchange()
    exchange.wait_forever = True
    task = asyncio.create_task(broker_with(exchange).publish(requested("pay_cancelled")))
    await asyncio.wait_for(exchange.entered.wait(), 5)
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


class IdleBroker:
    def __init__(self, consumer_tasks: tuple[asyncio.Task[None], ...] = ()) -> None:
        self.consumer_tasks = consumer_tasks

    async def is_ready(self) -> bool:
        return True


def app_with_failure_future() -> web.Application:
    app = create_base_app()
    app[runtime.SERVICE_FAILED] = asyncio.get_running_loop().create_future()
    return app


async def test_a_consumer_task_that_ends_stops_the_service() -> None:
    app = app_with_failure_future()

    async def consumer_loop() -> None:
        raise asyncio.CancelledError()  # a stray cancellation that ended a consumer loop

    consumer = asyncio.create_task(consumer_loop(), name="ledger batches")
    async with runtime.serving(app, [], cast(Broker, IdleBroker((consumer,)))):
        with pytest.raises(runtime.BackgroundTaskEnded, match="ledger batches ended: cancelled"):
            await asyncio.wait_for(app[runtime.SERVICE_FAILED], 5)


async def test_a_background_task_that_fails_stops_the_service_but_a_stop_does_not() -> None:
    app = app_with_failure_future()
    release = asyncio.Event()

    async def relay() -> None:
        await release.wait()
        raise RuntimeError("relay broke")

    async def gauge() -> None:
        await asyncio.Event().wait()

    async with runtime.serving(
        app, [asyncio.create_task(relay(), name="relay"), asyncio.create_task(gauge())], cast(Broker, IdleBroker())
    ):
        assert not app[runtime.SERVICE_FAILED].done()
        release.set()
        with pytest.raises(runtime.BackgroundTaskEnded, match="relay ended: RuntimeError"):
            await asyncio.wait_for(app[runtime.SERVICE_FAILED], 5)

    quiet = app_with_failure_future()
    async with runtime.serving(quiet, [asyncio.create_task(gauge())], cast(Broker, IdleBroker())):
        pass
    await asyncio.sleep(0)  # the cancelled task's done-callbacks have run
    assert not quiet[runtime.SERVICE_FAILED].done()
