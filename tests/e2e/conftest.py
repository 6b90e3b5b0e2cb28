"""End-to-end fixtures: all six services as real processes on a fresh database and broker namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.client import IntakeClient
from tests.support.infra import Servers, create_database, delete_namespace, drop_database, unique_name
from tests.support.processes import Stack, stack_environment


@pytest.fixture(scope="session")
async def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The whole system, shared by the end-to-end tests that do not need a special configuration."""
    database_url = await create_database(servers.database_url, migrations=())
    namespace = unique_name("pse2e")
    running = Stack(stack_environment(database_url, servers.amqp_url, namespace), tmp_path_factory.mktemp("stack"))
    try:
        await running.start()
        yield running
    finally:
        running.stop()
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(database_url)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def intake(stack: Stack, http: aiohttp.ClientSession) -> IntakeClient:
    return IntakeClient(http, stack.url("intake_api"))


@pytest.fixture
def stack_logs(stack: Stack) -> Path:
    return stack.log_dir
