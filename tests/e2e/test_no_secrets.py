"""A customer pays in a real browser, typing a card on the hosted page (issue 6, docs/reference/sandbox.md,
docs/reference/storefront.md, docs/reference/records.md, docs/reference/observability.md).

The order page must then show SUCCEEDED, and the card number, the API keys and the webhook secret must appear in
no log line of any service and no row of the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import expect

from tests.support.browser import chromium, grouped, luhn_card_number
from tests.support.processes import Stack

API_KEYS = ("sk_test_demo", "sk_test_other")
WEBHOOK_SECRET = "whsec_sandbox_dev"
USER_SCHEMAS_QUERY = """
    SELECT table_schema, table_name FROM information_schema.tables
    WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')
    ORDER BY 1, 2
"""


@dataclass(frozen=True)
class BrowserPayment:
    card_number: str
    payment_id: str
    status_shown: str
    screenshot: Path

    @property
    def forbidden(self) -> tuple[str, ...]:
        return (self.card_number, grouped(self.card_number), *API_KEYS, WEBHOOK_SECRET)


@pytest.fixture(scope="module")
async def paid_in_browser(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> BrowserPayment:
    """Buy on the storefront, type a fresh card on the sandbox's page, come back to the order page."""
    card = luhn_card_number()
    screenshot = tmp_path_factory.mktemp("browser") / "order-page.png"
    async with chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(15_000)
        await page.goto(stack.url("storefront") + "/")
        await page.get_by_role("button", name="Buy Designing Payment Systems").click()

        await page.wait_for_url(f"{stack.url('sandbox_gateway')}/pay/*")
        await page.locator("#name").fill("Ada Lovelace")
        await page.locator("#card_number").press_sequentially(grouped(card))
        await page.locator("#expiry").press_sequentially(f"12/{(datetime.now(UTC).year + 3) % 100:02d}")
        await page.locator("#cvc").press_sequentially("737")
        await page.get_by_role("button", name="Pay 19.99 USD").click()

        await page.wait_for_url(f"{stack.url('storefront')}/orders/*")
        status = page.locator("#payment-status")
        # The order page reloads itself every 2 s while the payment is PENDING.
        await expect(status).to_have_text("SUCCEEDED", timeout=30_000)
        await page.screenshot(path=screenshot, full_page=True)
        payment_id = page.url.partition("payment_id=")[2]
        return BrowserPayment(card, payment_id, await status.inner_text(), screenshot)


async def database_rows(database_url: str) -> dict[str, list[str]]:
    """Every row of every table outside the system catalogs, as text (all columns, jsonb included)."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(USER_SCHEMAS_QUERY)
        return {
            f"{t['table_schema']}.{t['table_name']}": await conn.fetchval(
                f'SELECT coalesce(array_agg(t::text), ARRAY[]::text[]) FROM "{t["table_schema"]}"."{t["table_name"]}" t'
            )
            for t in tables
        }
    finally:
        await conn.close()


def test_a_card_typed_on_the_hosted_page_pays_the_order_shown_succeeded(paid_in_browser: BrowserPayment) -> None:
    assert paid_in_browser.status_shown == "SUCCEEDED"
    assert paid_in_browser.payment_id.startswith("pay_")
    assert paid_in_browser.screenshot.stat().st_size > 0
    print(f"\norder page screenshot: {paid_in_browser.screenshot}")


def test_no_log_line_of_any_service_holds_the_card_number_an_api_key_or_the_webhook_secret(
    paid_in_browser: BrowserPayment, stack: Stack
) -> None:
    lines = stack.logs().splitlines()
    assert any(paid_in_browser.payment_id in line for line in lines), "the payment left no log line at all"
    for line in lines:
        leaked = [secret for secret in paid_in_browser.forbidden if secret in line]
        assert not leaked, f"{leaked} in log line: {line}"


def test_every_log_line_is_json_naming_its_service(paid_in_browser: BrowserPayment, stack: Stack) -> None:
    services = {
        "intake-api",
        "gateway-worker",
        "webhook-receiver",
        "ledger",
        "notifier",
        "sandbox-gateway",
        "storefront",
        "console",
    }
    seen = set()
    for line in filter(None, stack.logs().splitlines()):
        record = json.loads(line)
        assert record["service"] in services, line
        seen.add(record["service"])
    assert seen == services


async def test_no_database_row_holds_the_card_number_an_api_key_or_the_webhook_secret(
    paid_in_browser: BrowserPayment, stack: Stack
) -> None:
    rows = await database_rows(stack.env["DATABASE_URL"])
    assert {"ledger.payment_requests", "ledger.payment_logs", "intake.payments", "intake.outbox"} <= set(rows)
    assert any(paid_in_browser.payment_id in row for row in rows["ledger.payment_logs"]), "the payment is not there"
    for table, table_rows in rows.items():
        for row in table_rows:
            leaked = [secret for secret in paid_in_browser.forbidden if secret in row]
            assert not leaked, f"{leaked} in a row of {table}: {row}"
