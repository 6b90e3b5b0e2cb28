"""The sandbox takes fault-injection orders and anyone's test card: it listens on loopback unless opened on
purpose (SANDBOX_HOST), even when HTTP_HOST opens every other service (issue 13, item 10)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.support.processes import Stack, stack_environment

# The sandbox alone needs neither broker nor database; these URLs are never dialled.
UNUSED_DATABASE = "postgresql://postgres@127.0.0.1:9/unused"
UNUSED_BROKER = "amqp://guest:guest@127.0.0.1:9/"


@asynccontextmanager
async def sandbox_alone(log_dir: Path, **overrides: str) -> AsyncIterator[Stack]:
    env = stack_environment(UNUSED_DATABASE, UNUSED_BROKER, "unused", HTTP_HOST="0.0.0.0", **overrides)
    stack = Stack(env, log_dir, ("sandbox_gateway",))
    try:
        await stack.start()
        yield stack
    finally:
        stack.stop()


def listening_addresses(stack: Stack) -> set[str]:
    process = stack["sandbox_gateway"].process
    assert process is not None
    port = stack["sandbox_gateway"].port
    return {
        c.laddr.ip
        for c in psutil.Process(process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({}, {"127.0.0.1"}), ({"SANDBOX_HOST": "0.0.0.0"}, {"0.0.0.0"})],
    ids=["default-loopback", "opened-with-SANDBOX_HOST"],
)
async def test_the_sandbox_listens_on_loopback_unless_sandbox_host_opens_it(
    tmp_path: Path, overrides: dict[str, str], expected: set[str]
) -> None:
    async with sandbox_alone(tmp_path, **overrides) as stack:
        assert listening_addresses(stack) == expected


async def test_a_sandbox_process_refuses_fault_injection_without_its_token(tmp_path: Path) -> None:
    async with sandbox_alone(tmp_path) as stack, aiohttp.ClientSession() as http:
        url = f"{stack.url('sandbox_gateway')}/_sandbox/faults"
        for headers in ({}, {"Authorization": "Bearer nope"}):
            async with http.post(url, json={"create_intent_error_rate": 1.0}, headers=headers) as response:
                assert response.status == 401
        async with http.get(url, headers=stack.sandbox_admin_headers) as response:
            assert response.status == 200
            assert (await response.json())["create_intent_error_rate"] == 0.0
