"""A customer in a real browser (issue 13, items 11 to 14): the hosted page names the shop and says Test mode,
keeps what was typed right after a mistake, a declined card offers another card for the same order, and back
from paying the order page never asks to pay again while the outcome is on its way.

Screenshots of every step go to the test's temporary directory (printed with -s).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, Response, expect

from tests.support.browser import chromium
from tests.support.processes import Stack

EXPIRY = f"12/{(datetime.now(UTC).year + 3) % 100:02d}"
DECLINED = "4000 0000 0000 0002"
SUCCEEDS = "4242 4242 4242 4242"
# Longer than the order page's wait for the outcome (2 s), so the page has to answer before the webhook lands.
LATE_WEBHOOK_SECONDS = 5
_ORDER_PAGE = re.compile(r".*/orders/ord_[0-9a-f]+(\?.*)?$")


class OrderPages:
    """Every order page the browser was served, in order (meta refreshes included), as HTML.

    Each body is read as its response arrives, before a refresh or a click replaces the document.
    """

    def __init__(self) -> None:
        self.served: list[tuple[str, str]] = []
        self._reading: list[asyncio.Task[None]] = []

    def watch(self, response: Response) -> None:
        if response.request.resource_type == "document" and _ORDER_PAGE.match(response.url) and response.ok:
            self._reading.append(asyncio.create_task(self._read(response)))

    async def _read(self, response: Response) -> None:
        self.served.append((response.url, await response.text()))

    async def all(self) -> list[tuple[str, str]]:
        await asyncio.gather(*self._reading)
        return self.served


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


@pytest.fixture
async def browser_page(browser: Browser) -> AsyncIterator[tuple[Page, OrderPages]]:
    """A fresh page (its own cookies and cache) whose order pages are recorded."""
    pages = OrderPages()
    context = await browser.new_context(viewport={"width": 900, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    page.on("response", pages.watch)
    yield page, pages
    await context.close()


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("checkout-screens")
    print(f"\nscreenshots: {folder}")
    return folder


async def buy(page: Page, stack: Stack, product: str) -> None:
    await page.goto(stack.url("storefront") + "/")
    await page.get_by_role("button", name=f"Buy {product}").click()
    await page.wait_for_url(f"{stack.url('sandbox_gateway')}/pay/*")


async def fill_card(page: Page, card: str, cvc: str, *, name: str = "Ada Lovelace") -> None:
    await page.locator("#name").fill(name)
    await page.locator("#card_number").fill(card)
    await page.locator("#expiry").fill(EXPIRY)
    await page.locator("#cvc").fill(cvc)


async def test_a_typo_then_a_declined_card_then_another_card_pays_the_same_order(
    stack: Stack, browser_page: tuple[Page, OrderPages], screenshots: Path
) -> None:
    page, order_pages = browser_page
    await buy(page, stack, "Designing Payment Systems")

    # 14: whom the customer pays, and that it is a test.
    await expect(page.locator("#merchant-name")).to_have_text("Paystream demo shop")
    await expect(page.locator("#test-mode")).to_be_visible()
    await expect(page.locator("#test-mode")).to_have_text("Test mode")
    await page.screenshot(path=screenshots / "1-hosted-page.png", full_page=True)

    # 13: a two-digit CVC is refused; everything else stays as typed and only the CVC is marked.
    await fill_card(page, DECLINED, "12")
    await page.get_by_role("button", name="Pay 19.99 USD").click()
    await expect(page.locator(".alert")).to_contain_text("security code")
    await expect(page.locator("#name")).to_have_value("Ada Lovelace")
    await expect(page.locator("#card_number")).to_have_value(DECLINED)
    await expect(page.locator("#expiry")).to_have_value(EXPIRY)
    await expect(page.locator("#cvc")).to_have_value("")
    assert await page.locator('input[aria-invalid="true"]').evaluate_all("els => els.map(e => e.id)") == ["cvc"]
    await page.screenshot(path=screenshots / "2-cvc-refused-fields-kept.png", full_page=True)

    # 12: declined; the order page says why in words and offers another card.
    await page.locator("#cvc").fill("737")
    await page.get_by_role("button", name="Pay 19.99 USD").click()
    await page.wait_for_url(f"{stack.url('storefront')}/orders/*")
    order_path = page.url.split("?")[0]
    await expect(page.locator("#payment-status")).to_have_text("FAILED")
    await expect(page.locator("#failure-reason")).to_have_text("Your card was declined.")
    await page.screenshot(path=screenshots / "3-declined.png", full_page=True)
    declined_url = page.url

    seen = len(await order_pages.all())
    await page.get_by_role("button", name="Try another card").click()
    await page.wait_for_url(f"{stack.url('sandbox_gateway')}/pay/*")
    await fill_card(page, SUCCEEDS, "737")
    await page.get_by_role("button", name="Pay 19.99 USD").click()
    await page.wait_for_url(f"{order_path}?payment_id=*")
    await expect(page.locator("#payment-status")).to_have_text("SUCCEEDED", timeout=30_000)
    await page.screenshot(path=screenshots / "4-succeeded-after-another-card.png", full_page=True)

    # The same order, paid by a second payment; the first stays FAILED.
    first_id = declined_url.partition("payment_id=")[2]
    second_id = page.url.partition("payment_id=")[2]
    assert first_id and second_id and first_id != second_id
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk_test_demo"}) as http:
        for payment_id, status in ((first_id, "FAILED"), (second_id, "SUCCEEDED")):
            async with http.get(f"{stack.url('intake_api')}/v1/payments/{payment_id}") as response:
                payment = await response.json()
                assert (payment["status"], payment["reference"]) == (status, order_path.rsplit("/", 1)[1])
    # 11: back from paying, no page asked the customer to pay again.
    returned = [html for url, html in (await order_pages.all())[seen:] if "payment_id=" in url]
    assert returned, "no order page was served after paying"
    for html in returned:
        assert "Not paid yet" not in html and "Continue to payment" not in html


async def test_back_from_paying_before_the_webhook_the_page_says_confirming_then_shows_the_outcome(
    stack: Stack, browser_page: tuple[Page, OrderPages], screenshots: Path
) -> None:
    page, order_pages = browser_page
    faults = f"{stack.url('sandbox_gateway')}/_sandbox/faults"
    async with aiohttp.ClientSession(headers=stack.sandbox_admin_headers) as http:
        async with http.post(faults, json={"webhook_delay_seconds": LATE_WEBHOOK_SECONDS}) as response:
            assert response.status == 200, await response.text()
        try:
            await buy(page, stack, "Paystream Mug")
            await fill_card(page, SUCCEEDS, "737")
            await page.get_by_role("button", name="Pay 12.50 USD").click()
        finally:
            async with http.delete(faults) as response:
                assert response.status == 200
    await page.wait_for_url(f"{stack.url('storefront')}/orders/*")
    await expect(page.locator("h1")).to_have_text("Confirming your payment…")
    await expect(page.locator("#payment-status")).to_have_text("PENDING")
    await page.screenshot(path=screenshots / "5-confirming.png", full_page=True)
    # The page refreshes itself until the late webhook has been applied.
    await expect(page.locator("#payment-status")).to_have_text("SUCCEEDED", timeout=30_000)
    await page.screenshot(path=screenshots / "6-confirmed.png", full_page=True)
    served = await order_pages.all()
    assert served
    for _, html in served:
        assert "Not paid yet" not in html


async def test_back_from_canceling_the_page_says_canceled_and_offers_to_pay(
    stack: Stack, browser_page: tuple[Page, OrderPages], screenshots: Path
) -> None:
    page, order_pages = browser_page
    await buy(page, stack, "State Machine Poster")
    await page.get_by_role("button", name="Cancel and return to the shop").click()
    await page.wait_for_url(f"{stack.url('storefront')}/orders/*")
    await expect(page.locator("#payment-status")).to_have_text("CANCELED", timeout=30_000)
    await expect(page.locator("#order-hint")).to_have_text("The payment was canceled. Nothing has been charged.")
    await expect(page.get_by_role("button", name="Pay for this order")).to_be_visible()
    await page.screenshot(path=screenshots / "7-canceled.png", full_page=True)
    served = await order_pages.all()
    assert served
    for _, html in served:
        assert "Waiting for the payment to be confirmed" not in html and "Confirming your payment" not in html
