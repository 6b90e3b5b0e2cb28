"""The demo shop hears of its payments by Paystream's signed webhooks (issue 11, docs/reference/storefront.md,
docs/reference/merchant-webhooks.md).

A customer who closes the tab right after paying never comes back to the shop; the order is paid anyway, from
the verified webhook. An unsigned or forged webhook changes nothing.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

import aiohttp
from playwright.async_api import Page, Route
from standardwebhooks import Webhook

from shared.webhook_secrets import new_signing_secret
from tests.support.browser import chromium, grouped, luhn_card_number
from tests.support.client import IntakeClient, payment_body
from tests.support.processes import Stack, eventually

PRODUCT = "Designing Payment Systems"


async def order_state(page: Page, url: str) -> str:
    await page.goto(url)
    return await page.locator("#order-state").inner_text()


async def test_an_order_is_paid_even_when_the_customer_closes_the_tab_right_after_paying(stack: Stack) -> None:
    shop = stack.url("storefront")
    async with chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(15_000)
        await page.goto(shop + "/")
        form = page.locator("form", has=page.get_by_role("button", name=f"Buy {PRODUCT}"))
        order_id = await form.locator("input[name=order_id]").get_attribute("value")
        assert order_id

        # The customer never comes back: the way back to the shop is cut, and the tab closed after paying.
        async def never_back(route: Route) -> None:
            await route.abort()

        await page.route(f"{shop}/orders/**", never_back)
        await page.get_by_role("button", name=f"Buy {PRODUCT}").click()
        await page.wait_for_url(f"{stack.url('sandbox_gateway')}/pay/*")
        await page.locator("#name").fill("Ada Lovelace")
        await page.locator("#card_number").press_sequentially(grouped(luhn_card_number()))
        await page.locator("#expiry").press_sequentially(f"12/{(datetime.now(UTC).year + 3) % 100:02d}")
        await page.locator("#cvc").press_sequentially("737")
        async with page.expect_response(lambda r: r.request.method == "POST" and "/pay/" in r.url) as paid:
            await page.get_by_role("button", name="Pay 19.99 USD").click()
        assert (await paid.value).status in (200, 303)
        await page.close()

        # Later, the shop (or the customer, from an e-mail) opens the order page.
        later = await browser.new_page()
        order_url = f"{shop}/orders/{order_id}"

        async def paid_by_webhook() -> bool:
            return await order_state(later, order_url) == "paid"

        await eventually(paid_by_webhook, timeout=30, interval=0.5, what="the order marked paid by the webhook")
        assert await later.locator("#payment-status").inner_text() == "SUCCEEDED"


async def test_an_unsigned_or_forged_webhook_changes_nothing(stack: Stack, http: aiohttp.ClientSession) -> None:
    intake = IntakeClient(http, stack.url("intake_api"))
    order_id = "ord_" + secrets.token_hex(12)
    _, payment, _ = await intake.create(payment_body(reference=order_id), wait=0)
    forged = json.dumps(
        {
            "id": "evt_" + secrets.token_hex(16),
            "type": "payment.succeeded",
            "created": int(datetime.now(UTC).timestamp()),
            "data": {"object": {**payment, "status": "SUCCEEDED"}},
        }
    )
    now = datetime.now(UTC)
    attempts = [
        {"content-type": "application/json"},  # unsigned
        {  # signed with a secret that is not the shop's
            "webhook-id": "evt_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(new_signing_secret()).sign("evt_1", now, forged),
        },
        {"webhook-id": "evt_1", "webhook-timestamp": "not-a-time", "webhook-signature": "v1,AAAA"},
    ]
    for headers in attempts:
        async with http.post(f"{stack.url('storefront')}/webhooks/paystream", data=forged, headers=headers) as r:
            assert r.status == 400, await r.text()
    async with http.get(f"{stack.url('storefront')}/orders/{order_id}?payment_id={payment['id']}") as r:
        page = await r.text()
    assert '<strong id="order-state">not paid yet</strong>' in page


async def test_an_order_whose_payment_was_refunded_shows_it_from_the_verified_webhook(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    intake = IntakeClient(http, stack.url("intake_api"))
    order_id = "ord_" + secrets.token_hex(12)
    payment = await intake.paid(reference=order_id, amount=1999, currency="EUR")
    assert payment["status"] == "SUCCEEDED"

    status, refund, _ = await intake.refund(payment["id"], {"amount": 500})
    assert status == 201, refund
    assert (await intake.refund_final(refund["id"]))["status"] == "succeeded"

    async def order_page_shows_the_refund() -> str | None:
        async with http.get(f"{stack.url('storefront')}/orders/{order_id}?payment_id={payment['id']}") as r:
            page = await r.text()
        return page if 'id="amount-refunded"' in page else None

    page = await eventually(order_page_shows_the_refund, timeout=20, what="the refund on the order page")
    assert '<dd id="amount-refunded">Refunded €5.00 of €19.99</dd>' in page
