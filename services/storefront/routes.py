"""The shop's HTTP handlers: the product page, Buy, and the order page that reads the outcome from the API."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web

from services.storefront.catalogue import CATALOGUE, Product, find_product
from services.storefront.intake import (
    IdempotencyKeyReusedError,
    IntakeClient,
    IntakeError,
    IntakeUnavailableError,
    NotCapturableError,
    PaymentNotFoundError,
)
from services.storefront.orders import OrderBook, is_order_id, is_payment_id, new_order_id
from services.storefront.pages import Arrival, is_web_url, render_catalogue, render_order, render_problem
from shared.logs import get_logger
from shared.web import read_form

log = get_logger(__name__)

INTAKE = web.AppKey("intake", IntakeClient)
ORDERS = web.AppKey("orders", OrderBook)
SHOP_URL = web.AppKey("shop_url", str)
# How long an order page reached from the gateway waits for the outcome before it answers "Confirming…".
CONFIRM_WAIT = web.AppKey("confirm_wait_seconds", float)
CONFIRM_WAIT_SECONDS = 2.0
# Read the payment again after 0.1 s, then less and less often: the webhook usually lands within 50 ms.
_CONFIRM_POLL_FIRST, _CONFIRM_POLL_MAX = 0.1, 0.5
# Statuses after which the order can be paid again with a new payment.
RETRYABLE = frozenset({"FAILED", "CANCELED", "EXPIRED"})

# Shop pages are never cached (each product page makes new order ids; order pages change), framed, or scripted.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def html_page(html: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8", headers={**PAGE_HEADERS, **(headers or {})}
    )


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def problem(
    status: int,
    title: str,
    message: str,
    *,
    again: tuple[str, Mapping[str, str]] | None = None,
    refresh_seconds: int | None = None,
) -> web.Response:
    """An error page for the customer, with `again` the form (action, fields) that repeats the attempt; a 503
    says when to come back (Retry-After)."""
    action, retry = again or ("/buy", None)
    html = render_problem(title, message, retry=retry, retry_action=action, refresh_seconds=refresh_seconds)
    return html_page(html, status, {"Retry-After": "5"} if status == 503 else None)


def order_not_found() -> web.Response:
    return problem(404, "Order not found", "We know no such order. Check the link you followed.")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", show_products)
    router.add_post("/buy", buy)
    router.add_get("/orders/{order_id}", show_order)
    router.add_post("/orders/{order_id}/retry", retry_payment)
    router.add_post("/orders/{order_id}/ship", ship_order)


async def show_products(_: web.Request) -> web.Response:
    return html_page(render_catalogue((product, new_order_id()) for product in CATALOGUE))


def payment_request(product: Product, order_id: str, shop_url: str) -> dict[str, Any]:
    """The body of POST /v1/payments for one product: the price comes from the catalogue, never the browser."""
    order_url = f"{shop_url}/orders/{order_id}"
    body: dict[str, Any] = {
        "amount": product.amount,
        "currency": product.currency,
        "reference": order_id,
        "description": product.name,
        "return_url": order_url,
        "cancel_url": f"{order_url}?canceled=1",
        "metadata": {"order_id": order_id},
    }
    if product.capture_method == "manual":
        body["capture_method"] = "manual"
    return body


def retry_request(previous: Mapping[str, Any], shop_url: str) -> dict[str, Any]:
    """The body of a new payment for the order an ended payment was for: same order, amount and item.

    `previous` is the intake API's record of the earlier attempt (what this server asked for), never a form.
    """
    order_id = str(previous["reference"])
    order_url = f"{shop_url}/orders/{order_id}"
    body: dict[str, Any] = {
        "amount": previous["amount"],
        "currency": previous["currency"],
        "reference": order_id,
        "return_url": order_url,
        "cancel_url": f"{order_url}?canceled=1",
        "metadata": {"order_id": order_id, "retry_of": str(previous["id"])},
    }
    if previous.get("description"):
        body["description"] = previous["description"]
    if previous.get("capture_method") == "manual":
        body["capture_method"] = "manual"
    return body


def retry_idempotency_key(order_id: str, previous_payment_id: str) -> str:
    """One key per attempt, derived from the attempt it replaces: a double click on "Try another card"
    replays one new payment instead of opening two."""
    return f"{order_id}.retry.{previous_payment_id}"


async def buy(request: web.Request) -> web.Response:
    """Create (or, for a resubmitted order, replay) the payment, then send the customer to pay it."""
    form = await read_form(request)
    product_id, order_id = form.get("product_id"), form.get("order_id")
    product = find_product(product_id) if isinstance(product_id, str) else None
    if product is None or not isinstance(order_id, str) or not is_order_id(order_id):
        return problem(
            400, "This item cannot be bought", "The order form was incomplete. Please choose the item again."
        )
    bound = log.bind(order_id=order_id, product_id=product.id)
    # The first attempt's Idempotency-Key is the order id itself.
    return await start_checkout(
        request,
        order_id,
        order_id,
        payment_request(product, order_id, request.app[SHOP_URL]),
        bound,
        again=("/buy", {"product_id": product.id, "order_id": order_id}),
    )


async def start_checkout(
    request: web.Request,
    order_id: str,
    idempotency_key: str,
    body: dict[str, Any],
    bound: structlog.typing.FilteringBoundLogger,
    *,
    again: tuple[str, dict[str, str]],
) -> web.Response:
    """Create the payment attempt `idempotency_key` for the order and send the customer to its checkout page.

    `again` is the form (action, fields) that repeats this very attempt: safe, since the key is the same.
    """
    try:
        payment = await request.app[INTAKE].create_payment(idempotency_key, body)
    except IdempotencyKeyReusedError:
        bound.warning("order id already used for another payment request")
        return problem(
            409,
            "This order was already placed",
            "This order was placed for something else. Please choose the item again.",
        )
    except IntakeUnavailableError as exc:
        bound.warning("payment service unavailable", error=str(exc))
        return problem(
            503,
            "Payments are unavailable right now",
            "We could not reach the payment service. Nothing was charged twice: you can safely try again in a moment.",
            again=again,
        )
    except IntakeError as exc:
        bound.error("payment service gave an unusable answer", error=str(exc))
        return problem(
            502,
            "The payment could not be started",
            "The payment service did not accept the order. You can try again; the order will not be paid twice.",
            again=again,
        )

    payment_id = payment["id"]
    if not is_payment_id(payment_id):
        bound.error("payment service answered a malformed payment id")
        return problem(
            502, "The payment could not be started", "The payment service gave an unexpected answer.", again=again
        )
    request.app[ORDERS].remember(order_id, payment_id)
    bound = bound.bind(payment_id=payment_id)
    checkout_url = payment.get("checkout_url")
    if payment["status"] == "PENDING" and is_web_url(checkout_url):
        bound.info("customer sent to checkout")
        return see_other(checkout_url)
    bound.info("checkout not ready; customer sent to the order page", status=payment["status"])
    return see_other(f"/orders/{order_id}")


async def retry_payment(request: web.Request) -> web.Response:
    """A new payment for an order whose payment FAILED, was CANCELED or EXPIRED: same order, new attempt.

    The form names the attempt the page showed; it must be this order's (the intake API says so) and over.
    Anything else sends the customer back to the order page, which shows what is true.
    """
    order_id = request.match_info["order_id"]
    form = await request.post()
    previous_id = form.get("payment_id")
    if not is_order_id(order_id) or not isinstance(previous_id, str) or not is_payment_id(previous_id):
        return order_not_found()
    bound = log.bind(order_id=order_id, retry_of=previous_id)
    again = (f"/orders/{order_id}/retry", {"payment_id": previous_id})
    try:
        previous = await request.app[INTAKE].get_payment(previous_id)
    except PaymentNotFoundError:
        return order_not_found()
    except IntakeError as exc:
        bound.warning("payment service unavailable", error=str(exc))
        return problem(
            503,
            "Payments are unavailable right now",
            "We could not reach the payment service. Nothing was charged: you can safely try again in a moment.",
            again=again,
        )
    if previous.get("reference") != order_id:
        bound.warning("retry names a payment of another order")
        return order_not_found()
    if previous["status"] not in RETRYABLE:
        return see_other(f"/orders/{order_id}")
    bound.info("new payment attempt for the order", previous_status=previous["status"])
    return await start_checkout(
        request,
        order_id,
        retry_idempotency_key(order_id, previous_id),
        retry_request(previous, request.app[SHOP_URL]),
        bound,
        again=again,
    )


def ship_idempotency_key(order_id: str, payment_id: str) -> str:
    """One capture per order's payment: a second click on Ship replays the first capture, never takes twice."""
    return f"{order_id}.ship.{payment_id}"


