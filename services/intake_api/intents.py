"""Holding a POST until the gateway has a checkout URL (`Prefer: wait=N`).

A POST that waits stores, with its PaymentRequested outbox row, the reply routing key of the process it
waits in (`IntentWaiters.address`). The gateway_worker publishes the intent's outcome to its subscribers
and, in the same publish, to that key. Each intake process listens on an exclusive queue bound by its own
key alone, so it hears the outcomes of the requests waiting in it and of no others; a POST with `wait=0`
asks for none.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.events import PaymentIntentCreated, PaymentIntentFailed
from shared.registry import MessageRegistry, Received


@dataclass(frozen=True)
class IntentOutcome:
    checkout_url: str | None
    failure_code: str | None


class IntentWaiters:
    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[IntentOutcome]] = {}
        # This process's reply routing key, once its queue is consumed (`listening`); until then nobody
        # can be answered here, so a POST does not ask to be.
        self.address: str | None = None

    def listening(self, address: str) -> None:
        self.address = address

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

    def _wake(self, payment_id: str, outcome: IntentOutcome) -> None:
        future = self._waiting.get(payment_id)
        if future is not None and not future.done():
            future.set_result(outcome)

    async def on_created(self, received: Received[PaymentIntentCreated]) -> None:
        self._wake(received.envelope.payment_id, IntentOutcome(received.message.checkout_url, None))

    async def on_failed(self, received: Received[PaymentIntentFailed]) -> None:
        self._wake(received.envelope.payment_id, IntentOutcome(None, received.message.failure_code))


# The intake's message registry: intent outcomes, on a queue of each intake process's own (its replies).
INTAKE_MESSAGES: MessageRegistry[IntentWaiters] = MessageRegistry(
    "intake_api", {PaymentIntentCreated: IntentWaiters.on_created, PaymentIntentFailed: IntentWaiters.on_failed}
)
