"""Unlocks: a wallet buys an item, in one atomic script on the wallet's own keys.

The script (``lua/unlock.lua``) decides everything that touches money — ownership,
price shown, frozen, balance against the site's tab limit, debit, purchase, ledger entry
and idempotency record — so N concurrent unlocks can never overdraw a wallet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

import orjson

from coinslot import keyspace
from coinslot.catalog import Catalog, Item, Site
from coinslot.errors import (
    CurrencyMismatch,
    IdempotencyKeyReused,
    InsufficientFunds,
    PriceChanged,
    TabQuotaReached,
    UnknownWallet,
    WalletFrozen,
)
from coinslot.idempotency import IDEMPOTENCY_TTL_S, Idempotency
from coinslot.ids import new_id
from coinslot.scripts import Script
from coinslot.store import Store
from coinslot.wallets import WalletRef


class Unlocked(NamedTuple):
    """What an unlock did. A named tuple: a frozen dataclass cost ~1.5 µs more per unlock to make."""

    site: Site
    item: Item
    purchase_id: str
    charged: int  # minor units actually debited by this request (0 when already owned)
    balance: int
    replayed: bool = False  # the outcome recorded under the same Idempotency-Key


def new_purchase_id() -> str:
    return new_id("pur")


def site_day(site: Site, now_ms: int) -> str:
    """The calendar day at the site, in the site's own time zone."""
    return datetime.fromtimestamp(now_ms / 1000, ZoneInfo(site.timezone)).date().isoformat()


TAB_QUOTA = Script("tab_quota")
TAB_QUOTA_TTL_S = 2 * 24 * 60 * 60  # outlives the site's day in any time zone


async def _take_tab_quota(store: Store, site: Site, wallet_id: str, address: str, now_ms: int, per_ip: int) -> bool:
    """Whether this wallet may start a tab on the site: at most ``per_ip`` wallets per address and day.

    ``address`` is the client address's pseudonym (coinslot.addresses), never the address itself.
    """
    key = keyspace.tab_quota_key(site.id, address, site_day(site, now_ms))
    # Rare (a wallet's first tab on a site), so it runs on its own rather than in the unlock batch.
    return bool(await TAB_QUOTA(store.redis, [key], [wallet_id, per_ip, TAB_QUOTA_TTL_S]))


TAB_GRANTED = 12  # index in script_args: '1' once the site's per-IP tab quota let this wallet in


def script_args(
    site: Site,
    item: Item,
    wallet: WalletRef,
    *,
    purchase_id: str,
    now_ms: int,
    idempotency: Idempotency | None,
    shown_price: int | None,
) -> list[str | int | bytes]:
    """ARGV of ``lua/unlock.lua``, with the records it stores for a new purchase written here."""
    price = item.price
    receipt = orjson.dumps(
        {
            "id": purchase_id,
            "site": site.id,
            "item": item.id,
            "kind": item.kind,
            "title": item.title,
            "price": price,
            "charged": price,
            "currency": site.currency,
            "at": now_ms,
        }
    )
    # The script puts the ledger sequence and the balance after the debit in front of the rest.
    entry_rest = orjson.dumps(
        {
            "at": now_ms,
            "kind": "unlock",
            "ref": purchase_id,
            "site": site.id,
            "item": item.id,
            "currency": site.currency,
            "postings": [
                {"account": keyspace.wallet_account(wallet.wallet_id), "amount": -price},
                {"account": keyspace.site_revenue_account(site.id), "amount": price},
            ],
        }
    )[1:]
    return [
        now_ms,
        wallet.generation,
        site.id,
        item.id,
        price,
        site.currency,
        site.tab_limit,
        purchase_id,
        idempotency.digest if idempotency else "",
        IDEMPOTENCY_TTL_S,
        receipt,
        entry_rest,
        "0",
        "" if shown_price is None else shown_price,
    ]


async def unlock(
    store: Store,
    catalog: Catalog,
    wallet: WalletRef,
    *,
    site_id: str,
    item_id: str,
    shown_price: int | None,
    idempotency: Idempotency | None,
    now_ms: int,
    client_address_of: Callable[[], Awaitable[str]],  # awaited only when the wallet opens a tab on the site
    tab_wallets_per_ip: int,
    purchase_id: str | None = None,
) -> Unlocked:
    """Debit ``wallet`` for the item and grant it, or raise why not.

    ``purchase_id`` names the purchase if this request makes one (a new one by default); a
    caller that names it can prepare what depends on it, such as the token, meanwhile.

    Raises ``InsufficientFunds`` or ``WalletFrozen`` (402), ``PriceChanged``, ``CurrencyMismatch``,
    ``IdempotencyKeyReused`` (409) or ``UnknownWallet`` (401).
    """
    hit = catalog.cached(site_id, item_id)
    site, item = hit if hit is not None else (await catalog.site(site_id), await catalog.item(site_id, item_id))
    k = keyspace.wallet_keys(wallet.wallet_id)
    idem_key = k.idempotency("unlocks", idempotency.key) if idempotency else k.idempotency("unlocks", "-")
    purchase_id = purchase_id or new_purchase_id()
    args = script_args(
        site, item, wallet, purchase_id=purchase_id, now_ms=now_ms, idempotency=idempotency, shown_price=shown_price
    )
    script_keys = [k.wallet, k.owned, k.purchases, k.ledger, idem_key]
    while True:
        result = await store.run("unlock", script_keys, args)
        status = result[0]
        if status == "ok":
            return Unlocked(site, item, result[1], int(result[2]), int(result[3]))
        if status == "replay":
            return Unlocked(site, item, result[1], int(result[2]), int(result[3]), replayed=True)
        if status == "tab-quota" and args[TAB_GRANTED] == "0":
            if await _take_tab_quota(
                store, site, wallet.wallet_id, await client_address_of(), now_ms, tab_wallets_per_ip
            ):
                args[TAB_GRANTED] = "1"
                continue
            raise TabQuotaReached(int(result[1]), item.price, site.currency, site.tab_limit, tab_wallets_per_ip)
        break
    if status == "insufficient":
        raise InsufficientFunds(int(result[1]), item.price, site.currency, site.tab_limit)
    if status == "price-changed":
        raise PriceChanged(shown_price or 0, item.price, site.currency)
    if status == "frozen":
        raise WalletFrozen(int(result[1]), item.price, site.currency)
    if status == "currency":
        raise CurrencyMismatch(f"wallet holds {result[1]}, site {site.id} sells in {site.currency}")
    if status == "idem-conflict":
        raise IdempotencyKeyReused(
            f"Idempotency-Key {idempotency.key if idempotency else ''!r} was used with another body"
        )
    if status in ("no-wallet", "stale"):
        raise UnknownWallet()
    raise RuntimeError(f"unlock script returned unknown status {status!r}")
