"""Trace plumbing of shared/telemetry.py: the log context tags spans; a webhook's span finds the payment's trace."""

from __future__ import annotations

import contextvars
import json
import subprocess
import sys
from pathlib import Path

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import LogContextSpanProcessor, extract_context, inject_context, trace_parent

ROOT = Path(__file__).resolve().parents[2]


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


# With nothing to export to, a request's span comes from shared/telemetry.py's own middleware instead of the
# aiohttp server instrumentation, and a publish sends the context it was stored with: both process-wide, so in
# a child process.
_UNRECORDED_SCRIPT = """
import asyncio, json
import aiohttp
from aiohttp import web
from opentelemetry import trace
from shared.broker import _producer_span
from shared.logs import configure_logging, get_logger
from shared.telemetry import configure_tracing, recording
from shared.web import create_base_app
from tests.support.messages import payment_requested

configure_logging("intake_api")
configure_tracing("intake-api", None)
log = get_logger("test")


async def handler(request):
    span = trace.get_current_span()
    ids = span.get_span_context()
    log.info("handled")
    return web.json_response(
        {"trace_id": format(ids.trace_id, "032x"), "span_id": format(ids.span_id, "016x"),
         "tracestate": ids.trace_state.to_header(), "recording": span.is_recording()}
    )


async def main():
    app = create_base_app()
    app.router.add_get("/v1/x", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    answers = []
    async with aiohttp.ClientSession() as http:
        # W3C: a tracestate split over two headers is one list, in order.
        traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
        caller = [("traceparent", traceparent), ("tracestate", "x=1"), ("tracestate", "y=2")]
        for headers in (caller, []):
            async with http.get(f"http://127.0.0.1:{port}/v1/x", headers=headers) as response:
                answers.append(await response.json())
    await runner.cleanup()
    stored = {"traceparent": "00-" + "c" * 32 + "-" + "d" * 16 + "-01", "x-paystream-reply-to": "reply.intake_api.t"}
    with _producer_span(payment_requested(), "ex", stored) as sent:
        pass
    print(json.dumps({"answers": answers, "sent": sent, "recording": recording()}))


asyncio.run(main())
"""


def test_unrecorded_requests_get_a_span_continuing_the_callers_trace_and_publishes_keep_the_stored_context() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _UNRECORDED_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    *logs, outcome = (json.loads(line) for line in result.stdout.splitlines())
    continued, fresh = outcome["answers"]

    assert outcome["recording"] is False
    assert continued["trace_id"] == "a" * 32 and continued["span_id"] not in ("b" * 16, "0" * 16)
    assert continued["tracestate"] == "x=1,y=2"
    assert fresh["trace_id"] != "0" * 32 and fresh["trace_id"] != "a" * 32
    assert not continued["recording"] and not fresh["recording"]
    # The log lines of each request carry its trace, the access line too.
    for answer in (continued, fresh):
        lines = [line for line in logs if line.get("trace_id") == answer["trace_id"]]
        assert {line["event"] for line in lines} == {"handled", "request"}, logs
    # The message goes with the trace context it was stored with, and no other header of the row.
    assert outcome["sent"] == {"traceparent": "00-" + "c" * 32 + "-" + "d" * 16 + "-01"}
