"""Order ids and the in-memory order book (order id -> payment id) of this demo shop."""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict

_ORDER_ID = re.compile(r"^ord_[0-9a-f]{24}$")
_PAYMENT_ID = re.compile(r"^pay_[A-Za-z0-9]{1,64}$")


def new_order_id() -> str:
    """A fresh order id, made when the product page is rendered; it becomes the payment's Idempotency-Key."""
    return "ord_" + secrets.token_hex(12)


def is_order_id(value: str) -> bool:
    return bool(_ORDER_ID.match(value))


def is_payment_id(value: str) -> bool:
    return bool(_PAYMENT_ID.match(value))


class OrderBook:
    """Which payment pays which order, kept in memory and bounded: a restart forgets it, and the order page copes
    by taking the payment id from the gateway's return link (then checking it against the intake API)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._payments: OrderedDict[str, str] = OrderedDict()
        # Orders Paystream's signed webhook said are paid (order id -> the payment that paid it).
        self._paid: OrderedDict[str, str] = OrderedDict()
        # How much of each payment its signed refund webhooks said was given back (payment id -> minor units).
        self._refunded: OrderedDict[str, int] = OrderedDict()

    def remember(self, order_id: str, payment_id: str) -> None:
        self._payments[order_id] = payment_id
        self._payments.move_to_end(order_id)
        while len(self._payments) > self._capacity:
            self._payments.popitem(last=False)

    def payment_id(self, order_id: str) -> str | None:
        return self._payments.get(order_id)

    def mark_paid(self, order_id: str, payment_id: str) -> None:
        """The order is paid (a verified webhook said so), whether or not the customer ever comes back."""
        self._paid[order_id] = payment_id
        self._paid.move_to_end(order_id)
        while len(self._paid) > self._capacity:
            self._paid.popitem(last=False)
        if order_id not in self._payments:
            self.remember(order_id, payment_id)

    def mark_refunded(self, payment_id: str, amount_refunded: int) -> None:
        """A verified refund webhook said the payment's refunded total is `amount_refunded`. The total only grows,
        so a webhook that arrives late (an older total) changes nothing."""
        self._refunded[payment_id] = max(amount_refunded, self._refunded.get(payment_id, 0))
        self._refunded.move_to_end(payment_id)
        while len(self._refunded) > self._capacity:
            self._refunded.popitem(last=False)

    def refunded(self, payment_id: str) -> int:
        """What the shop has heard was refunded of the payment (0 if nothing)."""
        return self._refunded.get(payment_id, 0)

    def is_paid(self, order_id: str) -> bool:
        return order_id in self._paid

    def __len__(self) -> int:
        return len(self._payments)
