"""Guest wallets: anonymous balances in one currency, and the tokens that carry them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from coinslot import keyspace
from coinslot.errors import Unauthorized, UnknownWallet
from coinslot.ids import new_id
from coinslot.money import check_currency
from coinslot.store import Store

RECENT_LEDGER_LINES = 20
VERIFIED_CACHE_SIZE = 100_000  # wallet tokens remembered as verified, per worker (~25 MB at most)


@dataclass(frozen=True, slots=True)
class WalletRef:
    """Who a verified wallet token names: the wallet and the generation it was issued for."""

    wallet_id: str
    generation: int


class WalletTokens:
    """Signs wallet tokens with itsdangerous; the last secret signs, all of them verify."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("WalletTokens needs at least one secret")
        self._serializer = URLSafeSerializer(list(secrets), salt="coinslot.wallet-token")
        self._verified: dict[str, WalletRef] = {}

    def sign(self, ref: WalletRef) -> str:
        return self._serializer.dumps([ref.wallet_id, ref.generation])

    def verify(self, token: str) -> WalletRef:
        # A signature check costs more than the rest of an unlock's Python; a token that
        # verified once stays valid (generations are checked in Redis), so remember it.
        ref = self._verified.get(token)
        if ref is not None:
            return ref
        ref = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = ref
        return ref

    def _verify(self, token: str) -> WalletRef:
        try:
            wallet_id, generation = self._serializer.loads(token)
        except (BadSignature, ValueError, TypeError) as exc:
            raise Unauthorized("wallet token is not valid (bad signature or format)") from exc
        if not isinstance(wallet_id, str) or not isinstance(generation, int):
            raise Unauthorized("wallet token is not valid (bad payload)")
        return WalletRef(wallet_id, generation)


async def create_wallet(store: Store, *, currency: str, now_ms: int) -> WalletRef:
    currency = check_currency(currency)
    wallet_id = new_id("w")
    k = keyspace.wallet_keys(wallet_id)
    await store.redis.hset(
        k.wallet, mapping={"currency": currency, "balance": 0, "gen": 1, "seq": 0, "created_ms": now_ms}
    )
    await store.redis.sadd(keyspace.WALLET_INDEX, wallet_id)
    return WalletRef(wallet_id, 1)


async def check_wallet(store: Store, ref: WalletRef) -> str:
    """The wallet's currency, if the wallet exists and the token's generation is current."""
    currency, gen = await store.redis.hmget(keyspace.wallet_key(ref.wallet_id), ["currency", "gen"])
    if currency is None or gen != str(ref.generation):
        raise UnknownWallet()
    return str(currency)


async def wallet_view(store: Store, ref: WalletRef) -> dict[str, Any]:
    """Balance, receipts and recent ledger lines, as the reader may see them."""
    k = keyspace.wallet_keys(ref.wallet_id)
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hmget(k.wallet, ["currency", "balance", "gen", "frozen"])
        pipe.hvals(k.purchases)
        pipe.lrange(k.ledger, -RECENT_LEDGER_LINES, -1)
        (currency, balance, gen, frozen), purchases, ledger = await pipe.execute()
    if currency is None or gen != str(ref.generation):
        raise UnknownWallet()
    receipts = sorted((json.loads(p) for p in purchases), key=lambda p: p["at"], reverse=True)
    account = keyspace.wallet_account(ref.wallet_id)
    lines = []
    for raw in reversed(ledger):
        entry = json.loads(raw)
        own = sum(p["amount"] for p in entry["postings"] if p["account"] == account)
        lines.append(
            {
                "at": entry["at"],
                "kind": entry["kind"],
                "amount": own,
                "balance": entry["balance"],
                "ref": entry["ref"],
                **({"site": entry["site"]} if "site" in entry else {}),
            }
        )
    return {
        "wallet_id": ref.wallet_id,
        "currency": currency,
        "balance": int(balance),
        "frozen": frozen == "1",
        "purchases": receipts,
        "ledger": lines,
    }


@dataclass(frozen=True, slots=True)
class ItemStanding:
    """What one wallet holds for one item: its balance, and the purchase that owns the item, if any."""

    currency: str
    balance: int  # minor units
    purchase_id: str | None


async def item_standing(store: Store, ref: WalletRef, site_id: str, item_id: str) -> ItemStanding:
    """Balance and ownership of one item in one round trip, for the card a reader sees."""
    k = keyspace.wallet_keys(ref.wallet_id)
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hmget(k.wallet, ["currency", "balance", "gen"])
        pipe.hget(k.owned, keyspace.owned_field(site_id, item_id))
        (currency, balance, gen), owned = await pipe.execute()
    if currency is None or gen != str(ref.generation):
        raise UnknownWallet()
    # The owned field holds the purchase id, as the unlock script writes it (before any '|').
    purchase_id = str(owned).split("|", 1)[0] if owned is not None else None
    return ItemStanding(str(currency), int(balance), purchase_id)
