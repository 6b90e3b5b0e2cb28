"""Each schema has one deployer (issue 12 §8): the intake, which reads the ledger's tables, does not create them; on
a fresh database it waits until the ledger (their deployer) has, and only then is ready."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from shared.db import prepare_database, schemas_missing
from tests.support.infra import Servers, create_database, delete_namespace, drop_database, unique_name
from tests.support.processes import ServiceProcess, eventually, stack_environment


async def test_an_intake_on_a_fresh_database_waits_for_the_ledger_to_deploy_its_schema(
    servers: Servers, tmp_path: Path
) -> None:
    url = await create_database(servers.database_url, migrations=())
    namespace = unique_name("psdeploy")
    intake = ServiceProcess("intake_api", stack_environment(url, servers.amqp_url, namespace), tmp_path)
    intake.start()
    try:

        async def waiting() -> bool:
            return "waiting for a schema this service reads" in intake.log_text()

        await eventually(waiting, timeout=30, what="the intake waiting for the ledger's schema")
        assert await schemas_missing(url, ["intake_api", "ledger"]) == ["ledger"]

        await prepare_database(url, ["ledger"])  # what the ledger does at its start

        await intake.wait_ready()
    finally:
        intake.stop()
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(url)


async def test_an_intake_alone_on_a_fresh_database_stops_with_one_line_naming_the_schemas_deployer(
    servers: Servers, tmp_path: Path
) -> None:
    url = await create_database(servers.database_url, migrations=())
    namespace = unique_name("psdeploy")
    env = stack_environment(url, servers.amqp_url, namespace, SCHEMA_WAIT_SECONDS="1")
    intake = ServiceProcess("intake_api", env, tmp_path)
    try:
        intake.start()
        assert intake.process is not None
        code = await asyncio.wait_for(asyncio.to_thread(intake.process.wait), 30)
        lines = intake.log_text().splitlines()
        assert code == 1
        assert [line for line in lines if line.startswith("paystream:")] == [
            "paystream: the schema of ledger is not deployed after 1 s: start `python -m services.ledger`"
            " (its owner deploys it) or run `python -m tools.stack prepare`"
        ]
        assert not any("Traceback" in line for line in lines), lines
    finally:
        intake.stop()
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(url)


async def test_merchant_webhook_routes_answer_503_until_the_notifier_has_deployed_its_interface(
    servers: Servers, tmp_path: Path
) -> None:
    # The payment routes need only the ledger; the webhook routes read the notifier's views, which exist (and are
    # granted to the intake) only once the notifier has started once. Meanwhile: 503 and Retry-After, no 500.
    url = await create_database(servers.database_url, migrations=())
    await prepare_database(url, ["ledger", "intake_api"])
    namespace = unique_name("psdeploy")
    intake = ServiceProcess("intake_api", stack_environment(url, servers.amqp_url, namespace), tmp_path)
    intake.start()
    headers = {"Authorization": "Bearer sk_test_demo"}
    try:
        await intake.wait_ready()
        async with aiohttp.ClientSession(headers=headers) as session:
            for path in ("/v1/webhook_endpoints", "/v1/events"):
                async with session.get(intake.url + path) as response:
                    problem = await response.json(content_type=None)
                    assert (response.status, response.headers.get("Retry-After")) == (503, "5"), problem
                    assert problem["type"].endswith("/webhooks-unavailable")
            assert "Traceback" not in intake.log_text()

            await prepare_database(url, ["notifier"])  # what the notifier does at its start

            async with session.get(intake.url + "/v1/webhook_endpoints") as response:
                assert response.status == 200
                assert (await response.json())["data"] == []
    finally:
        intake.stop()
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(url)
