"""The shop's client of the intake API (docs/reference/intake-api.md): create a payment, read it; failures become
typed errors."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp

from shared.logs import get_logger

log = get_logger(__name__)

# How long the intake API may hold POST /v1/payments waiting for the checkout URL (`Prefer: wait=N`).
CHECKOUT_WAIT_SECONDS = 5
# Room beyond that wait for the request itself; a slower answer counts as the API being unavailable.
REQUEST_TIMEOUT_SECONDS = CHECKOUT_WAIT_SECONDS + 5
# A 409 means a request with the same Idempotency-Key is still in flight (a double click): ask again shortly.
IN_FLIGHT_RETRIES = 5
IN_FLIGHT_RETRY_SECONDS = 0.4


class IntakeError(Exception):
    """The intake API could not give the shop what it asked for."""


class IntakeUnavailableError(IntakeError):
    """Unreachable, timed out or answering 503: nothing is known to have happened; the same request may be retried."""


class IntakeRejectedError(IntakeError):
    """An answer the shop cannot use (an unexpected status or body): a fault on one side or the other."""


class IdempotencyKeyReusedError(IntakeError):
    """The attempt's key (the order id, for a first attempt) was already used to pay for something else."""


class NotCapturableError(IntakeError):
    """The payment is not AUTHORIZED (captured already, voided, lapsed or never paid): nothing to ship against."""


class PaymentNotFoundError(IntakeError):
    """The intake API knows no such payment for this merchant."""


class IntakeClient:
    """Talks to the intake API with the merchant's key, which never leaves this object (nor reaches a log)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._authorization = f"Bearer {api_key}"

    async def create_payment(self, idempotency_key: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/payments: one key per payment attempt, so a resubmission replays the same payment."""
        headers = {
            "Authorization": self._authorization,
            "Idempotency-Key": idempotency_key,
            "Prefer": f"wait={CHECKOUT_WAIT_SECONDS}",
        }
        for attempt in range(IN_FLIGHT_RETRIES + 1):
            status, document = await self._request("POST", "/v1/payments", headers=headers, json=body)
            if status in (200, 201):
                return _payment(document)
            if status == 409 and attempt < IN_FLIGHT_RETRIES:
                await asyncio.sleep(IN_FLIGHT_RETRY_SECONDS)
                continue
            if status == 422 and str(document.get("type", "")).endswith("idempotency-key-reuse"):
                raise IdempotencyKeyReusedError(idempotency_key)
            raise _unexpected("create payment", status, document)
        raise IntakeUnavailableError("the payment request stayed in flight")

    async def get_payment(self, payment_id: str) -> dict[str, Any]:
        """GET /v1/payments/{id}: the payment as the intake API has it now."""
        path = f"/v1/payments/{quote(payment_id, safe='')}"
        status, document = await self._request("GET", path, headers={"Authorization": self._authorization})
        if status == 200:
            return _payment(document)
        if status == 404:
            raise PaymentNotFoundError(payment_id)
        raise _unexpected("read payment", status, document)

    async def capture_payment(self, idempotency_key: str, payment_id: str) -> dict[str, Any]:
        """POST /v1/payments/{id}/capture, all of the hold: the shop ships the whole order. One key per shipment,
        so a second click replays the same capture. The answer is the payment as it stood when accepted."""
        path = f"/v1/payments/{quote(payment_id, safe='')}/capture"
        headers = {"Authorization": self._authorization, "Idempotency-Key": idempotency_key}
        status, document = await self._request("POST", path, headers=headers)
        if status == 202:
            return _payment(document)
        if status == 404:
            raise PaymentNotFoundError(payment_id)
        if status == 409:
            raise NotCapturableError(payment_id)
        raise _unexpected("capture payment", status, document)

    async def register_webhook_endpoint(self, url: str, events: list[str]) -> str:
        """Register the shop's webhook endpoint at `url`, replacing any registered there before; its secret.

        An earlier registration's secret is not readable again (it is shown only once), so a restart makes a new
        endpoint and deletes the old one at the same URL.
        """
        auth = {"Authorization": self._authorization}
        status, document = await self._request("GET", "/v1/webhook_endpoints", headers=auth)
        if status != 200:
            raise _unexpected("list webhook endpoints", status, document)
        earlier = [e["id"] for e in document.get("data", []) if isinstance(e, dict) and e.get("url") == url]
        status, document = await self._request(
            "POST", "/v1/webhook_endpoints", headers=auth, json={"url": url, "events": events}
        )
        if status != 201 or not isinstance(document.get("secret"), str):
            raise _unexpected("register webhook endpoint", status, document)
        for endpoint_id in earlier:
            await self._request("DELETE", f"/v1/webhook_endpoints/{quote(endpoint_id, safe='')}", headers=auth)
        return str(document["secret"])

    async def is_alive(self) -> bool:
        async with self._session.get(f"{self._base_url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status == 200

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        try:
            async with self._session.request(
                method, self._base_url + path, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS), **kwargs
            ) as response:
                try:
                    document = await response.json(content_type=None)
                except ValueError:
                    document = None
                return response.status, document if isinstance(document, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IntakeUnavailableError(f"{method} {path}: {type(exc).__name__}") from exc


def _payment(document: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(document.get("id"), str) or not isinstance(document.get("status"), str):
        raise IntakeRejectedError("the answer is not a payment")
    return document


def _unexpected(action: str, status: int, document: dict[str, Any]) -> IntakeError:
    # Only the problem's type and status are logged: its detail may echo request data.
    log.warning("intake api refused", action=action, status=status, problem=document.get("type"))
    if status in (502, 503, 504):
        return IntakeUnavailableError(f"{action}: {status}")
    return IntakeRejectedError(f"{action}: {status}")
