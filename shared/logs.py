"""Structured logging: one JSON object a line, context bound once through contextvars."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from opentelemetry import trace

# Keys whose values are never written, whatever a caller passes by mistake.
_REDACTED_KEYS = {"card_number", "number", "cvc", "api_key", "authorization", "secret", "webhook_secret"}


def _add_trace_ids(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event.setdefault("trace_id", format(span.trace_id, "032x"))
        event.setdefault("span_id", format(span.span_id, "016x"))
    return event


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in _REDACTED_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def configure_logging(service: str, *, fmt: str = "json", level: str = "INFO") -> None:
    """Route structlog and the standard library through one renderer, tagging every line with `service`."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
        _redact,
    ]
    # Our own lines are rendered by structlog and written straight to stdout: through the standard library they
    # cost a LogRecord, a caller lookup up the stack and a handler each, twice the time (one a ledger event).
    # Events below the level are dropped before any processor runs (time stamp, trace ids, rendering):
    # otherwise every debug or info call pays for a line that is never written.
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        cache_logger_on_first_use=True,
    )
    # The libraries' records (aio-pika, asyncpg, aiohttp) go through the standard library, rendered alike.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log repeats what the metrics middleware measures; keep it quiet.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]


def bind_payment(payment_id: str) -> None:
    """Tag the rest of this task's log lines, and the span now current, with the payment's id.

    Meant for request handlers: aiohttp runs each request in a task of its own, so the binding ends with it.
    """
    structlog.contextvars.bind_contextvars(payment_id=payment_id)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("payment.id", payment_id)
