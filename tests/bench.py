"""`make bench`: Paystream's throughput and latency beside the raw limits of the same machine, in one run.

Everything runs on this machine, against loopback only, each phase bounded in time:
  raw limits   PostgreSQL one-row commits/s, RabbitMQ confirmed persistent publishes/s to a quorum queue,
               a bare aiohttp server's requests/s (the same client as below)
  Paystream    POST /v1/payments answered (201) per second and latency, with every service running;
               payments completed end to end (POST → sandbox autopay → webhook → ledger SUCCEEDED) per second
               under that saturating load, and their creation-to-SUCCEEDED latency at a steady rate the
               pipeline keeps up with (--rate, default 50 a second)
Results are printed as a table and written to .bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from tests.support.client import payment_body
from tests.support.infra import create_database, delete_namespace, drop_database, find_servers, unique_name
from tests.support.processes import ROOT, Stack, free_port, stack_environment


def percentiles(samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": cuts[49] * 1000, "p95_ms": cuts[94] * 1000, "p99_ms": cuts[98] * 1000}


async def run_for(seconds: float, concurrency: int, operation: Callable[[], Awaitable[bool]]) -> dict[str, Any]:
    """Run `operation` from `concurrency` loops for `seconds`; count successes and time each call."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                ok = await operation()
            except Exception:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"ops": len(latencies), "errors": errors, "per_second": len(latencies) / elapsed, **percentiles(latencies)}


# --- raw limits -------------------------------------------------------------------------------------
async def postgres_commits(server_url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    url = await create_database(server_url, migrations=())
    try:
        pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)
        await pool.execute("CREATE TABLE bench (id bigserial PRIMARY KEY, body jsonb NOT NULL)")

        async def insert() -> bool:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO bench (body) VALUES ($1::jsonb)", '{"amount": 1999}')
            return True

        result = await run_for(seconds, concurrency, insert)
        await pool.close()
        return result
    finally:
        await drop_database(url)


