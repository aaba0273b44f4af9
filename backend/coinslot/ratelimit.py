"""Fixed-window rate limits kept in Redis, shared by every worker; buckets are named in ``coinslot.keyspace``."""

from __future__ import annotations

from typing import NamedTuple, NoReturn

from coinslot import keyspace
from coinslot.errors import RateLimited
from coinslot.store import Store


class PerAddress(NamedTuple):
    """A client address's hourly allowance of something: its pseudonym (coinslot.addresses) and the limit."""

    address: str
    per_hour: int


class Allowance(NamedTuple):
    """At most ``per_window`` events in each fixed window of ``window_s`` seconds."""

    per_window: int
    window_s: int


UNLIMITED = Allowance(10**12, 60)
CLOCK_MARGIN_S = 60  # a counter outlives its window by this: Redis time may differ from the app clock


def window_of(now_ms: int, window_s: int) -> int:
    """The number of the fixed window ``now_ms`` falls in (counted since 1970)."""
    return now_ms // 1000 // window_s


def refuse(limit: int, what: str, window_s: int, now_ms: int) -> NoReturn:
    """Raise ``RateLimited`` for a bucket that counted more than ``limit`` events in this window."""
    retry_after = (window_of(now_ms, window_s) + 1) * window_s - now_ms // 1000
    raise RateLimited(f"more than {limit} {what} in {window_s} s; retry in {retry_after} s", max(retry_after, 1))


async def hit(store: Store, bucket: str, *, limit: int, window_s: int, now_ms: int, what: str) -> None:
    """Count one event in ``bucket``; raise ``RateLimited`` once more than ``limit`` fall in one window.

    (The unlock script counts a wallet's unlock attempts itself, in a key of this same shape.)
    """
    key = keyspace.rate_limit_key(bucket, window_of(now_ms, window_s))
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_s + CLOCK_MARGIN_S)
        count, _ = await pipe.execute()
    if int(count) > limit:
        refuse(limit, what, window_s, now_ms)


async def give_back(store: Store, bucket: str, *, window_s: int, now_ms: int) -> None:
    """Uncount one event that turned out not to be abuse (a right voucher code)."""
    await store.redis.decr(keyspace.rate_limit_key(bucket, window_of(now_ms, window_s)))
