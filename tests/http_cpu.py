"""`python -m tests.http_cpu [--webhooks N] [--concurrency C] [--rounds R] [--profile out.txt]`: the HTTP edge's CPU.

Starts one webhook_receiver process (stateless: no database) on a namespace of its own, as `make bench` runs it
(LOG_LEVEL=WARNING), and POSTs N correctly signed sandbox webhooks to it from C concurrent clients on one
keep-alive connection pool, in R rounds. Every request passes the whole edge every HTTP service shares (the
request span, problem_middleware, the router, body reading) and the receiver's own work (signature, parse, a
confirmed publish). Prints, for each round, the CPU seconds the receiver process spent (utime + stime from
/proc/<pid>/stat) divided by its webhooks, each checked answered 200 "accepted", then the least of the rounds.
With --profile, py-spy samples the receiver meanwhile and writes its collapsed stacks there. A diagnostic, like
`python -m tests.ledger_cpu`; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time

import aiohttp

from tests.support.cpu import cpu_seconds, measured_service, profiled
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


async def main(webhooks: int, concurrency: int, rounds: int, profile: str | None) -> None:
    bodies = [encode(sandbox_event(f"pay_{secrets.token_hex(16)}")) for _ in range(webhooks)]
    async with measured_service("webhook_receiver", LOG_LEVEL="WARNING", SANDBOX_WEBHOOK_SECRET=SECRET) as receiver:
        pid, url = receiver.pid, f"{receiver.service.url}/webhooks/sandbox"
        # A first round outside the measure: connections opened, code paths and caches warm.
        await send_all(url, bodies[: 2 * concurrency], concurrency)
        measured = bodies[2 * concurrency :]
        count = len(measured) // rounds
        per_webhook = []
        async with profiled(pid, profile):
            for n in range(rounds):
                started_cpu, started = cpu_seconds(pid), time.perf_counter()
                await send_all(url, measured[n * count : (n + 1) * count], concurrency)
                spent, elapsed = cpu_seconds(pid) - started_cpu, time.perf_counter() - started
                per_webhook.append(spent / count * 1000)
                print(
                    f"webhook_receiver: {count} webhooks at concurrency {concurrency} in {elapsed:.1f} s,"
                    f" {spent:.2f} CPU s, {per_webhook[-1]:.3f} ms CPU per webhook, {count / elapsed:.0f} webhooks/s"
                )
        # The least a round cost is the least disturbed by whatever else this machine runs meanwhile.
        print(json.dumps({"webhooks": count, "rounds": rounds, "min_cpu_ms_per_webhook": round(min(per_webhook), 3)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.http_cpu")
    parser.add_argument("--webhooks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds the webhooks are split into")
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the webhook_receiver here")
    args = parser.parse_args()
    asyncio.run(main(args.webhooks, args.concurrency, args.rounds, args.profile))
