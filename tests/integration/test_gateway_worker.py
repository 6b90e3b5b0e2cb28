"""The gateway_worker's application over the real RabbitMQ, calling an in-process sandbox or Stripe fake.

Each test starts the worker's own `create_app` (its consumer group, retry policy and providers from settings)
in this process, publishes to the real broker and watches what the worker publishes back.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.gateway_worker.app import create_app as create_worker
from services.gateway_worker.settings import GatewayWorkerSettings
from services.sandbox_gateway.app import create_app as create_sandbox
from services.sandbox_gateway.settings import SandboxGatewaySettings
from shared.broker import REPLY_TO_HEADER, Broker, Delivery
from shared.events import (
    CancelPayment,
    Envelope,
    Message,
    PaymentIntentCreated,
    PaymentIntentFailed,
    PaymentStatus,
    PaymentStatusChanged,
)
from tests.fakes.stripe_fake import StripeFake
from tests.support.brokers import queue_depth
from tests.support.messages import payment_requested
from tests.support.processes import eventually, free_port

OUTCOMES = ("payment.intent_created", "payment.intent_failed", "payment.status_changed")


class Observer:
    """What the gateway_worker publishes, collected from a private queue bound to its outcomes."""

    def __init__(self) -> None:
        self.received: list[Envelope] = []

    async def handle(self, envelope: Envelope, _: Delivery) -> None:
        self.received.append(envelope)

    def about(self, payment_id: str) -> list[Envelope]:
        return [e for e in self.received if e.payment_id == payment_id]

    async def first(self, payment_id: str) -> Envelope:
        async def seen() -> Envelope | None:
            found = self.about(payment_id)
            return found[0] if found else None

        return await eventually(seen, timeout=10, what=f"an outcome for {payment_id}")


@pytest.fixture
async def observer(broker: Broker) -> Observer:
    watching = Observer()
    await broker.consume_private("observer", OUTCOMES, watching.handle)
    return watching


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def http_servers() -> AsyncIterator[list[TestServer]]:
    started: list[TestServer] = []
    yield started
    for server in reversed(started):
        await server.close()


@pytest.fixture
async def sandbox_url(http_servers: list[TestServer]) -> str:
    settings = SandboxGatewaySettings(_env_file=None, sandbox_webhook_url="http://127.0.0.1:9/webhooks/sandbox")  # type: ignore[call-arg]
    server = await _serve(create_sandbox(settings))
    http_servers.append(server)
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def stripe_fake(http_servers: list[TestServer]) -> tuple[StripeFake, str]:
    fake = StripeFake(api_key="sk_test_x", webhook_secret="whsec_x")
    server = await _serve(fake.app())
    http_servers.append(server)
    return fake, str(server.make_url("")).rstrip("/")


StartWorker = Callable[..., Awaitable[None]]


@pytest.fixture
def start_worker(amqp_url: str, namespace: str, http_servers: list[TestServer]) -> StartWorker:
    async def start(**overrides: Any) -> None:
        fields: dict[str, Any] = {
            "amqp_url": amqp_url,
            "broker_namespace": namespace,
            "gateway_max_attempts": 5,
            "gateway_retry_base_seconds": 0.05,
            "gateway_timeout_seconds": 5,
            **overrides,
        }
        http_servers.append(await _serve(create_worker(GatewayWorkerSettings(_env_file=None, **fields))))  # type: ignore[call-arg]

    return start


@pytest.fixture
async def sandbox_worker(start_worker: StartWorker, sandbox_url: str) -> str:
    """A gateway_worker running against the in-process sandbox; the sandbox's URL."""
    await start_worker(sandbox_url=sandbox_url)
    return sandbox_url


async def publish_raw(broker: Broker, body: bytes, routing_key: str = "payment.requested") -> None:
    channel = await broker.connection.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(broker.names.exchange)
        await exchange.publish(aio_pika.Message(body=body, message_id=secrets.token_hex(8)), routing_key=routing_key)
    finally:
        await channel.close()


async def sandbox_intents(sandbox_url: str, payment_id: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sandbox_url}/v1/intents", params={"payment_id": payment_id}) as response,
    ):
        assert response.status == 200, await response.text()
        return (await response.json())["data"]


def create_requests(fake: StripeFake, payment_id: str) -> int:
    return sum(
        1
        for r in fake.requests
        if (r.method, r.path) == ("POST", "/v1/checkout/sessions") and r.headers.get("Idempotency-Key") == payment_id
    )


async def request_payment(broker: Broker, observer: Observer) -> tuple[Envelope, Message]:
    """Publish a new payment request and wait for the worker's first outcome: (the request, that outcome)."""
    envelope = payment_requested()
    await broker.publish(envelope)
    return envelope, (await observer.first(envelope.payment_id)).message()


# --- opening intents ---------------------------------------------------------------------------------------


