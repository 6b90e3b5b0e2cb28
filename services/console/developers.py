"""Developers: webhook endpoints (add, showing the secret once; rotate; delete) and events with their deliveries
and a Redeliver button."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from services.console.forms import ActionForm, EndpointForm, build_form, submitted_form
from services.console.intake import NotFoundError, RequestRefusedError, path
from services.console.merchant import merchant_api
from services.console.navigation import cursors, page_links
from services.console.rendering import render

EVENTS_PAGE_SIZE = 25
_ENDPOINT_ID = re.compile(r"^we_[0-9a-f]{1,60}$")
_EVENT_ID = re.compile(r"^evt_[0-9a-f]{1,60}$")
DONE = {
    "deleted": "Endpoint deleted. Nothing more is sent to it.",
    "redelivered": "Redelivery queued: the event is sent again to every enabled endpoint subscribed to it.",
}


def _matched(request: web.Request, name: str, pattern: re.Pattern[str]) -> str:
    value = request.match_info[name]
    if not pattern.fullmatch(value):
        raise NotFoundError(value)
    return value


async def _endpoints_page(
    request: web.Request,
    *,
    form: EndpointForm | None = None,
    revealed: dict[str, Any] | None = None,
    problem: str = "",
    status: int = 200,
) -> web.Response:
    api = await merchant_api(request)
    endpoints = (await api.get("/v1/webhook_endpoints")).get("data", [])
    context = {
        "endpoints": endpoints,
        "form": form or await build_form(request, EndpointForm),
        "action_form": await build_form(request, ActionForm),
        "revealed": revealed,
        "problem": problem,
        "done": DONE.get(request.query.get("done", ""), ""),
    }
    return await render(request, "endpoints.html", context, status=status)


async def show_endpoints(request: web.Request) -> web.Response:
    """The merchant's webhook endpoints and the form to add one."""
    return await _endpoints_page(request)


async def add_endpoint(request: web.Request) -> web.Response:
    """Register the endpoint; the answer is the one page that ever shows its secret (never stored, never cached)."""
    form = await submitted_form(request, EndpointForm)
    if not form.validate():
        return await _endpoints_page(request, form=form, status=422)
    body: dict[str, Any] = {"url": str(form.url.data).strip()}
    if form.events.data:
        body["events"] = list(form.events.data)
    api = await merchant_api(request)
    try:
        created = await api.post("/v1/webhook_endpoints", body)
    except RequestRefusedError as refused:
        messages = refused.field_messages()
        if "url" in messages:
            form.url.errors = [messages["url"]]
            return await _endpoints_page(request, form=form, status=refused.status)
        return await _endpoints_page(request, form=form, problem=refused.detail, status=refused.status)
    return await _endpoints_page(request, revealed={"endpoint": created, "rotated": False}, status=201)


async def rotate_secret(request: web.Request) -> web.Response:
    """A new signing secret for the endpoint, shown once; the old one signs beside it for a day."""
    endpoint_id = _matched(request, "endpoint_id", _ENDPOINT_ID)
    await submitted_form(request, ActionForm)
    api = await merchant_api(request)
    rotated = await api.post(path("/v1/webhook_endpoints/{}/rotate_secret", endpoint_id))
    return await _endpoints_page(request, revealed={"endpoint": rotated, "rotated": True})


async def delete_endpoint(request: web.Request) -> web.Response:
    """Stop delivering to the endpoint; its deliveries stay readable on the events."""
    endpoint_id = _matched(request, "endpoint_id", _ENDPOINT_ID)
    await submitted_form(request, ActionForm)
    api = await merchant_api(request)
    await api.delete(path("/v1/webhook_endpoints/{}", endpoint_id))
    return web.Response(status=303, headers={"Location": "/developers/webhooks?done=deleted"})


async def list_events(request: web.Request) -> web.Response:
    """The merchant's events newest first (or one payment's), a page at a time."""
    query = {"limit": str(EVENTS_PAGE_SIZE)}
    payment_id = request.query.get("payment_id", "").strip()
    if payment_id:
        query["payment_id"] = payment_id[:64]
    query.update(cursors(request.query))
    api = await merchant_api(request)
    problem = ""
    events: list[dict[str, Any]] = []
    has_more = False
    try:
        listed = await api.get("/v1/events", query)
        events, has_more = list(listed.get("data", [])), bool(listed.get("has_more"))
    except (RequestRefusedError, NotFoundError):
        problem = "That page of events is no longer there. Start again from the newest events."
    links = page_links({"payment_id": payment_id}, query, events, has_more)
    context = {"events": events, "problem": problem, "links": links, "payment_id": payment_id}
    return await render(request, "events.html", context)


async def show_event(request: web.Request) -> web.Response:
    """An event with every delivery attempt and a Redeliver button."""
    event_id = _matched(request, "event_id", _EVENT_ID)
    api = await merchant_api(request)
    event = await api.get(path("/v1/events/{}", event_id))
    context = {
        "event": event,
        "deliveries": event.get("deliveries", []),
        "redeliver_form": await build_form(request, ActionForm),
        "done": DONE.get(request.query.get("done", ""), ""),
    }
    return await render(request, "event.html", context)


async def redeliver(request: web.Request) -> web.Response:
    """Send the event again now to every enabled endpoint subscribed to it."""
    event_id = _matched(request, "event_id", _EVENT_ID)
    await submitted_form(request, ActionForm)
    api = await merchant_api(request)
    await api.post(path("/v1/events/{}/redeliver", event_id))
    return web.Response(status=303, headers={"Location": f"/developers/events/{event_id}?done=redelivered"})
