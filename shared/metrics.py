"""Every Prometheus metric Paystream exports, defined once (names follow Prometheus conventions).

Each service exports only the metrics it owns (`SERVICE_METRICS`), through a registry of its own
(`service_registry`); Prometheus adds `job`/`instance` per service. Every metric is also in the default
registry, where unit and integration tests read values.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.registry import Collector

# Seconds buckets for a payment's life: a customer takes seconds to minutes on the hosted page.
_COMPLETION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

PAYMENTS_CREATED = Counter("paystream_payments_created", "Payments accepted by the intake API (new Idempotency-Keys).")
PAYMENTS_COMPLETED = Counter(
    "paystream_payments_completed", "Payments that reached a terminal status, by status.", ["status"]
)
PAYMENT_COMPLETION_SECONDS = Histogram(
    "paystream_payment_completion_seconds",
    "Time from a payment's creation to its terminal status, by that status "
    "(EXPIRED ones take the whole TTL: look at SUCCEEDED for the customers' experience).",
    ["status"],
    buckets=_COMPLETION_BUCKETS,
)
PAYMENTS_PENDING = Gauge("paystream_payments_pending", "Payments currently PENDING in the ledger.")
PAYMENTS_PENDING_OLDEST_AGE = Gauge(
    "paystream_payments_pending_oldest_age_seconds", "Age of the oldest PENDING payment in the ledger."
)
LATE_SUCCESSES = Counter(
    "paystream_late_successes", "Gateway-confirmed successes applied over FAILED, CANCELED or EXPIRED."
)
AMOUNT_MISMATCHES = Counter(
    "paystream_amount_mismatches", "Provider events whose amount or currency differ from the payment's."
)
WEBHOOKS_RECEIVED = Counter(
    "paystream_webhooks_received",
    "Webhook deliveries by provider and outcome "
    "(accepted, invalid_signature, invalid_event, too_large, ignored, broker_unavailable).",
    ["provider", "outcome"],
)
OUTBOX_PENDING = Gauge("paystream_outbox_pending", "Outbox rows not yet confirmed by the broker.")
OUTBOX_OLDEST_AGE = Gauge(
    "paystream_outbox_oldest_pending_age_seconds", "Age of the oldest outbox row not yet published."
)
OUTBOX_PUBLISHED = Counter("paystream_outbox_published", "Outbox rows published and confirmed.")
HTTP_REQUEST_DURATION = Histogram(
    "paystream_http_request_duration_seconds",
    "HTTP requests served, by method, route and status code.",
    ["method", "route", "status"],
    buckets=_FAST_BUCKETS,
)
EVENTS_PROCESSED = Counter(
    "paystream_events_processed",
    "Broker messages handled, by consumer, message type and outcome (handled, retried, dead_lettered, requeued).",
    ["consumer", "event_type", "outcome"],
)
EVENT_PROCESSING_SECONDS = Histogram(
    "paystream_event_processing_seconds",
    "Time to handle one broker message, by consumer and message type.",
    ["consumer", "event_type"],
    buckets=_FAST_BUCKETS,
)
MESSAGE_RETRIES = Counter(
    "paystream_message_retries", "Messages sent to a delay queue for a later retry.", ["consumer", "event_type"]
)
LOOP_RESTARTS = Counter(
    "paystream_loop_restarts",
    "Long-running loops (consumers, relays, sweeps, watchers) restarted by their process's supervisor after a "
    "failure, by loop (shared/supervisor.py).",
    ["loop"],
)
DLQ_MESSAGES = Gauge("paystream_dlq_messages", "Messages waiting in a dead-letter queue.", ["queue"])
GATEWAY_REQUEST_DURATION = Histogram(
    "paystream_gateway_request_duration_seconds",
    "Calls to a payment provider, by provider, operation and outcome.",
    ["provider", "operation", "outcome"],
    buckets=_FAST_BUCKETS,
)
GATEWAY_ERRORS = Counter(
    "paystream_gateway_errors",
    "Failed provider calls by provider, operation and kind.",
    ["provider", "operation", "kind"],
)
AUTHORIZATIONS_OPEN = Gauge(
    "paystream_authorizations_open", "Manual-capture payments AUTHORIZED in the ledger: money held, not yet taken."
)
AUTHORIZATIONS_EXPIRING_SOON = Gauge(
    "paystream_authorizations_expiring_soon",
    "AUTHORIZED payments in the last seventh of their hold (the last day of the default 7): capture or void them "
    "before AUTHORIZATION_TTL_SECONDS voids them.",
)
AUTHORIZATIONS_CLOSED = Counter(
    "paystream_authorizations_closed",
    "Holds the ledger saw end, by outcome (captured, voided, expired).",
    ["outcome"],
)
AMOUNT_CAPTURED = Counter(
    "paystream_authorization_amount_captured",
    "Minor units taken by captures of held payments, by currency (beside the amount held, it shows partial captures).",
    ["currency"],
)
EXPIRATIONS_REQUESTED = Counter("paystream_expirations_requested", "Expiration commands sent by the sweep.")
RECONCILIATIONS_REQUESTED = Counter(
    "paystream_reconciliations_requested", "Reconciliation commands sent for payments with no outcome."
)
SANDBOX_WEBHOOK_ATTEMPTS = Counter(
    "paystream_sandbox_webhook_attempts",
    "Webhook delivery attempts by the sandbox gateway, by outcome (delivered, refused, unreachable).",
    ["outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "paystream_webhook_deliveries",
    "Merchant webhook delivery attempts by outcome (delivered; failed: retried later; gave_up: schedule exhausted; "
    "endpoint_disabled: the endpoint failed too long and was disabled).",
    ["outcome"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "paystream_webhook_attempt_duration_seconds",
    "Time of one merchant webhook delivery attempt, by outcome.",
    ["outcome"],
    buckets=_FAST_BUCKETS,
)
WEBHOOK_OLDEST_UNDELIVERED_AGE = Gauge(
    "paystream_webhook_oldest_undelivered_age_seconds",
    "Age of the oldest merchant event still waiting to be delivered to one of its endpoints (0 when none).",
)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "paystream_webhook_endpoints_disabled", "Merchant webhook endpoints disabled after failing too long."
)

REFUNDS = Counter(
    "paystream_refunds",
    "Refunds recorded by the ledger, by the status they reached (pending: accepted; succeeded; failed).",
    ["status"],
)
REFUND_AMOUNT = Counter(
    "paystream_refund_amount",
    "Sum of the refunds' amounts in minor units (of any currency), by the status they reached.",
    ["status"],
)
REFUND_COMPLETION_SECONDS = Histogram(
    "paystream_refund_completion_seconds",
    "Time from a refund's acceptance to its final status, by that status.",
    ["status"],
    buckets=_COMPLETION_BUCKETS,
)
REFUND_CONTRADICTIONS = Counter(
    "paystream_refund_contradictions",
    "Provider outcomes that contradict a refund's final status (logged as ignored; review them).",
)
REFUNDS_PENDING = Gauge("paystream_refunds_pending", "Refunds currently pending in the ledger.")
REFUNDS_PENDING_OLDEST_AGE = Gauge(
    "paystream_refunds_pending_oldest_age_seconds", "Age of the oldest pending refund in the ledger (0 when none)."
)
REFUND_RECONCILIATIONS_REQUESTED = Counter(
    "paystream_refund_reconciliations_requested", "Reconciliation commands sent for refunds still pending."
)
REFUNDS_REQUESTED = Counter(
    "paystream_refunds_requested",
    "Refund requests answered by the intake API, by outcome (accepted, exceeds_refundable, not_refundable).",
    ["outcome"],
)

_CONSUMER = (EVENTS_PROCESSED, EVENT_PROCESSING_SECONDS)
_RETRYING_CONSUMER = (*_CONSUMER, MESSAGE_RETRIES, DLQ_MESSAGES)

# Who owns what (the README's metric-by-service table): a service exports these and nothing else.
SERVICE_METRICS: Mapping[str, tuple[Collector, ...]] = {
    "intake_api": (
        PAYMENTS_CREATED,
        REFUNDS_REQUESTED,
        OUTBOX_PENDING,
        OUTBOX_OLDEST_AGE,
        OUTBOX_PUBLISHED,
        *_CONSUMER,
    ),
    "gateway_worker": (GATEWAY_REQUEST_DURATION, GATEWAY_ERRORS, AMOUNT_MISMATCHES, *_RETRYING_CONSUMER),
    "webhook_receiver": (WEBHOOKS_RECEIVED,),
    "ledger": (
        PAYMENTS_COMPLETED,
        PAYMENT_COMPLETION_SECONDS,
        PAYMENTS_PENDING,
        PAYMENTS_PENDING_OLDEST_AGE,
        LATE_SUCCESSES,
        AMOUNT_MISMATCHES,
        EXPIRATIONS_REQUESTED,
        RECONCILIATIONS_REQUESTED,
        AUTHORIZATIONS_OPEN,
        AUTHORIZATIONS_EXPIRING_SOON,
        AUTHORIZATIONS_CLOSED,
        AMOUNT_CAPTURED,
        REFUNDS,
        REFUND_AMOUNT,
        REFUND_COMPLETION_SECONDS,
        REFUND_CONTRADICTIONS,
        REFUNDS_PENDING,
        REFUNDS_PENDING_OLDEST_AGE,
        REFUND_RECONCILIATIONS_REQUESTED,
        *_RETRYING_CONSUMER,
    ),
    "notifier": (
        WEBHOOK_DELIVERIES,
        WEBHOOK_ATTEMPT_SECONDS,
        WEBHOOK_OLDEST_UNDELIVERED_AGE,
        WEBHOOK_ENDPOINTS_DISABLED,
        *_RETRYING_CONSUMER,
    ),
    "sandbox_gateway": (SANDBOX_WEBHOOK_ATTEMPTS,),
    "storefront": (),
}
# Every HTTP service times its requests, and every process reports its own CPU, memory and GC.
# Every process supervises its loops and counts their restarts.
_EVERY_SERVICE: tuple[Collector, ...] = (
    HTTP_REQUEST_DURATION,
    LOOP_RESTARTS,
    PROCESS_COLLECTOR,
    PLATFORM_COLLECTOR,
    GC_COLLECTOR,
)


def service_registry(service: str) -> CollectorRegistry:
    """A registry holding only `service`'s own metrics, for its GET /metrics."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in (*SERVICE_METRICS.get(service, ()), *_EVERY_SERVICE):
        registry.register(collector)
    return registry
