"""A wallet's daily spending limit, for unattended use: an agent holding the wallet token spends
at most this much a day, however it is written.

A wallet has no time zone (it belongs to nobody in particular), so its day is the UTC day. The
limit and what unlocks charged on one day are one field of the wallet's hash
(``keyspace.DAILY_LIMIT_FIELD``: ``<limit>|<day>|<spent>``), kept only while a limit is set: the
unlock script checks and counts it in the same atomic step that debits (``lua/unlock.lua``), and an
undo of a purchase made that day gives the spending back (``lua/refund.lua``). Spending counts from
when a limit is set; what was paid earlier that day does not.

Only what is charged counts: an item already owned, read under a pass or free under a site's daily
cap costs nothing and is never refused by the limit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from coinslot.errors import CoinslotError

DAY_MS = 24 * 60 * 60 * 1000
MAX_DAILY_LIMIT = 1_000_000  # minor units: €10,000 a day


def day_ends_ms(now_ms: int) -> int:
    """The first millisecond of the next UTC day: when the wallet's day's spending starts over."""
    return (now_ms // DAY_MS + 1) * DAY_MS


def view(value: str | None, now_ms: int) -> dict[str, Any]:
    """The limit (None: no limit), what unlocks charged today and when today ends, from the field."""
    if not value:
        return {"daily_limit": None, "spent_today": 0, "day_ends": day_ends_ms(now_ms)}
    limit, day, spent = value.split("|")
    today = str(now_ms // DAY_MS)
    return {
        "daily_limit": int(limit),
        "spent_today": int(spent) if day == today and spent else 0,
        "day_ends": day_ends_ms(now_ms),
    }


class DailyLimitReached(CoinslotError):
    """The wallet's own daily limit would be passed by this charge. A top-up does not help, so no
    top-up links: the limit starts over when the UTC day ends (``day_ends``, ms), or its holder
    raises it (``PATCH /v1/wallet``)."""

    status = 402
    type = "wallet-daily-limit"
    title = "Daily spending limit reached"

    def __init__(self, limit: int, spent: int, price: int, currency: str, *, now_ms: int) -> None:
        ends = day_ends_ms(now_ms)
        at = datetime.fromtimestamp(ends // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        super().__init__(
            f"wallet daily limit {limit} reached: spent today {spent} + price {price} > {limit}"
            f" ({currency} minor units); it starts over at {at}, when the UTC day ends",
            daily_limit=limit,
            spent_today=spent,
            price=price,
            currency=currency,
            day_ends=ends,
        )
