"""The door of ``GET /v1/content/{site}/{item}``: the hosted content for whoever may read it, and a
402 with the offer for whoever may not, in a form that people and agents both read.

Who may read: the holder of an unlock token for the item (``Authorization: Bearer`` or
``?token=``), or a wallet that owns the item now — bought, under a pass, or free today under the
site's daily cap. Agents hold a wallet token rather than a token per item, so they may send it
here, in the Authorization header only (never in a URL, which logs keep). A GET never moves money:
a wallet that does not own the item gets the 402, whose offer says how to buy it, and unlocking
again what a wallet owns charges nothing (money rule 6).

The 402 carries the offer as JSON and, for clients that read headers, a ``WWW-Authenticate``
challenge of the ``Coinslot`` scheme that names the price, the currency and the unlock URL.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import urlencode

from coinslot.cardreads import CardReads
from coinslot.catalog import Catalog, Item, Site, check_item_id, item_content
from coinslot.errors import NotFound
from coinslot.moneyerrors import PaymentRequired
from coinslot.store import Store
from coinslot.tokens import UnlockTokens, WalletTokens


class Content(NamedTuple):
    site: Site
    item: Item
    html: str
    expires_at: int  # seconds since 1970: when the unlock token that opened it ends


def quoted(value: str) -> str:
    """``value`` as an RFC 9110 quoted-string: in double quotes, a backslash before ``"`` and ``\\``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(site: Site, item: Item, price: int, unlock_url: str) -> str:
    """The ``WWW-Authenticate`` value of a 402: the ``Coinslot`` scheme with its parameters."""
    params = {
        "realm": site.id,
        "item": item.id,
        "price": str(price),
        "currency": site.currency,
        "unlock": unlock_url,
    }
    return "Coinslot " + ", ".join(f"{name}={quoted(value)}" for name, value in params.items())


def offer(site: Site, item: Item, price: int, public_url: str) -> dict[str, Any]:
    """What the item costs this reader (``price``: under a price test, their variant's), and the calls
    that buy it: absolute URLs, ready bodies."""
    return {
        **item.public(site.currency),
        "price": price,
        "site": site.id,
        "unlock": {
            "method": "POST",
            "url": f"{public_url}/v1/unlocks",
            "body": {"site": site.id, "item": item.id, "price": price},
        },
        "wallet": {"method": "POST", "url": f"{public_url}/v1/wallets", "body": {"currency": site.currency}},
        "offers": f"{public_url}/v1/offers?" + urlencode({"site": site.id, "items": item.id}),
    }


def _is_unlock_token(token: str) -> bool:
    # A JWT has three segments; a wallet token (itsdangerous) two, or three behind a leading dot.
    return token.count(".") == 2 and not token.startswith(".")


class Paywall:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        unlock_tokens: UnlockTokens,
        wallet_tokens: WalletTokens,
        card_reads: CardReads,
        public_url: str,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.unlock_tokens = unlock_tokens
        self.wallet_tokens = wallet_tokens
        self.card_reads = card_reads
        self.public_url = public_url

    def payment_required(self, site: Site, item: Item, detail: str, price: int | None = None) -> PaymentRequired:
        """The 402 for ``item`` at ``price`` (the reader's; None: a reader without a wallet, the item's)."""
        price = item.price if price is None else price
        error = PaymentRequired(detail, offer=offer(site, item, price, self.public_url))
        error.challenge = challenge(site, item, price, f"{self.public_url}/v1/unlocks")
        return error

    async def open(self, site_id: str, item_id: str, *, token: str | None, in_header: bool, now_ms: int) -> Content:
        """The item's hosted content, for an unlock token or (``in_header``) a wallet that owns the item.

        Raises ``UnknownSite``/``UnknownItem`` (404) first; then ``PaymentRequired`` (402) without a
        token or for a wallet that does not own the item; ``UnlockTokenInvalid``, ``UnknownWallet``
        or ``Unauthorized`` (401) for a token that opens nothing; ``NotFound`` when the publisher
        serves the content from their own server.
        """
        site = await self.catalog.site(site_id)
        item = await self.catalog.item(site.id, check_item_id(item_id))
        price = f"{item.id} costs {item.price} {site.currency} minor units"
        if token is None:
            raise self.payment_required(site, item, f"{price}: unlock it with a wallet token, then send the token")
        html: str | None
        if in_header and not _is_unlock_token(token):
            wallet = self.wallet_tokens.verify(token)
            read = await self.card_reads.read(wallet, site_id=site.id, item_id=item.id, now_ms=now_ms)
            if not read["owned"]:
                price = f"{item.id} costs this wallet {read['price']} {site.currency} minor units"
                detail = f"{price} and does not own it: unlock it first"
                raise self.payment_required(site, item, detail, read["price"])
            html, expires_at = read.get("content"), read["expires_at"]
        else:
            claims = self.unlock_tokens.verify(token, site=site.id, item=item.id, now_s=now_ms // 1000)
            html, expires_at = await item_content(self.store, site.id, item.id), claims["exp"]
        if html is None:
            raise NotFound(f"item {item.id} has no hosted content; the publisher serves it from their own server")
        return Content(site, item, html, expires_at)
