"""Wiring of the intake API: routes, database, outbox relay, intent listener, idempotency purge."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.intake_api import refunds, routes, store, summary, webhooks
from services.intake_api.intents import INTAKE_MESSAGES, IntentWaiters
from services.intake_api.openapi import openapi_document
from services.intake_api.outbox import OutboxRelay
from services.intake_api.settings import IntakeSettings
from shared import runtime
from shared.consumers import CONSUMER_GROUPS
from shared.db import connect
from shared.web import create_base_app
from shared.webhook_secrets import SecretBox

# What the intake uses of other services' records: only the interfaces their owners publish to it
# (docs/explanation/ownership.md). A test holds this list to the ownership map (shared/ownership.py), which grants
# exactly these to the intake's role.
INTAKE_READS = (
    "ledger.payments_v1",
    "ledger.payment_events_v1",
    "ledger.refunds_v1",
    "notifier.webhook_endpoints_v1",
    "notifier.events_v1",
    "notifier.delivery_attempts_v1",
    "notifier.register_webhook_endpoint_v1",
    "notifier.delete_webhook_endpoint_v1",
    "notifier.rotate_webhook_endpoint_secret_v1",
)
# It answers for payments only once the ledger's views are there, so it waits for them at start; the notifier's
# serve only the webhook routes, which need the notifier to have started once (it deploys them).
WAITS_FOR = ("ledger.payments_v1", "ledger.payment_events_v1")


async def openapi(_: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def create_app(settings: IntakeSettings) -> web.Application:
    app = create_base_app(client_max_size=routes.MAX_BODY_BYTES)
    app.middlewares.extend([routes.auth_middleware, routes.database_middleware])
    app[routes.SETTINGS] = settings
    app[routes.WAITERS] = IntentWaiters()
    app[webhooks.SECRET_BOX] = SecretBox(settings.webhook_secrets_key)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/v1/payments", routes.create_payment)
    # Before /v1/payments/{payment_id}, which would otherwise take "summary" for an id.
    app.router.add_get("/v1/payments/summary", summary.payment_summary)
    app.router.add_get("/v1/payments/{payment_id}", routes.get_payment)
    app.router.add_get("/v1/payments/{payment_id}/events", routes.get_payment_events)
    app.router.add_post("/v1/payments/{payment_id}/cancel", routes.cancel_payment)
    app.router.add_post("/v1/payments/{payment_id}/capture", routes.capture_payment)
    webhooks.add_routes(app.router)
    refunds.add_routes(app.router)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # The intake reads the ledger's tables; the ledger deploys them (one deployer per schema).
        # A POST holds a connection for one statement (a millisecond or two): ten cover bursts of hundreds
        # of requests; more only add PostgreSQL backends competing for the same cores.
        async with (
            runtime.database(settings, "intake_api", waits_for=WAITS_FOR, max_size=10) as pool,
            runtime.broker(settings, "intake_api", CONSUMER_GROUPS) as broker,
        ):
            app[routes.POOL] = pool
            relay = OutboxRelay(
                pool,
                broker.publish,
                publish_bundle=broker.publish_bundle,
                connect=lambda: connect(
                    runtime.service_database_url(settings, "intake_api"), timeouts=runtime.database_timeouts(settings)
                ),
            )
            waiters = app[routes.WAITERS]
            # Only the outcomes of requests waiting here reach this queue (their PaymentRequested names it).
            address = await broker.consume_replies(
                INTAKE_MESSAGES.name, INTAKE_MESSAGES.dispatcher(waiters), prefetch=64
            )
            waiters.listening(address)
            retention = settings.idempotency_retention_hours
            loops = broker.supervisor
            relay.start(loops)
            # Measured on its own clock, so the backlog gauges keep moving while the broker is down.
            loops.every("outbox gauges", 5, relay.measure)
            loops.every("idempotency purge", 3600, lambda: store.purge_expired_keys(pool, retention))
            async with runtime.serving(app, broker, pool):
                yield

    app.cleanup_ctx.append(lifecycle)
    return app
