"""`python -m tests.ledger_cpu [--payments N] [--rate R] [--profile out.txt]`: the ledger's CPU per event, measured.

Starts one ledger process on a database and namespace of its own, publishes N payments' events through the real
broker (every payment.requested, then every payment.intent_created, then every payment.status_changed, each
phase awaited until the ledger has recorded it, so no event waits in a delay queue), and prints the CPU seconds
the ledger process spent (utime + stime from /proc/<pid>/stat) divided by the events it recorded. With --rate,
the events are published one by one at R a second instead of all at once: what an event costs when it comes alone
(a batch of one), as at a low steady rate. With
--profile, py-spy samples the ledger meanwhile and writes its collapsed stacks there. A diagnostic for whoever
changes the ledger's hot path, like `make bench`; not a test (it asserts nothing about time).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

from shared.broker import Broker
from shared.events import Envelope, PaymentStatus
from tests.support.cpu import cpu_seconds, measured_service, profiled, publish_all
from tests.support.payment_histories import intent_created, requested, status_changed
from tests.support.processes import eventually


async def paced(broker: Broker, envelopes: Sequence[Envelope], rate: float) -> None:
    """Publish `envelopes` one at a time, `rate` a second."""
    started = time.perf_counter()
    for n, envelope in enumerate(envelopes):
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        await broker.publish(envelope)


async def main(payments: int, profile: str | None, rate: float | None = None) -> None:
    async with measured_service("ledger", application_name="ledger-cpu", EXPIRY_SWEEP_INTERVAL_SECONDS="5") as measured:
        pid, pool = measured.pid, measured.pool
        ids = [f"pay_{secrets.token_hex(8)}" for _ in range(payments)]
        query = "SELECT count(*) FROM ledger.payment_logs"

        def recorded(count: int) -> Callable[[], Awaitable[bool]]:
            async def probe() -> bool:
                return int(await pool.fetchval(query)) >= count

            return probe

        async with profiled(pid, profile):
            started_cpu, started = cpu_seconds(pid), time.perf_counter()
            phases = [
                [requested(p) for p in ids],
                [intent_created(p) for p in ids],
                [status_changed(p, PaymentStatus.SUCCEEDED, "webhook", "paid") for p in ids],
            ]
            for n, phase in enumerate(phases, start=1):
                await (paced(measured.broker, phase, rate) if rate else publish_all(measured.broker, phase))
                await eventually(recorded(n * payments), timeout=600, interval=0.2, what=f"phase {n} recorded")
            spent, elapsed = cpu_seconds(pid) - started_cpu, time.perf_counter() - started
    events = 3 * payments
    print(
        f"ledger: {events} events in {elapsed:.1f} s, {spent:.2f} CPU s,"
        f" {spent / events * 1000:.3f} ms CPU per event, {events / elapsed:.0f} events/s"
        + (f" (published one by one, {rate:g} a second)" if rate else "")
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.ledger_cpu")
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--rate", type=float, help="publish the events one by one, this many a second")
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the ledger here")
    args = parser.parse_args()
    asyncio.run(main(args.payments, args.profile, args.rate))
