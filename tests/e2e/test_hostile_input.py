"""Hostile input against every HTTP service as a real process (issue 14): every answer is a 4xx in the
service's error format (problem JSON on the APIs, an HTML page on the storefront and the hosted page), never a
5xx or a stack trace, no server version; slow clients are cut off; nothing is published or written.

Requests go over raw sockets: an HTTP client library would refuse to send most of them.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.client import IntakeClient, payment_body
from tests.support.infra import Servers
from tests.support.own_stack import own_stack
from tests.support.processes import ALL_SERVICES, Stack, eventually
from tests.support.sandbox_webhooks import encode, sandbox_event, signed

KEY = "sk_test_demo"
JSON_BODY = json.dumps(payment_body()).encode()
HEADER_TIMEOUT_SECONDS = 1
MAX_CONNECTIONS = 16
# Where each service takes a body, and whether a browser (HTML) or a program (problem JSON) reads its errors.
POST_TARGETS = {
    "intake_api": "/v1/payments",
    "webhook_receiver": "/webhooks/sandbox",
    "sandbox_gateway": "/v1/intents",
    "storefront": "/buy",
    "console": "/sign-in",
    "gateway_worker": "/healthz",
    "ledger": "/healthz",
    "notifier": "/healthz",  # it takes no body: its work comes from the broker
}
HTML_SERVICES = {"storefront", "console"}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


async def exchange(port: int, request: bytes, *, timeout: float = 10.0) -> Answer:
    """Send raw bytes, read one HTTP answer (the server closes or sends Content-Length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers: dict[str, list[str]] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers.setdefault(name.strip().lower(), []).append(value.strip())
            length = headers.get("content-length")
            body = await reader.readexactly(int(length[0])) if length else await reader.read()
        return Answer(status, headers, body)
    finally:
        writer.close()


def post(
    path: str, body: bytes, *, content_type: str = "application/json", extra: str = "", length: int | None = None
) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body


def assert_refused_in_format(service: str, answer: Answer, path: str = "") -> None:
    """A 4xx, in the service's error format, with no stack trace and no software version."""
    text = answer.body.decode("utf-8", "replace")
    assert 400 <= answer.status < 500, f"{service} {path}: {answer.status} {text[:300]}"
    assert "Traceback" not in text and 'File "' not in text, text[:300]
    server = answer.header("Server") or ""
    assert "aiohttp" not in server and "Python" not in server, server
    content_type = answer.header("Content-Type") or ""
    # A request the HTTP parser refuses never reaches routing (no Request-Id): the sandbox, which serves both
    # an API and pages, cannot tell which it was for, and answers those in its API's format.
    parsed = answer.header("Request-Id") is not None
    if service in HTML_SERVICES or (path.startswith("/pay/") and parsed):
        assert content_type.startswith("text/html"), f"{service} {path}: {content_type} {text[:200]}"
        assert "<h1>" in text
    else:
        assert content_type.startswith("application/problem+json"), f"{service} {path}: {content_type} {text[:200]}"
        problem = json.loads(text)
        assert problem["status"] == answer.status and problem["type"].startswith("https://paystream.dev/problems/")
        assert problem["detail"] and "Please install" not in problem["detail"], problem


DEEP = b"[" * 100_000 + b"]" * 100_000
# JSON that parses, whose content cannot be stored or published: each of the payment body's texts in turn.
UNHOLDABLE_JSON = {
    "a lone surrogate": JSON_BODY.replace(b'"reference": "', b'"reference": "\\ud800'),
    "a NUL": JSON_BODY.replace(b'"reference": "', b'"reference": "\\u0000'),
    "a number of 4,301 digits": JSON_BODY.replace(b'"amount": ', b'"amount": ' + b"9" * 4301 + b', "was": '),
    "a number past a double": JSON_BODY.replace(b'"amount": ', b'"amount": 1e999, "was": '),
    "nesting 100,000 deep": JSON_BODY.replace(
        b'"reference": ', b'"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b', "reference": '
    ),
}


def hostile_requests(path: str) -> dict[str, bytes]:
    """Every hostile request of the issue, aimed at one endpoint that takes a body."""
    form = b"product_id=book&order_id=ord_1"
    boundary = "----paystream"
    multipart_bad_utf8 = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="card_number"\r\n\r\n'.encode()
        + b"\xff\xfe\xfa"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return {
        "gzip that is not gzip": post(path, JSON_BODY, extra="Content-Encoding: gzip\r\n"),
        "deflate that is not deflate": post(path, JSON_BODY, extra="Content-Encoding: deflate\r\n"),
        "gzip header on a truncated gzip": post(
            path, gzip.compress(JSON_BODY)[:20], extra="Content-Encoding: gzip\r\n"
        ),
        "brotli": post(path, JSON_BODY, extra="Content-Encoding: br\r\n"),
        "zstd": post(path, JSON_BODY, extra="Content-Encoding: zstd\r\n"),
        "an encoding nobody knows": post(path, JSON_BODY, extra="Content-Encoding: compress-ish\r\n"),
        "multipart with a bad boundary": post(
            path, b"--nope\r\n\r\nx", content_type="multipart/form-data; boundary=zz"
        ),
        "multipart with no boundary": post(path, b"x=1", content_type="multipart/form-data"),
        "multipart with bytes that are not UTF-8": post(
            path, multipart_bad_utf8, content_type=f"multipart/form-data; boundary={boundary}"
        ),
        "urlencoded bytes that are not UTF-8": post(
            path, b"product_id=\xff\xfe&order_id=\xc3\x28", content_type="application/x-www-form-urlencoded"
        ),
        "urlencoded with a lying gzip header": post(
            path, form, content_type="application/x-www-form-urlencoded", extra="Content-Encoding: gzip\r\n"
        ),
        "JSON that is not UTF-8": post(path, b'{"reference": "\xff\xfe"}'),
        "JSON in UTF-16": post(path, JSON_BODY.decode().encode("utf-16"), content_type="application/json"),
        "a body declared as UTF-16": post(path, JSON_BODY, content_type="application/json; charset=utf-16"),
        "JSON with a key twice": post(path, b'{"amount": 1999, "amount": 1}'),
        "a header value that is not UTF-8": post(path, JSON_BODY, extra="Idempotency-Key: \xff\xfe\r\n"),
        "a header name that is not a token": post(path, JSON_BODY, extra="X-B\xffd: 1\r\n"),
        "a path that is not UTF-8": b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a percent-encoded path that is not UTF-8": b"GET /v1/payments/%ff%fe HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n".encode(),
        "a header of 9000 bytes": post(path, JSON_BODY, extra=f"X-Padding: {'a' * 9000}\r\n"),
        "a request line of 9000 bytes": f"GET /{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        "two Idempotency-Keys": post(path, JSON_BODY, extra="Idempotency-Key: one\r\nIdempotency-Key: two\r\n"),
        "two Content-Types": post(path, JSON_BODY, extra="Content-Type: text/plain\r\n"),
        "two Authorizations": post(path, JSON_BODY, extra="Authorization: Bearer sk_test_other\r\n"),
        "two Content-Lengths": post(path, JSON_BODY, extra="Content-Length: 3\r\n"),
        "a body shorter than its Content-Length, then silence": post(path, JSON_BODY, length=len(JSON_BODY) + 50),
        "garbage instead of HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
        # Content no store or broker can hold (issue 24 §3): refused as the client's error, never a 5xx.
        **{f"JSON with {name}": post(path, body) for name, body in UNHOLDABLE_JSON.items()},
    }


@dataclass
class Hostile:
    stack: Stack
    pool: asyncpg.Pool
    intent_path: str

    @property
    def webhook_secret(self) -> str:
        return self.stack.env["SANDBOX_WEBHOOK_SECRET"]


async def written_rows(pool: asyncpg.Pool) -> dict[str, int]:
    tables = ("intake.payments", "intake.outbox", "ledger.payment_requests", "ledger.payment_logs")
    return {table: int(await pool.fetchval(f"SELECT count(*) FROM {table}")) for table in tables}


async def accepted_webhooks(http: aiohttp.ClientSession, stack: Stack) -> str:
    async with http.get(f"{stack.url('webhook_receiver')}/metrics") as response:
        text = await response.text()
    return "\n".join(line for line in text.splitlines() if 'outcome="accepted"' in line)


@pytest.fixture(scope="module")
async def hostile(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hostile]:
    """A stack with short slow-client limits, private webhook URLs refused as in production, and one open hosted
    page to aim forms at."""
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("hostile"),
        ALL_SERVICES,
        WEBHOOK_ALLOW_PRIVATE_URLS="false",
        SANDBOX_WEBHOOK_SECRET="whsec_hostile_" + secrets.token_hex(8),
        HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT_SECONDS),
        HTTP_BODY_TIMEOUT_SECONDS="1",
        HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    ) as stack:
        async with aiohttp.ClientSession() as http:
            status, payment, _ = await IntakeClient(http, stack.url("intake_api")).create(wait=10)
            assert status == 201 and payment["checkout_url"], payment
        pool = await asyncpg.create_pool(stack.env["DATABASE_URL"], min_size=1, max_size=2)

        async def setup_recorded() -> bool:  # requested + intent_created: nothing else moves after this
            return int(await pool.fetchval("SELECT count(*) FROM ledger.payment_logs")) >= 2

        try:
            await eventually(setup_recorded, what="the ledger recording the set-up payment")
            yield Hostile(stack, pool, "/pay/" + payment["checkout_url"].rsplit("/", 1)[1])
        finally:
            await pool.close()


