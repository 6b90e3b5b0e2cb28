"""What the CPU diagnostics (`python -m tests.ledger_cpu`, `tests.notifier_cpu`, `tests.intake_cpu`,
`tests.http_cpu`) share: the service measured as a real process on a database and namespace of its own, a
process's CPU time from /proc, publishing many envelopes at once, and an optional py-spy profile."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shared.broker import Broker
from shared.events import Envelope
from tests.support.infra import Servers, create_database, delete_namespace, drop_database, find_servers, unique_name
from tests.support.processes import ServiceProcess, stack_environment


@dataclass(frozen=True)
class Measured:
    """The service being measured, and what the harness needs beside it."""

    service: ServiceProcess
    pid: int
    servers: Servers
    namespace: str
    pool: asyncpg.Pool  # on the service's database, for the harness's own queries
    broker: Broker  # connected, in the service's namespace


@asynccontextmanager
async def measured_service(
    name: str, *, migrations: tuple[str, ...] = (), application_name: str = "cpu-harness", **env: str
) -> AsyncIterator[Measured]:
    """`name` started as a real process (with `env` over a test stack's environment) on a database (with these
    migrations applied first) and a broker namespace of its own; stopped and everything removed afterwards.
    The harness's pool connects as `application_name`, so its backends can be told from the service's."""
    servers = find_servers()
    database_url = await create_database(servers.database_url, migrations=migrations)
    namespace = unique_name("pscpu")
    service = ServiceProcess(
        name,
        stack_environment(database_url, servers.amqp_url, namespace, **env),
        Path(tempfile.mkdtemp(prefix=f"{name}-cpu-")),
    )
    broker = Broker(servers.amqp_url, namespace, name=application_name)
    pool = None
    try:
        service.start()
        await service.wait_ready()
        assert service.process is not None
        await broker.connect()
        pool = await asyncpg.create_pool(
            database_url, min_size=1, max_size=2, server_settings={"application_name": application_name}
        )
        yield Measured(service, service.process.pid, servers, namespace, pool, broker)
    finally:
        service.stop()
        await broker.close()
        if pool is not None:
            await asyncio.wait_for(pool.close(), 10)
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(database_url)
        servers.stop()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def publish_all(broker: Broker, envelopes: Sequence[Envelope], concurrency: int = 200) -> None:
    for start in range(0, len(envelopes), concurrency):
        await asyncio.gather(*(broker.publish(e) for e in envelopes[start : start + concurrency]))


@asynccontextmanager
async def profiled(pid: int, output: str | None) -> AsyncIterator[None]:
    """With an output path, py-spy samples the process meanwhile and writes its collapsed stacks there."""
    if not output:
        yield
        return
    py_spy = str(Path(sys.executable).parent / "py-spy")
    spy = await asyncio.create_subprocess_exec(
        *(py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", output, "--rate", "200"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(2)
        await asyncio.wait_for(spy.wait(), 30)
