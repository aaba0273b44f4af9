"""Refunds of purchases (money rule 8): the reader's own undo, and the publisher's goodwill.

A reader may undo a purchase within the site's refund window, at most ``UNDOS_PER_PERIOD``
times in ``UNDO_PERIOD_MS``; never a pass under which anything was unlocked, nor a purchase
made on a site day on which the wallet also had items free under the site's daily cap (it
would buy up to the cap, read for free, then take the paid ones back). A publisher may refund
any purchase of its own site at any time, and that does not count against the reader.

The script ``lua/refund.lua`` decides and posts, atomically on the wallet's keys: the money
goes back, the ownership (or the pass) ends, the receipt is marked, and a ``purchase-refund``
ledger entry takes it from the site's revenue. ``undo_until`` says the same rules ahead of time,
for the card and the wallet view to show "Undo" only while it would succeed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from coinslot import hookevents, keyspace
from coinslot.catalog import KIND_PASS, Catalog
from coinslot.errors import UnknownSite, UnknownWallet
from coinslot.ledger import purchase_records, wallet_ids
from coinslot.metrics import PURCHASE_REFUNDS
from coinslot.moneyerrors import (
    AlreadyRefunded,
    RefundCapDay,
    RefundLimitReached,
    RefundPassUsed,
    RefundWindowClosed,
    UnknownPurchase,
)
from coinslot.store import Store
from coinslot.tokens import WalletRef

UNDOS_PER_PERIOD = 3
UNDO_PERIOD_MS = 30 * 24 * 60 * 60 * 1000
READER = "reader"
PUBLISHER = "publisher"


class Refunded(NamedTuple):
    purchase_id: str
    refunded: int  # minor units given back
    balance: int
    currency: str
    site: str = ""  # where it was bought: for the site's own counters (coinslot.insights), not the answer
    item: str = ""
    wallet_id: str = ""  # whose purchase: for the tab it may repay (coinslot.tabs), never in an answer

    def public(self) -> dict[str, Any]:
        return {"purchase_id": self.purchase_id, "refunded": self.refunded, "balance": self.balance,
                "currency": self.currency}  # fmt: skip

    def for_publisher(self) -> dict[str, Any]:
        """What the site may see: not the balance of its reader's wallet."""
        return {"purchase_id": self.purchase_id, "refunded": self.refunded, "currency": self.currency}


class WalletFields(NamedTuple):
    """The fields of a wallet's hash that the rules of an undo read, for one site (None when absent)."""

    undos: str | None
    cap_value: str | None  # keyspace.cap_field


def undo_until(receipt: dict[str, Any], fields: WalletFields, *, refund_window_s: int, now_ms: int) -> int | None:
    """Until when (ms) the reader may undo this purchase, or None if the reader may not now.

    The same rules as ``lua/refund.lua``, which alone decides: this only says whether to offer it.
    """
    if receipt.get("refunded_at") is not None or not receipt.get("charged"):
        return None
    until = int(receipt["at"]) + refund_window_s * 1000
    if now_ms >= until:
        return None
    recent = [int(at) for at in (fields.undos or "").split(",") if at and int(at) > now_ms - UNDO_PERIOD_MS]
    if len(recent) >= UNDOS_PER_PERIOD:
        return None
    if receipt.get("kind") == KIND_PASS and receipt.get("served_at") is not None:
        return None
    day = receipt.get("day")
    if day is not None and fields.cap_value:
        cap_day, _spent, free, earlier = fields.cap_value.split("|", 3)
        if (cap_day == day and int(free) > 0) or day in earlier.split(","):
            return None
    return until


async def refund_windows(catalog: Catalog, site_ids: set[str]) -> dict[str, int]:
    """The refund window (s) of each of these sites that still exists."""
    windows = {}
    for site_id in site_ids:
        try:
            windows[site_id] = (await catalog.site(site_id)).refund_window
        except UnknownSite:
            continue
    return windows


