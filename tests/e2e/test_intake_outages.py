"""The intake through outages, as real processes: the broker or the database cut off by a proxy, a crash, two
intake processes sharing one outbox (CONTRACT §3: durable acceptance, 503 with Retry-After, recovery by itself)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from shared.db import create_pool
from tests.support.client import IntakeClient, payment_body
from tests.support.infra import Servers, create_database, delete_namespace, drop_database, unique_name
from tests.support.link_proxy import LinkProxy
from tests.support.problem_json import problem_of
from tests.support.processes import ServiceProcess, free_port, stack_environment, eventually


def through(url: str, proxy: LinkProxy, query: str = "") -> str:
    """`url` with its host and port replaced by the proxy's (credentials, path kept)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query or parts.query, parts.fragment))


async def proxy_to(url: str) -> LinkProxy:
    parts = urlsplit(url)
    proxy = LinkProxy(parts.hostname or "127.0.0.1", parts.port or 0)
    await proxy.start()
    return proxy


@dataclass
class Deployment:
    """Service processes on their own database and namespace; `pool` reads that database directly."""

    env: dict[str, str]
    processes: dict[str, ServiceProcess]
    pool: asyncpg.Pool

    def client(self, http: aiohttp.ClientSession, name: str = "intake_api") -> IntakeClient:
        return IntakeClient(http, self.processes[name].url)

    async def in_ledger(self, payment_ids: list[str]) -> int:
        return int(await self.pool.fetchval(
            "SELECT count(*) FROM ledger.payment_requests WHERE id = ANY($1::text[])", payment_ids
        ))

    async def ready(self, name: str = "intake_api") -> int:
        async with aiohttp.ClientSession() as session, session.get(f"{self.processes[name].url}/readyz") as r:
            return r.status


@pytest.fixture(scope="module")
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def deploy(
    servers: Servers, log_dir: Path, processes: dict[str, tuple[str, dict[str, str]]]
) -> AsyncIterator[Deployment]:
    """Start `processes` ({label: (service, env overrides)}) on a fresh database and namespace; clean up after."""
    database_url = await create_database(servers.database_url, migrations=())
    namespace = unique_name("psintake")
    env = stack_environment(database_url, servers.amqp_url, namespace)
    started: dict[str, ServiceProcess] = {}
    pool = None
    try:
        for label, (service, overrides) in processes.items():
            process = ServiceProcess(service, {**env, **overrides}, log_dir / label)
            process.log_path.parent.mkdir(parents=True, exist_ok=True)
            process.start()
            started[label] = process
        await asyncio.gather(*(process.wait_ready() for process in started.values()))
        pool = await create_pool(database_url, max_size=3)
        yield Deployment(env, started, pool)
    finally:
        for process in started.values():
            try:
                process.stop()
            except AssertionError:
                process.kill()
        if pool is not None:
            await asyncio.wait_for(pool.close(), 10)
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(database_url)


# --- the broker cut off from the intake -----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def broker_link(servers: Servers) -> AsyncIterator[LinkProxy]:
    proxy = await proxy_to(servers.amqp_url)
    yield proxy
    await proxy.stop()


