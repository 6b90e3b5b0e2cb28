"""One supervisor for every long-running loop (shared/supervisor.py): each loop of the services, given a stray
CancelledError mid-call (what aiormq raises when it closes a channel or connection under an operation, though
nobody cancelled the task), goes on; a real stop ends it quietly; only a loop that cannot continue stops the
service. The batch consumer's own case is in tests/unit/test_batches.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from services.intake_api.outbox import OutboxRelay
from services.sandbox_gateway.app import create_app as create_sandbox
from services.sandbox_gateway.gateway import GATEWAY
from services.sandbox_gateway.settings import SandboxGatewaySettings
from services.storefront.intake import IntakeClient, IntakeError
from services.storefront.paystream_webhooks import ShopWebhook
from shared import runtime
from shared.broker import Broker
from shared.metrics import DLQ_MESSAGES
from shared.supervisor import Backoff, LoopCannotContinue, LoopEnded, Supervisor
from shared.web import create_base_app

QUICK = Backoff(initial=0.01, maximum=0.05)


def restarts(loop: str) -> float:
    return REGISTRY.get_sample_value("paystream_loop_restarts_total", {"loop": loop}) or 0.0


class StrayOnce:
    """A call that raises a stray CancelledError the first time (mid-call, after an await), then answers."""

    def __init__(self, answer: object = None) -> None:
        self.calls = 0
        self.answer = answer
        self.again = asyncio.Event()

    async def __call__(self, *args: object, **kwargs: object) -> Any:
        self.calls += 1
        await asyncio.sleep(0)
        if self.calls == 1:
            raise asyncio.CancelledError()  # as aiormq fails a closed channel's futures
        self.again.set()
        return self.answer


async def goes_on(supervisor: Supervisor, task: asyncio.Task[None], call: StrayOnce) -> None:
    """`call` was made again after its stray CancelledError, and the loop is still running."""
    await asyncio.wait_for(call.again.wait(), 5)
    assert not task.done()
    assert not supervisor.failed.done()


async def test_a_periodic_loop_goes_on_after_a_stray_cancellation() -> None:
    supervisor = Supervisor(backoff=QUICK)
    sweep = StrayOnce()
    before = restarts("unit expiry sweep")
    task = supervisor.every("unit expiry sweep", 0.01, sweep)
    try:
        await goes_on(supervisor, task, sweep)
        assert restarts("unit expiry sweep") == before + 1
    finally:
        await supervisor.stop()


async def test_a_failed_loop_is_restarted_with_a_growing_backoff() -> None:
    supervisor = Supervisor(backoff=Backoff(initial=0.05, maximum=0.2))
    started: list[float] = []
    fourth = asyncio.Event()

    async def failing() -> None:
        started.append(asyncio.get_running_loop().time())
        if len(started) == 4:
            fourth.set()
        raise ConnectionError("connection lost")

    supervisor.start("unit failing", failing)
    try:
        await asyncio.wait_for(fourth.wait(), 5)
    finally:
        await supervisor.stop()
    waits = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert waits[0] >= 0.05 and waits[1] >= 0.1 and waits[2] >= 0.2, waits
    assert not supervisor.failed.done()


async def test_a_stop_ends_every_loop_without_a_restart_or_a_failure() -> None:
    supervisor = Supervisor(backoff=QUICK)
    entered = asyncio.Event()

    async def waits_forever() -> None:
        entered.set()
        await asyncio.Event().wait()

    before = restarts("unit waiting")
    task = supervisor.start("unit waiting", waits_forever)
    await asyncio.wait_for(entered.wait(), 5)
    await supervisor.stop()
    assert task.cancelled()
    assert restarts("unit waiting") == before
    assert not supervisor.failed.done()


@pytest.mark.parametrize(
    ("loop", "reason"),
    [
        ("returns", "returned"),
        ("cannot", "cannot continue: the schema changed"),
        ("refused", "cannot continue: PermissionError"),
    ],
)
async def test_a_loop_that_cannot_continue_fails_the_supervisor(loop: str, reason: str) -> None:
    async def returns() -> None:
        return None

    async def cannot() -> None:
        raise LoopCannotContinue("the schema changed")

    async def refused() -> None:
        raise PermissionError("ACCESS_REFUSED")

    loops: dict[str, Callable[[], Awaitable[None]]] = {"returns": returns, "cannot": cannot, "refused": refused}
    supervisor = Supervisor(backoff=QUICK, unrecoverable=lambda exc: isinstance(exc, PermissionError))
    supervisor.start(f"unit {loop}", loops[loop])
    with pytest.raises(LoopEnded, match=reason):
        await asyncio.wait_for(asyncio.shield(supervisor.failed), 5)
    await supervisor.stop()


async def test_a_periodic_round_that_hangs_past_its_timeout_restarts_the_loop() -> None:
    supervisor = Supervisor(backoff=QUICK)
    calls = 0
    again = asyncio.Event()

    async def silent_connection() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()  # a read on a connection nobody answers any more
        again.set()

    supervisor.every("unit silent", 0.01, silent_connection, timeout=0.05)
    try:
        await asyncio.wait_for(again.wait(), 5)
    finally:
        await supervisor.stop()


def a_broker(supervisor: Supervisor) -> Broker:
    return Broker("amqp://guest:guest@127.0.0.1:5672/", "unit", name="unit", supervisor=supervisor)


async def test_the_dlq_watch_goes_on_after_a_stray_cancellation(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = a_broker(Supervisor(backoff=QUICK))
    depth = StrayOnce(answer=3)
    monkeypatch.setattr(broker, "dlq_depth", depth)
    task = broker.watch_dlq("ledger", interval=0.01)
    try:
        await goes_on(broker.supervisor, task, depth)
        await asyncio.sleep(0.01)
        assert REGISTRY.get_sample_value("paystream_dlq_messages", {"queue": "unit.ledger.dlq"}) == 3
    finally:
        await broker.supervisor.stop()
        DLQ_MESSAGES.remove("unit.ledger.dlq")


def a_relay() -> OutboxRelay:
    async def publish(*args: object, **kwargs: object) -> None:
        return None

    async def connect() -> asyncpg.Connection:
        raise AssertionError("not used")

    return OutboxRelay(cast(asyncpg.Pool, object()), publish, connect=connect, poll_interval=0.01)


async def test_the_outbox_relay_goes_on_after_a_stray_cancellation(monkeypatch: pytest.MonkeyPatch) -> None:
    relay = a_relay()
    publish_batch = StrayOnce(answer=0)
    monkeypatch.setattr(relay, "publish_batch", publish_batch)
    supervisor = Supervisor(backoff=QUICK)
    task = supervisor.start("unit outbox relay", relay.run)
    try:
        await goes_on(supervisor, task, publish_batch)
    finally:
        await supervisor.stop()


async def test_the_outbox_listener_goes_on_after_a_stray_cancellation(monkeypatch: pytest.MonkeyPatch) -> None:
    relay = a_relay()
    connect = StrayOnce()

    async def connected() -> asyncpg.Connection:
        await connect()
        await asyncio.Event().wait()  # then holds its connection
        raise AssertionError("unreachable")

    monkeypatch.setattr(relay, "_connect", connected)
    supervisor = Supervisor(backoff=QUICK)
    task = supervisor.start("unit outbox listener", relay.listen)
    try:
        await goes_on(supervisor, task, connect)
    finally:
        await supervisor.stop()


async def test_the_sandbox_expiry_sweep_goes_on_after_a_stray_cancellation() -> None:
    app = create_sandbox(SandboxGatewaySettings(sandbox_webhook_url="http://127.0.0.1:9/webhooks/sandbox"))
    sweep = StrayOnce(answer=0)
    expire_due = app[GATEWAY].expire_due

    def expire_stray_once() -> int:
        sweep.calls += 1
        if sweep.calls == 1:
            raise asyncio.CancelledError()
        sweep.again.set()
        return expire_due()

    cast(Any, app[GATEWAY]).expire_due = expire_stray_once
    app[runtime.SERVICE_FAILED] = asyncio.get_running_loop().create_future()
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await asyncio.wait_for(sweep.again.wait(), 10)
        assert not app[runtime.SERVICE_FAILED].done()
    finally:
        await runner.cleanup()


class IdleBroker:
    def __init__(self) -> None:
        self.supervisor = Supervisor(backoff=QUICK)

    async def is_ready(self) -> bool:
        return True


def app_with_failure_future() -> web.Application:
    app = create_base_app()
    app[runtime.SERVICE_FAILED] = asyncio.get_running_loop().create_future()
    return app


async def test_a_loop_that_ends_for_good_stops_the_service_and_a_stop_does_not() -> None:
    app = app_with_failure_future()
    broker = IdleBroker()

    async def relay() -> None:
        return None  # a loop meant to run as long as the service, ended

    async with runtime.serving(app, cast(Broker, broker)):
        broker.supervisor.start("relay", relay)
        with pytest.raises(runtime.BackgroundTaskEnded, match="loop relay returned"):
            await asyncio.wait_for(app[runtime.SERVICE_FAILED], 5)

    quiet = app_with_failure_future()
    broker = IdleBroker()
    async with runtime.serving(quiet, cast(Broker, broker)):
        broker.supervisor.every("gauge", 0.01, StrayOnce())
        await asyncio.sleep(0.05)
    await asyncio.sleep(0)
    assert not quiet[runtime.SERVICE_FAILED].done()


class FlakyIntake:
    """An intake API whose registration first meets a stray CancelledError, then is unavailable, then answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def register_webhook_endpoint(self, url: str, events: list[str]) -> str:
        self.calls += 1
        await asyncio.sleep(0)
        if self.calls == 1:
            raise asyncio.CancelledError()
        if self.calls == 2:
            raise IntakeError("the intake API is unavailable")
        return "whsec_" + "A" * 32


async def test_the_storefronts_webhook_registration_goes_on_until_it_is_made_then_ends_quietly() -> None:
    webhook = ShopWebhook()
    intake = FlakyIntake()
    supervisor = Supervisor(backoff=QUICK)
    task = supervisor.start(
        "unit webhook registration",
        lambda: webhook.register(cast(IntakeClient, intake), "http://shop.test/hooks"),
        until_done=True,
    )
    await asyncio.wait_for(task, 5)
    assert (intake.calls, webhook.ready, webhook.refused) == (3, True, False)
    assert not supervisor.failed.done()
    await supervisor.stop()
