"""Wiring of the webhook_receiver: stateless, it never touches the database."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.webhook_receiver.handlers import BrokerUnavailable, WebhookRejected, receive_webhook
from services.webhook_receiver.settings import WebhookReceiverSettings
from shared import runtime
from shared.broker import Broker
from shared.consumers import CONSUMER_GROUPS
from shared.metrics import WEBHOOKS_RECEIVED
from shared.providers import sandbox_provider
from shared.providers.base import PaymentProvider
from shared.web import Problem, create_base_app, read_body

MAX_WEBHOOK_BYTES = 256 * 1024
PROVIDERS = web.AppKey("providers", dict[str, PaymentProvider])
BROKER = web.AppKey("broker", Broker)


def _providers(settings: WebhookReceiverSettings) -> dict[str, PaymentProvider]:
    providers: dict[str, PaymentProvider] = {"sandbox": sandbox_provider(settings)}
    if settings.stripe_webhook_secret:
        from shared.providers.stripe import StripeProvider

        providers["stripe"] = StripeProvider.for_webhooks(settings)
    return providers


async def _raw_body(request: web.Request, provider: str) -> bytes:
    """The body exactly as sent (the signature covers these bytes), refused with 413 past the size limit."""
    try:
        return await read_body(request, limit=MAX_WEBHOOK_BYTES)
    except Problem as problem:
        outcome = "too_large" if problem.status == 413 else "invalid_event"
        WEBHOOKS_RECEIVED.labels(provider, outcome).inc()
        raise


async def webhook(request: web.Request) -> web.Response:
    name = request.match_info["provider"]
    provider = request.app[PROVIDERS].get(name)
    if provider is None:
        raise Problem(404, "not-found", f"No webhook endpoint for provider {name!r}.")
    body = await _raw_body(request, provider.name)
    try:
        # The headers stay case-insensitive: a proxy may have lower-cased the signature header's name.
        result = await receive_webhook(provider, request.headers, body, request.app[BROKER].publish)
    except WebhookRejected as exc:
        raise Problem(400, "invalid-webhook", str(exc)) from exc
    except BrokerUnavailable as exc:
        raise Problem(
            503, "broker-unavailable", "The event could not be recorded; retry later.", headers={"Retry-After": "5"}
        ) from exc
    return web.json_response({"received": True, "outcome": result.outcome, "event_id": result.event_id})


def create_app(settings: WebhookReceiverSettings) -> web.Application:
    app = create_base_app(client_max_size=MAX_WEBHOOK_BYTES)
    app[PROVIDERS] = _providers(settings)
    app.router.add_post("/webhooks/{provider}", webhook)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with runtime.broker(settings, "webhook_receiver", CONSUMER_GROUPS, coalesce=True) as broker:
            app[BROKER] = broker
            async with runtime.serving(app, broker):
                yield
        for provider in app[PROVIDERS].values():
            await provider.close()

    app.cleanup_ctx.append(lifecycle)
    return app
