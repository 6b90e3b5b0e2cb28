"""An in-memory payment provider for unit tests, held to the same contract suite as the real adapters.

Intents are keyed by payment id (its idempotency key); errors come on demand; its webhooks are signed with the
`t=,v1=` scheme the base class checks, in a small format of its own.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

from shared.events import PaymentStatus, RefundStatus
from shared.providers.base import (
    IntentRequest,
    PaymentProvider,
    ProviderIntent,
    ProviderRefund,
    RefundRequest,
    WebhookEvent,
    signature_header,
)
from shared.providers.errors import InvalidWebhookError, PermanentGatewayError

FAKE_WEBHOOK_SECRET = "whsec_fake"
# The fake's event types and the status each reports; any other type is acknowledged and not acted on.
FAKE_EVENT_TYPES = {
    "intent.authorized": PaymentStatus.AUTHORIZED,
    "intent.succeeded": PaymentStatus.SUCCEEDED,
    "intent.failed": PaymentStatus.FAILED,
    "intent.canceled": PaymentStatus.CANCELED,
    "intent.expired": PaymentStatus.EXPIRED,
}


class FakeProvider(PaymentProvider):
    """Intents in a dict; `error` (raised by every call while set) or `fail_next` stand for a failing provider."""

    signature_header_name = "X-Fake-Signature"

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.intents: dict[str, ProviderIntent] = {}
        self.by_payment: dict[str, str] = {}
        self.requests: list[IntentRequest] = []
        self.cancels: list[tuple[str, str]] = []
        self.lookups: list[str] = []
        self.error: Exception | None = None
        self.checkout_url: str | None = "https://fake.example/pay/"
        # What a misbehaving provider echoes instead of the amount and currency it was asked for.
        self.echo: tuple[int, str] | None = None
        self._next_errors: list[Exception] = []

    def fail_next(self, error: Exception) -> None:
        """The next call raises `error` and has no effect, as a request the provider never processed."""
        self._next_errors.append(error)

    def _raise_if_failing(self) -> None:
        if self._next_errors:
            raise self._next_errors.pop(0)
        if self.error is not None:
            raise self.error

    async def create_intent(self, request: IntentRequest) -> ProviderIntent:
        self.requests.append(request)
        self._raise_if_failing()
        if not re.fullmatch(r"[A-Z]{3}", request.currency):
            raise PermanentGatewayError(f"create answered 400: invalid currency {request.currency!r}")
        if request.payment_id not in self.by_payment:
            intent_id = f"pi_{secrets.token_hex(6)}"
            url = None if self.checkout_url is None else self.checkout_url + intent_id
            amount, currency = self.echo or (request.amount, request.currency)
            self.intents[intent_id] = ProviderIntent(
                intent_id, PaymentStatus.PENDING, amount, currency, checkout_url=url
            )
            self.by_payment[request.payment_id] = intent_id
        return self.intents[self.by_payment[request.payment_id]]

    async def find_intent(self, payment_id: str) -> ProviderIntent | None:
        self.lookups.append(payment_id)
        self._raise_if_failing()
        intent_id = self.by_payment.get(payment_id)
        return None if intent_id is None else self.intents[intent_id]

    def _intent(self, provider_payment_id: str) -> ProviderIntent:
        try:
            return self.intents[provider_payment_id]
        except KeyError:
            raise PermanentGatewayError(f"answered 404: no intent {provider_payment_id!r}") from None

    async def retrieve_intent(self, provider_payment_id: str) -> ProviderIntent:
        self._raise_if_failing()
        return self._intent(provider_payment_id)

    async def cancel_intent(
        self, provider_payment_id: str, *, reason: Literal["canceled", "expired"]
    ) -> ProviderIntent:
        self.cancels.append((provider_payment_id, reason))
        self._raise_if_failing()
        intent = self._intent(provider_payment_id)
        if intent.status in (PaymentStatus.PENDING, PaymentStatus.AUTHORIZED):
            # Closing a held intent voids the hold; a lapsed hold says so in its failure code.
            held = intent.status is PaymentStatus.AUTHORIZED
            closed = PaymentStatus.EXPIRED if reason == "expired" else PaymentStatus.CANCELED
            code = ("authorization_expired" if held else "expired") if reason == "expired" else None
            intent = replace(intent, status=closed, failure_code=code)
            self.intents[provider_payment_id] = intent
        return intent

    def settle(self, provider_payment_id: str, status: PaymentStatus, failure_code: str | None = None) -> None:
        """The customer paid (or was declined) on the provider's page."""
        self.intents[provider_payment_id] = replace(
            self.intents[provider_payment_id], status=status, failure_code=failure_code
        )

    # --- its webhooks -----------------------------------------------------------------------------
    def webhook(self, provider_payment_id: str, event_type: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The signed event the fake sends about an intent as it is now (default type: its status)."""
        intent = self._intent(provider_payment_id)
        payment_id = next(p for p, i in self.by_payment.items() if i == provider_payment_id)
        event = {
            "id": f"evt_{secrets.token_hex(8)}",
            "type": event_type or f"intent.{intent.status.value.lower()}",
            "created": int(time.time()),
            "intent": {
                "id": intent.provider_payment_id,
                "payment_id": payment_id,
                "amount": intent.amount,
                "currency": intent.currency,
                "failure_code": intent.failure_code,
                "amount_captured": intent.amount_captured,
            },
        }
        body = json.dumps(event).encode()
        return body, {self.signature_header_name: signature_header(FAKE_WEBHOOK_SECRET, body)}

    def webhook_secrets(self) -> Sequence[str]:
        return [FAKE_WEBHOOK_SECRET]

    def parse_webhook(self, body: bytes) -> WebhookEvent | None:
        try:
            event: Any = json.loads(body)
            status = FAKE_EVENT_TYPES.get(event["type"])
            if status is None:
                return None
            intent = event["intent"]
            return WebhookEvent(
                provider_event_id=str(event["id"]),
                provider_payment_id=str(intent["id"]),
                payment_id=str(intent["payment_id"]),
                status=status,
                amount=int(intent["amount"]),
                currency=str(intent["currency"]),
                failure_code=intent.get("failure_code"),
                occurred_at=datetime.fromtimestamp(int(event["created"]), UTC),
                amount_captured=intent.get("amount_captured"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidWebhookError(f"not a fake event: {exc!r}") from None


class FakeCapturingProvider(FakeProvider):
    """The fake with manual capture (shared.providers.base.CapturingProvider): a manual intent paid is held
    (`settle(..., AUTHORIZED)`), a capture takes it once per idempotency key, and a refused capture leaves the
    truth as it was, as the real adapters answer."""

    def __init__(self, name: str = "fake") -> None:
        super().__init__(name)
        self.captures: dict[str, tuple[str, int]] = {}

    async def capture(self, provider_payment_id: str, amount: int, idempotency_key: str) -> ProviderIntent:
        self._raise_if_failing()
        intent = self._intent(provider_payment_id)
        if idempotency_key in self.captures or intent.status is not PaymentStatus.AUTHORIZED:
            return intent
        if not 0 < amount <= intent.amount:
            return intent
        intent = replace(intent, status=PaymentStatus.SUCCEEDED, amount_captured=amount)
        self.intents[provider_payment_id] = intent
        self.captures[idempotency_key] = (provider_payment_id, amount)
        return intent


class FakeRefundingProvider(FakeProvider):
    """The fake with the refund capability (RefundingProvider): refunds keyed by our refund id, their outcome
    `refund_outcome` at once, or pending until `settle_refund`."""

    def __init__(self, name: str = "fake") -> None:
        super().__init__(name)
        self.refunds: dict[str, ProviderRefund] = {}
        self.by_refund: dict[str, str] = {}
        self.refund_requests: list[RefundRequest] = []
        self.refund_outcome = RefundStatus.PENDING

    async def create_refund(self, request: RefundRequest) -> ProviderRefund:
        self.refund_requests.append(request)
        self._raise_if_failing()
        if request.refund_id not in self.by_refund:
            refund = ProviderRefund(f"rf_{secrets.token_hex(6)}", self.refund_outcome, request.amount, request.currency)
            self.refunds[refund.provider_refund_id] = refund
            self.by_refund[request.refund_id] = refund.provider_refund_id
        return self.refunds[self.by_refund[request.refund_id]]

    async def retrieve_refund(self, provider_refund_id: str) -> ProviderRefund:
        self._raise_if_failing()
        try:
            return self.refunds[provider_refund_id]
        except KeyError:
            raise PermanentGatewayError(f"answered 404: no refund {provider_refund_id!r}") from None

    def settle_refund(self, provider_refund_id: str, status: RefundStatus, failure_code: str | None = None) -> None:
        self.refunds[provider_refund_id] = replace(
            self.refunds[provider_refund_id], status=status, failure_code=failure_code
        )
