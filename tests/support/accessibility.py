"""Accessibility checks in a real browser: axe-core (from npm, `npm ci`) and keyboard reachability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING_IMPACTS = ("serious", "critical")


def require_axe() -> Path:
    """axe-core's browser build; the test fails (never skips) when `npm ci` has not installed it."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `npm ci` in the repository root (make test does)")
    return AXE


async def inject_axe(context: BrowserContext) -> None:
    """axe in every page of the context, added through the DevTools protocol: a page's own Content-Security-Policy
    (script-src 'self') would refuse it as an inline script, and that policy is part of what is tested."""
    await context.add_init_script(path=str(require_axe()))


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """What axe finds on the page as it stands (WCAG 2.x A and AA rules and best practices), one dict per rule."""
    return list(
        await page.evaluate(
            """async () => {
                const result = await axe.run(document, {resultTypes: ["violations"]});
                return result.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.map(n => n.target.join(" ")),
                }));
            }"""
        )
    )


async def unreachable_by_keyboard(page: Page) -> list[str]:
    """The visible, enabled controls that Tab never reaches, starting from the top of the page."""
    count = await page.evaluate(
        """() => {
            const controls = [...document.querySelectorAll(
                'a[href], button, input:not([type="hidden"]), select, textarea, [tabindex]:not([tabindex="-1"])'
            )].filter(el => !el.disabled && el.getClientRects().length > 0
                           && getComputedStyle(el).visibility !== "hidden");
            controls.forEach((el, i) => el.setAttribute("data-keyboard-check", String(i)));
            document.activeElement && document.activeElement.blur();
            window.scrollTo(0, 0);
            return controls.length;
        }"""
    )
    reached: set[str] = set()
    await page.evaluate("() => document.body.focus()")
    # A date input takes a Tab stop per part (day, month, year): room for those, and done once all are reached.
    for _ in range(4 * count + 10):
        await page.keyboard.press("Tab")
        marker = await page.evaluate("() => document.activeElement && document.activeElement.dataset.keyboardCheck")
        if marker is not None:
            reached.add(marker)
        if len(reached) == count:
            break
    return list(
        await page.evaluate(
            """(reached) => [...document.querySelectorAll("[data-keyboard-check]")]
                .filter(el => !reached.includes(el.dataset.keyboardCheck))
                .map(el => el.outerHTML.slice(0, 120))""",
            sorted(reached),
        )
    )
