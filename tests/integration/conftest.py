"""Fixtures of the integration tests (the real broker and database ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.broker import Broker
from tests.support.brokers import connected_broker


@pytest.fixture
async def broker(amqp_url: str, namespace: str, request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    """A broker connection of this test's, named after its module, with every consumer group declared."""
    instance = await connected_broker(amqp_url, namespace, f"test-{request.module.__name__.rpartition('.')[2]}")
    yield instance
    await instance.close()
