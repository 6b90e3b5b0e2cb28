"""A shop's staff member at the console in a real browser (issue 22): signs in, finds a paid storefront order by its
reference, refunds part of it and sees the history update, registers a webhook endpoint and sees its secret once,
redelivers an event, and signs out, with no error in the browser's console, no serious or critical axe finding,
and every control reachable by keyboard.

Screenshots of every page, at a desktop and a phone-sized viewport, and axe's findings (axe-report.json) go to
test-output/console/ in the repository.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, ViewportSize, expect

from tests.support.accessibility import BLOCKING_IMPACTS, axe_violations, inject_axe, unreachable_by_keyboard
from tests.support.browser import chromium
from tests.support.client import IntakeClient, payment_body
from tests.support.console import DEMO_KEY
from tests.support.processes import ROOT, Stack

OUTPUT = ROOT / "test-output" / "console"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
EXPIRY = f"12/{(datetime.now(UTC).year + 3) % 100:02d}"


class ConsoleAudit:
    """What the browser said while the console was used, and what axe found on each page."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.findings: dict[str, list[dict[str, Any]]] = {}

    def watch(self, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.errors.append(f"{page.url}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))

    async def check(self, page: Page, name: str) -> None:
        """axe and the keyboard on the page as it is now, and its screenshot at the desktop size."""
        self.findings[name] = await axe_violations(page)
        blocking = [v for v in self.findings[name] if v["impact"] in BLOCKING_IMPACTS]
        assert not blocking, f"{name}: axe found {json.dumps(blocking, indent=2)}"
        unreachable = await unreachable_by_keyboard(page)
        assert not unreachable, f"{name}: not reachable by Tab: {unreachable}"
        await page.screenshot(path=OUTPUT / f"{name}-desktop.png", full_page=True)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def output() -> Path:
    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True)
    print(f"\nconsole screenshots and axe report: {OUTPUT}")
    return OUTPUT


async def paid_storefront_order(browser: Browser, stack: Stack) -> str:
    """A customer buys a book at the demo shop and pays with 4242…: the order's reference (its order id)."""
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(20_000)
    try:
        await page.goto(stack.url("storefront") + "/")
        await page.get_by_role("button", name="Buy Designing Payment Systems").click()
        await page.wait_for_url(f"{stack.url('sandbox_gateway')}/pay/*")
        await page.locator("#name").fill("Ada Lovelace")
        await page.locator("#card_number").fill("4242 4242 4242 4242")
        await page.locator("#expiry").fill(EXPIRY)
        await page.locator("#cvc").fill("737")
        await page.get_by_role("button", name="Pay 19.99 USD").click()
        await page.wait_for_url(f"{stack.url('storefront')}/orders/*")
        await expect(page.locator("#payment-status")).to_have_text("SUCCEEDED", timeout=30_000)
        found = re.search(r"/orders/(ord_[0-9a-f]+)", page.url)
        assert found, page.url
        return found.group(1)
    finally:
        await context.close()


async def test_staff_find_an_order_refund_it_manage_webhooks_redeliver_and_sign_out(
    browser: Browser, stack: Stack, output: Path
) -> None:
    order = await paid_storefront_order(browser, stack)
    console = stack.url("console")
    audit = ConsoleAudit()
    context = await browser.new_context(viewport=DESKTOP)
    await inject_axe(context)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    audit.watch(page)
    try:
        # Signing in from a deep link comes back to it.
        await page.goto(f"{console}/payments?q={order}")
        await expect(page).to_have_url(re.compile(r"/sign-in\?next="))
        await audit.check(page, "1-sign-in")
        await page.get_by_label("API key").fill(DEMO_KEY)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{console}/payments?q={order}")
        await expect(page.locator("#payments-results")).to_contain_text(order)

        await page.get_by_role("link", name="Overview").click()
        await expect(page.get_by_role("heading", name="Today", exact=True)).to_be_visible()
        await expect(page.locator("svg.chart")).to_be_visible()
        await audit.check(page, "2-overview")

        # The search is an htmx partial update: only the results change (the page is not loaded again: what a
        # script left on it stays), and the URL follows.
        await page.get_by_role("link", name="Payments").click()
        await page.evaluate("() => { window.sameDocument = true; }")
        await page.get_by_label("Reference or customer e-mail").fill(order)
        await page.get_by_role("button", name="Search").click()
        await expect(page).to_have_url(re.compile(rf"/payments\?q={order}"))
        assert await page.evaluate("() => window.sameDocument === true")
        result = page.locator("#payments-results").get_by_role("link", name=order)
        await expect(result).to_have_count(1)
        await expect(page.locator("#payments-results")).to_contain_text("SUCCEEDED")
        await audit.check(page, "3-payments")

        await result.click()
        await expect(page.locator("h1")).to_contain_text("19.99 USD")
        await expect(page.locator("#history")).to_contain_text("SUCCEEDED")
        payment_url = page.url.split("?")[0]
        # (axe runs after the refund: it leaves empty style attributes on what it measured, which htmx's swap would
        # copy onto the new form, and the CSP would then rightly report.)

        # Part of it refunded, the form posted by htmx: the refund and what is left show in place.
        await page.get_by_label(re.compile("Amount to refund")).fill("5")
        await page.get_by_role("button", name="Refund", exact=True).click()
        await expect(page.get_by_role("status")).to_contain_text("Refund requested")
        await expect(page.locator("#refunds table")).to_contain_text("5.00 USD")
        await expect(page.locator("#refundable")).to_have_text("14.99 USD")
        # The refund's outcome reaches the history (and the refund's status) once the provider has answered.
        for _ in range(60):
            if (
                "succeeded" in await page.locator("#refunds table").inner_text()
                and "re_" in await page.locator("#history").inner_text()
            ):
                break
            await page.wait_for_timeout(500)
            await page.goto(payment_url)
        await expect(page.locator("#refunds table")).to_contain_text("succeeded")
        await expect(page.locator("#history")).to_contain_text("refund re_")
        await audit.check(page, "4-payment")

        # A webhook endpoint: its secret shown once, then never again.
        await page.get_by_role("link", name="Webhooks").click()
        endpoint = f"http://127.0.0.1:9/console-browser-test-{order}"
        await page.get_by_label("Endpoint URL").fill(endpoint)
        await page.get_by_label("payment.succeeded").check()
        await page.get_by_role("button", name="Add endpoint").click()
        secret = page.get_by_label("Signing secret")
        await expect(secret).to_have_value(re.compile(r"^whsec_"))
        await expect(page.get_by_text("it is shown only this once")).to_be_visible()
        await audit.check(page, "5-endpoint-secret-shown-once")
        await page.get_by_role("link", name="Webhooks").click()
        await expect(page.locator("table")).to_contain_text(endpoint)
        await expect(page.get_by_label("Signing secret")).to_have_count(0)
        assert "whsec_" not in await page.content()

        # The payment's events, one of them redelivered.
        await page.goto(payment_url)
        await page.get_by_role("link", name="Webhook events of this payment").click()
        await audit.check(page, "6-events")
        await page.locator("table").get_by_role("link").first.click()
        await expect(page.get_by_role("heading", name="Deliveries")).to_be_visible()
        await page.get_by_role("button", name="Redeliver").click()
        await expect(page.get_by_role("status")).to_contain_text("Redelivery queued")
        await audit.check(page, "7-event-redelivered")

        # The same pages on a phone.
        await page.set_viewport_size(PHONE)
        for name, path in (
            ("2-overview", "/"),
            ("3-payments", f"/payments?q={order}"),
            ("4-payment", payment_url.removeprefix(console)),
            ("6-events", "/developers/events"),
            ("8-webhooks", "/developers/webhooks"),
        ):
            await page.goto(console + path)
            findings = await axe_violations(page)
            blocking = [v for v in findings if v["impact"] in BLOCKING_IMPACTS]
            assert not blocking, f"{name} on a phone: {blocking}"
            audit.findings[f"{name}-phone"] = findings
            await page.screenshot(path=output / f"{name}-phone.png", full_page=True)
        await page.set_viewport_size(DESKTOP)

        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("status")).to_have_text("You are signed out.")
        await page.goto(f"{console}/payments")
        await expect(page).to_have_url(re.compile(r"/sign-in\?next=%2Fpayments"))
        await audit.check(page, "9-signed-out")
    finally:
        (output / "axe-report.json").write_text(json.dumps(audit.findings, indent=2) + "\n")
        await context.close()
    assert not audit.errors, "the browser's console reported errors:\n" + "\n".join(audit.errors)


