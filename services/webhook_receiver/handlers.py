"""Receiving a provider's webhook: verify the raw bytes, map the event, publish it confirmed, then answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from opentelemetry import trace

from shared.events import Envelope, Message, PaymentStatusChanged, RefundStatusChanged, deterministic_event_id
from shared.logs import bind_payment, get_logger
from shared.metrics import WEBHOOKS_RECEIVED
from shared.providers.base import PaymentProvider, RefundWebhookEvent, WebhookEvent
from shared.providers.errors import InvalidWebhookError, SignatureError
from shared.telemetry import trace_parent

log = get_logger(__name__)
_tracer = trace.get_tracer(__name__)


class WebhookRejected(Exception):
    """The webhook is refused (400); nothing was published."""


class BrokerUnavailable(Exception):
    """The event could not be confirmed by the broker (503, so the provider retries)."""


@dataclass(frozen=True)
class WebhookResult:
    outcome: str  # accepted | ignored
    event_id: str | None = None
    payment_id: str | None = None


def status_change(provider: str, event: WebhookEvent | RefundWebhookEvent) -> Message:
    """The provider's event as ours: a payment's or a refund's status change."""
    if isinstance(event, RefundWebhookEvent):
        return RefundStatusChanged(
            refund_id=event.refund_id,
            status=event.status,
            provider=provider,
            provider_refund_id=event.provider_refund_id,
            provider_event_id=event.provider_event_id,
            failure_code=event.failure_code,
            amount=event.amount,
            currency=event.currency,
        )
    return PaymentStatusChanged(
        status=event.status,
        provider=provider,
        provider_payment_id=event.provider_payment_id if event.names_intent else None,
        provider_event_id=event.provider_event_id,
        failure_code=event.failure_code,
        amount=event.amount,
        currency=event.currency,
        amount_captured=event.amount_captured,
    )


def _our_event(provider: PaymentProvider, event: WebhookEvent | RefundWebhookEvent) -> Envelope:
    """The provider's event as ours, already serialised once: content that cannot travel (a lone surrogate,
    say) is the sender's error and raises ValueError here, before the publish, whose failures mean an outage."""
    envelope = Envelope.wrap(
        status_change(provider.name, event),
        payment_id=event.payment_id,
        source="webhook",
        # The provider's event id makes ours: a redelivered webhook is the same event to the ledger.
        event_id=deterministic_event_id(provider.name, event.provider_event_id),
        occurred_at=event.occurred_at,
    )
    envelope.to_bytes()
    return envelope


async def receive_webhook(
    provider: PaymentProvider,
    headers: Mapping[str, str],
    body: bytes,
    publish: Callable[[Envelope], Awaitable[None]],
) -> WebhookResult:
    """The whole rule of docs/reference/provider-webhooks.md; raises WebhookRejected or BrokerUnavailable."""
    try:
        provider.verify_webhook_source(headers, body)
    except SignatureError as exc:
        WEBHOOKS_RECEIVED.labels(provider.name, "invalid_signature").inc()
        raise WebhookRejected(f"signature check failed: {exc}") from exc
    try:
        event = provider.parse_webhook(body)
    except InvalidWebhookError as exc:
        WEBHOOKS_RECEIVED.labels(provider.name, "invalid_event").inc()
        raise WebhookRejected(f"not a valid event: {exc}") from exc
    if event is None:
        WEBHOOKS_RECEIVED.labels(provider.name, "ignored").inc()
        return WebhookResult(outcome="ignored")

    try:
        envelope = _our_event(provider, event)
    except ValueError as exc:
        WEBHOOKS_RECEIVED.labels(provider.name, "invalid_event").inc()
        raise WebhookRejected(f"not a valid event: {exc}") from exc
    bind_payment(event.payment_id)
    # The payment's trace context travelled through the provider in the intent's metadata.
    parent, links = trace_parent(event.metadata)
    kind = "refund " if isinstance(event, RefundWebhookEvent) else ""
    with _tracer.start_as_current_span(
        f"webhook {provider.name} {kind}{event.status.value}",
        context=parent,
        links=links,
        attributes={
            "payment.id": event.payment_id,
            "paystream.event_type": envelope.type,
            "paystream.provider_event_id": event.provider_event_id,
        },
    ):
        try:
            await publish(envelope)
        except Exception as exc:
            WEBHOOKS_RECEIVED.labels(provider.name, "broker_unavailable").inc()
            log.warning("webhook not confirmed by the broker", error=f"{type(exc).__name__}: {exc}")
            raise BrokerUnavailable(str(exc)) from exc
    WEBHOOKS_RECEIVED.labels(provider.name, "accepted").inc()
    log.info(
        "webhook accepted",
        payment_id=event.payment_id,
        status=event.status.value,
        provider_event_id=event.provider_event_id,
    )
    return WebhookResult(outcome="accepted", event_id=str(envelope.id), payment_id=event.payment_id)
