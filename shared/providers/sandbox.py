"""The sandbox provider: Paystream's own stand-in gateway (services.sandbox_gateway), both halves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from shared.events import PaymentStatus, RefundStatus
from shared.providers.base import (
    CapturingProvider,
    IntentRequest,
    PaymentProvider,
    ProviderIntent,
    ProviderRefund,
    RefundRequest,
    RefundWebhookEvent,
    WebhookEvent,
    event_time,
    webhook_envelope,
)
from shared.providers.errors import InvalidWebhookError, NoSuchIntentError, PermanentGatewayError
from shared.providers.http import request_json

# The sandbox's intent statuses mapped onto ours; anything else is unknown and refused loudly.
SANDBOX_STATUS_MAP: dict[str, PaymentStatus] = {
    "open": PaymentStatus.PENDING,
    "authorized": PaymentStatus.AUTHORIZED,
    "succeeded": PaymentStatus.SUCCEEDED,
    "failed": PaymentStatus.FAILED,
    "canceled": PaymentStatus.CANCELED,
    "expired": PaymentStatus.EXPIRED,
}

SANDBOX_EVENT_TYPES: dict[str, PaymentStatus] = {
    "payment.authorized": PaymentStatus.AUTHORIZED,
    "payment.captured": PaymentStatus.SUCCEEDED,
    "payment.succeeded": PaymentStatus.SUCCEEDED,
    "payment.failed": PaymentStatus.FAILED,
    "payment.canceled": PaymentStatus.CANCELED,
    "payment.expired": PaymentStatus.EXPIRED,
}


SANDBOX_REFUND_STATUS_MAP: dict[str, RefundStatus] = {
    "pending": RefundStatus.PENDING,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
}

SANDBOX_REFUND_EVENT_TYPES: dict[str, RefundStatus] = {
    "refund.succeeded": RefundStatus.SUCCEEDED,
    "refund.failed": RefundStatus.FAILED,
}


def _json_text(value: Any) -> str:
    """A request's JSON body (aiohttp's `json_serialize`): orjson's, a fraction of the standard library's cost."""
    return orjson.dumps(value).decode()


def map_sandbox_status(raw: str) -> PaymentStatus:
    try:
        return SANDBOX_STATUS_MAP[raw]
    except KeyError:
        raise PermanentGatewayError(f"unknown sandbox intent status {raw!r}") from None


class _Object(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: StrictStr
    status: StrictStr
    amount: StrictInt  # integer minor units: "1999" or 1999.0 is not an amount
    currency: StrictStr
    metadata: dict[str, str]
    failure_code: str | None = None
    amount_captured: StrictInt | None = None


class _Data(BaseModel):
    object: _Object


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: StrictStr
    type: StrictStr
    created: StrictInt
    data: _Data


def _captured(payload: dict[str, Any]) -> int | None:
    value = payload.get("amount_captured")
    return None if value is None else int(value)


class SandboxProvider(PaymentProvider, CapturingProvider):
    """Both halves of the sandbox, manual capture (it holds, captures and voids), and refunds (a
    RefundingProvider)."""

    name = "sandbox"
    signature_header_name = "Paystream-Signature"

    def __init__(self, base_url: str, secrets: Sequence[str], *, timeout_seconds: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._secrets = list(secrets)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, json_serialize=_json_text)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def _intent(payload: dict[str, Any]) -> ProviderIntent:
        raw = str(payload.get("status", ""))
        status = map_sandbox_status(raw)
        try:
            return ProviderIntent(
                provider_payment_id=str(payload["id"]),
                status=status,
                amount=int(payload["amount"]),
                currency=str(payload["currency"]),
                checkout_url=payload.get("checkout_url"),
                failure_code=payload.get("failure_code"),
                amount_captured=_captured(payload) if status is PaymentStatus.SUCCEEDED else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentGatewayError(f"the sandbox answered with something that is not an intent: {exc!r}") from None

    async def create_intent(self, request: IntentRequest) -> ProviderIntent:
        body = {
            "amount": request.amount,
            "currency": request.currency,
            "reference": request.reference,
            "description": request.description,
            "customer_email": request.customer_email,
            "merchant_name": request.merchant_name,
            "return_url": request.return_url,
            "cancel_url": request.cancel_url,
            "expires_at": int(request.expires_at.timestamp()),
            "metadata": {**request.metadata, "payment_id": request.payment_id},
        }
        if request.capture_method == "manual":
            body["capture_method"] = "manual"
        payload = await request_json(
            self._client(),
            "POST",
            f"{self._base_url}/v1/intents",
            json=body,
            headers={"Idempotency-Key": request.payment_id},
        )
        return self._intent(payload)

    async def retrieve_intent(self, provider_payment_id: str) -> ProviderIntent:
        """The intent as the sandbox has it; NoSuchIntentError if it has none of this id (404)."""
        try:
            payload = await request_json(self._client(), "GET", f"{self._base_url}/v1/intents/{provider_payment_id}")
        except PermanentGatewayError as exc:
            if exc.status == 404:
                raise NoSuchIntentError(f"the sandbox has no intent {provider_payment_id}: {exc}") from exc
            raise
        return self._intent(payload)

    async def find_intent(self, payment_id: str) -> ProviderIntent | None:
        payload = await request_json(
            self._client(), "GET", f"{self._base_url}/v1/intents", params={"payment_id": payment_id}
        )
        found = payload.get("data")
        if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
            raise PermanentGatewayError("the sandbox answered a list of intents without a data list")
        # The payment id is the idempotency key: there is at most one, the latest if ever more.
        return self._intent(found[-1]) if found else None

    async def cancel_intent(
        self, provider_payment_id: str, *, reason: Literal["canceled", "expired"]
    ) -> ProviderIntent:
        # A 409 means already settled: the truth is whatever the intent now says.
        return await self._act_on_intent(provider_payment_id, "cancel", {"reason": reason})

    async def capture(self, provider_payment_id: str, amount: int, idempotency_key: str) -> ProviderIntent:
        # 409 (no longer held) or 422: whatever the intent now says is the truth the caller judges.
        return await self._act_on_intent(
            provider_payment_id, "capture", {"amount": amount}, headers={"Idempotency-Key": idempotency_key}
        )

    async def _act_on_intent(
        self, provider_payment_id: str, action: str, body: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> ProviderIntent:
        """POST `action` on the intent; the sandbox refusing it answers with the intent as it now is."""
        try:
            payload = await request_json(
                self._client(),
                "POST",
                f"{self._base_url}/v1/intents/{provider_payment_id}/{action}",
                json=body,
                headers=headers,
            )
        except PermanentGatewayError:
            return await self.retrieve_intent(provider_payment_id)
        return self._intent(payload)

    @staticmethod
    def _refund(payload: dict[str, Any]) -> ProviderRefund:
        status = SANDBOX_REFUND_STATUS_MAP.get(str(payload.get("status", "")))
        if status is None:
            raise PermanentGatewayError(f"unknown sandbox refund status {payload.get('status')!r}")
        try:
            return ProviderRefund(
                provider_refund_id=str(payload["id"]),
                status=status,
                amount=int(payload["amount"]),
                currency=str(payload["currency"]),
                failure_code=payload.get("failure_code"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentGatewayError(f"the sandbox answered with something that is not a refund: {exc!r}") from None

    async def create_refund(self, request: RefundRequest) -> ProviderRefund:
        body = {
            "intent_id": request.provider_payment_id,
            "amount": request.amount,
            "reason": request.reason,
            "metadata": {**request.metadata, "payment_id": request.payment_id, "refund_id": request.refund_id},
        }
        payload = await request_json(
            self._client(),
            "POST",
            f"{self._base_url}/v1/refunds",
            json=body,
            headers={"Idempotency-Key": request.refund_id},
        )
        return self._refund(payload)

    async def retrieve_refund(self, provider_refund_id: str) -> ProviderRefund:
        payload = await request_json(self._client(), "GET", f"{self._base_url}/v1/refunds/{provider_refund_id}")
        return self._refund(payload)

    def webhook_secrets(self) -> Sequence[str]:
        return self._secrets

    def parse_webhook(self, body: bytes) -> WebhookEvent | RefundWebhookEvent | None:
        event = webhook_envelope(body, _Event, "sandbox")
        if event.type in SANDBOX_REFUND_EVENT_TYPES:
            return self._refund_event(event)
        status = SANDBOX_EVENT_TYPES.get(event.type)
        if status is None:
            # As with every adapter: a type we do not act on is acknowledged, so the provider stops resending it.
            return None
        obj = event.data.object
        if SANDBOX_STATUS_MAP.get(obj.status) is not status:
            raise InvalidWebhookError(f"event type {event.type!r} contradicts object status {obj.status!r}")
        payment_id = obj.metadata.get("payment_id")
        if not payment_id:
            raise InvalidWebhookError("event carries no metadata.payment_id")
        return WebhookEvent(
            provider_event_id=event.id,
            provider_payment_id=obj.id,
            payment_id=payment_id,
            status=status,
            amount=obj.amount,
            currency=obj.currency,
            failure_code=obj.failure_code,
            occurred_at=event_time(event.created),
            metadata=obj.metadata,
            amount_captured=obj.amount_captured if status is PaymentStatus.SUCCEEDED else None,
        )

    @staticmethod
    def _refund_event(event: _Event) -> RefundWebhookEvent:
        status = SANDBOX_REFUND_EVENT_TYPES[event.type]
        obj = event.data.object
        if SANDBOX_REFUND_STATUS_MAP.get(obj.status) is not status:
            raise InvalidWebhookError(f"event type {event.type!r} contradicts refund status {obj.status!r}")
        payment_id, refund_id = obj.metadata.get("payment_id"), obj.metadata.get("refund_id")
        if not payment_id or not refund_id:
            raise InvalidWebhookError("refund event carries no metadata.payment_id and metadata.refund_id")
        return RefundWebhookEvent(
            provider_event_id=event.id,
            provider_refund_id=obj.id,
            refund_id=refund_id,
            payment_id=payment_id,
            status=status,
            amount=obj.amount,
            currency=obj.currency,
            failure_code=obj.failure_code,
            occurred_at=event_time(event.created),
            metadata=obj.metadata,
        )
