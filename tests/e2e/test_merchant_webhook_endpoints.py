"""Merchant webhook endpoints end to end (issue 11, docs/reference/merchant-webhooks.md): a failing endpoint is
disabled and stops
receiving; a URL into a private network is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from tests.e2e.test_merchant_webhooks import call, holds, payment_events, register
from tests.support.client import IntakeClient, payment_body
from tests.support.infra import Servers
from tests.support.merchant_receiver import MerchantReceiver
from tests.support.own_stack import own_stack
from tests.support.problem_json import problem_of
from tests.support.processes import Stack, eventually


@pytest.fixture(scope="module")
async def failing_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """Endpoints are disabled after failing for 1 s; retries come every 0.3 s."""
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("disabling"),
        ("intake_api", "ledger", "notifier"),
        WEBHOOK_RETRY_SCHEDULE_SECONDS=",".join(["0"] + ["0.3"] * 15),
        WEBHOOK_DISABLE_AFTER_SECONDS="1",
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def guarded_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The intake API as in production: private addresses refused (the ledger and notifier deploy its tables)."""
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("guarded"),
        ("intake_api", "ledger", "notifier"),
        WEBHOOK_ALLOW_PRIVATE_URLS="false",
    ) as running:
        yield running


async def test_an_endpoint_failing_too_long_is_disabled_and_stops_receiving(
    failing_stack: Stack, http: aiohttp.ClientSession
) -> None:
    api = IntakeClient(http, failing_stack.url("intake_api"))
    dead, healthy = MerchantReceiver(answer=lambda event_id, nth: 500), MerchantReceiver()
    await dead.start()
    await healthy.start()
    dead_endpoint = await register(api, dead.url)
    healthy_endpoint = await register(api, healthy.url)

    _, first, _ = await api.create(payment_body(), wait=0)
    first_event = (await payment_events(api, first["id"], 1))[0]

    async def disabled() -> bool:
        _, endpoint = await call(api, "GET", f"/v1/webhook_endpoints/{dead_endpoint['id']}")
        return bool(endpoint["status"] == "disabled")

    await eventually(disabled, timeout=30, what="the failing endpoint disabled")
    _, endpoint = await call(api, "GET", f"/v1/webhook_endpoints/{dead_endpoint['id']}")
    assert endpoint["disabled_at"] is not None

    # The disabling is an event of its own, delivered to the endpoints that still work.
    async def disabled_event() -> list[dict[str, object]] | None:
        _, page = await call(api, "GET", "/v1/events?type=webhook_endpoint.disabled")
        return page["data"] or None

    (notice,) = await eventually(disabled_event, timeout=30, what="the webhook_endpoint.disabled event")
    assert notice["data"]["object"]["id"] == dead_endpoint["id"]  # type: ignore[index]
    await eventually(holds(lambda: healthy.delivered(str(notice["id"]))), timeout=30, what="the notice delivered")

    # A new payment reaches the healthy endpoint, and the disabled one not at all.
    seen_by_dead = len(dead.received)
    _, second, _ = await api.create(payment_body(), wait=0)
    second_event = (await payment_events(api, second["id"], 1))[0]
    await eventually(holds(lambda: healthy.delivered(second_event["id"])), timeout=30, what="healthy delivery")

    async def attempts_recorded() -> list[dict[str, object]] | None:  # recorded once the answer is in
        _, listed = await call(api, "GET", f"/v1/events/{second_event['id']}")
        return listed["deliveries"] or None

    deliveries = await eventually(attempts_recorded, timeout=30, what="the attempt recorded")
    assert {d["endpoint_id"] for d in deliveries} == {healthy_endpoint["id"]}
    assert dead.requests_for(second_event["id"]) == []
    assert dead.requests_for(str(notice["id"])) == []
    assert len(dead.received) == seen_by_dead
    assert dead.requests_for(first_event["id"]) and healthy.delivered(first_event["id"])
    await dead.stop()
    await healthy.stop()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hooks",
        "http://192.168.1.20/hooks",
        "http://[::1]/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://0.0.0.0/hooks",
    ],
)
async def test_a_url_into_a_private_network_is_refused(
    guarded_stack: Stack, http: aiohttp.ClientSession, url: str
) -> None:
    api = IntakeClient(http, guarded_stack.url("intake_api"))
    async with http.post(f"{api.base_url}/v1/webhook_endpoints", json={"url": url}, headers=api.headers()) as answer:
        problem = await problem_of(answer, 422, "url-not-allowed")
        assert problem["errors"][0]["field"] == "url"
    _, listed = await call(api, "GET", "/v1/webhook_endpoints")
    assert all(e["url"] != url for e in listed["data"])


@pytest.mark.parametrize("url", ["ftp://shop.example/hooks", "file:///etc/passwd", "gopher://shop.example/"])
async def test_a_url_that_is_not_http_is_refused(guarded_stack: Stack, http: aiohttp.ClientSession, url: str) -> None:
    api = IntakeClient(http, guarded_stack.url("intake_api"))
    async with http.post(f"{api.base_url}/v1/webhook_endpoints", json={"url": url}, headers=api.headers()) as answer:
        await problem_of(answer, 422)


async def test_64_concurrent_registrations_leave_exactly_the_cap_of_20(guarded_stack: Stack) -> None:
    """Issue 24 §6: 64 at once from zero (the cap is counted under a per-merchant lock, not by each alone)."""
    url = f"{guarded_stack.url('intake_api')}/v1/webhook_endpoints"
    pool = await asyncpg.create_pool(guarded_stack.env["DATABASE_URL"], min_size=1, max_size=1)
    live = "SELECT count(*) FROM notifier.webhook_endpoints WHERE merchant_id = 'other' AND deleted_at IS NULL"
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk_test_other"}) as http:
            assert await pool.fetchval(live) == 0

            async def register(n: int) -> int:
                # A public address that needs no DNS; nothing is ever delivered (no event for this merchant).
                async with http.post(url, json={"url": f"https://93.184.216.34/hooks/{n}"}) as response:
                    answer = await response.text()
                    assert response.status in (201, 409), answer
                    return response.status

            statuses = await asyncio.gather(*(register(n) for n in range(64)))
        assert (statuses.count(201), statuses.count(409)) == (20, 44)
        assert await pool.fetchval(live) == 20
    finally:
        await pool.execute("UPDATE notifier.webhook_endpoints SET deleted_at = now() WHERE merchant_id = 'other'")
        await pool.close()
