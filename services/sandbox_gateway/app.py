"""The sandbox gateway's aiohttp application: wiring only; behaviour lives in gateway, api and checkout."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

from aiohttp import web
from opentelemetry import trace

from services.sandbox_gateway import api, checkout
from services.sandbox_gateway.gateway import GATEWAY, SandboxGateway
from services.sandbox_gateway.intents import IntentStore
from services.sandbox_gateway.settings import SandboxGatewaySettings
from services.sandbox_gateway.storage import SandboxStorage
from services.sandbox_gateway.webhooks import WebhookSender
from shared import runtime
from shared.logs import get_logger
from shared.supervisor import Supervisor
from shared.web import ERROR_PAGE, create_base_app

log = get_logger(__name__)

# Intents are also expired lazily whenever touched; the sweep makes sure the webhook goes out regardless.
EXPIRY_SWEEP_SECONDS = 1.0


def create_app(
    settings: SandboxGatewaySettings, *, rng: random.Random | None = None, tracer: trace.Tracer | None = None
) -> web.Application:
    """The sandbox gateway; `rng` and `tracer` let tests make faults reproducible and observe spans."""
    app = create_base_app(client_max_size=api.MAX_BODY_BYTES)
    admin_token = settings.sandbox_admin_token
    app.middlewares.append(api.admin_guard(admin_token.get_secret_value() if admin_token else None))
    chance = rng or random.Random()
    # SANDBOX_DATA_DIR: intents and webhooks still to deliver outlive a restart, as at a real provider.
    storage = SandboxStorage(settings.sandbox_data_dir) if settings.sandbox_data_dir else None
    webhooks = WebhookSender(
        settings.sandbox_webhook_url,
        settings.sandbox_webhook_secret[0].get_secret_value(),
        retry_base_seconds=settings.sandbox_webhook_retry_base_seconds,
        max_attempts=settings.sandbox_webhook_max_attempts,
        rng=chance,
        tracer=tracer,
        storage=storage,
    )
    gateway = SandboxGateway(
        IntentStore(settings.sandbox_checkout_base, storage=storage),
        webhooks,
        rng=chance,
        autopay=settings.sandbox_autopay,
    )
    app[GATEWAY] = gateway
    app[ERROR_PAGE] = checkout.error_page
    app.cleanup_ctx.append(_webhook_delivery)
    app.cleanup_ctx.append(_expiry_sweep)
    api.add_routes(app.router)
    checkout.add_routes(app.router)
    return app


async def _webhook_delivery(app: web.Application) -> AsyncIterator[None]:
    webhooks = app[GATEWAY].webhooks
    await webhooks.start()
    app[GATEWAY].resume_refunds()
    yield
    await webhooks.close()
    storage = app[GATEWAY].store.storage
    if storage is not None:
        storage.close()


async def _expiry_sweep(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]

    async def expire_due() -> None:
        gateway.expire_due()

    async with runtime.supervising(app, Supervisor()) as loops:
        loops.every("expiry sweep", EXPIRY_SWEEP_SECONDS, expire_due)
        yield
