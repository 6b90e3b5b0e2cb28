"""The sandbox's behaviour in one place: intents change here, and every change is announced by webhook."""

from __future__ import annotations

import asyncio
import random

from aiohttp import web

from services.sandbox_gateway.cards import DECLINED_CARD, SUCCEEDING_CARD, CardCheck, decline_code_for
from services.sandbox_gateway.faults import Faults
from services.sandbox_gateway.intents import CloseReason, Intent, IntentDraft, IntentStore
from services.sandbox_gateway.refunds import RefundDraft, RefundStore, SandboxRefund
from services.sandbox_gateway.webhooks import WebhookSender
from shared.logs import get_logger

log = get_logger(__name__)

AUTOPAY_CARDS = {"succeed": SUCCEEDING_CARD, "fail": DECLINED_CARD}
# A refund's outcome comes this long after it was asked for (plus any refund_delay_seconds fault), by webhook.
REFUND_SETTLE_SECONDS = 0.2


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
        self.refunds = RefundStore(store.storage)

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
        intent = self.store.settle(
            intent_id, last4=card.last4, failure_code=card.failure_code, refund_failure_code=card.refund_failure_code
        )
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

    def refund(self, draft: RefundDraft, idempotency_key: str | None) -> tuple[dict[str, object], bool]:
        """The refund for this key as it stands when made (pending); True when it was made now.

        Raises IntentNotFoundError, RefundRefusedError or RefundKeyReusedError. Its outcome is settled a moment
        later, asynchronously, and announced by a `refund.succeeded` or `refund.failed` webhook.
        """
        intent = self.intent(draft.intent_id)
        refund, created = self.refunds.create(intent, draft, idempotency_key, self.store.now())
        if created:
            log.info("refund opened", refund_id=refund.id, intent_id=intent.id, amount=refund.amount)
            self._settle_later(refund)
        return refund.to_json(), created

    def resume_refunds(self) -> int:
        """Settle anew the refunds a stop left pending (at start); how many."""
        pending = self.refunds.pending()
        for refund in pending:
            self._settle_later(refund)
        return len(pending)

    def _settle_later(self, refund: SandboxRefund) -> None:
        delay = REFUND_SETTLE_SECONDS + self.faults.refund_delay_seconds
        asyncio.get_running_loop().call_later(delay, self._settle_refund, refund.id)

    def _settle_refund(self, refund_id: str) -> None:
        # The card that paid decides, as at Stripe: 5126's refunds fail, every other's succeed.
        intent = self.store.get(self.refunds.get(refund_id).intent_id)
        refund = self.refunds.settle(refund_id, intent.refund_failure_code)
        if refund is not None:
            self._announce_refund(refund)

    def _announce_refund(self, refund: SandboxRefund) -> None:
        event_id = self.webhooks.send_refund(refund, created=self.store.now(), faults=self.faults)
        log.info(
            "refund settled",
            refund_id=refund.id,
            payment_id=refund.payment_id,
            status=str(refund.status),
            failure_code=refund.failure_code,
            event_id=event_id,
        )

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
