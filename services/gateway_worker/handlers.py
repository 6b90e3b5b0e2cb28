"""The gateway_worker's rules: open intents, capture and void holds, and ask the provider for the truth on cancel,
expiry and reconciliation. The provider is always asked first; what is published is what it then says is true.
Handlers take the envelope plus their dependencies; the broker and provider stay at the edge."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, TypeVar

from opentelemetry import trace

from shared.broker import Delivery, PoisonMessage, RetryLater
from shared.events import (
    CancelPayment,
    CapturePayment,
    Envelope,
    ExpirePayment,
    PaymentIntentCreated,
    PaymentIntentFailed,
    PaymentRequested,
    PaymentStatus,
    PaymentStatusChanged,
    ReconcilePayment,
    ReconcileRefund,
    RefundRequested,
    RefundStatus,
    RefundStatusChanged,
    RefundSubmitted,
    Source,
    deterministic_event_id,
)
from shared.logs import get_logger
from shared.metrics import AMOUNT_MISMATCHES, GATEWAY_ERRORS, GATEWAY_REQUEST_DURATION
from shared.providers.base import (
    CapturingProvider,
    IntentRequest,
    PaymentProvider,
    ProviderIntent,
    ProviderRefund,
    RefundingProvider,
    RefundRequest,
)
from shared.providers.errors import NoSuchIntentError, PermanentGatewayError, TransientGatewayError
from shared.registry import MessageRegistry, Received

log = get_logger(__name__)
AUTHORIZATION_EXPIRED = "authorization_expired"
_tracer = trace.get_tracer(__name__)
T = TypeVar("T")


class Publish(Protocol):
    """The broker's publish: `also_to` names reply routing keys the one publish reaches as well."""

    def __call__(self, envelope: Envelope, *, also_to: Sequence[str] = ...) -> Awaitable[None]: ...


def _replies(delivery: Delivery) -> tuple[str, ...]:
    """Where the outcome goes besides its subscribers: the process waiting for it, if one said so."""
    return (delivery.reply_to,) if delivery.reply_to else ()


async def observe_provider_call(provider: PaymentProvider, operation: str, call: Callable[[], Awaitable[T]]) -> T:
    """One provider call, timed and counted, inside a span of its own."""
    started = time.perf_counter()
    outcome = "ok"
    with _tracer.start_as_current_span(
        f"{provider.name} {operation}", kind=trace.SpanKind.CLIENT, attributes={"paystream.provider": provider.name}
    ):
        try:
            return await call()
        except TransientGatewayError:
            outcome = "transient_error"
            raise
        except PermanentGatewayError:
            outcome = "permanent_error"
            raise
        finally:
            GATEWAY_REQUEST_DURATION.labels(provider.name, operation, outcome).observe(time.perf_counter() - started)
            if outcome != "ok":
                GATEWAY_ERRORS.labels(provider.name, operation, outcome.removesuffix("_error")).inc()


async def retrying_provider_call(provider: PaymentProvider, operation: str, call: Callable[[], Awaitable[T]]) -> T:
    """An observed provider call whose transient failure the broker retries later (RetryLater); a permanent one
    is the caller's to judge."""
    try:
        return await observe_provider_call(provider, operation, call)
    except TransientGatewayError as exc:
        raise RetryLater(str(exc)) from exc


