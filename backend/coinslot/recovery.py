"""Recovery codes: how a reader takes a wallet to another browser, or back after losing its cookie.

A code is 24 characters of Crockford's base32, 120 random bits, shown once in groups of four so
it can be read aloud and typed again (``ABCD-EFGH-JKMN-PQRS-TVWX-YZ01``). Case, spaces and dashes
do not matter, and the letters people confuse with digits (I, L, O) read as those digits.

Redis keeps only an HMAC-SHA256 of a code, under a key derived from the server secrets
(``COINSLOT_SECRET_KEYS``, or ``secrets.json`` in the data directory), so every host that shares
the secrets finds the same code, as every host verifies the same wallet tokens. The HMAC sits in
two places: an untagged index key (HMAC → wallet id), which a recovery looks up, and the
wallet's hash, which names its current code. A new code replaces the old one: the hash names the
new HMAC and the old index key is deleted. A recovery compares the hash's HMAC in the same
script that bumps the generation, so an index entry the wallet no longer names (one being
replaced, or left behind by a crash between two steps) opens nothing.

Recovering bumps the wallet's generation. The scripts that move a wallet's money compare the
token's generation in the same atomic step, so once a recovery has returned no older token
moves money again, and an unlock that ran before it ran whole: nothing is charged twice.

A code stays valid after use, until the reader saves a new one or erases the wallet: a reader
reading on a phone and a laptop moves the wallet with the one code they wrote down. Every use
ends the tokens before it, so whoever uses a code last holds the wallet alone — a reader who
finds their card signed out can take it back with the same code. Rotating the code on each use
would instead need the card to show a new code after every recovery, and a reader who missed it
would be locked out for good.

Secrets rotate as wallet tokens do: a code is saved under the newest secret and found under any
configured one; removing the secret a code was saved under ends that code.

Guessing 120 bits is out of reach; still, every try is counted before it is checked, in one
atomic step, per client address (its daily pseudonym, coinslot.addresses) and per code prefix
(a keyed hash of the first group, so Redis keeps no part of any code), and only a try that
recovers a wallet is uncounted.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coinslot import keyspace, ratelimit
from coinslot.errors import BadRecoveryCode, UnknownWallet
from coinslot.scripts import Script
from coinslot.store import Store
from coinslot.tokens import WalletRef, derive

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: no I, L, O, U
CODE_CHARS = 24  # 5 bits each: 120 random bits
GROUP_CHARS = 4
WINDOW_S = 60 * 60  # the tries are limited per hour
_CONFUSABLES = str.maketrans("ILO", "110")
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")  # dashes as phones and word processors type them
_CODE = re.compile(rf"[{ALPHABET}]{{{CODE_CHARS}}}")

ISSUE = Script("recovery_issue")
RECOVER = Script("recover")


def generate_code() -> str:
    """A new code, grouped for reading aloud."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return "-".join(raw[i : i + GROUP_CHARS] for i in range(0, CODE_CHARS, GROUP_CHARS))


def normalize_code(code: str) -> str | None:
    """The code's 24 characters as generated, or None if ``code`` cannot be one."""
    normal = _SEPARATORS.sub("", code).upper().translate(_CONFUSABLES)
    return normal if _CODE.fullmatch(normal) else None


@dataclass(frozen=True, slots=True)
class Limits:
    """How many wrong codes may be tried in an hour: from one client address (its pseudonym), and
    starting with the same first group."""

    address: str
    per_address: int
    per_prefix: int


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str  # shown once: Redis keeps only its HMAC
    created_at: int  # ms

    def public(self) -> dict[str, Any]:
        return {"code": self.code, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Recovered:
    """The wallet a code opened, and the generation its new token must carry."""

    ref: WalletRef
    balance: int  # minor units
    currency: str

    def public(self) -> dict[str, Any]:
        return {"wallet_id": self.ref.wallet_id, "balance": self.balance, "currency": self.currency}


class RecoveryCodes:
    """Issues recovery codes and exchanges them for a new generation of their wallet."""

    def __init__(self, store: Store, server_secrets: Sequence[bytes]) -> None:
        """``server_secrets`` oldest first, as wallet tokens take them."""
        if not server_secrets:
            raise ValueError("RecoveryCodes needs at least one secret")
        self.store = store
        # Newest first: codes are saved under it, and the usual lookup finds them at once.
        self._keys = [derive(s, "recovery-code") for s in reversed(server_secrets)]
        self._prefix_key = derive(server_secrets[-1], "recovery-prefix")

    async def issue(self, ref: WalletRef, *, now_ms: int) -> IssuedCode:
        """A new code for the wallet; the one it had stops working. ``UnknownWallet`` for a stale token."""
        code = generate_code()
        digest = self._digest(self._keys[0], code.replace("-", ""))
        index = keyspace.recovery_index_key(digest)
        # The index entry first: until the wallet names it, it opens nothing. The other way round, a
        # failure in between would end the old code and leave the reader no new one that works.
        await self.store.redis.set(index, ref.wallet_id)
        result = await ISSUE(self.store.redis, [keyspace.wallet_key(ref.wallet_id)], [ref.generation, digest, now_ms])
        if result[0] != "ok":
            await self.store.redis.delete(index)
            raise UnknownWallet()
        if result[1]:  # the code replaced
            await self.store.redis.delete(keyspace.recovery_index_key(result[1]))
        return IssuedCode(code, now_ms)

    async def recover(self, code: str, *, now_ms: int, limits: Limits | None = None) -> Recovered:
        """The wallet ``code`` opens, at a new generation: every token issued before stops working.

        ``BadRecoveryCode`` for any code that opens nothing, ``RateLimited`` beyond ``limits``.
        """
        normal = normalize_code(code)
        if normal is None:
            raise BadRecoveryCode()  # no code looks like this: nothing to guess, nothing to count
        buckets: list[str] = []
        if limits is not None:
            prefix = self._digest(self._prefix_key, normal[:GROUP_CHARS])[:16]
            tries = (
                (keyspace.recovery_tries_bucket(limits.address), limits.per_address, "from this address"),
                (keyspace.recovery_prefix_bucket(prefix), limits.per_prefix, "with this first group"),
            )
            for bucket, limit, whose in tries:
                what = "recovery code tries " + whose
                await ratelimit.hit(self.store, bucket, limit=limit, window_s=WINDOW_S, now_ms=now_ms, what=what)
                buckets.append(bucket)
        recovered = await self._recover(normal)
        for bucket in buckets:
            await ratelimit.give_back(self.store, bucket, window_s=WINDOW_S, now_ms=now_ms)
        return recovered

    async def _recover(self, normal: str) -> Recovered:
        redis = self.store.redis
        for key in self._keys:
            digest = self._digest(key, normal)
            index = keyspace.recovery_index_key(digest)
            wallet_id = await redis.get(index)
            if wallet_id is None:
                continue
            result = await RECOVER(redis, [keyspace.wallet_key(wallet_id)], [digest])
            if result[0] == "ok":
                return Recovered(WalletRef(wallet_id, int(result[1])), int(result[3]), str(result[2]))
            # The wallet is gone or names another code: this entry can never open it again (a code
            # is random, never issued twice), so it goes.
            await redis.delete(index)
        raise BadRecoveryCode()

    @staticmethod
    def _digest(key: bytes, text: str) -> str:
        return hmac.new(key, text.encode(), "sha256").hexdigest()
