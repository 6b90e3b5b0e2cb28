"""A capture days after the payment is still in the payment's trace (docs/reference/capture.md): the intake's
capture request, the gateway_worker's call to the provider and the ledger's recording of its answer are spans of
the trace that POST /v1/payments began, found by payment.id."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.client import IntakeClient, payment_body, simulate_card
from tests.support.infra import Servers
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, span_tree
from tests.support.traced_stack import flushed_trace, traced_stack


@pytest.fixture(scope="module")
async def captured_trace(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, list[ReceivedSpan], OtlpReceiver]]:
    """A manual payment authorized, then captured; (payment id, the payment's trace, every span received)."""
    async with traced_stack(servers, tmp_path_factory.mktemp("capture_traced")) as (stack, receiver):
        async with aiohttp.ClientSession() as http:
            intake = IntakeClient(http, stack.url("intake_api"))
            status, payment, _ = await intake.create(payment_body(capture_method="manual"), wait=10)
            assert status == 201 and payment["checkout_url"], payment
            await simulate_card(http, payment["checkout_url"], "4242424242424242")
            await intake.in_status(payment["id"], "AUTHORIZED")
            assert (await intake.capture(payment["id"], 1200))[0] == 202
            assert (await intake.terminal(payment["id"]))["status"] == "SUCCEEDED"
        _, spans = await flushed_trace(stack, receiver)
        print(f"\nspan tree of payment {payment['id']}:\n{span_tree(spans)}")
        yield payment["id"], spans, receiver


def test_the_capture_request_continues_the_payments_trace(
    captured_trace: tuple[str, list[ReceivedSpan], OtlpReceiver],
) -> None:
    payment_id, spans, receiver = captured_trace

    [requested] = [s for s in spans if s.service == "intake-api" and s.name == "capture requested"]

    assert requested.attributes.get("payment.id") == payment_id
    # The HTTP request itself roots a trace of its own (the merchant's call), which the capture's span joins.
    [http_request] = [s for s in receiver.spans if s.name.startswith("POST /v1/payments/{payment_id}/capture")]
    assert http_request.trace_id != requested.trace_id


def test_the_providers_capture_and_the_ledgers_recording_are_in_the_payments_trace(
    captured_trace: tuple[str, list[ReceivedSpan], OtlpReceiver],
) -> None:
    _, spans, _ = captured_trace
    by_id = {s.span_id: s for s in spans}
    [requested] = [s for s in spans if s.service == "intake-api" and s.name == "capture requested"]

    def descends_from_the_request(span: ReceivedSpan) -> bool:
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            if span.span_id == requested.span_id:
                return True
        return False

    provider_calls = [s for s in spans if s.service == "gateway-worker" and s.name == "sandbox capture"]
    ledger_spans = [s for s in spans if s.service == "ledger" and descends_from_the_request(s)]
    assert provider_calls and all(descends_from_the_request(s) for s in provider_calls)
    assert ledger_spans, "the ledger's recording of the capture is not in the payment's trace"
