"""Unlocks: a wallet buys an item, in one atomic script on the wallet's own keys.

The script (``lua/unlock.lua``) decides everything that touches money — ownership,
price shown, frozen, balance against the site's tab limit, debit, purchase, ledger entry
and idempotency record — so N concurrent unlocks can never overdraw a wallet.

``Unlocks`` is the use case around it, the one place that turns an outcome into what the
reader gets: a signed token, the hosted content, or a 402 carrying top-up links. Both
``POST /v1/unlocks`` and the card's read (``GET /v1/card/...``) call it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import orjson

from coinslot import keyspace
from coinslot.addresses import Addresses
from coinslot.catalog import Catalog, Item, Site, check_item_id, item_content
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
from coinslot.metrics import UNLOCKS
from coinslot.scripts import Script
from coinslot.store import Store
from coinslot.tokens import UnlockTokens, WalletRef
from coinslot.topuplinks import TopupLinks
from coinslot.wallets import item_standing


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


class TabQuota(NamedTuple):
    """Who asks, for the per-address quota of wallets that may open a tab on a site each day."""

    addresses: Addresses
    client_ip: str  # kept in Redis only as its pseudonym of the day
    per_ip: int


async def purchase(
    store: Store,
    catalog: Catalog,
    wallet: WalletRef,
    *,
    site_id: str,
    item_id: str,
    shown_price: int | None,
    idempotency: Idempotency | None,
    now_ms: int,
    purchase_id: str,
    tab_quota: TabQuota | None,
    links: TopupLinks | None,
) -> Unlocked:
    """Debit ``wallet`` for the item and grant it, or raise why not.

    ``purchase_id`` names the purchase if this request makes one; ``tab_quota`` is used only
    when the wallet would start a tab on the site (None: it may not), ``links`` only for a 402.

    Raises ``InsufficientFunds``, ``TabQuotaReached`` or ``WalletFrozen`` (402, with top-up
    options), ``PriceChanged``, ``CurrencyMismatch``, ``IdempotencyKeyReused`` (409) or
    ``UnknownWallet`` (401).
    """
    hit = catalog.cached(site_id, item_id)
    site, item = hit if hit is not None else (await catalog.site(site_id), await catalog.item(site_id, item_id))
    k = keyspace.wallet_keys(wallet.wallet_id)
    idem_key = k.idempotency("unlocks", idempotency.key) if idempotency else k.idempotency("unlocks", "-")
    args = script_args(
        site, item, wallet, purchase_id=purchase_id, now_ms=now_ms, idempotency=idempotency, shown_price=shown_price
    )
    script_keys = [k.wallet, k.owned, k.purchases, k.ledger, idem_key]
    while True:
        result = await store.run("unlock", script_keys, args)
        status = result[0]
        _count(status)
        if status == "ok":
            return Unlocked(site, item, result[1], int(result[2]), int(result[3]))
        if status == "replay":
            return Unlocked(site, item, result[1], int(result[2]), int(result[3]), replayed=True)
        if status == "tab-quota" and args[TAB_GRANTED] == "0" and tab_quota is not None:
            address = await tab_quota.addresses.pseudonym(tab_quota.client_ip, now_ms)
            if await _take_tab_quota(store, site, wallet.wallet_id, address, now_ms, tab_quota.per_ip):
                args[TAB_GRANTED] = "1"
                continue
        break
    if status in ("insufficient", "tab-quota", "frozen"):
        balance = int(result[1])
        options = links.options(wallet, item.price - balance, site.currency) if links is not None else []
        if status == "insufficient":
            raise InsufficientFunds(balance, item.price, site.currency, site.tab_limit, topup_options=options)
        if status == "tab-quota":
            per_ip = tab_quota.per_ip if tab_quota is not None else 0
            raise TabQuotaReached(balance, item.price, site.currency, site.tab_limit, per_ip, topup_options=options)
        raise WalletFrozen(balance, item.price, site.currency, topup_options=options)
    if status == "price-changed":
        raise PriceChanged(shown_price or 0, item.price, site.currency)
    if status == "currency":
        raise CurrencyMismatch(f"wallet holds {result[1]}, site {site.id} sells in {site.currency}")
    if status == "idem-conflict":
        raise IdempotencyKeyReused(
            f"Idempotency-Key {idempotency.key if idempotency else ''!r} was used with another body"
        )
    if status in ("no-wallet", "stale"):
        raise UnknownWallet()
    raise RuntimeError(f"unlock script returned unknown status {status!r}")


_OUTCOMES: dict[str, Any] = {}  # the counter of each script status, bound once: labels() costs ~1 µs a call


def _count(status: str) -> None:
    counter = _OUTCOMES.get(status)
    if counter is None:
        counter = _OUTCOMES[status] = UNLOCKS.labels(status)
    counter.inc()


class Granted(NamedTuple):
    """Access to an item: a fresh token, and what the wallet paid and holds."""

    token: str
    expires_at: int  # seconds since the epoch, the token's exp
    balance: int
    charged: int  # minor units debited by this request (0 when already owned)
    purchase_id: str
    currency: str
    content: str | None  # the hosted content, if the publisher hosts it here
    replayed: bool = False

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "token": self.token,
            "expires_at": self.expires_at,
            "balance": self.balance,
            "charged": self.charged,
            "purchase_id": self.purchase_id,
            "currency": self.currency,
        }
        if self.content is not None:
            out["content"] = self.content
        return out


class Unlocks:
    """The unlock use case: buy (or find owned) an item, and hand out its token and content."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        tokens: UnlockTokens,
        links: TopupLinks,
        addresses: Addresses,
        *,
        tab_wallets_per_ip: int,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.tokens = tokens
        self.links = links
        self.addresses = addresses
        self.tab_wallets_per_ip = tab_wallets_per_ip

    async def unlock(
        self,
        wallet: WalletRef,
        *,
        site_id: str,
        item_id: str,
        shown_price: int | None,
        idempotency: Idempotency | None,
        now_ms: int,
        client_ip: str,
    ) -> Granted:
        """Debit and grant (money rules 3, 4, 6 and 7 hold in the script), with a fresh token.

        ``client_ip`` counts towards the site's per-address tab quota, only if this wallet
        would open a tab there (and then only as its pseudonym).
        """
        item_id = check_item_id(item_id)
        purchase_id = new_purchase_id()
        # The token of the purchase this request will most likely make is signed while Redis
        # decides; it is thrown away unless that very purchase is what the script reports.
        claims = self.tokens.claims(
            site=site_id, item=item_id, purchase_id=purchase_id, wallet_id=wallet.wallet_id, now_s=now_ms // 1000
        )
        pending = self.tokens.sign_soon(claims)
        done = await purchase(
            self.store,
            self.catalog,
            wallet,
            site_id=site_id,
            item_id=item_id,
            shown_price=shown_price,
            idempotency=idempotency,
            now_ms=now_ms,
            purchase_id=purchase_id,
            tab_quota=TabQuota(self.addresses, client_ip, self.tab_wallets_per_ip),
            links=self.links,
        )
        if done.purchase_id != purchase_id or done.site.id != site_id or done.item.id != item_id:
            # Owned before, or a replay of an earlier request: the token names that purchase.
            claims = self.tokens.claims(
                site=done.site.id,
                item=done.item.id,
                purchase_id=done.purchase_id,
                wallet_id=wallet.wallet_id,
                now_s=now_ms // 1000,
            )
            pending = self.tokens.sign_soon(claims)
        content = await item_content(self.store, done.site.id, done.item.id) if done.item.has_content else None
        return Granted(
            await pending.token(),
            claims["exp"],
            done.balance,
            done.charged,
            done.purchase_id,
            done.site.currency,
            content,
            done.replayed,
        )

    async def reader_state(
        self, wallet: WalletRef | None, *, site_id: str, item_id: str, now_ms: int
    ) -> dict[str, Any]:
        """What the card needs about its reader: wallet or not, balance, and — when the item is
        owned — a fresh token and the hosted content, so a returning reader needs no click.

        Raises ``UnknownSite``/``UnknownItem`` (404) first, then ``UnknownWallet`` (401).
        """
        site = await self.catalog.site(site_id)
        item = await self.catalog.item(site.id, check_item_id(item_id))
        if wallet is None:
            return {"wallet": False, "currency": site.currency, "owned": False}
        standing = await item_standing(self.store, wallet, site.id, item.id)
        if standing.purchase_id is None:
            return {"wallet": True, "currency": standing.currency, "balance": standing.balance, "owned": False}
        claims = self.tokens.claims(
            site=site.id,
            item=item.id,
            purchase_id=standing.purchase_id,
            wallet_id=wallet.wallet_id,
            now_s=now_ms // 1000,
        )
        content = await item_content(self.store, site.id, item.id) if item.has_content else None
        granted = Granted(
            await self.tokens.sign(claims),
            claims["exp"],
            standing.balance,
            0,
            standing.purchase_id,
            standing.currency,
            content,
        )
        return {"wallet": True, "owned": True, **granted.public()}
