"""Waiting for a dependency at start (shared/runtime.retry_until_up): retried, then one clear error."""

from __future__ import annotations

import asyncpg
import pytest

from shared.db import MigrationChanged
from shared.runtime import DependencyError, redact_url, retry_until_up


async def test_a_dependency_that_answers_on_the_third_try_is_used() -> None:
    tries: list[int] = []

    async def connect() -> str:
        tries.append(len(tries) + 1)
        if len(tries) < 3:
            raise ConnectionRefusedError("not yet")
        return "connected"

    assert await retry_until_up("RabbitMQ", "amqp://localhost/", connect, within=10) == "connected"
    assert tries == [1, 2, 3]


async def test_a_dependency_that_never_answers_is_one_error_naming_it_without_its_password() -> None:
    async def connect() -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises(DependencyError) as raised:
        await retry_until_up("RabbitMQ", "amqp://guest:s3cret@a:5672/,amqp://guest:s3cret@b:5672/", connect, within=0.5)
    message = str(raised.value)
    assert message.startswith("RabbitMQ unreachable at amqp://guest:***@a:5672/,amqp://guest:***@b:5672/")
    assert "ConnectionRefusedError" in message and "s3cret" not in message


def test_every_password_of_a_node_list_is_hidden() -> None:
    assert redact_url("amqp://u:p1@a/,amqp://b/") == "amqp://u:***@a/,amqp://b/"


async def test_refused_credentials_stop_at_once_without_waiting() -> None:
    tries: list[int] = []

    async def connect() -> None:
        tries.append(1)
        raise asyncpg.InvalidPasswordError("password authentication failed")

    with pytest.raises(DependencyError, match="PostgreSQL: authentication refused for app at db:5432"):
        await retry_until_up("PostgreSQL", "postgresql://app:pw@db/paystream", connect, within=30)
    assert tries == [1]


async def test_a_changed_migration_is_not_waited_for() -> None:
    tries: list[int] = []

    async def connect() -> None:
        tries.append(1)
        raise MigrationChanged("001_ledger.sql changed")

    with pytest.raises(MigrationChanged):
        await retry_until_up("PostgreSQL", "postgresql://db/paystream", connect, within=30)
    assert tries == [1]
