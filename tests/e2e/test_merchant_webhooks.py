"""Merchant webhooks end to end (issue 11, docs/reference/merchant-webhooks.md): signed, retried through an outage,
recorded, rotated.

A stack of its own with a retry schedule in seconds. The merchant's receiver runs in the test; every request it
receives is checked with the `standardwebhooks` library, the way a shop would check it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.client import IntakeClient, payment_body
from tests.support.infra import Servers
from tests.support.merchant_receiver import MerchantReceiver, Received
from tests.support.own_stack import own_stack
from tests.support.processes import Stack, eventually

SERVICES = ("intake_api", "ledger", "notifier", "gateway_worker", "sandbox_gateway", "webhook_receiver")
# 2 s between the later tries leaves room to take the receiver down after its second 500.
SCHEDULE = "0,1,2,2,2,2,2,2,2,2"


@pytest.fixture(scope="module")
async def webhook_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("webhooks"),
        SERVICES,
        SANDBOX_AUTOPAY="succeed",
        WEBHOOK_RETRY_SCHEDULE_SECONDS=SCHEDULE,
    ) as running:
        yield running


@pytest.fixture
def api(webhook_stack: Stack, http: aiohttp.ClientSession) -> IntakeClient:
    return IntakeClient(http, webhook_stack.url("intake_api"))


async def call(api: IntakeClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with api.session.request(method, api.base_url + path, json=body, headers=api.headers()) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def register(api: IntakeClient, url: str, events: list[str] | None = None) -> dict[str, Any]:
    status, endpoint = await call(api, "POST", "/v1/webhook_endpoints", {"url": url, "events": events or ["*"]})
    assert status == 201, endpoint
    return endpoint


async def payment_events(api: IntakeClient, payment_id: str, count: int) -> list[dict[str, Any]]:
    """The payment's merchant events once `count` of them are recorded, oldest first."""

    async def recorded() -> list[dict[str, Any]] | None:
        status, page = await call(api, "GET", f"/v1/events?payment_id={payment_id}")
        assert status == 200, page
        return list(reversed(page["data"])) if len(page["data"]) >= count else None

    return await eventually(recorded, timeout=30, what=f"{count} events of {payment_id}")


async def attempts(api: IntakeClient, event_id: str, endpoint_id: str, delivered: int = 1) -> list[dict[str, Any]]:
    """The event's attempts to the endpoint once `delivered` of them succeeded (recorded after the answer)."""

    async def recorded() -> list[dict[str, Any]] | None:
        _, event = await call(api, "GET", f"/v1/events/{event_id}")
        mine = [d for d in event["deliveries"] if d["endpoint_id"] == endpoint_id]
        return mine if sum(d["status_code"] == 200 for d in mine) >= delivered else None

    return await eventually(recorded, timeout=30, what=f"{delivered} recorded deliveries of {event_id}")


