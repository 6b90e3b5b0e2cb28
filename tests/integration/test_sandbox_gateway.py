"""The sandbox gateway over HTTP (docs/reference/sandbox.md), with a small aiohttp server standing in for the webhook
receiver."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.sandbox_gateway.app import create_app
from services.sandbox_gateway.faults import Faults
from services.sandbox_gateway.intents import IntentDraft, IntentStatus, IntentStore
from services.sandbox_gateway.settings import SandboxGatewaySettings
from services.sandbox_gateway.webhooks import WebhookSender
from shared.events import PaymentStatus, RefundStatus
from shared.providers.base import IntentRequest, RefundingProvider, RefundRequest, RefundWebhookEvent, WebhookEvent
from shared.providers.errors import PermanentGatewayError
from shared.providers.sandbox import SandboxProvider
from tests.support.messages import intent_request

ADMIN_TOKEN = "sandbox-admin-test-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = "whsec_sandbox_test"
FUTURE_EXPIRY = f"12/{(date.today().year + 3) % 100:02d}"


@dataclass
class Delivery:
    headers: CIMultiDict[str]
    body: bytes
    received_at: float


@dataclass
class WebhookTarget:
    """Records every webhook; answers the queued statuses first, then 200."""

    url: str = ""
    received: list[Delivery] = field(default_factory=list)
    answers: deque[int] = field(default_factory=deque)
    stalls: deque[float] = field(default_factory=deque)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Delivery(CIMultiDict(request.headers), await request.read(), time.monotonic()))
        if self.stalls:
            await asyncio.sleep(self.stalls.popleft())
        return web.Response(status=self.answers.popleft() if self.answers else 200)

    async def only_event(self, within: float = 5.0) -> WebhookEvent:
        """The one webhook received (waited for), as the gateway_worker's sandbox provider reads it."""
        [delivery] = await eventually(lambda: self.received, within)
        event = verifier().parse_webhook(delivery.body)
        assert isinstance(event, WebhookEvent)
        return event


