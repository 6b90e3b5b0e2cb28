"""The gateway_worker against a misbehaving sandbox: failing creates, and a crash between the call and the ack.

The stack has no webhook_receiver or storefront (these tests stop at the checkout URL) and a larger retry
budget than the default, so that a 30 % error rate cannot exhaust it by chance (0.3^10 per payment).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.client import IntakeClient
from tests.support.infra import Servers
from tests.support.own_stack import own_stack
from tests.support.processes import Stack, eventually

BATCH = 10


@pytest.fixture(scope="module")
async def faulty_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("gateway_faults"),
        ("intake_api", "gateway_worker", "ledger", "sandbox_gateway"),
        GATEWAY_MAX_ATTEMPTS="10",
        GATEWAY_RETRY_BASE_SECONDS="0.2",
    ) as stack:
        yield stack


@pytest.fixture
async def http(faulty_stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
        # Whatever a test injected stops with it.
        async with session.delete(
            f"{faulty_stack.url('sandbox_gateway')}/_sandbox/faults", headers=faulty_stack.sandbox_admin_headers
        ) as response:
            assert response.status == 200


@pytest.fixture
def intake(faulty_stack: Stack, http: aiohttp.ClientSession) -> IntakeClient:
    return IntakeClient(http, faulty_stack.url("intake_api"))


async def set_faults(http: aiohttp.ClientSession, stack: Stack, **faults: Any) -> None:
    async with http.post(
        f"{stack.url('sandbox_gateway')}/_sandbox/faults", json=faults, headers=stack.sandbox_admin_headers
    ) as response:
        assert response.status == 200, await response.text()


async def intents_of(http: aiohttp.ClientSession, stack: Stack, payment_id: str) -> list[dict[str, Any]]:
    async with http.get(f"{stack.url('sandbox_gateway')}/v1/intents", params={"payment_id": payment_id}) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["data"]


def intent_created_logged(log_text: str, payment_id: str) -> bool:
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "intent created" and entry.get("payment_id") == payment_id:
            return True
    return False


async def test_with_a_30_percent_create_error_rate_every_payment_of_a_batch_gets_its_checkout_url(
    faulty_stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, faulty_stack, create_intent_error_rate=0.3)

    created = await asyncio.gather(*(intake.create(wait=0) for _ in range(BATCH)))
    assert [status for status, _, _ in created] == [201] * BATCH
    ids = [payment["id"] for _, payment, _ in created]
    urls = await asyncio.gather(*(intake.checkout_url(payment_id, timeout=60) for payment_id in ids))

    # Failures after storing were retried onto the stored intent: one intent per payment, the one we show.
    for payment_id, url in zip(ids, urls, strict=True):
        assert [i["checkout_url"] for i in await intents_of(http, faulty_stack, payment_id)] == [url]


async def test_a_gateway_worker_killed_between_the_provider_call_and_the_ack_leaves_one_intent(
    faulty_stack: Stack, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    # The sandbox stores the intent, then holds its answer: the worker is killed while it waits.
    await set_faults(http, faulty_stack, create_intent_delay_seconds=3)
    worker = faulty_stack["gateway_worker"]
    status, payment, _ = await intake.create(wait=0)
    assert status == 201, payment

    await eventually(lambda: intents_of(http, faulty_stack, payment["id"]), what="the intent stored at the sandbox")
    worker.kill()
    assert not intent_created_logged(worker.log_text(), payment["id"]), "the worker got its answer before the kill"
    assert (await intake.get(payment["id"]))["checkout_url"] is None

    async with http.delete(
        f"{faulty_stack.url('sandbox_gateway')}/_sandbox/faults", headers=faulty_stack.sandbox_admin_headers
    ) as response:
        assert response.status == 200
    worker.start()
    await worker.wait_ready()
    checkout_url = await intake.checkout_url(payment["id"])

    assert [i["checkout_url"] for i in await intents_of(http, faulty_stack, payment["id"])] == [checkout_url]
