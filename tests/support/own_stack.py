"""A stack of service processes with a configuration of its own: its own database and broker namespace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from tests.support.infra import Servers, create_database, delete_namespace, drop_database, unique_name
from tests.support.processes import Stack, stack_environment


@asynccontextmanager
async def own_stack(servers: Servers, log_dir: Path, services: Iterable[str], **overrides: str) -> AsyncIterator[Stack]:
    """Start `services` on a fresh database and namespace with `overrides` in their environment; clean up after.

    The stack stops in a thread: a service may still talk to something on this event loop (an OTLP receiver, a
    merchant's endpoint) while it shuts down, and a blocked loop would hang its goodbyes until the timeout.
    """
    database_url = await create_database(servers.database_url, migrations=())
    namespace = unique_name("psgw")
    stack = Stack(stack_environment(database_url, servers.amqp_url, namespace, **overrides), log_dir, services)
    try:
        await stack.start()
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(database_url)


async def payment_log_rows(stack: Stack, payment_id: str) -> list[asyncpg.Record]:
    """The payment's ledger.payment_logs rows in the stack's database, oldest first."""
    conn = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        return await conn.fetch(
            "SELECT event_type, from_status, to_status, source, outcome FROM ledger.payment_logs"
            " WHERE payment_request_id = $1 ORDER BY id",
            payment_id,
        )
    finally:
        await conn.close()
