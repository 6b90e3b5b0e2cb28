"""One trace per payment (issue 6, CONTRACT §8): every service exports its spans over OTLP/HTTP to a receiver
written for this test, and one payment's spans, from POST /v1/payments to the ledger recording the webhook's
outcome, form a single trace with correct parent links."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.support.client import IntakeClient, simulate_card
from tests.support.infra import Servers, create_database, delete_namespace, drop_database, unique_name
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, span_tree
from tests.support.processes import Stack, eventually, stack_environment

# The services a payment passes through; the storefront is not involved when the shop's backend is the test.
PAYMENT_SERVICES = {"intake-api", "gateway-worker", "sandbox-gateway", "webhook-receiver", "ledger"}
CARD = "4242424242424242"
SECRETS = (CARD, "4242 4242 4242 4242", "sk_test_demo", "sk_test_other", "whsec_sandbox_dev")


@dataclass(frozen=True)
class PaidPayment:
    payment_id: str
    trace: list[ReceivedSpan]  # every span of the payment's trace
    receiver: OtlpReceiver


def _has_ledger_outcome(spans: list[ReceivedSpan], payment_id: str) -> bool:
    return any(
        s.service == "ledger"
        and s.attributes.get("payment.id") == payment_id
        and s.attributes.get("paystream.event_type") == "payment.status_changed"
        for s in spans
    )


@pytest.fixture(scope="module")
async def paid(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PaidPayment]:
    """A stack exporting to the receiver; one payment made with 4242 and recorded SUCCEEDED; its trace."""
    database_url = await create_database(servers.database_url, migrations=())
    namespace = unique_name("pstrace")
    async with OtlpReceiver() as receiver:
        env = stack_environment(
            database_url, servers.amqp_url, namespace,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="200",
        )
        stack = Stack(env, tmp_path_factory.mktemp("traced"), services=sorted(PAYMENT_SERVICES_MODULES))
        try:
            await stack.start()
            async with aiohttp.ClientSession() as http:
                intake = IntakeClient(http, stack.url("intake_api"))
                status, payment, _ = await intake.create(wait=10)
                assert status == 201, payment
                assert payment["checkout_url"], "no checkout URL within Prefer: wait=10"
                await simulate_card(http, payment["checkout_url"], CARD)
                final = await intake.terminal(payment["id"])
                assert final["status"] == "SUCCEEDED", final
            payment_id = payment["id"]

            async def trace_complete() -> list[ReceivedSpan] | None:
                roots = [
                    s for s in receiver.spans
                    if s.service == "intake-api" and s.kind == "SERVER" and s.name.startswith("POST")
                ]
                if not roots:
                    return None
                spans = receiver.traces()[roots[-1].trace_id]
                return spans if _has_ledger_outcome(spans, payment_id) else None

            trace = await eventually(trace_complete, timeout=20, interval=0.2, what="the payment's spans")
            # Late exporters (a BatchSpanProcessor round away): wait until every service has reported once.
            await eventually(
                lambda: _async({s.service for s in receiver.traces()[trace[0].trace_id]} >= PAYMENT_SERVICES),
                timeout=10, what="spans of every service",
            )
            trace = receiver.traces()[trace[0].trace_id]
            print(f"\nspan tree of payment {payment_id} ({len(trace)} spans, trace {trace[0].trace_id}):")
            print(span_tree(trace))
            yield PaidPayment(payment_id, trace, receiver)
        finally:
            stack.stop()
            await delete_namespace(servers.amqp_url, namespace)
            await drop_database(database_url)


PAYMENT_SERVICES_MODULES = {"intake_api", "gateway_worker", "sandbox_gateway", "webhook_receiver", "ledger"}


async def _async(value: bool) -> bool:
    return value


def test_spans_of_every_service_a_payment_passes_form_one_trace(paid: PaidPayment) -> None:
    assert {s.service for s in paid.trace} >= PAYMENT_SERVICES
    traces_of_payment = {s.trace_id for s in paid.receiver.with_attribute("payment.id", paid.payment_id)}
    assert traces_of_payment == {paid.trace[0].trace_id}


def test_the_trace_has_one_root_and_every_other_span_a_parent_in_it(paid: PaidPayment) -> None:
    ids = {s.span_id for s in paid.trace}
    roots = [s for s in paid.trace if not s.parent_span_id]
    assert [(r.service, r.name) for r in roots] == [("intake-api", "POST /v1/payments")]
    orphans = [str(s) for s in paid.trace if s.parent_span_id and s.parent_span_id not in ids]
    assert orphans == []