async def refund(
    store: Store,
    catalog: Catalog,
    wallet_id: str,
    purchase_id: str,
    *,
    by: str,
    generation: int | None = None,
    site_id: str | None = None,
    now_ms: int,
) -> Refunded:
    """Refund one purchase of ``wallet_id``: ``by`` READER (with the token's ``generation``) or
    PUBLISHER (for ``site_id``, whose purchases alone it may refund).

    Raises ``UnknownPurchase`` (404: not this wallet's, or not this site's), ``UnknownWallet``,
    or a ``RefundRefused`` (409) naming the rule.
    """
    k = keyspace.wallet_keys(wallet_id)
    async with store.redis.pipeline(transaction=False) as pipe:  # one slot: one node on a Cluster
        pipe.hget(k.purchases, purchase_id)
        pipe.hget(k.wallet, "gen")
        raw, gen = await pipe.execute()
    if generation is not None and gen != str(generation):
        raise UnknownWallet()  # a token a recovery ended learns nothing, not even which purchases are the wallet's
    if raw is None:
        raise UnknownPurchase(f"no purchase {purchase_id!r} here")
    (receipt,) = await purchase_records(store, wallet_id, {purchase_id: raw})
    site = await catalog.site(receipt["site"])
    result = await store.run(
        "refund",
        [k.wallet, k.owned, k.purchases, k.ledger],
        [
            now_ms,
            purchase_id,
            by,
            "" if generation is None else generation,
            min(site.refund_window, 10**9) * 1000,
            UNDOS_PER_PERIOD,
            UNDO_PERIOD_MS,
            site_id or "",
        ],
    )
    status = result[0]
    PURCHASE_REFUNDS.labels(by, status).inc()
    if status == "ok":
        await hookevents.refunded(store, {**receipt, "id": purchase_id}, int(result[1]), by, wallet_id, now_ms)
        return Refunded(
            purchase_id,
            int(result[1]),
            int(result[2]),
            receipt["currency"],
            receipt["site"],
            receipt["item"],
            wallet_id,
        )
    if status == "unknown":
        raise UnknownPurchase(f"no purchase {purchase_id!r} here")
    if status in ("no-wallet", "stale"):
        raise UnknownWallet()
    if status == "already":
        raise AlreadyRefunded(f"purchase {purchase_id} was refunded at {int(result[1]) // 1000}")
    if status == "window-closed":
        raise RefundWindowClosed(
            f"purchase {purchase_id} could be undone until {int(result[1]) // 1000} "
            f"({site.refund_window} s after it was made)"
        )
    if status == "limit":
        raise RefundLimitReached(
            f"{UNDOS_PER_PERIOD} purchases were undone in 30 days; the next undo is possible "
            f"from {int(result[1]) // 1000}"
        )
    if status == "pass-used":
        raise RefundPassUsed(f"pass {purchase_id} unlocked items, so it cannot be undone")
    if status == "cap-day":
        raise RefundCapDay(
            f"on the day of purchase {purchase_id}, items on {site.id} were free under its daily cap, "
            "so its purchases that day cannot be undone"
        )
    raise RuntimeError(f"refund script returned unknown status {status!r}")


async def reader_undo(store: Store, catalog: Catalog, wallet: WalletRef, purchase_id: str, *, now_ms: int) -> Refunded:
    """The reader's own undo of one of their purchases (``POST /v1/purchases/{id}/refund``)."""
    return await refund(
        store, catalog, wallet.wallet_id, purchase_id, by=READER, generation=wallet.generation, now_ms=now_ms
    )


async def wallet_of_purchase(store: Store, purchase_id: str) -> str | None:
    """The wallet that made a purchase, by looking through every wallet (a publisher's rare request).

    No index maps purchases to wallets: it would cost memory on every purchase for a lookup
    that a goodwill refund alone needs.
    """
    batch: list[str] = []

    async def look(ids: list[str]) -> str | None:
        async with store.redis.pipeline(transaction=False) as pipe:
            for wallet_id in ids:
                pipe.hexists(keyspace.wallet_keys(wallet_id).purchases, purchase_id)
            found = await pipe.execute()
        return next((w for w, hit in zip(ids, found, strict=True) if hit), None)

    async for wallet_id in wallet_ids(store):
        batch.append(wallet_id)
        if len(batch) == 500:
            if (hit := await look(batch)) is not None:
                return hit
            batch = []
    return await look(batch) if batch else None


async def publisher_refund(
    store: Store, catalog: Catalog, site_id: str | None, purchase_id: str, *, now_ms: int
) -> Refunded:
    """The publisher's goodwill refund of a purchase made on its site (the admin API), or on any
    site (None: ``coinslot refund``, run by the operator)."""
    wallet_id = await wallet_of_purchase(store, purchase_id)
    if wallet_id is None:
        raise UnknownPurchase(f"no purchase {purchase_id!r}" + (f" on site {site_id}" if site_id else ""))
    return await refund(store, catalog, wallet_id, purchase_id, by=PUBLISHER, site_id=site_id, now_ms=now_ms)
