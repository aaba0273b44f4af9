"""Price tests: an item's second price, which half of a site's readers see and pay.

A reader's variant on a site is a function of their per-site pseudonym (``UnlockTokens.pseudonym``):
the same for every tested item of the site, in every browser that holds the wallet, and it needs no
stored assignment, so the unlock reads nothing more from Redis. Variant ``b`` is shown and charged
the test price, variant ``a`` the item's price. The card, ``/v1/offers``, the content's 402 and the
unlock all ask ``price_for``, so the price a reader sees is the price they are charged (money rule 7).

A reader without a wallet has nothing to hash: the card's read draws a variant for that page view,
and the wallet the card then makes is given an id in the variant the reader was shown (two ids are
drawn on average), so the reader's first press pays the price on the button.

Each test's counts (cards shown with a price, presses, sales, revenue, refunds, per variant) are one
hash under the site's tag (``keyspace.price_test_key``), written by the dashboard's counting
(coinslot.insights). ``results`` turns them into conversion and revenue per 1,000 views with 95 %
intervals, and says when one price is ahead with confidence; ``keep`` ends the test with one price.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coinslot import keyspace
from coinslot.catalog import KIND_PASS, MAX_PRICE, Catalog, Item, Site, check_item_id
from coinslot.errors import InvalidBody, NoPriceTest, PriceTestRunning
from coinslot.store import Store
from coinslot.tokens import Pseudonym

A, B = "a", "b"  # the item's price, the test price
VARIANTS = (A, B)
MIN_VIEWS = 100  # views each price needs before either may be called ahead
Z_95 = 1.959963984540054  # two-sided 95 % of the normal distribution


def variant(pseudonym: str) -> str:
    """The variant of the reader known to a site as ``pseudonym``."""
    return B if hashlib.sha256(b"price-test\x00" + pseudonym.encode()).digest()[0] & 1 else A


def variant_of(item: Item, wallet_id: str, pseudonym: Pseudonym) -> str | None:
    """The wallet's variant for ``item`` (None: the item is not under test)."""
    return None if item.test_price is None else variant(pseudonym(item.site, wallet_id))


def draw() -> str:
    """A variant for a reader without a wallet, for one page view."""
    return B if secrets.randbits(1) else A


def checked_variant(raw: str | None) -> str | None:
    return raw if raw in VARIANTS else None


def price_for(item: Item, variant: str | None) -> int:
    """What a reader of ``variant`` is shown and charged for ``item``."""
    return item.test_price if variant == B and item.test_price is not None else item.price


def wallet_id_check(site_id: str, wanted: str, pseudonym: Pseudonym) -> Callable[[str], bool]:
    """Whether a new wallet id is in the variant ``wanted`` on the site (``wallets.create_wallet``)."""
    return lambda wallet_id: variant(pseudonym(site_id, wallet_id)) == wanted


# The publisher's side ------------------------------------------------------------------------------


async def _fresh_item(store: Store, site: Site, item_id: str) -> Item:
    return await Catalog(store, ttl_s=0).item(site.id, check_item_id(item_id))


async def start(store: Store, site: Site, item_id: str, test_price: int, *, now_ms: int) -> Item:
    """Offer half of the site's readers ``test_price`` for the item, from now.

    Raises ``UnknownItem`` (404), ``InvalidBody`` (422: a pass, an archived item, a price out of
    bounds or equal to the item's) or ``PriceTestRunning`` (409).
    """
    item = await _fresh_item(store, site, item_id)
    if item.kind == KIND_PASS:
        raise InvalidBody(f"{item.id} is a pass: only an item's price can be tested", [{"field": "test_price"}])
    if item.archived:
        raise InvalidBody(f"{item.id} is archived: put it back on sale first", [{"field": "test_price"}])
    if not 0 <= test_price <= MAX_PRICE or test_price == item.price:
        raise InvalidBody(
            f"test price {test_price} must be between 0 and {MAX_PRICE} minor units and differ from "
            f"the price {item.price}",
            [{"field": "test_price"}],
        )
    ik = keyspace.item_key(site.id, item.id)
    if not await store.redis.hsetnx(ik, "test_since", now_ms):
        raise PriceTestRunning(f"{item.id} is already under a price test; keep one of its prices first")
    await store.redis.hset(ik, "test_price", test_price)
    await store.redis.publish(keyspace.CATALOG_CHANNEL, site.id)
    return await _fresh_item(store, site, item.id)


async def keep(store: Store, site: Site, item_id: str, price: int, *, now_ms: int) -> Item:
    """End the item's test: ``price`` (one of its two) is everybody's price from now.

    Raises ``UnknownItem`` (404), ``NoPriceTest`` (409) or ``InvalidBody`` (422: not one of the two).
    """
    item = await _fresh_item(store, site, item_id)
    if item.test_price is None:
        raise NoPriceTest(f"{item.id} is not under a price test")
    if price not in (item.price, item.test_price):
        raise InvalidBody(
            f"price {price} is neither {item.price} nor the test price {item.test_price}", [{"field": "price"}]
        )
    ended = {"since": item.test_since_ms, "ended": now_ms, A: item.price, B: item.test_price, "kept": price}
    ik = keyspace.item_key(site.id, item.id)
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(ik, mapping={"price": price, "last_test": json.dumps(ended)})
        pipe.hdel(ik, "test_price", "test_since")
        await pipe.execute()
    await store.redis.publish(keyspace.CATALOG_CHANNEL, site.id)
    return await _fresh_item(store, site, item.id)


