"""Unlocks: a wallet buys an item, in one atomic script on the wallet's own keys.

The script (``lua/unlock.lua``) decides everything that touches money — ownership,
price shown, frozen, balance against the site's tab limit, debit, purchase, ledger entry
and idempotency record — so N concurrent unlocks can never overdraw a wallet.

``Unlocks`` is the use case around it, the one place that turns an outcome into what the
reader gets: a signed token, the hosted content, or a 402 carrying top-up links. Both
``POST /v1/unlocks`` and the card's read (``GET /v1/card/...``) call it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from coinslot import hookevents, keyspace, pricetests, ratelimit
from coinslot.addresses import Addresses
from coinslot.catalog import KIND_PASS, Catalog, Item, Site, check_item_id, item_content
from coinslot.dailylimit import DailyLimitReached
from coinslot.errors import CurrencyMismatch, IdempotencyKeyReused, ItemArchived, PriceChanged, UnknownWallet
from coinslot.idempotency import IDEMPOTENCY_TTL_S, Idempotency
from coinslot.ids import new_id
from coinslot.metrics import UNLOCKS
from coinslot.moneyerrors import InsufficientFunds, TabQuotaReached, WalletFrozen
from coinslot.ratelimit import UNLIMITED
from coinslot.ratelimit import Allowance as UnlockAttempts
from coinslot.scripts import Script
from coinslot.sitedays import site_day
from coinslot.store import Store
from coinslot.tokens import Pseudonym, UnlockTokens, WalletRef
from coinslot.topuplinks import TopupLinks

# Why a wallet may read an item (``Granted.access``).
PURCHASE = "purchase"  # it bought the item (or the pass it is): for good, or until the pass ends
PASS = "pass"  # its pass on the site covers the item, until the pass ends
CAP = "cap"  # the site's daily cap made it free, until the site's day ends


class Unlocked(NamedTuple):
    """What an unlock did. A named tuple: a frozen dataclass cost ~1.5 µs more per unlock to make."""

    site: Site
    item: Item
    purchase_id: str  # the purchase that grants the item; under a pass, the pass's; free under the cap, a grant id
    charged: int  # minor units actually debited by this request (0 when already owned)
    balance: int
    replayed: bool = False  # the outcome recorded under the same Idempotency-Key
    access: str = PURCHASE  # why the wallet may read the item: PURCHASE, PASS or CAP
    access_until_ms: int | None = None  # when that ends (a pass, the site's day); None = for good
    price: int = 0  # the reader's price (coinslot.pricetests): the item's, or its test price


def new_purchase_id() -> str:
    return new_id("pur")


TAB_QUOTA = Script("tab_quota")
TAB_QUOTA_TTL_S = 2 * 24 * 60 * 60  # outlives the site's day in any time zone


async def _take_tab_quota(store: Store, site: Site, wallet_id: str, address: str, now_ms: int, per_ip: int) -> bool:
    """Whether this wallet may start a tab on the site: at most ``per_ip`` wallets per address and day.

    ``address`` is the client address's pseudonym (coinslot.addresses), never the address itself.
    """
    key = keyspace.tab_quota_key(site.id, address, site_day(site.timezone, now_ms).day)
    # Rare (a wallet's first tab on a site), so it runs on its own rather than in the unlock batch.
    return bool(await TAB_QUOTA(store.redis, [key], [wallet_id, per_ip, TAB_QUOTA_TTL_S]))


TAB_GRANTED = 11  # index in script_args: '1' once the site's per-IP tab quota let this wallet in
HOUR_MS = 3600 * 1000


def pass_ends_ms(item: Item, now_ms: int) -> int:
    """When a pass bought now ends: a whole second, so that a token's ``exp`` can end with it exactly."""
    return (now_ms // 1000) * 1000 + item.pass_hours * HOUR_MS


def script_args(
    site: Site,
    item: Item,
    wallet: WalletRef,
    *,
    purchase_id: str,
    now_ms: int,
    idempotency: Idempotency | None,
    shown_price: int | None,
    price: int,
    attempts: UnlockAttempts = UNLIMITED,
) -> list[str | int | bytes]:
    """ARGV of ``lua/unlock.lua``, with the records it stores for a new purchase written here;
    ``price`` is the reader's (``pricetests.price_for``)."""
    is_pass = item.kind == KIND_PASS
    # The receipt holds only what the purchase's ledger line does not (coinslot.keyspace).
    extra: dict[str, Any] = {}
    ends = pass_ends_ms(item, now_ms) if is_pass else None
    if ends is not None:
        extra["expires_at"] = ends
    day = site_day(site.timezone, now_ms) if site.daily_cap else None
    if day is not None:
        extra["day"] = day.day  # an undo is refused for a purchase of a day with free unlocks
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
        orjson.dumps(extra)[1:-1] if extra else "",
        "0",
        "" if shown_price is None else shown_price,
        attempts.per_window,
        attempts.window_s + ratelimit.CLOCK_MARGIN_S,
        "archived" if item.archived else item.kind,
        "" if ends is None else ends,
        site.daily_cap,
        "" if day is None else day.day,
        "" if day is None else day.ends_ms,
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
    pseudonym: Pseudonym,
    attempts: UnlockAttempts = UNLIMITED,
) -> Unlocked:
    """Debit ``wallet`` for the item and grant it, or raise why not.

    ``purchase_id`` names the purchase if this request makes one; ``tab_quota`` is used only
    when the wallet would start a tab on the site (None: it may not), ``links`` only for a 402;
    ``pseudonym`` gives the reader's variant of a price test, hence their price.
    An item the wallet's pass covers, or one the site's daily cap makes free, is granted
    without a purchase and without a charge.

    Raises ``InsufficientFunds``, ``TabQuotaReached`` or ``WalletFrozen`` (402, with top-up
    options), ``DailyLimitReached`` (402, the wallet's own limit), ``PriceChanged``,
    ``CurrencyMismatch``, ``IdempotencyKeyReused`` (409), ``RateLimited`` (429) or ``UnknownWallet`` (401).
    """
    hit = catalog.cached(site_id, item_id)
    site, item = hit if hit is not None else (await catalog.site(site_id), await catalog.item(site_id, item_id))
    price = pricetests.price_for(item, pricetests.variant_of(item, wallet.wallet_id, pseudonym))
    k = keyspace.wallet_keys(wallet.wallet_id)
    idem_key = k.idempotency("unlocks", idempotency.key) if idempotency else k.idempotency("unlocks", "-")
    args = script_args(
        site,
        item,
        wallet,
        purchase_id=purchase_id,
        now_ms=now_ms,
        idempotency=idempotency,
        shown_price=shown_price,
        price=price,
        attempts=attempts,
    )
    attempts_key = keyspace.rate_limit_key(
        keyspace.wallet_unlocks_bucket(wallet.wallet_id), ratelimit.window_of(now_ms, attempts.window_s)
    )
    script_keys = [k.wallet, k.owned, k.purchases, k.ledger, idem_key, attempts_key]
    while True:
        result = await store.run("unlock", script_keys, args)
        status = result[0]
        _count(status)
        if status in _GRANTED:
            ends = result[4] if len(result) > 4 else ""
            return Unlocked(
                site,
                item,
                result[1],
                int(result[2]),
                int(result[3]),
                replayed=status == "replay",
                access=result[5] if len(result) > 5 else PURCHASE,
                access_until_ms=int(ends) if ends else None,
                price=price,
            )
        if status == "tab-quota" and args[TAB_GRANTED] == "0" and tab_quota is not None:
            address = await tab_quota.addresses.pseudonym(tab_quota.client_ip, now_ms)
            if await _take_tab_quota(store, site, wallet.wallet_id, address, now_ms, tab_quota.per_ip):
                args[TAB_GRANTED] = "1"
                continue
        break
    if status in ("insufficient", "tab-quota", "frozen"):
        balance = int(result[1])
        charge = int(result[2]) if len(result) > 2 else price  # less than the price under the cap
        options = links.options(wallet, charge - balance, site.currency, site.id) if links is not None else []
        if status == "insufficient":
            raise InsufficientFunds(balance, charge, site.currency, site.tab_limit, topup_options=options)
        if status == "tab-quota":
            per_ip = tab_quota.per_ip if tab_quota is not None else 0
            raise TabQuotaReached(balance, charge, site.currency, site.tab_limit, per_ip, topup_options=options)
        raise WalletFrozen(balance, charge, site.currency, topup_options=options)
    if status == "archived":
        raise ItemArchived(f"item {item.id!r} on {site.id} is no longer sold; who bought it can still read it")
    if status == "daily-limit":
        raise DailyLimitReached(int(result[3]), int(result[4]), int(result[2]), site.currency, now_ms=now_ms)
    if status == "price-changed":
        raise PriceChanged(shown_price or 0, price, site.currency)
    if status == "currency":
        raise CurrencyMismatch(f"wallet holds {result[1]}, site {site.id} sells in {site.currency}")
    if status == "idem-conflict":
        raise IdempotencyKeyReused(
            f"Idempotency-Key {idempotency.key if idempotency else ''!r} was used with another body"
        )
    if status == "rate-limited":
        ratelimit.refuse(attempts.per_window, "unlock attempts by this wallet", attempts.window_s, now_ms)
    if status in ("no-wallet", "stale"):
        raise UnknownWallet()
    raise RuntimeError(f"unlock script returned unknown status {status!r}")


