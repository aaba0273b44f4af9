"""Price tests (coinslot.pricetests): the split of readers, money rule 7 per reader (the card, the offers,
the content's 402 and the unlock agree), a wallet made in the variant its reader was shown, the counts per
price, the verdict's statistics, and the publisher's calls. Every API test runs on standalone Redis and
on the 3-master Cluster.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from typing import Any

import httpx
import pytest

from coinslot import keyspace, pricetests
from coinslot.catalog import Catalog, Item
from coinslot.clock import FrozenClock
from coinslot.keyring import KeyRing
from coinslot.ledger import reconcile
from coinslot.pricetests import A, Arm, B
from coinslot.sitedays import site_day
from coinslot.store import Store
from coinslot.tokens import UnlockTokens

from api import Api, auth

CARD_GET = {"Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


def services(api: Api) -> Any:
    return api.client.app.state.services  # type: ignore[attr-defined]


def admin(site: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {site[1]}"}


async def start(api: Api, site: tuple[str, str], item: str, test_price: int) -> httpx.Response:
    return await api.client.post(
        f"/v1/admin/items/{item}/price-test", json={"test_price": test_price}, headers=admin(site)
    )


async def keep(api: Api, site: tuple[str, str], item: str, price: int) -> httpx.Response:
    return await api.client.post(f"/v1/admin/items/{item}/price-test/keep", json={"price": price}, headers=admin(site))


async def card_price(api: Api, site: str, item: str, wallet: str | None = None, query: str = "") -> dict[str, Any]:
    headers = auth(wallet) if wallet else CARD_GET
    r = await api.client.get(f"/v1/card/{site}/{item}{query}", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# The split ------------------------------------------------------------------------------------------


def test_readers_are_split_about_evenly_and_each_keeps_their_variant_on_a_site() -> None:
    tokens = UnlockTokens(
        KeyRing.generate(), issuer="http://127.0.0.1:8000", pseudonym_secret=secrets.token_bytes(32), livemode=False
    )
    readers = [f"w_{secrets.token_hex(16)}" for _ in range(10_000)]
    first = [pricetests.variant(tokens.pseudonym("site_a", w)) for w in readers]
    in_b = first.count(B)
    # Binomial(10,000, 1/2): the standard deviation is 50; 5 of them is a bound a fair split breaks once in ~2 million.
    assert abs(in_b - 5000) <= 5 * math.sqrt(10_000 * 0.25), in_b
    again = UnlockTokens(
        KeyRing.generate(), issuer="http://127.0.0.1:8000", pseudonym_secret=tokens._pseudonym_secret, livemode=False
    )  # another process with the deployment's secret: nothing remembered, the same split
    assert [pricetests.variant(again.pseudonym("site_a", w)) for w in readers] == first
    # Another site splits the same readers independently of the first.
    other = [pricetests.variant(tokens.pseudonym("site_b", w)) for w in readers]
    agree = sum(x == y for x, y in zip(first, other, strict=True))
    assert abs(agree - 5000) <= 5 * 50, agree


def test_price_for_each_variant() -> None:
    item = Item("site_a", "a", "A", 19, test_price=29, test_since_ms=1)
    assert (pricetests.price_for(item, A), pricetests.price_for(item, B), pricetests.price_for(item, None)) == (
        19,
        29,
        19,
    )
    assert pricetests.price_for(Item("site_a", "a", "A", 19), B) == 19  # no test: one price for all


# Money rule 7 per reader --------------------------------------------------------------------------------


async def test_the_card_the_offers_the_402_and_the_unlock_agree_for_every_reader(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19, content_html="<p>Story</p>")
    started = await start(api, site, "a", 29)
    assert started.status_code == 201, started.text
    seen: dict[int, int] = {19: 0, 29: 0}
    for _ in range(24):
        wallet = await api.wallet()
        await api.fund(site, wallet, 100)
        state = await card_price(api, site[0], "a", wallet)
        price = state["price"]
        assert state["variant"] == (B if price == 29 else A)
        offers = await api.client.get(f"/v1/offers?site={site[0]}&items=a", headers=auth(wallet))
        assert offers.json()["items"][0]["price"] == price
        door = await api.client.get(f"/v1/content/{site[0]}/a", headers=auth(wallet))
        assert door.status_code == 402 and door.json()["offer"]["price"] == price
        assert f'price="{price}"' in door.headers["www-authenticate"]
        other = 19 if price == 29 else 29
        refused = await api.unlock(wallet, site[0], "a", price=other)
        assert refused.status_code == 409 and refused.json()["price"] == price  # never the price not shown
        bought = await api.unlock(wallet, site[0], "a", price=price)
        assert bought.status_code == 200 and bought.json()["charged"] == price
        assert await api.balance(wallet) == 100 - price
        seen[price] += 1
    assert seen[19] and seen[29], seen  # 24 readers fall in one half with probability 2^-23


async def test_a_reader_without_a_wallet_keeps_the_price_shown_and_pays_it(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    await start(api, site, "a", 29)
    first = await card_price(api, site[0], "a", query="?view=1")
    assert first["wallet"] is False and first["variant"] in (A, B)
    for variant, price in ((A, 19), (B, 29)):
        # The page view's next reads keep the variant the first one drew.
        assert (await card_price(api, site[0], "a", query=f"?variant={variant}"))["price"] == price
        for _ in range(3):
            made = await api.client.post("/v1/wallets", json={"currency": "EUR", "site": site[0], "variant": variant})
            assert made.status_code == 201, made.text
            wallet = made.json()["token"]
            state = await card_price(api, site[0], "a", wallet)
            assert (state["variant"], state["price"]) == (variant, price)
            await api.fund(site, wallet, 50)
            assert (await api.unlock(wallet, site[0], "a", price=price)).json()["charged"] == price
    refused = await api.client.post("/v1/wallets", json={"currency": "EUR", "site": site[0], "variant": "c"})
    assert refused.status_code == 422


async def test_the_charged_price_is_the_shown_price_while_the_publisher_changes_prices(api: Api, store: Store) -> None:
    site = await api.site()
    items = [f"a{n}" for n in range(4)]
    for item in items:
        await api.item(site, item, 19)
    readers = []
    for _ in range(12):
        wallet = await api.wallet()
        await api.fund(site, wallet, 500)
        readers.append(wallet)

    async def reader(wallet: str) -> list[tuple[int, httpx.Response]]:
        done = []
        for item in items:
            for _ in range(3):
                shown = (await card_price(api, site[0], item, wallet))["price"]
                await asyncio.sleep(0)  # the publisher may change the price between the card and the press
                r = await api.unlock(wallet, site[0], item, price=shown)
                done.append((shown, r))
                if r.status_code == 200:
                    break
        return done

    async def publisher() -> None:
        for n in range(24):
            item = items[n % len(items)]
            await start(api, site, item, 29 + n)
            await asyncio.sleep(0)
            await keep(api, site, item, 19 if n % 2 else 29 + n)
            await asyncio.sleep(0)
            await api.item(site, item, 19)

    changing = asyncio.create_task(publisher())
    outcomes = await asyncio.gather(*(reader(w) for w in readers))
    await changing
    charged_total = 0
    for wallet, tries in zip(readers, outcomes, strict=True):
        paid = 0
        for shown, r in tries:
            if r.status_code == 200:
                assert r.json()["charged"] == shown  # nobody pays a price they did not see
                paid += r.json()["charged"]
            else:
                assert r.status_code == 409 and r.json()["type"].endswith("price-changed"), r.text
                assert r.json()["price"] != shown
        assert await api.balance(wallet) == 500 - paid
        charged_total += paid
    report = await reconcile(store)
    assert report.clean, report.problems
    assert report.accounts[keyspace.site_revenue_account(site[0])]["EUR"] == charged_total


# Counting and results ------------------------------------------------------------------------------------


async def test_views_presses_sales_and_refunds_are_counted_per_price(api: Api) -> None:
    site = await api.site(refund_window=600)
    await api.item(site, "a", 19)
    await start(api, site, "a", 29)
    expected = {A: [0, 0, 0], B: [0, 0, 0]}  # views, sales, revenue
    undone = None
    for n in range(12):
        wallet = await api.wallet()
        await api.fund(site, wallet, 100)
        state = await card_price(api, site[0], "a", wallet, "?view=1")
        expected[state["variant"]][0] += 1
        if n % 3 == 0:
            continue  # seen, not bought
        bought = await api.unlock(wallet, site[0], "a", price=state["price"])
        expected[state["variant"]][1] += 1
        expected[state["variant"]][2] += state["price"]
        await card_price(api, site[0], "a", wallet, "?view=1")  # an owner's view shows no price: not counted
        if undone is None:
            undone = (state["variant"], state["price"])
            r = await api.client.post(f"/v1/purchases/{bought.json()['purchase_id']}/refund", headers=auth(wallet))
            assert r.status_code == 200, r.text
    await card_price(api, site[0], "a", query="?view=1")  # a reader without a wallet counts in the variant drawn
    await services(api).insights.flush()
    got = (await api.client.get("/v1/admin/items/a/price-test", headers=admin(site))).json()
    assert got["running"] is True and (got["price"], got["test_price"]) == (19, 29)
    arms = {arm["variant"]: arm for arm in got["arms"]}
    assert undone is not None
    expected[undone[0]][2] -= undone[1]
    views_without_wallet = arms[A]["views"] + arms[B]["views"] - expected[A][0] - expected[B][0]
    assert views_without_wallet == 1
    for variant in (A, B):
        views, sales, revenue = expected[variant]
        assert arms[variant]["views"] - views in (0, 1)
        assert (arms[variant]["sales"], arms[variant]["revenue"]) == (sales, revenue)
        assert arms[variant]["refunds"] == (1 if variant == undone[0] else 0)
    assert got["enough_views"] is False and got["ahead"] is None
    # Nothing in the test's counts names a reader.
    key = keyspace.price_test_key(site[0], "a", got["since"])
    assert all(":" in f and f.split(":")[0] in (A, B) for f in await api.store.redis.hkeys(key))
    # Kept as long as the day's counts: the retention after the day of the last count.
    day = site_day("UTC", api.clock.now_ms()).day
    assert await api.store.redis.expiretime(key) == await api.store.redis.expiretime(
        keyspace.insights_day_key(site[0], day)
    )


def arm(variant: str, price: int, views: int, sales: int) -> Arm:
    return Arm(variant, price, views, presses=sales, sales=sales, revenue=sales * price, refunds=0)


def test_the_verdict_needs_views_and_a_difference_beyond_the_interval() -> None:
    clear = pricetests.judge(0, arm(A, 19, 2000, 100), arm(B, 29, 2000, 100))
    assert clear.enough_views and clear.ahead == B  # same conversion, higher price
    diff = clear.difference
    assert diff is not None and diff.low > 0
    close = pricetests.judge(0, arm(A, 19, 2000, 100), arm(B, 29, 2000, 68))
    assert close.ahead is None  # 950 against 986 per 1,000 views: within the noise
    worse = pricetests.judge(0, arm(A, 19, 5000, 500), arm(B, 29, 5000, 150))
    assert worse.ahead == A
    early = pricetests.judge(0, arm(A, 19, 99, 5), arm(B, 29, 2000, 400))
    assert not early.enough_views and early.ahead is None


def test_wilson_interval() -> None:
    # 10 of 100: the Wilson 95 % interval is 5.52 % to 17.44 % (textbook value).
    found = pricetests.wilson(10, 100)
    assert found is not None
    assert (round(found.low, 4), round(found.high, 4)) == (0.0552, 0.1744)
    none = pricetests.wilson(0, 50)
    assert none is not None and none.low == pytest.approx(0, abs=1e-12) and 0.07 < none.high < 0.072
    assert pricetests.wilson(0, 0) is None


# The publisher's calls -----------------------------------------------------------------------------------


async def test_start_refuses_what_cannot_be_tested_and_keep_ends_the_test(api: Api, clock: FrozenClock) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    await api.item(site, "day", 99, pass_hours=24)
    await api.item(site, "old", 19)
    await api.client.post("/v1/admin/items/old/archive", headers=admin(site))
    for item, price in (("a", 19), ("a", 100_001), ("day", 49), ("old", 29)):
        r = await start(api, site, item, price)
        assert r.status_code == 422, (item, price, r.text)
    assert (await start(api, site, "nope", 29)).status_code == 404
    assert (await keep(api, site, "a", 19)).json()["type"].endswith("no-price-test")

    assert (await start(api, site, "a", 29)).status_code == 201
    again = await start(api, site, "a", 39)
    assert again.status_code == 409 and again.json()["type"].endswith("price-test-running")
    # Replacing the item (its title, its price) keeps the test running.
    assert (await api.item(site, "a", 21, title="New title"))["test_price"] == 29
    assert (await keep(api, site, "a", 30)).status_code == 422  # neither of the two
    clock.advance(1000)
    kept = await keep(api, site, "a", 29)
    assert kept.status_code == 200 and kept.json() == {"item": "a", "running": False, "price": 29}
    wallet = await api.wallet()
    assert (await card_price(api, site[0], "a", wallet))["price"] == 29
    assert "variant" not in await card_price(api, site[0], "a", wallet)
    listed = (await api.client.get("/v1/admin/items", headers=admin(site))).json()["items"]
    assert next(i for i in listed if i["item"] == "a")["test_price"] is None
    # Replacing the item keeps how its last test ended; making it a pass ends a running test.
    await api.item(site, "a", 29, title="Again")
    last = await pricetests.last_test(api.store, await Catalog(api.store, ttl_s=0).item(site[0], "a"))
    assert last is not None and (last["a"], last["b"], last["kept"]) == (21, 29, 29)
    assert (await start(api, site, "a", 39)).status_code == 201
    assert (await api.item(site, "a", 99, pass_hours=24))["test_price"] is None
    assert (await start(api, site, "a", 49)).status_code == 422  # a pass


async def test_the_card_page_names_no_price_while_the_item_is_tested(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    page = await api.client.get(f"/embed/{site[0]}/a?origin=http://localhost:8001")
    assert "€0.19" in page.text
    await start(api, site, "a", 29)
    tested = await api.client.get(f"/embed/{site[0]}/a?origin=http://localhost:8001")
    assert tested.status_code == 200 and "€0.19" not in tested.text and "€0.29" not in tested.text
    assert ">Unlock</button>" in tested.text
    held = await api.client.get(f"/placeholders/{site[0]}?items=a")
    assert held.json()["items"][0]["text"] == "Unlock"
