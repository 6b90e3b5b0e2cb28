"""Payments: the list (filters, search, cursor pages, htmx partial updates) and the payment page with its
history, refunds, refund form, and capture and void when the payment is AUTHORIZED."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from aiohttp import web

from services.console.forms import ActionForm, CaptureForm, RefundForm, build_form, new_idempotency_key, submitted_form
from services.console.intake import MerchantApi, NotFoundError, RequestRefusedError, path
from services.console.local_time import browser_zone, end_of_day, start_of_day
from services.console.merchant import merchant_api
from services.console.money import AmountError, minor_units
from services.console.navigation import cursors, page_links
from services.console.rendering import render
from shared.events import PaymentStatus

PAGE_SIZE = 20
RESULTS_TARGET = "payments-results"
_IDEMPOTENCY_KEY = re.compile(r"^console_[0-9a-f]{32}$")
_PAYMENT_ID = re.compile(r"^pay_[A-Za-z0-9]{1,60}$")
# What a finished action says on the page it comes back to: fixed sentences, never text from the request.
DONE = {
    "refund": "Refund requested. It shows as pending until the provider confirms it.",
    "capture": "Capture requested. The payment becomes SUCCEEDED once the provider confirms it.",
    "void": "Void requested. The payment becomes CANCELED once the provider confirms it.",
}


def statuses() -> list[str]:
    """Every payment status the API knows, in the order the pages list them."""
    return [status.value for status in PaymentStatus]


def _date(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def list_query(request: web.Request) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The page's filters as typed, the intake API query they make, and a message per filter that is wrong."""
    typed = {name: request.query.get(name, "").strip() for name in ("status", "q", "from", "to")}
    api: dict[str, str] = {"limit": str(PAGE_SIZE)}
    errors: dict[str, str] = {}
    if typed["status"]:
        if typed["status"] in statuses():
            api["status"] = typed["status"]
        else:
            errors["status"] = "Choose a status from the list."
    search = typed["q"]
    if search:
        if len(search) > 254:
            errors["q"] = "Search for at most 254 characters."
        elif "@" in search:
            api["customer_email"] = search
        else:
            api["reference"] = search[:128]
    zone = browser_zone(request)
    for name, bound, parameter in (("from", start_of_day, "created[gte]"), ("to", end_of_day, "created[lte]")):
        if typed[name]:
            day = _date(typed[name])
            if day is None:
                errors[name] = "Enter a date such as 2026-12-31."
            else:
                api[parameter] = bound(day, zone).isoformat()
    api.update(cursors(request.query))
    return typed, api, errors


async def list_payments(request: web.Request) -> web.Response:
    """The payments list; only its results when htmx asks for them (a filter, a page)."""
    typed, query, errors = list_query(request)
    payments: list[dict[str, Any]] = []
    has_more = False
    problem = ""
    if not errors:
        api = await merchant_api(request)
        try:
            listed = await api.get("/v1/payments", query)
            payments, has_more = list(listed.get("data", [])), bool(listed.get("has_more"))
        except RequestRefusedError as refused:
            messages = refused.field_messages()
            problem = "; ".join(f"{name}: {message}" for name, message in messages.items()) or refused.detail
        except NotFoundError:
            problem = "That page of results is no longer there. Start again from the newest payments."
    context = {
        "payments": payments,
        "filters": typed,
        "errors": errors,
        "problem": problem,
        "statuses": statuses(),
        "links": page_links(typed, query, payments, has_more),
        "results_target": RESULTS_TARGET,
    }
    partial = request.headers.get("HX-Request") and request.headers.get("HX-Target") == RESULTS_TARGET
    template = "payments_results.html" if partial else "payments.html"
    return await render(request, template, context, status=422 if errors else 200)


def _payment_id(request: web.Request) -> str:
    payment_id = request.match_info["payment_id"]
    if not _PAYMENT_ID.fullmatch(payment_id):
        raise NotFoundError(payment_id)
    return payment_id


def refund_position(payment: dict[str, Any], refunds: list[dict[str, Any]] | None) -> dict[str, int]:
    """What was captured, refunded, pending, and is still refundable, in minor units."""
    captured = payment.get("amount_captured")
    if not isinstance(captured, int):
        captured = payment["amount"] if payment.get("status") == "SUCCEEDED" else 0
    refunds = refunds or []
    succeeded = sum(r.get("amount", 0) for r in refunds if r.get("status") == "succeeded")
    pending = sum(r.get("amount", 0) for r in refunds if r.get("status") == "pending")
    refunded = payment.get("amount_refunded")
    refunded = refunded if isinstance(refunded, int) else succeeded
    return {
        "captured": captured,
        "refunded": refunded,
        "pending": pending,
        "refundable": max(captured - refunded - pending, 0),
    }


async def _refunds(api: MerchantApi, payment_id: str) -> list[dict[str, Any]] | None:
    """The payment's refunds, newest first; None while the intake API has no refunds (then the page says so)."""
    refunds: list[dict[str, Any]] = []
    query = {"payment_id": payment_id, "limit": "100"}
    try:
        while True:
            listed = await api.get("/v1/refunds", query)
            refunds.extend(listed.get("data", []))
            if not listed.get("has_more") or not refunds:
                return refunds
            query["starting_after"] = refunds[-1]["id"]
    except (NotFoundError, RequestRefusedError):
        return None


