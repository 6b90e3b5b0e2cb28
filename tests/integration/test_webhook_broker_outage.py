"""The webhook receiver, run as a process, while its broker is cut off: 503 (so the gateway retries), never a
200 for an event the broker does not hold; once the broker is back, the retried webhook is accepted, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import pytest

from shared.events import Envelope
from tests.support.brokers import take_all
from tests.support.link_proxy import LinkProxy
from tests.support.processes import ServiceProcess, eventually, stack_environment
from tests.support.sandbox_webhooks import encode, sandbox_event, signed

SECRET = "whsec_outage"


@pytest.fixture
async def broker_link(amqp_url: str) -> AsyncIterator[LinkProxy]:
    parts = urlsplit(amqp_url)
    proxy = LinkProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def receiver(
    broker_link: LinkProxy, amqp_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[ServiceProcess]:
    """The webhook_receiver process, reaching RabbitMQ only through the proxy (reconnecting every 0.5 s)."""
    parts = urlsplit(amqp_url)
    proxied = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{broker_link.port}/?reconnect_interval=0.5"
    env = stack_environment(
        "postgresql://postgres@127.0.0.1:5432/unused", proxied, namespace, SANDBOX_WEBHOOK_SECRET=SECRET
    )
    process = ServiceProcess("webhook_receiver", env, tmp_path)
    process.start()
    try:
        await process.wait_ready()
        yield process
    finally:
        process.stop()


async def ledger_queue_messages(amqp_url: str, namespace: str) -> list[Envelope]:
    connection = await aio_pika.connect(amqp_url)
    try:
        return [Envelope.from_bytes(message.body) for message in await take_all(connection, f"{namespace}.ledger")]
    finally:
        await connection.close()


async def test_a_webhook_gets_503_while_the_broker_is_cut_and_200_on_retry_once_it_is_back(
    receiver: ServiceProcess, broker_link: LinkProxy, amqp_url: str, namespace: str
) -> None:
    body = encode(sandbox_event("pay_outage", event_id="evt_outage"))
    async with aiohttp.ClientSession() as http:

        async def deliver() -> tuple[int, dict[str, str], dict]:
            async with http.post(f"{receiver.url}/webhooks/sandbox", data=body, headers=signed(body, SECRET)) as r:
                return r.status, dict(r.headers), await r.json(content_type=None)

        async def not_ready() -> bool:
            async with http.get(f"{receiver.url}/readyz") as r:
                return r.status == 503

        broker_link.cut()
        await eventually(not_ready, timeout=10, what="the receiver to notice the broker is gone")
        status, headers, problem = await deliver()

        assert status == 503, problem
        assert problem["type"].endswith("broker-unavailable")
        assert "Retry-After" in headers

        broker_link.restore()

        async def accepted() -> dict | None:
            status, _, answer = await deliver()  # the gateway's retry
            return answer if status == 200 else None

        answer = await eventually(accepted, timeout=20, interval=0.3, what="the retried webhook accepted")

    published = await ledger_queue_messages(amqp_url, namespace)
    assert [str(e.id) for e in published] == [answer["event_id"]]
    assert published[0].payment_id == "pay_outage"
