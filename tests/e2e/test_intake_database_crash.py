"""The intake while its PostgreSQL crashes (`pg_ctl stop -m immediate`) and restarts under load: every answer to
`POST /v1/payments` is a 201, or a 503 with Retry-After while the database is away; never a 500
(docs/reference/intake-api.md).

A cut link (test_intake_database_outage.py) only ever refuses connections. A crash also kills connections in the
middle of a statement, and the restarting server answers "starting up" and "in recovery": the errors that once
escaped as a 500.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.client import payment_body
from tests.support.infra import Servers, create_database, delete_namespace, unique_name
from tests.support.own_postgres import OwnPostgres, own_postgres
from tests.support.processes import ServiceProcess, eventually, stack_environment

CLIENTS = 8
CRASHES = int(os.environ.get("PAYSTREAM_TEST_DATABASE_CRASHES", "2"))


@pytest.fixture
async def crashable() -> AsyncIterator[OwnPostgres]:
    with own_postgres() as server:
        yield server


async def test_posts_answer_201_or_503_with_retry_after_through_a_database_crash(
    servers: Servers, crashable: OwnPostgres, tmp_path: object
) -> None:
    namespace = unique_name("pscrash")
    database_url = await create_database(crashable.server_url)  # migrated: the intake reads the ledger's tables
    env = stack_environment(database_url, servers.amqp_url, namespace)
    intake = ServiceProcess("intake_api", env, tmp_path)  # type: ignore[arg-type]
    intake.start()
    answers: Counter[int] = Counter()
    problems: list[str] = []
    recovered = asyncio.Event()
    try:
        await intake.wait_ready()
        async with aiohttp.ClientSession() as http:

            async def post_once() -> int:
                headers = {
                    "Authorization": "Bearer sk_test_demo",
                    "Idempotency-Key": secrets.token_hex(8),
                    "Prefer": "wait=0",
                }
                async with http.post(f"{intake.url}/v1/payments", json=payment_body(), headers=headers) as r:
                    answers[r.status] += 1
                    if r.status not in (201, 503) or (r.status == 503 and not r.headers.get("Retry-After")):
                        problems.append(f"{r.status} {r.headers.get('Retry-After')} {await r.text()}")
                    return r.status

            async def client() -> None:
                # Post until the database has crashed and come back and this client has been accepted again.
                while not recovered.is_set():
                    await post_once()
                while await post_once() != 201:
                    pass

            async def answered(status: int, count: int, what: str) -> None:
                async def reached() -> bool:
                    return answers[status] >= count

                await eventually(reached, timeout=60, what=what)

            async def crash_and_restart() -> None:
                for _ in range(CRASHES):
                    await answered(201, answers[201] + 50, "load under way")
                    await asyncio.to_thread(crashable.crash)
                    await answered(503, answers[503] + 1, "a 503 from the crashed database")
                    await asyncio.to_thread(crashable.start)
                recovered.set()

            await asyncio.wait_for(asyncio.gather(crash_and_restart(), *(client() for _ in range(CLIENTS))), 180)
    finally:
        intake.stop()
        await delete_namespace(servers.amqp_url, namespace)
    assert not problems, f"{len(problems)} answers neither 201 nor 503+Retry-After, e.g. {problems[:3]}; all {answers}"
    assert answers[503] >= CRASHES and answers[201] >= 50 * CRASHES + CLIENTS, answers
    assert "unhandled error" not in intake.log_text()
