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


# End-to-end tests start every service as a real process on a machine they share with everything else; a start or a
# race that loses to the machine's load once is run again, once, and pytest's summary counts it as a rerun (never
# hidden as a pass). A test that fails twice fails the suite.
E2E_RERUNS = 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    e2e = Path(__file__).parent
    for item in items:
        if e2e in Path(item.path).parents and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=E2E_RERUNS))
