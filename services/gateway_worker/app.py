"""Wiring of the gateway_worker: its consumer group, its providers, and a health/metrics port."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.gateway_worker.handlers import GATEWAY_MESSAGES, GatewayHandlers
from services.gateway_worker.settings import GatewayWorkerSettings
from shared import runtime
from shared.broker import RetryPolicy
from shared.consumers import CONSUMER_GROUPS
from shared.providers import build_provider
from shared.providers.base import PaymentProvider
from shared.web import create_base_app

GROUP = GATEWAY_MESSAGES.name


def build_providers(settings: GatewayWorkerSettings) -> dict[str, PaymentProvider]:
    """The configured provider, plus the sandbox always (payments made before a switch still close)."""
    providers = {"sandbox": build_provider(settings, "sandbox")}
    if settings.payment_provider != "sandbox":
        providers[settings.payment_provider] = build_provider(settings)
    return providers


def create_app(settings: GatewayWorkerSettings) -> web.Application:
    app = create_base_app()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        providers = build_providers(settings)
        try:
            async with runtime.broker(settings, GROUP, CONSUMER_GROUPS, coalesce=True) as broker:
                handlers = GatewayHandlers(
                    providers, settings.payment_provider, broker.publish, merchant_names=settings.merchant_names
                )
                retry = RetryPolicy(settings.gateway_max_attempts, settings.gateway_retry_base_seconds)
                await broker.consume(GROUP, GATEWAY_MESSAGES.dispatcher(handlers), retry=retry, prefetch=32)
                broker.watch_dlq(GROUP)
                async with runtime.serving(app, broker):
                    yield
        finally:
            for provider in providers.values():
                await provider.close()

    app.cleanup_ctx.append(lifecycle)
    return app
