"""The site's day: the calendar day in the site's own time zone, which its daily cap and tab quota count.

A day need not last 24 hours: where the clocks change it lasts 23 or 25, and its end is the next
local midnight (or the first instant after it, where midnight itself is skipped).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo


class SiteDay(NamedTuple):
    day: str  # ISO date at the site
    starts_ms: int
    ends_ms: int  # the first millisecond of the next day


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _midnight_ms(zone: ZoneInfo, date: datetime) -> int:
    local = datetime.combine(date.date(), time(0), tzinfo=zone)
    # A skipped midnight (a zone that moves its clocks at 00:00) reads as the instant the day starts.
    return int(local.timestamp() * 1000)


_LAST: dict[str, SiteDay] = {}  # per time zone, the day last asked for: almost every call falls in it


def site_day(timezone: str, now_ms: int) -> SiteDay:
    """The site day that ``now_ms`` falls in, for a site in ``timezone`` (an IANA name)."""
    last = _LAST.get(timezone)
    if last is not None and last.starts_ms <= now_ms < last.ends_ms:
        return last
    zone = _zone(timezone)
    local = datetime.fromtimestamp(now_ms / 1000, zone)
    day = SiteDay(
        local.date().isoformat(),
        _midnight_ms(zone, local),
        _midnight_ms(zone, local + timedelta(days=1)),
    )
    if not day.starts_ms <= now_ms < day.ends_ms:  # cannot happen in a real zone; never cache a wrong day
        return day
    _LAST[timezone] = day
    return day


def day_at(timezone: str, day: date) -> SiteDay:
    """The site day that is the calendar date ``day`` in ``timezone``."""
    zone = _zone(timezone)
    noon = datetime.combine(day, time(12), tzinfo=zone)
    return SiteDay(day.isoformat(), _midnight_ms(zone, noon), _midnight_ms(zone, noon + timedelta(days=1)))