@dataclass
class GatewayHandlers:
    """The gateway_worker's dependencies and handlers; GATEWAY_MESSAGES (below) says which handles what."""

    providers: dict[str, PaymentProvider]
    default_provider: str
    publish: Publish
    # merchant_id -> display name (MERCHANT_NAMES); a merchant without one is shown by its id.
    merchant_names: Mapping[str, str] = field(default_factory=dict)

    def _provider(self, name: str | None) -> PaymentProvider:
        chosen = name or self.default_provider
        try:
            return self.providers[chosen]
        except KeyError:
            # No retry can make a provider appear: the message waits in the DLQ for an operator.
            raise PoisonMessage(f"no provider {chosen!r} is configured in this gateway_worker") from None

    async def open_intent(self, received: Received[PaymentRequested]) -> None:
        envelope, message, delivery = received.envelope, received.message, received.delivery
        provider = self._provider(None)
        request = IntentRequest(
            payment_id=envelope.payment_id,
            amount=message.amount,
            currency=message.currency,
            reference=message.reference,
            return_url=message.return_url,
            cancel_url=message.cancel_url,
            expires_at=message.expires_at,
            description=message.description,
            customer_email=message.customer_email,
            merchant_name=self.merchant_names.get(message.merchant_id, message.merchant_id),
            # The trace context rides with the intent, so the provider's webhook joins this trace. It is the
            # message's own (not this attempt's span), so a retry sends the provider identical parameters.
            metadata=delivery.trace_headers,
            capture_method=message.capture_method,
        )
        if message.capture_method == "manual" and not isinstance(provider, CapturingProvider):
            # Opening an intent that takes the money at once would break the shop's promise to its customer.
            await self._intent_failed(
                envelope,
                delivery,
                provider.name,
                f"the {provider.name} provider cannot hold a payment for a later capture",
                failure_code="capture_method_unsupported",
            )
            return
        try:
            intent = await observe_provider_call(provider, "create_intent", lambda: provider.create_intent(request))
        except TransientGatewayError as exc:
            if not delivery.is_last_attempt:
                raise RetryLater(str(exc)) from exc
            await self._intent_failed(envelope, delivery, provider.name, f"retries exhausted: {exc}")
            return
        except PermanentGatewayError as exc:
            await self._intent_failed(envelope, delivery, provider.name, str(exc))
            return
        if (intent.amount, intent.currency.upper()) != (message.amount, message.currency.upper()):
            # An intent for another sum must never reach the customer: the payment fails, for review.
            AMOUNT_MISMATCHES.inc()
            await self._intent_failed(
                envelope,
                delivery,
                provider.name,
                f"the provider opened the intent for {intent.amount} {intent.currency}, "
                f"not {message.amount} {message.currency}",
                failure_code="amount_mismatch",
            )
            return
        if not intent.checkout_url:
            await self._intent_failed(envelope, delivery, provider.name, "provider returned no checkout URL")
            return
        created = PaymentIntentCreated(
            provider=provider.name, provider_payment_id=intent.provider_payment_id, checkout_url=intent.checkout_url
        )
        await self.publish(
            Envelope.wrap(
                created,
                payment_id=envelope.payment_id,
                source="gateway",
                event_id=deterministic_event_id(envelope.payment_id, "intent_created", intent.provider_payment_id),
            ),
            also_to=_replies(delivery),
        )
        log.info("intent created", provider_payment_id=intent.provider_payment_id)

    async def _intent_failed(
        self, envelope: Envelope, delivery: Delivery, provider: str, reason: str, *, failure_code: str = "gateway_error"
    ) -> None:
        log.warning("intent could not be created", reason=reason, failure_code=failure_code)
        failed = PaymentIntentFailed(provider=provider, failure_code=failure_code, reason=reason[:500])
        await self.publish(
            Envelope.wrap(
                failed,
                payment_id=envelope.payment_id,
                source="gateway",
                event_id=deterministic_event_id(envelope.payment_id, "intent_failed"),
            ),
            also_to=_replies(delivery),
        )

    async def close_intent(self, received: Received[CancelPayment | ExpirePayment]) -> None:
        """Cancel or expire: ask the provider to close the intent (voiding a hold), then publish what it says is
        true."""
        envelope, command = received.envelope, received.message
        expiring = isinstance(command, ExpirePayment)
        hold = isinstance(command, ExpirePayment) and command.authorization
        source: Source = "expiry" if expiring else "gateway"
        wanted = PaymentStatus.EXPIRED if expiring else PaymentStatus.CANCELED
        close_as: Literal["canceled", "expired"] = "expired" if expiring else "canceled"
        provider_payment_id = command.provider_payment_id
        provider = self._provider(command.provider)
        if provider_payment_id is None:
            # The sender did not know of an intent, but one may exist (the ledger had not yet recorded it):
            # the provider, asked by our payment id, is the one to say.
            try:
                found = await retrying_provider_call(
                    provider, "find_intent", lambda: provider.find_intent(envelope.payment_id)
                )
            except PermanentGatewayError as exc:
                log.warning("the provider could not look up the payment's intent", error=str(exc)[:300])
                found = None
            if found is None:
                # No intent was made, so nothing can be paid: the payment closes on our side alone.
                await self._status(envelope.payment_id, source, wanted, provider.name, None, None)
                return
            provider_payment_id = found.provider_payment_id
        intent_id = provider_payment_id
        try:
            intent = await retrying_provider_call(
                provider, "cancel_intent", lambda: provider.cancel_intent(intent_id, reason=close_as)
            )
        except NoSuchIntentError as exc:
            # A final answer, not a refusal: the provider has no such intent (it lost it, or never made it), so
            # nothing can be paid through it and the payment closes on our side, recorded as asked.
            log.info("the provider has no such intent; the payment closes on our side", error=str(exc)[:300])
            failure_code = AUTHORIZATION_EXPIRED if hold else None
            await self._status(envelope.payment_id, source, wanted, provider.name, provider_payment_id, failure_code)
            return
        except PermanentGatewayError as exc:
            if hold:
                # A hold the provider will not void is still money held: our record follows the provider, so the
                # payment stays AUTHORIZED and an operator looks at the dead-lettered command.
                raise PoisonMessage(f"the provider refused to void the expired hold: {exc}") from exc
            if wanted is PaymentStatus.EXPIRED:
                # The TTL is ours to enforce: with no answer from the provider the payment still expires
                # (a success the provider reports later wins anyway, as money moved).
                log.warning("provider refused to expire the intent; expiring on our side", error=str(exc)[:300])
                await self._status(envelope.payment_id, source, wanted, provider.name, provider_payment_id, None)
                return
            # A cancel the provider refuses is not a cancel: the payment stays open and expires at its TTL.
            raise PoisonMessage(f"the provider refused to cancel: {exc}") from exc
        if intent.status is PaymentStatus.PENDING:
            raise RetryLater("the provider still shows the intent open")
        if intent.status is PaymentStatus.AUTHORIZED:
            raise RetryLater("the provider still holds the payment")
        if hold and intent.status is PaymentStatus.EXPIRED and intent.failure_code in (None, "expired"):
            # A lapsed hold says so, whatever words the provider has for it.
            intent = replace(intent, failure_code=AUTHORIZATION_EXPIRED)
        await self._publish_truth(envelope.payment_id, source, provider.name, intent)

    async def capture(self, received: Received[CapturePayment]) -> None:
        """Take all or part of a hold: the provider is asked first (with the capture's idempotency key, so a retry
        never takes twice), then what it says is true is published. A void or an expiry that reached the provider
        first is that truth; a second capture finds the first one's.
        """
        envelope, command = received.envelope, received.message
        provider = self._provider(command.provider)
        if not isinstance(provider, CapturingProvider):
            raise PoisonMessage(f"the {provider.name} provider cannot capture")
        intent_id = command.provider_payment_id
        if intent_id is None:
            # The intake asks only for an AUTHORIZED payment, whose intent the ledger knows: a bug, for an operator.
            raise PoisonMessage("a capture must name the intent it takes the money of")
        capturing = provider
        try:
            intent = await retrying_provider_call(
                provider,
                "capture",
                lambda: capturing.capture(intent_id, command.amount_to_capture, command.idempotency_key),
            )
        except PermanentGatewayError as exc:
            # Neither taken nor answered (no such intent, a refusal without a truth to read): for an operator.
            raise PoisonMessage(f"the provider refused the capture: {exc}") from exc
        if intent.status is PaymentStatus.AUTHORIZED:
            # Still held after a capture: the provider refused it. Nothing changes; an operator looks at it.
            raise PoisonMessage("the provider refused the capture and still holds the payment")
        if intent.status is PaymentStatus.PENDING:
            raise PoisonMessage("the provider shows the payment unpaid: there is nothing to capture")
        log.info(
            "capture answered",
            status=intent.status.value,
            amount_to_capture=command.amount_to_capture,
            amount_captured=intent.amount_captured,
        )
        await self._publish_truth(envelope.payment_id, "gateway", provider.name, intent)

    async def reconcile(self, received: Received[ReconcilePayment]) -> None:
        envelope, message = received.envelope, received.message
        provider = self._provider(message.provider)
        try:
            intent = await retrying_provider_call(
                provider, "retrieve_intent", lambda: provider.retrieve_intent(message.provider_payment_id)
            )
        except PermanentGatewayError as exc:
            raise PoisonMessage(f"the provider refused the lookup: {exc}") from exc
        if intent.status is PaymentStatus.PENDING:
            log.info("reconciliation: intent still open")
            return
        await self._publish_truth(envelope.payment_id, "reconciliation", provider.name, intent)

    async def _publish_truth(self, payment_id: str, source: Source, provider: str, intent: ProviderIntent) -> None:
        await self._status(
            payment_id,
            source,
            intent.status,
            provider,
            intent.provider_payment_id,
            intent.failure_code,
            amount=intent.amount,
            currency=intent.currency,
            amount_captured=intent.amount_captured if intent.status is PaymentStatus.SUCCEEDED else None,
        )

    async def _status(
        self,
        payment_id: str,
        source: Source,
        status: PaymentStatus,
        provider: str,
        provider_payment_id: str | None,
        failure_code: str | None,
        *,
        amount: int | None = None,
        currency: str | None = None,
        amount_captured: int | None = None,
    ) -> None:
        changed = PaymentStatusChanged(
            status=status,
            provider=provider,
            provider_payment_id=provider_payment_id,
            failure_code=failure_code,
            amount=amount,
            currency=currency,
            amount_captured=amount_captured,
        )
        # One id per (payment, source, status): repeating the question never records the answer twice.
        await self.publish(
            Envelope.wrap(
                changed,
                payment_id=payment_id,
                source=source,
                event_id=deterministic_event_id(payment_id, source, status.value),
            )
        )
        log.info("provider truth published", status=status.value, source=source)

    # --- refunds -------------------------------------------------------------------------------------------------

    async def refund(self, received: Received[RefundRequested]) -> None:
        """Ask the provider to refund, with the refund id as its idempotency key, and publish what it says."""
        envelope, message = received.envelope, received.message
        await self._submit_refund(envelope, received.delivery, message, source="gateway")

    async def reconcile_refund(self, received: Received[ReconcileRefund]) -> None:
        """A refund pending for a while: look it up at the provider, or, if the provider never told us its id (the
        request may never have reached it), submit it again under the same idempotency key."""
        envelope, message = received.envelope, received.message
        if message.provider_refund_id is None:
            await self._submit_refund(envelope, received.delivery, message, source="reconciliation")
            return
        provider = self._provider(message.provider)
        if not isinstance(provider, RefundingProvider):
            await self._refund_failed(
                envelope.payment_id, message.refund_id, provider.name, "refunds_not_supported", "reconciliation"
            )
            return
        refund_id, provider_refund_id = message.refund_id, message.provider_refund_id
        try:
            found = await retrying_provider_call(
                provider, "retrieve_refund", lambda: provider.retrieve_refund(provider_refund_id)
            )
        except PermanentGatewayError as exc:
            raise PoisonMessage(f"the provider refused the refund lookup: {exc}") from exc
        await self._refund_truth(envelope.payment_id, refund_id, "reconciliation", provider, found)

    async def _submit_refund(
        self,
        envelope: Envelope,
        delivery: Delivery,
        message: RefundRequested | ReconcileRefund,
        *,
        source: Source,
    ) -> None:
        """Ask the provider for the refund a request (or a reconciliation that finds it never submitted) names."""
        refund_id, provider_payment_id = message.refund_id, message.provider_payment_id
        amount, currency = message.amount, message.currency
        provider = self._provider(message.provider)
        if not isinstance(provider, RefundingProvider):
            await self._refund_failed(envelope.payment_id, refund_id, provider.name, "refunds_not_supported", source)
            return
        if provider_payment_id is None:
            await self._refund_failed(envelope.payment_id, refund_id, provider.name, "no_provider_payment", source)
            return
        request = RefundRequest(
            refund_id=refund_id,
            payment_id=envelope.payment_id,
            provider_payment_id=provider_payment_id,
            amount=amount,
            currency=currency,
            reason=message.reason,
            # The payment's trace rides with the refund, so its webhook joins that trace.
            metadata=delivery.trace_headers,
        )
        try:
            # Transient errors are retried by the broker; past its budget the refund stays pending and the
            # ledger's reconciliation submits it again (the same idempotency key: never a second refund).
            refund = await retrying_provider_call(provider, "create_refund", lambda: provider.create_refund(request))
        except PermanentGatewayError as exc:
            log.warning("provider refused the refund", refund_id=refund_id, error=str(exc)[:300])
            await self._refund_failed(
                envelope.payment_id, refund_id, provider.name, exc.code or "refund_refused", source
            )
            return
        if (refund.amount, refund.currency.upper()) != (amount, currency.upper()):
            AMOUNT_MISMATCHES.inc()
            log.warning("provider refund amount differs", refund_id=refund_id, provider_amount=refund.amount)
        submitted = RefundSubmitted(
            refund_id=refund_id, provider=provider.name, provider_refund_id=refund.provider_refund_id
        )
        await self.publish(
            Envelope.wrap(
                submitted,
                payment_id=envelope.payment_id,
                source="gateway",
                event_id=deterministic_event_id(refund_id, "refund_submitted", refund.provider_refund_id),
            )
        )
        log.info("refund submitted", refund_id=refund_id, provider_refund_id=refund.provider_refund_id)
        await self._refund_truth(envelope.payment_id, refund_id, source, provider, refund)

    async def _refund_truth(
        self, payment_id: str, refund_id: str, source: Source, provider: PaymentProvider, refund: ProviderRefund
    ) -> None:
        """Publish the provider's outcome of a refund, if it has one yet (a pending one comes later by webhook)."""
        if refund.status is RefundStatus.PENDING:
            log.info("refund still pending at the provider", refund_id=refund_id, source=source)
            return
        await self._refund_status(
            payment_id,
            RefundStatusChanged(
                refund_id=refund_id,
                status=refund.status,
                provider=provider.name,
                provider_refund_id=refund.provider_refund_id,
                failure_code=refund.failure_code,
                amount=refund.amount,
                currency=refund.currency,
            ),
            source,
        )

    async def _refund_failed(self, payment_id: str, refund_id: str, provider: str, code: str, source: Source) -> None:
        changed = RefundStatusChanged(
            refund_id=refund_id, status=RefundStatus.FAILED, provider=provider, failure_code=code
        )
        await self._refund_status(payment_id, changed, source)

    async def _refund_status(self, payment_id: str, changed: RefundStatusChanged, source: Source) -> None:
        # One id per (refund, source, status): asking again never records the answer twice.
        await self.publish(
            Envelope.wrap(
                changed,
                payment_id=payment_id,
                source=source,
                event_id=deterministic_event_id(changed.refund_id, source, changed.status.value),
            )
        )
        log.info("refund outcome published", refund_id=changed.refund_id, status=changed.status.value, source=source)


# The gateway_worker's message registry: its queue is bound to exactly these types.
GATEWAY_MESSAGES: MessageRegistry[GatewayHandlers] = MessageRegistry(
    "gateway_worker",
    {
        PaymentRequested: GatewayHandlers.open_intent,
        CancelPayment: GatewayHandlers.close_intent,
        ExpirePayment: GatewayHandlers.close_intent,
        ReconcilePayment: GatewayHandlers.reconcile,
        CapturePayment: GatewayHandlers.capture,
        RefundRequested: GatewayHandlers.refund,
        ReconcileRefund: GatewayHandlers.reconcile_refund,
    },
)