def holds(condition: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    """A probe for `eventually` from a plain condition on what the receiver has seen."""

    async def probe() -> object:
        return condition()

    return probe


def verified(secret: str, request: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


async def first_delivery_of_a_new_payment(
    api: IntakeClient, receiver: MerchantReceiver, endpoint: dict[str, Any]
) -> tuple[dict[str, Any], Received]:
    """Create a payment, await its payment.created at `receiver`, then take the receiver and `endpoint` down."""
    _, payment, _ = await api.create(payment_body(), wait=0)
    event = (await payment_events(api, payment["id"], 1))[0]  # payment.created
    await eventually(holds(lambda: receiver.delivered(event["id"])), timeout=30, what="the delivery")
    await receiver.stop()
    await call(api, "DELETE", f"/v1/webhook_endpoints/{endpoint['id']}")
    return event, receiver.delivered(event["id"])[0]


async def test_deliveries_survive_two_500s_and_an_outage_and_every_attempt_is_listed(
    api: IntakeClient, webhook_stack: Stack
) -> None:
    receiver = MerchantReceiver(answer=lambda event_id, nth: 500 if nth <= 2 else 200)
    await receiver.start()
    endpoint = await register(api, receiver.url)
    status, payment, _ = await api.create(payment_body(), wait=5)
    assert status == 201
    events = await payment_events(api, payment["id"], 2)
    assert [e["type"] for e in events] == ["payment.created", "payment.succeeded"]
    ids = [e["id"] for e in events]

    # Two 500s for each event, then the merchant's site goes down.
    await eventually(holds(lambda: all(len(receiver.requests_for(i)) >= 2 for i in ids)), timeout=30, what="two 500s")
    await receiver.stop()

    async def refused_once(event_id: str) -> bool:
        _, event = await call(api, "GET", f"/v1/events/{event_id}")
        return any(d["status_code"] is None and d["error"] for d in event["deliveries"])

    for event_id in ids:
        await eventually(
            functools.partial(refused_once, event_id), timeout=30, what="an attempt while the receiver is down"
        )

    # Back up: the next try delivers.
    await receiver.start()
    await eventually(
        holds(lambda: all(receiver.delivered(i) for i in ids)), timeout=30, what="delivery after the outage"
    )
    await receiver.stop()

    for event_id in ids:
        requests = receiver.requests_for(event_id)
        assert [r.answered for r in requests] == [500, 500, 200]
        for request in requests:  # each as signed: the library accepts it, the id is the event's on every try
            payload = verified(endpoint["secret"], request)
            assert payload["id"] == event_id == request.headers["webhook-id"]
            assert payload["data"]["object"]["id"] == payment["id"]
        await attempts(api, event_id, endpoint["id"])
        _, event = await call(api, "GET", f"/v1/events/{event_id}")
        # Kept beside the service logs: the delivery log as the API printed it.
        with (webhook_stack.log_dir / "delivery-log.json").open("a") as log:
            log.write(json.dumps(event, indent=1) + "\n")
        deliveries = event["deliveries"]
        assert [d["attempt"] for d in deliveries] == list(range(1, len(deliveries) + 1))
        assert [d["status_code"] for d in deliveries][:2] == [500, 500]
        assert deliveries[-1]["status_code"] == 200 and deliveries[-1]["next_attempt_at"] is None
        assert all(d["status_code"] is None for d in deliveries[2:-1]) and len(deliveries) >= 4
        assert all(d["endpoint_id"] == endpoint["id"] for d in deliveries)
        assert all(d["next_attempt_at"] for d in deliveries[:-1])

    # The payment as it stands at delivery: even the payment.created delivery, made after the success, says so.
    final = verified(endpoint["secret"], receiver.delivered(ids[0])[0])
    assert final["data"]["object"]["status"] == "SUCCEEDED"
    assert await call(api, "DELETE", f"/v1/webhook_endpoints/{endpoint['id']}") == (204, None)


async def test_a_forged_signature_is_refused_by_the_library(api: IntakeClient) -> None:
    receiver = MerchantReceiver()
    await receiver.start()
    endpoint = await register(api, receiver.url, ["payment.created"])
    _, request = await first_delivery_of_a_new_payment(api, receiver, endpoint)
    tampered = request.body.replace(b'"payment.created"', b'"payment.succeeded"')
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint["secret"]).verify(tampered, request.headers)
    other_secret = (await call(api, "POST", f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret"))[0]
    assert other_secret == 404  # deleted endpoints are gone for the merchant


async def test_during_a_rotation_both_secrets_verify_each_delivery(api: IntakeClient) -> None:
    receiver = MerchantReceiver()
    await receiver.start()
    endpoint = await register(api, receiver.url, ["payment.created"])
    status, rotated = await call(api, "POST", f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret")
    assert status == 200 and rotated["id"] == endpoint["id"]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != endpoint["secret"]
    event, request = await first_delivery_of_a_new_payment(api, receiver, endpoint)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verified(endpoint["secret"], request)["id"] == event["id"]  # the old secret, in its grace period
    assert verified(rotated["secret"], request)["id"] == event["id"]  # the new one
    # The secret is never shown again.
    _, shown = await call(api, "GET", f"/v1/webhook_endpoints/{endpoint['id']}")
    assert "secret" not in shown


async def test_redelivery_delivers_the_event_again_and_lists_the_attempt(api: IntakeClient) -> None:
    receiver = MerchantReceiver()
    await receiver.start()
    endpoint = await register(api, receiver.url, ["payment.created"])
    _, payment, _ = await api.create(payment_body(), wait=0)
    event = (await payment_events(api, payment["id"], 1))[0]  # payment.created
    await attempts(api, event["id"], endpoint["id"])
    status, accepted = await call(api, "POST", f"/v1/events/{event['id']}/redeliver")
    assert status == 202 and accepted["id"] == event["id"]
    await eventually(holds(lambda: len(receiver.delivered(event["id"])) >= 2), timeout=30, what="the redelivery")
    mine = await attempts(api, event["id"], endpoint["id"], delivered=2)
    await receiver.stop()
    await call(api, "DELETE", f"/v1/webhook_endpoints/{endpoint['id']}")
    assert [d["attempt"] for d in mine] == [1, 2] and all(d["status_code"] == 200 for d in mine)
