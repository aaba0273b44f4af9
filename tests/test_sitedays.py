"""The site's day: the calendar day in the site's time zone, however long the clocks make it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coinslot.sitedays import site_day

HOUR_MS = 3600 * 1000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("zone", "at", "day", "starts", "hours"),
    [
        ("UTC", "2026-01-05T23:59:59.999", "2026-01-05", "2026-01-05T00:00:00", 24),
        ("Europe/Berlin", "2026-03-29T12:00:00", "2026-03-29", "2026-03-28T23:00:00", 23),  # summer time begins
        ("Europe/Berlin", "2026-10-25T12:00:00", "2026-10-25", "2026-10-24T22:00:00", 25),  # and ends
        ("Pacific/Auckland", "2026-01-05T11:00:00", "2026-01-06", "2026-01-05T11:00:00", 24),  # ahead of UTC
        ("America/Havana", "2026-03-08T12:00:00", "2026-03-08", "2026-03-08T05:00:00", 23),  # no midnight that day
    ],
)
def test_a_site_day_starts_at_local_midnight_and_lasts_as_long_as_the_clocks_say(
    zone: str, at: str, day: str, starts: str, hours: int
) -> None:
    found = site_day(zone, ms(at))
    assert (found.day, found.starts_ms, found.ends_ms - found.starts_ms) == (day, ms(starts), hours * HOUR_MS)


def test_days_follow_each_other_without_gap_or_overlap() -> None:
    for zone in ("Europe/Berlin", "America/Havana", "Australia/Lord_Howe", "Asia/Kathmandu"):
        now = ms("2026-01-01T00:00:00")
        while now < ms("2027-01-01T00:00:00"):
            day = site_day(zone, now)
            assert day.starts_ms <= now < day.ends_ms
            following = site_day(zone, day.ends_ms)
            assert following.starts_ms == day.ends_ms and following.day > day.day
            assert site_day(zone, day.ends_ms - 1) == day  # the last millisecond belongs to it
            now = day.ends_ms
