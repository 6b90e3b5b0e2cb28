"""One contract, every provider adapter: what the gateway_worker and the webhook_receiver rely on of any provider.

`ProviderContract` holds the tests; each subclass supplies a `harness` that plays the provider's side:
- the sandbox adapter against a real sandbox_gateway process (webhooks caught by a local receiver),
- the Stripe adapter against the wire-format fake of Stripe (tests/fakes/stripe_fake.py), whose objects are built on
  Stripe's published examples and signed by Stripe's SDK; it is also held to Stripe's shapes field by field,
- the unit tests' FakeProvider (tests/fakes/provider.py), so the fake the handlers are tested with behaves the same.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import pkgutil
import secrets
import time
import typing
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import stripe
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import BaseModel

import shared.providers
from shared.events import PaymentStatus, RefundStatus
from shared.providers.base import (
    CapturingProvider,
    PaymentProvider,
    ProviderIntent,
    ProviderRefund,
    RefundingProvider,
    RefundRequest,
    RefundWebhookEvent,
    WebhookEvent,
    signature_header,
)
from shared.providers.errors import PermanentGatewayError, SignatureError, TransientGatewayError
from shared.providers.sandbox import SandboxProvider
from shared.providers.stripe import STRIPE_OBJECT_MODELS, StripeProvider
from tests.fakes.provider import FakeCapturingProvider
from tests.fakes.stripe_fake import StripeFake
from tests.fakes.stripe_shapes import SDK_CLASSES, fields_stripe_does_not_send, published, sdk_object
from tests.support.messages import intent_request
from tests.support.processes import ServiceProcess, eventually, free_port

# Short enough that the timeout tests are quick, long enough for an answer on a busy machine.
ADAPTER_TIMEOUT_SECONDS = 3.0
SANDBOX_SECRET = "whsec_contract_sandbox"
SANDBOX_ADMIN_TOKEN = "sbx_admin_" + secrets.token_hex(12)


class ProviderHarness(ABC):
    """The provider's side of the contract tests: its customers, its faults and its webhooks."""

    provider: PaymentProvider

    @abstractmethod
    async def pay(self, intent: ProviderIntent) -> None:
        """The customer pays the intent on the provider's page."""

    @abstractmethod
    async def intents_for(self, payment_id: str) -> int:
        """How many intents the provider holds for our payment id."""

    @abstractmethod
    def server_errors(self) -> contextlib.AbstractAsyncContextManager[None]:
        """While inside, the provider answers create requests with a 5xx."""

    @abstractmethod
    def stalled(self) -> contextlib.AbstractAsyncContextManager[None]:
        """While inside, the provider does not answer within the adapter's timeout."""

    @abstractmethod
    async def webhook_of_payment(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        """The signed webhook the provider sends once the intent is paid (body, headers)."""

    @abstractmethod
    async def webhook_of_another_type(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        """A correctly signed event of a type no adapter acts on (a refund, a customer update...)."""


class RefundHarness(ProviderHarness):
    """The side of the refund contract tests of a provider that can refund."""

    @abstractmethod
    async def refund_outcome_webhook(self, refund: ProviderRefund) -> tuple[bytes, dict[str, str]]:
        """The signed webhook the provider sends once the refund succeeded (body, headers)."""


def refund_request(intent: ProviderIntent, payment_id: str, *, amount: int = 500) -> RefundRequest:
    return RefundRequest(
        refund_id=f"re_{secrets.token_hex(16)}",
        payment_id=payment_id,
        provider_payment_id=intent.provider_payment_id,
        amount=amount,
        currency=intent.currency,
        reason="requested_by_customer",
    )


class RefundContract:
    """The refund tests (docs/reference/refunds.md) every adapter that declares RefundingProvider passes."""

    async def _paid(self, harness: RefundHarness) -> tuple[ProviderIntent, str]:
        request = intent_request()
        intent = await harness.provider.create_intent(request)
        await harness.pay(intent)
        return intent, request.payment_id

    async def test_a_refund_is_made_once_per_refund_id_and_read_back(self, harness: RefundHarness) -> None:
        provider = harness.provider
        assert isinstance(provider, RefundingProvider)
        intent, payment_id = await self._paid(harness)
        request = refund_request(intent, payment_id)

        first = await provider.create_refund(request)
        again = await provider.create_refund(request)
        found = await provider.retrieve_refund(first.provider_refund_id)

        assert again.provider_refund_id == first.provider_refund_id
        assert (first.amount, first.currency) == (500, "USD")
        assert first.status in (RefundStatus.PENDING, RefundStatus.SUCCEEDED)
        assert (found.provider_refund_id, found.amount) == (first.provider_refund_id, 500)

    async def test_a_refund_beyond_what_was_paid_is_a_permanent_error(self, harness: RefundHarness) -> None:
        provider = harness.provider
        assert isinstance(provider, RefundingProvider)
        intent, payment_id = await self._paid(harness)
        await provider.create_refund(refund_request(intent, payment_id, amount=1500))

        with pytest.raises(PermanentGatewayError):
            await provider.create_refund(refund_request(intent, payment_id, amount=500))

    async def test_a_refund_of_an_unpaid_intent_is_a_permanent_error(self, harness: RefundHarness) -> None:
        provider = harness.provider
        assert isinstance(provider, RefundingProvider)
        request = intent_request()
        intent = await provider.create_intent(request)

        with pytest.raises(PermanentGatewayError):
            await provider.create_refund(refund_request(intent, request.payment_id))

    async def test_the_refund_outcome_webhook_names_our_refund_and_payment(self, harness: RefundHarness) -> None:
        provider = harness.provider
        assert isinstance(provider, RefundingProvider)
        intent, payment_id = await self._paid(harness)
        request = refund_request(intent, payment_id)
        refund = await provider.create_refund(request)

        body, headers = await harness.refund_outcome_webhook(refund)
        provider.verify_webhook_source(headers, body)
        event = provider.parse_webhook(body)

        assert isinstance(event, RefundWebhookEvent)
        assert (event.refund_id, event.payment_id, event.provider_refund_id) == (
            request.refund_id,
            payment_id,
            refund.provider_refund_id,
        )
        assert (event.status, event.amount, event.currency, event.failure_code) == (
            RefundStatus.SUCCEEDED,
            500,
            "USD",
            None,
        )


class ProviderContract:
    """The tests every adapter passes; subclasses provide the `harness` fixture."""

    async def test_create_opens_a_pending_intent_for_the_amount_and_currency_asked(
        self, harness: ProviderHarness
    ) -> None:
        intent = await harness.provider.create_intent(intent_request())
        assert (intent.status, intent.amount, intent.currency) == (PaymentStatus.PENDING, 1999, "USD")
        assert intent.checkout_url

    async def test_create_is_idempotent_on_the_payment_id(self, harness: ProviderHarness) -> None:
        request = intent_request()
        first = await harness.provider.create_intent(request)
        second = await harness.provider.create_intent(request)
        assert second.provider_payment_id == first.provider_payment_id
        assert await harness.intents_for(request.payment_id) == 1

    async def test_retrieve_reports_the_intent_create_opened(self, harness: ProviderHarness) -> None:
        created = await harness.provider.create_intent(intent_request())
        found = await harness.provider.retrieve_intent(created.provider_payment_id)
        assert (found.provider_payment_id, found.status, found.amount, found.currency) == (
            created.provider_payment_id,
            PaymentStatus.PENDING,
            1999,
            "USD",
        )

    @pytest.mark.parametrize(
        ("reason", "status"), [("canceled", PaymentStatus.CANCELED), ("expired", PaymentStatus.EXPIRED)]
    )
    async def test_closing_an_open_intent_reports_it_closed_as_asked(
        self, harness: ProviderHarness, reason: Any, status: PaymentStatus
    ) -> None:
        created = await harness.provider.create_intent(intent_request())
        closed = await harness.provider.cancel_intent(created.provider_payment_id, reason=reason)
        assert closed.status is status

    async def test_a_cancel_after_payment_reports_succeeded(self, harness: ProviderHarness) -> None:
        created = await harness.provider.create_intent(intent_request())
        await harness.pay(created)
        closed = await harness.provider.cancel_intent(created.provider_payment_id, reason="canceled")
        assert (closed.status, closed.amount, closed.currency) == (PaymentStatus.SUCCEEDED, 1999, "USD")

    async def test_an_unknown_intent_is_a_permanent_error(self, harness: ProviderHarness) -> None:
        with pytest.raises(PermanentGatewayError):
            await harness.provider.retrieve_intent(f"pi_missing_{secrets.token_hex(4)}")

    async def test_a_create_the_provider_refuses_is_a_permanent_error(self, harness: ProviderHarness) -> None:
        request = intent_request(currency="US")
        with pytest.raises(PermanentGatewayError):
            await harness.provider.create_intent(request)
        assert await harness.intents_for(request.payment_id) == 0

    async def test_a_server_error_is_transient_and_the_retry_opens_one_intent(self, harness: ProviderHarness) -> None:
        request = intent_request()
        async with harness.server_errors():
            with pytest.raises(TransientGatewayError):
                await harness.provider.create_intent(request)
        retried = await harness.provider.create_intent(request)
        assert retried.status is PaymentStatus.PENDING
        assert await harness.intents_for(request.payment_id) == 1

    async def test_a_provider_that_does_not_answer_in_time_is_a_transient_error(self, harness: ProviderHarness) -> None:
        async with harness.stalled():
            with pytest.raises(TransientGatewayError):
                await harness.provider.create_intent(intent_request())

    async def test_the_webhook_of_a_payment_verifies_and_parses_onto_our_status(self, harness: ProviderHarness) -> None:
        request = intent_request()
        created = await harness.provider.create_intent(request)
        await harness.pay(created)
        body, headers = await harness.webhook_of_payment(created)

        harness.provider.verify_webhook_source(headers, body)
        event = harness.provider.parse_webhook(body)

        assert isinstance(event, WebhookEvent)
        assert (event.payment_id, event.provider_payment_id, event.status) == (
            request.payment_id,
            created.provider_payment_id,
            PaymentStatus.SUCCEEDED,
        )
        assert (event.amount, event.currency, event.failure_code) == (1999, "USD", None)

    async def test_a_webhook_whose_body_was_altered_fails_verification(self, harness: ProviderHarness) -> None:
        created = await harness.provider.create_intent(intent_request())
        await harness.pay(created)
        body, headers = await harness.webhook_of_payment(created)
        with pytest.raises(SignatureError):
            harness.provider.verify_webhook_source(headers, body.replace(b"1999", b"1000"))

    async def test_an_event_of_a_type_we_do_not_act_on_is_acknowledged_and_not_parsed(
        self, harness: ProviderHarness
    ) -> None:
        created = await harness.provider.create_intent(intent_request())
        body, headers = await harness.webhook_of_another_type(created)
        harness.provider.verify_webhook_source(headers, body)
        assert harness.provider.parse_webhook(body) is None


class CaptureHarness(ProviderHarness):
    """The provider's side of manual capture: its customer authorizes a held payment; its hold webhooks."""

    @abstractmethod
    async def authorize(self, intent: ProviderIntent) -> None:
        """The customer pays a manual-capture intent: the money is held."""

    @abstractmethod
    async def webhook_of_hold(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        """The signed webhook announcing the hold."""

    @abstractmethod
    async def webhook_of_capture(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        """The signed webhook announcing the capture, once captured."""


class CaptureContract:
    """Manual capture (docs/reference/capture.md), for every adapter that declares it (CapturingProvider)."""

    async def held(self, harness: CaptureHarness) -> tuple[ProviderIntent, str]:
        """A manual intent the customer authorized, and our payment id for it."""
        request = intent_request(capture_method="manual")
        created = await harness.provider.create_intent(request)
        assert created.status is PaymentStatus.PENDING
        await harness.authorize(created)
        return created, request.payment_id

    def capturing(self, harness: CaptureHarness) -> CapturingProvider:
        assert isinstance(harness.provider, CapturingProvider)
        return harness.provider

    async def test_a_paid_manual_intent_is_held_for_its_whole_amount(self, harness: CaptureHarness) -> None:
        created, _ = await self.held(harness)

        found = await harness.provider.retrieve_intent(created.provider_payment_id)

        assert (found.status, found.amount, found.currency) == (PaymentStatus.AUTHORIZED, 1999, "USD")

    async def test_a_partial_capture_takes_that_much_once_whatever_is_retried(self, harness: CaptureHarness) -> None:
        # Idempotency keys are the provider account's, across payments: each test its own.
        key_1, key_2 = secrets.token_hex(8), secrets.token_hex(8)
        created, _ = await self.held(harness)
        provider = self.capturing(harness)

        captured = await provider.capture(created.provider_payment_id, 1200, key_1)
        retried = await provider.capture(created.provider_payment_id, 1200, key_1)
        another = await provider.capture(created.provider_payment_id, 1999, key_2)
        found = await harness.provider.retrieve_intent(created.provider_payment_id)

        for answer in (captured, retried, another, found):
            assert (answer.status, answer.amount, answer.amount_captured) == (PaymentStatus.SUCCEEDED, 1999, 1200)

    async def test_a_capture_of_more_than_the_hold_takes_nothing(self, harness: CaptureHarness) -> None:
        # Idempotency keys are the provider account's, across payments: each test its own.
        key_1 = secrets.token_hex(8)
        created, _ = await self.held(harness)

        refused = await self.capturing(harness).capture(created.provider_payment_id, 2000, key_1)

        assert refused.status is PaymentStatus.AUTHORIZED

    @pytest.mark.parametrize(
        ("reason", "status", "failure_code"),
        [("canceled", PaymentStatus.CANCELED, None), ("expired", PaymentStatus.EXPIRED, "authorization_expired")],
    )
    async def test_closing_a_held_intent_voids_the_hold_and_a_capture_after_finds_it_voided(
        self, harness: CaptureHarness, reason: Any, status: PaymentStatus, failure_code: str | None
    ) -> None:
        # Idempotency keys are the provider account's, across payments: each test its own.
        key_1 = secrets.token_hex(8)
        created, _ = await self.held(harness)

        voided = await harness.provider.cancel_intent(created.provider_payment_id, reason=reason)
        late = await self.capturing(harness).capture(created.provider_payment_id, 1999, key_1)

        assert (voided.status, voided.failure_code) == (status, failure_code)
        assert (late.status, late.amount_captured) == (status, None)

    async def test_a_void_after_a_capture_reports_the_capture(self, harness: CaptureHarness) -> None:
        # Idempotency keys are the provider account's, across payments: each test its own.
        key_1 = secrets.token_hex(8)
        created, _ = await self.held(harness)
        await self.capturing(harness).capture(created.provider_payment_id, 1500, key_1)

        closed = await harness.provider.cancel_intent(created.provider_payment_id, reason="expired")

        assert (closed.status, closed.amount_captured) == (PaymentStatus.SUCCEEDED, 1500)

    async def test_the_hold_and_the_capture_webhooks_parse_onto_our_statuses(self, harness: CaptureHarness) -> None:
        # Idempotency keys are the provider account's, across payments: each test its own.
        key_1 = secrets.token_hex(8)
        created, payment_id = await self.held(harness)
        hold_body, hold_headers = await harness.webhook_of_hold(created)
        await self.capturing(harness).capture(created.provider_payment_id, 1200, key_1)
        capture_body, capture_headers = await harness.webhook_of_capture(created)

        harness.provider.verify_webhook_source(hold_headers, hold_body)
        harness.provider.verify_webhook_source(capture_headers, capture_body)
        hold = harness.provider.parse_webhook(hold_body)
        capture = harness.provider.parse_webhook(capture_body)

        assert isinstance(hold, WebhookEvent) and isinstance(capture, WebhookEvent)
        assert (hold.payment_id, hold.status, hold.amount, hold.amount_captured) == (
            payment_id,
            PaymentStatus.AUTHORIZED,
            1999,
            None,
        )
        assert (capture.payment_id, capture.status, capture.amount, capture.amount_captured) == (
            payment_id,
            PaymentStatus.SUCCEEDED,
            1999,
            1200,
        )


# --- the sandbox adapter, against a real sandbox_gateway process ------------------------------------------------


@dataclass
class WebhookCatcher:
    """Stands in for the webhook receiver: keeps every delivery the sandbox makes."""

    deliveries: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.deliveries.append((await request.read(), dict(request.headers)))
        return web.Response(status=200)

    async def about(self, intent_id: str, event_type: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The first delivery about the intent (of `event_type`, if given), waited for."""

        async def delivered() -> tuple[bytes, dict[str, str]] | None:
            for body, headers in self.deliveries:
                event = json.loads(body)
                if event["data"]["object"]["id"] == intent_id and event_type in (None, event["type"]):
                    return body, headers
            return None

        return await eventually(delivered, timeout=20, what=f"the sandbox's webhook about {intent_id}")


@dataclass
class RunningSandbox:
    url: str
    catcher: WebhookCatcher


@pytest.fixture(scope="module")
async def running_sandbox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSandbox]:
    catcher = WebhookCatcher()
    app = web.Application()
    app.router.add_post("/webhooks/sandbox", catcher.handle)
    receiver = TestServer(app, host="127.0.0.1")
    await receiver.start_server()
    port = free_port()
    process = ServiceProcess(
        "sandbox_gateway",
        {
            "HTTP_HOST": "127.0.0.1",
            "SANDBOX_PORT": str(port),
            "SANDBOX_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "SANDBOX_WEBHOOK_URL": str(receiver.make_url("/webhooks/sandbox")),
            "SANDBOX_WEBHOOK_SECRET": SANDBOX_SECRET,
            "SANDBOX_ADMIN_TOKEN": SANDBOX_ADMIN_TOKEN,
            "LOG_FORMAT": "json",
        },
        Path(tmp_path_factory.mktemp("sandbox_contract")),
    )
    process.start()
    try:
        await process.wait_ready()
        yield RunningSandbox(process.url, catcher)
    finally:
        process.stop()
        await receiver.close()


class SandboxHarness(CaptureHarness, RefundHarness):
    def __init__(self, sandbox: RunningSandbox, http: aiohttp.ClientSession) -> None:
        self.sandbox = sandbox
        self.http = http
        self.provider = SandboxProvider(sandbox.url, [SANDBOX_SECRET], timeout_seconds=ADAPTER_TIMEOUT_SECONDS)

    async def pay(self, intent: ProviderIntent) -> None:
        url = f"{self.sandbox.url}/v1/intents/{intent.provider_payment_id}/simulate"
        async with self.http.post(url, json={"card_number": "4242424242424242"}) as response:
            assert response.status == 200, await response.text()

    async def intents_for(self, payment_id: str) -> int:
        async with self.http.get(f"{self.sandbox.url}/v1/intents", params={"payment_id": payment_id}) as response:
            return len((await response.json())["data"])

    async def _faults(self, faults: dict[str, Any] | None) -> None:
        url = f"{self.sandbox.url}/_sandbox/faults"
        admin = {"Authorization": f"Bearer {SANDBOX_ADMIN_TOKEN}"}
        request = self.http.post(url, json=faults, headers=admin) if faults else self.http.delete(url, headers=admin)
        async with request as response:
            assert response.status < 300, await response.text()

    @contextlib.asynccontextmanager
    async def server_errors(self) -> AsyncIterator[None]:
        await self._faults({"create_intent_error_rate": 1.0})
        try:
            yield
        finally:
            await self._faults(None)

    @contextlib.asynccontextmanager
    async def stalled(self) -> AsyncIterator[None]:
        # The sandbox stores the intent and then holds its answer; it stops within its shutdown timeout.
        await self._faults({"create_intent_delay_seconds": 10 * ADAPTER_TIMEOUT_SECONDS})
        try:
            yield
        finally:
            await self._faults(None)

    async def webhook_of_payment(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return await self.sandbox.catcher.about(intent.provider_payment_id)

    async def authorize(self, intent: ProviderIntent) -> None:
        await self.pay(intent)

    async def webhook_of_hold(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return await self.sandbox.catcher.about(intent.provider_payment_id, "payment.authorized")

    async def webhook_of_capture(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return await self.sandbox.catcher.about(intent.provider_payment_id, "payment.captured")

    async def webhook_of_another_type(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        # The sandbox sends only the four it acts on; this is how it would announce a fifth.
        event = {
            "id": f"evt_{secrets.token_hex(8)}",
            "type": "payment.refunded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": intent.provider_payment_id,
                    "status": "succeeded",
                    "amount": intent.amount,
                    "currency": intent.currency,
                    "metadata": {"payment_id": "pay_x"},
                }
            },
        }
        body = json.dumps(event).encode()
        return body, {"Paystream-Signature": signature_header(SANDBOX_SECRET, body)}

    async def refund_outcome_webhook(self, refund: ProviderRefund) -> tuple[bytes, dict[str, str]]:
        # The sandbox settles every refund of a 4242 payment by itself, a moment later, and says so by webhook.
        return await self.sandbox.catcher.about(refund.provider_refund_id)


class TestSandboxAdapter(ProviderContract, CaptureContract, RefundContract):
    @pytest.fixture
    async def harness(self, running_sandbox: RunningSandbox) -> AsyncIterator[ProviderHarness]:
        async with aiohttp.ClientSession() as http:
            harness = SandboxHarness(running_sandbox, http)
            try:
                yield harness
            finally:
                await harness.provider.close()


# --- the Stripe adapter, against the wire-format fake of Stripe ---------------------------------------------------


class StripeHarness(CaptureHarness, RefundHarness):
    provider: StripeProvider

    def __init__(self, fake: StripeFake, api_base: str) -> None:
        self.fake = fake
        self.provider = StripeProvider(
            fake.api_key, [fake.webhook_secret], api_base=api_base, timeout_seconds=ADAPTER_TIMEOUT_SECONDS
        )

    async def pay(self, intent: ProviderIntent) -> None:
        self.fake.complete_session(intent.provider_payment_id)

    async def intents_for(self, payment_id: str) -> int:
        return sum(1 for s in self.fake.sessions.values() if s["client_reference_id"] == payment_id)

    @contextlib.asynccontextmanager
    async def server_errors(self) -> AsyncIterator[None]:
        self.fake.fail_next(100, status=500)
        try:
            yield
        finally:
            self.fake.heal()

    @contextlib.asynccontextmanager
    async def stalled(self) -> AsyncIterator[None]:
        self.fake.stall()
        try:
            yield
        finally:
            self.fake.heal()

    async def webhook_of_payment(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return self.fake.webhook(intent.provider_payment_id, "checkout.session.completed")

    async def webhook_of_another_type(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return self.fake.webhook(intent.provider_payment_id, "charge.refunded")

    async def authorize(self, intent: ProviderIntent) -> None:
        self.fake.authorize_session(intent.provider_payment_id)

    async def webhook_of_hold(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return self.fake.intent_webhook(intent.provider_payment_id, "payment_intent.amount_capturable_updated")

    async def webhook_of_capture(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return self.fake.intent_webhook(intent.provider_payment_id, "payment_intent.succeeded")

    async def refund_outcome_webhook(self, refund: ProviderRefund) -> tuple[bytes, dict[str, str]]:
        return self.fake.event("refund.updated", self.fake.settle_refund(refund.provider_refund_id))


class TestStripeAdapter(ProviderContract, CaptureContract, RefundContract):
    """The contract, plus Stripe's own word on the shapes: the fake serves objects built on Stripe's published
    examples (tests/schemas/stripe-fixtures3.json) and signs with the official SDK, and every field the adapter
    reads must be one that Stripe's SDK types and examples have."""

    @pytest.fixture
    async def harness(self) -> AsyncIterator[StripeHarness]:
        fake = StripeFake()
        server = TestServer(fake.app())
        await server.start_server()
        harness = StripeHarness(fake, str(server.make_url("")))
        try:
            yield harness
        finally:
            fake.heal()
            await harness.provider.close()
            await server.close()

    async def test_a_failed_refund_webhook_carries_stripes_failure_reason(self, harness: StripeHarness) -> None:
        intent, payment_id = await RefundContract()._paid(harness)
        request = refund_request(intent, payment_id)
        refund = await harness.provider.create_refund(request)
        await harness.provider.close()
        failed = harness.fake.settle_refund(
            refund.provider_refund_id, succeeded=False, failure_reason="expired_or_canceled_card"
        )

        for event_type in ("refund.failed", "refund.updated", "charge.refund.updated"):
            body, _ = harness.fake.event(event_type, failed)
            event = harness.provider.parse_webhook(body)
            assert isinstance(event, RefundWebhookEvent), event_type
            assert (event.status, event.failure_code) == (RefundStatus.FAILED, "expired_or_canceled_card")
        assert (await harness.provider.retrieve_refund(refund.provider_refund_id)).failure_code == (
            "expired_or_canceled_card"
        )

    async def test_a_pending_refund_or_one_made_elsewhere_is_acknowledged_not_acted_on(
        self, harness: StripeHarness
    ) -> None:
        intent, payment_id = await RefundContract()._paid(harness)
        refund = await harness.provider.create_refund(refund_request(intent, payment_id))
        pending = dict(harness.fake.refunds[refund.provider_refund_id])
        elsewhere = {**harness.fake.settle_refund(refund.provider_refund_id), "metadata": {}}

        assert harness.provider.parse_webhook(harness.fake.event("refund.created", pending)[0]) is None
        assert harness.provider.parse_webhook(harness.fake.event("refund.updated", elsewhere)[0]) is None

    async def test_a_refund_is_asked_for_the_sessions_payment_intent_with_the_refund_id_as_its_key(
        self, harness: StripeHarness
    ) -> None:
        intent, payment_id = await RefundContract()._paid(harness)
        request = refund_request(intent, payment_id)

        await harness.provider.create_refund(request)

        [post] = [r for r in harness.fake.requests if r.method == "POST" and r.path == "/v1/refunds"]
        assert post.headers["Idempotency-Key"] == request.refund_id
        params = post.params
        assert params["payment_intent"] == harness.fake.sessions[intent.provider_payment_id]["payment_intent"]
        assert params["metadata"] == {"payment_id": payment_id, "refund_id": request.refund_id}
        assert (params["amount"], params["reason"]) == ("500", "requested_by_customer")

    @pytest.mark.parametrize("name", sorted(STRIPE_OBJECT_MODELS))
    def test_every_field_the_adapter_reads_is_one_stripe_sends(self, name: str) -> None:
        assert fields_stripe_does_not_send(STRIPE_OBJECT_MODELS[name], SDK_CLASSES[name]) == []

    def test_every_model_the_stripe_adapter_reads_through_is_held_to_a_stripe_shape(self) -> None:
        # A model added for a new Stripe object (a refund, a charge) must be registered in STRIPE_OBJECT_MODELS,
        # directly or inside a registered one, or the shape check above would silently pass it by.
        assert stripe_adapter_models() - reachable_models(STRIPE_OBJECT_MODELS.values()) == set()

    def test_a_field_stripe_does_not_send_fails_the_shape_check(self) -> None:
        # The check above must be able to fail: an invented field, at the top or inside an expanded object.
        class InventedIntent(BaseModel):
            id: str
            failure_reason: str | None = None

        class InventedSession(BaseModel):
            id: str
            payment_reference: str | None = None
            payment_intent: InventedIntent | str | None = None

        assert fields_stripe_does_not_send(InventedSession, stripe.checkout.Session) == [
            "Session.payment_reference",
            "PaymentIntent.failure_reason",
        ]

    async def test_what_the_fake_serves_is_stripes_published_shape_and_stripes_sdk_reads_it(
        self, harness: StripeHarness
    ) -> None:
        created = await harness.provider.create_intent(intent_request())
        await harness.pay(created)
        served = harness.fake.served(harness.fake.sessions[created.provider_payment_id], expand=["payment_intent"])
        body, headers = await harness.webhook_of_payment(created)

        event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], harness.fake.webhook_secret)
        session = event.data.object
        assert isinstance(event, stripe.Event) and isinstance(session, stripe.checkout.Session)
        assert (session.id, session.client_reference_id, session.amount_total) == (
            created.provider_payment_id,
            created_payment_id(harness, created),
            1999,
        )
        assert set(json.loads(body)) == set(published("event"))
        assert set(served) == set(published("checkout.session"))
        assert set(served["payment_intent"]) == set(published("payment_intent"))
        assert isinstance(sdk_object(served)["payment_intent"], stripe.PaymentIntent)

    async def test_a_webhook_signed_by_stripes_sdk_verifies_and_one_it_refuses_fails(
        self, harness: StripeHarness
    ) -> None:
        created = await harness.provider.create_intent(intent_request())
        await harness.pay(created)
        body, _ = await harness.webhook_of_payment(created)
        secret = harness.fake.webhook_secret
        signed = stripe.WebhookSignature.generate_signature_header(body.decode(), secret)
        harness.provider.verify_webhook_source({"Stripe-Signature": signed}, body)

        stale_t = int(time.time()) - 301
        stale = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=stale_t)
        for refused in (stale, signed.replace("v1=", "v1=0")):
            with pytest.raises(stripe.SignatureVerificationError):
                stripe.WebhookSignature.verify_header(body, refused, secret, tolerance=300)
            with pytest.raises(SignatureError):
                harness.provider.verify_webhook_source({"Stripe-Signature": refused}, body)


def stripe_adapter_models() -> set[type[BaseModel]]:
    """Every pydantic model defined in the Stripe adapter's modules (shared/providers/stripe*.py)."""
    found: set[type[BaseModel]] = set()
    for module_info in pkgutil.iter_modules(shared.providers.__path__, "shared.providers."):
        if not module_info.name.rpartition(".")[2].startswith("stripe"):
            continue
        module = importlib.import_module(module_info.name)
        found |= {
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__
        }
    return found


def reachable_models(roots: Iterable[type[BaseModel]]) -> set[type[BaseModel]]:
    """The models `roots` read through, with every model nested in their fields."""
    seen: set[type[BaseModel]] = set()
    pending = list(roots)
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for info in model.model_fields.values():
            pending.extend(models_in(info.annotation))
    return seen


def models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in models_in(arg)]


def created_payment_id(harness: StripeHarness, intent: ProviderIntent) -> str:
    """Our payment id, as the fake's session for the intent carries it."""
    return str(harness.fake.sessions[intent.provider_payment_id]["client_reference_id"])


# --- the unit tests' FakeProvider ----------------------------------------------------------------------------------


class FakeHarness(CaptureHarness):
    def __init__(self) -> None:
        self.fake = FakeCapturingProvider()
        self.provider = self.fake

    async def pay(self, intent: ProviderIntent) -> None:
        self.fake.settle(intent.provider_payment_id, PaymentStatus.SUCCEEDED)

    async def intents_for(self, payment_id: str) -> int:
        return 1 if payment_id in self.fake.by_payment else 0

    @contextlib.asynccontextmanager
    async def _failing(self, error: Exception) -> AsyncIterator[None]:
        self.fake.error = error
        try:
            yield
        finally:
            self.fake.error = None

    def server_errors(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._failing(TransientGatewayError("create answered 500"))

    def stalled(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._failing(TransientGatewayError("create: TimeoutError"))

    async def webhook_of_payment(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return self.fake.webhook(intent.provider_payment_id)

    async def webhook_of_another_type(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return self.fake.webhook(intent.provider_payment_id, "intent.refunded")

    async def authorize(self, intent: ProviderIntent) -> None:
        self.fake.settle(intent.provider_payment_id, PaymentStatus.AUTHORIZED)

    async def webhook_of_hold(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return self.fake.webhook(intent.provider_payment_id)

    async def webhook_of_capture(self, intent: ProviderIntent) -> tuple[bytes, dict[str, str]]:
        return self.fake.webhook(intent.provider_payment_id)


class TestFakeProvider(ProviderContract, CaptureContract):
    @pytest.fixture
    def harness(self) -> ProviderHarness:
        return FakeHarness()
