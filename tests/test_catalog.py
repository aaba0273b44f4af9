"""Sites and items: validation, sanitizing on write, and the in-process cache that follows changes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from coinslot import catalog
from coinslot.clock import FrozenClock
from coinslot.errors import BadRequest, DuplicateCode, InvalidBody, UnknownItem, UnknownSite
from coinslot.keyspace import CATALOG_CHANNEL
from coinslot.store import Store, connect

from conftest import unique


async def new_site(store: Store, **options: Any) -> catalog.Site:
    site, _ = await catalog.create_site(
        store, name="Planet", origins=["https://planet.example"], site_id=unique("site_c"), now_ms=0, **options
    )
    return site


@pytest.mark.parametrize(
    "options",
    [
        {"currency": "EURO"},
        {"timezone": "Mars/Olympus"},
        {"tab_limit": -1},
        {"origins": ["javascript:alert(1)"]},
        {"origins": ["https://planet.example/path"]},
        {"site_id": "no-prefix"},
    ],
)
async def test_site_options_are_validated(standalone_store: Store, options: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        await catalog.create_site(
            standalone_store,
            **{"name": "P", "origins": ["https://p.example"], "now_ms": 0, **options},  # type: ignore[arg-type]
        )


async def test_site_ids_are_unique(standalone_store: Store) -> None:
    site = await new_site(standalone_store)
    with pytest.raises(DuplicateCode):
        await catalog.create_site(standalone_store, name="Again", origins=[], site_id=site.id, now_ms=0)


async def test_secret_key_is_stored_only_as_a_digest(standalone_store: Store) -> None:
    site, secret = await catalog.create_site(standalone_store, name="P", origins=[], site_id=unique("site_c"), now_ms=0)
    dump = await standalone_store.redis.hgetall("{s:" + site.id + "}")
    assert secret not in str(dump)
    assert catalog.secret_digest(secret) in dump["secret_digests"]
    assert (await catalog.authenticate(standalone_store, secret, now_ms=0)).id == site.id


def test_content_is_sanitized_with_an_allow_list() -> None:
    dirty = (
        '<h2>Title</h2><p style="x" onmouseover="steal()">Text <a href="javascript:x()">bad</a> '
        '<a href="https://ok.example">ok</a></p><script>alert(1)</script><iframe src="//evil"></iframe>'
        '<img src="https://ok.example/a.png" onerror="x()">'
    )
    clean = catalog.sanitize_html(dirty)
    for banned in ("script", "onmouseover", "javascript:", "iframe", "onerror", "style="):
        assert banned not in clean
    assert '<a href="https://ok.example" rel="noopener noreferrer">ok</a>' in clean
    assert "<h2>Title</h2>" in clean


async def _until_price(cache: catalog.Catalog, site_id: str, item_id: str, price: int, *, tries: int) -> None:
    """Polls the cache every 10 ms, at most ``tries`` times, until it shows ``price``."""
    for _ in range(tries):
        if (await cache.item(site_id, item_id)).price == price:
            return
        await asyncio.sleep(0.01)


async def test_cache_follows_changes_made_by_another_worker(store: Store, tmp_path: Path, keyring: object) -> None:
    """A price change through one worker reaches the cache of another at once, not after its TTL."""
    from conftest import make_settings, running_app

    site = await new_site(store)
    await catalog.put_item(store, site, "a", title="A", price=19, now_ms=0)
    clock = FrozenClock()
    async with running_app(make_settings(tmp_path), store, clock, keyring) as worker:  # type: ignore[arg-type]
        services = worker.app.state.services  # type: ignore[attr-defined]
        services.catalog.ttl_s = 3600.0  # only the change feed can refresh it now
        assert (await services.catalog.item(site.id, "a")).price == 19

        await catalog.put_item(store, site, "a", title="A", price=29, now_ms=0)  # "another worker"

        await _until_price(services.catalog, site.id, "a", 29, tries=100)
        assert (await services.catalog.item(site.id, "a")).price == 29


async def test_a_worker_serves_only_once_it_hears_catalog_changes(
    standalone_store: Store, tmp_path: Path, keyring: object
) -> None:
    """A change published the moment start-up ends must not be missed (it would stand until the TTL)."""
    from conftest import make_settings, running_app

    async with running_app(make_settings(tmp_path), standalone_store, FrozenClock(), keyring):  # type: ignore[arg-type]
        listeners = dict(await standalone_store.redis.pubsub_numsub(CATALOG_CHANNEL))
        assert listeners[CATALOG_CHANNEL] == 1


async def test_changes_missed_while_the_feed_was_down_are_not_served_after_it_returns(
    standalone_store: Store, tmp_path: Path, keyring: object, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import make_settings, running_app

    site = await new_site(standalone_store)
    await catalog.put_item(standalone_store, site, "a", title="A", price=19, now_ms=0)
    async with running_app(make_settings(tmp_path), standalone_store, FrozenClock(), keyring) as worker:  # type: ignore[arg-type]
        services = worker.app.state.services  # type: ignore[attr-defined]
        services.catalog.ttl_s = 3600.0
        assert (await services.catalog.item(site.id, "a")).price == 19

        assert await standalone_store.redis.client_kill_filter(_type="pubsub") == 1
        # Published while nobody listens: the feed waits 1 s before it subscribes again.
        await catalog.put_item(standalone_store, site, "a", title="A", price=29, now_ms=0)

        await _until_price(services.catalog, site.id, "a", 29, tries=300)
        assert (await services.catalog.item(site.id, "a")).price == 29
    assert [r for r in caplog.records if "change feed interrupted" in r.getMessage()]


async def test_the_change_feed_outlives_idle_spells_longer_than_the_clients_timeout(
    standalone_url: str, tmp_path: Path, keyring: object, caplog: pytest.LogCaptureFixture
) -> None:
    """The feed waits for messages longer than any command may take, without dropping its subscription."""
    from conftest import make_settings, running_app

    store = Store(await connect(standalone_url + "?socket_timeout=0.2"))
    try:
        site = await new_site(store)
        await catalog.put_item(store, site, "a", title="A", price=19, now_ms=0)
        async with running_app(make_settings(tmp_path), store, FrozenClock(), keyring) as worker:  # type: ignore[arg-type]
            services = worker.app.state.services  # type: ignore[attr-defined]
            services.catalog.ttl_s = 3600.0
            assert (await services.catalog.item(site.id, "a")).price == 19
            await asyncio.sleep(0.7)  # quiet for several socket timeouts

            await catalog.put_item(store, site, "a", title="A", price=29, now_ms=0)

            await _until_price(services.catalog, site.id, "a", 29, tries=50)
            assert (await services.catalog.item(site.id, "a")).price == 29
        assert not [r for r in caplog.records if "change feed interrupted" in r.getMessage()]
    finally:
        await store.close()


async def test_the_unlock_paths_cached_lookup_answers_only_fresh_known_entries(
    standalone_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = await new_site(standalone_store)
    await catalog.put_item(standalone_store, site, "a", title="A", price=19, now_ms=0)
    cache = catalog.Catalog(standalone_store, ttl_s=60)
    assert cache.cached(site.id, "a") is None  # nothing read yet
    with pytest.raises(UnknownItem):
        await cache.item(site.id, "missing")
    assert cache.cached(site.id, "missing") is None  # cached as unknown: the slow path says why

    await cache.site(site.id)
    await cache.item(site.id, "a")
    hit = cache.cached(site.id, "a")
    assert hit is not None and hit[0].id == site.id and hit[1].price == 19

    cache.invalidate(site.id)
    assert cache.cached(site.id, "a") is None
    await cache.site(site.id)
    await cache.item(site.id, "a")
    later = time.monotonic() + 61
    with monkeypatch.context() as patched:  # undone at once: the event loop reads this clock too
        patched.setattr(time, "monotonic", lambda: later)
        assert cache.cached(site.id, "a") is None  # expired


async def test_unknown_and_malformed_items(standalone_store: Store) -> None:
    site = await new_site(standalone_store)
    cache = catalog.Catalog(standalone_store)
    with pytest.raises(UnknownItem):
        await cache.item(site.id, "missing")
    with pytest.raises(UnknownItem):
        catalog.check_item_id("../etc/passwd")


async def test_the_last_pass_put_is_the_one_the_site_offers_until_it_is_a_plain_item(
    standalone_store: Store,
) -> None:
    site = await new_site(standalone_store, daily_cap=300)
    assert site.daily_cap == 300
    for item_id, hours in (("day-pass", 24), ("week-pass", 168)):
        made = await catalog.put_item(
            standalone_store, site, item_id, title="Pass", price=200, pass_hours=hours, now_ms=0
        )
        assert (made.kind, made.pass_hours) == (catalog.KIND_PASS, hours)
    cached = catalog.Catalog(standalone_store)
    site = await cached.site(site.id)
    assert site.pass_item == "week-pass"

    await catalog.put_item(standalone_store, site, "week-pass", title="Now an article", price=20, now_ms=0)
    assert (await catalog.Catalog(standalone_store).site(site.id)).pass_item is None
    with pytest.raises(InvalidBody, match="pass_hours 0"):
        await catalog.put_item(standalone_store, site, "p", title="Pass", price=1, pass_hours=0, now_ms=0)


async def test_a_refund_window_is_at_most_a_week(standalone_store: Store) -> None:
    assert (await new_site(standalone_store)).refund_window == catalog.DEFAULT_REFUND_WINDOW_S
    assert (await new_site(standalone_store, refund_window=7 * 24 * 3600)).refund_window == 7 * 24 * 3600
    with pytest.raises(BadRequest, match="at most 604800"):
        await new_site(standalone_store, refund_window=7 * 24 * 3600 + 1)


async def test_cache_stays_bounded_whatever_is_asked(standalone_store: Store) -> None:
    site = await new_site(standalone_store)
    cache = catalog.Catalog(standalone_store, max_entries=20)

    for n in range(10):
        await cache.items(site.id, [f"nope-{n}-{m}" for m in range(50)])
        with pytest.raises(UnknownSite):
            await cache.site("site_" + "x" * 40 + str(n))
    with pytest.raises(UnknownSite):
        await cache.site("not a site id " * 100)

    assert cache._entries + len(cache._sites) <= 70  # one batch past the bound at most
    assert sum(len(v) for v in cache._items.values()) == cache._entries


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("art\n", catalog.ITEM_ID),
        ("site_x\n", catalog.SITE_ID),
    ],
)
def test_ids_with_a_trailing_newline_are_refused(value: str, pattern: Any) -> None:
    assert pattern.match(value.rstrip("\n"))
    assert not pattern.match(value)


@pytest.mark.parametrize("code", ["XXX", "XTS", "XAU", "DEM", "ABC", "EU", "EURO", "EUR\n", "€"])
async def test_a_site_sells_only_in_a_currency_in_use(standalone_store: Store, code: str) -> None:
    with pytest.raises(BadRequest, match="not the ISO 4217 code of a currency in use"):
        await new_site(standalone_store, currency=code)


@pytest.mark.parametrize(("code", "stored"), [("EUR", "EUR"), ("gbp", "GBP"), ("JPY", "JPY"), ("XOF", "XOF")])
async def test_currencies_in_use_are_stored_upper_case(standalone_store: Store, code: str, stored: str) -> None:
    assert (await new_site(standalone_store, currency=code)).currency == stored
