"""The webhook receiver (docs/reference/provider-webhooks.md) against the real broker: what is refused publishes
nothing, what is
accepted is on the broker before the 200, and one webhook delivered ten times at once moves the ledger once.

"Nothing published" is proven without waiting: after the refused webhook a valid one is sent; the receiver
publishes in order on one channel, so the first message in the queue must be that valid one.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from services.ledger.app import GROUP
from services.ledger.postgres_store import PostgresLedgerStore
from services.webhook_receiver.app import MAX_WEBHOOK_BYTES, create_app
from services.webhook_receiver.settings import WebhookReceiverSettings
from shared.broker import Broker, Delivery, RetryPolicy
from shared.events import Envelope, deterministic_event_id
from tests.support.ledger import record_event
from tests.support.payment_histories import intent_created, requested
from tests.support.processes import eventually
from tests.support.sandbox_webhooks import encode, sandbox_event, signed

CURRENT, PREVIOUS = "whsec_current", "whsec_previous"


@pytest.fixture
async def receiver(amqp_url: str, namespace: str) -> AsyncIterator[TestClient]:
    """The webhook_receiver application in-process, with a rotation in progress (two secrets)."""
    settings = WebhookReceiverSettings(  # type: ignore[call-arg]
        _env_file=None, amqp_url=amqp_url, broker_namespace=namespace, sandbox_webhook_secret=f"{CURRENT},{PREVIOUS}"
    )
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    yield client
    await client.close()


class LedgerQueue:
    """The namespace's ledger queue, where every payment event the receiver publishes is routed."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel, name: str) -> None:
        self._channel = channel
        self._name = name

    async def take(self) -> Envelope | None:
        queue = await self._channel.get_queue(self._name)
        message = await queue.get(no_ack=True, fail=False)
        return None if message is None else Envelope.from_bytes(message.body)

    async def next(self) -> Envelope:
        return await eventually(self.take, timeout=5, what="a message in the ledger queue")


@pytest.fixture
async def ledger_queue(receiver: TestClient, amqp_url: str, namespace: str) -> AsyncIterator[LedgerQueue]:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    yield LedgerQueue(channel, f"{namespace}.ledger")
    await connection.close()


