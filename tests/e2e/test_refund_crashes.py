"""Refunds while the gateway_worker and the ledger are SIGKILLed (docs/reference/refunds.md).

Paid payments are refunded in part, several times, all at once beyond what they took, in full, and (paid with the
5126 card) with refunds that fail; the sandbox delivers half its webhooks twice and out of order, and settles each
refund a second after it is asked. Meanwhile the gateway_worker is killed while it asks the sandbox for refunds,
then the ledger while it records their outcomes, each started again; what a killed process was doing is delivered
again and asks the sandbox again under the refund's id, which answers the refund it already made.

Throughout, no payment ever has more pending plus succeeded refunds than it took. Afterwards every refund is
succeeded or failed, as the sandbox has it; the sandbox made one refund per refund of ours (none applied twice);
the ledger logged one final change per refund; and each payment's amount_refunded is the sum of its succeeded
refunds.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from shared.db import create_pool
from tests.support.client import IntakeClient, payment_body, simulate_card
from tests.support.infra import Servers
from tests.support.own_stack import own_stack
from tests.support.processes import Stack, eventually

PAYMENTS = 25
AMOUNT = 1000
REFUND_FAILING_CARD = "4000000000005126"
# What is asked of each payment, in turn: the refund amounts (None: what is left), all sent at once.
PLANS: tuple[tuple[int | None, ...], ...] = (
    (300,),  # a partial refund
    (200, 300, 500),  # repeated refunds up to the whole amount
    (300, 300, 300, 300, 300),  # concurrent refunds beyond the amount: three fit
    (None,),  # all of it
    (400, None),  # a part and the rest, at once
)

# Pending plus succeeded refunds of each payment, against what it took (the intake's reservations and the
# ledger's statuses, read in one statement).
_OVER_THE_LIMIT = """
SELECT p.id, p.amount_captured, sum(r.amount) AS reserved
FROM ledger.payment_requests p
JOIN intake.refunds r ON r.payment_id = p.id
LEFT JOIN ledger.refunds l ON l.id = r.id
WHERE p.id = ANY($1::text[]) AND coalesce(l.status, 'pending') <> 'failed'
GROUP BY p.id, p.amount_captured
HAVING sum(r.amount) > p.amount_captured
"""


@pytest.fixture(scope="module")
async def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("refund_crashes"),
        ("intake_api", "gateway_worker", "webhook_receiver", "ledger", "sandbox_gateway"),
        GATEWAY_RETRY_BASE_SECONDS="0.2",
        LEDGER_RETRY_BASE_SECONDS="0.2",
        # A refund whose outcome is lost with a killed process is looked up at the sandbox after 5 s.
        RECONCILE_AFTER_SECONDS="5",
        RECONCILE_INTERVAL_SECONDS="3",
        EXPIRY_SWEEP_INTERVAL_SECONDS="1",
    ) as running:
        yield running


async def paid_payments(http: aiohttp.ClientSession, intake: IntakeClient) -> list[dict[str, Any]]:
    """PAYMENTS payments of AMOUNT, every fifth paid with the card whose refunds fail."""

    async def one(i: int) -> dict[str, Any]:
        status, payment, _ = await intake.create(payment_body(amount=AMOUNT), wait=10)
        assert status == 201 and payment["checkout_url"], payment
        await simulate_card(http, payment["checkout_url"], REFUND_FAILING_CARD if i % 5 == 4 else "4242424242424242")
        return payment

    payments = await asyncio.gather(*(one(i) for i in range(PAYMENTS)))
    for payment in payments:
        assert (await intake.terminal(payment["id"]))["status"] == "SUCCEEDED"
    return list(payments)


async def refund_all(intake: IntakeClient, payment_id: str, amounts: tuple[int | None, ...]) -> list[str]:
    """The plan's refunds of one payment, sent at once; the ids of those accepted (the others refused as over)."""
    answers = await asyncio.gather(
        *(intake.refund(payment_id, None if amount is None else {"amount": amount}) for amount in amounts)
    )
    accepted = [body["id"] for status, body, _ in answers if status == 201]
    refused = [body for status, body, _ in answers if status != 201]
    assert all(body["type"].endswith("amount-exceeds-refundable") for body in refused), refused
    return accepted


