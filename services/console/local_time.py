"""The browser's time zone, which the console's script reports in the `tz` cookie: "today" and the date filters
mean the staff member's day, not the server's."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, available_timezones

from aiohttp import web

TZ_COOKIE = "tz"


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def browser_zone(request: web.Request) -> tzinfo:
    """The zone the browser said it is in, if it names a real IANA zone; else UTC (first visit, no script)."""
    name = request.cookies.get(TZ_COOKIE, "")
    if name in _known_zones():
        return ZoneInfo(name)
    return UTC


def zone_name(zone: tzinfo) -> str:
    """The zone's IANA name, as the overview names it."""
    return getattr(zone, "key", None) or "UTC"


def start_of_day(day: date, zone: tzinfo) -> datetime:
    """Midnight of `day` where the browser is, as a UTC moment."""
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def end_of_day(day: date, zone: tzinfo) -> datetime:
    """The last microsecond of `day` where the browser is, as a UTC moment (the API's bounds are inclusive)."""
    return start_of_day(day + timedelta(days=1), zone) - timedelta(microseconds=1)


def today(zone: tzinfo) -> date:
    """Today's date where the browser is."""
    return datetime.now(zone).date()