async def post(client: TestClient, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with client.post("/webhooks/sandbox", data=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def post_marker(client: TestClient) -> str:
    """A valid webhook; returns the id of the event it publishes."""
    event = sandbox_event("pay_marker")
    body = encode(event)
    status, answer = await post(client, body, signed(body, CURRENT))
    assert status == 200, answer
    return answer["event_id"]


def _good_body() -> bytes:
    return encode(sandbox_event(f"pay_{secrets.token_hex(6)}"))


def bad_webhook(case: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one bad case, signed now (a signature's age is measured from its making)."""
    body = _good_body()
    json_headers = {"Content-Type": "application/json"}
    cases: dict[str, tuple[bytes, dict[str, str]]] = {
        "forged-with-another-secret": (body, signed(body, "whsec_attacker")),
        "stale-301s-old": (body, signed(body, CURRENT, age_seconds=301)),
        "stale-301s-in-the-future": (body, signed(body, CURRENT, age_seconds=-301)),
        "unsigned": (body, json_headers),
        "malformed-header": (body, {**json_headers, "Paystream-Signature": "garbage"}),
        "header-without-timestamp": (body, {**json_headers, "Paystream-Signature": "v1=" + "0" * 64}),
        "header-without-v1": (body, {**json_headers, "Paystream-Signature": "t=1795460000"}),
        "non-numeric-timestamp": (body, {**json_headers, "Paystream-Signature": "t=soon,v1=" + "0" * 64}),
        "non-ascii-signature": (body, {**json_headers, "Paystream-Signature": f"t={int(time.time())},v1=\u00e9"}),
        "tampered-body": (body.replace(b"1999", b"1"), signed(body, CURRENT)),
    }
    invalid_bodies = {
        "signed-malformed-json": b'{"id": "evt_1", "type": ',
        "signed-json-not-an-object": b"[1, 2, 3]",
        "signed-type-contradicting-status": encode(sandbox_event("pay_x", status="failed")),
        "signed-without-payment-id": encode(sandbox_event("pay_x", metadata={})),
        "signed-amount-not-an-integer": encode(sandbox_event("pay_x", amount="19.99")),
    }
    for name, invalid in invalid_bodies.items():
        cases[name] = (invalid, signed(invalid, CURRENT))
    return cases[case]


BAD_CASES = (
    "forged-with-another-secret",
    "stale-301s-old",
    "stale-301s-in-the-future",
    "unsigned",
    "malformed-header",
    "header-without-timestamp",
    "header-without-v1",
    "non-numeric-timestamp",
    "non-ascii-signature",
    "tampered-body",
    "signed-malformed-json",
    "signed-json-not-an-object",
    "signed-type-contradicting-status",
    "signed-without-payment-id",
    "signed-amount-not-an-integer",
)


@pytest.mark.parametrize("case", BAD_CASES)
async def test_a_bad_webhook_is_answered_400_and_nothing_is_published(
    receiver: TestClient, ledger_queue: LedgerQueue, case: str
) -> None:
    body, headers = bad_webhook(case)

    status, problem = await post(receiver, body, headers)

    assert status == 400, problem
    assert problem["type"].endswith("invalid-webhook") and problem["status"] == 400
    marker = await post_marker(receiver)
    assert str((await ledger_queue.next()).id) == marker
    assert await ledger_queue.take() is None


async def test_a_valid_webhook_is_on_the_broker_as_a_status_change_before_the_200(
    receiver: TestClient, ledger_queue: LedgerQueue
) -> None:
    event = sandbox_event("pay_ok", event_type="payment.failed", failure_code="card_declined", event_id="evt_ok")
    body = encode(event)

    status, answer = await post(receiver, body, signed(body, CURRENT))

    assert status == 200, answer
    published = await ledger_queue.take()  # confirmed before the answer: no waiting needed
    assert published is not None
    assert (published.type, published.source, published.payment_id) == ("payment.status_changed", "webhook", "pay_ok")
    assert published.id == deterministic_event_id("sandbox", "evt_ok")
    assert published.data["status"] == "FAILED"
    assert (published.data["failure_code"], published.data["amount"], published.data["currency"]) == (
        "card_declined",
        1999,
        "USD",
    )


async def test_a_signed_event_of_a_type_we_do_not_act_on_is_acknowledged_and_nothing_is_published(
    receiver: TestClient, ledger_queue: LedgerQueue
) -> None:
    body = encode(sandbox_event("pay_x", event_type="payment.refunded"))

    status, answer = await post(receiver, body, signed(body, CURRENT))

    assert (status, answer["outcome"]) == (200, "ignored"), answer
    marker = await post_marker(receiver)
    assert str((await ledger_queue.next()).id) == marker
    assert await ledger_queue.take() is None


async def test_a_webhook_signed_with_the_second_secret_of_the_rotation_is_accepted(
    receiver: TestClient, ledger_queue: LedgerQueue
) -> None:
    body = _good_body()

    status, answer = await post(receiver, body, signed(body, PREVIOUS))

    assert status == 200, answer
    assert str((await ledger_queue.next()).id) == answer["event_id"]


@pytest.mark.parametrize("age", [299, -299], ids=["299s-old", "299s-ahead"])
async def test_a_webhook_within_the_clock_tolerance_is_accepted(receiver: TestClient, age: int) -> None:
    body = _good_body()

    status, answer = await post(receiver, body, signed(body, CURRENT, age_seconds=age))

    assert status == 200, answer


async def test_the_signature_header_name_is_case_insensitive(receiver: TestClient) -> None:
    body = _good_body()
    headers = {k.lower(): v for k, v in signed(body, CURRENT).items()}

    status, answer = await post(receiver, body, headers)

    assert status == 200, answer


async def test_an_oversized_body_is_answered_413_and_nothing_is_published(
    receiver: TestClient, ledger_queue: LedgerQueue
) -> None:
    body = encode(sandbox_event("pay_big", description="x" * MAX_WEBHOOK_BYTES))

    status, problem = await post(receiver, body, signed(body, CURRENT))

    assert status == 413
    assert problem["type"].endswith("payload-too-large")
    marker = await post_marker(receiver)
    assert str((await ledger_queue.next()).id) == marker
    assert await ledger_queue.take() is None


async def _webhook_counts(client: TestClient) -> dict[str, float]:
    async with client.get("/metrics") as response:
        text = await response.text()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "paystream_webhooks_received":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["provider"] == "sandbox":
                    counts[sample.labels["outcome"]] = sample.value
    return counts


async def test_webhooks_are_counted_by_provider_and_outcome(receiver: TestClient) -> None:
    before = await _webhook_counts(receiver)
    good = _good_body()
    invalid = b'{"id": "evt_1"}'

    await post(receiver, good, signed(good, CURRENT))
    await post(receiver, good, signed(good, "whsec_attacker"))
    await post(receiver, invalid, signed(invalid, CURRENT))
    await post(receiver, b"x" * (MAX_WEBHOOK_BYTES + 1), signed(b"", CURRENT))

    after = await _webhook_counts(receiver)
    delta = {outcome: after.get(outcome, 0) - before.get(outcome, 0) for outcome in after}
    assert {k: v for k, v in delta.items() if v} == {
        "accepted": 1,
        "invalid_signature": 1,
        "invalid_event": 1,
        "too_large": 1,
    }


class OutcomeRecorder:
    """The ledger's consumer (record_event), keeping what each delivery came to."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.outcomes: list[str] = []

    async def __call__(self, envelope: Envelope, delivery: Delivery) -> None:
        self.outcomes.append((await record_event(PostgresLedgerStore(self._pool), envelope)).outcome)


async def test_the_same_webhook_ten_times_at_once_makes_one_transition(
    receiver: TestClient, pool: asyncpg.Pool, amqp_url: str, namespace: str
) -> None:
    payment_id = f"pay_{secrets.token_hex(8)}"
    await record_event(PostgresLedgerStore(pool), requested(payment_id))
    await record_event(PostgresLedgerStore(pool), intent_created(payment_id))
    ledger = Broker(amqp_url, namespace, name="test-ledger")
    await ledger.connect()
    try:
        recorder = OutcomeRecorder(pool)
        await ledger.consume(GROUP, recorder, retry=RetryPolicy(5, 0.1))
        body = encode(sandbox_event(payment_id))
        headers = signed(body, CURRENT)

        answers = await asyncio.gather(*(post(receiver, body, headers) for _ in range(10)))

        assert [status for status, _ in answers] == [200] * 10
        assert len({answer["event_id"] for _, answer in answers}) == 1

        async def all_recorded() -> bool:
            return len(recorder.outcomes) == 10

        await eventually(all_recorded, timeout=10, what="ten deliveries recorded")
    finally:
        await ledger.close()
    assert sorted(recorder.outcomes) == ["applied"] + ["duplicate event"] * 9
    rows = await pool.fetch(
        "SELECT from_status, to_status, outcome FROM ledger.payment_logs"
        " WHERE payment_request_id = $1 AND event_type = 'payment.status_changed'",
        payment_id,
    )
    assert [(r["from_status"], r["to_status"], r["outcome"]) for r in rows] == [("PENDING", "SUCCEEDED", "applied")]