async def ship_order(request: web.Request) -> web.Response:
    """Ship a reserved order: capture its held payment, then show the order with what was charged.

    The form names the payment the page showed; it must be this order's (the intake API says so). A payment that
    is no longer held (captured already, voided, lapsed) sends the customer back to the order page, which shows
    what is true.
    """
    order_id = request.match_info["order_id"]
    form = await read_form(request)
    payment_id = form.get("payment_id")
    if not is_order_id(order_id) or not isinstance(payment_id, str) or not is_payment_id(payment_id):
        return order_not_found()
    bound = log.bind(order_id=order_id, payment_id=payment_id)
    intake = request.app[INTAKE]
    again = (f"/orders/{order_id}/ship", {"payment_id": payment_id})
    try:
        payment = await intake.get_payment(payment_id)
        if payment.get("reference") != order_id:
            bound.warning("ship names a payment of another order")
            return order_not_found()
        if payment["status"] == "AUTHORIZED":
            await intake.capture_payment(ship_idempotency_key(order_id, payment_id), payment_id)
            bound.info("order shipped: capture requested")
    except PaymentNotFoundError:
        return order_not_found()
    except NotCapturableError:
        bound.info("ship: the payment is no longer held")
    except IntakeUnavailableError as exc:
        bound.warning("payment service unavailable", error=str(exc))
        return problem(
            503,
            "The order could not be shipped right now",
            "We could not reach the payment service. Nothing was charged twice: you can safely try again.",
            again=again,
        )
    except IntakeError as exc:
        bound.error("payment service refused the capture", error=str(exc))
        return problem(502, "The order could not be shipped", "The payment service refused to charge the order.")
    return see_other(f"/orders/{order_id}?shipped=1")


