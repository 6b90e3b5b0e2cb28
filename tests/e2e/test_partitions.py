"""A silent network partition between a replica and its dependencies (docs/explanation/failure-detection.md).

Two ledger replicas; the first reaches RabbitMQ and PostgreSQL through proxies (tests/support/link_proxy.py) that
the test blackholes in turn, each for longer than the detection time: every packet dropped, nothing closed, as
when a network path dies. The replica must notice within the bounds its settings give, never exit, carry on once
the path is back, and every payment made before, during and after must complete (the other replica takes the
work meanwhile). Short heartbeat and timeouts keep it quick.

Run by hand for the figures in the docs, with the defaults and a longer blackhole:
    .venv/bin/python -m tests.e2e.test_partitions --blackhole 60 --default-timeouts
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.client import IntakeClient
from tests.support.infra import Servers, find_servers
from tests.support.intake_deployment import Deployment, Overrides, deployment, proxy_to, through
from tests.support.link_proxy import LinkProxy
from tests.support.processes import ServiceProcess, eventually, free_port

# The partitioned replica's detection settings in the test: a silent broker connection is dropped after
# 3 x (2 + 1) = 9 s (checked every second), a statement after 3 s.
QUICK_DETECTION = {
    "AMQP_HEARTBEAT_SECONDS": "2",
    "DATABASE_STATEMENT_TIMEOUT_SECONDS": "3",
    "DATABASE_CONNECT_TIMEOUT_SECONDS": "3",
    "DATABASE_TCP_TIMEOUT_SECONDS": "3",
}
# Lines that would say the process gave up.
GAVE_UP = ("cannot continue", "the service stops", "service stopped")


@dataclass
class Partitioned:
    """The deployment, the replica behind the proxies and the proxies themselves."""

    running: Deployment
    broker_link: LinkProxy
    database_link: LinkProxy
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def replica(self) -> ServiceProcess:
        return self.running.processes["ledger"]

    def records_since(self, offset: int) -> list[dict[str, Any]]:
        text = self.replica.log_text()[offset:]
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def log_size(self) -> int:
        return len(self.replica.log_text())

    def assert_alive(self) -> None:
        process = self.replica.process
        assert process is not None and process.poll() is None, f"the replica exited:\n{self.replica.tail()}"


@asynccontextmanager
async def partitionable(servers: Servers, log_dir: Path, detection: dict[str, str]) -> AsyncIterator[Partitioned]:
    """intake_api, gateway_worker, webhook_receiver, an autopaying sandbox and two ledgers, the first behind
    proxies to RabbitMQ and PostgreSQL."""
    async with proxy_to(servers.amqp_url) as broker_link, proxy_to(servers.database_url) as database_link:

        def first_ledger(env: dict[str, str]) -> dict[str, str]:
            return {
                "AMQP_URL": through(env["AMQP_URL"], broker_link),
                "DATABASE_URL": through(env["DATABASE_URL"], database_link),
                **detection,
            }

        processes: dict[str, tuple[str, Overrides]] = {
            "ledger": ("ledger", first_ledger),
            "ledger-2": ("ledger", {"LEDGER_PORT": str(free_port())}),
            "intake_api": ("intake_api", {}),
            "gateway_worker": ("gateway_worker", {}),
            "webhook_receiver": ("webhook_receiver", {}),
            "sandbox_gateway": ("sandbox_gateway", {"SANDBOX_AUTOPAY": "succeed"}),
        }
        async with deployment(servers, log_dir, processes) as running:
            yield Partitioned(running, broker_link, database_link)


async def pay(http: aiohttp.ClientSession, partitioned: Partitioned, count: int) -> list[str]:
    intake = partitioned.running.client(http)
    answers = await asyncio.gather(*(intake.create(wait=0) for _ in range(count)))
    assert [status for status, _, _ in answers] == [201] * count
    return [payment["id"] for _, payment, _ in answers]


async def all_succeed(http: aiohttp.ClientSession, partitioned: Partitioned, ids: list[str], timeout: float) -> None:
    intake: IntakeClient = partitioned.running.client(http)
    finals = await asyncio.gather(*(intake.terminal(payment_id, timeout=timeout) for payment_id in ids))
    assert [final["status"] for final in finals] == ["SUCCEEDED"] * len(ids)


@contextmanager
def blackholed(link: LinkProxy) -> Iterator[None]:
    link.blackhole()
    try:
        yield
    finally:
        link.restore()


async def first_line(partitioned: Partitioned, offset: int, markers: tuple[str, ...], timeout: float) -> float:
    """When (epoch seconds, the line's own timestamp) the replica first logged a line holding one of `markers`."""

    async def logged() -> float | None:
        for record in partitioned.records_since(offset):
            if any(marker in json.dumps(record) for marker in markers):
                return datetime.fromisoformat(record["timestamp"]).timestamp()
        return None

    return await eventually(logged, timeout=timeout, interval=0.1, what=f"the replica to log one of {markers}")


async def ready(partitioned: Partitioned, timeout: float) -> float:
    async def answers() -> bool:
        return await partitioned.running.readiness("ledger") == 200

    await eventually(answers, timeout=timeout, interval=0.2, what="the partitioned replica ready again")
    return time.time()


async def ride_out(partitioned: Partitioned, http: aiohttp.ClientSession, blackhole_seconds: float) -> list[str]:
    """Blackhole the replica's broker link, then its database link, each for `blackhole_seconds`, with payments
    made before, during and after; returns every payment's id. Timings go to `partitioned.timings`."""
    timings = partitioned.timings
    paid = await pay(http, partitioned, 3)
    await all_succeed(http, partitioned, paid, 30)

    # The broker node goes silent.
    offset = partitioned.log_size()
    started = time.time()
    with blackholed(partitioned.broker_link):
        during = await pay(http, partitioned, 5)
        await all_succeed(http, partitioned, during, blackhole_seconds + 60)
        timings["broker: payments made at the cut completed (s)"] = time.time() - started
        noticed = await first_line(partitioned, offset, ("was stuck", "Connection lost"), blackhole_seconds + 60)
        timings["broker: silence noticed by the replica (s)"] = noticed - started
        await asyncio.sleep(max(0.0, started + blackhole_seconds - time.time()))
        partitioned.assert_alive()
    restored = time.time()
    back = await first_line(partitioned, offset, ("broker connection restored",), 60)
    timings["broker: reconnected after the path came back (s)"] = back - restored
    paid += during

    # PostgreSQL goes silent.
    offset = partitioned.log_size()
    started = time.time()
    with blackholed(partitioned.database_link):
        during = await pay(http, partitioned, 5)
        await all_succeed(http, partitioned, during, blackhole_seconds + 60)
        timings["database: payments made at the cut completed (s)"] = time.time() - started
        noticed = await first_line(partitioned, offset, ("TimeoutError", "timed out"), blackhole_seconds + 60)
        timings["database: silence noticed by the replica (s)"] = noticed - started
        paused = await first_line(partitioned, offset, ("consuming paused",), blackhole_seconds + 60)
        timings["database: consuming paused, work left to the other replica (s)"] = paused - started
        await asyncio.sleep(max(0.0, started + blackhole_seconds - time.time()))
        partitioned.assert_alive()
    restored = time.time()
    timings["database: ready again after the path came back (s)"] = await ready(partitioned, 60) - restored
    resumed = await first_line(partitioned, offset, ("consuming resumed",), 30)
    timings["database: consuming again after the path came back (s)"] = resumed - restored
    paid += during

    after = await pay(http, partitioned, 3)
    await all_succeed(http, partitioned, after, 60)
    partitioned.assert_alive()
    return paid + after


async def test_a_replica_rides_out_a_silent_partition_from_its_broker_node_and_from_postgresql(
    servers: Servers, tmp_path: Path
) -> None:
    async with partitionable(servers, tmp_path, QUICK_DETECTION) as partitioned, aiohttp.ClientSession() as http:
        paid = await ride_out(partitioned, http, blackhole_seconds=12)
        timings = partitioned.timings
        print("\n".join(f"{what}: {value:.1f}" for what, value in timings.items()))
        # Within what the settings promise (a shared CI machine adds a little): 3 x (heartbeat + 1) s plus a
        # heartbeat's check; a statement's timeout plus that of its cancel request.
        assert timings["broker: silence noticed by the replica (s)"] <= 9 + 1 + 3
        assert timings["database: silence noticed by the replica (s)"] <= 3 + 3 + 3
        assert len(paid) == 16
        partitioned.assert_alive()
        log = partitioned.replica.log_text()
        assert not [line for line in log.splitlines() if any(marker in line for marker in GAVE_UP)]
        # It failed over (dropped the silent connection and made another) rather than hung on.
        assert "broker connection restored" in log


def main() -> None:
    """Run the partition by hand and print the timings and the replica's log lines of the partition."""
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.test_partitions")
    parser.add_argument("--blackhole", type=float, default=60.0, help="seconds each path stays silent")
    parser.add_argument("--default-timeouts", action="store_true", help="the settings' defaults, not the test's")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/paystream-partitions"))
    args = parser.parse_args()

    async def run() -> None:
        servers = find_servers()
        detection = {} if args.default_timeouts else QUICK_DETECTION
        async with partitionable(servers, args.logs, detection) as partitioned, aiohttp.ClientSession() as http:
            paid = await ride_out(partitioned, http, args.blackhole)
            print(
                f"{len(paid)} payments, all SUCCEEDED; the replica never exited (log: {partitioned.replica.log_path})"
            )
            for what, value in partitioned.timings.items():
                print(f"  {what}: {value:.1f}")

    asyncio.run(run())


if __name__ == "__main__":
    main()
