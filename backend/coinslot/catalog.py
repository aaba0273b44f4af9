"""Sites and items: what publishers sell, and the secret keys that prove who they are."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import nh3

from coinslot import keyspace, sitesettings
from coinslot.errors import BadRequest, DuplicateCode, InvalidBody, Unauthorized, UnknownItem, UnknownSite
from coinslot.ids import new_id
from coinslot.money import check_currency
from coinslot.sitesettings import DEFAULT_REFUND_WINDOW_S as DEFAULT_REFUND_WINDOW_S
from coinslot.store import Store

SITE_ID = re.compile(r"^site_[A-Za-z0-9_]{1,48}\Z")
ITEM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
KEY_OVERLAP_MS = 24 * 60 * 60 * 1000  # a rotated secret key keeps working this long
MAX_PRICE = 100_000  # minor units; micropayments, not purchases
CACHE_TTL_S = 10.0  # seconds; bounds staleness only if an invalidation message is lost
CACHE_MAX_ENTRIES = 200_000  # sites and items cached per worker
KIND_ITEM = "item"
KIND_PASS = "pass"  # grants every item of its site until it ends
MAX_PASS_HOURS = 24 * 366


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    currency: str
    timezone: str
    origins: tuple[str, ...]
    tab_limit: int = 0  # minor units
    daily_cap: int = 0  # minor units, 0 = no cap
    refund_window: int = 0  # seconds
    pass_item: str | None = None  # the pass the site offers beside its items (the last one put)

    def public(self) -> dict[str, Any]:
        settings = ("name", "currency", "timezone", "tab_limit", "daily_cap", "refund_window", "pass_item")
        return {"site_id": self.id, "origins": list(self.origins), **{f: getattr(self, f) for f in settings}}


@dataclass(frozen=True, slots=True)
class Item:
    site: str
    id: str
    title: str
    price: int  # minor units of the site's currency
    kind: str = KIND_ITEM  # or KIND_PASS
    pass_hours: int = 0
    has_content: bool = False
    archived: bool = False  # off sale: no new purchase, while who bought it keeps reading it
    test_price: int | None = None  # a second price under test (coinslot.pricetests), shown to variant "b"
    test_since_ms: int = 0  # when that test started: it names the test's counts

    def public(self, currency: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "item": self.id,
            "title": self.title,
            "price": self.price,
            "currency": currency,
            "kind": self.kind,
        }
        if self.kind == KIND_PASS:
            out["pass_hours"] = self.pass_hours
        if self.archived:
            out["archived"] = True
        return out


def secret_digest(secret_key: str) -> str:
    return hashlib.sha256(secret_key.encode()).hexdigest()


def sanitize_html(html: str) -> str:
    """Keep the allow-listed tags and attributes only; links get rel=noopener noreferrer."""
    return nh3.clean(html, link_rel="noopener noreferrer")


def check_item_id(item_id: str) -> str:
    if not ITEM_ID.match(item_id):
        raise UnknownItem(f"item id {item_id!r} must match {ITEM_ID.pattern}")
    return item_id


def _site_from_hash(site_id: str, h: dict[str, str]) -> Site:
    return Site(
        id=site_id,
        name=h["name"],
        currency=h["currency"],
        timezone=h["timezone"],
        origins=tuple(json.loads(h["origins"])),
        tab_limit=int(h["tab_limit"]),
        daily_cap=int(h["daily_cap"]),
        refund_window=int(h["refund_window"]),
        pass_item=h.get("pass_item") or None,
    )


def _item_from_hash(site_id: str, item_id: str, h: dict[str, str]) -> Item:
    return Item(
        site=site_id,
        id=item_id,
        title=h["title"],
        price=int(h["price"]),
        kind=h.get("kind", KIND_ITEM),
        pass_hours=int(h.get("pass_hours", 0)),
        has_content=h.get("has_content") == "1",
        archived=h.get("archived") == "1",
        test_price=int(h["test_price"]) if h.get("test_price") else None,
        test_since_ms=int(h.get("test_since") or 0),
    )


async def create_site(
    store: Store,
    *,
    name: str,
    origins: Sequence[str],
    currency: str = "EUR",
    timezone: str = "UTC",
    tab_limit: int = 0,
    daily_cap: int = 0,
    refund_window: int = DEFAULT_REFUND_WINDOW_S,
    site_id: str | None = None,
    now_ms: int,
) -> tuple[Site, str]:
    """Create a site; returns it with its secret key, which is stored only as a digest."""
    site_id = site_id or new_id("site", 8)
    if not SITE_ID.match(site_id):
        raise BadRequest(f"site id {site_id!r} must match {SITE_ID.pattern}")
    currency = check_currency(currency)
    settings = sitesettings.checked(
        {"timezone": timezone, "tab_limit": tab_limit, "daily_cap": daily_cap, "refund_window": refund_window}
    )
    if not name.strip():
        raise BadRequest("site name must not be empty")
    site = Site(
        id=site_id,
        name=name.strip(),
        currency=currency,
        origins=sitesettings.check_origins(origins, required=False),
        **settings,
    )
    secret_key = "sk_" + secrets.token_urlsafe(32)
    digest = secret_digest(secret_key)
    r = store.redis
    if not await r.hsetnx(keyspace.site_key(site_id), "name", site.name):
        raise DuplicateCode(f"site {site_id} already exists")
    await r.hset(
        keyspace.site_key(site_id),
        mapping={
            "currency": currency,
            **sitesettings.stored({**settings, "origins": site.origins}),
            "created_ms": now_ms,
            "secret_digests": json.dumps([[digest, None]]),
        },
    )
    await r.set(keyspace.secret_index_key(digest), site_id)
    await r.sadd(keyspace.SITE_INDEX, site_id)
    await r.publish(keyspace.CATALOG_CHANNEL, site_id)  # workers that cached "unknown" forget it
    return site, secret_key


async def rotate_secret(store: Store, site_id: str, *, now_ms: int) -> str:
    """Issue a new secret key; earlier ones keep working for 24 hours, then stop."""
    r = store.redis
    raw = await r.hget(keyspace.site_key(site_id), "secret_digests")
    if raw is None:
        raise UnknownSite(f"site {site_id} does not exist")
    old = [[d, exp] for d, exp in json.loads(raw) if exp is None or exp > now_ms]
    secret_key = "sk_" + secrets.token_urlsafe(32)
    digest = secret_digest(secret_key)
    digests = [[d, exp if exp is not None else now_ms + KEY_OVERLAP_MS] for d, exp in old] + [[digest, None]]
    await r.hset(keyspace.site_key(site_id), "secret_digests", json.dumps(digests))
    await r.set(keyspace.secret_index_key(digest), site_id)
    for d, _exp in old:
        await r.pexpire(keyspace.secret_index_key(d), KEY_OVERLAP_MS + 60_000)  # Redis time, not the app clock
    return secret_key


async def authenticate(store: Store, secret_key: str, *, now_ms: int) -> Site:
    """The site whose secret key this is; ``Unauthorized`` for any unknown or retired key."""
    digest = secret_digest(secret_key)
    site_id = await store.redis.get(keyspace.secret_index_key(digest))
    if site_id is not None:
        h = await store.redis.hgetall(keyspace.site_key(site_id))
        if h:
            for stored, expires in json.loads(h["secret_digests"]):
                if hmac.compare_digest(stored, digest) and (expires is None or expires > now_ms):
                    return _site_from_hash(site_id, h)
    raise Unauthorized("secret key not recognised (unknown, mistyped or retired)")


async def put_item(
    store: Store,
    site: Site,
    item_id: str,
    *,
    title: str,
    price: int,
    content_html: str | None = None,
    pass_hours: int | None = None,
    max_content_bytes: int = 256 * 1024,
    now_ms: int,
) -> Item:
    """Create or replace an item (kept archived, and under its price test, if it was); content is stored sanitized."""
    if not ITEM_ID.match(item_id):
        raise BadRequest(f"item id {item_id!r} must match {ITEM_ID.pattern}")
    title = title.strip()
    if not title or len(title) > 200:
        raise InvalidBody("title must be 1 to 200 characters", [{"field": "title"}])
    if not 0 <= price <= MAX_PRICE:
        raise InvalidBody(f"price {price} must be between 0 and {MAX_PRICE} minor units", [{"field": "price"}])
    if pass_hours is not None and not 1 <= pass_hours <= MAX_PASS_HOURS:
        raise InvalidBody(f"pass_hours {pass_hours} must be between 1 and {MAX_PASS_HOURS}", [{"field": "pass_hours"}])
    content = sanitize_html(content_html) if content_html is not None else None
    if content is not None and len(content.encode()) > max_content_bytes:
        raise InvalidBody(
            f"content_html is {len(content.encode())} bytes > {max_content_bytes}", [{"field": "content_html"}]
        )
    ik = keyspace.item_key(site.id, item_id)
    archived, test_price, test_since = await store.redis.hmget(ik, ["archived", "test_price", "test_since"])
    tested = bool(test_price) and not pass_hours  # a pass's price is not tested (coinslot.pricetests)
    item = Item(
        site=site.id,
        id=item_id,
        title=title,
        price=price,
        kind=KIND_PASS if pass_hours else KIND_ITEM,
        pass_hours=pass_hours or 0,
        has_content=content is not None,
        archived=archived == "1",
        test_price=int(test_price) if tested else None,
        test_since_ms=int(test_since or 0) if tested else 0,
    )
    async with store.redis.pipeline(transaction=True) as pipe:
        # Fields not named here stay: archived, a running price test, the last one's outcome.
        pipe.hset(
            ik,
            mapping={
                "title": item.title,
                "price": item.price,
                "kind": item.kind,
                "pass_hours": item.pass_hours,
                "has_content": "1" if content is not None else "0",
                "content": content or "",
                "updated_ms": now_ms,
            },
        )
        if pass_hours:
            pipe.hdel(ik, "test_price", "test_since")
        pipe.sadd(keyspace.items_index_key(site.id), item_id)
        if item.kind == KIND_PASS:
            pipe.hset(keyspace.site_key(site.id), "pass_item", item_id)
        elif site.pass_item == item_id:  # the site's pass became a plain item: it offers none now
            pipe.hdel(keyspace.site_key(site.id), "pass_item")
        await pipe.execute()
    await store.redis.publish(keyspace.CATALOG_CHANNEL, site.id)
    return item


async def item_content(store: Store, site_id: str, item_id: str) -> str | None:
    content: str | None = await store.redis.hget(keyspace.item_key(site_id, item_id), "content")
    return content or None


async def list_items(store: Store, site_id: str) -> list[str]:
    return sorted(await store.redis.smembers(keyspace.items_index_key(site_id)))


class Catalog:
    """Sites and items as the request path sees them: cached in-process.

    The unlock path must cost one Redis round trip, so catalog reads come from memory.
    Writes publish the site id on ``coinslot:catalog``; every worker drops that site's
    entries when the message arrives, and entries also expire after ``CACHE_TTL_S`` in
    case a message is lost. The cache is bounded (unknown ids are cached too, so lookups
    of garbage cannot hammer Redis): past ``max_entries`` it starts over.
    """

    def __init__(self, store: Store, ttl_s: float = CACHE_TTL_S, max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._sites: dict[str, tuple[float, Site | None]] = {}
        self._items: dict[str, dict[str, tuple[float, Item | None]]] = {}  # site id → item id → entry
        self._entries = 0
        # Bumped by every invalidation of a site, so a read that raced one does not store stale data.
        self._generation: dict[str, int] = {}

    def invalidate(self, site_id: str) -> None:
        self._generation[site_id] = self._generation.get(site_id, 0) + 1
        self._sites.pop(site_id, None)
        self._entries -= len(self._items.pop(site_id, {}))

    def invalidate_all(self) -> None:
        for site_id in list(self._sites.keys() | self._items.keys()):
            self.invalidate(site_id)

    def _make_room(self) -> None:
        if self._entries + len(self._sites) >= self.max_entries:
            self._sites.clear()
            self._items.clear()
            self._entries = 0

    def cached(self, site_id: str, item_id: str) -> tuple[Site, Item] | None:
        """The site and the item if both are cached, fresh and exist; else None (ask ``site``/``item``).

        The unlock path's usual case, without the two awaits and the general lookup.
        """
        now = time.monotonic()
        site_hit = self._sites.get(site_id)
        item_hit = self._items.get(site_id, {}).get(item_id)
        if site_hit is None or item_hit is None or site_hit[0] <= now or item_hit[0] <= now:
            return None
        site, item = site_hit[1], item_hit[1]
        return None if site is None or item is None else (site, item)

    async def site(self, site_id: str) -> Site:
        if not SITE_ID.match(site_id):
            raise UnknownSite(f"site {site_id!r} does not exist")
        now = time.monotonic()
        hit = self._sites.get(site_id)
        if hit is not None and hit[0] > now:
            site = hit[1]
        else:
            generation = self._generation.get(site_id, 0)
            h = await self.store.redis.hgetall(keyspace.site_key(site_id))
            site = _site_from_hash(site_id, h) if h else None
            if self._generation.get(site_id, 0) == generation:
                self._make_room()
                self._sites[site_id] = (now + self.ttl_s, site)
        if site is None:
            raise UnknownSite(f"site {site_id!r} does not exist")
        return site

    async def items(self, site_id: str, item_ids: Iterable[str]) -> dict[str, Item | None]:
        now = time.monotonic()
        cached = self._items.get(site_id, {})
        found: dict[str, Item | None] = {}
        missing: list[str] = []
        for item_id in item_ids:
            hit = cached.get(item_id)
            if hit is not None and hit[0] > now:
                found[item_id] = hit[1]
            elif ITEM_ID.match(item_id):
                missing.append(item_id)
            else:
                found[item_id] = None
        if missing:
            generation = self._generation.get(site_id, 0)
            fields = ("title", "price", "kind", "pass_hours", "has_content", "archived", "test_price", "test_since")
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for item_id in missing:
                    pipe.hmget(keyspace.item_key(site_id, item_id), fields)
                rows = await pipe.execute()
            keep = self._generation.get(site_id, 0) == generation
            if keep:
                self._make_room()
            entries = self._items.setdefault(site_id, {}) if keep else {}
            for item_id, row in zip(missing, rows, strict=True):
                item = (
                    None if row[0] is None else _item_from_hash(site_id, item_id, dict(zip(fields, row, strict=True)))
                )
                if keep and item_id not in entries:
                    self._entries += 1
                entries[item_id] = (now + self.ttl_s, item)
                found[item_id] = item
        return found

    async def item(self, site_id: str, item_id: str) -> Item:
        item = (await self.items(site_id, [item_id]))[item_id]
        if item is None:
            raise UnknownItem(f"item {item_id!r} does not exist on site {site_id}")
        return item


async def set_origins(store: Store, site_id: str, origins: Sequence[str]) -> tuple[str, ...]:
    """Replace the origins allowed to embed a site's cards (and to read its offers with CORS)."""
    return (await update_site(store, await Catalog(store, ttl_s=0).site(site_id), {"origins": origins})).origins


async def update_site(store: Store, site: Site, changes: dict[str, Any]) -> Site:
    """``site`` with ``changes`` (of ``sitesettings.CHANGEABLE``) checked as at creation, stored, and uncached."""
    checked = sitesettings.checked(changes)
    if checked:
        await store.redis.hset(keyspace.site_key(site.id), mapping=sitesettings.stored(checked))
        await store.redis.publish(keyspace.CATALOG_CHANNEL, site.id)  # every worker's cache drops the site
    return dataclasses.replace(site, **checked)
