"""Webhook delivery: one signed event per change of an intent's status, sent in the background, retried with backoff.

Each attempt runs in a span whose parent is the payment's trace context (carried in the intent's metadata),
so the delivery and everything the receiver does join the payment's trace.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import stamina
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from services.sandbox_gateway.faults import Faults, delay_before_first_attempt, delivery_copies
from services.sandbox_gateway.intents import Intent, IntentStatus
from shared.logs import get_logger
from shared.metrics import SANDBOX_WEBHOOK_ATTEMPTS
from shared.providers.base import signature_header
from shared.telemetry import extract_context, inject_context

log = get_logger(__name__)

SIGNATURE_HEADER = "Paystream-Signature"
RETRY_CAP_SECONDS = 60.0
ATTEMPT_TIMEOUT_SECONDS = 10.0
# Jitter spreads retries of many events that failed together; a tenth of the delay is enough.
_JITTER_SHARE = 0.1
_TRACE_KEYS = ("traceparent", "tracestate")

EVENT_TYPES: dict[IntentStatus, str] = {
    IntentStatus.AUTHORIZED: "payment.authorized",
    IntentStatus.SUCCEEDED: "payment.succeeded",
    IntentStatus.FAILED: "payment.failed",
    IntentStatus.CANCELED: "payment.canceled",
    IntentStatus.EXPIRED: "payment.expired",
}


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def event_type(intent: Intent) -> str:
    """What an intent's new status is announced as: a held intent's capture is `payment.captured`."""
    if intent.status is IntentStatus.SUCCEEDED and intent.capture_method == "manual":
        return "payment.captured"
    return EVENT_TYPES[intent.status]


def build_event(intent: Intent, *, created: int, event_id: str | None = None) -> dict[str, Any]:
    """The webhook body announcing that an intent reached its status (docs/reference/provider-webhooks.md)."""
    return {
        "id": event_id or new_event_id(),
        "type": event_type(intent),
        "created": created,
        "data": {"object": intent.to_json()},
    }


class WebhookUndelivered(Exception):
    """One delivery attempt was refused or not answered: try again after a backoff."""


def webhook_retries(
    max_attempts: int, base_seconds: float, *, cap_seconds: float = RETRY_CAP_SECONDS
) -> stamina._core._RetryContextIterator:
    """The retry loop of one webhook: waits of base, doubling, capped, plus a tenth of the base at most."""
    return stamina.retry_context(
        on=WebhookUndelivered,
        attempts=max_attempts,
        timeout=None,
        wait_initial=base_seconds,
        wait_max=cap_seconds,
        wait_jitter=base_seconds * _JITTER_SHARE,
    )


@dataclass(frozen=True)
class DeliveryAttempt:
    """One HTTP attempt at delivering one event, as the delivery log shows it."""

    event_id: str
    type: str
    attempt: int
    sent_at: str
    status: int | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _OutgoingEvent:
    intent_id: str
    payment_id: str | None
    event_id: str
    event_type: str
    body: bytes
    trace_carrier: dict[str, str]


def _utc_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WebhookSender:
    """Delivers events to the webhook URL in background tasks and keeps a log of every attempt."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        retry_base_seconds: float,
        max_attempts: int,
        rng: random.Random,
        tracer: trace.Tracer | None = None,
        attempt_timeout_seconds: float = ATTEMPT_TIMEOUT_SECONDS,
    ) -> None:
        self._url = url
        self._secret = secret
        self._retry_base = retry_base_seconds
        self._max_attempts = max_attempts
        self._rng = rng
        self._tracer = tracer or trace.get_tracer(__name__)
        self._timeout = aiohttp.ClientTimeout(total=attempt_timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._log: dict[str, list[DeliveryAttempt]] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        """Stop pending deliveries (the sandbox keeps nothing across restarts) and release the session."""
        if self._tasks:
            log.info("webhook deliveries dropped at shutdown", pending=len(self._tasks))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def attempts(self, intent_id: str) -> list[DeliveryAttempt]:
        return list(self._log.get(intent_id, []))

    def send(self, intent: Intent, *, created: int, faults: Faults) -> str:
        """Schedule the event announcing the intent's status, under the faults in force; returns its id."""
        event = build_event(intent, created=created)
        outgoing = _OutgoingEvent(
            intent_id=intent.id,
            payment_id=intent.payment_id,
            event_id=event["id"],
            event_type=event["type"],
            # The body is fixed now: retries and duplicates carry the very same bytes.
            body=json.dumps(event, separators=(",", ":")).encode(),
            trace_carrier={k: intent.metadata[k] for k in _TRACE_KEYS if k in intent.metadata},
        )
        for _ in range(delivery_copies(faults, self._rng)):
            task = asyncio.create_task(self._deliver(outgoing, delay_before_first_attempt(faults, self._rng)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return outgoing.event_id

    async def _deliver(self, event: _OutgoingEvent, delay: float) -> None:
        bound = log.bind(
            intent_id=event.intent_id,
            payment_id=event.payment_id,
            event_id=event.event_id,
            event_type=event.event_type,
        )
        # The task runs in the payment's trace, not in that of the request which happened to close the intent.
        token = otel_context.attach(extract_context(event.trace_carrier))
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            async for attempt in webhook_retries(self._max_attempts, self._retry_base):
                with attempt:
                    outcome = await self._attempt(event, attempt.num)
                    self._log.setdefault(event.intent_id, []).append(outcome)
                    if outcome.error is not None:
                        SANDBOX_WEBHOOK_ATTEMPTS.labels(
                            "refused" if outcome.status is not None else "unreachable"
                        ).inc()
                        bound.info(
                            "webhook attempt failed", attempt=attempt.num, status=outcome.status, error=outcome.error
                        )
                        raise WebhookUndelivered(outcome.error)
                    SANDBOX_WEBHOOK_ATTEMPTS.labels("delivered").inc()
                    bound.info("webhook delivered", attempt=attempt.num, status=outcome.status)
        except WebhookUndelivered:
            bound.warning("webhook abandoned", attempts=self._max_attempts)
        except asyncio.CancelledError:
            raise
        except Exception:
            bound.exception("webhook delivery crashed")
        finally:
            otel_context.detach(token)

    async def _attempt(self, event: _OutgoingEvent, attempt: int) -> DeliveryAttempt:
        """One POST of the event, in a span continuing the payment's trace; an error unless answered 2xx."""
        if self._session is None:
            raise RuntimeError("WebhookSender.start() was not called")
        status: int | None = None
        error: str | None = None
        with self._tracer.start_as_current_span(
            "sandbox webhook delivery",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "sandbox.intent_id": event.intent_id,
                "sandbox.event_id": event.event_id,
                "sandbox.event_type": event.event_type,
                "sandbox.attempt": attempt,
                **({"payment.id": event.payment_id} if event.payment_id else {}),
            },
        ) as span:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "Paystream-Sandbox/1",
                SIGNATURE_HEADER: signature_header(self._secret, event.body),
            }
            # The aiohttp client instrumentation, when installed, replaces this with its own child span's.
            inject_context(headers)
            sent_at = _utc_iso()
            try:
                async with self._session.post(self._url, data=event.body, headers=headers) as response:
                    status = response.status
                    if not 200 <= status < 300:
                        error = f"answered {status}: {(await response.text())[:200]}"
            except TimeoutError:
                error = f"no answer within {self._timeout.total:g} s"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
        return DeliveryAttempt(event.event_id, event.event_type, attempt, sent_at, status, error)