# What a test shows -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Arm:
    variant: str
    price: int
    views: int  # cards shown with this price to readers who did not own the item
    presses: int
    sales: int  # unlocks that charged
    revenue: int  # minor units, refunds deducted
    refunds: int

    @property
    def conversion(self) -> float | None:
        return min(1.0, self.sales / self.views) if self.views else None

    @property
    def conversion_interval(self) -> Interval | None:
        return wilson(self.sales, self.views)

    @property
    def average_sale(self) -> float:
        """Minor units a sale brought on average (the price until a cap or a refund takes part)."""
        return self.revenue / self.sales if self.sales else float(self.price)

    @property
    def rpm(self) -> float | None:
        """Revenue per 1,000 views, in minor units."""
        return 1000 * self.revenue / self.views if self.views else None

    @property
    def rpm_interval(self) -> Interval | None:
        rate = self.conversion_interval
        if rate is None:
            return None
        scale = 1000 * max(self.average_sale, 0.0)
        return Interval(scale * rate.low, scale * rate.high)

    def rpm_variance(self) -> float:
        """The variance of the revenue per 1,000 views (a sale is a Bernoulli trial of the average sale)."""
        p = self.conversion or 0.0
        return (1000 * self.average_sale) ** 2 * p * (1 - p) / self.views if self.views else math.inf


def wilson(successes: int, trials: int) -> Interval | None:
    """The Wilson score interval (95 %) of a proportion: sound near 0 % too, where conversions live."""
    if trials <= 0:
        return None
    p = min(1.0, successes / trials)
    z2 = Z_95 * Z_95
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z_95 * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True, slots=True)
class Results:
    since_ms: int
    arms: tuple[Arm, Arm]
    ahead: str | None  # the variant whose revenue per 1,000 views is higher with 95 % confidence
    enough_views: bool  # each price has MIN_VIEWS views

    @property
    def difference(self) -> Interval | None:
        """Revenue per 1,000 views of ``b`` minus ``a``, with its 95 % interval (normal approximation)."""
        a, b = self.arms
        if a.rpm is None or b.rpm is None:
            return None
        diff, spread = b.rpm - a.rpm, Z_95 * math.sqrt(a.rpm_variance() + b.rpm_variance())
        return Interval(diff - spread, diff + spread)


def judge(since_ms: int, a: Arm, b: Arm) -> Results:
    enough = a.views >= MIN_VIEWS and b.views >= MIN_VIEWS
    results = Results(since_ms, (a, b), None, enough)
    diff = results.difference
    if not enough or diff is None:
        return results
    ahead = B if diff.low > 0 else A if diff.high < 0 else None
    return Results(since_ms, (a, b), ahead, enough)


def arm_counts(counts: dict[str, str], name: str, price: int) -> Arm:
    def n(event: str) -> int:
        return int(counts.get(f"{name}:{event}") or 0)

    return Arm(
        name,
        price,
        views=n("shown"),
        presses=n("pressed"),
        sales=n("unlocked"),
        revenue=n("revenue") - n("refunded_amount"),
        refunds=n("refunded"),
    )


async def _judged(store: Store, item: Item, since_ms: int, price_a: int, price_b: int) -> Results:
    counts = await store.redis.hgetall(keyspace.price_test_key(item.site, item.id, since_ms))
    return judge(since_ms, arm_counts(counts, A, price_a), arm_counts(counts, B, price_b))


async def results(store: Store, item: Item) -> Results | None:
    """The running test's figures (None: the item is not under test)."""
    if item.test_price is None:
        return None
    return await _judged(store, item, item.test_since_ms, item.price, item.test_price)


async def last_results(store: Store, item: Item, last: dict[str, int]) -> Results:
    """The figures of the test that ended as ``last`` says (``last_test``): its counts are kept as long
    as the dashboard's other counts."""
    return await _judged(store, item, last["since"], last[A], last[B])


async def last_test(store: Store, item: Item) -> dict[str, int] | None:
    """How the item's last test ended: since, ended, the two prices (``a``, ``b``) and the one kept."""
    raw = await store.redis.hget(keyspace.item_key(item.site, item.id), "last_test")
    return json.loads(raw) if raw else None


def public(item: Item, found: Results | None) -> dict[str, Any]:
    """A test as the admin API tells it: the prices, and per price its counts and intervals."""
    if found is None:
        return {"item": item.id, "running": False, "price": item.price}

    def span(interval: Interval | None, digits: int) -> list[float] | None:
        return None if interval is None else [round(interval.low, digits), round(interval.high, digits)]

    arms = [
        {
            "variant": arm.variant,
            "price": arm.price,
            "views": arm.views,
            "presses": arm.presses,
            "sales": arm.sales,
            "revenue": arm.revenue,
            "refunds": arm.refunds,
            "conversion": None if arm.conversion is None else round(arm.conversion, 5),
            "conversion_95": span(arm.conversion_interval, 5),
            "revenue_per_1000_views": None if arm.rpm is None else round(arm.rpm, 2),
            "revenue_per_1000_views_95": span(arm.rpm_interval, 2),
        }
        for arm in found.arms
    ]
    return {
        "item": item.id,
        "running": True,
        "since": found.since_ms,
        "price": item.price,
        "test_price": item.test_price,
        "arms": arms,
        "difference_95": span(found.difference, 2),
        "enough_views": found.enough_views,
        "ahead": found.ahead,
    }
