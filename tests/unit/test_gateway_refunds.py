"""The gateway_worker's refund rules (docs/reference/refunds.md), with fake providers and a list for the broker:
the refund id is the provider's idempotency key, a refusal fails the refund with its code, a provider without the
capability fails it, transient errors are retried, and reconciliation looks a refund up or submits it again."""

from __future__ import annotations

import pytest

from services.gateway_worker.handlers import GATEWAY_MESSAGES, GatewayHandlers
from shared.broker import Handler, RetryLater
from shared.events import (
    Envelope,
    ReconcileRefund,
    RefundStatus,
    RefundStatusChanged,
    RefundSubmitted,
)
from shared.providers.base import RefundingProvider
from shared.providers.errors import PermanentGatewayError, TransientGatewayError
from tests.fakes.provider import FakeProvider, FakeRefundingProvider
from tests.support.messages import FIRST_DELIVERY, Published
from tests.support.refund_histories import refund_requested


@pytest.fixture
def provider() -> FakeRefundingProvider:
    return FakeRefundingProvider("sandbox")


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def handlers(provider: FakeRefundingProvider, published: Published) -> Handler:
    return GATEWAY_MESSAGES.dispatcher(GatewayHandlers({"sandbox": provider}, "sandbox", published))


def messages(published: Published) -> list[object]:
    return [envelope.message() for envelope in published]


def test_refunding_is_a_capability_a_provider_declares_by_its_methods() -> None:
    assert isinstance(FakeRefundingProvider(), RefundingProvider)
    assert not isinstance(FakeProvider(), RefundingProvider)


async def test_a_refund_is_asked_for_with_its_id_as_the_idempotency_key_and_its_provider_id_published(
    handlers: Handler, provider: FakeRefundingProvider, published: Published
) -> None:
    request = refund_requested("pay_1", "re_1")

    await handlers(request, FIRST_DELIVERY)
    await handlers(request, FIRST_DELIVERY)  # redelivered: the same refund at the provider

    assert [r.refund_id for r in provider.refund_requests] == ["re_1", "re_1"]
    assert len(provider.refunds) == 1
    assert provider.refund_requests[0].metadata["traceparent"] == FIRST_DELIVERY.trace_headers["traceparent"]
    submitted = [m for m in messages(published) if isinstance(m, RefundSubmitted)]
    assert {m.provider_refund_id for m in submitted} == set(provider.refunds)
    assert len({e.id for e in published}) == 1  # the same fact twice: one event id


async def test_a_refund_the_provider_settles_at_once_publishes_its_outcome(
    handlers: Handler, provider: FakeRefundingProvider, published: Published
) -> None:
    provider.refund_outcome = RefundStatus.SUCCEEDED

    await handlers(refund_requested("pay_1", "re_1"), FIRST_DELIVERY)

    outcome = [m for m in messages(published) if isinstance(m, RefundStatusChanged)]
    assert [(m.refund_id, m.status) for m in outcome] == [("re_1", RefundStatus.SUCCEEDED)]


async def test_a_refund_the_provider_refuses_fails_with_its_code(
    handlers: Handler, provider: FakeRefundingProvider, published: Published
) -> None:
    provider.fail_next(PermanentGatewayError("answered 422", code="amount_too_large"))

    await handlers(refund_requested("pay_1", "re_1"), FIRST_DELIVERY)

    (changed,) = messages(published)
    assert isinstance(changed, RefundStatusChanged)
    assert (changed.status, changed.failure_code) == (RefundStatus.FAILED, "amount_too_large")


async def test_a_transient_error_retries_the_refund_later(handlers: Handler, provider: FakeRefundingProvider) -> None:
    provider.fail_next(TransientGatewayError("timeout"))

    with pytest.raises(RetryLater):
        await handlers(refund_requested("pay_1", "re_1"), FIRST_DELIVERY)
    assert provider.refunds == {}


async def test_a_provider_without_the_refund_capability_fails_the_refund(published: Published) -> None:
    handlers = GATEWAY_MESSAGES.dispatcher(GatewayHandlers({"sandbox": FakeProvider("sandbox")}, "sandbox", published))

    await handlers(refund_requested("pay_1", "re_1"), FIRST_DELIVERY)

    (changed,) = messages(published)
    assert isinstance(changed, RefundStatusChanged)
    assert (changed.status, changed.failure_code) == (RefundStatus.FAILED, "refunds_not_supported")


def reconcile(provider_refund_id: str | None) -> Envelope:
    command = ReconcileRefund(
        refund_id="re_1",
        provider="sandbox",
        provider_payment_id="pi_1",
        provider_refund_id=provider_refund_id,
        amount=500,
        currency="USD",
    )
    return Envelope.wrap(command, payment_id="pay_1", source="reconciliation")


async def test_reconciliation_publishes_the_outcome_the_provider_has_now(
    handlers: Handler, provider: FakeRefundingProvider, published: Published
) -> None:
    await handlers(refund_requested("pay_1", "re_1"), FIRST_DELIVERY)
    provider_refund_id = provider.by_refund["re_1"]
    published.clear()
    await handlers(reconcile(provider_refund_id), FIRST_DELIVERY)
    assert published == []  # still pending: nothing to say

    provider.settle_refund(provider_refund_id, RefundStatus.FAILED, "expired_or_canceled_card")
    await handlers(reconcile(provider_refund_id), FIRST_DELIVERY)

    (changed,) = messages(published)
    assert isinstance(changed, RefundStatusChanged)
    assert (changed.status, changed.failure_code) == (RefundStatus.FAILED, "expired_or_canceled_card")
    assert published[0].source == "reconciliation"


async def test_reconciliation_of_a_refund_the_provider_never_acknowledged_submits_it_again(
    handlers: Handler, provider: FakeRefundingProvider, published: Published
) -> None:
    await handlers(reconcile(None), FIRST_DELIVERY)

    assert [r.refund_id for r in provider.refund_requests] == ["re_1"]
    assert any(isinstance(m, RefundSubmitted) for m in messages(published))
