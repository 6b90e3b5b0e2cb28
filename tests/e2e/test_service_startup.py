"""Starting a service the way a new user does (issue 13 §1-2): a port in use or refused credentials stop it at
once with one line that says so, no traceback; the port is claimed before anything is connected."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from tests.support.infra import Servers, delete_namespace, unique_name
from tests.support.own_stack import own_stack
from tests.support.processes import ServiceProcess, stack_environment

# Nothing listens here: a service that tried to connect would log "waiting for dependency" and retry.
NOWHERE_AMQP = "amqp://guest:guest@127.0.0.1:1/"
NOWHERE_POSTGRES = "postgresql://postgres@127.0.0.1:1/paystream"


async def run_until_exit(service: ServiceProcess, timeout: float = 30.0) -> tuple[int, list[str]]:
    service.start()
    assert service.process is not None
    code = await asyncio.wait_for(asyncio.to_thread(service.process.wait), timeout)
    return code, service.log_text().splitlines()


def paystream_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("paystream:")]


async def test_a_port_in_use_stops_the_service_with_one_line_before_it_connects(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = stack_environment(NOWHERE_POSTGRES, NOWHERE_AMQP, "psport", INTAKE_PORT=str(port))
        code, lines = await run_until_exit(ServiceProcess("intake_api", env, tmp_path))
    assert code == 2
    assert paystream_lines(lines) == [f"paystream: INTAKE_PORT: port {port} on 127.0.0.1 is already in use"]
    assert not any("Traceback" in line or "waiting for dependency" in line for line in lines), lines


async def test_a_wrong_rabbitmq_password_is_said_to_be_refused_not_unreachable(
    servers: Servers, tmp_path: Path
) -> None:
    amqp = servers.amqp_url.replace("guest:guest@", "guest:not-the-password@")
    assert amqp != servers.amqp_url, "the test broker is expected to use guest:guest"
    env = stack_environment(NOWHERE_POSTGRES, amqp, "psauth")
    code, lines = await run_until_exit(ServiceProcess("webhook_receiver", env, tmp_path))
    host_port = amqp.split("@", 1)[1].split("/", 1)[0]
    assert code == 1
    assert paystream_lines(lines) == [f"paystream: RabbitMQ: authentication refused for guest at {host_port}"]
    assert not any("Traceback" in line or "unreachable" in line for line in lines), lines


async def test_a_postgresql_role_that_is_refused_is_said_so(servers: Servers, tmp_path: Path) -> None:
    # The shared server trusts every local user with a role, so a role it does not know is what it refuses.
    database = servers.database_url.replace("postgres@", "no_such_role_ps@", 1).rstrip("/") + "/paystream_x"
    assert "no_such_role_ps@" in database, "the test server URL is expected to name the postgres user"
    env = stack_environment(database, servers.amqp_url, "psauth")
    code, lines = await run_until_exit(ServiceProcess("ledger", env, tmp_path))
    host_port = database.split("@", 1)[1].split("/", 1)[0]
    assert code == 1
    assert paystream_lines(lines) == [
        f"paystream: PostgreSQL: authentication refused for no_such_role_ps at {host_port}"
    ]
    assert not any("Traceback" in line for line in lines), lines


async def test_a_service_stopped_with_sigterm_exits_zero_without_a_traceback(servers: Servers, tmp_path: Path) -> None:
    namespace = unique_name("psstop")
    env = stack_environment(NOWHERE_POSTGRES, servers.amqp_url, namespace)
    service = ServiceProcess("webhook_receiver", env, tmp_path)
    service.start()
    try:
        await service.wait_ready()
    finally:
        code = service.stop()
        await delete_namespace(servers.amqp_url, namespace)
    assert code == 0
    assert not any("Traceback" in line for line in service.log_text().splitlines())


async def test_services_with_loops_stopped_with_sigterm_log_no_error(servers: Servers, tmp_path: Path) -> None:
    """A SIGTERM stops the service's loops (consumers, relays, sweeps, DLQ watches) as a stop, not as loops that
    died: the stop is quiet, exit 0 (it once logged "a background task ended" at error level for each)."""
    services = ("ledger", "intake_api", "gateway_worker", "notifier")
    async with own_stack(servers, tmp_path, services) as stack:
        codes = {name: await asyncio.to_thread(stack[name].stop) for name in services}
        logs = {name: stack[name].log_text() for name in services}
    assert codes == dict.fromkeys(services, 0)
    for name, text in logs.items():
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert any(record.get("event") == "service stopped" for record in records), name
        errors = [record for record in records if record.get("level") in ("error", "critical")]
        assert errors == [], (name, errors)
