"""A small client of the intake API and the sandbox, as a shop's backend and a customer would use them."""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from tests.support.processes import eventually

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "EXPIRED"}


def payment_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": 1999,
        "currency": "USD",
        "reference": f"order-{secrets.token_hex(4)}",
        "return_url": "https://shop.example/orders/42",
        "cancel_url": "https://shop.example/cart",
        "description": "2 books",
        "metadata": {"cart": "c-9"},
    }
    body.update(overrides)
    return body


class IntakeClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str = "sk_test_demo") -> None:
        self.session = session
        self.base_url = base_url
        self.api_key = api_key

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **extra}

    async def create(
        self, body: dict[str, Any] | None = None, *, key: str | None = None, wait: int | None = None
    ) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
        headers = self.headers(**{"Idempotency-Key": key or secrets.token_hex(8)})
        if wait is not None:
            headers["Prefer"] = f"wait={wait}"
        async with self.session.post(
            f"{self.base_url}/v1/payments", json=body or payment_body(), headers=headers
        ) as response:
            return response.status, await response.json(content_type=None), response.headers

    async def get(self, payment_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}/v1/payments/{payment_id}", headers=self.headers()) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def events(self, payment_id: str) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.base_url}/v1/payments/{payment_id}/events", headers=self.headers()) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["data"]

    async def checkout_url(self, payment_id: str, timeout: float = 20.0) -> str:
        async def ready() -> str | None:
            return (await self.get(payment_id))["checkout_url"]

        return await eventually(ready, timeout=timeout, what=f"checkout_url of {payment_id}")

    async def capture(
        self, payment_id: str, amount: int | None = None, *, key: str | None = None
    ) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
        """POST /v1/payments/{id}/capture (all of the hold when `amount` is None)."""
        headers = self.headers(**{"Idempotency-Key": key or secrets.token_hex(8)})
        body = None if amount is None else {"amount_to_capture": amount}
        async with self.session.post(
            f"{self.base_url}/v1/payments/{payment_id}/capture", json=body, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None), response.headers

    async def cancel(self, payment_id: str) -> tuple[int, dict[str, Any]]:
        async with self.session.post(
            f"{self.base_url}/v1/payments/{payment_id}/cancel", headers=self.headers()
        ) as response:
            return response.status, await response.json(content_type=None)

    async def in_status(self, payment_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        """The payment once it is in `status` (waited for)."""

        async def there() -> dict[str, Any] | None:
            payment = await self.get(payment_id)
            return payment if payment["status"] == status else None

        return await eventually(there, timeout=timeout, interval=0.2, what=f"{payment_id} {status}")

    async def terminal(self, payment_id: str, timeout: float = 30.0) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            payment = await self.get(payment_id)
            return payment if payment["status"] in TERMINAL else None

        return await eventually(done, timeout=timeout, interval=0.2, what=f"{payment_id} terminal")

    async def refund(
        self, payment_id: str, body: dict[str, Any] | None = None, *, key: str | None = None
    ) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
        """POST /v1/payments/{id}/refunds; `body` None sends no body at all."""
        headers = self.headers(**{"Idempotency-Key": key or secrets.token_hex(8)})
        async with self.session.post(
            f"{self.base_url}/v1/payments/{payment_id}/refunds", json=body, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None), response.headers

    async def get_refund(self, refund_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}/v1/refunds/{refund_id}", headers=self.headers()) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def refunds(self, **query: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}/v1/refunds", params=query, headers=self.headers()) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def refund_final(self, refund_id: str, timeout: float = 30.0) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            refund = await self.get_refund(refund_id)
            return refund if refund["status"] != "pending" else None

        return await eventually(done, timeout=timeout, interval=0.2, what=f"{refund_id} final")

    async def paid(self, card_number: str = "4242424242424242", **overrides: Any) -> dict[str, Any]:
        """A payment paid on the sandbox with `card_number`, once the ledger holds its outcome."""
        status, payment, _ = await self.create(payment_body(**overrides))
        assert status == 201, payment
        await simulate_card(self.session, await self.checkout_url(payment["id"]), card_number)
        return await self.terminal(payment["id"])


async def simulate_card(session: aiohttp.ClientSession, checkout_url: str, card_number: str) -> dict[str, Any]:
    """What the hosted page's form does, for headless tests: POST /v1/intents/{id}/simulate."""
    base, _, intent_id = checkout_url.rpartition("/pay/")
    async with session.post(f"{base}/v1/intents/{intent_id}/simulate", json={"card_number": card_number}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def sandbox_intent(session: aiohttp.ClientSession, checkout_url: str) -> dict[str, Any]:
    """The sandbox's intent behind a checkout URL, as the provider sees it now."""
    base, _, intent_id = checkout_url.rpartition("/pay/")
    async with session.get(f"{base}/v1/intents/{intent_id}") as r:
        assert r.status == 200, await r.text()
        return await r.json()
