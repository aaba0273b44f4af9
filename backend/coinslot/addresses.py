"""Client addresses as Redis keeps them: never in the clear.

Per-address limits (new wallets, voucher guesses, top-ups, the tab quota) count under a keyed
hash of the address. The key is drawn at random for each UTC day, shared by every server process
through Redis, and expires after ``SALT_TTL_S``: from then on nothing stored can be traced back
to an address, not even by whoever holds the server's secrets. The price: a per-address window
that spans 00:00 UTC starts over then.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from coinslot import keyspace
from coinslot.store import Store

DAY_MS = 24 * 60 * 60 * 1000
SALT_TTL_S = 3 * 24 * 60 * 60  # outlives every per-address window (the longest, the tab quota, keeps 2 days)


class Addresses:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._salts: dict[int, bytes] = {}  # UTC day number → that day's key, as this process knows it

    async def pseudonym(self, address: str, now_ms: int) -> str:
        """What stands for ``address`` in Redis today: 80 bits of HMAC-SHA256 under the day's key."""
        day = now_ms // DAY_MS
        salt = self._salts.get(day)
        if salt is None:
            salt = await self._salt_of(day)
        return hmac.new(salt, address.encode(), hashlib.sha256).hexdigest()[:20]

    async def _salt_of(self, day: int) -> bytes:
        key = keyspace.address_salt_key(day)
        while True:
            # The first process to ask on a day draws the key; the others read it.
            await self.store.redis.set(key, secrets.token_hex(32), nx=True, ex=SALT_TTL_S)
            value: str | None = await self.store.redis.get(key)
            if value is not None:  # None only if it expired in between: a day long past, draw again
                break
        salt = value.encode()
        self._salts = {d: s for d, s in self._salts.items() if d >= day - 1} | {day: salt}
        return salt
