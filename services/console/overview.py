"""The overview: today's payments (the browser's today) by status, count and volume, as a server-drawn SVG chart."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from services.console.intake import MerchantApi
from services.console.local_time import browser_zone, start_of_day, today, zone_name
from services.console.merchant import merchant_api
from services.console.money import format_money
from services.console.payments import statuses
from services.console.rendering import render

# The overview reads today's payments a page at a time; past this many it says it counted only these.
MAX_COUNTED = 2000
_PAGE = 100

CHART_WIDTH, BAR_HEIGHT, BAR_GAP, LABEL_WIDTH, VALUE_WIDTH = 640, 26, 12, 120, 60


@dataclass(frozen=True)
class StatusTotal:
    status: str
    count: int
    volume: dict[str, int]  # currency -> amount in minor units

    @property
    def volume_text(self) -> str:
        return ", ".join(format_money(amount, currency) for currency, amount in sorted(self.volume.items())) or "—"


@dataclass(frozen=True)
class Bar:
    status: str
    count: int
    y: int
    width: int


def totals_by_status(payments: list[dict[str, Any]]) -> list[StatusTotal]:
    """Count and volume (per currency: amounts of different currencies never add up) of each status."""
    counts: Counter[str] = Counter()
    volumes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for payment in payments:
        status = str(payment.get("status"))
        counts[status] += 1
        if isinstance(payment.get("amount"), int) and isinstance(payment.get("currency"), str):
            volumes[status][payment["currency"]] += payment["amount"]
    known = statuses()
    order = known + sorted(set(counts) - set(known))
    return [StatusTotal(status, counts[status], dict(volumes[status])) for status in order]


def chart_bars(totals: list[StatusTotal]) -> tuple[list[Bar], int]:
    """Horizontal bars, one per status, as long as its count is against the largest; the chart's height."""
    largest = max((total.count for total in totals), default=0)
    room = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    bars = [
        Bar(
            total.status,
            total.count,
            index * (BAR_HEIGHT + BAR_GAP),
            round(room * total.count / largest) if largest else 0,
        )
        for index, total in enumerate(totals)
    ]
    return bars, len(bars) * (BAR_HEIGHT + BAR_GAP)


async def todays_payments(api: MerchantApi, since: str) -> tuple[list[dict[str, Any]], bool]:
    """Every payment created since `since` (up to MAX_COUNTED), and whether there were more."""
    payments: list[dict[str, Any]] = []
    query = {"limit": str(_PAGE), "created[gte]": since}
    while True:
        listed = await api.get("/v1/payments", query)
        payments.extend(listed.get("data", []))
        if not listed.get("has_more") or not payments:
            return payments, False
        if len(payments) >= MAX_COUNTED:
            return payments, True
        query["starting_after"] = payments[-1]["id"]


async def show_overview(request: web.Request) -> web.Response:
    """Today's payments (the browser's today) by status: the chart and the table."""
    zone = browser_zone(request)
    since = start_of_day(today(zone), zone)
    payments, truncated = await todays_payments(await merchant_api(request), since.isoformat())
    totals = totals_by_status(payments)
    bars, height = chart_bars(totals)
    context = {
        "totals": totals,
        "bars": bars,
        "chart": {
            "width": CHART_WIDTH,
            "height": max(height, BAR_HEIGHT),
            "label_width": LABEL_WIDTH,
            "bar_height": BAR_HEIGHT,
        },
        "total_count": len(payments),
        "truncated": truncated,
        "max_counted": MAX_COUNTED,
        "since": since,
        "zone": zone_name(zone),
    }
    return await render(request, "overview.html", context)
