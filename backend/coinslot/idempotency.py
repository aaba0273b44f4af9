"""Idempotency-Key: a retried request has one effect (money rule 4).

A key is scoped by the caller to a wallet and a route, kept ``IDEMPOTENCY_TTL_S``, and bound to
the request's body, compared as canonical JSON: the same key with another body is a conflict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from coinslot.errors import BadRequest, IdempotencyKeyReused
from coinslot.store import Store

IDEMPOTENCY_TTL_S = 24 * 60 * 60
MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True, slots=True)
class Idempotency:
    key: str
    digest: str  # of the canonical JSON body

    @classmethod
    def for_body(cls, key: str, body: Any) -> Idempotency:
        if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
            raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters")
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return cls(key, hashlib.sha256(canonical.encode()).hexdigest()[:32])


async def claim(store: Store, record_key: str, idempotency: Idempotency, value: str) -> str:
    """What the first request under this key chose: ``value`` if this request is the first (or the
    first one's record expired), else the first one's. Another body under the key is a 409."""
    claimed = f"{idempotency.digest} {value}"
    if await store.redis.set(record_key, claimed, nx=True, ex=IDEMPOTENCY_TTL_S):
        return value
    earlier = await store.redis.get(record_key)
    if earlier is None:  # expired between the two calls: a day-old key counts as new
        await store.redis.set(record_key, claimed, ex=IDEMPOTENCY_TTL_S)
        return value
    digest, _, earlier_value = str(earlier).partition(" ")
    if digest != idempotency.digest:
        raise IdempotencyKeyReused(f"Idempotency-Key {idempotency.key!r} was used with another body")
    return earlier_value
