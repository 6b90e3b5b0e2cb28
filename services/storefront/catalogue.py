"""What the shop sells: a fixed catalogue whose prices, in integer minor units, only the server knows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    description: str
    amount: int
    currency: str
    # "manual": reserve now, pay on shipping: checkout only holds the money, the order's Ship action takes it.
    capture_method: Literal["automatic", "manual"] = "automatic"


CATALOGUE: tuple[Product, ...] = (
    Product("book", "Designing Payment Systems", "A paperback on idempotency, ledgers and webhooks.", 1999, "USD"),
    Product("mug", "Paystream Mug", "Ceramic, 350 ml, says 'exactly once' on the side.", 1250, "USD"),
    Product("poster", "State Machine Poster", "PENDING to SUCCEEDED, in A2.", 2500, "USD"),
    Product(
        "bookshelf",
        "Made-to-Order Bookshelf",
        "Built when you order it. Reserve now, pay on shipping: your card is authorized today and charged when it "
        "ships.",
        8900,
        "USD",
        capture_method="manual",
    ),
)

_BY_ID = {product.id: product for product in CATALOGUE}


def find_product(product_id: str) -> Product | None:
    """The product with this id, or None: the id comes from a form, so anything may arrive."""
    return _BY_ID.get(product_id)
