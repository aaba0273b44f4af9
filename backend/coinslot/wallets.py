"""Guest wallets: anonymous balances in one currency. The tokens that carry them are tokens.py's."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coinslot import keyspace, ratelimit
from coinslot.errors import UnknownWallet
from coinslot.ids import new_id
from coinslot.money import check_currency
from coinslot.store import Store
from coinslot.tokens import WalletRef

RECENT_LEDGER_LINES = 20


async def create_wallet(
    store: Store,
    *,
    currency: str,
    now_ms: int,
    limit: ratelimit.PerAddress | None = None,
    empty_ttl_s: int | None = None,
) -> WalletRef:
    """A new, empty wallet; ``limit`` bounds how many one client address makes in an hour.

    With ``empty_ttl_s`` the wallet expires, keys and all, unless money moves through it first:
    its first ledger entry (a credit or an unlock, in the scripts) makes it permanent.
    """
    if limit is not None:
        await ratelimit.hit(
            store,
            keyspace.new_wallets_bucket(limit.address),
            limit=limit.per_hour,
            window_s=3600,
            now_ms=now_ms,
            what="new wallets from this address",
        )
    currency = check_currency(currency)
    wallet_id = new_id("w")
    k = keyspace.wallet_keys(wallet_id)
    async with store.redis.pipeline(transaction=True) as pipe:  # one key: MULTI holds on a Cluster too
        pipe.hset(k.wallet, mapping={"currency": currency, "balance": 0, "gen": 1, "seq": 0, "created_ms": now_ms})
        if empty_ttl_s is not None:
            pipe.expire(k.wallet, empty_ttl_s)
        await pipe.execute()
    # Indexed only once it exists: an index entry without a wallet is one that expired or was erased.
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
        pipe.hmget(k.wallet, ["currency", "balance", "gen", "frozen", keyspace.RECOVERY_FIELD])
        pipe.hvals(k.purchases)
        pipe.lrange(k.ledger, -RECENT_LEDGER_LINES, -1)
        (currency, balance, gen, frozen, recovery), purchases, ledger = await pipe.execute()
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
        "recovery_code": recovery is not None,
        "purchases": receipts,
        "ledger": lines,
    }


@dataclass(frozen=True, slots=True)
class ItemStanding:
    """What one wallet holds for one item: its balance, and the purchase that owns the item, if any."""

    currency: str
    balance: int  # minor units
    purchase_id: str | None


async def owned_items(store: Store, ref: WalletRef, site_id: str, item_ids: Sequence[str]) -> dict[str, bool]:
    """Which of the site's items the wallet owns, in one round trip."""
    fields = [keyspace.owned_field(site_id, i) for i in item_ids]
    values = await store.redis.hmget(keyspace.wallet_keys(ref.wallet_id).owned, fields)
    return {i: v is not None for i, v in zip(item_ids, values, strict=True)}


async def item_standing(store: Store, ref: WalletRef, site_id: str, item_id: str) -> ItemStanding:
    """Balance and ownership of one item in one round trip, for the card a reader sees."""
    k = keyspace.wallet_keys(ref.wallet_id)
    currency, balance, gen, owned = await store.run(
        "standing", [k.wallet, k.owned], [keyspace.owned_field(site_id, item_id)]
    )
    if currency is None or gen != str(ref.generation):
        raise UnknownWallet()
    # The owned field holds the purchase id, as the unlock script writes it (before any '|').
    purchase_id = str(owned).split("|", 1)[0] if owned else None
    return ItemStanding(str(currency), int(balance), purchase_id)
