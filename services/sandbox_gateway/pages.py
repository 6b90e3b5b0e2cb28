"""The hosted payment page's HTML: plain forms that work without JavaScript; every value escaped."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from services.sandbox_gateway.cards import DECLINING_CARDS, SUCCEEDING_CARD
from services.sandbox_gateway.intents import Intent, IntentStatus

# ISO 4217 currencies whose minor unit is not a hundredth.
_MINOR_UNIT_DIGITS = {
    **dict.fromkeys(
        (
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}

_STYLE = """
body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1d2330;margin:0;padding:2rem 1rem}
main{max-width:28rem;margin:0 auto;background:#fff;border-radius:8px;padding:1.5rem 2rem;
box-shadow:0 1px 4px rgba(0,0,0,.12)}
h1{font-size:1.4rem;margin-top:0}
.merchant{display:flex;align-items:center;justify-content:space-between;gap:1rem;margin:0 0 1rem;
padding-bottom:.8rem;border-bottom:1px solid #e3e5ea}
.shop{font-weight:700;font-size:1.1rem}
.badge{background:#fff4d6;color:#7a4d00;border:1px solid #e0b24a;border-radius:999px;padding:.2rem .7rem;
font-size:.8rem;font-weight:700;text-transform:uppercase;letter-spacing:.05em;white-space:nowrap}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0 0 1.2rem}
dt{color:#5a6275}dd{margin:0;font-weight:600;overflow-wrap:anywhere}
.field{margin-bottom:1rem}.row{display:flex;gap:1rem}.row .field{flex:1}
label{display:block;font-weight:600;margin-bottom:.25rem}
input{width:100%;box-sizing:border-box;padding:.55rem;font-size:1rem;border:1px solid #b7bdc8;
border-radius:4px}
.invalid input{border-color:#c0262d}.error{color:#c0262d;margin:.25rem 0 0;font-size:.9rem}
.alert{border:1px solid #c0262d;background:#fdf0f0;padding:.6rem 1rem;border-radius:4px;margin-bottom:1rem}
.alert ul{margin:.3rem 0 0;padding-left:1.2rem}.alert a{color:#c0262d}
button{font-size:1rem;padding:.7rem 1rem;border-radius:4px;border:0;cursor:pointer}
button.pay{width:100%;background:#2453d4;color:#fff;font-weight:600}
button.link{background:none;color:#2453d4;text-decoration:underline;padding:.5rem 0}
.hold{border:1px solid #e0b24a;background:#fff8e6;padding:.6rem 1rem;border-radius:4px}
.note{font-size:.85rem;color:#5a6275;border-top:1px solid #e3e5ea;margin-top:1.2rem;padding-top:.8rem}
a.button{display:inline-block;background:#2453d4;color:#fff;padding:.6rem 1rem;border-radius:4px;
text-decoration:none}
"""

_FIELD_LABELS = {
    "name": "Name on card",
    "card_number": "Card number",
    "expiry": "Expiry date (MM/YY)",
    "cvc": "Security code (CVC)",
}


def format_amount(amount: int, currency: str) -> str:
    """Integer minor units as the customer reads them: 1999 USD is `19.99 USD`."""
    digits = _MINOR_UNIT_DIGITS.get(currency, 2)
    if digits == 0:
        return f"{amount:,} {currency}"
    major, minor = divmod(amount, 10**digits)
    return f"{major:,}.{minor:0{digits}d} {currency}"


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)} · Paystream sandbox</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _merchant(intent: Intent) -> str:
    """Whom the customer pays, and that no real money moves: the first thing on every page of an intent."""
    shop = intent.merchant_name or "Paystream sandbox"
    return (
        f'<header class="merchant"><span class="shop" id="merchant-name">{escape(shop)}</span>'
        '<span class="badge" id="test-mode">Test mode</span></header>'
    )


def _summary(intent: Intent) -> str:
    rows = [("Amount", format_amount(intent.amount, intent.currency)), ("Reference", intent.reference)]
    if intent.description:
        rows.append(("Description", intent.description))
    cells = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    return f'<dl class="summary">{cells}</dl>'


def _field(name: str, errors: dict[str, str], *, attributes: str, value: str = "") -> str:
    error = errors.get(name)
    described = f' aria-invalid="true" aria-describedby="{name}-error"' if error else ""
    message = f'<p class="error" id="{name}-error">{escape(error)}</p>' if error else ""
    return (
        f'<div class="field{" invalid" if error else ""}">'
        f'<label for="{name}">{escape(_FIELD_LABELS[name])}</label>'
        f'<input id="{name}" name="{name}" value="{escape(value)}" {attributes}{described}>'
        f"{message}</div>"
    )


# What a form sent back after a mistake keeps: name and expiry as typed, the card number only when it was right
# (a wrong one is typed afresh), the CVC never.
KEPT_FIELDS = ("name", "card_number", "expiry")


def render_checkout(
    intent: Intent, *, errors: dict[str, str] | None = None, typed: Mapping[str, str] | None = None
) -> str:
    """The payment form; on a failed submission, the same form with each problem next to its own field.

    `typed` holds what the customer sent; the fields of KEPT_FIELDS are filled in again so that only the wrong
    one needs retyping. A card number goes back only into this page, never into storage or a log.
    """
    errors = errors or {}
    kept = {name: (typed or {}).get(name, "") for name in KEPT_FIELDS}
    if "card_number" in errors:
        kept["card_number"] = ""
    amount = format_amount(intent.amount, intent.currency)
    # A manual-capture intent only holds the money: the customer is told so before paying, in the button too.
    manual = intent.capture_method == "manual"
    verb = "Authorize" if manual else "Pay"
    hold_note = (
        '<p class="hold" id="hold-note">Your card is authorized now, not yet charged: '
        f"{escape(amount)} is held, and the shop takes it (or less) when your order ships.</p>"
        if manual
        else ""
    )
    alert = ""
    if errors:
        items = "".join(
            f'<li><a href="#{field}">{escape(message)}</a></li>'
            for field, message in errors.items()
            if field in _FIELD_LABELS
        )
        alert = (
            '<div class="alert" role="alert"><strong>The payment was not made. Please correct:</strong>'
            f"<ul>{items}</ul></div>"
        )
    test_cards = ", ".join(
        [f"<code>{_grouped(SUCCEEDING_CARD)}</code> succeeds"]
        + [f"<code>{_grouped(n)}</code> fails ({escape(code)})" for n, code in DECLINING_CARDS.items()]
    )
    body = (
        f"{_merchant(intent)}<h1>{verb} {escape(amount)}</h1>{_summary(intent)}{hold_note}{alert}"
        f'<form method="post" action="/pay/{escape(intent.id)}" autocomplete="on">'
        + _field(
            "name",
            errors,
            value=kept["name"],
            attributes='type="text" autocomplete="cc-name" required maxlength="100"',
        )
        + _field(
            "card_number",
            errors,
            value=kept["card_number"],
            attributes='type="text" inputmode="numeric" autocomplete="cc-number" required maxlength="30" '
            'placeholder="1234 1234 1234 1234"',
        )
        + '<div class="row">'
        + _field(
            "expiry",
            errors,
            value=kept["expiry"],
            attributes='type="text" inputmode="numeric" autocomplete="cc-exp" required maxlength="7" '
            'placeholder="MM/YY"',
        )
        + _field(
            "cvc",
            errors,
            attributes='type="text" inputmode="numeric" autocomplete="cc-csc" required maxlength="4" placeholder="123"',
        )
        + "</div>"
        f'<button type="submit" class="pay">{verb} {escape(amount)}</button></form>'
        f'<form method="post" action="/pay/{escape(intent.id)}/cancel">'
        '<button type="submit" class="link">Cancel and return to the shop</button></form>'
        '<p class="note">Sandbox: no money moves. Any future expiry date and any 3- or 4-digit CVC work. '
        f"Test cards: {test_cards}; any other valid number succeeds.</p>"
    )
    return _document(f"{verb} {amount}", body)


_CLOSED_TITLES = {
    IntentStatus.AUTHORIZED: "Payment authorized, not yet charged",
    IntentStatus.SUCCEEDED: "This payment is already complete",
    IntentStatus.FAILED: "This payment has already failed",
    IntentStatus.CANCELED: "This payment was canceled",
    IntentStatus.EXPIRED: "This payment link has expired",
}


def render_closed(intent: Intent, back_url: str | None) -> str:
    """What a customer sees on an intent that can no longer be paid; nothing was changed."""
    title = _CLOSED_TITLES.get(intent.status, "This payment is closed")
    back = f'<p><a class="button" href="{escape(back_url)}">Return to the shop</a></p>' if back_url else ""
    if intent.status is IntentStatus.AUTHORIZED:
        state = (
            f"{escape(format_amount(intent.amount, intent.currency))} is held on your card: authorized, not yet "
            "charged. The shop takes it when your order ships, or releases it."
        )
    else:
        state = "Nothing was charged by this visit."
    body = (
        f"{_merchant(intent)}<h1>{escape(title)}</h1>{_summary(intent)}"
        f"<p>Status: <strong>{escape(str(intent.status))}</strong>. {state}</p>{back}"
    )
    return _document(title, body)


def render_not_found(intent_id: str) -> str:
    body = (
        "<h1>Payment not found</h1>"
        f"<p>There is no payment <code>{escape(intent_id)}</code>. Check the link you followed, "
        "or return to the shop and start again.</p>"
    )
    return _document("Payment not found", body)


def render_error(title: str, message: str) -> str:
    """A page for a request the hosted page cannot take (a form it cannot read): plain words, nothing changed."""
    return _document(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p><p>Nothing was charged.</p>")


def _grouped(number: str) -> str:
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
