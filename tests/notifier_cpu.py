"""`python -m tests.notifier_cpu [--payments N] [--profile out.txt]`: the notifier's CPU per payment, measured.

Starts one notifier process on a database and namespace of its own, with N payments written straight into the
ledger's table and one merchant endpoint (every event type) served by a receiver in this process. It then
publishes, through the real broker, what the ledger announces of each payment: every `payment.created`, then (the
payments marked succeeded first, as the ledger commits before it announces) every `payment.succeeded`, each phase
awaited until every delivery is recorded delivered. Prints the CPU seconds the notifier process spent (utime +
stime from /proc/<pid>/stat) divided by the payments, and checks that each delivery the receiver got verifies
with the endpoint's secret and carries the payment as it stood then. With --profile, py-spy samples the notifier
meanwhile and writes its collapsed stacks there. A diagnostic, like `python -m tests.ledger_cpu`; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from pydantic import SecretStr
from standardwebhooks import Webhook

from shared.broker import Broker
from shared.config import DEV_WEBHOOK_SECRETS_KEY
from shared.events import Envelope, PaymentStatus, PaymentStatusRecorded
from shared.webhook_secrets import SecretBox, new_signing_secret
from tests.support.cpu import cpu_seconds, profiled, publish_all
from tests.support.infra import create_database, delete_namespace, drop_database, find_servers, unique_name
from tests.support.merchant_receiver import MerchantReceiver
from tests.support.processes import ServiceProcess, eventually, stack_environment

MERCHANT = "demo"

_INSERT_PAYMENTS = """
INSERT INTO ledger.payment_requests
    (id, merchant_id, idempotency_key, request_fingerprint, reference, amount, currency, metadata, return_url,
     status, created_at, updated_at, expires_at)
SELECT id, $2, 'key-' || id, repeat('f', 64), 'order-' || id, 1999, 'USD', '{"cart": "42"}'::jsonb,
       'https://shop.example/done', 'PENDING', $3, $3, $4
FROM unnest($1::text[]) AS id
"""


def recorded(
    previous: PaymentStatus | None, status: PaymentStatus, payment_ids: list[str]
) -> list[tuple[str, Envelope]]:
    """What the ledger publishes when it commits `status` for each payment: (merchant event type, envelope)."""
    found = []
    for payment_id in payment_ids:
        message = PaymentStatusRecorded(from_status=previous, status=status, ledger_event_id=str(uuid.uuid4()))
        found.append((message.merchant_event_type, Envelope.wrap(message, payment_id=payment_id, source="ledger")))
    return found


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


async def main(payments: int, profile: str | None) -> None:
    servers = find_servers()
    database_url = await create_database(servers.database_url, migrations=("ledger",))
    namespace = unique_name("pscpu")
    # As `make bench` runs it: logging at WARNING, so what is measured is the work, not the log lines.
    env = stack_environment(database_url, servers.amqp_url, namespace, LOG_LEVEL="WARNING")
    notifier = ServiceProcess("notifier", env, Path(tempfile.mkdtemp(prefix="notifier-cpu-")))
    broker = Broker(servers.amqp_url, namespace, name="notifier-cpu")
    receiver = MerchantReceiver()
    pool = None
    try:
        await receiver.start()
        notifier.start()
        await notifier.wait_ready()
        assert notifier.process is not None
        pid = notifier.process.pid
        await broker.connect()
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        secret = new_signing_secret()
        sealed = SecretBox([SecretStr(DEV_WEBHOOK_SECRETS_KEY)]).seal(secret)
        await pool.execute(
            "INSERT INTO notifier.webhook_endpoints (id, merchant_id, url, events, secret_sealed)"
            " VALUES ('we_cpu', $1, $2, '{*}', $3)",
            MERCHANT,
            receiver.url,
            sealed,
        )
        ids = [f"pay_{secrets.token_hex(16)}" for _ in range(payments)]
        now = datetime.now(UTC)
        await pool.execute(_INSERT_PAYMENTS, ids, MERCHANT, now, now + timedelta(minutes=30))

        def delivered(count: int) -> Callable[[], Awaitable[bool]]:
            async def probe() -> bool:
                query = "SELECT count(*) FROM notifier.deliveries WHERE status = 'delivered'"
                return int(await pool.fetchval(query)) >= count

            return probe

        async def succeed() -> None:
            await pool.execute(
                "UPDATE ledger.payment_requests SET status = 'SUCCEEDED', updated_at = clock_timestamp(),"
                " version = version + 1 WHERE id = ANY ($1)",
                ids,
            )

        phases: list[tuple[Callable[[], Awaitable[None]] | None, list[tuple[str, Envelope]]]] = [
            (None, recorded(None, PaymentStatus.PENDING, ids)),
            (succeed, recorded(PaymentStatus.PENDING, PaymentStatus.SUCCEEDED, ids)),
        ]
        async with profiled(pid, profile):
            started_cpu, started = cpu_seconds(pid), time.perf_counter()
            for n, (before, phase) in enumerate(phases, start=1):
                if before is not None:
                    await before()
                await publish_all(broker, [envelope for _, envelope in phase])
                await eventually(delivered(n * payments), timeout=600, interval=0.2, what=f"phase {n} delivered")
            spent, elapsed = cpu_seconds(pid) - started_cpu, time.perf_counter() - started
        duplicates = check_deliveries(
            receiver, secret, {"payment.created": "PENDING", "payment.succeeded": "SUCCEEDED"}, payments
        )
        attempts = int(await pool.fetchval("SELECT count(*) FROM notifier.delivery_attempts"))
        print(
            f"notifier: {payments} payments ({2 * payments} events, {attempts} attempts, {duplicates} duplicate"
            f" POSTs) in {elapsed:.1f} s, {spent:.2f} CPU s, {spent / payments * 1000:.3f} ms CPU per payment,"
            f" {payments / elapsed:.0f} payments/s"
        )
        print(json.dumps({"payments": payments, "cpu_ms_per_payment": round(spent / payments * 1000, 3)}))
    finally:
        notifier.stop()
        await receiver.stop()
        await broker.close()
        if pool is not None:
            await pool.close()
        await delete_namespace(servers.amqp_url, namespace)
        await drop_database(database_url)
        servers.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.notifier_cpu")
    parser.add_argument("--payments", type=int, default=1000)
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the notifier here")
    args = parser.parse_args()
    asyncio.run(main(args.payments, args.profile))
