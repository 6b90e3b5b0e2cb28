"""End-to-end fixtures: all six services as real processes on a fresh database and broker namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.client import IntakeClient
from tests.support.infra import Servers
from tests.support.own_stack import own_stack
from tests.support.processes import ALL_SERVICES, Stack


@pytest.fixture(scope="session")
async def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The whole system, shared by the end-to-end tests that do not need a special configuration."""
    async with own_stack(servers, tmp_path_factory.mktemp("stack"), ALL_SERVICES) as running:
        yield running


@pytest.fixture(scope="module")
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP client for a module's tests (those whose stack is a module fixture)."""
    async with aiohttp.ClientSession() as session:
        yield session


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
