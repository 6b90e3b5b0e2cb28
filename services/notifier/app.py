"""Wiring of the notifier: ledger records in, one delivery message per (event, endpoint), signed POSTs out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from services.notifier.handlers import NOTIFIER_DELIVERIES, NOTIFIER_MESSAGES, NotifierHandlers, Publish, ScheduleRetry
from services.notifier.sender import WebhookSender, delivery_session
from services.notifier.settings import NotifierSettings
from services.notifier.store import PostgresNotifierStore
from shared import runtime
from shared.broker import RetryPolicy
from shared.consumers import CONSUMER_GROUPS
from shared.events import Envelope
from shared.metrics import WEBHOOK_OLDEST_UNDELIVERED_AGE
from shared.web import create_base_app
from shared.webhook_secrets import SecretBox

# What the notifier reads of other services' records: payments and refunds, through the views the ledger publishes.
NOTIFIER_READS = ("ledger.payments_v1", "ledger.refunds_v1")
EVENTS_GROUP = NOTIFIER_MESSAGES.name
DELIVERIES_GROUP = NOTIFIER_DELIVERIES.name
# The most ledger records stored in one batch, and how many the broker may hand out ahead (the next batch).
EVENTS_BATCH = 64
EVENTS_PREFETCH = 128
# Deliveries in flight at once per process: a slow endpoint holds one of these, never the others.
DELIVERY_CONCURRENCY = 64
# A delivery's first attempt is made as soon as its event is stored, within the batch of ledger records it came
# with; an endpoint that takes longer than this to answer is handed to the deliveries queue, so it holds up the
# batch (and the other merchants' events in it) by this much at most.
FIRST_ATTEMPT_BUDGET_SECONDS = 1.0


def build_notifier(
    settings: NotifierSettings,
    store: PostgresNotifierStore,
    session: aiohttp.ClientSession,
    publish: Publish,
    retry_later: ScheduleRetry | None = None,
) -> NotifierHandlers:
    """The notifier's handlers over the real dependencies."""
    sender = WebhookSender(
        session, timeout_seconds=settings.webhook_timeout_seconds, allow_private=settings.webhook_allow_private_urls
    )
    return NotifierHandlers(
        store=store,
        send=sender,
        publish=publish,
        schedule=settings.webhook_retry_schedule_seconds,
        disable_after_seconds=settings.webhook_disable_after_seconds,
        retry_later=retry_later,
        first_attempt_budget=min(FIRST_ATTEMPT_BUDGET_SECONDS, settings.webhook_timeout_seconds),
    )


def create_app(settings: NotifierSettings) -> web.Application:
    app = create_base_app()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with (
            runtime.database(settings, "notifier", waits_for=NOTIFIER_READS, max_size=4) as pool,
            runtime.broker(settings, EVENTS_GROUP, CONSUMER_GROUPS) as broker,
            delivery_session() as session,
        ):
            store = PostgresNotifierStore(pool, SecretBox(settings.webhook_secrets_key))

            async def retry_later(envelope: Envelope, attempt: int, delay_seconds: float) -> None:
                await broker.publish_retry(DELIVERIES_GROUP, envelope, attempt, delay_seconds)

            handlers = build_notifier(settings, store, session, broker.publish, retry_later)

            schedule = settings.webhook_retry_schedule_seconds
            # The deliveries queue first: its delay queues must exist before a first attempt made at once (while
            # storing ledger records) hands a retry to them.
            await broker.consume(
                DELIVERIES_GROUP,
                NOTIFIER_DELIVERIES.dispatcher(handlers),
                retry=RetryPolicy(len(schedule), max(1.0, schedule[1] if len(schedule) > 1 else 1.0)),
                prefetch=DELIVERY_CONCURRENCY,
            )
            # In batches: the ledger records that queued up meanwhile are stored in two statements for all of them.
            await broker.consume_batches(
                EVENTS_GROUP,
                NOTIFIER_MESSAGES.dispatcher(handlers),
                retry=RetryPolicy(8, 0.5),
                prefetch=EVENTS_PREFETCH,
                max_batch=EVENTS_BATCH,
                ready=lambda: runtime.database_answers(pool),
            )

            async def measure() -> None:
                WEBHOOK_OLDEST_UNDELIVERED_AGE.set(await store.oldest_undelivered_age())

            broker.supervisor.every("undelivered gauge", 5, measure)
            broker.watch_dlq(EVENTS_GROUP)
            broker.watch_dlq(DELIVERIES_GROUP)
            async with runtime.serving(app, broker, pool):
                yield

    app.cleanup_ctx.append(lifecycle)
    return app
