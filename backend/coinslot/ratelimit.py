"""Fixed-window rate limits kept in Redis, shared by every worker; buckets are named in ``coinslot.keyspace``."""

from __future__ import annotations

from typing import NamedTuple

from coinslot import keyspace
from coinslot.errors import RateLimited
from coinslot.store import Store


class PerAddress(NamedTuple):
    """A client address's hourly allowance of something: its pseudonym (coinslot.addresses) and the limit."""

    address: str
    per_hour: int


async def hit(store: Store, bucket: str, *, limit: int, window_s: int, now_ms: int, what: str) -> None:
    """Count one event in ``bucket``; raise ``RateLimited`` once more than ``limit`` fall in one window."""
    window = now_ms // 1000 // window_s
    key = keyspace.rate_limit_key(bucket, window)
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_s + 60)  # Redis time may differ from the app clock; keep a margin
        count, _ = await pipe.execute()
    if int(count) > limit:
        retry_after = (window + 1) * window_s - now_ms // 1000
        raise RateLimited(f"more than {limit} {what} in {window_s} s; retry in {retry_after} s", max(retry_after, 1))


async def give_back(store: Store, bucket: str, *, window_s: int, now_ms: int) -> None:
    """Uncount one event that turned out not to be abuse (a right voucher code)."""
    await store.redis.decr(keyspace.rate_limit_key(bucket, now_ms // 1000 // window_s))
