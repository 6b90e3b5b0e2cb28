"""`python -m tests.http_cpu [--webhooks N] [--concurrency C] [--profile out.txt]`: the HTTP edge's CPU per request.

Starts one webhook_receiver process (stateless: no database) on a namespace of its own, as `make bench` runs it
(LOG_LEVEL=WARNING), and POSTs N correctly signed sandbox webhooks to it from C concurrent clients on one
keep-alive connection pool. Every request passes the whole edge every HTTP service shares (the server
instrumentation, problem_middleware, the router, body reading) and the receiver's own work (signature, parse, a
confirmed publish). Prints the CPU seconds the receiver process spent (utime + stime from /proc/<pid>/stat) divided
by the webhooks, after checking each was answered 200 "accepted". With --profile, py-spy samples the receiver
meanwhile and writes its collapsed stacks there. A diagnostic, like `python -m tests.ledger_cpu`; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.support.cpu import cpu_seconds, profiled
from tests.support.infra import delete_namespace, find_servers, unique_name
from tests.support.processes import ServiceProcess, stack_environment
from tests.support.sandbox_webhooks import encode, sandbox_event, signed

SECRET = "whsec_http_cpu"


async def send_all(url: str, webhooks: list[bytes], concurrency: int) -> None:
    """POST every webhook, `concurrency` at a time; each must be answered 200 and accepted."""
    pending = iter(webhooks)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            for body in pending:
                async with session.post(url, data=body, headers=signed(body, SECRET)) as response:
                    answer = await response.json(content_type=None)
                    assert response.status == 200 and answer["outcome"] == "accepted", (response.status, answer)

        await asyncio.gather(*(client() for _ in range(concurrency)))


async def main(webhooks: int, concurrency: int, profile: str | None) -> None:
    servers = find_servers()
    namespace = unique_name("pscpu")
    env = stack_environment(
        servers.database_url, servers.amqp_url, namespace, LOG_LEVEL="WARNING", SANDBOX_WEBHOOK_SECRET=SECRET
    )
    receiver = ServiceProcess("webhook_receiver", env, Path(tempfile.mkdtemp(prefix="http-cpu-")))
    url = f"{receiver.url}/webhooks/sandbox"
    bodies = [encode(sandbox_event(f"pay_{secrets.token_hex(16)}")) for _ in range(webhooks)]
    try:
        receiver.start()
        await receiver.wait_ready()
        assert receiver.process is not None
        pid = receiver.process.pid
        # A first round outside the measure: connections opened, code paths and caches warm.
        await send_all(url, bodies[: 2 * concurrency], concurrency)
        measured = bodies[2 * concurrency :]
        async with profiled(pid, profile):
            started_cpu, started = cpu_seconds(pid), time.perf_counter()
            await send_all(url, measured, concurrency)
            spent, elapsed = cpu_seconds(pid) - started_cpu, time.perf_counter() - started
        count = len(measured)
        print(
            f"webhook_receiver: {count} webhooks at concurrency {concurrency} in {elapsed:.1f} s, {spent:.2f} CPU s,"
            f" {spent / count * 1000:.3f} ms CPU per webhook, {count / elapsed:.0f} webhooks/s"
        )
        print(json.dumps({"webhooks": count, "cpu_ms_per_webhook": round(spent / count * 1000, 3)}))
    finally:
        receiver.stop()
        await delete_namespace(servers.amqp_url, namespace)
        servers.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.http_cpu")
    parser.add_argument("--webhooks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the webhook_receiver here")
    args = parser.parse_args()
    asyncio.run(main(args.webhooks, args.concurrency, args.profile))
