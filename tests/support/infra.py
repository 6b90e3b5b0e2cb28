"""Where the tests find a real RabbitMQ and PostgreSQL, and how each run gets its own database and namespace.

Order (docs/reference/commands.md): TEST_AMQP_URL / TEST_DATABASE_URL if set; else the defaults if they answer; else
containers via testcontainers when a Docker engine runs; else the run fails loudly — never skips.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit

import aio_pika
import asyncpg

from shared.consumers import CONSUMER_GROUPS
from shared.db import connect, migrate, with_database
from shared.ownership import DATABASE_SERVICES, role_name
from shared.topology import Names

DEFAULT_DATABASE_URL = "postgresql://postgres@localhost:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"


class InfrastructureMissing(RuntimeError):
    pass


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "localhost", parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


def _docker_engine_running() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Servers:
    database_url: str  # a server URL; each run creates its own database on it
    amqp_url: str
    containers: tuple[object, ...] = ()

    def stop(self) -> None:
        for container in self.containers:
            container.stop()  # type: ignore[attr-defined]


def find_servers() -> Servers:
    db = os.environ.get("TEST_DATABASE_URL")
    amqp = os.environ.get("TEST_AMQP_URL")
    if db and amqp:
        return Servers(db, amqp)
    db = db or DEFAULT_DATABASE_URL
    amqp = amqp or DEFAULT_AMQP_URL
    if _answers(db) and _answers(amqp):
        return Servers(db, amqp)
    if _docker_engine_running():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer

        pg = PostgresContainer("postgres:16", driver=None).start()
        mq = RabbitMqContainer("rabbitmq:3.13").start()
        params = mq.get_connection_params()
        return Servers(
            pg.get_connection_url(),
            f"amqp://guest:guest@{params.host}:{params.port}/",
            (pg, mq),
        )
    raise InfrastructureMissing(
        "No PostgreSQL and RabbitMQ for the tests: none at TEST_DATABASE_URL/TEST_AMQP_URL, none answering at "
        f"{DEFAULT_DATABASE_URL} and {DEFAULT_AMQP_URL}, and no Docker engine for testcontainers. "
        "Start them (e.g. `docker compose up -d rabbitmq postgres`) and run `make test` again."
    )


def unique_name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


async def create_database(server_url: str, *, migrations: tuple[str, ...] = ("ledger", "intake_api")) -> str:
    name = unique_name("paystream_test")
    admin = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    if migrations:
        conn = await connect(url)
        try:
            await migrate(conn, migrations)
        finally:
            await conn.close()
    return url


async def drop_database(url: str) -> None:
    """Drop the test database and its services' roles (roles are the server's, not the database's)."""
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for service in DATABASE_SERVICES:
            await admin.execute(f'DROP ROLE IF EXISTS "{role_name(name, service)}"')
    finally:
        await admin.close()


async def delete_namespace(amqp_url: str, namespace: str, *, extra_groups: tuple[str, ...] = ()) -> None:
    """Remove every queue and exchange a test run declared under `namespace`."""
    names = Names(namespace)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for group in (*(g.name for g in CONSUMER_GROUPS), *extra_groups):
            for attempt in range(1, 25):
                await channel.queue_delete(names.delay_queue(group, attempt))
            await channel.queue_delete(names.queue(group))
            await channel.queue_delete(names.dlq(group))
        await channel.exchange_delete(names.exchange)
        await channel.exchange_delete(names.dead_letter_exchange)
    finally:
        await asyncio.wait_for(connection.close(), 5)