def targets(hostile: Hostile) -> list[tuple[str, str]]:
    return [*POST_TARGETS.items(), ("sandbox_gateway", hostile.intent_path), ("intake_api", "/v1/webhook_endpoints")]


async def test_every_hostile_request_to_every_service_is_refused_in_its_format_and_changes_nothing(
    hostile: Hostile,
) -> None:
    stack = hostile.stack
    async with aiohttp.ClientSession() as http:
        before_rows, before_webhooks = await written_rows(hostile.pool), await accepted_webhooks(http, stack)
        refused = 0
        for service, path in targets(hostile):
            port = int(stack.url(service).rsplit(":", 1)[1])
            for case, request in hostile_requests(path).items():
                try:
                    answer = await exchange(port, request)
                except asyncio.IncompleteReadError as exc:  # only acceptable for garbage: closed without a word
                    assert case == "garbage instead of HTTP" and not exc.partial, (service, case, exc.partial)
                    continue
                try:
                    target = request.split(b" ", 2)[1].decode("latin-1") if b" " in request else ""
                    assert_refused_in_format(service, answer, target)
                except AssertionError as exc:
                    raise AssertionError(f"{service} {path} — {case}: {exc}") from None
                refused += 1
        assert refused >= 150
        assert await written_rows(hostile.pool) == before_rows
        assert await accepted_webhooks(http, stack) == before_webhooks
    logs = stack.logs()
    assert "Traceback" not in logs, [line for line in logs.splitlines() if "Traceback" in line][:3]


