"""The intake while RabbitMQ is cut off from it (by a proxy), as real processes: POSTs still answer 201, every
payment accepted meanwhile reaches the ledger once the broker is back, even across a crash
(docs/reference/intake-api.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.client import payment_body
from tests.support.infra import Servers
from tests.support.intake_deployment import Deployment, deployment, proxy_to, through
from tests.support.link_proxy import LinkProxy
from tests.support.processes import eventually


@pytest.fixture(scope="module")
async def broker_link(servers: Servers) -> AsyncIterator[LinkProxy]:
    async with proxy_to(servers.amqp_url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
async def behind_broker_link(
    servers: Servers, broker_link: LinkProxy, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    """The intake reaches RabbitMQ only through `broker_link` (reconnecting every 0.5 s); the others directly."""
    amqp = through(servers.amqp_url, broker_link, query="reconnect_interval=0.5")
    services = {
        "intake_api": ("intake_api", {"AMQP_URL": amqp}),
        "ledger": ("ledger", {}),
        "gateway_worker": ("gateway_worker", {}),
        "sandbox_gateway": ("sandbox_gateway", {}),
    }
    async with deployment(servers, tmp_path_factory.mktemp("broker_cut"), services) as running:
        yield running


@pytest.fixture
async def broker_cut(broker_link: LinkProxy, behind_broker_link: Deployment) -> AsyncIterator[LinkProxy]:
    """The broker cut off from the intake, and the intake aware of it; restored after the test whatever happens."""
    broker_link.cut()

    async def intake_sees_it() -> bool:
        return await behind_broker_link.readiness() == 503

    try:
        await eventually(intake_sees_it, what="the intake to notice the broker is gone")
        yield broker_link
    finally:
        broker_link.restore()


async def ready_again(running: Deployment) -> None:
    async def ready() -> bool:
        return await running.readiness() == 200

    await eventually(ready, timeout=30, what="the intake's /readyz to answer 200 again")


async def accept(running: Deployment, http: aiohttp.ClientSession, count: int) -> list[str]:
    """POST `count` payments at once, not waiting for their intents; every one must answer 201: their ids."""
    intake = running.client(http)
    answers = await asyncio.gather(*(intake.create(wait=0) for _ in range(count)))
    assert [status for status, _, _ in answers] == [201] * count
    return [payment["id"] for _, payment, _ in answers]


async def test_posts_answer_201_while_the_broker_is_unreachable_and_all_reach_the_ledger_once_it_is_back(
    behind_broker_link: Deployment, broker_cut: LinkProxy, http_session: aiohttp.ClientSession
) -> None:
    payment_ids = await accept(behind_broker_link, http_session, 10)

    assert await behind_broker_link.in_ledger(payment_ids) == 0  # nothing could leave the intake

    broker_cut.restore()

    async def all_in_ledger() -> bool:
        return await behind_broker_link.in_ledger(payment_ids) == len(payment_ids)

    await eventually(all_in_ledger, timeout=30, what="every payment accepted during the outage in the ledger")
    unsent = "SELECT count(*) FROM intake.outbox WHERE payment_id = ANY($1::text[]) AND published_at IS NULL"
    assert await behind_broker_link.pool.fetchval(unsent, payment_ids) == 0


async def test_the_outbox_backlog_gauge_counts_what_waits_while_the_broker_is_cut(
    behind_broker_link: Deployment, broker_cut: LinkProxy, http_session: aiohttp.ClientSession
) -> None:
    await accept(behind_broker_link, http_session, 3)

    async def backlog() -> float | None:
        async with http_session.get(f"{behind_broker_link.processes['intake_api'].url}/metrics") as response:
            text = await response.text()
        value = next(
            float(line.split()[1]) for line in text.splitlines() if line.startswith("paystream_outbox_pending ")
        )
        return value if value >= 3 else None

    # The gauge an SRE's OutboxBacklogGrowing alert reads must move during the outage, not only after it.
    assert await eventually(backlog, timeout=15, interval=0.5, what="paystream_outbox_pending to reach 3") >= 3


async def test_a_read_before_the_ledger_has_the_payment_answers_from_the_intakes_record(
    behind_broker_link: Deployment, broker_cut: LinkProxy, http_session: aiohttp.ClientSession
) -> None:
    intake = behind_broker_link.client(http_session)
    body = payment_body()
    _, created, _ = await intake.create(body, wait=0)

    payment = await intake.get(created["id"])

    assert await behind_broker_link.in_ledger([created["id"]]) == 0
    assert payment["id"] == created["id"] and payment["status"] == "PENDING" and payment["checkout_url"] is None
    assert {k: payment[k] for k in body} == body


async def test_a_payment_accepted_just_before_the_intake_crashes_reaches_the_ledger_after_a_restart(
    behind_broker_link: Deployment, broker_cut: LinkProxy, http_session: aiohttp.ClientSession
) -> None:
    intake_process = behind_broker_link.processes["intake_api"]
    status, created, _ = await behind_broker_link.client(http_session).create(wait=0)
    assert status == 201

    intake_process.kill()  # SIGKILL: nothing runs after the 201 but what was committed before it
    broker_cut.restore()
    intake_process.start()
    await intake_process.wait_ready()

    async def in_ledger() -> bool:
        return await behind_broker_link.in_ledger([created["id"]]) == 1

    await eventually(in_ledger, timeout=30, what="the payment accepted before the crash in the ledger")


async def test_the_intake_is_ready_again_by_itself_once_the_broker_is_back(
    behind_broker_link: Deployment, broker_cut: LinkProxy
) -> None:
    broker_cut.restore()

    await ready_again(behind_broker_link)


async def test_prefer_wait_hands_back_the_checkout_url_again_once_the_broker_is_back(
    behind_broker_link: Deployment, broker_cut: LinkProxy, http_session: aiohttp.ClientSession
) -> None:
    broker_cut.restore()
    await ready_again(behind_broker_link)

    status, payment, _ = await behind_broker_link.client(http_session).create(wait=10)

    # The intake's own queue of intent outcomes came back with the connection.
    assert status == 201 and payment["checkout_url"] is not None
