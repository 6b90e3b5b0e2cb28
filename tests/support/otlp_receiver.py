"""A minimal OTLP/HTTP trace receiver for tests: what Jaeger's port 4318 does, keeping the spans in memory.

Services export with `OTEL_EXPORTER_OTLP_ENDPOINT=<receiver.endpoint>`; their exporter POSTs protobuf
`ExportTraceServiceRequest` bodies to `/v1/traces`, decoded here with `opentelemetry-proto`.
"""

from __future__ import annotations

import gzip
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

_PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, its ids as lower-case hex (`parent_span_id` empty for a root)."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    start_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.service}: {self.name}"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def decode_spans(body: bytes) -> list[ReceivedSpan]:
    """The spans of one protobuf ExportTraceServiceRequest, each tagged with its resource's service.name."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        service = str(resource.get("service.name", "unknown"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service=service,
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=ProtoSpan.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        start_ns=span.start_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    )
                )
    return spans


class OtlpReceiver:
    """An aiohttp server on 127.0.0.1 accepting `POST /v1/traces`; use as `async with OtlpReceiver() as r`."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != _PROTOBUF:
            return web.Response(status=415, text=f"expected {_PROTOBUF}")
        body = await request.read()
        encoding = request.headers.get("Content-Encoding", "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        self.spans.extend(decode_spans(body))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type=_PROTOBUF)

    async def __aenter__(self) -> OtlpReceiver:
        app = web.Application(client_max_size=32 * 1024**2)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        # The port the OS chose: the runner lists every address its sites listen on.
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """Spans grouped by trace id."""
        grouped: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for span in self.spans:
            grouped[span.trace_id].append(span)
        return dict(grouped)

    def with_attribute(self, key: str, value: Any) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.attributes.get(key) == value]


def span_tree(spans: list[ReceivedSpan]) -> str:
    """The spans as an indented tree (children in start order), one `service: name` a line."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[ReceivedSpan]] = defaultdict(list)
    roots = []
    for span in sorted(spans, key=lambda s: s.start_ns):
        if span.parent_span_id and span.parent_span_id in ids:
            children[span.parent_span_id].append(span)
        else:
            roots.append(span)
    lines: list[str] = []

    def walk(span: ReceivedSpan, depth: int) -> None:
        lines.append(f"{'  ' * depth}{span}")
        for child in children[span.span_id]:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return "\n".join(lines)