async def test_markup_in_a_payment_is_inert_in_the_browser(browser: Browser, stack: Stack, output: Path) -> None:
    """A payment whose customer-typed fields carry script and attribute-breaking markup shows them as text: no
    script runs, no element is made from them, and the page's policy is never even asked to block one."""
    hostile = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    async with aiohttp.ClientSession() as http:
        intake = IntakeClient(http, stack.url("intake_api"))
        status, payment, _ = await intake.create(
            payment_body(
                reference=f"<script>alert(3)</script>{secrets.token_hex(3)}",
                description=hostile,
                customer_email=f'"><img/src=x/onerror=alert(4)>{secrets.token_hex(3)}@example.com',
                metadata={"<b>note</b>": hostile},
            ),
            wait=0,
        )
        assert status == 201, payment
    console = stack.url("console")
    audit = ConsoleAudit()
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    audit.watch(page)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    try:
        await page.goto(f"{console}/sign-in?next=/payments/{payment['id']}")
        await page.get_by_label("API key").fill(DEMO_KEY)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("h1")).to_contain_text("<script>alert(3)</script>")
        details = page.locator("dl.fields")
        await expect(details).to_contain_text(hostile)
        await expect(details).to_contain_text('"><img/src=x/onerror=alert(4)>')
        await expect(details).to_contain_text("<b>note</b>")
        assert await page.locator("main img, main script, main b").count() == 0
        await page.screenshot(path=output / "10-hostile-payment-desktop.png", full_page=True)
    finally:
        await context.close()
    assert dialogs == [], f"a script ran: {dialogs}"
    assert not audit.errors, "the browser's console reported errors (a blocked script, say):\n" + "\n".join(
        audit.errors
    )
