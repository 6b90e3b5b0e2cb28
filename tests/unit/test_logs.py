"""Structured logs (docs/reference/observability.md): one JSON object a line with `service`, `trace_id`, `span_id`,
and `payment_id`
bound through contextvars; sensitive keys never written.

`configure_logging` rewires the process's logging, so the lines come from a child process running a script.
"""

from __future__ import annotations

import contextvars
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.logs import bind_payment

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import json, logging
import structlog
from opentelemetry.sdk.trace import TracerProvider
from shared.logs import configure_logging, get_logger

configure_logging("ledger")
log = get_logger("test")
tracer = TracerProvider().get_tracer("test")
log.info("before the span")
with tracer.start_as_current_span("handle") as span:
    with structlog.contextvars.bound_contextvars(payment_id="pay_123"):
        log.info("inside", card_number="4242424242424242", api_key="sk_test_demo", webhook_secret="whsec_x")
        logging.getLogger("stdlib.module").warning("a standard library record")
    log.info("payment unbound")
    ids = span.get_span_context()
log.info("after the span")
print(json.dumps({"ids": {"trace_id": format(ids.trace_id, "032x"), "span_id": format(ids.span_id, "016x")}}))
"""


@pytest.fixture(scope="module")
def output() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The script's log lines by event, and the ids of its span."""
    result = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    ids = lines.pop()["ids"]
    return {line["event"]: line for line in lines}, ids


def test_every_line_is_a_json_object_naming_the_service_level_and_time(output) -> None:
    lines, _ = output
    assert set(lines) == {"before the span", "inside", "a standard library record", "payment unbound", "after the span"}
    for line in lines.values():
        assert line["service"] == "ledger"
        assert line["level"] in {"info", "warning"}
        assert line["timestamp"].endswith("Z")


def test_lines_written_inside_a_span_carry_its_trace_and_span_ids(output) -> None:
    lines, ids = output
    for event in ("inside", "a standard library record", "payment unbound"):
        assert (lines[event]["trace_id"], lines[event]["span_id"]) == (ids["trace_id"], ids["span_id"]), event
    for event in ("before the span", "after the span"):
        assert "trace_id" not in lines[event] and "span_id" not in lines[event], event


def test_payment_id_bound_through_contextvars_is_on_every_line_until_unbound(output) -> None:
    lines, _ = output
    assert lines["inside"]["payment_id"] == "pay_123"
    assert lines["a standard library record"]["payment_id"] == "pay_123"
    assert "payment_id" not in lines["payment unbound"]


def test_card_numbers_keys_and_secrets_passed_by_name_are_redacted(output) -> None:
    lines, _ = output
    inside = lines["inside"]
    assert (inside["card_number"], inside["api_key"], inside["webhook_secret"]) == ("[redacted]",) * 3
    text = json.dumps(list(lines.values()))
    assert "4242424242424242" not in text and "sk_test_demo" not in text and "whsec_x" not in text


def test_bind_payment_tags_the_current_span_and_the_log_context() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def handle() -> dict[str, Any]:
        import structlog

        with provider.get_tracer("test").start_as_current_span("POST /v1/payments"):
            bind_payment("pay_456")
            return structlog.contextvars.get_contextvars()

    bound = contextvars.copy_context().run(handle)  # a context of its own, as aiohttp gives each request

    assert bound["payment_id"] == "pay_456"
    assert (exporter.get_finished_spans()[0].attributes or {})["payment.id"] == "pay_456"
