"""Trace plumbing of shared/telemetry.py: the log context tags spans; a webhook's span finds the payment's trace."""

from __future__ import annotations

import contextvars

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import LogContextSpanProcessor, extract_context, inject_context, trace_parent


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(LogContextSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_spans_started_while_a_payment_is_bound_carry_its_id_and_event_type() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("test")

    def handle() -> None:
        with structlog.contextvars.bound_contextvars(payment_id="pay_1", event_type="payment.requested"):
            with tracer.start_as_current_span("INSERT"):
                pass
        with tracer.start_as_current_span("unrelated"):
            pass

    contextvars.copy_context().run(handle)

    spans = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}
    assert spans["INSERT"]["payment.id"] == "pay_1"
    assert spans["INSERT"]["paystream.event_type"] == "payment.requested"
    assert "payment.id" not in spans["unrelated"]


def test_an_attribute_set_by_the_caller_wins_over_the_log_context() -> None:
    provider, exporter = _provider()

    def handle() -> None:
        with (
            structlog.contextvars.bound_contextvars(event_type="payment.requested"),
            provider.get_tracer("test").start_as_current_span(
                "publish", attributes={"paystream.event_type": "payment.intent_created"}
            ),
        ):
            pass

    contextvars.copy_context().run(handle)

    assert (exporter.get_finished_spans()[0].attributes or {})["paystream.event_type"] == "payment.intent_created"


def test_a_webhook_delivered_with_the_payments_traceparent_stays_under_the_request_span() -> None:
    provider, _ = _provider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("publish payment.requested"):
        carried = inject_context()
    with tracer.start_as_current_span("POST /webhooks/sandbox", context=extract_context(carried)):
        assert trace_parent(carried) == (None, [])


def test_a_webhook_without_a_traceparent_header_continues_the_carried_trace_linked_to_the_request() -> None:
    provider, _ = _provider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("publish payment.requested") as payment_span:
        carried = inject_context()
    with tracer.start_as_current_span("POST /webhooks/stripe") as request_span:
        parent, links = trace_parent(carried)
    assert trace.get_current_span(parent).get_span_context().span_id == payment_span.get_span_context().span_id
    assert [link.context.span_id for link in links] == [request_span.get_span_context().span_id]


def test_a_webhook_carrying_no_trace_context_stays_in_the_requests_trace() -> None:
    provider, _ = _provider()
    with provider.get_tracer("test").start_as_current_span("POST /webhooks/stripe"):
        assert trace_parent({"payment_id": "pay_1"}) == (None, [])
