"""`python -m tests.intake_cpu [--posts N] [--concurrency C] [--wait S] [--profile out.txt]`: the intake's CPU
per POST, measured.

Starts one intake_api process on a database and namespace of its own (the ledger's schema migrated, as its
deployer would have left it; no other service runs, so nothing answers a wait and the queues only fill). Then
POSTs N payments at it from C concurrent clients in this process (`Prefer: wait=S`, 0 by default as `make bench`
sends them), and waits until its outbox relay has published every row. Prints the CPU seconds the intake process
spent over that (utime + stime from /proc/<pid>/stat) divided by the POSTs: the HTTP request and the relay's
publish of its row. With --profile, py-spy samples the intake meanwhile and writes its collapsed stacks there.
A diagnostic, like `python -m tests.ledger_cpu`; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time

import aiohttp

from tests.support.client import payment_body
from tests.support.cpu import cpu_seconds, measured_service, profiled
from tests.support.processes import eventually

API_KEY = "sk_test_demo"


async def post_all(url: str, posts: int, concurrency: int, wait: float) -> None:
    """POST `posts` new payments, `concurrency` at a time; every answer must be a 201."""
    remaining = iter(range(posts))
    headers = {"Authorization": f"Bearer {API_KEY}", "Prefer": f"wait={wait:g}"}

    async def client(http: aiohttp.ClientSession) -> None:
        for _ in remaining:
            sent = {**headers, "Idempotency-Key": secrets.token_hex(12)}
            async with http.post(f"{url}/v1/payments", json=payment_body(), headers=sent) as response:
                assert response.status == 201, f"{response.status}: {await response.text()}"
                await response.read()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))


async def main(posts: int, concurrency: int, wait: float, profile: str | None) -> None:
    # As `make bench` runs it: logging at WARNING, so what is measured is the work, not the log lines.
    async with measured_service("intake_api", migrations=("ledger",), LOG_LEVEL="WARNING") as measured:
        intake, pid, pool = measured.service, measured.pid, measured.pool
        await post_all(intake.url, 20, 4, wait)  # warm-up: connections, caches, prepared statements

        async def relayed() -> bool:
            return not await pool.fetchval("SELECT count(*) FROM intake.outbox WHERE published_at IS NULL")

        await eventually(relayed, timeout=60, interval=0.1, what="the warm-up relayed")
        async with profiled(pid, profile):
            started_cpu, started = cpu_seconds(pid), time.perf_counter()
            await post_all(intake.url, posts, concurrency, wait)
            answered = time.perf_counter() - started
            await eventually(relayed, timeout=600, interval=0.1, what="every row relayed")
            spent, elapsed = cpu_seconds(pid) - started_cpu, time.perf_counter() - started
    print(
        f"intake_api: {posts} POSTs (wait={wait:g}, {concurrency} clients) answered in {answered:.1f} s"
        f" ({posts / answered:.0f}/s), relayed in {elapsed:.1f} s; {spent:.2f} CPU s,"
        f" {spent / posts * 1000:.3f} ms CPU per POST"
    )
    print(json.dumps({"posts": posts, "cpu_ms_per_post": round(spent / posts * 1000, 3)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--wait", type=float, default=0.0)
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the intake here")
    args = parser.parse_args()
    asyncio.run(main(args.posts, args.concurrency, args.wait, args.profile))
