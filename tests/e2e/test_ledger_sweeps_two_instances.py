"""Two ledger processes sweeping one database (issue 10 §1): each due payment gets its reconciliation and its
expiration once, not once per ledger. Every command the sweeps send is itself logged by the ledger (it consumes
payment.*), so the log counts what was sent; the two processes' counters add up to the same."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import IntakeClient
from tests.support.infra import Servers
from tests.support.own_stack import own_stack
from tests.support.processes import ServiceProcess, Stack, eventually, free_port

PAYMENTS = 30


@pytest.fixture(scope="module")
async def two_ledgers(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, ServiceProcess]]:
    path = tmp_path_factory.mktemp("two_ledgers")
    async with own_stack(
        servers,
        path,
        ("intake_api", "gateway_worker", "ledger", "sandbox_gateway"),
        PAYMENT_TTL_SECONDS="4",
        RECONCILE_AFTER_SECONDS="1",
        RECONCILE_INTERVAL_SECONDS="600",  # so a payment is due for reconciliation once within its TTL
        EXPIRY_SWEEP_INTERVAL_SECONDS="0.2",
    ) as stack:
        second = ServiceProcess("ledger", {**stack.env, "LEDGER_PORT": str(free_port())}, path / "second")
        second.log_path.parent.mkdir(parents=True, exist_ok=True)
        second.start()
        try:
            await second.wait_ready()
            yield stack, second
        finally:
            second.stop()


async def counter(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


async def test_two_ledgers_send_each_due_payment_its_reconciliation_and_expiration_once(
    two_ledgers: tuple[Stack, ServiceProcess],
) -> None:
    stack, second = two_ledgers
    async with aiohttp.ClientSession() as http:
        intake = IntakeClient(http, stack.url("intake_api"))
        payment_ids = [(await intake.create(wait=5))[1]["id"] for _ in range(PAYMENTS)]
        conn = await asyncpg.connect(stack.env["DATABASE_URL"])
        try:

            async def all_expired() -> bool:
                query = "SELECT count(*) FROM ledger.payment_requests WHERE id = ANY($1::text[]) AND status = 'EXPIRED'"
                return int(await conn.fetchval(query, payment_ids)) == PAYMENTS

            await eventually(all_expired, timeout=60, interval=0.2, what="every payment EXPIRED")
            rows = await conn.fetch(
                "SELECT payment_request_id, event_type, count(*) AS sent FROM ledger.payment_logs"
                " WHERE payment_request_id = ANY($1::text[])"
                " AND event_type IN ('payment.reconciliation_due', 'payment.expiration_due')"
                " GROUP BY payment_request_id, event_type",
                payment_ids,
            )
        finally:
            await conn.close()
        sent = {(r["payment_request_id"], r["event_type"]): r["sent"] for r in rows}
        assert sent == {
            (p, command): 1 for p in payment_ids for command in ("payment.reconciliation_due", "payment.expiration_due")
        }
        ledgers = (stack.url("ledger"), second.url)
        expirations = [await counter(http, url, "paystream_expirations_requested_total") for url in ledgers]
        reconciliations = [await counter(http, url, "paystream_reconciliations_requested_total") for url in ledgers]
        assert (sum(expirations), sum(reconciliations)) == (PAYMENTS, PAYMENTS)