async def eventually(condition: Callable[[], Any], within: float = 5.0) -> Any:
    """Poll until `condition` is truthy, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def webhook_target() -> AsyncIterator[WebhookTarget]:
    target = WebhookTarget()
    app = web.Application()
    app.router.add_post("/webhooks/sandbox", target.handle)
    server = TestServer(app)
    await server.start_server()
    target.url = str(server.make_url("/webhooks/sandbox"))
    yield target
    await server.close()


StartSandbox = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def start_sandbox(webhook_target: WebhookTarget) -> AsyncIterator[StartSandbox]:
    clients: list[TestClient] = []

    async def start(*, rng: random.Random | None = None, tracer: Any = None, **overrides: Any) -> TestClient:
        settings_fields: dict[str, Any] = {
            "sandbox_webhook_url": webhook_target.url,
            "sandbox_webhook_secret": f"{SECRET},whsec_previous",
            "sandbox_webhook_retry_base_seconds": 0.05,
            "sandbox_autopay": None,
            "sandbox_admin_token": ADMIN_TOKEN,
            **overrides,
        }
        settings = SandboxGatewaySettings(_env_file=None, **settings_fields)  # type: ignore[call-arg]
        client = TestClient(TestServer(create_app(settings, rng=rng, tracer=tracer)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def sandbox(start_sandbox: StartSandbox) -> TestClient:
    return await start_sandbox()


def intent_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": 1999,
        "currency": "USD",
        "reference": "order-42",
        "description": "2 books",
        "customer_email": "a@b.example",
        "return_url": "https://shop.example/orders/42?lang=en",
        "cancel_url": "https://shop.example/cart",
        "expires_at": int(time.time()) + 600,
        "metadata": {"payment_id": "pay_" + uuid.uuid4().hex},
    }
    body.update(overrides)
    return body


async def create_intent(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/intents", json=intent_body(**overrides), headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def fetch_intent(client: TestClient, intent_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/intents/{intent_id}")
    assert response.status == 200
    return await response.json()


async def pay_on_page(client: TestClient, intent_id: str, card: str = "4242 4242 4242 4242", **fields: str):
    form = {"name": "Ada Lovelace", "card_number": card, "expiry": FUTURE_EXPIRY, "cvc": "123", **fields}
    return await client.post(f"/pay/{intent_id}", data=form, allow_redirects=False)


def verifier() -> SandboxProvider:
    return SandboxProvider("http://sandbox.invalid", [SECRET])


# --- the intents API ---------------------------------------------------------------------------------


async def test_healthz_answers_ok(sandbox: TestClient) -> None:
    assert (await sandbox.get("/healthz")).status == 200


async def test_create_intent_answers_201_with_an_open_intent_and_its_checkout_url(sandbox: TestClient) -> None:
    response = await sandbox.post("/v1/intents", json=intent_body(), headers={"Idempotency-Key": "k-create"})
    intent = await response.json()
    assert response.status == 201
    assert response.headers["Location"] == f"/v1/intents/{intent['id']}"
    assert intent["id"].startswith("pi_")
    assert intent["status"] == "open"
    assert intent["checkout_url"] == f"http://localhost:8090/pay/{intent['id']}"
    assert (intent["amount"], intent["currency"], intent["reference"]) == (1999, "USD", "order-42")


async def test_the_same_idempotency_key_answers_the_same_intent_with_200(sandbox: TestClient) -> None:
    body = intent_body()
    first = await sandbox.post("/v1/intents", json=body, headers={"Idempotency-Key": "k-same"})
    again = await sandbox.post("/v1/intents", json=body, headers={"Idempotency-Key": "k-same"})
    assert (first.status, again.status) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == (await first.json())["id"]


async def test_the_same_idempotency_key_for_another_amount_is_422(sandbox: TestClient) -> None:
    await sandbox.post("/v1/intents", json=intent_body(), headers={"Idempotency-Key": "k-reuse"})
    response = await sandbox.post("/v1/intents", json=intent_body(amount=1), headers={"Idempotency-Key": "k-reuse"})
    assert response.status == 422
    assert (await response.json())["type"].endswith("idempotency-key-reuse")


async def test_an_invalid_intent_body_is_a_422_problem_listing_each_field(sandbox: TestClient) -> None:
    body = intent_body(amount=0, currency="usd", return_url="ftp://x", surprise=True)
    response = await sandbox.post("/v1/intents", json=body, headers={"Idempotency-Key": "k-invalid"})
    problem = await response.json()
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert {"amount", "currency", "return_url", "surprise"} <= {e["field"] for e in problem["errors"]}


async def test_a_malformed_json_body_is_a_400_problem(sandbox: TestClient) -> None:
    response = await sandbox.post(
        "/v1/intents", data=b"{nope", headers={"Content-Type": "application/json", "Idempotency-Key": "k"}
    )
    assert response.status == 400
    assert response.content_type == "application/problem+json"


async def test_an_unknown_intent_is_a_404_problem(sandbox: TestClient) -> None:
    response = await sandbox.get("/v1/intents/pi_unknown")
    assert response.status == 404
    assert (await response.json())["type"].endswith("intent-not-found")


async def test_the_sandbox_provider_client_creates_retrieves_and_cancels(sandbox: TestClient) -> None:
    provider = SandboxProvider(str(sandbox.make_url("/")), [SECRET])
    request = IntentRequest(
        payment_id="pay_" + uuid.uuid4().hex,
        amount=2500,
        currency="EUR",
        reference="order-7",
        return_url="https://shop.example/done",
        cancel_url=None,
        expires_at=datetime.now(UTC) + timedelta(minutes=30),
        merchant_name="Ada's Books",
        metadata={"cart": "c-9"},
    )
    try:
        created = await provider.create_intent(request)
        retried = await provider.create_intent(request)
        retrieved = await provider.retrieve_intent(created.provider_payment_id)
        canceled = await provider.cancel_intent(created.provider_payment_id, reason="canceled")
    finally:
        await provider.close()
    assert created.status is PaymentStatus.PENDING and created.checkout_url
    assert retried.provider_payment_id == created.provider_payment_id
    assert (retrieved.amount, retrieved.currency, retrieved.status) == (2500, "EUR", PaymentStatus.PENDING)
    assert canceled.status is PaymentStatus.CANCELED
    assert (await fetch_intent(sandbox, created.provider_payment_id))["merchant_name"] == "Ada's Books"


async def test_the_sandbox_provider_client_cancel_after_success_reports_succeeded(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    await sandbox.post(f"/v1/intents/{intent['id']}/simulate", json={"card_number": "4242424242424242"})
    provider = SandboxProvider(str(sandbox.make_url("/")), [SECRET])
    try:
        result = await provider.cancel_intent(intent["id"], reason="expired")
    finally:
        await provider.close()
    assert result.status is PaymentStatus.SUCCEEDED


# --- cancel --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "closed"),
    [
        pytest.param(None, ("canceled", None), id="cancel closes an open intent"),
        pytest.param({"reason": "expired"}, ("expired", "expired"), id="cancel with reason expired expires it"),
    ],
)
async def test_cancel_closes_an_open_intent_as_its_reason_says(
    sandbox: TestClient, reason: dict[str, str] | None, closed: tuple[str, str | None]
) -> None:
    intent = await create_intent(sandbox)
    response = await sandbox.post(f"/v1/intents/{intent['id']}/cancel", json=reason)
    body = await response.json()
    assert response.status == 200
    assert (body["status"], body["failure_code"]) == closed


async def test_cancel_twice_answers_200_unchanged(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    await sandbox.post(f"/v1/intents/{intent['id']}/cancel", json={"reason": "canceled"})
    again = await sandbox.post(f"/v1/intents/{intent['id']}/cancel", json={"reason": "expired"})
    assert again.status == 200
    assert (await again.json())["status"] == "canceled"


async def test_cancel_after_success_is_409(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    await sandbox.post(f"/v1/intents/{intent['id']}/simulate", json={"card_number": "4242424242424242"})
    response = await sandbox.post(f"/v1/intents/{intent['id']}/cancel")
    assert response.status == 409
    assert response.content_type == "application/problem+json"
    assert (await fetch_intent(sandbox, intent["id"]))["status"] == "succeeded"


# --- simulate ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("card_number", "settled"),
    [
        pytest.param("4242 4242 4242 4242", ("succeeded", "4242", None), id="4242 succeeds and keeps last4"),
        pytest.param("4000000000009995", ("failed", "9995", "insufficient_funds"), id="9995 fails, insufficient funds"),
    ],
)
async def test_simulate_with_a_test_card_settles_the_intent_as_the_card_says(
    sandbox: TestClient, card_number: str, settled: tuple[str, str, str | None]
) -> None:
    intent = await create_intent(sandbox)
    response = await sandbox.post(f"/v1/intents/{intent['id']}/simulate", json={"card_number": card_number})
    body = await response.json()
    assert response.status == 200
    assert (body["status"], body["last4"], body["failure_code"]) == settled


async def test_simulate_with_a_luhn_invalid_number_is_422_and_changes_nothing(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    response = await sandbox.post(f"/v1/intents/{intent['id']}/simulate", json={"card_number": "4242424242424241"})
    assert response.status == 422
    assert [e["field"] for e in (await response.json())["errors"]] == ["card_number"]
    after = await fetch_intent(sandbox, intent["id"])
    assert after["status"] == "open" and "last4" not in after


async def test_simulate_on_a_closed_intent_is_409(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    await sandbox.post(f"/v1/intents/{intent['id']}/cancel")
    response = await sandbox.post(f"/v1/intents/{intent['id']}/simulate", json={"card_number": "4242424242424242"})
    assert response.status == 409
    assert (await fetch_intent(sandbox, intent["id"]))["status"] == "canceled"


# --- the hosted page -----------------------------------------------------------------------------------


async def test_the_hosted_page_is_an_html_form_with_labels_amount_and_reference(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    response = await sandbox.get(f"/pay/{intent['id']}")
    html = await response.text()
    assert response.status == 200 and response.content_type == "text/html"
    assert f'<form method="post" action="/pay/{intent["id"]}"' in html
    for name in ("name", "card_number", "expiry", "cvc"):
        assert f'<label for="{name}">' in html and f'name="{name}"' in html
    assert "19.99 USD" in html and "order-42" in html and "2 books" in html
    assert "<script" not in html


async def test_paying_on_the_page_redirects_303_to_return_url_with_payment_id(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    response = await pay_on_page(sandbox, intent["id"])
    assert response.status == 303
    payment_id = intent["metadata"]["payment_id"]
    assert response.headers["Location"] == f"https://shop.example/orders/42?lang=en&payment_id={payment_id}"
    after = await fetch_intent(sandbox, intent["id"])
    assert (after["status"], after["last4"]) == ("succeeded", "4242")


async def test_paying_with_the_0002_card_on_the_page_fails_with_card_declined(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    response = await pay_on_page(sandbox, intent["id"], card="4000-0000-0000-0002")
    assert response.status == 303
    after = await fetch_intent(sandbox, intent["id"])
    assert (after["status"], after["failure_code"]) == ("failed", "card_declined")


async def test_a_luhn_invalid_number_rerenders_the_form_with_422_and_changes_nothing(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    response = await pay_on_page(sandbox, intent["id"], card="4242 4242 4242 4241")
    html = await response.text()
    assert response.status == 422
    assert "This card number is not valid" in html
    assert 'value="Ada Lovelace"' in html
    assert "4241" not in html
    after = await fetch_intent(sandbox, intent["id"])
    assert after["status"] == "open" and "last4" not in after


def marked_fields(html: str) -> set[str]:
    """The inputs the page marks as wrong (aria-invalid), by name."""
    return set(re.findall(r'<input id="(\w+)"[^>]*aria-invalid="true"', html))


def field_value(html: str, name: str) -> str:
    match = re.search(rf'<input id="{name}" name="{name}" value="([^"]*)"', html)
    assert match, f"no input {name}"
    return match.group(1)


async def test_after_a_wrong_cvc_the_form_keeps_name_number_and_expiry_and_marks_only_the_cvc(
    sandbox: TestClient,
) -> None:
    intent = await create_intent(sandbox)
    response = await pay_on_page(sandbox, intent["id"], card="4242 4242 4242 4242", cvc="12")
    html = await response.text()
    assert response.status == 422
    assert marked_fields(html) == {"cvc"}
    assert field_value(html, "name") == "Ada Lovelace"
    assert field_value(html, "card_number") == "4242 4242 4242 4242"
    assert field_value(html, "expiry") == FUTURE_EXPIRY
    assert field_value(html, "cvc") == ""
    assert (await fetch_intent(sandbox, intent["id"]))["status"] == "open"


async def test_a_card_number_kept_in_the_form_after_a_mistake_is_in_no_log_and_no_intent(
    sandbox: TestClient, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    intent = await create_intent(sandbox)
    response = await pay_on_page(sandbox, intent["id"], card="4000 0000 0000 9995", cvc="1")
    assert "4000 0000 0000 9995" in await response.text()  # back in the customer's own form
    stored = await (await sandbox.get(f"/v1/intents/{intent['id']}")).text()
    written = capsys.readouterr()
    for text in (stored, written.out, written.err, caplog.text):
        assert "9995" not in text and "4000000000009995" not in text


async def test_after_a_wrong_card_number_the_form_keeps_name_and_expiry_and_marks_only_the_number(
    sandbox: TestClient,
) -> None:
    intent = await create_intent(sandbox)
    response = await pay_on_page(sandbox, intent["id"], card="4242 4242 4242 4241", expiry="01/20")
    html = await response.text()
    assert marked_fields(html) == {"card_number", "expiry"}
    assert (field_value(html, "name"), field_value(html, "expiry")) == ("Ada Lovelace", "01/20")
    assert field_value(html, "card_number") == ""


async def test_the_hosted_page_names_the_merchant_and_shows_a_test_mode_badge(sandbox: TestClient) -> None:
    named = await create_intent(sandbox, merchant_name="Ada's <Books>")
    html = await (await sandbox.get(f"/pay/{named['id']}")).text()
    assert '<span class="shop" id="merchant-name">Ada&#x27;s &lt;Books&gt;</span>' in html
    assert '<span class="badge" id="test-mode">Test mode</span>' in html
    unnamed = await create_intent(sandbox)
    html = await (await sandbox.get(f"/pay/{unnamed['id']}")).text()
    assert 'id="merchant-name">Paystream sandbox<' in html and 'id="test-mode"' in html


async def test_an_expired_card_and_missing_fields_are_each_reported(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    response = await pay_on_page(sandbox, intent["id"], expiry="01/20", cvc="", name="")
    html = await response.text()
    assert response.status == 422
    assert "This card has expired." in html
    assert "Enter the name on the card." in html
    assert "security code" in html


async def test_paying_a_closed_intent_shows_a_409_page_and_changes_nothing(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    await pay_on_page(sandbox, intent["id"], card="4000000000000002")
    response = await pay_on_page(sandbox, intent["id"])
    assert response.status == 409
    assert "already failed" in await response.text()
    after = await fetch_intent(sandbox, intent["id"])
    assert (after["status"], after["last4"]) == ("failed", "0002")


async def test_an_unknown_intent_page_is_a_404_html_page(sandbox: TestClient) -> None:
    response = await sandbox.get("/pay/pi_unknown")
    assert response.status == 404
    assert response.content_type == "text/html"
    assert "Payment not found" in await response.text()


async def test_the_cancel_button_cancels_and_redirects_to_cancel_url(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    response = await sandbox.post(f"/pay/{intent['id']}/cancel", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == (f"https://shop.example/cart?payment_id={intent['metadata']['payment_id']}")
    assert (await fetch_intent(sandbox, intent["id"]))["status"] == "canceled"


async def test_the_cancel_link_after_payment_shows_409_and_keeps_the_payment(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox)
    await pay_on_page(sandbox, intent["id"])
    response = await sandbox.get(f"/pay/{intent['id']}/cancel", allow_redirects=False)
    assert response.status == 409
    assert (await fetch_intent(sandbox, intent["id"]))["status"] == "succeeded"


async def test_the_full_card_number_appears_nowhere(
    sandbox: TestClient,
    webhook_target: WebhookTarget,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    intent = await create_intent(sandbox)
    await pay_on_page(sandbox, intent["id"], card="4000000000009995", cvc="987")
    await eventually(lambda: webhook_target.received)
    stored = await (await sandbox.get(f"/v1/intents/{intent['id']}")).text()
    written = capsys.readouterr()
    for text in (stored, webhook_target.received[0].body.decode(), written.out, written.err, caplog.text):
        assert "4000000000009995" not in text


# --- webhooks --------------------------------------------------------------------------------------------


async def test_a_payment_sends_a_webhook_signed_with_the_first_secret(
    sandbox: TestClient, webhook_target: WebhookTarget
) -> None:
    intent = await create_intent(sandbox)
    await pay_on_page(sandbox, intent["id"])
    [delivery] = await eventually(lambda: webhook_target.received)
    verifier().verify_webhook_source(delivery.headers, delivery.body)
    event = verifier().parse_webhook(delivery.body)
    assert isinstance(event, WebhookEvent)
    assert event.provider_event_id.startswith("evt_")
    assert (event.payment_id, event.provider_payment_id) == (intent["metadata"]["payment_id"], intent["id"])
    assert (event.status, event.amount, event.currency) == (PaymentStatus.SUCCEEDED, 1999, "USD")
    assert delivery.headers["Content-Type"] == "application/json"


async def test_a_cancel_sends_a_canceled_webhook(sandbox: TestClient, webhook_target: WebhookTarget) -> None:
    intent = await create_intent(sandbox)
    await sandbox.post(f"/v1/intents/{intent['id']}/cancel")
    event = await webhook_target.only_event()
    assert event.status is PaymentStatus.CANCELED


async def test_a_webhook_answered_500_is_retried_until_accepted(
    sandbox: TestClient, webhook_target: WebhookTarget
) -> None:
    webhook_target.answers.extend([500, 503])
    intent = await create_intent(sandbox)
    await sandbox.post(f"/v1/intents/{intent['id']}/simulate", json={"card_number": "4242424242424242"})

    async def three_attempts_logged() -> list[dict[str, Any]]:
        log = (await (await sandbox.get(f"/v1/intents/{intent['id']}/webhooks")).json())["data"]
        return log if len(log) == 3 else []

    log = await eventually(three_attempts_logged)
    assert [(a["attempt"], a["status"]) for a in log] == [(1, 500), (2, 503), (3, 200)]
    assert len({a["event_id"] for a in log}) == 1 and log[0]["type"] == "payment.succeeded"
    assert log[0]["error"] and log[2]["error"] is None
    assert len({d.body for d in webhook_target.received}) == 1


async def test_an_unreachable_webhook_url_is_logged_as_an_error_and_retried(start_sandbox: StartSandbox) -> None:
    closed = TestServer(web.Application())
    await closed.start_server()
    url = str(closed.make_url("/webhooks/sandbox"))
    await closed.close()
    sandbox = await start_sandbox(sandbox_webhook_url=url, sandbox_webhook_retry_base_seconds=0.01)
    intent = await create_intent(sandbox)
    await sandbox.post(f"/v1/intents/{intent['id']}/cancel")

    async def two_attempts_logged() -> list[dict[str, Any]]:
        log = (await (await sandbox.get(f"/v1/intents/{intent['id']}/webhooks")).json())["data"]
        return log if len(log) >= 2 else []

    log = await eventually(two_attempts_logged)
    assert all(a["status"] is None and a["error"] for a in log)


async def test_a_webhook_attempt_that_times_out_is_retried(webhook_target: WebhookTarget) -> None:
    webhook_target.stalls.append(1.0)
    sender = WebhookSender(
        webhook_target.url,
        SECRET,
        retry_base_seconds=0.01,
        max_attempts=8,
        rng=random.Random(1),
        attempt_timeout_seconds=0.1,
    )
    intent, _ = IntentStore("http://sandbox.test").open(
        IntentDraft(amount=1, currency="USD", reference="r", return_url="https://shop.example/")
    )
    intent.status = IntentStatus.CANCELED
    await sender.start()
    try:
        sender.send(intent, created=int(time.time()), faults=Faults())
        log = await eventually(lambda: sender.attempts(intent.id) if len(sender.attempts(intent.id)) == 2 else [])
    finally:
        await sender.close()
    assert [(a.status, a.error) for a in log] == [(None, "no answer within 0.1 s"), (200, None)]


async def test_webhooks_delivered_at_the_first_attempt_leave_no_reference_cycles(
    webhook_target: WebhookTarget,
) -> None:
    """Only an event whose first attempt failed gets a retry loop: a loop per event (stamina's tenacity objects,
    in reference cycles) was garbage only the cycle collector frees, and its full collections paused the sandbox
    for 100 to 600 ms under load."""
    sender = WebhookSender(webhook_target.url, SECRET, retry_base_seconds=0.01, max_attempts=8, rng=random.Random(1))
    store = IntentStore("http://sandbox.test")
    events = 50
    await sender.start()
    gc.collect()
    gc.disable()
    try:
        intents = []
        for n in range(events):
            intent, _ = store.open(
                IntentDraft(amount=1, currency="USD", reference=f"r{n}", return_url="https://shop.example/")
            )
            intent.status = IntentStatus.CANCELED
            sender.send(intent, created=int(time.time()), faults=Faults())
            intents.append(intent)
        # An attempt is logged as the last step of its delivery: once every event has one, every delivery ended.
        await eventually(lambda: all(sender.attempts(intent.id) for intent in intents))
        await asyncio.sleep(0)
        assert len(webhook_target.received) == events
        cycles = gc.collect()
    finally:
        gc.enable()
        await sender.close()
    assert cycles < events, f"{cycles} objects in reference cycles after {events} webhooks"


async def test_the_webhook_joins_the_trace_carried_in_the_metadata(
    start_sandbox: StartSandbox, webhook_target: WebhookTarget
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sandbox = await start_sandbox(tracer=provider.get_tracer("test"))
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    metadata = {"payment_id": "pay_traced", "traceparent": f"00-{trace_id}-{parent_id}-01"}
    intent = await create_intent(sandbox, metadata=metadata)
    await sandbox.post(f"/v1/intents/{intent['id']}/simulate", json={"card_number": "4242424242424242"})
    [delivery] = await eventually(lambda: webhook_target.received)
    assert delivery.headers["traceparent"].split("-")[1] == trace_id
    [span] = await eventually(exporter.get_finished_spans)
    assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id


# --- autopay ----------------------------------------------------------------------------------------------


async def test_autopay_succeed_pays_every_new_intent_with_the_4242_card(
    start_sandbox: StartSandbox, webhook_target: WebhookTarget
) -> None:
    sandbox = await start_sandbox(sandbox_autopay="succeed")
    intent = await create_intent(sandbox)
    after = await fetch_intent(sandbox, intent["id"])
    assert (intent["status"], after["status"], after["last4"]) == ("open", "succeeded", "4242")
    event = await webhook_target.only_event()
    assert event.status is PaymentStatus.SUCCEEDED


async def test_autopay_fail_declines_every_new_intent(start_sandbox: StartSandbox) -> None:
    sandbox = await start_sandbox(sandbox_autopay="fail")
    intent = await create_intent(sandbox)
    after = await fetch_intent(sandbox, intent["id"])
    assert (after["status"], after["failure_code"]) == ("failed", "card_declined")


# --- expiry -------------------------------------------------------------------------------------------------


async def test_an_intent_past_its_expiry_is_expired_when_read(
    sandbox: TestClient, webhook_target: WebhookTarget
) -> None:
    intent = await create_intent(sandbox, expires_at=int(time.time()) - 1)
    after = await fetch_intent(sandbox, intent["id"])
    assert (after["status"], after["failure_code"]) == ("expired", "expired")
    event = await webhook_target.only_event()
    assert event.status is PaymentStatus.EXPIRED


async def test_the_sweep_expires_an_intent_and_sends_payment_expired(
    sandbox: TestClient, webhook_target: WebhookTarget
) -> None:
    intent = await create_intent(sandbox, expires_at=int(time.time()) + 1)
    event = await webhook_target.only_event(within=4.0)
    assert event.status is PaymentStatus.EXPIRED
    assert event.provider_payment_id == intent["id"]


async def test_paying_an_expired_intent_shows_409(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox, expires_at=int(time.time()) - 1)
    response = await pay_on_page(sandbox, intent["id"])
    assert response.status == 409
    assert "expired" in await response.text()


# --- faults ---------------------------------------------------------------------------------------------------


async def test_faults_are_merged_shown_and_cleared(sandbox: TestClient) -> None:
    await sandbox.post("/_sandbox/faults", json={"webhook_duplicate_rate": 0.5}, headers=ADMIN)
    merged = await (await sandbox.post("/_sandbox/faults", json={"webhook_shuffle": True}, headers=ADMIN)).json()
    shown = await (await sandbox.get("/_sandbox/faults", headers=ADMIN)).json()
    cleared = await sandbox.delete("/_sandbox/faults", headers=ADMIN)
    assert merged == shown
    assert (shown["webhook_duplicate_rate"], shown["webhook_shuffle"]) == (0.5, True)
    assert cleared.status == 200
    assert await (await sandbox.get("/_sandbox/faults", headers=ADMIN)).json() == {
        "create_intent_error_rate": 0.0,
        "create_intent_delay_seconds": 0.0,
        "webhook_duplicate_rate": 0.0,
        "webhook_delay_seconds": 0.0,
        "webhook_shuffle": False,
        "refund_delay_seconds": 0.0,
    }


@pytest.mark.parametrize(
    "faults",
    [{"create_intent_error_rate": 1.5}, {"webhook_delay_seconds": -1}, {"webhook_shuffle": "yes"}, {"latency": 1}],
)
async def test_invalid_faults_are_a_422_problem(sandbox: TestClient, faults: dict[str, Any]) -> None:
    response = await sandbox.post("/_sandbox/faults", json=faults, headers=ADMIN)
    assert response.status == 422
    assert response.content_type == "application/problem+json"


async def test_create_errors_fail_before_and_after_storing_so_a_retry_gets_the_stored_intent(
    start_sandbox: StartSandbox,
) -> None:
    sandbox = await start_sandbox(rng=random.Random(20261123))
    await sandbox.post("/_sandbox/faults", json={"create_intent_error_rate": 1.0}, headers=ADMIN)
    bodies = {f"k-fault-{n}": intent_body() for n in range(12)}
    for key, body in bodies.items():
        response = await sandbox.post("/v1/intents", json=body, headers={"Idempotency-Key": key})
        assert response.status == 500
        assert response.content_type == "application/problem+json"
    await sandbox.delete("/_sandbox/faults", headers=ADMIN)
    retries = [
        (await sandbox.post("/v1/intents", json=body, headers={"Idempotency-Key": key})).status
        for key, body in bodies.items()
    ]
    # 200: the failed call had stored the intent; 201: it failed before storing.
    assert set(retries) == {200, 201}


async def test_the_duplicate_fault_delivers_the_same_event_twice(
    sandbox: TestClient, webhook_target: WebhookTarget
) -> None:
    await sandbox.post("/_sandbox/faults", json={"webhook_duplicate_rate": 1.0}, headers=ADMIN)
    intent = await create_intent(sandbox)
    await sandbox.post(f"/v1/intents/{intent['id']}/simulate", json={"card_number": "4242424242424242"})
    first, second = await eventually(lambda: webhook_target.received if len(webhook_target.received) == 2 else [])
    events = [verifier().parse_webhook(d.body) for d in (first, second)]
    assert events[0] is not None and events[1] is not None
    assert events[0].provider_event_id == events[1].provider_event_id


async def test_the_delay_fault_holds_back_the_first_attempt(sandbox: TestClient, webhook_target: WebhookTarget) -> None:
    await sandbox.post("/_sandbox/faults", json={"webhook_delay_seconds": 0.4}, headers=ADMIN)
    intent = await create_intent(sandbox)
    paid_at = time.monotonic()
    await sandbox.post(f"/v1/intents/{intent['id']}/simulate", json={"card_number": "4242424242424242"})
    [delivery] = await eventually(lambda: webhook_target.received)
    assert delivery.received_at - paid_at >= 0.4


# --- who may inject faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {ADMIN_TOKEN}", "Bearer"])
async def test_fault_endpoints_refuse_a_request_without_the_admin_token(
    sandbox: TestClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method in ("GET", "POST", "DELETE"):
        response = await sandbox.request(
            method, "/_sandbox/faults", json={"create_intent_error_rate": 1.0}, headers=headers
        )
        assert response.status == 401, method
        assert response.content_type == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert ADMIN_TOKEN not in await response.text()
    shown = await (await sandbox.get("/_sandbox/faults", headers=ADMIN)).json()
    assert shown["create_intent_error_rate"] == 0.0


async def test_without_a_configured_admin_token_fault_injection_is_switched_off(start_sandbox: StartSandbox) -> None:
    sandbox = await start_sandbox(sandbox_admin_token=None)
    response = await sandbox.post("/_sandbox/faults", json={"webhook_delay_seconds": 5}, headers=ADMIN)
    assert response.status == 403
    problem = await response.json()
    assert problem["type"].endswith("/sandbox-admin-disabled")
    assert "SANDBOX_ADMIN_TOKEN" in problem["detail"]
    # The hosted page and the intents API need no token.
    intent = await create_intent(sandbox)
    assert (await sandbox.get(f"/pay/{intent['id']}")).status == 200


# --- manual capture: hold, capture (in part), void ----------------------------------------------------------


async def held_intent(client: TestClient, webhook_target: WebhookTarget) -> dict[str, Any]:
    """A manual intent paid on its page: authorized, its `payment.authorized` webhook already received."""
    intent = await create_intent(client, capture_method="manual")
    response = await pay_on_page(client, intent["id"])
    assert response.status == 303
    await eventually(lambda: webhook_target.received)
    webhook_target.received.clear()
    return await fetch_intent(client, intent["id"])


async def capture(client: TestClient, intent_id: str, amount: int | None, key: str = "cap-1") -> Any:
    body = {} if amount is None else {"amount": amount}
    return await client.post(f"/v1/intents/{intent_id}/capture", json=body, headers={"Idempotency-Key": key})


async def test_the_page_of_a_manual_intent_says_it_authorizes_and_does_not_charge_yet(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox, capture_method="manual")

    page = await (await sandbox.get(f"/pay/{intent['id']}")).text()

    assert "Authorize 19.99 USD" in page
    assert "authorized now, not yet charged" in page


async def test_paying_a_manual_intent_holds_the_money_and_sends_payment_authorized(
    sandbox: TestClient, webhook_target: WebhookTarget
) -> None:
    intent = await create_intent(sandbox, capture_method="manual")

    await pay_on_page(sandbox, intent["id"])

    event = await webhook_target.only_event()
    assert (event.status, event.amount, event.amount_captured) == (PaymentStatus.AUTHORIZED, 1999, None)
    held = await fetch_intent(sandbox, intent["id"])
    assert (held["status"], held["amount_capturable"], held["amount_captured"]) == ("authorized", 1999, 0)
    page = await sandbox.get(f"/pay/{intent['id']}")
    assert "authorized, not yet charged" in (await page.text()).lower()


async def test_a_partial_capture_takes_part_and_sends_payment_captured(
    sandbox: TestClient, webhook_target: WebhookTarget
) -> None:
    intent = await held_intent(sandbox, webhook_target)

    response = await capture(sandbox, intent["id"], 1200)

    body = await response.json()
    assert response.status == 200
    assert (body["status"], body["amount_captured"], body["amount_capturable"]) == ("succeeded", 1200, 0)
    event = await webhook_target.only_event()
    assert (event.status, event.amount, event.amount_captured) == (PaymentStatus.SUCCEEDED, 1999, 1200)
    assert json.loads(webhook_target.received[0].body)["type"] == "payment.captured"


async def test_a_capture_retried_with_its_key_answers_again_and_takes_nothing_more(
    sandbox: TestClient, webhook_target: WebhookTarget
) -> None:
    intent = await held_intent(sandbox, webhook_target)

    first = await capture(sandbox, intent["id"], 1200, key="cap-a")
    again = await capture(sandbox, intent["id"], 1200, key="cap-a")
    other_amount = await capture(sandbox, intent["id"], 1000, key="cap-a")
    second_key = await capture(sandbox, intent["id"], 1999, key="cap-b")

    assert (first.status, again.status) == (200, 200)
    assert (await again.json())["amount_captured"] == 1200
    assert other_amount.status == 422
    assert second_key.status == 409  # captured already: no second capture under another key
    await webhook_target.only_event()
    assert (await fetch_intent(sandbox, intent["id"]))["amount_captured"] == 1200


async def test_a_capture_of_more_than_the_hold_is_422_and_changes_nothing(
    sandbox: TestClient, webhook_target: WebhookTarget
) -> None:
    intent = await held_intent(sandbox, webhook_target)

    response = await capture(sandbox, intent["id"], 2000)

    assert response.status == 422
    assert (await response.json())["type"].endswith("amount-exceeds-capturable")
    assert (await fetch_intent(sandbox, intent["id"]))["status"] == "authorized"


async def test_a_capture_needs_an_idempotency_key(sandbox: TestClient, webhook_target: WebhookTarget) -> None:
    intent = await held_intent(sandbox, webhook_target)

    response = await sandbox.post(f"/v1/intents/{intent['id']}/capture", json={})

    assert response.status == 400


@pytest.mark.parametrize(("reason", "failure_code"), [("canceled", None), ("expired", "authorization_expired")])
async def test_a_hold_is_voided_by_cancel_and_cannot_be_captured_after(
    sandbox: TestClient, webhook_target: WebhookTarget, reason: str, failure_code: str | None
) -> None:
    intent = await held_intent(sandbox, webhook_target)

    voided = await sandbox.post(f"/v1/intents/{intent['id']}/cancel", json={"reason": reason})
    late_capture = await capture(sandbox, intent["id"], None)

    assert voided.status == 200
    assert ((await voided.json())["status"], (await voided.json())["failure_code"]) == (reason, failure_code)
    assert late_capture.status == 409
    event = await webhook_target.only_event()
    assert event.status is PaymentStatus(reason.upper())


async def test_an_open_intent_cannot_be_captured(sandbox: TestClient) -> None:
    intent = await create_intent(sandbox, capture_method="manual")

    assert (await capture(sandbox, intent["id"], None)).status == 409


async def test_the_sandbox_provider_client_holds_captures_and_reads_the_captured_amount(
    sandbox: TestClient, webhook_target: WebhookTarget
) -> None:
    provider = SandboxProvider(str(sandbox.make_url("/")), [SECRET])
    request = intent_request(capture_method="manual")
    try:
        created = await provider.create_intent(request)
        await sandbox.post(
            f"/v1/intents/{created.provider_payment_id}/simulate", json={"card_number": "4242424242424242"}
        )
        held = await provider.retrieve_intent(created.provider_payment_id)
        captured = await provider.capture(created.provider_payment_id, 1200, "cap-1")
        refused = await provider.capture(created.provider_payment_id, 1999, "cap-2")
    finally:
        await provider.close()
    assert held.status is PaymentStatus.AUTHORIZED
    assert (captured.status, captured.amount_captured) == (PaymentStatus.SUCCEEDED, 1200)
    assert (refused.status, refused.amount_captured) == (PaymentStatus.SUCCEEDED, 1200)  # the truth, unchanged


# --- refunds (docs/reference/sandbox.md), through the adapter the gateway_worker uses ---------------------------


async def paid_intent(sandbox: TestClient, card: str = "4242424242424242") -> dict[str, str]:
    intent = await create_intent(sandbox)
    response = await sandbox.post(f"/v1/intents/{intent['id']}/simulate", json={"card_number": card})
    assert response.status == 200
    return intent


def adapter(sandbox: TestClient) -> SandboxProvider:
    return SandboxProvider(str(sandbox.make_url("")), [SECRET])


def refund_request(intent: dict[str, str], refund_id: str = "re_1", amount: int = 500) -> RefundRequest:
    return RefundRequest(
        refund_id=refund_id,
        payment_id=intent["metadata"]["payment_id"],  # type: ignore[index]
        provider_payment_id=intent["id"],
        amount=amount,
        currency="USD",
        reason="requested_by_customer",
    )


async def refund_webhooks(target: WebhookTarget, count: int) -> list[RefundWebhookEvent]:
    await eventually(lambda: sum(b"refund." in d.body for d in target.received) >= count)
    events = []
    for delivery in target.received:
        verifier().verify_webhook_source(delivery.headers, delivery.body)
        event = verifier().parse_webhook(delivery.body)
        if isinstance(event, RefundWebhookEvent):
            events.append(event)
    return events


async def test_a_refund_is_pending_then_succeeds_by_a_signed_webhook(
    sandbox: TestClient,
    webhook_target: WebhookTarget,
) -> None:
    provider = adapter(sandbox)
    assert isinstance(provider, RefundingProvider)
    intent = await paid_intent(sandbox)

    refund = await provider.create_refund(refund_request(intent))
    again = await provider.create_refund(refund_request(intent))  # the same idempotency key

    assert (refund.status, refund.amount) == (RefundStatus.PENDING, 500)
    assert again.provider_refund_id == refund.provider_refund_id
    [event] = await refund_webhooks(webhook_target, 1)
    assert (event.refund_id, event.provider_refund_id, event.status) == ("re_1", refund.provider_refund_id, "succeeded")
    assert (event.amount, event.currency, event.payment_id) == (500, "USD", intent["metadata"]["payment_id"])  # type: ignore[index]
    assert (await provider.retrieve_refund(refund.provider_refund_id)).status is RefundStatus.SUCCEEDED
    await provider.close()


async def test_refunds_of_a_payment_made_with_the_5126_card_fail_with_expired_or_canceled_card(
    sandbox: TestClient,
    webhook_target: WebhookTarget,
) -> None:
    provider = adapter(sandbox)
    intent = await paid_intent(sandbox, "4000 0000 0000 5126")

    refund = await provider.create_refund(refund_request(intent))

    assert refund.status is RefundStatus.PENDING
    [event] = await refund_webhooks(webhook_target, 1)
    assert (event.status, event.failure_code) == (RefundStatus.FAILED, "expired_or_canceled_card")
    await provider.close()


async def test_the_sandbox_refuses_more_than_is_left_and_unpaid_intents(sandbox: TestClient) -> None:
    provider = adapter(sandbox)
    intent = await paid_intent(sandbox)
    await provider.create_refund(refund_request(intent, "re_a", 1500))

    with pytest.raises(PermanentGatewayError) as too_much:
        await provider.create_refund(refund_request(intent, "re_b", 500))
    assert too_much.value.code == "amount_too_large"

    unpaid = await create_intent(sandbox)
    with pytest.raises(PermanentGatewayError) as not_paid:
        await provider.create_refund(refund_request(unpaid, "re_c"))
    assert not_paid.value.code == "intent_not_paid"
    await provider.close()
