"""OpenTelemetry: one tracer provider per process, OTLP/HTTP export when configured, W3C context in headers."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation import aiohttp_server
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind

_provider: TracerProvider | None = None
# Whether spans are recorded in this process. True until `configure_tracing` finds nothing to export to (a test
# that installs its own provider records).
_recording = True
# The request span's tracer: the provider's own once configured. A proxy (what `trace.get_tracer` gives before a
# provider is set) wraps each span in one more context manager, twice the 7 us an unrecorded span costs.
_tracer: trace.Tracer = trace.get_tracer(__name__)

# Log context (bound through contextvars) copied onto every span started while it is bound.
SPAN_ATTRIBUTES_FROM_LOG_CONTEXT = {"payment_id": "payment.id", "event_type": "paystream.event_type"}


class LogContextSpanProcessor(SpanProcessor):
    """Tags each new span with the payment id and event type the log context holds.

    So the database, HTTP and provider spans of a handler carry `payment.id` too, without each call site
    repeating it, and Jaeger finds any span of a payment by that tag.
    """

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        bound = structlog.contextvars.get_contextvars()
        for key, attribute in SPAN_ATTRIBUTES_FROM_LOG_CONTEXT.items():
            value = bound.get(key)
            if value and attribute not in (span.attributes or {}):
                span.set_attribute(attribute, str(value))


# Span attributes that carry a URL or its query (old and new HTTP semantic conventions).
_URL_ATTRIBUTES = ("http.url", "url.full", "http.target")
_QUERY_ATTRIBUTES = ("url.query",)
REDACTED = "[redacted]"


def without_query(url: str) -> str:
    """The URL with its query string (which may hold a key or a card number a careless client put there)
    replaced by a marker; the path and everything before it stay."""
    head, sep, _ = url.partition("?")
    return f"{head}?{REDACTED}" if sep else url


class QueryRedactingSpanProcessor(SpanProcessor):
    """Drops query strings from HTTP span attributes before any exporter sees them.

    The aiohttp server instrumentation has no URL hook, but sets its attributes at span creation, so they are
    rewritten here in `on_start`; the client instrumentation also gets `url_filter=without_query`.
    """

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        attributes = span.attributes or {}
        for key in _URL_ATTRIBUTES:
            value = attributes.get(key)
            if isinstance(value, str) and "?" in value:
                span.set_attribute(key, without_query(value))
        for key in _QUERY_ATTRIBUTES:
            if attributes.get(key):
                span.set_attribute(key, REDACTED)


def configure_tracing(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install the process's tracer provider and instrument aiohttp and asyncpg (idempotent).

    With no endpoint to export to, recording spans would be work thrown away (a third of the CPU a payment
    cost): spans are then not sampled, and neither the database driver (a span per statement) nor the HTTP
    client is instrumented. Requests, messages and provider calls still get span ids, propagated through
    the outbox, the broker and the provider, so log lines keep their `trace_id` and `span_id`.
    `OTEL_TRACES_SAMPLER`, when set, decides sampling instead (the SDK reads it), and then everything is
    instrumented.
    """
    global _provider, _recording, _tracer
    if _provider is not None:
        return _provider
    recording = bool(otlp_endpoint or os.environ.get("OTEL_TRACES_SAMPLER"))
    _recording = recording
    sampler = None if recording else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}), sampler=sampler)
    provider.add_span_processor(QueryRedactingSpanProcessor())
    provider.add_span_processor(LogContextSpanProcessor())
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces"))
        )
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer(__name__)
    _instrument_libraries(recording)
    _provider = provider
    return provider


def _instrument_libraries(recording: bool) -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    # The server's span is where a request's trace (and its log lines' trace_id) starts. Unrecorded, the
    # instrumentation's span costs a tenth of a POST in attributes nobody reads: `request_span_middleware`
    # gives the request its (unrecorded) span instead.
    if recording:
        aiohttp_server.AioHttpServerInstrumentor().instrument()
        AioHttpClientInstrumentor().instrument(url_filter=lambda url: without_query(str(url)))
        AsyncPGInstrumentor().instrument()


def recording() -> bool:
    """Whether this process records spans: False once tracing is configured with nothing to export to."""
    return _recording


@web.middleware
async def _unrecorded_request_span(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The request's span, continuing the caller's trace if its headers carry one: ids for the log lines and
    for what the request publishes, and nothing else (it is not recorded)."""
    # The headers read as the instrumentation reads them: every copy of a header (a tracestate may be split).
    parent = propagate.extract(request, getter=aiohttp_server.getter)
    # What start_as_current_span does for a span that records nothing (no exception to note, an end that does
    # nothing), without its two generator-based context managers: 6 us a request instead of 11.
    span = _tracer.start_span(request.method, context=parent, kind=SpanKind.SERVER)
    token = context.attach(trace.set_span_in_context(span))
    try:
        return await handler(request)
    finally:
        context.detach(token)
        span.end()


def request_span_middleware() -> Middleware | None:
    """The middleware that gives each request its span when the aiohttp server instrumentation does not (tracing
    configured, nothing recorded); None when it does, or when tracing is not configured at all."""
    return _unrecorded_request_span if _provider is not None and not _recording else None


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()


def inject_context(carrier: dict[str, Any] | None = None) -> dict[str, Any]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`)."""
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, Any] | None) -> context.Context:
    """A context continuing the trace whose W3C headers are in `carrier`."""
    headers = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (carrier or {}).items()}
    return propagate.extract(headers)


def trace_parent(carrier: Mapping[str, Any] | None) -> tuple[context.Context | None, list[trace.Link]]:
    """Parent and links for a span about work that a third party announces (a provider's webhook).

    The payment's trace context came back in `carrier` (through the provider). The span goes under the current
    span when that is already in the payment's trace (the delivery sent a `traceparent` header); otherwise under
    the carried context, linked to the current span (the HTTP request then roots a trace of its own). Without a
    carried context: (None, []), the current span.
    """
    carried_context = extract_context(carrier)
    carried = trace.get_current_span(carried_context).get_span_context()
    current = trace.get_current_span().get_span_context()
    if not carried.is_valid or (current.is_valid and current.trace_id == carried.trace_id):
        return None, []
    return carried_context, [trace.Link(current)] if current.is_valid else []
