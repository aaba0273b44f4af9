"""Fixed-window rate limits kept in Redis, shared by every worker."""

from __future__ import annotations

from coinslot.errors import RateLimited
from coinslot.store import Store


async def hit(store: Store, bucket: str, *, limit: int, window_s: int, now_ms: int, what: str) -> None:
    """Count one event in ``bucket``; raise ``RateLimited`` once more than ``limit`` fall in one window."""
    window = now_ms // 1000 // window_s
    key = f"rl:{bucket}:{window}"
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_s + 60)  # Redis time may differ from the app clock; keep a margin
        count, _ = await pipe.execute()
    if int(count) > limit:
        retry_after = (window + 1) * window_s - now_ms // 1000
        raise RateLimited(f"more than {limit} {what} in {window_s} s; retry in {retry_after} s", max(retry_after, 1))


async def check(store: Store, bucket: str, *, limit: int, window_s: int, now_ms: int, what: str) -> None:
    """Raise ``RateLimited`` if ``bucket`` is already full, without counting."""
    window = now_ms // 1000 // window_s
    count = await store.redis.get(f"rl:{bucket}:{window}")
    if count is not None and int(count) >= limit:
        retry_after = (window + 1) * window_s - now_ms // 1000
        raise RateLimited(f"more than {limit} {what} in {window_s} s; retry in {retry_after} s", max(retry_after, 1))
