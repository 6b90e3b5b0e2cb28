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
from services.sandbox_gateway.refunds import RefundStatus, SandboxRefund
from services.sandbox_gateway.storage import SandboxStorage
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


REFUND_EVENT_TYPES: dict[RefundStatus, str] = {
    RefundStatus.SUCCEEDED: "refund.succeeded",
    RefundStatus.FAILED: "refund.failed",
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
    max_attempts: int, base_seconds: float, *, cap_seconds: float = RETRY_CAP_SECONDS, made: int = 0
) -> stamina._core._RetryContextIterator:
    """The retry loop of one webhook: waits of base, doubling, capped, plus a tenth of the base at most.

    `made`: attempts already made and failed before the loop; the loop makes the rest, its waits going on from
    where theirs left off (the wait before its first attempt is the caller's: `first_retry_wait`)."""
    return stamina.retry_context(
        on=WebhookUndelivered,
        attempts=max_attempts - made,
        timeout=None,
        wait_initial=base_seconds * 2**made,
        wait_max=cap_seconds,
        wait_jitter=base_seconds * _JITTER_SHARE,
    )


def first_retry_wait(
    base_seconds: float, *, cap_seconds: float = RETRY_CAP_SECONDS, rng: random.Random | None = None
) -> float:
    """The wait after a webhook's first attempt failed: the base plus a tenth of it at most, capped as the loop's
    waits are (the jitter inside the cap)."""
    return min(base_seconds + (rng or random).uniform(0, base_seconds * _JITTER_SHARE), cap_seconds)