@pytest.mark.parametrize("service", sorted(POST_TARGETS))
async def test_a_client_sending_its_headers_byte_by_byte_is_disconnected(hostile: Hostile, service: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(hostile.stack.url(service).rsplit(":", 1)[1]))
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    closed = False
    try:
        async with asyncio.timeout(HEADER_TIMEOUT_SECONDS * 20):  # a bound for the test, not a measurement
            while not closed:
                writer.write(b"X")
                try:
                    await writer.drain()
                    closed = await asyncio.wait_for(reader.read(1), 0.2) == b""
                except TimeoutError:
                    continue
                except ConnectionError:
                    closed = True
    finally:
        writer.close()
    assert closed


async def test_a_body_that_stops_arriving_gets_408(hostile: Hostile) -> None:
    request = post("/v1/payments", JSON_BODY[:10], length=len(JSON_BODY), extra="Idempotency-Key: slow-body\r\n")
    answer = await exchange(int(hostile.stack.url("intake_api").rsplit(":", 1)[1]), request)
    assert answer.status == 408
    assert json.loads(answer.body)["type"].endswith("request-timeout")


async def test_connections_past_the_cap_are_turned_away_with_503(hostile: Hostile) -> None:
    port = int(hostile.stack.url("ledger").rsplit(":", 1)[1])
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
    try:
        answer = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.status == 503 and answer.header("Retry-After") == "1"
        assert json.loads(answer.body)["type"].endswith("too-many-connections")
    finally:
        for _, writer in held:
            writer.close()