# The script's statuses that grant the item: bought or owned, a replay, under a pass, free under the cap.
_GRANTED = frozenset(("ok", "replay", "pass", "capfree"))
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
    access: str = PURCHASE
    access_until_ms: int | None = None  # when the access ends; None = for good
    undo: dict[str, int | str] | None = None  # the reader may still undo the purchase: its id, price, until

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "token": self.token,
            "expires_at": self.expires_at,
            "balance": self.balance,
            "charged": self.charged,
            "purchase_id": self.purchase_id,
            "currency": self.currency,
            "access": self.access,
            "access_until": self.access_until_ms,
            "undo": self.undo,
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
        attempts: UnlockAttempts = UNLIMITED,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.tokens = tokens
        self.links = links
        self.addresses = addresses
        self.tab_wallets_per_ip = tab_wallets_per_ip
        self.attempts = attempts  # unlock attempts a wallet may make in each window

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
        now_s = now_ms // 1000
        # The token of the purchase this request will most likely make is signed while Redis
        # decides; it is thrown away unless that very purchase is what the script reports.
        claims = self.tokens.claims(
            site=site_id, item=item_id, purchase_id=purchase_id, wallet_id=wallet.wallet_id, now_s=now_s
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
            pseudonym=self.tokens.pseudonym,
            attempts=self.attempts,
        )
        if done.purchase_id == purchase_id and not done.replayed:  # made by this request: tell the publisher
            await hookevents.unlocked(self.store, done, wallet.wallet_id, now_ms)
        until_s = None if done.access_until_ms is None else done.access_until_ms // 1000
        if (
            done.purchase_id != purchase_id
            or done.site.id != site_id
            or done.item.id != item_id
            or (until_s is not None and until_s < claims["exp"])
        ):
            # Owned before, under a pass, a replay of an earlier request, or access that ends
            # before the token would: the token names that purchase and ends with the access.
            claims = self.tokens.claims(
                site=done.site.id,
                item=done.item.id,
                purchase_id=done.purchase_id,
                wallet_id=wallet.wallet_id,
                now_s=now_s,
                access_until_s=until_s,
            )
            pending = self.tokens.sign_soon(claims)
        content = await item_content(self.store, done.site.id, done.item.id) if done.item.has_content else None
        undo: dict[str, int | str] | None = None
        if done.charged and done.purchase_id == purchase_id and done.site.refund_window:
            # A purchase this very request made; the card read checks every rule of an undo.
            undo = {"purchase_id": purchase_id, "price": done.charged, "until": now_ms + done.site.refund_window * 1000}
        return Granted(
            await pending.token(),
            claims["exp"],
            done.balance,
            done.charged,
            done.purchase_id,
            done.site.currency,
            content,
            done.replayed,
            done.access,
            done.access_until_ms,
            undo,
        )
