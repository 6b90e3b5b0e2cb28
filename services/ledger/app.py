"""Wiring of the ledger: consume every payment event into the tables, run the expiry and reconciliation sweeps."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.ledger.handlers import LEDGER_MESSAGES, LedgerHandlers
from services.ledger.outcomes import status_recorded_before
from services.ledger.postgres_store import PostgresLedgerStore
from services.ledger.refunds import RefundRecorder
from services.ledger.settings import LedgerSettings
from services.ledger.sweeps import (
    measure_authorizations,
    measure_pending,
    measure_pending_refunds,
    request_expirations,
    request_reconciliations,
    request_refund_reconciliations,
)
from shared import runtime
from shared.broker import RetryPolicy
from shared.consumers import CONSUMER_GROUPS
from shared.web import create_base_app

GROUP = LEDGER_MESSAGES.name
# The most events written in one batch, and how many the broker may hand out ahead (the next batch or two).
BATCH = 100
LEDGER_PREFETCH = 300


def retry_policy(settings: LedgerSettings) -> RetryPolicy:
    """How long an event for a payment not yet known waits (LEDGER_RETRY_*) before it is dead-lettered."""
    return RetryPolicy(settings.ledger_retry_attempts, settings.ledger_retry_base_seconds)


def create_app(settings: LedgerSettings) -> web.Application:
    app = create_base_app()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with (
            runtime.database(settings, "ledger") as pool,
            runtime.broker(settings, GROUP, CONSUMER_GROUPS) as broker,
        ):
            store = PostgresLedgerStore(pool, authorization_ttl_seconds=settings.authorization_ttl_seconds)
            handlers = LedgerHandlers(
                store,
                broker.publish,
                lambda envelope: status_recorded_before(store, envelope),
                refunds=RefundRecorder(pool, broker.publish),
                publish_bundle=broker.publish_bundle,
            )
            # In batches: what queued up while the last batch was written goes in the next (a few statements).
            await broker.consume_batches(
                GROUP,
                LEDGER_MESSAGES.dispatcher(handlers),
                retry=retry_policy(settings),
                prefetch=LEDGER_PREFETCH,
                max_batch=BATCH,
                ready=lambda: runtime.database_answers(pool),
            )
            # A payment is re-sent its expiration only if nothing came of the last one for a while.
            resend_after = max(30.0, 6 * settings.expiry_sweep_interval_seconds)
            interval = settings.expiry_sweep_interval_seconds
            loops = broker.supervisor
            loops.every(
                "expiry sweep", interval, lambda: request_expirations(store, broker, resend_after_seconds=resend_after)
            )
            loops.every(
                "reconciliation sweep",
                interval,
                lambda: request_reconciliations(
                    store,
                    broker,
                    older_than_seconds=settings.reconcile_after_seconds,
                    every_seconds=settings.reconcile_interval_seconds,
                ),
            )
            # A refund still pending after RECONCILE_AFTER_SECONDS is looked up at the provider (or submitted again).
            loops.every(
                "refund reconciliation sweep",
                interval,
                lambda: request_refund_reconciliations(
                    store,
                    broker,
                    older_than_seconds=settings.reconcile_after_seconds,
                    every_seconds=settings.reconcile_interval_seconds,
                ),
            )
            loops.every("pending gauge", 15, lambda: measure_pending(store))
            loops.every("authorization gauges", 15, lambda: measure_authorizations(store))
            loops.every("pending refunds gauge", 15, lambda: measure_pending_refunds(store))
            broker.watch_dlq(GROUP)
            async with runtime.serving(app, broker, pool):
                yield

    app.cleanup_ctx.append(lifecycle)
    return app