async def wait_for_outcome(
    intake: IntakeClient, payment: dict[str, Any], within: float, *, waiting_on: str = "PENDING"
) -> dict[str, Any]:
    """Read a payment in `waiting_on` again, soon and then less often, for at most `within` seconds.

    A customer sent back by the gateway has paid (or canceled) a moment ago; the webhook carrying the outcome
    is usually a few milliseconds behind. Waiting here shows the outcome at once instead of a PENDING page.
    The same goes for a capture just requested by Ship (`waiting_on` AUTHORIZED).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = _CONFIRM_POLL_FIRST
    while payment["status"] == waiting_on and loop.time() + delay <= deadline:
        await asyncio.sleep(delay)
        payment = await intake.get_payment(payment["id"])
        delay = min(delay * 2, _CONFIRM_POLL_MAX)
    return payment


def arrival_of(query: Mapping[str, str]) -> Arrival:
    """The gateway appends `payment_id` to the links it sends customers back by; the cancel link says so too."""
    if "payment_id" not in query:
        return None
    return "cancel" if "canceled" in query else "checkout"


async def show_order(request: web.Request) -> web.Response:
    """The order's payment status, read from the intake API each time: the redirect's query is never believed.

    After a restart the in-memory order book is empty, so the payment id the gateway appends to the return link
    is used, but only if the intake API confirms that payment is this order's.
    """
    order_id = request.match_info["order_id"]
    if not is_order_id(order_id):
        return order_not_found()
    orders = request.app[ORDERS]
    payment_id = orders.payment_id(order_id)
    if payment_id is None:
        candidate = request.query.get("payment_id", "")
        payment_id = candidate if is_payment_id(candidate) else None
    if payment_id is None:
        return order_not_found()
    bound = log.bind(order_id=order_id, payment_id=payment_id)
    arrival = arrival_of(request.query)
    intake = request.app[INTAKE]
    try:
        payment = await intake.get_payment(payment_id)
        if arrival is not None and payment.get("reference") == order_id:
            payment = await wait_for_outcome(intake, payment, request.app[CONFIRM_WAIT])
        shipped = "shipped" in request.query
        if shipped and payment.get("reference") == order_id:
            payment = await wait_for_outcome(intake, payment, request.app[CONFIRM_WAIT], waiting_on="AUTHORIZED")
    except PaymentNotFoundError:
        bound.warning("order page for an unknown payment")
        return order_not_found()
    except IntakeUnavailableError as exc:
        bound.warning("payment service unavailable", error=str(exc))
        return problem(
            503,
            "Checking your payment…",
            "We cannot reach the payment service right now; this page will try again by itself.",
            refresh_seconds=5,
        )
    except IntakeError as exc:
        bound.error("payment service gave an unusable answer", error=str(exc))
        return problem(
            502,
            "We cannot show this order right now",
            "The payment service gave an unexpected answer. Please try again later.",
        )
    if payment.get("reference") != order_id:
        bound.warning("payment does not belong to this order")
        return order_not_found()
    orders.remember(order_id, payment_id)
    bound.debug("order page shown", status=payment["status"])
    page = render_order(
        payment,
        arrival=arrival,
        order_paid=orders.is_paid(order_id),
        shipping=shipped,
        refunded=orders.refunded(payment_id),
    )
    return html_page(page)
