"""One trace per payment (issue 6, docs/reference/observability.md).

Every service exports its spans over OTLP/HTTP to a receiver written for the test; one payment, from
POST /v1/payments to the ledger recording the webhook's outcome, must be one trace with correct parent links.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.support.client import IntakeClient, simulate_card
from tests.support.infra import Servers
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, span_tree
from tests.support.processes import Stack, eventually
from tests.support.traced_stack import flushed_trace, traced_stack

# The services one payment passes through (as trace service names).
PAYMENT_SERVICES = {"intake-api", "gateway-worker", "sandbox-gateway", "webhook-receiver", "ledger"}
CARD = "4242424242424242"
# What no span may carry: the card, the merchants' API keys, the webhook secret.
FORBIDDEN = (CARD, "4242 4242 4242 4242", "sk_test_demo", "sk_test_other", "whsec_sandbox_dev")


@dataclass(frozen=True)
class TracedPayment:
    payment_id: str
    trace_id: str
    spans: list[ReceivedSpan]  # the payment's trace
    receiver: OtlpReceiver  # every span received, the payment's and any other
    stack: Stack

    def named(self, service: str, name: str) -> list[ReceivedSpan]:
        """The spans of that name (a message handled twice, after a retry, has two)."""
        found = [s for s in self.spans if s.service == service and s.name == name]
        assert found, f"no span {service}: {name} in the trace"
        return found

    def ancestors(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        by_id = {s.span_id: s for s in self.spans}
        chain = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            chain.append(span)
        return chain


def _orphans(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    ids = {s.span_id for s in spans}
    return [s for s in spans if s.parent_span_id and s.parent_span_id not in ids]


@pytest.fixture(scope="module")
async def traced(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TracedPayment]:
    """The payment services exporting to a receiver; one payment paid with 4242 until SUCCEEDED; its trace."""
    async with traced_stack(servers, tmp_path_factory.mktemp("traced")) as (stack, receiver):
        async with aiohttp.ClientSession() as http:
            intake = IntakeClient(http, stack.url("intake_api"))
            status, payment, _ = await intake.create(wait=10)
            assert status == 201, payment
            assert payment["checkout_url"], "no checkout URL within Prefer: wait=10"
            await simulate_card(http, payment["checkout_url"], CARD)
            assert (await intake.terminal(payment["id"]))["status"] == "SUCCEEDED"
            payment_id = payment["id"]
            # The ledger has recorded all three events (a retried one included) before the stack stops.
            await eventually(
                lambda: _all_recorded(intake, payment_id), timeout=20, what="the ledger recording every event"
            )
        trace_id, spans = await flushed_trace(stack, receiver)
        print(f"\nspan tree of payment {payment_id} (trace {trace_id}, {len(spans)} spans):")
        print(span_tree(spans))
        yield TracedPayment(payment_id, trace_id, spans, receiver, stack)


async def _all_recorded(intake: IntakeClient, payment_id: str) -> bool:
    # In any order: the webhook's event may overtake an intent_created waiting out a retry.
    recorded = {e["event_type"] for e in await intake.events(payment_id)}
    return recorded == {"payment.requested", "payment.intent_created", "payment.status_changed"}


def test_spans_of_every_service_a_payment_passes_form_one_trace(traced: TracedPayment) -> None:
    assert {s.service for s in traced.spans} >= PAYMENT_SERVICES
    in_trace = [s for s in traced.spans if s.attributes.get("payment.id") == traced.payment_id]
    assert {s.service for s in in_trace} >= PAYMENT_SERVICES, "Jaeger must find each service's part by payment.id"


def test_the_only_other_traces_tagged_with_the_payment_are_its_reads(traced: TracedPayment) -> None:
    """Polling GET /v1/payments/{id} is the client's own request: its trace is its own, tagged for search."""
    others = {s.trace_id for s in traced.receiver.with_attribute("payment.id", traced.payment_id)} - {traced.trace_id}
    assert others, "the client's reads of the payment should be tagged with its payment.id too"
    traces = traced.receiver.traces()
    for trace_id in others:
        roots = [(s.service, s.name.partition(" ")[0]) for s in traces[trace_id] if not s.parent_span_id]
        assert roots == [("intake-api", "GET")], span_tree(traces[trace_id])


def test_the_trace_has_one_root_and_every_other_span_a_parent_in_it(traced: TracedPayment) -> None:
    roots = [(s.service, s.name) for s in traced.spans if not s.parent_span_id]
    assert roots == [("intake-api", "POST /v1/payments")]
    assert [str(s) for s in _orphans(traced.spans)] == []


def test_each_hop_of_the_flow_is_a_child_of_the_hop_that_caused_it(traced: TracedPayment) -> None:
    """POST → outbox publish → gateway_worker → provider call → sandbox; sandbox → webhook → ledger."""
    chains = {
        ("gateway-worker", "gateway_worker process payment.requested"): ("intake-api", "publish payment.requested"),
        ("sandbox-gateway", "POST /v1/intents"): ("gateway-worker", "sandbox create_intent"),
        ("ledger", "ledger process payment.intent_created"): ("gateway-worker", "publish payment.intent_created"),
        ("webhook-receiver", "POST /webhooks/{provider}"): ("sandbox-gateway", "sandbox webhook delivery"),
        ("webhook-receiver", "webhook sandbox SUCCEEDED"): ("webhook-receiver", "POST /webhooks/{provider}"),
        ("ledger", "ledger process payment.status_changed"): ("webhook-receiver", "publish payment.status_changed"),
    }
    for child, ancestor in chains.items():
        for span in traced.named(*child):
            lineage = [(s.service, s.name) for s in traced.ancestors(span)]
            assert ancestor in lineage, f"{child} descends from {lineage}, not from {ancestor}"
    for publish in traced.named("intake-api", "publish payment.requested"):
        assert traced.ancestors(publish)[-1].name == "POST /v1/payments", "the relay continues the request's trace"


def test_message_spans_carry_the_payment_id_and_the_event_type(traced: TracedPayment) -> None:
    messaging = [s for s in traced.spans if s.attributes.get("messaging.system") == "rabbitmq"]
    assert {s.kind for s in messaging} == {"PRODUCER", "CONSUMER"}
    for span in messaging:
        assert span.attributes.get("payment.id") == traced.payment_id, str(span)
        assert span.attributes.get("paystream.event_type") == span.name.rpartition(" ")[2], str(span)
    for webhook in traced.named("webhook-receiver", "webhook sandbox SUCCEEDED"):
        assert webhook.attributes["paystream.event_type"] == "payment.status_changed"


def test_no_span_carries_card_data_keys_or_secrets(traced: TracedPayment) -> None:
    assert traced.receiver.spans
    for span in traced.receiver.spans:
        text = json.dumps([span.name, span.attributes], default=str)
        leaked = [secret for secret in FORBIDDEN if secret in text]
        assert not leaked, f"{span} carries {leaked}"


def test_log_lines_about_the_payment_carry_its_trace_and_span_ids(traced: TracedPayment) -> None:
    span_ids = {s.span_id for s in traced.spans}
    lines = [json.loads(line) for line in traced.stack.logs().splitlines() if line.startswith("{")]
    about = [line for line in lines if line.get("payment_id") == traced.payment_id]
    in_trace = [line for line in about if line.get("trace_id") == traced.trace_id]
    assert {line["service"] for line in in_trace} >= PAYMENT_SERVICES
    for line in in_trace:
        assert line.get("span_id") in span_ids, line
