"""The hosted payment page: show the form, take a card, cancel; then send the customer back to the shop."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from services.sandbox_gateway.cards import check_card_form
from services.sandbox_gateway.gateway import GATEWAY, SandboxGateway
from services.sandbox_gateway.intents import Intent, IntentClosedError, IntentNotFoundError, IntentStatus
from services.sandbox_gateway.pages import render_checkout, render_closed, render_error, render_not_found
from shared.web import Problem, problem_page, read_form

# A page holding a payment form is never cached, framed or leaking its URL to other sites.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def with_payment_id(url: str, payment_id: str | None) -> str:
    """`url` with `payment_id=` added to its query, keeping what the query already holds."""
    if not payment_id:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "payment_id"]
    query.append(("payment_id", payment_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


def return_link(intent: Intent) -> str:
    """Where the customer goes back to: cancel_url after a cancel or expiry when there is one."""
    closed_unpaid = intent.status in (IntentStatus.CANCELED, IntentStatus.EXPIRED)
    target = intent.cancel_url if closed_unpaid and intent.cancel_url else intent.return_url
    return with_payment_id(target, intent.payment_id)


def _page(html: str, status: int) -> web.Response:
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS)


def error_page(request: web.BaseRequest, problem: Problem) -> web.StreamResponse:
    """The sandbox's errors: an HTML page on the hosted pages (a customer's browser), problem JSON elsewhere."""
    if not request.path.startswith("/pay/"):
        return problem_page(request, problem)
    headers = {k: v for k, v in problem.headers.items() if k.lower() in ("allow", "retry-after")}
    response = _page(render_error(problem.title, problem.detail), problem.status)
    response.headers.update(headers)
    return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _gateway(request: web.Request) -> SandboxGateway:
    return request.app[GATEWAY]


def _open_intent_or_page(gateway: SandboxGateway, intent_id: str) -> Intent | web.Response:
    """The intent if it can still be paid; otherwise the page explaining why not (404 or 409)."""
    try:
        intent = gateway.intent(intent_id)
    except IntentNotFoundError:
        return _page(render_not_found(intent_id), 404)
    if intent.status.is_closed:
        return _page(render_closed(intent, return_link(intent)), 409)
    return intent


async def show_payment_page(request: web.Request) -> web.Response:
    found = _open_intent_or_page(_gateway(request), request.match_info["intent_id"])
    if isinstance(found, web.Response):
        return found
    return _page(render_checkout(found), 200)


async def submit_payment(request: web.Request) -> web.Response:
    """Check the typed card; a mistake re-renders the form (422) and changes nothing."""
    gateway = _gateway(request)
    found = _open_intent_or_page(gateway, request.match_info["intent_id"])
    if isinstance(found, web.Response):
        return found
    form = await read_form(request)

    def text(name: str) -> str:
        value = form.get(name)
        return value if isinstance(value, str) else ""

    today = datetime.fromtimestamp(gateway.store.now(), UTC).date()
    card = check_card_form(text("card_number"), text("expiry"), text("cvc"), text("name"), today)
    if not card.ok:
        # Typed back into the form, bounded like the inputs; never logged.
        typed = {
            "name": text("name").strip()[:100],
            "card_number": text("card_number")[:30],
            "expiry": text("expiry")[:7],
        }
        return _page(render_checkout(found, errors=card.errors, typed=typed), 422)
    try:
        intent = gateway.pay(found.id, card)
    except IntentClosedError as exc:
        return _page(render_closed(exc.intent, return_link(exc.intent)), 409)
    return _see_other(return_link(intent))


async def cancel_payment(request: web.Request) -> web.Response:
    """Cancel from the page and go back to the shop; a paid or refused intent stays as it is (409 page)."""
    gateway = _gateway(request)
    intent_id = request.match_info["intent_id"]
    try:
        intent = gateway.close(intent_id, "canceled")
    except IntentNotFoundError:
        return _page(render_not_found(intent_id), 404)
    except IntentClosedError as exc:
        return _page(render_closed(exc.intent, return_link(exc.intent)), 409)
    return _see_other(return_link(intent))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/pay/{intent_id}", show_payment_page)
    router.add_post("/pay/{intent_id}", submit_payment)
    # The page cancels with a POST form; the GET stays for plain links to it.
    router.add_get("/pay/{intent_id}/cancel", cancel_payment)
    router.add_post("/pay/{intent_id}/cancel", cancel_payment)
