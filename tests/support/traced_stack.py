"""The payment services exporting their spans to a test's OTLP receiver, and the trace one payment began."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support.infra import Servers
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.own_stack import own_stack
from tests.support.processes import Stack

# The modules one payment passes through, from the intake's POST to the ledger's recording of the outcome.
PAYMENT_MODULES = ("intake_api", "gateway_worker", "sandbox_gateway", "webhook_receiver", "ledger")


@asynccontextmanager
async def traced_stack(servers: Servers, log_dir: Path) -> AsyncIterator[tuple[Stack, OtlpReceiver]]:
    """The payment modules on a stack of their own, exporting their spans to a receiver every 200 ms."""
    async with (
        OtlpReceiver() as receiver,
        own_stack(
            servers,
            log_dir,
            PAYMENT_MODULES,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="200",
        ) as stack,
    ):
        yield stack, receiver


async def flushed_trace(stack: Stack, receiver: OtlpReceiver) -> tuple[str, list[ReceivedSpan]]:
    """Stop the stack, then the id and the spans of the one trace POST /v1/payments began.

    Stopping flushes every process's remaining spans (the tracer provider shuts down at exit), so the receiver
    then holds all of them: no waiting on export schedules.
    """
    await asyncio.to_thread(stack.stop)
    posts = [s for s in receiver.spans if s.service == "intake-api" and s.name == "POST /v1/payments"]
    assert len(posts) == 1, f"expected one POST /v1/payments span, got {len(posts)}"
    trace_id = posts[0].trace_id
    return trace_id, receiver.traces()[trace_id]
