"""The card's one credentialed read (``GET /v1/card/{site}/{item}``): what the card knows of its reader.

The card page itself is the same for every reader (and cacheable); this read adds the reader:
wallet or not, the reader's price (under a price test, their variant's: coinslot.pricetests),
balance, one-click budget, where the site's daily cap stands, the site's pass on offer, and —
when the item is owned, covered by a pass or free today under the cap — a fresh token and the
hosted content, so a returning reader needs no click. A purchase the reader may still undo comes
with until when.
"""

from __future__ import annotations

from typing import Any

from coinslot import pricetests
from coinslot.catalog import KIND_PASS, Catalog, Item, Site, check_item_id, item_content
from coinslot.refunds import WalletFields, undo_until
from coinslot.sitedays import site_day
from coinslot.store import Store
from coinslot.tokens import UnlockTokens, WalletRef
from coinslot.unlocks import CAP, PASS, PURCHASE, Granted
from coinslot.wallets import ItemStanding, item_standing


async def site_pass(catalog: Catalog, site: Site) -> Item | None:
    """The pass the site offers beside its items, if it offers one (an archived pass is not offered)."""
    if site.pass_item is None:
        return None
    found = (await catalog.items(site.id, [site.pass_item]))[site.pass_item]
    return found if found is not None and found.kind == KIND_PASS and not found.archived else None


def cap_state(site: Site, cap_value: str | None, now_ms: int) -> dict[str, Any] | None:
    """Where the wallet stands against the site's daily cap today (None: the site has no cap)."""
    if not site.daily_cap:
        return None
    day = site_day(site.timezone, now_ms)
    parts = (cap_value or "").split("|")
    spent = int(parts[1]) if len(parts) > 1 and parts[0] == day.day else 0
    return {
        "daily_cap": site.daily_cap,
        "spent_today": spent,
        "free_now": spent >= site.daily_cap,
        "day_ends": day.ends_ms,
    }


def _grant(standing: ItemStanding, item: Item, now_ms: int) -> tuple[str, str, int | None] | None:
    """What lets the wallet read the item now: (purchase or grant id, access, until ms), or None."""
    if standing.owned is not None:  # the script left out what has ended
        parts = standing.owned.split("|")
        until = int(parts[1]) if len(parts) > 1 else None
        return parts[0], CAP if parts[-1] == "c" else PURCHASE, until
    if standing.pass_value is not None and item.kind != KIND_PASS:
        ends, pass_id, _used = standing.pass_value.split("|")
        if int(ends) > now_ms:
            return pass_id, PASS, int(ends)
    return None


class CardReads:
    def __init__(self, store: Store, catalog: Catalog, tokens: UnlockTokens) -> None:
        self.store = store
        self.catalog = catalog
        self.tokens = tokens

    async def read(
        self, wallet: WalletRef | None, *, site_id: str, item_id: str, now_ms: int, variant: str | None = None
    ) -> dict[str, Any]:
        """What the card shows this reader for one item; ``variant`` is the one a reader without a
        wallet was shown earlier in the page view, if the item is under a price test.

        Raises ``UnknownSite``/``UnknownItem`` (404) first, then ``UnknownWallet`` (401).
        """
        site = await self.catalog.site(site_id)
        item = await self.catalog.item(site.id, check_item_id(item_id))
        offer = await site_pass(self.catalog, site)
        out: dict[str, Any] = {
            "wallet": False,
            "currency": site.currency,
            "price": item.price,
            "owned": False,
            "tab_limit": site.tab_limit,  # how far below zero an unlock may go here without a top-up
            "site_pass": None if offer is None or offer.id == item.id else offered_pass(offer),
        }
        if wallet is None:
            if item.test_price is not None:
                variant = variant or pricetests.draw()
                out.update(price=pricetests.price_for(item, variant), variant=variant)
            return out
        variant = pricetests.variant_of(item, wallet.wallet_id, self.tokens.pseudonym)
        if variant is not None:
            out.update(price=pricetests.price_for(item, variant), variant=variant)
        standing = await item_standing(
            self.store, wallet, site.id, item.id, is_pass=item.kind == KIND_PASS, now_ms=now_ms
        )
        out.update(
            wallet=True,
            currency=standing.currency,
            balance=standing.balance,
            budget=standing.budget,
            cap=cap_state(site, standing.cap_value, now_ms),
        )
        grant = _grant(standing, item, now_ms)
        if grant is None:
            return out
        purchase_id, access, until_ms = grant
        claims = self.tokens.claims(
            site=site.id,
            item=item.id,
            purchase_id=purchase_id,
            wallet_id=wallet.wallet_id,
            now_s=now_ms // 1000,
            access_until_s=None if until_ms is None else until_ms // 1000,
        )
        undo = None
        if access == PURCHASE and standing.receipt is not None:
            fields = WalletFields(standing.undos, standing.cap_value)
            until = undo_until(standing.receipt, fields, refund_window_s=site.refund_window, now_ms=now_ms)
            if until is not None:
                undo = {"purchase_id": purchase_id, "price": standing.receipt["charged"], "until": until}
        content = await item_content(self.store, site.id, item.id) if item.has_content else None
        granted = Granted(
            await self.tokens.sign(claims),
            claims["exp"],
            standing.balance,
            0,
            purchase_id,
            standing.currency,
            content,
            access=access,
            access_until_ms=until_ms,
            undo=undo,
        )
        out.update(owned=True, **granted.public())
        return out


def offered_pass(item: Item) -> dict[str, Any]:
    """The site's pass as the card offers it beside an item's price."""
    return {"item": item.id, "title": item.title, "price": item.price, "pass_hours": item.pass_hours}
