"""The sandbox keeps its intents and its webhook schedule across restarts (SANDBOX_DATA_DIR), as a real provider
does: a sandbox started again on the same folder answers for every intent as it stood, under the same
Idempotency-Key, and delivers the webhooks the last one had not delivered yet."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.sandbox_gateway.app import create_app
from services.sandbox_gateway.intents import IntentDraft, IntentStatus, IntentStore
from services.sandbox_gateway.settings import SandboxGatewaySettings
from services.sandbox_gateway.storage import SandboxStorage
from tests.support.processes import eventually

ADMIN = {"Authorization": "Bearer sandbox-admin-persistence"}


def settings(data_dir: Path, webhook_url: str) -> SandboxGatewaySettings:
    return SandboxGatewaySettings(  # type: ignore[call-arg]
        _env_file=None,
        sandbox_data_dir=str(data_dir),
        sandbox_webhook_url=webhook_url,
        sandbox_webhook_retry_base_seconds=0.05,
        sandbox_admin_token="sandbox-admin-persistence",
    )


def draft(payment_id: str) -> IntentDraft:
    return IntentDraft(1999, "USD", "order-1", "https://shop.example/done", metadata={"payment_id": payment_id})


def test_every_change_of_an_intent_is_read_back_by_the_next_store(tmp_path: Path) -> None:
    first = IntentStore("http://sandbox.test", storage=SandboxStorage(tmp_path))
    paid, _ = first.open(draft("pay_paid"), "key-paid")
    canceled, _ = first.open(draft("pay_canceled"), "key-canceled")
    first.settle(paid.id, last4="4242", failure_code=None)
    first.close(canceled.id, "canceled")

    again = IntentStore("http://sandbox.test", storage=SandboxStorage(tmp_path))

    assert again.get(paid.id) == first.get(paid.id)
    assert (again.get(paid.id).status, again.get(paid.id).last4) == (IntentStatus.SUCCEEDED, "4242")
    assert again.get(canceled.id).status is IntentStatus.CANCELED
    assert [intent.id for intent in again.for_payment("pay_canceled")] == [canceled.id]
    # The same key answers the same intent, not a new one.
    assert again.open(draft("pay_paid"), "key-paid") == (again.get(paid.id), False)


def test_an_open_intent_read_back_is_expired_by_the_next_stores_sweep(tmp_path: Path) -> None:
    clock = {"now": 1_800_000_000.0}
    first = IntentStore("http://sandbox.test", clock=lambda: clock["now"], storage=SandboxStorage(tmp_path))
    open_one, _ = first.open(draft("pay_open"), "key-open")
    paid, _ = first.open(draft("pay_paid"), "key-paid")
    first.settle(paid.id, last4="4242", failure_code=None)

    again = IntentStore("http://sandbox.test", clock=lambda: clock["now"], storage=SandboxStorage(tmp_path))
    clock["now"] += IntentStore.DEFAULT_LIFETIME_SECONDS

    assert [intent.id for intent in again.expire_due()] == [open_one.id]
    assert again.get(open_one.id).status is IntentStatus.EXPIRED
    assert again.get(paid.id).status is IntentStatus.SUCCEEDED


async def test_webhooks_not_yet_delivered_are_delivered_after_a_restart(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []
    accepting = False

    async def receive(request: web.Request) -> web.Response:
        if not accepting:
            return web.Response(status=503)  # the receiver is down: the sandbox keeps retrying
        received.append(json.loads(await request.read()))
        return web.Response(status=200)

    receiver_app = web.Application()
    receiver_app.router.add_post("/webhooks/sandbox", receive)
    receiver = TestServer(receiver_app)
    await receiver.start_server()
    url = str(receiver.make_url("/webhooks/sandbox"))
    try:
        sandbox = TestClient(TestServer(create_app(settings(tmp_path, url))))
        await sandbox.start_server()
        try:
            response = await sandbox.post(
                "/v1/intents",
                json={"amount": 500, "currency": "EUR", "reference": "o-7", "return_url": "https://shop.example/r"},
                headers={"Idempotency-Key": "pay_restart"},
            )
            intent = await response.json()
            assert (await sandbox.post(f"/v1/intents/{intent['id']}/cancel", json={})).status == 200
            await asyncio.sleep(0.2)  # a few refused attempts
        finally:
            await sandbox.close()
        assert received == []

        accepting = True
        restarted = TestClient(TestServer(create_app(settings(tmp_path, url))))
        await restarted.start_server()
        try:
            kept = await (await restarted.get(f"/v1/intents/{intent['id']}")).json()
            assert kept["status"] == "canceled"

            async def delivered() -> bool:
                return len(received) == 1

            await eventually(delivered, timeout=10, what="the kept webhook delivered after the restart")
            [event] = received
            assert (event["type"], event["data"]["object"]["id"]) == ("payment.canceled", intent["id"])
            await asyncio.sleep(0.3)
            assert len(received) == 1  # delivered once: its record went with the delivery
        finally:
            await restarted.close()
        assert list(SandboxStorage(tmp_path).all("webhook")) == []
    finally:
        await receiver.close()
