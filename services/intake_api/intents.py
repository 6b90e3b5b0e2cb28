"""Holding a POST until the gateway has a checkout URL (`Prefer: wait=N`).

Each intake process listens on its own exclusive queue for the gateway's intent outcomes and wakes the
request waiting for that payment, if any is waiting here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.broker import Delivery
from shared.events import Envelope, PaymentIntentCreated, PaymentIntentFailed

INTENT_EVENTS = (PaymentIntentCreated.TYPE, PaymentIntentFailed.TYPE)


@dataclass(frozen=True)
class IntentOutcome:
    checkout_url: str | None
    failure_code: str | None


class IntentWaiters:
    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[IntentOutcome]] = {}

    def register(self, payment_id: str) -> asyncio.Future[IntentOutcome]:
        """Register before the payment commits, so an outcome that comes at once is not missed."""
        future = self._waiting.get(payment_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[payment_id] = future
        return future

    def forget(self, payment_id: str) -> None:
        future = self._waiting.pop(payment_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def wait(
        self, payment_id: str, future: asyncio.Future[IntentOutcome], seconds: float
    ) -> IntentOutcome | None:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=seconds) if seconds > 0 else None
        except TimeoutError:
            return None
        finally:
            self.forget(payment_id)

    async def on_event(self, envelope: Envelope, _: Delivery) -> None:
        future = self._waiting.get(envelope.payment_id)
        if future is None or future.done():
            return
        message = envelope.message()
        if isinstance(message, PaymentIntentCreated):
            future.set_result(IntentOutcome(message.checkout_url, None))
        elif isinstance(message, PaymentIntentFailed):
            future.set_result(IntentOutcome(None, message.failure_code))