async def test_a_payment_request_gets_its_sandbox_intent_and_a_checkout_url(
    broker: Broker, observer: Observer, sandbox_worker: str
) -> None:
    envelope, outcome = await request_payment(broker, observer)

    assert isinstance(outcome, PaymentIntentCreated)
    [intent] = await sandbox_intents(sandbox_worker, envelope.payment_id)
    assert (outcome.provider, outcome.provider_payment_id, outcome.checkout_url) == (
        "sandbox",
        intent["id"],
        intent["checkout_url"],
    )


async def test_a_payment_request_delivered_twice_opens_one_intent_at_the_sandbox(
    broker: Broker, observer: Observer, sandbox_worker: str
) -> None:
    envelope, _ = await request_payment(broker, observer)
    await broker.publish(envelope)

    both = await eventually(lambda: _ready(observer.about(envelope.payment_id), 2), what="a second outcome")

    assert len(await sandbox_intents(sandbox_worker, envelope.payment_id)) == 1
    assert both[0].id == both[1].id


async def _ready(items: list[Envelope], count: int) -> list[Envelope] | None:
    return items if len(items) >= count else None


async def test_a_transient_provider_error_is_retried_until_the_intent_is_created(
    broker: Broker, observer: Observer, start_worker: StartWorker, stripe_fake: tuple[StripeFake, str]
) -> None:
    fake, url = stripe_fake
    await start_worker(payment_provider="stripe", stripe_api_key="sk_test_x", stripe_api_base=url)
    fake.fail_next(2, status=503)
    envelope, outcome = await request_payment(broker, observer)

    assert isinstance(outcome, PaymentIntentCreated)
    assert create_requests(fake, envelope.payment_id) == 3
    assert len(fake.sessions) == 1


async def test_a_create_stripe_answers_409_while_the_same_key_is_in_flight_is_retried_not_failed(
    broker: Broker, observer: Observer, start_worker: StartWorker, stripe_fake: tuple[StripeFake, str]
) -> None:
    # Stripe's 409: a request with the same Idempotency-Key (our payment id) is still being worked on. The payment's
    # session will be payable, so failing the payment here would be wrong; the worker asks again later.
    fake, url = stripe_fake
    await start_worker(
        payment_provider="stripe", stripe_api_key="sk_test_x", stripe_api_base=url, gateway_max_attempts=10
    )
    envelope = payment_requested()
    fake.in_flight.add(envelope.payment_id)
    await broker.publish(envelope)
    await eventually(lambda: _creates_were(fake, envelope.payment_id, 2), what="the create to be retried")
    fake.in_flight.clear()

    outcome = (await observer.first(envelope.payment_id)).message()

    assert isinstance(outcome, PaymentIntentCreated)
    assert len(fake.sessions) == 1


async def _creates_were(fake: StripeFake, payment_id: str, at_least: int) -> bool:
    return create_requests(fake, payment_id) >= at_least


async def test_a_message_awaiting_its_retry_waits_in_a_delay_queue_not_in_the_consumer(
    broker: Broker, observer: Observer, start_worker: StartWorker, stripe_fake: tuple[StripeFake, str]
) -> None:
    fake, url = stripe_fake
    # One attempt in flight at a time, and a long wait before the retry: a consumer that slept would stall.
    await start_worker(
        payment_provider="stripe", stripe_api_key="sk_test_x", stripe_api_base=url, gateway_retry_base_seconds=60
    )
    fake.fail_next(1, status=500)
    waiting = payment_requested()
    await broker.publish(waiting)
    delay_queue = broker.names.delay_queue("gateway_worker", 2)
    await eventually(lambda: _depth_is(broker, delay_queue, 1), what="the message in the delay queue")

    _, outcome = await request_payment(broker, observer)

    assert isinstance(outcome, PaymentIntentCreated)
    assert observer.about(waiting.payment_id) == []
    assert await queue_depth(broker, delay_queue) == 1


async def _depth_is(broker: Broker, queue: str, depth: int) -> bool:
    return await queue_depth(broker, queue) == depth


async def test_an_exhausted_retry_budget_fails_the_intent_with_gateway_error(
    broker: Broker, observer: Observer, start_worker: StartWorker
) -> None:
    # Nothing listens on this port: every call is a refused connection.
    await start_worker(sandbox_url=f"http://127.0.0.1:{free_port()}", gateway_max_attempts=3)
    _, outcome = await request_payment(broker, observer)

    assert isinstance(outcome, PaymentIntentFailed)
    assert outcome.failure_code == "gateway_error"
    assert "retries exhausted" in outcome.reason
    assert await queue_depth(broker, broker.names.dlq("gateway_worker")) == 0


