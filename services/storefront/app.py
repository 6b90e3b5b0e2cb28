"""The storefront's aiohttp application: wiring only; the pages and the payment flow live in routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from services.storefront import paystream_webhooks, routes
from services.storefront.intake import IntakeClient
from services.storefront.orders import OrderBook
from services.storefront.pages import render_problem
from services.storefront.settings import StorefrontSettings
from shared import runtime
from shared.logs import get_logger
from shared.supervisor import Backoff, Supervisor
from shared.web import ERROR_PAGE, READINESS_CHECKS, Problem, create_base_app, problem_page

log = get_logger(__name__)

REGISTER_BACKOFF = Backoff(initial=1.0, maximum=5.0)

MAX_FORM_BYTES = 16 * 1024
_OPERATIONAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def create_app(
    settings: StorefrontSettings, *, confirm_wait_seconds: float = routes.CONFIRM_WAIT_SECONDS
) -> web.Application:
    """The demo shop; it holds the merchant's API key (`settings.storefront_key`), which no page or log shows.

    `confirm_wait_seconds`: how long an order page reached from the gateway waits for the outcome.
    """
    app = create_base_app(client_max_size=MAX_FORM_BYTES)
    app[ERROR_PAGE] = error_page
    app[routes.ORDERS] = OrderBook()
    app[routes.SHOP_URL] = settings.storefront_base_url
    app[routes.CONFIRM_WAIT] = confirm_wait_seconds
    secret = settings.storefront_webhook_secret
    app[paystream_webhooks.WEBHOOK] = paystream_webhooks.ShopWebhook(secret.get_secret_value() if secret else None)
    app.cleanup_ctx.append(_intake_client(settings))

    async def intake_alive() -> bool:
        return await app[routes.INTAKE].is_alive()

    async def webhook_known() -> bool:
        return app[paystream_webhooks.WEBHOOK].ready

    app[READINESS_CHECKS].extend([intake_alive, webhook_known])
    routes.add_routes(app.router)
    app.router.add_post(paystream_webhooks.PATH, paystream_webhooks.receive)
    return app


def _intake_client(settings: StorefrontSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def open_session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            intake = app[routes.INTAKE] = IntakeClient(session, settings.intake_base_url, settings.storefront_key)
            log.info("storefront ready", intake=settings.intake_base_url, shop=settings.storefront_base_url)
            url = settings.storefront_webhook_url or settings.storefront_base_url + paystream_webhooks.PATH
            webhook = app[paystream_webhooks.WEBHOOK]
            async with runtime.supervising(app, Supervisor()) as loops:
                # Retried while the intake API is unavailable (1 s, then up to 5 s apart), until it is made.
                loops.start(
                    "webhook registration",
                    lambda: webhook.register(intake, url),
                    backoff=REGISTER_BACKOFF,
                    until_done=True,
                )
                yield

    return open_session


def error_page(request: web.BaseRequest, problem: Problem) -> web.StreamResponse:
    """A customer's browser gets an HTML page for every error, never a stack trace (operational routes excepted)."""
    if request.path in _OPERATIONAL_PATHS:
        return problem_page(request, problem)
    headers = {k: v for k, v in problem.headers.items() if k.lower() in ("allow", "retry-after")}
    if problem.status >= 500:
        title, message = "Something went wrong", "The shop could not complete your request. Please try again."
    else:
        title, message = problem.title, problem.detail
    return routes.html_page(render_problem(title, message), problem.status, headers)
