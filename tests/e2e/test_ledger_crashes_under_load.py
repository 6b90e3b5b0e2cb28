"""The ledger SIGKILLed in the middle of its batches, several times, under a saturating load (issue 9).

Payments are posted as fast as the intake takes them and completed by the sandbox's autopay; meanwhile the
ledger is killed whenever it is busy recording (its log growing towards the total), then started again. A
batch that was being written is rolled back or, if it committed, redelivered; either way nothing acked was
uncommitted. Afterwards every accepted payment has its whole history, each event once, every status change
with its log row, and nothing was dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from shared.broker import Broker
from shared.db import create_pool
from tests.support.client import IntakeClient, payment_body
from tests.support.infra import Servers
from tests.support.own_stack import own_stack
from tests.support.processes import Stack, eventually

KILLS = 3
WAVE = 100  # payments per kill
PAYMENTS = KILLS * WAVE
POSTERS = 16
KILL_AT = 0.3  # the share of a wave's events recorded when the ledger is killed
EVENTS_PER_PAYMENT = 3  # payment.requested, payment.intent_created, payment.status_changed


@pytest.fixture(scope="module")
async def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("ledger_crashes"),
        ("intake_api", "gateway_worker", "webhook_receiver", "ledger", "sandbox_gateway"),
        SANDBOX_AUTOPAY="succeed",
    ) as running:
        yield running


async def post_payments(intake: IntakeClient, count: int) -> list[str]:
    """`count` payments from `POSTERS` concurrent clients; the ids of those accepted (201)."""
    accepted: list[str] = []
    remaining = iter(range(count))

    async def poster() -> None:
        for _ in remaining:
            status, body, _ = await intake.create(payment_body(reference=f"crash-{secrets.token_hex(4)}"), wait=0)
            assert status == 201, body
            accepted.append(body["id"])

    await asyncio.gather(*(poster() for _ in range(POSTERS)))
    return accepted


async def test_a_ledger_killed_mid_batch_again_and_again_loses_and_doubles_nothing(stack: Stack) -> None:
    pool = await create_pool(stack.env["DATABASE_URL"], max_size=2)
    try:
        async with aiohttp.ClientSession() as http:
            intake = IntakeClient(http, stack.url("intake_api"))
            ledger = stack["ledger"]
            accepted: list[str] = []
            killed_with_work_left = 0
            for _ in range(KILLS):
                # A wave of payments posted as fast as the intake takes them; the ledger is killed once it has
                # recorded KILL_AT of the wave's events, while the rest are still coming.
                logged_before = await logged(pool)
                posting = asyncio.create_task(post_payments(intake, WAVE))
                wave_events = WAVE * EVENTS_PER_PAYMENT

                async def busy(threshold: int = logged_before + int(wave_events * KILL_AT)) -> bool:
                    return await logged(pool) >= threshold

                await eventually(busy, timeout=120, interval=0.02, what="the ledger recording the wave")
                ledger.kill()
                if await logged(pool) < logged_before + wave_events:
                    killed_with_work_left += 1
                ledger.start()
                await ledger.wait_ready()
                accepted += await posting

            async def all_succeeded() -> bool:
                query = (
                    "SELECT count(*) FROM ledger.payment_requests WHERE id = ANY($1::text[]) AND status = 'SUCCEEDED'"
                )
                return int(await pool.fetchval(query, accepted)) == len(accepted)

            await eventually(all_succeeded, timeout=180, interval=0.5, what="every payment SUCCEEDED")

        assert len(accepted) == PAYMENTS
        assert killed_with_work_left == KILLS
        assert largest_batch(stack["ledger"].log_text()) > 1, "the load never made the ledger write a batch"
        await assert_histories_complete(pool, accepted)
        assert await dead_letters(stack) == 0
    finally:
        await pool.close()


async def logged(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM ledger.payment_logs"))


def largest_batch(log_text: str) -> int:
    """The largest batch the ledger's log reports having recorded an event in."""
    sizes = [0]
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "event recorded":
            sizes.append(int(entry.get("batch", 1)))
    return max(sizes)


async def assert_histories_complete(pool: asyncpg.Pool, payment_ids: list[str]) -> None:
    rows = await pool.fetch(
        "SELECT payment_request_id, event_id, event_type, from_status, to_status, outcome FROM ledger.payment_logs"
        " WHERE payment_request_id = ANY($1::text[]) ORDER BY id",
        payment_ids,
    )
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)), "an event_id was logged twice"
    # The webhook may overtake the intent's event at the ledger, so the order of these is free; each applied once.
    applied: dict[str, list[tuple[str, str | None, str]]] = {p: [] for p in payment_ids}
    for r in rows:
        if r["outcome"] == "applied":
            applied[r["payment_request_id"]].append((r["event_type"], r["from_status"], r["to_status"]))
    incomplete = {
        p: got
        for p, got in applied.items()
        if sorted(t for t, _, _ in got) != ["payment.intent_created", "payment.requested", "payment.status_changed"]
        or ("payment.status_changed", "PENDING", "SUCCEEDED") not in got
    }
    assert incomplete == {}
    unlogged = await pool.fetch(
        """
        SELECT p.id FROM ledger.payment_requests p
        WHERE p.id = ANY($1::text[]) AND p.status <> 'PENDING' AND NOT EXISTS (
            SELECT 1 FROM ledger.payment_logs l
            WHERE l.payment_request_id = p.id AND l.outcome = 'applied' AND l.to_status = p.status
              AND l.from_status IS DISTINCT FROM l.to_status)
        """,
        payment_ids,
    )
    assert unlogged == [], "a status change without its log row"


async def dead_letters(stack: Stack) -> int:
    broker = Broker(stack.env["AMQP_URL"], stack.env["BROKER_NAMESPACE"], name="test-crashes")
    await broker.connect()
    try:
        return await broker.dlq_depth("ledger")
    finally:
        await broker.close()