@pytest.fixture(scope="module")
async def behind_broker_link(
    servers: Servers, broker_link: LinkProxy, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    """The intake reaches RabbitMQ only through `broker_link` (reconnecting every 0.5 s); the ledger directly."""
    amqp = through(servers.amqp_url, broker_link, query="reconnect_interval=0.5")
    async for deployment in deploy(servers, tmp_path_factory.mktemp("broker_cut"), {
        "intake_api": ("intake_api", {"AMQP_URL": amqp}),
        "ledger": ("ledger", {}),
    }):
        yield deployment


@pytest.fixture
async def broker_cut(broker_link: LinkProxy, behind_broker_link: Deployment) -> AsyncIterator[LinkProxy]:
    """The broker cut off from the intake (and the intake seeing it); restored after the test whatever happens."""
    broker_link.cut()

    async def intake_sees_it() -> bool:
        return await behind_broker_link.ready() == 503

    try:
        await eventually(intake_sees_it, what="the intake to notice the broker is gone")
        yield broker_link
    finally:
        broker_link.restore()


async def test_posts_answer_201_while_the_broker_is_unreachable_and_all_reach_the_ledger_once_it_is_back(
    behind_broker_link: Deployment, broker_cut: LinkProxy, http_session: aiohttp.ClientSession
) -> None:
    intake = behind_broker_link.client(http_session)

    answers = await asyncio.gather(*(intake.create(wait=0) for _ in range(10)))

    assert [status for status, _, _ in answers] == [201] * 10
    payment_ids = [payment["id"] for _, payment, _ in answers]
    assert await behind_broker_link.in_ledger(payment_ids) == 0  # nothing could leave the intake

    broker_cut.restore()

    async def all_in_ledger() -> bool:
        return await behind_broker_link.in_ledger(payment_ids) == len(payment_ids)

    await eventually(all_in_ledger, timeout=30, what="every payment accepted during the outage in the ledger")
    assert await behind_broker_link.pool.fetchval(
        "SELECT count(*) FROM intake.outbox WHERE payment_id = ANY($1::text[]) AND published_at IS NULL", payment_ids
    ) == 0


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

    intake_process.kill()
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

    async def ready() -> bool:
        return await behind_broker_link.ready() == 200

    await eventually(ready, timeout=30, what="the intake's /readyz to answer 200 again")


# --- the database cut off from the intake ---------------------------------------------------------------------


@pytest.fixture(scope="module")
async def database_link(servers: Servers) -> AsyncIterator[LinkProxy]:
    proxy = await proxy_to(servers.database_url)
    yield proxy
    await proxy.stop()


@pytest.fixture(scope="module")
async def behind_database_link(
    servers: Servers, database_link: LinkProxy, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    """The intake alone, reaching PostgreSQL only through `database_link`."""
    database_url = await create_database(servers.database_url, migrations=())
    namespace = unique_name("psintake")
    env = stack_environment(database_url, servers.amqp_url, namespace)
    env["DATABASE_URL"] = through(database_url, database_link)
    process = ServiceProcess("intake_api", env, tmp_path_factory.mktemp("database_cut"))
    pool = await create_pool(database_url, max_size=2)
    try:
        process.start()
        await process.wait_ready()
        yield Deployment(env, {"intake_api": process}, pool)
    finally:
        process.stop()
        await asyncio.wait_for(pool.close(), 10)
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(database_url)


@pytest.fixture
async def database_cut(database_link: LinkProxy, behind_database_link: Deployment) -> AsyncIterator[LinkProxy]:
    database_link.cut()
    try:
        yield database_link
    finally:
        database_link.restore()


async def test_post_answers_503_with_retry_after_while_the_database_is_unreachable(
    behind_database_link: Deployment, database_cut: LinkProxy, http_session: aiohttp.ClientSession
) -> None:
    intake = behind_database_link.client(http_session)
    headers = intake.headers(**{"Idempotency-Key": secrets.token_hex(8), "Prefer": "wait=0"})

    async with http_session.post(f"{intake.base_url}/v1/payments", json=payment_body(), headers=headers) as r:
        await problem_of(r, 503, "database-unavailable")
        assert r.headers["Retry-After"].isdigit()


@pytest.mark.parametrize("suffix", ["", "/events", "/cancel"])
async def test_reads_and_cancels_answer_503_while_the_database_is_unreachable(
    behind_database_link: Deployment, database_cut: LinkProxy, http_session: aiohttp.ClientSession, suffix: str
) -> None:
    intake = behind_database_link.client(http_session)
    method = "POST" if suffix == "/cancel" else "GET"
    url = f"{intake.base_url}/v1/payments/pay_{secrets.token_hex(16)}{suffix}"

    async with http_session.request(method, url, headers=intake.headers()) as response:
        await problem_of(response, 503, "database-unavailable")
        assert response.headers["Retry-After"].isdigit()


async def test_the_intake_recovers_by_itself_when_the_database_returns(
    behind_database_link: Deployment, database_cut: LinkProxy, http_session: aiohttp.ClientSession
) -> None:
    intake = behind_database_link.client(http_session)
    key, body = secrets.token_hex(8), payment_body()
    status, _, _ = await intake.create(body, key=key, wait=0)
    assert status == 503

    database_cut.restore()

    async def accepted() -> bool:
        status, _, _ = await intake.create(body, key=key, wait=0)
        assert status in (201, 503), status
        return status == 201  # the first success creates: the 503 had stored nothing

    await eventually(accepted, timeout=20, interval=0.2, what="the retried POST to be accepted")


# --- two intake processes, one outbox -------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def two_intakes(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    second_port = str(free_port())
    async for deployment in deploy(servers, tmp_path_factory.mktemp("two_intakes"), {
        "intake_a": ("intake_api", {}),
        "intake_b": ("intake_api", {"INTAKE_PORT": second_port}),
        "ledger": ("ledger", {}),
    }):
        yield deployment


async def test_two_intake_processes_sharing_one_outbox_get_every_payment_to_the_ledger(
    two_intakes: Deployment, http_session: aiohttp.ClientSession
) -> None:
    clients = [two_intakes.client(http_session, "intake_a"), two_intakes.client(http_session, "intake_b")]

    answers = await asyncio.gather(*(clients[i % 2].create(wait=0) for i in range(40)))

    assert [status for status, _, _ in answers] == [201] * 40
    payment_ids = [payment["id"] for _, payment, _ in answers]

    async def all_in_ledger() -> bool:
        return await two_intakes.in_ledger(payment_ids) == 40

    await eventually(all_in_ledger, timeout=30, what="all 40 payments in the ledger")
    assert await two_intakes.pool.fetchval(
        "SELECT count(*) FROM ledger.payment_logs WHERE event_type = 'payment.requested'"
        " AND payment_request_id = ANY($1::text[])", payment_ids
    ) == 40
