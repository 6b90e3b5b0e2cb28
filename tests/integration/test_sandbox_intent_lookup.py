"""The sandbox's intents listed by payment id, and the fault that holds back the answer to a create."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.sandbox_gateway.app import create_app
from services.sandbox_gateway.settings import SandboxGatewaySettings
from shared.events import PaymentStatus
from shared.providers.base import ProviderIntent
from shared.providers.sandbox import SandboxProvider

ADMIN_TOKEN = "sandbox-admin-test-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def sandbox() -> AsyncIterator[TestClient]:
    settings = SandboxGatewaySettings(
        _env_file=None,  # type: ignore[call-arg]
        sandbox_webhook_url="http://127.0.0.1:9/webhooks/sandbox",
        sandbox_admin_token=ADMIN_TOKEN,
    )
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    yield client
    await client.close()


def intent_body(payment_id: str) -> dict[str, Any]:
    return {
        "amount": 1999,
        "currency": "USD",
        "reference": "order-42",
        "return_url": "https://shop.example/orders/42",
        "expires_at": int(time.time()) + 600,
        "metadata": {"payment_id": payment_id},
    }


async def create(sandbox: TestClient, payment_id: str, key: str | None = None) -> dict[str, Any]:
    response = await sandbox.post(
        "/v1/intents", json=intent_body(payment_id), headers={"Idempotency-Key": key or payment_id}
    )
    assert response.status in (200, 201), await response.text()
    return await response.json()


async def listed(sandbox: TestClient, payment_id: str) -> list[dict[str, Any]]:
    response = await sandbox.get("/v1/intents", params={"payment_id": payment_id})
    assert response.status == 200, await response.text()
    return (await response.json())["data"]


async def test_the_intents_of_a_payment_are_listed_by_its_id(sandbox: TestClient) -> None:
    payment_id = f"pay_{uuid.uuid4().hex}"
    intent = await create(sandbox, payment_id)
    await create(sandbox, f"pay_{uuid.uuid4().hex}")

    assert [i["id"] for i in await listed(sandbox, payment_id)] == [intent["id"]]


async def test_a_create_repeated_with_the_same_key_lists_one_intent(sandbox: TestClient) -> None:
    payment_id = f"pay_{uuid.uuid4().hex}"
    await create(sandbox, payment_id)
    await create(sandbox, payment_id)

    assert len(await listed(sandbox, payment_id)) == 1


async def test_a_payment_without_intents_lists_none(sandbox: TestClient) -> None:
    assert await listed(sandbox, "pay_unknown") == []


async def test_listing_without_a_payment_id_is_a_400_problem(sandbox: TestClient) -> None:
    response = await sandbox.get("/v1/intents")
    assert response.status == 400
    assert response.content_type == "application/problem+json"


async def test_the_create_delay_fault_stores_the_intent_before_answering(sandbox: TestClient) -> None:
    await sandbox.post("/_sandbox/faults", json={"create_intent_delay_seconds": 30}, headers=ADMIN)
    payment_id = f"pay_{uuid.uuid4().hex}"
    answer = asyncio.create_task(create(sandbox, payment_id))
    try:
        while not await listed(sandbox, payment_id):
            assert not answer.done(), "the create answered before the intent was listed"
            await asyncio.sleep(0.02)
        assert not answer.done()
    finally:
        answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)


async def test_a_negative_create_delay_is_a_422_problem(sandbox: TestClient) -> None:
    response = await sandbox.post("/_sandbox/faults", json={"create_intent_delay_seconds": -1}, headers=ADMIN)
    assert response.status == 422


async def find(sandbox: TestClient, payment_id: str) -> ProviderIntent | None:
    provider = SandboxProvider(str(sandbox.make_url("")).rstrip("/"), ["whsec_x"])
    try:
        return await provider.find_intent(payment_id)
    finally:
        await provider.close()


async def test_the_sandbox_provider_finds_the_intent_of_a_payment(sandbox: TestClient) -> None:
    payment_id = f"pay_{uuid.uuid4().hex}"
    intent = await create(sandbox, payment_id)

    found = await find(sandbox, payment_id)

    assert found is not None
    assert (found.provider_payment_id, found.status, found.checkout_url) == (
        intent["id"],
        PaymentStatus.PENDING,
        intent["checkout_url"],
    )


async def test_the_sandbox_provider_finds_no_intent_for_an_unknown_payment(sandbox: TestClient) -> None:
    assert await find(sandbox, "pay_unknown") is None