async def payment_page(
    request: web.Request,
    *,
    refund_form: RefundForm | None = None,
    capture_form: CaptureForm | None = None,
    form_problem: str = "",
    status: int = 200,
) -> web.Response:
    """The payment with every field, its history, its refunds and the actions its status allows."""
    payment_id = _payment_id(request)
    api = await merchant_api(request)
    payment = await api.get(path("/v1/payments/{}", payment_id))
    history = (await api.get(path("/v1/payments/{}/events", payment_id))).get("data", [])
    refunds = await _refunds(api, payment_id)
    position = refund_position(payment, refunds)
    if refund_form is None:
        refund_form = await build_form(request, RefundForm, idempotency_key=new_idempotency_key())
    if capture_form is None:
        capture_form = await build_form(request, CaptureForm, idempotency_key=new_idempotency_key())
    context = {
        "payment": payment,
        "history": history,
        "refunds": refunds,
        "position": position,
        "refund_form": refund_form,
        "capture_form": capture_form,
        "void_form": await build_form(request, ActionForm),
        "form_problem": form_problem,
        "done": DONE.get(request.query.get("done", ""), ""),
        "can_refund": payment.get("status") == "SUCCEEDED" and position["refundable"] > 0,
        "can_capture": payment.get("status") == "AUTHORIZED",
    }
    return await render(request, "payment.html", context, status=status)


async def show_payment(request: web.Request) -> web.Response:
    """The payment page."""
    return await payment_page(request)


def _key(form: RefundForm | CaptureForm) -> str:
    submitted = str(form.idempotency_key.data or "")
    return submitted if _IDEMPOTENCY_KEY.fullmatch(submitted) else new_idempotency_key()


def _done(payment_id: str, what: str) -> web.Response:
    return web.Response(status=303, headers={"Location": f"/payments/{payment_id}?done={what}#main"})


async def refund(request: web.Request) -> web.Response:
    """Refund all (amount left blank) or part of the payment; the API's refusal is shown beside the field."""
    payment_id = _payment_id(request)
    form = await submitted_form(request, RefundForm)
    body: dict[str, Any] = {"reason": form.reason.data} if form.reason.data else {}
    return await _amount_action(
        request, payment_id, form, body, field="amount", endpoint="/v1/payments/{}/refunds", done="refund"
    )


async def capture(request: web.Request) -> web.Response:
    """Capture all (amount left blank) or part of an AUTHORIZED payment."""
    payment_id = _payment_id(request)
    form = await submitted_form(request, CaptureForm)
    return await _amount_action(
        request, payment_id, form, {}, field="amount_to_capture", endpoint="/v1/payments/{}/capture", done="capture"
    )


async def _amount_action(
    request: web.Request,
    payment_id: str,
    form: RefundForm | CaptureForm,
    body: dict[str, Any],
    *,
    field: str,
    endpoint: str,
    done: str,
) -> web.Response:
    """Post a refund or a capture of the payment, with the amount typed in the form's `field` if any.

    The amount is read in the payment's currency and sent under the field's name; a bad amount, or the API's
    refusal, comes back on the payment page beside the form that was sent.
    """
    api = await merchant_api(request)
    payment = await api.get(path("/v1/payments/{}", payment_id))
    form.validate()
    amount = getattr(form, field)
    if amount.data and not form.errors:
        try:
            body[field] = minor_units(str(amount.data), payment["currency"])
        except AmountError as exc:
            amount.errors = [str(exc)]
    sent: dict[str, Any] = {"refund_form": form} if isinstance(form, RefundForm) else {"capture_form": form}
    if form.errors:
        return await payment_page(request, status=422, **sent)
    try:
        await api.post(path(endpoint, payment_id), body, idempotency_key=_key(form))
    except RequestRefusedError as refused:
        return await _refused(request, refused, field=field, **sent)
    return _done(payment_id, done)


async def void(request: web.Request) -> web.Response:
    """Release an AUTHORIZED payment's hold (the API's cancel)."""
    payment_id = _payment_id(request)
    await submitted_form(request, ActionForm)
    api = await merchant_api(request)
    try:
        await api.post(path("/v1/payments/{}/cancel", payment_id))
    except RequestRefusedError as refused:
        return await payment_page(request, form_problem=refused.detail, status=refused.status)
    return _done(payment_id, "void")


async def _refused(
    request: web.Request,
    refused: RequestRefusedError,
    *,
    field: str,
    refund_form: RefundForm | None = None,
    capture_form: CaptureForm | None = None,
) -> web.Response:
    """The payment page again with the API's words: beside the amount field when they are about the amount."""
    form: RefundForm | CaptureForm | None = refund_form or capture_form
    if form is None:
        raise TypeError("a refusal is shown beside the refund or the capture form")
    messages = refused.field_messages()
    amount_field = getattr(form, field)
    if field in messages or "amount" in messages or "amount" in refused.slug or "capturable" in refused.slug:
        amount_field.errors = [messages.get(field) or messages.get("amount") or refused.detail]
        problem = ""
    else:
        problem = refused.detail
    return await payment_page(
        request, refund_form=refund_form, capture_form=capture_form, form_problem=problem, status=refused.status
    )