async def rabbitmq_confirms(amqp_url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    connection = await aio_pika.connect(amqp_url)
    name = unique_name("bench")
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        body = b"x" * 600  # about the size of a payment event

        async def publish() -> bool:
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(message, routing_key=name)
            return True

        result = await run_for(seconds, concurrency, publish)
        await queue.delete(if_unused=False, if_empty=False)
        return result
    finally:
        await connection.close()


async def bare_http(seconds: float, concurrency: int) -> dict[str, Any]:
    port = free_port()
    server = (
        "from aiohttp import web\n"
        "async def ok(_): return web.Response(text='ok')\n"
        "app = web.Application(); app.router.add_post('/', ok)\n"
        f"web.run_app(app, host='127.0.0.1', port={port}, print=None, access_log=None)\n"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", server)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            for _ in range(100):
                try:
                    async with session.post(f"http://127.0.0.1:{port}/", data=b"{}"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)

            async def post() -> bool:
                async with session.post(f"http://127.0.0.1:{port}/", json=payment_body()) as response:
                    await response.read()
                    return response.status == 200

            return await run_for(seconds, concurrency, post)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


# --- Paystream ---------------------------------------------------------------------------------------
async def _post_payment(session: aiohttp.ClientSession, stack: Stack, reference: str) -> bool:
    headers = {"Authorization": "Bearer sk_test_demo", "Prefer": "wait=0", "Idempotency-Key": secrets.token_hex(12)}
    async with session.post(
        stack.url("intake_api") + "/v1/payments", json=payment_body(reference=reference), headers=headers
    ) as response:
        await response.read()
        return response.status == 201


async def intake_posts(stack: Stack, seconds: float, concurrency: int) -> dict[str, Any]:
    """As many POSTs as `concurrency` clients can make: the intake's throughput."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        return await run_for(seconds, concurrency, lambda: _post_payment(session, stack, "saturate"))


async def paced_posts(stack: Stack, seconds: float, rate: float) -> int:
    """POSTs at a steady `rate` a second (a load the pipeline keeps up with); returns how many were made."""
    interval = 1.0 / rate
    started = time.perf_counter()
    tasks = []
    async with aiohttp.ClientSession() as session:
        for n in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, started + n * interval - time.perf_counter()))
            tasks.append(asyncio.create_task(_post_payment(session, stack, "paced")))
        results = await asyncio.gather(*tasks, return_exceptions=True)
    return sum(1 for r in results if r is True)


async def completions(database_url: str, started_at: float, timeout: float, reference: str) -> dict[str, Any]:
    """Wait until every payment made so far is final; latency of those with `reference`, by the ledger's clocks."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            counts = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'PENDING') AS pending, count(*) AS total"
                " FROM ledger.payment_requests"
            )
            intake_total = await conn.fetchval("SELECT count(*) FROM intake.payments")
            assert counts is not None
            if (counts["pending"] == 0 and counts["total"] == intake_total) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        rows = await conn.fetch(
            "SELECT extract(epoch FROM completed_at - created_at) AS seconds, created_at, completed_at"
            " FROM ledger.payment_requests WHERE status = 'SUCCEEDED' AND reference = $1",
            reference,
        )
        other = await conn.fetchval(
            "SELECT count(*) FROM ledger.payment_requests WHERE status <> 'SUCCEEDED' AND reference = $1", reference
        )
    finally:
        await conn.close()
    if not rows:
        return {"ops": 0, "errors": other, "per_second": 0.0, **percentiles([])}
    span = (max(r["completed_at"] for r in rows) - min(r["created_at"] for r in rows)).total_seconds()
    drain = time.monotonic() - started_at
    return {
        "ops": len(rows),
        "errors": other,
        "per_second": len(rows) / span if span > 0 else float("nan"),
        "drain_seconds": drain,
        **percentiles([float(r["seconds"]) for r in rows]),
    }


SATURATED = "paystream: created → SUCCEEDED, saturating POSTs (autopay)"


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'measurement':58} {'ops':>7} {'err':>5} {'per s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"]
    for name, r in results.items():
        lines.append(
            f"{name:58} {r['ops']:>7} {r['errors']:>5} {r['per_second']:>9.1f} {r['p50_ms']:>8.1f}"
            f" {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f}"
        )
    return "\n".join(lines)


async def main(seconds: float, concurrency: int, rate: float) -> None:
    servers = find_servers()
    results: dict[str, dict[str, Any]] = {}
    print(f"paystream bench: {os.cpu_count()} cores, {seconds:g} s a phase, concurrency {concurrency}", flush=True)

    results["raw: PostgreSQL one-row INSERT commits"] = await postgres_commits(
        servers.database_url, seconds, concurrency
    )
    results["raw: RabbitMQ confirmed persistent publishes (quorum)"] = await rabbitmq_confirms(
        servers.amqp_url, seconds, concurrency
    )
    results["raw: bare aiohttp POST (same client)"] = await bare_http(seconds, concurrency)

    database_url = await create_database(servers.database_url, migrations=())
    namespace = unique_name("psbench")
    env = stack_environment(database_url, servers.amqp_url, namespace, SANDBOX_AUTOPAY="succeed", LOG_LEVEL="WARNING")
    stack = Stack(env, Path(tempfile.mkdtemp(prefix="paystream-bench-")))
    try:
        await stack.start()
        started = time.monotonic()
        results["paystream: POST /v1/payments → 201 (Prefer: wait=0)"] = await intake_posts(stack, seconds, concurrency)
        results[SATURATED] = await completions(database_url, started, timeout=180, reference="saturate")
        started = time.monotonic()
        made = await paced_posts(stack, seconds, rate)
        paced = await completions(database_url, started, timeout=60, reference="paced")
        paced["errors"] += int(seconds * rate) - made
        results[f"paystream: created → SUCCEEDED at a steady {rate:g} payments/s"] = paced
    finally:
        stack.stop()
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(database_url)
        servers.stop()

    print(table(results))
    drain = results[SATURATED].get("drain_seconds")
    if drain is not None:
        print(f"every payment of the saturating POST phase was SUCCEEDED {drain:.1f} s after the phase began")
    out = ROOT / ".bench"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"written to {out / 'results.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=50.0, help="payments a second in the steady phase")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.concurrency, args.rate))