@pytest.mark.parametrize("service", sorted(POST_TARGETS))
async def test_no_answer_names_the_server_software(hostile: Hostile, service: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{hostile.stack.url(service)}/healthz") as response:
        assert response.headers.get("Server") == "paystream"
        assert response.headers.get("Request-Id", "").startswith("req_")


async def test_a_lying_gzip_on_a_signed_webhook_publishes_nothing(hostile: Hostile) -> None:
    """The forged-webhook case of issue 14 §1: a 400 (the sandbox would retry a 500 forever)."""
    answer = await exchange(
        int(hostile.stack.url("webhook_receiver").rsplit(":", 1)[1]),
        post("/webhooks/sandbox", zlib.compress(b"{}")[2:], extra="Content-Encoding: gzip\r\n"),
    )
    assert answer.status == 400
    assert json.loads(answer.body)["type"].endswith("malformed-body")


def test_the_module_covers_every_http_service() -> None:
    """A new service must say here where it takes a body, so it is attacked too."""
    assert set(POST_TARGETS) == set(ALL_SERVICES)


# --- issue 24: list parameters, time filters, webhook content, webhook URLs, the endpoint cap ---------------------


async def problem(response: aiohttp.ClientResponse) -> dict[str, object]:
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.headers
    body: dict[str, object] = await response.json()
    assert body["status"] == response.status
    return body


def named_field(body: dict[str, object]) -> str:
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, body
    return str(errors[0]["field"])


LIST_ROUTES = ("/v1/payments", "/v1/events")
OUT_OF_BOUNDS = {
    "limit": ["9" * 4301, "0", "101", "-1", "1e2"],
    "starting_after": ["x" * 65, "pay_\x00"],
}
TIME_EDGES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:30:00+00:31", "9" * 4301]


async def test_a_list_parameter_out_of_bounds_is_refused_naming_it_on_every_list(hostile: Hostile) -> None:
    base = hostile.stack.url("intake_api")
    cases = [
        (route, name, value) for route in LIST_ROUTES for name, values in OUT_OF_BOUNDS.items() for value in values
    ]
    cases += [("/v1/payments", name, value) for name in ("created[gte]", "created[lte]") for value in TIME_EDGES]
    cases += [("/v1/payments", "status", "S" * 5000), ("/v1/payments", "reference", "r" * 5000)]
    cases += [("/v1/events", "type", "t" * 5000), ("/v1/events", "payment_id", "p" * 5000)]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
        for route, name, value in cases:
            async with http.get(f"{base}{route}", params={name: value}) as response:
                body = await problem(response)
                assert response.status in (400, 422), (route, name, value[:40], body)
                assert named_field(body) == name, (route, name, body)


async def test_a_time_filter_at_the_calendars_edge_inside_utc_is_answered(hostile: Hostile) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
        url = f"{hostile.stack.url('intake_api')}/v1/payments"
        params = {"created[gte]": "0001-01-01T00:00:00Z", "created[lte]": "9999-12-31T23:59:59Z"}
        async with http.get(url, params=params) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["data"], "the set-up payment lies between the two"


HOSTILE_WEBHOOK_OBJECTS: dict[str, dict[str, Any]] = {
    "a lone surrogate in the payment id (issue 24 §3)": {"metadata": {"payment_id": "pay_\ud800x"}},
    "a NUL in the payment id": {"metadata": {"payment_id": "pay_\x00"}},
    "a lone surrogate in the intent id": {"id": "pi_\udfff"},
    "a NUL in the failure code": {"failure_code": "declined\x00"},
    "an amount beyond a bigint": {"amount": 10**40},
}


async def test_a_signed_webhook_whose_content_cannot_become_our_event_is_400_and_publishes_nothing(
    hostile: Hostile,
) -> None:
    stack = hostile.stack
    url = f"{stack.url('webhook_receiver')}/webhooks/sandbox"
    bodies = {
        name: encode(
            sandbox_event("pay_" + "0" * 32, event_type="payment.failed", **{"failure_code": "declined", **fields})
        )
        for name, fields in HOSTILE_WEBHOOK_OBJECTS.items()
    }
    good = encode(sandbox_event("pay_" + "0" * 32))
    bodies["a number of 4,301 digits"] = good.replace(b'"amount":1999', b'"amount":' + b"9" * 4301)
    bodies["a time past the year 9999"] = good.replace(b'"created":', b'"created":' + b"9" * 20 + b',"was":')
    bodies["nesting 100,000 deep"] = good.replace(
        b'"data":', b'"deep":' + b"[" * 100_000 + b"]" * 100_000 + b',"data":'
    )
    async with aiohttp.ClientSession() as http:
        before_rows, before_webhooks = await written_rows(hostile.pool), await accepted_webhooks(http, stack)
        for name, body in bodies.items():
            async with http.post(url, data=body, headers=signed(body, hostile.webhook_secret)) as response:
                answer = await problem(response)
                assert response.status == 400, (name, answer)
                assert str(answer["type"]).endswith("invalid-webhook"), (name, answer)
        assert await accepted_webhooks(http, stack) == before_webhooks
        assert await written_rows(hostile.pool) == before_rows


DIVERGENT_URLS = [
    "http://127.0.0.1:80\\@93.184.216.34/",
    "http://localhost:80\\@93.184.216.34/",
    "http://[::1]:80\\@93.184.216.34/",
    "https://user:pass@93.184.216.34/",
    "http://%31%32%37.0.0.1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "https://93.184.216.34/\thooks",
    "https://93.184.216.34/hooks ",
]
NOT_GLOBAL_URLS = [
    "http://100.64.0.1/",
    "http://[2002:7f00:1::]/",
    "http://192.0.0.8/",
    "http://[::ffff:127.0.0.1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://localhost:5672/",
]


async def registered_endpoints(pool: asyncpg.Pool, merchant: str) -> int:
    query = "SELECT count(*) FROM notifier.webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL"
    return int(await pool.fetchval(query, merchant))


async def test_a_webhook_url_read_otherwise_by_a_browser_or_not_global_is_refused_and_not_stored(
    hostile: Hostile,
) -> None:
    url = f"{hostile.stack.url('intake_api')}/v1/webhook_endpoints"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
        before = await registered_endpoints(hostile.pool, "demo")
        for target in DIVERGENT_URLS + NOT_GLOBAL_URLS:
            async with http.post(url, json={"url": target}) as response:
                body = await problem(response)
                assert response.status == 422, (target, body)
                assert named_field(body) == "url", (target, body)
        assert await registered_endpoints(hostile.pool, "demo") == before
