"""Two intake processes on one database, as real processes: one outbox shared by two relays gets every payment
to the ledger; a starting intake purges idempotency keys past retention (CONTRACT §3)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.infra import Servers
from tests.support.intake_deployment import Deployment, deployment, stop
from tests.support.processes import eventually, free_port

PAYMENTS = 30


@pytest.fixture(scope="module")
async def two_intakes(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    services = {
        "intake_a": ("intake_api", {}),
        "intake_b": ("intake_api", {"INTAKE_PORT": str(free_port())}),
        "ledger": ("ledger", {}),
    }
    async with deployment(servers, tmp_path_factory.mktemp("two_intakes"), services) as running:
        yield running


async def test_two_intake_processes_sharing_one_outbox_get_every_payment_to_the_ledger(
    two_intakes: Deployment, http_session: aiohttp.ClientSession
) -> None:
    clients = [two_intakes.client(http_session, "intake_a"), two_intakes.client(http_session, "intake_b")]

    answers = await asyncio.gather(*(clients[i % 2].create(wait=0) for i in range(PAYMENTS)))

    assert [status for status, _, _ in answers] == [201] * PAYMENTS
    payment_ids = [payment["id"] for _, payment, _ in answers]

    async def all_in_ledger() -> bool:
        return await two_intakes.in_ledger(payment_ids) == PAYMENTS

    await eventually(all_in_ledger, timeout=30, what=f"all {PAYMENTS} payments in the ledger")
    recorded = (
        "SELECT count(*) FROM ledger.payment_logs"
        " WHERE event_type = 'payment.requested' AND payment_request_id = ANY($1::text[])"
    )
    assert await two_intakes.pool.fetchval(recorded, payment_ids) == PAYMENTS


async def test_a_starting_intake_purges_keys_past_retention_in_the_background(
    two_intakes: Deployment, http_session: aiohttp.ClientSession
) -> None:
    status, payment, _ = await two_intakes.client(http_session, "intake_b").create(wait=0)
    assert status == 201

    async def in_ledger() -> bool:
        return await two_intakes.in_ledger([payment["id"]]) == 1

    await eventually(in_ledger, what="the payment in the ledger")
    await two_intakes.pool.execute(
        "UPDATE intake.payments SET created_at = now() - interval '25 hours' WHERE id = $1", payment["id"]
    )
    restarted = two_intakes.processes["intake_b"]
    await stop(restarted)
    restarted.start()  # the purge runs at start, then hourly
    await restarted.wait_ready()

    async def purged() -> bool:
        return not await two_intakes.pool.fetchval("SELECT count(*) FROM intake.payments WHERE id = $1", payment["id"])

    await eventually(purged, what="the intake's purge to forget the key")
