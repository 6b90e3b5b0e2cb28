"""Service processes on a database and broker namespace of their own, some reaching a dependency through a proxy
the test can cut (tests/support/link_proxy.py): for the intake's outage tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from shared.db import create_pool
from tests.support.client import IntakeClient
from tests.support.infra import Servers, create_database, delete_namespace, drop_database, unique_name
from tests.support.link_proxy import LinkProxy
from tests.support.processes import ServiceProcess, free_port, stack_environment

# Extra environment of one process: fixed values, or computed from the deployment's environment.
Overrides = Mapping[str, str] | Callable[[dict[str, str]], Mapping[str, str]]


def through(url: str, proxy: LinkProxy, query: str = "") -> str:
    """`url` with its host and port replaced by the proxy's (credentials and path kept)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query or parts.query, parts.fragment))


@asynccontextmanager
async def proxy_to(url: str) -> AsyncIterator[LinkProxy]:
    """A started proxy to the host and port of `url`, stopped on exit."""
    parts = urlsplit(url)
    proxy = LinkProxy(parts.hostname or "127.0.0.1", parts.port or 0)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def stop(process: ServiceProcess) -> None:
    """SIGTERM and wait, in a thread: the proxies run on this event loop, and the process still talks through
    them while it shuts down (blocking the loop would hang its goodbyes until the timeout)."""
    await asyncio.to_thread(process.stop)


@dataclass
class Deployment:
    """The running processes by label; `pool` reads their database directly."""

    env: dict[str, str]
    processes: dict[str, ServiceProcess]
    pool: asyncpg.Pool

    def client(self, http: aiohttp.ClientSession, label: str = "intake_api") -> IntakeClient:
        return IntakeClient(http, self.processes[label].url)

    async def in_ledger(self, payment_ids: list[str]) -> int:
        """How many of `payment_ids` the ledger holds."""
        query = "SELECT count(*) FROM ledger.payment_requests WHERE id = ANY($1::text[])"
        return int(await self.pool.fetchval(query, payment_ids))

    async def readiness(self, label: str = "intake_api") -> int:
        """The status of the process's GET /readyz."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.processes[label].url}/readyz") as r:
            return r.status


def two_intake_processes(others: Mapping[str, Mapping[str, str]]) -> dict[str, tuple[str, Overrides]]:
    """Two intake_api processes, `intake_a` and `intake_b` (on a port of its own), beside `others` ({service: its
    extra environment}, each labelled with its service): the processes of `deployment` for the replica tests."""
    intakes: dict[str, tuple[str, Overrides]] = {
        "intake_a": ("intake_api", {}),
        "intake_b": ("intake_api", {"INTAKE_PORT": str(free_port())}),
    }
    return intakes | {service: (service, overrides) for service, overrides in others.items()}


@asynccontextmanager
async def deployment(
    servers: Servers,
    log_dir: Path,
    processes: Mapping[str, tuple[str, Overrides]],
    *,
    deployed: tuple[str, ...] = (),
) -> AsyncIterator[Deployment]:
    """Start `processes` ({label: (service, overrides)}) on a fresh database and namespace; clean up after.

    `deployed`: services whose schema is migrated beforehand, as their own deployer would have left it."""
    database_url = await create_database(servers.database_url, migrations=deployed)
    namespace = unique_name("psintake")
    env = stack_environment(database_url, servers.amqp_url, namespace)
    started: dict[str, ServiceProcess] = {}
    pool = None
    try:
        for label, (service, overrides) in processes.items():
            extra = overrides(env) if callable(overrides) else overrides
            process = ServiceProcess(service, {**env, **extra}, log_dir / label)
            process.log_path.parent.mkdir(parents=True, exist_ok=True)
            process.start()
            started[label] = process
        await asyncio.gather(*(process.wait_ready() for process in started.values()))
        pool = await create_pool(database_url, max_size=2)
        yield Deployment(env, started, pool)
    finally:
        await asyncio.gather(*(stop(process) for process in started.values()))
        if pool is not None:
            await asyncio.wait_for(pool.close(), 10)
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(database_url)
