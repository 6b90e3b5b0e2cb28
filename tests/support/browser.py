"""A real browser for end-to-end tests: Playwright driving the system's Chromium (Debian's `chromium` package).

No browser is ever downloaded (no `playwright install`): CI installs Debian's package, and a machine without it
fails the browser tests with a message saying so.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> str:
    """The browser's path; the test fails (never skips) when it is not installed."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium); "
            "the browser tests never download a browser"
        )
    return str(CHROMIUM)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium from /usr/bin/chromium, driven by Playwright."""
    executable = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


def luhn_card_number(prefix: str = "4", length: int = 16, rng: random.Random | None = None) -> str:
    """A random card number passing the Luhn check: one no other test types, so finding it anywhere is a leak."""
    rng = rng or random.Random()
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    for index, digit in enumerate(reversed(body)):
        value = int(digit) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return body + str((10 - total % 10) % 10)


def grouped(number: str) -> str:
    """`4242424242424242` as printed on a card: `4242 4242 4242 4242`."""
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
