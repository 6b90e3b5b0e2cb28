"""How the shop hears about its payments without the customer: Paystream's signed webhooks
(docs/reference/merchant-webhooks.md).

The shop registers its endpoint at start (or is given its secret by STOREFRONT_WEBHOOK_SECRET) and verifies each
delivery with the `standardwebhooks` library before believing a word of it. A verified `payment.succeeded` marks
the order paid, a verified `refund.succeeded` notes how much of its payment was given back; anything unsigned,
badly signed or stale is refused with 400 and changes nothing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from services.storefront.intake import IntakeClient, IntakeRejectedError
from services.storefront.orders import OrderBook, is_order_id, is_payment_id
from services.storefront.routes import ORDERS
from shared.logs import get_logger

log = get_logger(__name__)

PATH = "/webhooks/paystream"
EVENTS = ["payment.succeeded", "payment.failed", "payment.canceled", "payment.expired", "refund.succeeded"]
MAX_BODY_BYTES = 16 * 1024


class ShopWebhook:
    """The shop's endpoint: its signing secret once known, and whether it can be known at all."""

    def __init__(self, secret: str | None = None) -> None:
        self._verifier = Webhook(secret) if secret else None
        self.refused = False  # the intake API will not register the URL: only polling tells the shop

    @property
    def ready(self) -> bool:
        return self._verifier is not None or self.refused

    def verify(self, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """The verified event; WebhookVerificationError for anything not signed by Paystream just now."""
        if self._verifier is None:
            raise WebhookVerificationError("no endpoint secret yet")
        payload = self._verifier.verify(body, headers)
        if not isinstance(payload, dict):
            raise WebhookVerificationError("not an event")
        return payload

    async def register(self, intake: IntakeClient, url: str) -> None:
        """Register at `url` with the intake API, once: an IntakeError (the intake unavailable) is raised for the
        caller's supervisor to try again after its backoff; a refusal is final (orders are then confirmed by
        their page only)."""
        if self._verifier is not None:
            return
        try:
            self._verifier = Webhook(await intake.register_webhook_endpoint(url, EVENTS))
            log.info("webhook endpoint registered", url=url)
        except IntakeRejectedError as exc:
            self.refused = True
            log.error("webhook endpoint refused; orders are confirmed by the order page only", error=str(exc))


def apply_refund(orders: OrderBook, refund: dict[str, Any]) -> bool:
    """Note what a verified `refund.succeeded` says its payment has had refunded; True if it was noted."""
    payment_id, refunded = refund.get("payment_id"), refund.get("payment_amount_refunded")
    if not (isinstance(payment_id, str) and is_payment_id(payment_id)):
        return False
    if not isinstance(refunded, int) or isinstance(refunded, bool) or refunded < 0:
        return False
    orders.mark_refunded(payment_id, refunded)
    return True


def apply_event(orders: OrderBook, event: dict[str, Any]) -> bool:
    """Mark the order of a verified `payment.succeeded` paid, or note a verified `refund.succeeded`; True if the
    order book changed."""
    payment = (event.get("data") or {}).get("object") or {}
    if not isinstance(payment, dict):
        return False
    if event.get("type") == "refund.succeeded" and payment.get("status") == "succeeded":
        return apply_refund(orders, payment)
    order_id, payment_id = payment.get("reference"), payment.get("id")
    if not (isinstance(order_id, str) and is_order_id(order_id) and isinstance(payment_id, str)):
        return False
    if not is_payment_id(payment_id):
        return False
    if event.get("type") == "payment.succeeded" and payment.get("status") == "SUCCEEDED":
        orders.mark_paid(order_id, payment_id)
        return True
    return False


WEBHOOK = web.AppKey("shop_webhook", ShopWebhook)


async def receive(request: web.Request) -> web.Response:
    """POST /webhooks/paystream: verify on the raw bytes, then apply; 400 and no change otherwise."""
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return web.Response(status=413, text="too large")
    try:
        event = request.app[WEBHOOK].verify(body, dict(request.headers))
    except (WebhookVerificationError, ValueError) as exc:
        log.warning("unverified webhook refused", reason=str(exc)[:100])
        return web.Response(status=400, text="signature not verified")
    marked = apply_event(request.app[ORDERS], event)
    log.info("paystream webhook applied", merchant_event=event.get("id"), event_type=event.get("type"), paid=marked)
    return web.Response(status=204)