async def test_a_permanent_provider_error_fails_the_intent_after_one_call(
    broker: Broker, observer: Observer, start_worker: StartWorker, stripe_fake: tuple[StripeFake, str]
) -> None:
    fake, url = stripe_fake
    await start_worker(payment_provider="stripe", stripe_api_key="sk_test_revoked", stripe_api_base=url)
    envelope, outcome = await request_payment(broker, observer)

    assert isinstance(outcome, PaymentIntentFailed)
    assert (outcome.failure_code, "401" in outcome.reason) == ("gateway_error", True)
    assert create_requests(fake, envelope.payment_id) == 1


# --- answering the intake process that waits ---------------------------------------------------------------


async def reply_queues(broker: Broker, count: int) -> list[tuple[str, Observer]]:
    """`count` private reply queues, as `count` intake processes hold them: (reply key, what it heard)."""
    queues = []
    for _ in range(count):
        heard = Observer()
        queues.append((await broker.consume_replies("intake_api", heard.handle), heard))
    return queues


async def test_an_intent_outcome_reaches_the_waiting_intake_alone_in_the_publish_its_subscribers_get(
    broker: Broker, observer: Observer, start_worker: StartWorker, sandbox_url: str
) -> None:
    await start_worker(sandbox_url=sandbox_url)
    [(waiting_key, waiting), (_, other)] = await reply_queues(broker, 2)
    asked, unasked = payment_requested(), payment_requested()
    await broker.publish(asked, headers={REPLY_TO_HEADER: waiting_key})
    await broker.publish(unasked)

    answer = await waiting.first(asked.payment_id)
    subscribed = await observer.first(asked.payment_id)
    await observer.first(unasked.payment_id)

    # One publish: the subscribers' copy and the waiting intake's are the same message.
    assert answer.id == subscribed.id
    outcome = answer.message()
    assert isinstance(outcome, PaymentIntentCreated) and outcome.checkout_url
    # The other intake hears of neither payment; the waiting one of nothing but its own.
    assert other.received == []
    assert [e.payment_id for e in waiting.received] == [asked.payment_id]


async def test_the_reply_address_survives_the_retries_through_the_delay_queues(
    broker: Broker, start_worker: StartWorker, stripe_fake: tuple[StripeFake, str]
) -> None:
    fake, url = stripe_fake
    await start_worker(payment_provider="stripe", stripe_api_key="sk_test_x", stripe_api_base=url)
    fake.fail_next(2, status=503)
    [(key, waiting)] = await reply_queues(broker, 1)
    envelope = payment_requested()
    await broker.publish(envelope, headers={REPLY_TO_HEADER: key})

    outcome = (await waiting.first(envelope.payment_id)).message()

    assert isinstance(outcome, PaymentIntentCreated)
    assert create_requests(fake, envelope.payment_id) == 3


async def test_an_intent_failed_after_its_retries_reaches_the_waiting_intake(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker(sandbox_url=f"http://127.0.0.1:{free_port()}", gateway_max_attempts=3)
    [(key, waiting)] = await reply_queues(broker, 1)
    envelope = payment_requested()
    await broker.publish(envelope, headers={REPLY_TO_HEADER: key})

    outcome = (await waiting.first(envelope.payment_id)).message()

    assert isinstance(outcome, PaymentIntentFailed)
    assert "retries exhausted" in outcome.reason


# --- commands ------------------------------------------------------------------------------------------------


async def test_a_cancel_sent_before_the_ledger_knew_the_intent_still_cancels_it_at_the_sandbox(
    broker: Broker, observer: Observer, sandbox_worker: str
) -> None:
    envelope, created = await request_payment(broker, observer)
    assert isinstance(created, PaymentIntentCreated)

    # What the intake sends when its view of the payment has no intent yet.
    await broker.publish(Envelope.wrap(CancelPayment(), payment_id=envelope.payment_id, source="merchant"))
    [_, answer] = await eventually(lambda: _ready(observer.about(envelope.payment_id), 2), what="the cancel's outcome")

    outcome = answer.message()
    assert isinstance(outcome, PaymentStatusChanged)
    assert (outcome.status, outcome.provider_payment_id) == (PaymentStatus.CANCELED, created.provider_payment_id)
    [intent] = await sandbox_intents(sandbox_worker, envelope.payment_id)
    assert intent["status"] == "canceled"


# --- messages that can never be handled ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"\x00not json at all",
        b'{"type": "payment.requested", "source": "intake", "payment_id": "pay_x", "data": {"amount": 1}}',
    ],
    ids=["not-json", "invalid-payload"],
)
async def test_a_message_that_cannot_be_decoded_goes_to_the_dlq_once(
    broker: Broker, observer: Observer, sandbox_worker: str, body: bytes
) -> None:
    await publish_raw(broker, body)
    dlq = broker.names.dlq("gateway_worker")
    await eventually(lambda: _depth_is(broker, dlq, 1), what="the message in the DLQ")

    # The worker carries on: the next message is handled, and the bad one has not come round again.
    await request_payment(broker, observer)
    assert await queue_depth(broker, dlq) == 1
    assert await queue_depth(broker, broker.names.queue("gateway_worker")) == 0
