"""The shop's HTML, rendered on the server: plain links and forms that work without JavaScript; every value
that is not a literal of this module goes through `html.escape`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any, Literal, TypeGuard
from urllib.parse import urlsplit

from services.storefront.catalogue import Product

# How often an order page still waiting for its outcome reloads itself.
REFRESH_SECONDS = 2

# How the customer reached the order page: straight from the gateway's page after paying ("checkout", the
# return link) or after canceling there ("cancel", the cancel link), or by any other way (None).
Arrival = Literal["checkout", "cancel"] | None

# What a failure_code means to a customer; the code itself stays on the page, small, for support.
FAILURE_REASONS = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "gateway_error": "The payment service could not process the payment. No money was taken.",
    "payment_failed": "The payment did not go through.",
    "expired": "The payment page was left open too long. No money was taken.",
}
FALLBACK_REASON = "The payment did not go through."

# The button that starts a new payment for the same order, by the status of the attempt that ended.
_RETRY_LABELS = {"FAILED": "Try another card", "CANCELED": "Pay for this order", "EXPIRED": "Start a new payment"}

# ISO 4217 currencies whose minor unit is not a hundredth (the others the shop might meet use two digits).
_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
_THREE_DECIMAL = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})

_STYLE = """
body{font-family:system-ui,sans-serif;background:#fafaf7;color:#222;margin:0;padding:2rem 1rem}
main{max-width:44rem;margin:0 auto}
h1{font-size:1.5rem}
.products{display:grid;grid-template-columns:repeat(auto-fit,minmax(12rem,1fr));gap:1rem;padding:0;list-style:none}
.product{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1rem;display:flex;flex-direction:column}
.product h2{font-size:1.1rem;margin:0 0 .4rem}.product p{flex:1;color:#555;margin:0 0 .8rem}
.price{font-weight:700;font-size:1.1rem}
button,a.button{display:inline-block;font-size:1rem;padding:.6rem 1rem;border-radius:4px;border:0;cursor:pointer;
background:#1f6f43;color:#fff;text-decoration:none;font-weight:600}
.panel{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1.2rem 1.5rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{color:#666}dd{margin:0;overflow-wrap:anywhere}
#payment-status{font-size:1.4rem;letter-spacing:.04em}
.status-succeeded{color:#1f6f43}.status-failed,.status-canceled,.status-expired{color:#b3261e}
.status-pending{color:#8a5a00}.status-authorized{color:#2453d4}
.note{font-size:.85rem;color:#666}
.reason{font-size:1.1rem;font-weight:600}
.hint{background:#fff8e6;border:1px solid #e8c46a;border-radius:6px;padding:.6rem .9rem}
"""

_CONFIRMING = "Confirming your payment…"
_HEADINGS = {
    "PENDING": "Waiting for the payment to be confirmed…",
    "AUTHORIZED": "Reserved: your card is authorized, not yet charged",
    "SUCCEEDED": "Thank you: your payment succeeded",
    "FAILED": "The payment failed",
    "CANCELED": "The payment was canceled",
    "EXPIRED": "The payment expired",
}


# Symbols a customer of these currencies reads before the amount; any other currency is written after it.
_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


def format_money(amount: int, currency: str) -> str:
    """`€5.00` for the currencies with a symbol here, else as `format_amount` writes it (`5.00 CHF`)."""
    symbol = _SYMBOLS.get(currency)
    if symbol is None:
        return format_amount(amount, currency)
    return symbol + format_amount(amount, currency).removesuffix(f" {currency}")


def format_amount(amount: int, currency: str) -> str:
    """Integer minor units as a customer reads them: 1999 USD is `19.99 USD`."""
    digits = 0 if currency in _ZERO_DECIMAL else 3 if currency in _THREE_DECIMAL else 2
    if digits == 0:
        return f"{amount:,} {currency}"
    major, minor = divmod(amount, 10**digits)
    return f"{major:,}.{minor:0{digits}d} {currency}"


def is_web_url(url: object) -> TypeGuard[str]:
    """Only an absolute http(s) URL from the API becomes a link or a redirect (never `javascript:` and the like)."""
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _document(title: str, body: str, *, refresh_seconds: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>{escape(title)} · Paystream demo shop</title><style>{_STYLE}</style></head>"
        f'<body><main><p><a href="/">Paystream demo shop</a></p>{body}</main></body></html>\n'
    )


def render_catalogue(offers: Iterable[tuple[Product, str]]) -> str:
    """The product page: one Buy form per product, each carrying the order id made for it at rendering.

    The form holds no price: the server looks it up, so the browser cannot choose what it pays.
    """
    items = []
    for product, order_id in offers:
        items.append(
            '<li class="product">'
            f"<h2>{escape(product.name)}</h2><p>{escape(product.description)}</p>"
            f'<p class="price">{escape(format_amount(product.amount, product.currency))}</p>'
            '<form method="post" action="/buy">'
            f'<input type="hidden" name="product_id" value="{escape(product.id)}">'
            f'<input type="hidden" name="order_id" value="{escape(order_id)}">'
            f'<button type="submit">Buy {escape(product.name)}</button></form></li>'
        )
    body = (
        "<h1>Paystream demo shop</h1>"
        f'<ul class="products">{"".join(items)}</ul>'
        '<p class="note">A demo: payments go to the sandbox gateway, where card 4242 4242 4242 4242 succeeds and '
        "4000 0000 0000 0002 is declined. No money moves.</p>"
    )
    return _document("Products", body)


def _text(payment: Mapping[str, Any], field: str) -> str:
    value = payment.get(field)
    return "" if value is None else str(value)


def failure_reason(failure_code: object) -> str:
    """The customer's words for a failure_code (an unknown code gets a general sentence, never the raw code)."""
    return FAILURE_REASONS.get(failure_code, FALLBACK_REASON) if isinstance(failure_code, str) else FALLBACK_REASON


def _heading(status: str, arrival: Arrival) -> str:
    if status == "PENDING" and arrival == "checkout":
        return _CONFIRMING
    if status == "PENDING" and arrival == "cancel":
        return "You left the payment page"
    return _HEADINGS.get(status, "Payment status")


def _pending_body(payment: Mapping[str, Any], arrival: Arrival) -> list[str]:
    checkout_url = payment.get("checkout_url")
    if arrival == "checkout":
        # The customer has just paid at the gateway; its confirmation is on its way: no "pay" link here.
        return [
            '<p class="hint" id="order-hint">We are waiting for the payment service to confirm your payment. '
            "This takes a moment; please do not pay again.</p>"
        ]
    if arrival == "cancel":
        parts = ['<p class="hint" id="order-hint">You canceled on the payment page. Nothing has been charged.</p>']
        if is_web_url(checkout_url):
            parts.append(
                "<p>Changed your mind? "
                f'<a class="button" id="continue-to-payment" href="{escape(checkout_url)}">Continue to payment</a>'
                "</p>"
            )
        return parts
    parts = ["<p>Waiting for the payment to be confirmed…</p>"]
    if is_web_url(checkout_url):
        parts.append(
            "<p>Not paid yet? "
            f'<a class="button" id="continue-to-payment" href="{escape(checkout_url)}">Continue to payment</a>'
            "</p>"
        )
    else:
        parts.append("<p>The payment page is being prepared.</p>")
    return parts


def _ended_body(payment: Mapping[str, Any], order_id: str) -> list[str]:
    status = _text(payment, "status")
    parts = []
    if status == "CANCELED":
        parts.append('<p class="reason" id="order-hint">The payment was canceled. Nothing has been charged.</p>')
    retry_label = _RETRY_LABELS.get(status)
    if retry_label:
        # The same order, a new payment: the attempt that ended rides along so a double click starts one, not two.
        parts.append(
            f'<form method="post" action="/orders/{escape(order_id)}/retry">'
            f'<input type="hidden" name="payment_id" value="{escape(_text(payment, "id"))}">'
            f'<button type="submit" id="retry-payment">{escape(retry_label)}</button></form>'
        )
    parts.append('<p><a href="/">Back to the shop</a></p>')
    return parts


def _held_body(payment: Mapping[str, Any], order_id: str, *, shipping: bool) -> list[str]:
    """A reserved order (its payment AUTHORIZED): the money is held; Ship takes it."""
    if shipping:
        # Ship was pressed a moment ago; the capture is on its way to the payment service.
        return ['<p class="hint" id="order-hint">Shipping: charging your card. This takes a moment.</p>']
    return [
        '<p class="hint" id="order-hint">Your card is authorized, not yet charged: the amount is held until the '
        "order ships.</p>",
        # The shop's staff ship from here in this demo; a real shop would call the capture from its back office.
        f'<form method="post" action="/orders/{escape(order_id)}/ship">'
        f'<input type="hidden" name="payment_id" value="{escape(_text(payment, "id"))}">'
        '<button type="submit" id="ship-order">Ship</button> '
        '<span class="note">(the shop: ship the order and charge the card)</span></form>',
        '<p><a href="/">Back to the shop</a></p>',
    ]


def render_order(
    payment: Mapping[str, Any],
    *,
    arrival: Arrival = None,
    order_paid: bool = False,
    shipping: bool = False,
    refunded: int = 0,
) -> str:
    """The order page for a payment as the intake API reported it; it reloads itself while PENDING (and while a
    Ship's capture is on its way).

    `arrival` (how the customer got here) only changes the words: the status shown is always the API's.
    `order_paid`: the shop's own record, set by Paystream's verified webhook even if the customer never came back.
    A payment that ended without success offers a new payment for the same order; a held one (AUTHORIZED) offers
    Ship, which captures it; a captured one shows what was charged. `refunded`: what Paystream's verified refund
    webhooks said was given back ("Refunded €5.00 of €19.99").
    """
    status = _text(payment, "status")
    order_id = _text(payment, "reference")
    held = status == "AUTHORIZED"
    pending = status == "PENDING" or (held and shipping)
    rows = [("Order", order_id)]
    if payment.get("description"):
        rows.append(("Item", _text(payment, "description")))
    amount, currency = payment.get("amount"), payment.get("currency")
    if isinstance(amount, int) and isinstance(currency, str):
        rows.append(("Amount", format_amount(amount, currency)))
        held_amount, captured = payment.get("amount_capturable"), payment.get("amount_captured")
        if held and isinstance(held_amount, int):
            rows.append(("Held on your card", format_amount(held_amount, currency)))
        if status == "SUCCEEDED" and isinstance(captured, int):
            rows.append(("Charged", format_amount(captured, currency)))
        if refunded > 0:
            taken = captured if isinstance(captured, int) and captured > 0 else amount
            rows.append(("Refund", f"Refunded {format_money(refunded, currency)} of {format_money(taken, currency)}"))
    # The amounts a test (or a screen reader's shortcut) looks for by id.
    ids = {"Held on your card": "amount-held", "Charged": "amount-charged", "Refund": "amount-refunded"}
    details = "".join(
        f"<dt>{escape(k)}</dt><dd" + (f' id="{ids[k]}"' if k in ids else "") + f">{escape(v)}</dd>" for k, v in rows
    )
    failure_code = payment.get("failure_code")
    if failure_code and status != "SUCCEEDED":
        details += (
            f'<dt>Reason</dt><dd><span class="reason" id="failure-reason">{escape(failure_reason(failure_code))}'
            f'</span> <span class="note">(code <code>{escape(str(failure_code))}</code>)</span></dd>'
        )

    parts = [
        f"<h1>{escape(_heading(status, arrival))}</h1>",
        '<div class="panel">',
        f'<p>Status: <strong id="payment-status" class="status-{escape(status.lower())}">{escape(status)}</strong></p>',
        f"<dl>{details}</dl>",
        f'<p>Order: <strong id="order-state">{"paid" if order_paid else "not paid yet"}</strong></p>',
    ]
    if held:
        parts.extend(_held_body(payment, order_id, shipping=shipping))
        if pending:
            parts.append(f'<p class="note">This page refreshes itself every {REFRESH_SECONDS} seconds.</p>')
    elif pending:
        parts.extend(_pending_body(payment, arrival))
        parts.append(f'<p class="note">This page refreshes itself every {REFRESH_SECONDS} seconds.</p>')
    else:
        parts.extend(_ended_body(payment, order_id))
    parts.append("</div>")
    return _document(f"Order {order_id}", "".join(parts), refresh_seconds=REFRESH_SECONDS if pending else None)


def render_problem(
    title: str,
    message: str,
    *,
    retry: Mapping[str, str] | None = None,
    retry_action: str = "/buy",
    refresh_seconds: int | None = None,
) -> str:
    """An error page for the customer: what happened in plain words, never a trace, a key or an upstream body.

    `retry` holds the fields of the form (posted to `retry_action`) that repeats the attempt: safe, since the same
    attempt has the same Idempotency-Key and so is the same payment.
    """
    again = ""
    if retry:
        fields = "".join(
            f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">' for name, value in retry.items()
        )
        again = (
            f'<form method="post" action="{escape(retry_action)}">{fields}'
            '<button type="submit">Try again</button></form>'
        )
    body = (
        f'<h1>{escape(title)}</h1><div class="panel"><p>{escape(message)}</p>{again}'
        '<p><a href="/">Back to the shop</a></p></div>'
    )
    return _document(title, body, refresh_seconds=refresh_seconds)
