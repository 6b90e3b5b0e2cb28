"""Refunds end to end (docs/reference/refunds.md): a payment of 19.99 refunded 5.00 and then the rest, both
succeeding at the sandbox, in the refund list, in the payment's events and at the merchant's endpoint; a refund of
a payment made with the 5126 card fails; the limits, the idempotency and the refusals of the API.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook

from tests.support.client import IntakeClient
from tests.support.infra import Servers
from tests.support.merchant_receiver import MerchantReceiver
from tests.support.own_stack import own_stack
from tests.support.processes import Stack, eventually

SERVICES = ("intake_api", "ledger", "notifier", "gateway_worker", "sandbox_gateway", "webhook_receiver")
REFUND_FAILING_CARD = "4000000000005126"


@pytest.fixture(scope="module")
async def refund_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with own_stack(servers, tmp_path_factory.mktemp("refunds"), SERVICES) as running:
        yield running


@pytest.fixture
def api(refund_stack: Stack, http: aiohttp.ClientSession) -> IntakeClient:
    return IntakeClient(http, refund_stack.url("intake_api"))


@pytest.fixture
async def merchant(api: IntakeClient) -> AsyncIterator[tuple[MerchantReceiver, str]]:
    receiver = MerchantReceiver()
    await receiver.start()
    async with api.session.post(
        f"{api.base_url}/v1/webhook_endpoints", json={"url": receiver.url}, headers=api.headers()
    ) as response:
        endpoint = await response.json()
        assert response.status == 201, endpoint
    try:
        yield receiver, endpoint["secret"]
    finally:
        await receiver.stop()


def verified_events(receiver: MerchantReceiver, secret: str) -> list[dict[str, Any]]:
    """Every delivery the merchant received, each checked with the standardwebhooks library as a shop would."""
    return [Webhook(secret).verify(r.body, r.headers) for r in receiver.received]


async def test_a_payment_is_refunded_in_two_parts_and_both_succeed(
    api: IntakeClient, merchant: tuple[MerchantReceiver, str]
) -> None:
    receiver, secret = merchant
    payment = await api.paid(amount=1999, currency="EUR")
    assert payment["status"] == "SUCCEEDED"
    assert payment["amount_refunded"] == 0

    status, first, headers = await api.refund(payment["id"], {"amount": 500, "reason": "requested_by_customer"})
    assert status == 201, first
    assert headers["Location"] == f"/v1/refunds/{first['id']}"
    assert (first["status"], first["amount"], first["currency"]) == ("pending", 500, "EUR")
    assert (await api.refund_final(first["id"]))["status"] == "succeeded"

    status, rest, _ = await api.refund(payment["id"])  # no amount: all that is left
    assert status == 201, rest
    assert (rest["amount"], rest["payment_amount_refunded"]) == (1499, 500)
    assert (await api.refund_final(rest["id"]))["status"] == "succeeded"

    listed = await api.refunds(payment_id=payment["id"])
    assert [(r["id"], r["status"]) for r in listed["data"]] == [(rest["id"], "succeeded"), (first["id"], "succeeded")]
    assert listed["has_more"] is False
    after = await api.get(payment["id"])
    assert (after["status"], after["amount_refunded"]) == ("SUCCEEDED", 1999)

    events = await api.events(payment["id"])
    refund_events = [(e["event_type"], e["refund_id"], e["refund_status"]) for e in events if e["refund_id"]]
    for refund_id in (first["id"], rest["id"]):
        assert ("payment.refund_requested", refund_id, "pending") in refund_events
        assert ("payment.refund_status_changed", refund_id, "succeeded") in refund_events

    status, nothing_left, _ = await api.refund(payment["id"], {"amount": 1})
    assert status == 422
    assert nothing_left["type"].endswith("amount-exceeds-refundable")

    async def merchant_heard_both() -> list[dict[str, Any]] | None:
        succeeded = [e for e in verified_events(receiver, secret) if e["type"] == "refund.succeeded"]
        return succeeded if len({e["data"]["object"]["id"] for e in succeeded}) == 2 else None

    succeeded = await eventually(merchant_heard_both, timeout=20, what="both refund.succeeded webhooks")
    objects = {e["data"]["object"]["id"]: e["data"]["object"] for e in succeeded}
    assert objects[first["id"]]["status"] == "succeeded"
    assert objects[first["id"]]["payment_id"] == payment["id"]
    assert objects[rest["id"]]["payment_amount_refunded"] == 1999
    created = {e["data"]["object"]["id"] for e in verified_events(receiver, secret) if e["type"] == "refund.created"}
    assert {first["id"], rest["id"]} <= created


async def test_a_refund_of_a_payment_made_with_the_5126_card_fails(api: IntakeClient) -> None:
    payment = await api.paid(REFUND_FAILING_CARD)
    assert payment["status"] == "SUCCEEDED"

    status, refund, _ = await api.refund(payment["id"], {"amount": 700})
    assert status == 201, refund
    failed = await api.refund_final(refund["id"])

    assert (failed["status"], failed["failure_code"]) == ("failed", "expired_or_canceled_card")
    assert (await api.get(payment["id"]))["amount_refunded"] == 0
    # A failed refund frees its amount: the whole payment is refundable again.
    status, again, _ = await api.refund(payment["id"])
    assert (status, again["amount"]) == (201, payment["amount"])


async def test_the_same_idempotency_key_replays_the_refund_and_another_body_is_refused(api: IntakeClient) -> None:
    payment = await api.paid()

    status, refund, _ = await api.refund(payment["id"], {"amount": 300}, key="refund-key-1")
    assert status == 201
    status, replay, headers = await api.refund(payment["id"], {"amount": 300}, key="refund-key-1")
    assert (status, replay["id"], headers.get("Idempotent-Replayed")) == (200, refund["id"], "true")
    status, reuse, _ = await api.refund(payment["id"], {"amount": 400}, key="refund-key-1")
    assert status == 422
    assert reuse["type"].endswith("idempotency-key-reuse")
    assert len((await api.refunds(payment_id=payment["id"]))["data"]) == 1


async def test_refunds_are_refused_for_unknown_or_unpaid_payments_and_bad_amounts(api: IntakeClient) -> None:
    status, problem, _ = await api.refund("pay_unknown")
    assert (status, problem["type"].rsplit("/", 1)[-1]) == (404, "payment-not-found")

    status, pending, _ = await api.create()
    status, problem, _ = await api.refund(pending["id"])
    assert (status, problem["type"].rsplit("/", 1)[-1]) == (409, "payment-not-refundable")

    paid = await api.paid(amount=1000)
    for amount in (0, -5, 10.5, "100"):
        status, problem, _ = await api.refund(paid["id"], {"amount": amount})
        assert status == 422, (amount, problem)
        assert problem["errors"][0]["field"] == "amount"
    status, problem, _ = await api.refund(paid["id"], {"amount": 1001})
    assert status == 422
    assert "1000" in problem["detail"]
    status, problem, _ = await api.refund(paid["id"], {"reason": "changed_my_mind"})
    assert (status, problem["errors"][0]["field"]) == (422, "reason")

    other = IntakeClient(api.session, api.base_url, api_key="sk_test_other")
    status, problem, _ = await other.refund(paid["id"])
    assert status in (401, 404), problem


async def test_refund_lists_filter_and_page(api: IntakeClient) -> None:
    payment = await api.paid(amount=900)
    ids = []
    for _ in range(3):
        status, refund, _ = await api.refund(payment["id"], {"amount": 100})
        assert status == 201
        ids.append(refund["id"])

    first = await api.refunds(payment_id=payment["id"], limit="2")
    assert [r["id"] for r in first["data"]] == [ids[2], ids[1]]
    assert first["has_more"] is True
    second = await api.refunds(payment_id=payment["id"], limit="2", starting_after=ids[1])
    assert [r["id"] for r in second["data"]] == [ids[0]]
    assert second["has_more"] is False
    async with api.session.get(
        f"{api.base_url}/v1/refunds", params={"status": "refunded"}, headers=api.headers()
    ) as response:
        assert response.status == 422
        assert json.loads(await response.text())["errors"][0]["field"] == "status"


@pytest.mark.parametrize(
    ("headers", "body", "status", "problem"),
    [
        ({}, b"{}", 400, "idempotency-key-missing"),
        ({"Idempotency-Key": "k\u00e9y"}, b"{}", 400, "idempotency-key-invalid"),
        ({"Idempotency-Key": "k1", "Content-Type": "text/plain"}, b"amount=5", 415, "unsupported-media-type"),
        ({"Idempotency-Key": "k2", "Content-Type": "application/json"}, b'{"amount": 5', 400, "malformed-json"),
        ({"Idempotency-Key": "k3", "Content-Type": "application/json"}, b"[500]", 422, "validation-error"),
        (
            {"Idempotency-Key": "k4", "Content-Type": "application/json"},
            b'{"amount": 5, "x": 1}',
            422,
            "validation-error",
        ),
    ],
    ids=["no key", "non-ascii key", "not json", "malformed json", "not an object", "unknown field"],
)
async def test_a_bad_refund_request_is_a_clear_problem(
    api: IntakeClient, headers: dict[str, str], body: bytes, status: int, problem: str
) -> None:
    payment = await api.paid(amount=800)
    sent = {**api.headers(), **headers}
    if "Idempotency-Key" in headers:
        sent["Idempotency-Key"] = headers["Idempotency-Key"].encode("utf-8").decode("latin-1")
    async with api.session.post(f"{api.base_url}/v1/payments/{payment['id']}/refunds", data=body, headers=sent) as r:
        answer = json.loads(await r.text())
        assert (r.status, r.content_type) == (status, "application/problem+json"), answer
    assert answer["type"].endswith(problem)
    assert (await api.refunds(payment_id=payment["id"]))["data"] == []
