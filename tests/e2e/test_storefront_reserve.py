"""The demo shop's "reserve now, pay on shipping" product in a browser (docs/reference/capture.md): checkout only
authorizes the card; the order page's Ship captures the hold and then shows what was charged."""

from __future__ import annotations

from datetime import UTC, datetime

from playwright.async_api import Page

from tests.support.browser import chromium, grouped, luhn_card_number
from tests.support.processes import Stack, eventually

PRODUCT = "Made-to-Order Bookshelf"


async def status_after_reload(page: Page) -> str:
    await page.reload()
    return await page.locator("#payment-status").inner_text()


async def test_a_reserved_order_is_authorized_at_checkout_and_charged_when_shipped(stack: Stack) -> None:
    shop = stack.url("storefront")
    async with chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(15_000)
        await page.goto(shop + "/")
        await page.get_by_role("button", name=f"Buy {PRODUCT}").click()
        await page.wait_for_url(f"{stack.url('sandbox_gateway')}/pay/*")
        assert "authorized now, not yet charged" in await page.locator("#hold-note").inner_text()
        await page.locator("#name").fill("Ada Lovelace")
        await page.locator("#card_number").press_sequentially(grouped(luhn_card_number()))
        await page.locator("#expiry").press_sequentially(f"12/{(datetime.now(UTC).year + 3) % 100:02d}")
        await page.locator("#cvc").press_sequentially("737")
        await page.get_by_role("button", name="Authorize 89.00 USD").click()
        await page.wait_for_url(f"{shop}/orders/*")

        async def held() -> bool:
            return await status_after_reload(page) == "AUTHORIZED"

        await eventually(held, timeout=30, interval=0.5, what="the order's payment AUTHORIZED")
        assert await page.locator("#amount-held").inner_text() == "89.00 USD"
        assert await page.locator("#order-state").inner_text() == "not paid yet"

        await page.get_by_role("button", name="Ship").click()

        async def charged() -> bool:
            return await page.locator("#payment-status").inner_text() == "SUCCEEDED" or (
                await status_after_reload(page) == "SUCCEEDED"
            )

        await eventually(charged, timeout=30, interval=0.5, what="the shipped order's payment SUCCEEDED")
        assert await page.locator("#amount-charged").inner_text() == "89.00 USD"
        assert await page.locator("#ship-order").count() == 0
