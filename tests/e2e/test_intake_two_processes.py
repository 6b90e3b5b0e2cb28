"""Two intake processes on one database, as real processes: one outbox shared by two relays gets every payment
to the ledger; the gateway's answer to a POST that waits reaches the intake it waits in and no other, and a POST
that does not wait is answered to nobody; a starting intake purges idempotency keys past retention
(docs/reference/intake-api.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.infra import Servers
from tests.support.intake_deployment import Deployment, deployment, stop, two_intake_processes
from tests.support.processes import eventually

PAYMENTS = 30


@pytest.fixture(scope="module")
async def two_intakes(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    services = two_intake_processes({"ledger": {}, "gateway_worker": {}, "sandbox_gateway": {}})
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


async def intent_outcomes_heard(http: aiohttp.ClientSession, deployment: Deployment, label: str) -> float:
    """How many intent outcomes this intake process has received on its queue, from its GET /metrics."""
    async with http.get(f"{deployment.processes[label].url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "paystream_events_processed_total"
        and sample.labels.get("consumer") == "intake_api"
        and sample.labels.get("event_type") in ("payment.intent_created", "payment.intent_failed")
    )


async def test_an_intent_outcome_reaches_only_the_intake_whose_request_waits_for_it(
    two_intakes: Deployment, http_session: aiohttp.ClientSession
) -> None:
    a, b = two_intakes.client(http_session, "intake_a"), two_intakes.client(http_session, "intake_b")
    before = {
        label: await intent_outcomes_heard(http_session, two_intakes, label) for label in ("intake_a", "intake_b")
    }

    unwaited = await asyncio.gather(a.create(wait=0), b.create(wait=0), a.create(wait=0), b.create(wait=0))
    status, waited, headers = await a.create(wait=10)

    assert status == 201 and headers["Preference-Applied"] == "wait=10"
    assert waited["checkout_url"], waited
    assert [s for s, _, _ in unwaited] == [201] * 4
    ids = [payment["id"] for _, payment, _ in unwaited] + [waited["id"]]

    async def intents_recorded() -> bool:
        query = "SELECT count(*) FROM ledger.payment_requests WHERE id = ANY($1::text[]) AND checkout_url IS NOT NULL"
        return await two_intakes.pool.fetchval(query, ids) == len(ids)

    # Every outcome has been published (the ledger holds each intent) ...
    await eventually(intents_recorded, timeout=30, what="every intent in the ledger")

    async def heard_by_a() -> float | None:
        heard = await intent_outcomes_heard(http_session, two_intakes, "intake_a") - before["intake_a"]
        return heard or None

    # ... and of the five, intake_a heard the one it waited for, intake_b none.
    assert await eventually(heard_by_a, what="intake_a's answer counted") == 1
    await asyncio.sleep(0.5)
    assert await intent_outcomes_heard(http_session, two_intakes, "intake_a") - before["intake_a"] == 1
    assert await intent_outcomes_heard(http_session, two_intakes, "intake_b") - before["intake_b"] == 0


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
