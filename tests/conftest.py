"""Shared fixtures: the real broker and database every integration and end-to-end test runs against."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from shared.db import create_pool
from tests.support.infra import (
    InfrastructureMissing,
    Servers,
    create_database,
    delete_namespace,
    drop_database,
    find_servers,
    unique_name,
)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    try:
        found = find_servers()
    except InfrastructureMissing as exc:
        pytest.exit(str(exc), returncode=3)
    yield found
    found.stop()


@pytest.fixture(scope="session")
async def database_url(servers: Servers) -> AsyncIterator[str]:
    """A fresh, migrated database for this test run, dropped at the end."""
    url = await create_database(servers.database_url)
    yield url
    await drop_database(url)


@pytest.fixture(scope="session")
def amqp_url(servers: Servers) -> str:
    return servers.amqp_url


@pytest.fixture
async def namespace(amqp_url: str) -> AsyncIterator[str]:
    """A broker namespace of this test's own, removed afterwards."""
    name = unique_name("pstest")
    yield name
    await delete_namespace(amqp_url, name)


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=10)
    yield pool
    await asyncio.wait_for(pool.close(), 10)
