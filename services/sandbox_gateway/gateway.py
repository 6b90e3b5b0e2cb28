"""The sandbox's behaviour in one place: intents change here, and every change is announced by webhook."""

from __future__ import annotations

import random

from aiohttp import web

from services.sandbox_gateway.cards import DECLINED_CARD, SUCCEEDING_CARD, CardCheck, decline_code_for
from services.sandbox_gateway.faults import Faults
from services.sandbox_gateway.intents import CloseReason, Intent, IntentDraft, IntentStore
from services.sandbox_gateway.webhooks import WebhookSender
from shared.logs import get_logger

log = get_logger(__name__)

AUTOPAY_CARDS = {"succeed": SUCCEEDING_CARD, "fail": DECLINED_CARD}


class SandboxGateway:
    """Opens, settles, cancels and expires intents; faults in force live here too."""

    def __init__(
        self,
        store: IntentStore,
        webhooks: WebhookSender,
        *,
        rng: random.Random,
        autopay: str | None = None,
    ) -> None:
        self.store = store
        self.webhooks = webhooks
        self.rng = rng
        self.autopay = autopay
        self.faults = Faults()

    def open_intent(self, draft: IntentDraft, idempotency_key: str | None) -> tuple[dict[str, object], bool]:
        """The intent for this key as it stands when opened; True when it was opened now.

        With SANDBOX_AUTOPAY the new intent is paid right away with the matching test card; the answer still
        shows it open, as a caller of a real provider would see it, and the webhook brings the outcome.
        """
        intent, created = self.store.open(draft, idempotency_key)
        snapshot = intent.to_json()
        if created:
            log.info(
                "intent opened",
                intent_id=intent.id,
                payment_id=intent.payment_id,
                amount=intent.amount,
                currency=intent.currency,
            )
            if self.autopay in AUTOPAY_CARDS:
                card = AUTOPAY_CARDS[self.autopay]
                self.pay(intent.id, CardCheck(last4=card[-4:], failure_code=decline_code_for(card)))
        return snapshot, created

    def intent(self, intent_id: str) -> Intent:
        """The intent as it stands now, expiring it first if its time is up (raises IntentNotFoundError)."""
        if self.store.expire_if_due(intent_id):
            self._announce(self.store.get(intent_id))
        return self.store.get(intent_id)

    def pay(self, intent_id: str, card: CardCheck) -> Intent:
        """Settle an open intent with checked card details (raises IntentClosedError once closed)."""
        if not card.ok or card.last4 is None:
            raise ValueError("only a card that passed its checks can pay")
        self.intent(intent_id)
        intent = self.store.settle(intent_id, last4=card.last4, failure_code=card.failure_code)
        self._announce(intent)
        return intent

    def capture(self, intent_id: str, amount: int | None, idempotency_key: str) -> Intent:
        """Take all or part of a held intent (raises IntentClosedError, CaptureAmountError,
        IdempotencyKeyReusedError); a retry with the same key answers without capturing again."""
        self.intent(intent_id)
        intent, changed = self.store.capture(intent_id, amount, idempotency_key)
        if changed:
            self._announce(intent)
        return intent

    def close(self, intent_id: str, reason: CloseReason) -> Intent:
        """Cancel or expire an intent, voiding a hold; again changes nothing (raises IntentClosedError once paid)."""
        self.intent(intent_id)
        intent, changed = self.store.close(intent_id, reason)
        if changed:
            self._announce(intent)
        return intent

    def expire_due(self) -> int:
        """Expire every open intent past its time; how many were expired."""
        expired = self.store.expire_due()
        for intent in expired:
            self._announce(intent)
        return len(expired)

    def _announce(self, intent: Intent) -> None:
        event_id = self.webhooks.send(intent, created=self.store.now(), faults=self.faults)
        log.info(
            "intent changed",
            intent_id=intent.id,
            payment_id=intent.payment_id,
            status=str(intent.status),
            failure_code=intent.failure_code,
            amount_captured=intent.amount_captured,
            event_id=event_id,
        )


GATEWAY = web.AppKey("sandbox_gateway", SandboxGateway)
