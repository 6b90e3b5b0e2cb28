"""The demo shop (docs/reference/storefront.md) against a fake intake API: who sets the price, idempotent Buy, and an
order page
that believes only the API."""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, unused_port
from pydantic import SecretStr
from structlog.testing import capture_logs

from services.storefront.app import create_app
from services.storefront.settings import StorefrontSettings

API_KEY = "sk_test_shop_8d1f"
SHOP_URL = "http://shop.test"
CHECKOUT_BASE = "http://gateway.test/pay/"

_STATUS = re.compile(r'<[^>]*\bid="payment-status"[^>]*>([^<]*)<')
_ORDER_IDS = re.compile(r'name="product_id" value="([^"]+)"><input type="hidden" name="order_id" value="([^"]+)"')
_REFRESH = '<meta http-equiv="refresh" content="2">'


@dataclass
class FakeIntake:
    """Just enough of the intake API: Bearer auth, idempotency by key, payments whose state a test sets."""

    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    posts: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    checkout_ready: bool = True
    fail_with: int | None = None
    conflicts_left: int = 0
    url: str = ""
    reads: Counter[str] = field(default_factory=Counter)
    # payment id -> (the read that first sees the outcome, status, failure_code): a webhook landing meanwhile.
    outcomes_at_read: dict[str, tuple[int, str, str | None]] = field(default_factory=dict)
    captures: list[tuple[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/payments", self.create)
        app.router.add_get("/v1/payments/{payment_id}", self.read)
        app.router.add_post("/v1/payments/{payment_id}/capture", self.capture)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def capture(self, request: web.Request) -> web.Response:
        """Accept a capture of a held payment (202); the next read finds it SUCCEEDED with all of it taken."""
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self._problem(401, "unauthorized")
        payment = self.payments.get(request.match_info["payment_id"])
        if payment is None:
            return self._problem(404, "payment-not-found")
        self.captures.append((request.headers["Idempotency-Key"], payment["id"]))
        if payment["status"] != "AUTHORIZED":
            return self._problem(409, "payment-not-capturable")
        held = dict(payment)
        self.outcomes_at_read[payment["id"]] = (self.reads[payment["id"]] + 1, "SUCCEEDED", None)
        return web.json_response(held, status=202)

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def _problem(self, status: int, slug: str) -> web.Response:
        return web.json_response(
            {
                "type": f"https://paystream.dev/problems/{slug}",
                "title": slug,
                "status": status,
                "detail": f"{slug} (key {API_KEY})",
            },
            status=status,
            content_type="application/problem+json",
        )

    async def create(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self._problem(401, "unauthorized")
        body = await request.json()
        self.posts.append((dict(request.headers), body))
        if self.fail_with is not None:
            return self._problem(self.fail_with, "boom")
        if self.conflicts_left:
            self.conflicts_left -= 1
            return self._problem(409, "idempotency-conflict")
        key = request.headers["Idempotency-Key"]
        if key in self.by_key:
            payment, first_body = self.by_key[key]
            if first_body != body:
                return self._problem(422, "idempotency-key-reuse")
            return web.json_response(payment, headers={"Idempotent-Replayed": "true"})
        payment_id = "pay_" + secrets.token_hex(16)
        payment = {
            "id": payment_id,
            "status": "PENDING",
            "amount": body["amount"],
            "currency": body["currency"],
            "reference": body["reference"],
            "description": body.get("description"),
            "metadata": body["metadata"],
            "checkout_url": CHECKOUT_BASE + "pi_" + payment_id[4:] if self.checkout_ready else None,
            "return_url": body["return_url"],
            "cancel_url": body.get("cancel_url"),
            "failure_code": None,
            "created_at": "2026-11-23T19:00:00Z",
            "updated_at": "2026-11-23T19:00:00Z",
            "expires_at": "2026-11-23T19:30:00Z",
            "capture_method": body.get("capture_method", "automatic"),
            "amount_capturable": 0,
            "amount_captured": 0,
        }
        self.payments[payment_id] = payment
        self.by_key[key] = (payment, body)
        return web.json_response(payment, status=201, headers={"Location": f"/v1/payments/{payment_id}"})

    async def read(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self._problem(401, "unauthorized")
        if self.fail_with is not None:
            return self._problem(self.fail_with, "boom")
        payment = self.payments.get(request.match_info["payment_id"])
        if payment is None:
            return self._problem(404, "payment-not-found")
        self.reads[payment["id"]] += 1
        if payment["id"] in self.outcomes_at_read:
            at_read, status, failure_code = self.outcomes_at_read[payment["id"]]
            if self.reads[payment["id"]] >= at_read:
                self.settle(payment["id"], status, failure_code)
        return web.json_response(payment)

    def settle(self, payment_id: str, status: str, failure_code: str | None = None) -> None:
        payment = self.payments[payment_id]
        held = status == "AUTHORIZED"
        payment.update(
            status=status,
            failure_code=failure_code,
            amount_capturable=payment["amount"] if held else 0,
            amount_captured=payment["amount"] if status == "SUCCEEDED" else 0,
        )


def settings_for(intake_url: str) -> StorefrontSettings:
    return StorefrontSettings(
        intake_url=intake_url, storefront_api_key=SecretStr(API_KEY), storefront_public_url=SHOP_URL
    )


@pytest.fixture
async def intake() -> AsyncIterator[FakeIntake]:
    fake = FakeIntake()
    server = TestServer(fake.app())
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


# Short, so a page that waits in vain for an outcome costs the test little.
CONFIRM_WAIT_SECONDS = 0.4


async def start_shop(intake_url: str) -> TestClient:
    app = create_app(settings_for(intake_url), confirm_wait_seconds=CONFIRM_WAIT_SECONDS)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def shop(intake: FakeIntake) -> AsyncIterator[TestClient]:
    client = await start_shop(intake.url)
    yield client
    await client.close()


@pytest.fixture
async def shop_without_intake() -> AsyncIterator[TestClient]:
    client = await start_shop(f"http://127.0.0.1:{unused_port()}")
    yield client
    await client.close()


async def product_page_orders(shop: TestClient) -> dict[str, str]:
    response = await shop.get("/")
    assert response.status == 200
    return dict(_ORDER_IDS.findall(await response.text()))


async def buy(shop: TestClient, product_id: str, order_id: str, **extra: str) -> Any:
    return await shop.post(
        "/buy", data={"product_id": product_id, "order_id": order_id, **extra}, allow_redirects=False
    )


async def order_page(shop: TestClient, path: str) -> tuple[int, str]:
    response = await shop.get(path, allow_redirects=False)
    return response.status, await response.text()


def shown_status(html: str) -> str:
    match = _STATUS.search(html)
    assert match is not None, "no #payment-status element"
    return match.group(1)


async def test_product_page_has_a_buy_form_per_product_with_an_order_id_and_no_price_or_key(shop: TestClient) -> None:
    response = await shop.get("/")
    html = await response.text()
    assert response.headers["Content-Type"].startswith("text/html")
    orders = dict(_ORDER_IDS.findall(html))
    assert {"book", "mug", "poster"} <= orders.keys()
    assert len(set(orders.values())) == len(orders)
    assert 'name="amount"' not in html and API_KEY not in html
    assert "19.99 USD" in html
    assert "<script" not in html


async def test_each_rendering_of_the_product_page_makes_new_order_ids(shop: TestClient) -> None:
    first, second = await product_page_orders(shop), await product_page_orders(shop)
    assert first["book"] != second["book"]


async def test_buy_creates_one_payment_at_the_server_side_price_keyed_by_the_order_id(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id = (await product_page_orders(shop))["book"]
    response = await buy(shop, "book", order_id, amount="1", currency="JPY")

    assert len(intake.posts) == 1
    headers, body = intake.posts[0]
    assert headers["Idempotency-Key"] == order_id
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Prefer"] == "wait=5"
    assert body == {
        "amount": 1999,
        "currency": "USD",
        "reference": order_id,
        "description": "Designing Payment Systems",
        "return_url": f"{SHOP_URL}/orders/{order_id}",
        "cancel_url": f"{SHOP_URL}/orders/{order_id}?canceled=1",
        "metadata": {"order_id": order_id},
    }
    (payment,) = intake.payments.values()
    assert response.status == 303
    assert response.headers["Location"] == payment["checkout_url"]


async def test_a_resubmitted_buy_sends_the_same_idempotency_key_and_gets_the_same_payment(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id = (await product_page_orders(shop))["mug"]
    first = await buy(shop, "mug", order_id)
    second = await buy(shop, "mug", order_id)

    assert [headers["Idempotency-Key"] for headers, _ in intake.posts] == [order_id, order_id]
    assert len(intake.payments) == 1
    assert first.status == second.status == 303
    assert first.headers["Location"] == second.headers["Location"]


async def test_buy_retries_while_the_same_order_is_still_in_flight(shop: TestClient, intake: FakeIntake) -> None:
    intake.conflicts_left = 1
    order_id = (await product_page_orders(shop))["book"]
    response = await buy(shop, "book", order_id)
    assert response.status == 303
    assert response.headers["Location"].startswith(CHECKOUT_BASE)
    assert len(intake.payments) == 1


async def test_an_order_id_reused_for_another_product_is_refused_without_a_second_payment(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id = (await product_page_orders(shop))["book"]
    await buy(shop, "book", order_id)
    response = await buy(shop, "poster", order_id)
    assert response.status == 409
    assert len(intake.payments) == 1


@pytest.mark.parametrize(("product_id", "order_id"), [("caviar", "ord_" + "0" * 24), ("book", "not-an-order")])
async def test_buy_with_an_unknown_product_or_a_malformed_order_id_is_refused(
    shop: TestClient, intake: FakeIntake, product_id: str, order_id: str
) -> None:
    response = await buy(shop, product_id, order_id)
    assert response.status == 400
    assert "text/html" in response.headers["Content-Type"]
    assert intake.posts == []


async def test_without_a_checkout_url_buy_goes_to_the_order_page_which_offers_it_once_ready(
    shop: TestClient, intake: FakeIntake
) -> None:
    intake.checkout_ready = False
    order_id = (await product_page_orders(shop))["book"]
    response = await buy(shop, "book", order_id)
    assert response.status == 303
    assert response.headers["Location"] == f"/orders/{order_id}"

    status, html = await order_page(shop, f"/orders/{order_id}")
    assert status == 200 and shown_status(html) == "PENDING" and _REFRESH in html
    assert "Continue to payment" not in html

    (payment,) = intake.payments.values()
    payment["checkout_url"] = CHECKOUT_BASE + "pi_ready"
    _, html = await order_page(shop, f"/orders/{order_id}")
    assert f'href="{CHECKOUT_BASE}pi_ready"' in html and "Continue to payment" in html


async def test_order_page_shows_the_apis_status_and_refreshes_while_pending(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id = (await product_page_orders(shop))["book"]
    await buy(shop, "book", order_id)
    status, html = await order_page(shop, f"/orders/{order_id}")
    assert status == 200
    assert shown_status(html) == "PENDING"
    assert _REFRESH in html
    assert "Waiting for the payment to be confirmed…" in html
    assert order_id in html and "19.99 USD" in html


@pytest.mark.parametrize(
    ("outcome", "failure_code"),
    [("SUCCEEDED", None), ("FAILED", "card_declined"), ("CANCELED", None), ("EXPIRED", "expired")],
)
async def test_order_page_shows_a_terminal_status_and_stops_refreshing(
    shop: TestClient, intake: FakeIntake, outcome: str, failure_code: str | None
) -> None:
    order_id = (await product_page_orders(shop))["book"]
    await buy(shop, "book", order_id)
    (payment_id,) = intake.payments
    intake.settle(payment_id, outcome, failure_code)

    status, html = await order_page(shop, f"/orders/{order_id}?payment_id={payment_id}")
    assert status == 200
    assert shown_status(html) == outcome
    assert 'http-equiv="refresh"' not in html
    if failure_code:
        assert failure_code in html


async def test_a_forged_status_in_the_return_query_has_no_effect(shop: TestClient, intake: FakeIntake) -> None:
    order_id = (await product_page_orders(shop))["book"]
    await buy(shop, "book", order_id)
    (payment_id,) = intake.payments
    _, html = await order_page(shop, f"/orders/{order_id}?payment_id={payment_id}&status=SUCCEEDED")
    assert shown_status(html) == "PENDING"
    assert _REFRESH in html
    assert "SUCCEEDED" not in html


async def test_after_a_restart_the_order_page_finds_the_payment_through_the_return_link(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id = (await product_page_orders(shop))["book"]
    await buy(shop, "book", order_id)
    (payment_id,) = intake.payments
    intake.settle(payment_id, "SUCCEEDED")

    restarted = await start_shop(intake.url)
    try:
        status, _ = await order_page(restarted, f"/orders/{order_id}")
        assert status == 404
        status, html = await order_page(restarted, f"/orders/{order_id}?payment_id={payment_id}")
        assert status == 200 and shown_status(html) == "SUCCEEDED"
        status, html = await order_page(restarted, f"/orders/{order_id}")
        assert status == 200 and shown_status(html) == "SUCCEEDED"
    finally:
        await restarted.close()


async def test_another_orders_payment_id_is_not_shown_on_this_order(shop: TestClient, intake: FakeIntake) -> None:
    orders = await product_page_orders(shop)
    await buy(shop, "book", orders["book"])
    (payment_id,) = intake.payments
    status, html = await order_page(shop, f"/orders/{orders['mug']}?payment_id={payment_id}")
    assert status == 404
    assert 'id="payment-status"' not in html


async def test_the_remembered_payment_wins_over_the_payment_id_in_the_query(
    shop: TestClient, intake: FakeIntake
) -> None:
    orders = await product_page_orders(shop)
    await buy(shop, "book", orders["book"])
    await buy(shop, "mug", orders["mug"])
    _, mug_payment = intake.payments
    intake.settle(mug_payment, "SUCCEEDED")
    _, html = await order_page(shop, f"/orders/{orders['book']}?payment_id={mug_payment}")
    assert shown_status(html) == "PENDING"


@pytest.mark.parametrize(
    "path",
    [
        "/orders/ord_" + "a" * 24,
        "/orders/ord_" + "a" * 24 + "?payment_id=pay_nope",
        "/orders/../etc",
        "/orders/%3Cscript%3E",
    ],
)
async def test_an_unknown_order_is_a_404_page(shop: TestClient, path: str) -> None:
    status, html = await order_page(shop, path)
    assert status == 404
    assert "<script>" not in html


async def test_values_from_the_api_are_escaped(shop: TestClient, intake: FakeIntake) -> None:
    order_id = (await product_page_orders(shop))["book"]
    await buy(shop, "book", order_id)
    (payment,) = intake.payments.values()
    payment.update(description="<script>alert(1)</script>", failure_code='"><img src=x>', status="FAILED")
    _, html = await order_page(shop, f"/orders/{order_id}")
    assert "<script>alert" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_a_checkout_url_that_is_not_http_is_never_followed(shop: TestClient, intake: FakeIntake) -> None:
    intake.checkout_ready = False
    order_id = (await product_page_orders(shop))["book"]
    await buy(shop, "book", order_id)
    (payment,) = intake.payments.values()
    payment["checkout_url"] = "javascript:alert(1)"
    response = await buy(shop, "book", order_id)
    assert response.headers["Location"] == f"/orders/{order_id}"
    _, html = await order_page(shop, f"/orders/{order_id}")
    assert "javascript:" not in html


async def test_buy_with_the_intake_api_down_is_a_friendly_503_page(shop_without_intake: TestClient) -> None:
    order_id = (await product_page_orders(shop_without_intake))["book"]
    response = await buy(shop_without_intake, "book", order_id)
    html = await response.text()
    assert response.status == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Traceback" not in html and API_KEY not in html and "ClientConnector" not in html
    assert f'name="order_id" value="{order_id}"' in html  # "Try again" resubmits the same order


async def test_order_page_with_the_intake_api_down_is_a_friendly_503_page(shop_without_intake: TestClient) -> None:
    status, html = await order_page(shop_without_intake, f"/orders/ord_{'b' * 24}?payment_id=pay_{'c' * 32}")
    assert status == 503
    assert "Traceback" not in html and API_KEY not in html


@pytest.mark.parametrize(("intake_status", "shop_status"), [(500, 502), (401, 502), (503, 503)])
async def test_an_intake_error_is_a_friendly_page_without_its_details(
    shop: TestClient, intake: FakeIntake, intake_status: int, shop_status: int
) -> None:
    intake.fail_with = intake_status
    order_id = (await product_page_orders(shop))["book"]
    response = await buy(shop, "book", order_id)
    html = await response.text()
    assert response.status == shop_status
    assert "Traceback" not in html and API_KEY not in html and "boom" not in html


async def test_readiness_follows_the_intake_api(shop: TestClient, shop_without_intake: TestClient) -> None:
    assert (await shop.get("/readyz")).status == 200
    assert (await shop_without_intake.get("/readyz")).status == 503
    assert (await shop_without_intake.get("/healthz")).status == 200


async def test_logs_carry_the_payment_id_and_never_the_api_key(shop: TestClient, intake: FakeIntake) -> None:
    order_id = (await product_page_orders(shop))["book"]
    with capture_logs() as logs:
        await buy(shop, "book", order_id)
        intake.fail_with = 500
        await buy(shop, "book", order_id)
    (payment_id,) = intake.payments
    assert any(entry.get("payment_id") == payment_id for entry in logs)
    assert API_KEY not in repr(logs)


# --- coming back from the gateway, and paying again (issue 13, items 11 and 12) ---------------------------------


async def bought(shop: TestClient, intake: FakeIntake, product: str = "book") -> tuple[str, str]:
    order_id = (await product_page_orders(shop))[product]
    await buy(shop, product, order_id)
    payment_id = next(pid for pid, p in intake.payments.items() if p["reference"] == order_id)
    return order_id, payment_id


async def test_back_from_paying_the_page_waits_for_the_outcome_and_shows_it_at_once(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id, payment_id = await bought(shop, intake)
    intake.outcomes_at_read[payment_id] = (2, "SUCCEEDED", None)
    status, html = await order_page(shop, f"/orders/{order_id}?payment_id={payment_id}")
    assert status == 200 and shown_status(html) == "SUCCEEDED"
    assert "Not paid yet" not in html and 'http-equiv="refresh"' not in html
    assert intake.reads[payment_id] == 2


async def test_back_from_paying_while_the_outcome_is_late_says_confirming_and_offers_no_second_payment(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id, payment_id = await bought(shop, intake)
    status, html = await order_page(shop, f"/orders/{order_id}?payment_id={payment_id}")
    assert status == 200 and shown_status(html) == "PENDING"
    assert "<h1>Confirming your payment…</h1>" in html
    assert "Not paid yet" not in html and "Continue to payment" not in html
    assert _REFRESH in html
    assert intake.reads[payment_id] > 1, "the page did not look again before answering"


async def test_a_visit_that_does_not_come_from_the_gateway_answers_without_waiting(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id, payment_id = await bought(shop, intake)
    intake.outcomes_at_read[payment_id] = (2, "SUCCEEDED", None)
    _, html = await order_page(shop, f"/orders/{order_id}")
    assert shown_status(html) == "PENDING" and "Not paid yet?" in html
    assert intake.reads[payment_id] == 1


async def test_back_from_canceling_the_page_speaks_of_a_cancel_not_of_a_confirmation(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id, payment_id = await bought(shop, intake)
    _, html = await order_page(shop, f"/orders/{order_id}?canceled=1&payment_id={payment_id}")
    assert shown_status(html) == "PENDING"
    assert "<h1>You left the payment page</h1>" in html and "Nothing has been charged." in html
    assert "Waiting for the payment to be confirmed" not in html and "Confirming" not in html

    intake.outcomes_at_read[payment_id] = (intake.reads[payment_id] + 2, "CANCELED", None)
    _, html = await order_page(shop, f"/orders/{order_id}?canceled=1&payment_id={payment_id}")
    assert shown_status(html) == "CANCELED"
    assert "The payment was canceled. Nothing has been charged." in html
    assert '<button type="submit" id="retry-payment">Pay for this order</button>' in html


@pytest.mark.parametrize(
    ("failure_code", "reason"),
    [
        ("card_declined", "Your card was declined."),
        ("insufficient_funds", "Your card has insufficient funds."),
        ("something_new", "The payment did not go through."),
    ],
)
async def test_a_failed_payment_gives_the_reason_in_words_and_offers_another_card(
    shop: TestClient, intake: FakeIntake, failure_code: str, reason: str
) -> None:
    order_id, payment_id = await bought(shop, intake)
    intake.settle(payment_id, "FAILED", failure_code)
    _, html = await order_page(shop, f"/orders/{order_id}?payment_id={payment_id}")
    assert f'<span class="reason" id="failure-reason">{reason}</span>' in html
    assert f"<code>{failure_code}</code>" in html
    assert f'<form method="post" action="/orders/{order_id}/retry">' in html
    assert f'name="payment_id" value="{payment_id}"' in html
    assert '<button type="submit" id="retry-payment">Try another card</button>' in html


async def retry(shop: TestClient, order_id: str, payment_id: str) -> Any:
    return await shop.post(f"/orders/{order_id}/retry", data={"payment_id": payment_id}, allow_redirects=False)


async def test_another_card_is_a_new_payment_for_the_same_order_under_a_new_idempotency_key(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id, failed_id = await bought(shop, intake)
    intake.settle(failed_id, "FAILED", "card_declined")
    first = await retry(shop, order_id, failed_id)
    again = await retry(shop, order_id, failed_id)  # a double click

    assert len(intake.posts) == 3
    (first_headers, first_body), (headers, body), (headers_again, body_again) = intake.posts
    assert headers["Idempotency-Key"] == headers_again["Idempotency-Key"] == f"{order_id}.retry.{failed_id}"
    assert headers["Idempotency-Key"] != first_headers["Idempotency-Key"] == order_id
    assert body == body_again
    assert {k: body[k] for k in ("amount", "currency", "reference", "description", "return_url", "cancel_url")} == {
        k: first_body[k] for k in ("amount", "currency", "reference", "description", "return_url", "cancel_url")
    }
    assert body["metadata"] == {"order_id": order_id, "retry_of": failed_id}
    new_id = next(pid for pid in intake.payments if pid != failed_id)
    assert len(intake.payments) == 2
    assert first.status == again.status == 303
    assert first.headers["Location"] == intake.payments[new_id]["checkout_url"]

    # The order page now follows the new attempt, even from the old attempt's return link.
    _, html = await order_page(shop, f"/orders/{order_id}")
    assert shown_status(html) == "PENDING" and intake.payments[new_id]["checkout_url"] in html
    intake.settle(new_id, "SUCCEEDED")
    _, html = await order_page(shop, f"/orders/{order_id}?payment_id={failed_id}")
    assert shown_status(html) == "SUCCEEDED"


@pytest.mark.parametrize("status", ["PENDING", "SUCCEEDED"])
async def test_an_order_still_being_paid_or_paid_is_not_paid_again(
    shop: TestClient, intake: FakeIntake, status: str
) -> None:
    order_id, payment_id = await bought(shop, intake)
    intake.settle(payment_id, status)
    response = await retry(shop, order_id, payment_id)
    assert response.status == 303 and response.headers["Location"] == f"/orders/{order_id}"
    assert len(intake.posts) == 1


async def test_a_retry_naming_another_orders_payment_or_nonsense_is_a_404_page(
    shop: TestClient, intake: FakeIntake
) -> None:
    orders = await product_page_orders(shop)
    _, payment_id = await bought(shop, intake, "book")
    intake.settle(payment_id, "FAILED", "card_declined")
    assert (await retry(shop, orders["mug"], payment_id)).status == 404
    assert (await retry(shop, orders["mug"], "<script>")).status == 404
    assert (await shop.post(f"/orders/{orders['mug']}/retry", data={}, allow_redirects=False)).status == 404
    assert len(intake.posts) == 1


# --- reserve now, pay on shipping (manual capture) ------------------------------------------------------------


async def reserved_order(shop: TestClient, intake: FakeIntake) -> tuple[str, str]:
    """A bookshelf bought and authorized at the gateway: (order id, payment id)."""
    order_id = (await product_page_orders(shop))["bookshelf"]
    await buy(shop, "bookshelf", order_id)
    (payment,) = intake.payments.values()
    intake.settle(payment["id"], "AUTHORIZED")
    return order_id, payment["id"]


async def test_the_made_to_order_product_is_only_authorized_at_checkout(shop: TestClient, intake: FakeIntake) -> None:
    order_id = (await product_page_orders(shop))["bookshelf"]

    response = await buy(shop, "bookshelf", order_id)

    [(_, body)] = intake.posts
    assert (body["capture_method"], body["amount"]) == ("manual", 8900)
    assert response.status == 303
    catalogue = await (await shop.get("/")).text()
    assert "Reserve now, pay on shipping" in catalogue


async def test_a_reserved_order_shows_what_is_held_and_a_ship_button(shop: TestClient, intake: FakeIntake) -> None:
    order_id, payment_id = await reserved_order(shop, intake)

    status, html = await order_page(shop, f"/orders/{order_id}")

    assert status == 200 and shown_status(html) == "AUTHORIZED"
    assert "authorized, not yet charged" in html
    assert 'id="amount-held">89.00 USD<' in html
    assert f'action="/orders/{order_id}/ship"' in html and f'value="{payment_id}"' in html
    assert _REFRESH not in html  # a hold may last days: the page does not reload itself


async def test_ship_captures_the_held_payment_then_the_order_shows_what_was_charged(
    shop: TestClient, intake: FakeIntake
) -> None:
    order_id, payment_id = await reserved_order(shop, intake)

    shipped = await shop.post(f"/orders/{order_id}/ship", data={"payment_id": payment_id}, allow_redirects=False)
    assert (shipped.status, shipped.headers["Location"]) == (303, f"/orders/{order_id}?shipped=1")
    status, html = await order_page(shop, shipped.headers["Location"])

    assert intake.captures == [(f"{order_id}.ship.{payment_id}", payment_id)]
    assert status == 200 and shown_status(html) == "SUCCEEDED"
    assert 'id="amount-charged">89.00 USD<' in html
    assert 'id="ship-order"' not in html


async def test_shipping_twice_captures_once_and_shows_the_order_as_it_is(shop: TestClient, intake: FakeIntake) -> None:
    order_id, payment_id = await reserved_order(shop, intake)

    await shop.post(f"/orders/{order_id}/ship", data={"payment_id": payment_id}, allow_redirects=False)
    await order_page(shop, f"/orders/{order_id}?shipped=1")
    again = await shop.post(f"/orders/{order_id}/ship", data={"payment_id": payment_id}, allow_redirects=False)

    assert again.status == 303
    assert len(intake.captures) == 1  # the payment was no longer held: nothing asked the second time


async def test_ship_with_another_orders_payment_is_refused(shop: TestClient, intake: FakeIntake) -> None:
    _, payment_id = await reserved_order(shop, intake)
    other_order = (await product_page_orders(shop))["bookshelf"]

    response = await shop.post(f"/orders/{other_order}/ship", data={"payment_id": payment_id}, allow_redirects=False)

    assert response.status == 404
    assert intake.captures == []


# --- refunds heard from Paystream's verified webhooks -------------------------------------------------------


def refund_succeeded(payment_id: str, refunded: object) -> dict[str, Any]:
    refund = {"id": "re_1", "payment_id": payment_id, "status": "succeeded", "payment_amount_refunded": refunded}
    return {"id": "evt_1", "type": "refund.succeeded", "data": {"object": refund}}


def test_a_refund_webhook_notes_the_payments_refunded_total_and_a_late_older_one_changes_nothing() -> None:
    from services.storefront.orders import OrderBook
    from services.storefront.paystream_webhooks import apply_event

    orders = OrderBook()
    payment_id = "pay_" + secrets.token_hex(8)

    assert apply_event(orders, refund_succeeded(payment_id, 1999))
    assert apply_event(orders, refund_succeeded(payment_id, 500))  # the first refund's, delivered late
    assert not apply_event(orders, refund_succeeded(payment_id, "500"))
    assert not apply_event(orders, refund_succeeded("not-a-payment", 5))

    assert orders.refunded(payment_id) == 1999


def test_the_order_page_says_how_much_of_the_payment_was_refunded() -> None:
    from services.storefront.pages import render_order

    payment = {
        "status": "SUCCEEDED",
        "reference": "ord_" + "a" * 24,
        "amount": 1999,
        "currency": "EUR",
        "amount_captured": 1999,
    }

    assert '<dd id="amount-refunded">Refunded €5.00 of €19.99</dd>' in render_order(payment, refunded=500)
    assert "amount-refunded" not in render_order(payment)