@dataclass(frozen=True, slots=True)  # one per attempt, kept for the intent's delivery log
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

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "body": self.body.decode()}

    @classmethod
    def from_record(cls, body: dict[str, Any]) -> _OutgoingEvent:
        return cls(**{**body, "body": body["body"].encode()})


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
        storage: SandboxStorage | None = None,
    ) -> None:
        """`storage`: where the events still to deliver are kept, so a restart resumes them (SANDBOX_DATA_DIR)."""
        self._url = url
        self._secret = secret
        self._retry_base = retry_base_seconds
        self._max_attempts = max_attempts
        self._rng = rng
        self._tracer = tracer or trace.get_tracer(__name__)
        # The attempt's own time, from the moment it is sent: to connect, then to hear back. Not the time it waited
        # for one of this sender's connections (a burst of events queues here): that is not the receiver's to
        # answer for, and counted against it, a busy sandbox would time out and redeliver what was never sent.
        self._attempt_timeout = attempt_timeout_seconds
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=attempt_timeout_seconds, sock_read=attempt_timeout_seconds
        )
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._log: dict[str, list[DeliveryAttempt]] = {}
        self._storage = storage
        # Copies of each kept event still being delivered: its record goes once the last one is done.
        self._copies_left: dict[str, int] = {}

    async def start(self) -> None:
        """Open the HTTP session and resume the deliveries a stop interrupted (those kept in the storage)."""
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        if self._storage is not None:
            pending = [_OutgoingEvent.from_record(record.body) for record in self._storage.all("webhook")]
            if pending:
                log.info("webhook deliveries resumed after a restart", pending=len(pending))
            for outgoing in pending:
                self._schedule(outgoing, copies=1, delay=0.0)

    async def close(self) -> None:
        """Stop pending deliveries (kept in the storage, if any, for the next start) and release the session."""
        if self._tasks:
            kept = "kept for the next start" if self._storage is not None else "dropped"
            log.info(f"webhook deliveries {kept} at shutdown", pending=len(self._tasks))
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
        return self._send_event(event, intent.id, intent.payment_id, intent.metadata, faults)

    def send_refund(self, refund: SandboxRefund, *, created: int, faults: Faults) -> str:
        """Schedule the event announcing a refund's outcome (logged under its intent); returns its id."""
        event = {
            "id": new_event_id(),
            "type": REFUND_EVENT_TYPES[refund.status],
            "created": created,
            "data": {"object": refund.to_json()},
        }
        return self._send_event(event, refund.intent_id, refund.payment_id, refund.metadata, faults)

    def _send_event(
        self,
        event: dict[str, Any],
        intent_id: str,
        payment_id: str | None,
        metadata: dict[str, str],
        faults: Faults,
    ) -> str:
        outgoing = _OutgoingEvent(
            intent_id=intent_id,
            payment_id=payment_id,
            event_id=event["id"],
            event_type=event["type"],
            # The body is fixed now: retries and duplicates carry the very same bytes.
            body=json.dumps(event, separators=(",", ":")).encode(),
            trace_carrier={k: metadata[k] for k in _TRACE_KEYS if k in metadata},
        )
        copies = delivery_copies(faults, self._rng)
        if self._storage is not None:
            self._storage.put("webhook", outgoing.event_id, outgoing.to_record(), parent=intent_id)
        self._schedule(outgoing, copies=copies, delay=None, faults=faults)
        return outgoing.event_id

    def _schedule(
        self, outgoing: _OutgoingEvent, *, copies: int, delay: float | None, faults: Faults | None = None
    ) -> None:
        """Deliver `copies` of the event, each after `delay` (None: the faults' own delay)."""
        self._copies_left[outgoing.event_id] = self._copies_left.get(outgoing.event_id, 0) + copies
        for _ in range(copies):
            wait = delay if delay is not None else delay_before_first_attempt(faults or Faults(), self._rng)
            task = asyncio.create_task(self._deliver(outgoing, wait))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _copy_done(self, event_id: str) -> None:
        """A copy was delivered or abandoned: the event is forgotten once every copy is."""
        left = self._copies_left.get(event_id, 1) - 1
        if left > 0:
            self._copies_left[event_id] = left
            return
        self._copies_left.pop(event_id, None)
        if self._storage is not None:
            self._storage.delete("webhook", event_id)

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
            # The first attempt is made outside the retry loop, which only an event it failed needs: stamina's
            # loop is a dozen tenacity objects in reference cycles, and one loop an event was all the garbage
            # the sandbox made, its collections pausing everything it serves for 100 to 600 ms under load.
            if not await self._attempt_logged(event, 1, bound):
                if self._max_attempts <= 1:
                    raise WebhookUndelivered("one attempt allowed")
                await asyncio.sleep(first_retry_wait(self._retry_base, rng=self._rng))
                async for attempt in webhook_retries(self._max_attempts, self._retry_base, made=1):
                    with attempt:
                        if not await self._attempt_logged(event, attempt.num + 1, bound):
                            raise WebhookUndelivered(f"attempt {attempt.num + 1} failed")
            self._copy_done(event.event_id)
        except WebhookUndelivered:
            bound.warning("webhook abandoned", attempts=self._max_attempts)
            self._copy_done(event.event_id)
        except asyncio.CancelledError:
            raise  # a stop: the kept event is delivered after the next start
        except Exception:
            bound.exception("webhook delivery crashed")
            self._copy_done(event.event_id)
        finally:
            otel_context.detach(token)

    async def _attempt_logged(self, event: _OutgoingEvent, attempt: int, bound: Any) -> bool:
        """One attempt, kept in the intent's delivery log, counted and logged; True if it was delivered."""
        outcome = await self._attempt(event, attempt)
        self._log.setdefault(event.intent_id, []).append(outcome)
        if outcome.error is not None:
            SANDBOX_WEBHOOK_ATTEMPTS.labels("refused" if outcome.status is not None else "unreachable").inc()
            bound.info("webhook attempt failed", attempt=attempt, status=outcome.status, error=outcome.error)
            return False
        SANDBOX_WEBHOOK_ATTEMPTS.labels("delivered").inc()
        bound.info("webhook delivered", attempt=attempt, status=outcome.status)
        return True

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
                error = f"no answer within {self._attempt_timeout:g} s"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
        return DeliveryAttempt(event.event_id, event.event_type, attempt, sent_at, status, error)
