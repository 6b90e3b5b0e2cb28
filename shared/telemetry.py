"""OpenTelemetry: one tracer provider per process, OTLP/HTTP export when configured, W3C context in headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider: TracerProvider | None = None


def configure_tracing(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install the process's tracer provider and instrument aiohttp and asyncpg (idempotent)."""
    global _provider
    if _provider is not None:
        return _provider
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces"))
        )
    trace.set_tracer_provider(provider)
    _instrument_libraries()
    _provider = provider
    return provider


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AioHttpClientInstrumentor().instrument()
    AioHttpServerInstrumentor().instrument()
    AsyncPGInstrumentor().instrument()


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_context(carrier: dict[str, Any] | None = None) -> dict[str, Any]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`)."""
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, Any] | None) -> context.Context:
    """A context continuing the trace whose W3C headers are in `carrier`."""
    headers = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (carrier or {}).items()}
    return propagate.extract(headers)