async def test_refunds_survive_sigkills_of_the_gateway_worker_and_the_ledger_and_duplicated_webhooks(
    stack: Stack,
) -> None:
    pool = await create_pool(stack.env["DATABASE_URL"], max_size=3)
    over_the_limit: list[Any] = []

    async def watch_the_limit(payment_ids: list[str]) -> None:
        while True:
            over_the_limit.extend(await pool.fetch(_OVER_THE_LIMIT, payment_ids))
            await asyncio.sleep(0.05)

    try:
        async with aiohttp.ClientSession() as http:
            intake = IntakeClient(http, stack.url("intake_api"))
            payments = await paid_payments(http, intake)
            ids = [p["id"] for p in payments]
            async with http.post(
                f"{stack.url('sandbox_gateway')}/_sandbox/faults",
                json={"webhook_duplicate_rate": 0.5, "webhook_shuffle": True, "refund_delay_seconds": 1},
                headers=stack.sandbox_admin_headers,
            ) as response:
                assert response.status == 200, await response.text()
            watcher = asyncio.create_task(watch_the_limit(ids))

            async def finals() -> int:
                return int(await pool.fetchval("SELECT count(*) FROM ledger.refunds WHERE status <> 'pending'"))

            # The gateway_worker dies while refunds are being asked for.
            refunding = asyncio.gather(*(refund_all(intake, pid, PLANS[i % len(PLANS)]) for i, pid in enumerate(ids)))
            await eventually(
                lambda: pool.fetchval("SELECT count(*) > 5 FROM intake.refunds"), timeout=30, interval=0.02
            )
            stack["gateway_worker"].kill()
            accepted = [refund_id for ids_of_one in await refunding for refund_id in ids_of_one]
            unsettled_at_gateway_kill = len(accepted) - await finals()
            await asyncio.sleep(0.5)
            stack["gateway_worker"].start()
            await stack["gateway_worker"].wait_ready()

            # Then the ledger dies while the sandbox's outcomes are coming in.
            await eventually(lambda: finals_at_least(pool, len(accepted) // 3), timeout=60, interval=0.02)
            stack["ledger"].kill()
            unrecorded_at_ledger_kill = len(accepted) - await finals()
            await asyncio.sleep(0.5)
            stack["ledger"].start()
            await stack["ledger"].wait_ready()

            async def all_final() -> bool:
                return await finals() == len(accepted)

            await eventually(all_final, timeout=120, interval=0.5, what="every refund succeeded or failed")
            await asyncio.sleep(2)  # late duplicate webhooks land now: they must change nothing
            watcher.cancel()
            # Each was killed with work left to do, or the test proved nothing.
            assert unsettled_at_gateway_kill > 0 and unrecorded_at_ledger_kill > 0

            await assert_every_refund_as_the_sandbox_has_it_and_made_once(http, stack, pool, payments, accepted)
        assert over_the_limit == [], "pending plus succeeded refunds above what a payment took"
        await assert_one_final_change_per_refund_and_amounts_refunded(pool, ids, accepted)
    finally:
        await pool.close()


async def finals_at_least(pool: asyncpg.Pool, n: int) -> bool:
    return int(await pool.fetchval("SELECT count(*) FROM ledger.refunds WHERE status <> 'pending'")) >= n


async def assert_every_refund_as_the_sandbox_has_it_and_made_once(
    http: aiohttp.ClientSession, stack: Stack, pool: asyncpg.Pool, payments: list[dict[str, Any]], accepted: list[str]
) -> None:
    rows = {
        r["id"]: r
        for r in await pool.fetch(
            "SELECT r.id, r.status, r.failure_code, r.amount, p.provider_payment_id FROM ledger.refunds r"
            " JOIN ledger.payment_requests p ON p.id = r.payment_request_id WHERE r.id = ANY($1::text[])",
            accepted,
        )
    }
    assert set(rows) == set(accepted)
    made: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for intent_id in {row["provider_payment_id"] for row in rows.values()}:
        async with http.get(f"{stack.url('sandbox_gateway')}/v1/refunds", params={"intent_id": intent_id}) as r:
            assert r.status == 200
            for refund in (await r.json())["data"]:
                made[refund["metadata"]["refund_id"]].append(refund)
    for refund_id, row in rows.items():
        assert len(made[refund_id]) == 1, (refund_id, made[refund_id])  # the sandbox refunded it once
        theirs = made[refund_id][0]
        assert (row["status"], row["failure_code"], row["amount"]) == (
            theirs["status"],
            theirs["failure_code"],
            theirs["amount"],
        ), refund_id
    failing = {p["id"] for i, p in enumerate(payments) if i % 5 == 4}
    statuses = await pool.fetch(
        "SELECT payment_request_id, status FROM ledger.refunds WHERE id = ANY($1::text[])", accepted
    )
    assert all((r["status"] == "failed") == (r["payment_request_id"] in failing) for r in statuses)


async def assert_one_final_change_per_refund_and_amounts_refunded(
    pool: asyncpg.Pool, payment_ids: list[str], accepted: list[str]
) -> None:
    logged = await pool.fetch(
        "SELECT refund_id, refund_from_status, refund_to_status FROM ledger.payment_logs"
        " WHERE refund_id = ANY($1::text[]) AND outcome = 'applied'"
        " AND refund_from_status IS DISTINCT FROM refund_to_status",
        accepted,
    )
    changes: dict[str, list[tuple[str | None, str]]] = defaultdict(list)
    for row in logged:
        changes[row["refund_id"]].append((row["refund_from_status"], row["refund_to_status"]))
    ends = ({(None, "pending"), ("pending", "succeeded")}, {(None, "pending"), ("pending", "failed")})
    odd = {refund_id: got for refund_id, got in changes.items() if len(got) != 2 or set(got) not in ends}
    assert set(changes) == set(accepted) and odd == {}, odd
    mismatched = await pool.fetch(
        """
        SELECT p.id, p.amount_refunded, coalesce(sum(r.amount) FILTER (WHERE r.status = 'succeeded'), 0) AS succeeded
        FROM ledger.payment_requests p LEFT JOIN ledger.refunds r ON r.payment_request_id = p.id
        WHERE p.id = ANY($1::text[]) GROUP BY p.id, p.amount_refunded
        HAVING p.amount_refunded <> coalesce(sum(r.amount) FILTER (WHERE r.status = 'succeeded'), 0)
        """,
        payment_ids,
    )
    assert mismatched == []
