"""The overview: today's payments (the browser's today) by status, count and volume, as a server-drawn SVG chart."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from services.console.local_time import browser_zone, start_of_day, today, zone_name
from services.console.merchant import merchant_api
from services.console.money import format_money
from services.console.payments import statuses
from services.console.rendering import render

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


def totals_by_status(summary: list[dict[str, Any]]) -> list[StatusTotal]:
    """Count and volume of each status from the API's totals per (status, currency): volumes stay per currency,
    since amounts of different currencies never add up."""
    counts: Counter[str] = Counter()
    volumes: dict[str, dict[str, int]] = defaultdict(dict)
    for total in summary:
        status = str(total.get("status"))
        if isinstance(total.get("count"), int):
            counts[status] += total["count"]
        if isinstance(total.get("amount"), int) and isinstance(total.get("currency"), str):
            volumes[status][total["currency"]] = volumes[status].get(total["currency"], 0) + total["amount"]
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


async def show_overview(request: web.Request) -> web.Response:
    """Today's payments (the browser's today) by status: the chart and the table."""
    zone = browser_zone(request)
    since = start_of_day(today(zone), zone)
    api = await merchant_api(request)
    summary = await api.get("/v1/payments/summary", {"created[gte]": since.isoformat()})
    totals = totals_by_status(list(summary.get("data", [])))
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
        "total_count": sum(total.count for total in totals),
        "since": since,
        "zone": zone_name(zone),
    }
    return await render(request, "overview.html", context)
