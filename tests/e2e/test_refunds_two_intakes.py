"""The refundable amount holds across intake replicas (docs/reference/refunds.md): twenty concurrent refunds of
1.00 against a payment of 10.00, spread over two intake processes on one database, leave exactly ten accepted,
and every refund then succeeds without the ledger ever refunding more than was captured."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.client import payment_body
from tests.support.infra import Servers
from tests.support.intake_deployment import Deployment, deployment, two_intake_processes
from tests.support.processes import eventually

REFUNDS, EACH, CAPTURED = 20, 100, 1000


@pytest.fixture(scope="module")
async def two_intakes(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    services = two_intake_processes(
        {"ledger": {}, "gateway_worker": {}, "sandbox_gateway": {"SANDBOX_AUTOPAY": "succeed"}, "webhook_receiver": {}}
    )
    async with deployment(servers, tmp_path_factory.mktemp("refund_intakes"), services) as running:
        yield running


async def test_twenty_concurrent_refunds_over_two_intakes_accept_exactly_what_was_captured(
    two_intakes: Deployment, http_session: aiohttp.ClientSession
) -> None:
    a, b = two_intakes.client(http_session, "intake_a"), two_intakes.client(http_session, "intake_b")
    status, payment, _ = await a.create(payment_body(amount=CAPTURED))
    assert status == 201
    assert (await a.terminal(payment["id"]))["status"] == "SUCCEEDED"

    answers = await asyncio.gather(*((a, b)[i % 2].refund(payment["id"], {"amount": EACH}) for i in range(REFUNDS)))

    assert Counter(status for status, _, _ in answers) == {201: 10, 422: 10}
    refused = [body for status, body, _ in answers if status == 422]
    assert all(body["type"].endswith("amount-exceeds-refundable") for body in refused)
    accepted = [body["id"] for status, body, _ in answers if status == 201]
    finals = [await a.refund_final(refund_id) for refund_id in accepted]
    assert {refund["status"] for refund in finals} == {"succeeded"}
    assert (await b.get(payment["id"]))["amount_refunded"] == CAPTURED
    recorded = await two_intakes.pool.fetchval(
        "SELECT sum(amount) FROM ledger.refunds WHERE payment_request_id = $1 AND status <> 'failed'", payment["id"]
    )
    assert recorded == CAPTURED

    async def refused_after() -> bool:
        status, _, _ = await b.refund(payment["id"], {"amount": 1})
        return status == 422

    assert await eventually(refused_after, timeout=5, what="nothing left to refund")
