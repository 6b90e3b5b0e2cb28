"""A refund's spans are in its payment's trace (docs/reference/observability.md): from the intake's acceptance
through the gateway_worker's call to the provider, the provider's webhook and the ledger's recording."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.client import IntakeClient, simulate_card
from tests.support.infra import Servers
from tests.support.otlp_receiver import ReceivedSpan, span_tree
from tests.support.processes import eventually
from tests.support.traced_stack import flushed_trace, traced_stack


@pytest.fixture(scope="module")
async def payment_trace(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[ReceivedSpan]]:
    """The trace of a payment paid and then refunded in part, once every process has flushed its spans."""
    async with traced_stack(servers, tmp_path_factory.mktemp("refund_traced")) as (stack, receiver):
        async with aiohttp.ClientSession() as http:
            intake = IntakeClient(http, stack.url("intake_api"))
            status, payment, _ = await intake.create(wait=10)
            assert status == 201 and payment["checkout_url"], payment
            await simulate_card(http, payment["checkout_url"], "4242424242424242")
            assert (await intake.terminal(payment["id"]))["status"] == "SUCCEEDED"
            status, refund, _ = await intake.refund(payment["id"], {"amount": 500})
            assert status == 201, refund
            assert (await intake.refund_final(refund["id"]))["status"] == "succeeded"

            async def recorded() -> bool:
                events = {e["event_type"] for e in await intake.events(payment["id"])}
                return {"payment.refund_submitted", "payment.refund_status_changed"} <= events

            await eventually(recorded, timeout=20, what="the ledger recording the refund's events")
        _, spans = await flushed_trace(stack, receiver)
        print(f"\nspan tree of payment {payment['id']} and its refund:\n{span_tree(spans)}")
        yield spans


def test_the_refunds_spans_of_every_service_are_in_the_payments_trace(payment_trace: list[ReceivedSpan]) -> None:
    names = {(s.service, s.name) for s in payment_trace}

    assert ("intake-api", "refund requested") in names
    assert ("gateway-worker", "sandbox create_refund") in names
    assert ("sandbox-gateway", "POST /v1/refunds") in names
    assert ("webhook-receiver", "webhook sandbox refund succeeded") in names
    assert any(s.service == "ledger" and "payment.refund_status_changed" in s.name for s in payment_trace)


def test_the_refund_hangs_off_the_payment_not_off_a_trace_of_its_own(payment_trace: list[ReceivedSpan]) -> None:
    by_id = {s.span_id: s for s in payment_trace}
    [requested] = [s for s in payment_trace if s.name == "refund requested"]
    [call] = [s for s in payment_trace if s.name == "sandbox create_refund"]
    lineage = []
    span = call
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        lineage.append(span.span_id)
    assert requested.span_id in lineage, "the provider call descends from the refund's acceptance"
    assert [s.name for s in payment_trace if not s.parent_span_id] == ["POST /v1/payments"]
