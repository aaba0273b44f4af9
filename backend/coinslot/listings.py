"""Items as their publisher manages them: listed a page at a time, taken off sale (archived) and put back.

An archived item is not sold: unlocks answer 410 ``item-archived`` and offers mark it, while a
reader who bought it (or whose pass covers it) keeps reading it — money taken stays honoured.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from coinslot import keyspace
from coinslot.catalog import ITEM_ID, Catalog, Item, check_item_id, list_items
from coinslot.errors import InvalidQuery, UnknownItem
from coinslot.store import Store

DEFAULT_PAGE = 50
MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    next_cursor: str | None  # None on the last page


def admin_view(item: Item, currency: str) -> dict[str, object]:
    """An item as its publisher sees it (the admin API, the CLI): whether it is on sale, hosts its
    content, and which second price it is under test at (None: no test)."""
    more = {"archived": item.archived, "has_content": item.has_content, "test_price": item.test_price}
    return {**item.public(currency), **more}


def page_size(raw: str | None) -> int:
    """The ``limit`` query parameter: 1 to ``MAX_PAGE``, ``DEFAULT_PAGE`` when absent."""
    if raw is None or raw == "":
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidQuery(f"limit {raw!r} must be a whole number from 1 to {MAX_PAGE}", field="limit")
    return int(raw)


async def items_page(catalog: Catalog, site_id: str, *, limit: int, cursor: str | None) -> Page:
    """Up to ``limit`` items in the order of their ids, after ``cursor`` (the previous page's ``next_cursor``).

    The order is by id, so a page never shifts when items are added or archived meanwhile: an item
    put after the cursor shows on a later page, one before it does not repeat.
    """
    if cursor is not None and not ITEM_ID.match(cursor):
        raise InvalidQuery(f"cursor {cursor!r} is not one this API gave out", field="cursor")
    ids = await list_items(catalog.store, site_id)
    start = 0 if cursor is None else bisect.bisect_right(ids, cursor)
    chosen = ids[start : start + limit]
    found = await catalog.items(site_id, chosen)
    items = [item for item in (found[i] for i in chosen) if item is not None]
    more = start + limit < len(ids)
    return Page(items, chosen[-1] if more and chosen else None)


async def set_archived(
    store: Store, catalog: Catalog, site_id: str, item_id: str, archived: bool, *, now_ms: int
) -> Item:
    """Take an item off sale (``archived``) or put it back on sale; returns it as it is now."""
    ik = keyspace.item_key(site_id, check_item_id(item_id))
    # Items are never deleted, so one that exists now still exists when the flag is written.
    if not await store.redis.exists(ik):
        raise UnknownItem(f"item {item_id!r} does not exist on site {site_id}")
    await store.redis.hset(ik, mapping={"archived": "1" if archived else "0", "updated_ms": now_ms})
    await store.redis.publish(keyspace.CATALOG_CHANNEL, site_id)
    catalog.invalidate(site_id)
    return await catalog.item(site_id, item_id)
