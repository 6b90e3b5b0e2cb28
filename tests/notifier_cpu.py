"""`python -m tests.notifier_cpu [--payments N] [--rate R] [--profile out.txt]`: the notifier's CPU per payment.

Starts one notifier process on a database and namespace of its own, with N payments written straight into the
ledger's table and one merchant endpoint (every event type) served by a receiver in this process. It then
publishes, through the real broker, what the ledger announces of each payment: every `payment.created`, then (the
payments marked succeeded first, as the ledger commits before it announces) every `payment.succeeded`, each phase
at once (or R records a second, a steady stream like `make bench`'s) and awaited until every delivery is recorded
delivered. Prints the CPU seconds the notifier process spent (utime + stime from /proc/<pid>/stat) divided by the
payments, the same of the PostgreSQL processes serving its connections (when the server runs on this machine;
its background writers are not counted), and checks that each delivery the receiver got verifies with the
endpoint's secret and carries the payment as it stood then. With --profile, py-spy samples the notifier meanwhile
and writes its collapsed stacks there. A diagnostic, like `python -m tests.ledger_cpu`; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from standardwebhooks import Webhook

from shared.broker import Broker
from shared.events import Envelope, PaymentStatus, PaymentStatusRecorded
from tests.support.cpu import cpu_seconds, measured_service, profiled, publish_all
from tests.support.merchant_receiver import MerchantReceiver
from tests.support.notifier_rows import insert_endpoint, insert_payments, set_status
from tests.support.processes import eventually

MERCHANT = "demo"
HARNESS = "notifier-cpu"  # the application_name of this harness's own connections


async def notifier_backends(pool: asyncpg.Pool) -> list[int]:
    """The PostgreSQL server processes serving the notifier's connections (every one to this database but ours)."""
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
        " AND application_name <> $1",
        HARNESS,
    )
    return [int(r["pid"]) for r in rows]


def recorded(previous: PaymentStatus | None, status: PaymentStatus, payment_ids: list[str]) -> list[Envelope]:
    """What the ledger publishes when it commits `status` for each payment."""
    return [
        Envelope.wrap(
            PaymentStatusRecorded(from_status=previous, status=status, ledger_event_id=str(uuid.uuid4())),
            payment_id=payment_id,
            source="ledger",
        )
        for payment_id in payment_ids
    ]


def check_deliveries(receiver: MerchantReceiver, secret: str, expected: dict[str, str], payments: int) -> int:
    """Every delivery verifies and carries its payment in the status it had; the number of duplicates."""
    webhook = Webhook(secret)
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    for request in receiver.received:
        body = webhook.verify(request.body, request.headers)
        assert isinstance(body, dict)
        payment = body["data"]["object"]
        assert payment["status"] == expected[body["type"]], body
        key = (body["type"], payment["id"])
        duplicates += key in seen
        seen.add(key)
    assert len(seen) == 2 * payments, f"{len(seen)} distinct deliveries for {payments} payments"
    return duplicates


async def publish_at(broker: Broker, envelopes: list[Envelope], rate: float | None) -> None:
    """All at once (rate None: a burst, the most a batch can gather), or `rate` a second, as a steady stream."""
    if rate is None:
        await publish_all(broker, envelopes)
        return
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    next_at = time.perf_counter()
    for start in range(0, len(envelopes), per_tick):
        await publish_all(broker, envelopes[start : start + per_tick])
        next_at += per_tick / rate
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def main(payments: int, profile: str | None, rate: float | None) -> None:
    receiver = MerchantReceiver()
    await receiver.start()
    try:
        # As `make bench` runs it: logging at WARNING, so what is measured is the work, not the log lines.
        async with measured_service(
            "notifier", migrations=("ledger",), application_name=HARNESS, LOG_LEVEL="WARNING"
        ) as measured:
            pid, pool = measured.pid, measured.pool
            secret = await insert_endpoint(pool, "we_cpu", MERCHANT, receiver.url)
            ids = [f"pay_{secrets.token_hex(16)}" for _ in range(payments)]
            await insert_payments(pool, ids, MERCHANT)

            def delivered(count: int) -> Callable[[], Awaitable[bool]]:
                async def probe() -> bool:
                    query = "SELECT count(*) FROM notifier.deliveries WHERE status = 'delivered'"
                    return int(await pool.fetchval(query)) >= count

                return probe

            async def succeed() -> None:
                await set_status(pool, ids, "SUCCEEDED")

            phases: list[tuple[Callable[[], Awaitable[None]] | None, list[Envelope]]] = [
                (None, recorded(None, PaymentStatus.PENDING, ids)),
                (succeed, recorded(PaymentStatus.PENDING, PaymentStatus.SUCCEEDED, ids)),
            ]
            async with profiled(pid, profile):
                started_cpu, started = cpu_seconds(pid), time.perf_counter()
                backends_before = {p: cpu_seconds(p) for p in await notifier_backends(pool)}
                for n, (before, phase) in enumerate(phases, start=1):
                    if before is not None:
                        await before()
                    await publish_at(measured.broker, phase, rate)
                    await eventually(delivered(n * payments), timeout=600, interval=0.2, what=f"phase {n} delivered")
                spent, elapsed = cpu_seconds(pid) - started_cpu, time.perf_counter() - started
                backends = await notifier_backends(pool)
                database_spent = sum(cpu_seconds(p) - backends_before.get(p, 0.0) for p in backends)
                gone = len(set(backends_before) - set(backends))
            duplicates = check_deliveries(
                receiver, secret, {"payment.created": "PENDING", "payment.succeeded": "SUCCEEDED"}, payments
            )
            attempts = int(await pool.fetchval("SELECT count(*) FROM notifier.delivery_attempts"))
            print(
                f"notifier: {payments} payments ({2 * payments} events, {attempts} attempts, {duplicates} duplicate"
                f" POSTs) in {elapsed:.1f} s, {spent:.2f} CPU s, {spent / payments * 1000:.3f} ms CPU per payment,"
                f" {payments / elapsed:.0f} payments/s"
            )
            print(
                f"its PostgreSQL backends: {database_spent:.2f} CPU s,"
                f" {database_spent / payments * 1000:.3f} ms CPU per payment"
                f" ({len(backends)} backends{f', {gone} gone meanwhile, not counted' if gone else ''})"
            )
            figures = {
                "payments": payments,
                "cpu_ms_per_payment": round(spent / payments * 1000, 3),
                "postgres_cpu_ms_per_payment": round(database_spent / payments * 1000, 3),
            }
            print(json.dumps(figures))
    finally:
        await receiver.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.notifier_cpu")
    parser.add_argument("--payments", type=int, default=1000)
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the notifier here")
    parser.add_argument(
        "--rate", type=float, help="publish this many records a second (default: each phase at once, a burst)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.payments, args.profile, args.rate))
