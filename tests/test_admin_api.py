"""The admin API beyond creation: site settings, key rotation, item pages, archive and restore,
voucher lists and disabling, and purchases by the site's days.

Every test runs on standalone Redis and on the 3-master Cluster.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from coinslot import catalog
from coinslot.clock import FrozenClock
from coinslot.store import Store

from api import Api, auth

PROBLEMS = "https://coinslot.dev/problems/"


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


def problem(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    kind: str = r.json()["type"].removeprefix(PROBLEMS)
    return kind


async def patch_site(api: Api, site: tuple[str, str], **changes: Any) -> httpx.Response:
    return await api.client.patch("/v1/admin/site", json=changes, headers=auth(site[1]))


# Site settings ---------------------------------------------------------------------


async def test_settings_change_only_where_named_and_are_read_back(api: Api) -> None:
    site = await api.site()
    r = await patch_site(
        api, site, origins=["https://News.example.com/", "https://news.example.com"], timezone="Europe/Berlin"
    )
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["origins"] == ["https://news.example.com"]  # as browsers send it, once
    assert body["timezone"] == "Europe/Berlin"
    assert (body["tab_limit"], body["daily_cap"], body["currency"]) == (0, 0, "EUR")  # not named: unchanged

    r = await patch_site(api, site, tab_limit=100, daily_cap=300, refund_window=0)
    assert r.status_code == 200, r.text
    shown = (await api.client.get("/v1/admin/site", headers=auth(site[1]))).json()
    assert shown == {**body, "tab_limit": 100, "daily_cap": 300, "refund_window": 0}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"origins": ["javascript:alert(1)"]}, "origins"),
        ({"origins": ["https://a.example/*"]}, "origins"),
        ({"refund_window": 7 * 24 * 3600 + 1}, "refund_window"),
    ],
)
async def test_settings_out_of_bounds_are_refused_naming_the_field(
    api: Api, changes: dict[str, Any], field: str
) -> None:
    site = await api.site()
    before = (await api.client.get("/v1/admin/site", headers=auth(site[1]))).json()
    r = await patch_site(api, site, **changes)
    assert r.status_code in (400, 422), r.text
    assert problem(r) in ("invalid-setting", "invalid-body")
    assert field in r.text
    assert (await api.client.get("/v1/admin/site", headers=auth(site[1]))).json() == before


async def test_currency_and_unknown_fields_cannot_be_changed(api: Api) -> None:
    site = await api.site()
    for body in ({"currency": "USD"}, {"name": "Other"}, {"tab_limit": -1}, {"daily_cap": "100"}):
        r = await api.client.patch("/v1/admin/site", json=body, headers=auth(site[1]))
        assert r.status_code == 422, (body, r.text)
        assert problem(r) == "invalid-body"
    assert (await patch_site(api, site)).status_code == 200  # nothing named: nothing changes
    assert (await api.client.patch("/v1/admin/site", json={"daily_cap": 5})).status_code == 401


async def test_a_new_origin_reaches_the_card_page_and_cors_at_once(api: Api) -> None:
    site = await api.site(origins=["https://old.example"])
    await api.item(site, "a", 19)
    page = f"/embed/{site[0]}/a?origin=https://new.example"
    assert (await api.client.get(page)).status_code == 403  # also puts the site in the cache
    assert (await patch_site(api, site, origins=["https://new.example"])).status_code == 200

    r = await api.client.get(page)
    assert r.status_code == 200
    assert "frame-ancestors https://new.example" in r.headers["content-security-policy"]
    offers = await api.client.get(f"/v1/offers?site={site[0]}&items=a", headers={"Origin": "https://new.example"})
    assert offers.headers["access-control-allow-origin"] == "https://new.example"


async def test_a_new_daily_cap_applies_to_the_next_unlock(api: Api) -> None:
    site = await api.site()
    for name in ("a", "b"):
        await api.item(site, name, 30)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    assert (await patch_site(api, site, daily_cap=30)).status_code == 200
    assert (await api.unlock(wallet, site[0], "a")).json()["charged"] == 30
    assert (await api.unlock(wallet, site[0], "b")).json()["charged"] == 0  # free under the new cap


async def test_a_rotated_key_works_at_once_and_the_old_one_for_24_hours(api: Api, clock: FrozenClock) -> None:
    site = await api.site()
    r = await api.client.post("/v1/admin/site/rotate-key", headers=auth(site[1]))
    assert r.status_code == 201, r.text
    body = r.json()
    new = body["secret_key"]
    assert new.startswith("sk_") and new != site[1]
    assert body["previous_keys_valid_until"] == clock.now_ms() + 24 * 3600 * 1000
    for key in (new, site[1]):
        assert (await api.client.get("/v1/admin/site", headers=auth(key))).status_code == 200
    clock.advance(24 * 3600 + 1)
    assert (await api.client.get("/v1/admin/site", headers=auth(site[1]))).status_code == 401
    assert (await api.client.get("/v1/admin/site", headers=auth(new))).status_code == 200


# Items: pages, archive, restore -----------------------------------------------------


async def test_items_come_a_page_at_a_time_in_id_order_without_repeats(api: Api) -> None:
    site = await api.site()
    names = [f"item-{i}" for i in (3, 1, 4, 0, 2)]
    for name in names:
        await api.item(site, name, 10)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        r = await api.client.get("/v1/admin/items", params=params, headers=auth(site[1]))
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        seen += [i["item"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        await api.item(site, "item-00", 10)  # added behind the cursor meanwhile: never shifts a page
    assert pages == 3
    assert seen == sorted(names)
    everything = (await api.client.get("/v1/admin/items", headers=auth(site[1]))).json()
    assert [i["item"] for i in everything["items"]] == sorted([*names, "item-00"])
    assert everything["next_cursor"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=x", "cursor=%2F..%2F"])
async def test_a_bad_page_query_is_refused(api: Api, query: str) -> None:
    site = await api.site()
    r = await api.client.get(f"/v1/admin/items?{query}", headers=auth(site[1]))
    assert r.status_code == 422
    assert problem(r) == "invalid-query"


async def test_an_archived_item_is_not_sold_but_who_bought_it_keeps_it(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19, content_html="<p>words</p>")
    owner, stranger = await api.wallet(), await api.wallet()
    for wallet in (owner, stranger):
        await api.fund(site, wallet, 100)
    assert (await api.unlock(owner, site[0], "a")).status_code == 200

    r = await api.client.post("/v1/admin/items/a/archive", headers=auth(site[1]))
    assert r.status_code == 200, r.text
    assert r.json()["archived"] is True

    refused = await api.unlock(stranger, site[0], "a")
    assert refused.status_code == 410
    assert problem(refused) == "item-archived"
    assert await api.balance(stranger) == 100
    kept = await api.unlock(owner, site[0], "a")
    assert kept.status_code == 200, kept.text
    assert (kept.json()["charged"], kept.json()["content"]) == (0, "<p>words</p>")
    offers = (await api.client.get(f"/v1/offers?site={site[0]}&items=a", headers=auth(owner))).json()
    assert offers["items"][0]["archived"] is True and offers["items"][0]["owned"] is True

    card = (await api.client.get(f"/embed/{site[0]}/a?origin=http://localhost:8001")).text
    config = json.loads(card.split('id="coinslot-config">', 1)[1].split("</script>", 1)[0])
    assert config["archived"] is True  # the card shows its button disabled: "no longer sold"
    drawn = (await api.client.get(f"/placeholders/{site[0]}?items=a")).json()
    assert drawn["items"] == [] and drawn["unknown"] == []  # no price drawn, yet not unknown either

    await api.item(site, "a", 25)  # replacing its title or price does not put it back on sale
    assert (await api.unlock(stranger, site[0], "a")).status_code == 410

    r = await api.client.post("/v1/admin/items/a/restore", headers=auth(site[1]))
    assert r.json()["archived"] is False
    bought = await api.unlock(stranger, site[0], "a")
    assert bought.status_code == 200, bought.text
    assert bought.json()["charged"] == 25


async def test_archiving_an_unknown_item_is_a_404_and_creates_nothing(api: Api) -> None:
    site = await api.site()
    for name in ("nothing-here", "bad%20id"):
        r = await api.client.post(f"/v1/admin/items/{name}/archive", headers=auth(site[1]))
        assert r.status_code == 404
        assert problem(r) == "unknown-item"
    assert (await api.client.get("/v1/admin/items", headers=auth(site[1]))).json()["items"] == []


async def test_an_archived_pass_is_no_longer_offered_beside_items(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    await api.item(site, "day", 99, pass_hours=24)
    card = await api.client.get(f"/v1/card/{site[0]}/a")
    assert card.json()["site_pass"]["item"] == "day"
    await api.client.post("/v1/admin/items/day/archive", headers=auth(site[1]))
    assert (await api.client.get(f"/v1/card/{site[0]}/a")).json()["site_pass"] is None


# Vouchers ---------------------------------------------------------------------------


async def test_vouchers_are_listed_with_their_uses_left_and_can_be_disabled(api: Api) -> None:
    site, other = await api.site(), await api.site()
    code = await api.voucher(site, 200, uses=3)
    await api.voucher(site, 100)
    await api.voucher(other, 100)
    assert (await api.redeem(await api.wallet(), code)).status_code == 200

    listed = (await api.client.get("/v1/admin/vouchers", headers=auth(site[1]))).json()
    assert len(listed["vouchers"]) == 2 and listed["next_cursor"] is None
    mine = next(v for v in listed["vouchers"] if v["code"] == code)
    assert (mine["uses"], mine["uses_left"], mine["disabled"], mine["amount"]) == (3, 2, False, 200)

    first = (await api.client.get("/v1/admin/vouchers?limit=1", headers=auth(site[1]))).json()
    rest = await api.client.get(f"/v1/admin/vouchers?limit=1&cursor={first['next_cursor']}", headers=auth(site[1]))
    assert {v["code"] for v in first["vouchers"] + rest.json()["vouchers"]} == {v["code"] for v in listed["vouchers"]}

    r = await api.client.post(f"/v1/admin/vouchers/{code.lower()}/disable", headers=auth(site[1]))
    assert r.status_code == 200, r.text
    assert (r.json()["disabled"], r.json()["uses_left"]) == (True, 2)
    refused = await api.redeem(await api.wallet(), code)
    assert refused.status_code == 409
    assert problem(refused) == "voucher-disabled"

    foreign = await api.client.post(f"/v1/admin/vouchers/{code}/disable", headers=auth(other[1]))
    assert foreign.status_code == 404
    assert problem(foreign) == "unknown-voucher"


# Purchases and refunds by date ------------------------------------------------------


async def test_purchases_and_refunds_are_listed_by_the_sites_days(api: Api, clock: FrozenClock) -> None:
    # 2026-01-01T00:00Z is 01:00 in Berlin; 23:30Z is 00:30 on 2 January there.
    site = await api.site(timezone="Europe/Berlin", refund_window=3600)
    await api.item(site, "a", 19)
    await api.item(site, "b", 30)
    wallet = await api.wallet()
    await api.fund(site, wallet, 200)
    bought = (await api.unlock(wallet, site[0], "a")).json()
    clock.advance(23.5 * 3600)
    (await api.unlock(wallet, site[0], "b")).json()
    undo = await api.client.post(f"/v1/purchases/{bought['purchase_id']}/refund", headers=auth(wallet))
    assert undo.status_code == 409  # the window has passed: the site refunds as goodwill instead
    r = await api.client.post(f"/v1/admin/purchases/{bought['purchase_id']}/refund", headers=auth(site[1]))
    assert r.status_code == 200, r.text

    def sales(query: str) -> Any:
        return api.client.get(f"/v1/admin/purchases?{query}", headers=auth(site[1]))

    first = (await sales("from=2026-01-01&to=2026-01-01")).json()
    assert [(s["kind"], s["item"], s["amount"], s["day"]) for s in first["sales"]] == [
        ("purchase", "a", 19, "2026-01-01")
    ]
    both = (await sales("from=2026-01-01&to=2026-01-02")).json()
    assert [(s["kind"], s["item"], s["amount"]) for s in both["sales"]] == [
        ("purchase", "a", 19),
        ("purchase", "b", 30),
        ("refund", "a", -19),
    ]
    assert both["sales"][2]["refunded_by"] == "publisher"
    assert both["sales"][2]["purchase_id"] == bought["purchase_id"]
    wallet_id = await api.wallet_id(wallet)
    assert wallet_id not in (await sales("from=2026-01-01&to=2026-01-02")).text
    assert len({s["wallet"] for s in both["sales"]}) == 1
    today = (await sales("")).json()  # default: the site's today, 2 January
    assert (today["from"], today["to"], len(today["sales"])) == ("2026-01-02", "2026-01-02", 2)


@pytest.mark.parametrize(
    ("query", "field"),
    [("from=2026-13-01", "from"), ("from=2026-01-02&to=2026-01-01", "to"), ("from=2024-12-31&to=2026-01-01", "to")],
)
async def test_a_bad_date_range_is_refused_naming_the_parameter(api: Api, query: str, field: str) -> None:
    site = await api.site()
    r = await api.client.get(f"/v1/admin/purchases?{query}", headers=auth(site[1]))
    assert r.status_code == 422
    assert problem(r) == "invalid-query"
    assert r.json()["field"] == field


async def test_the_domain_checks_settings_as_creation_does(store: Store, clock: FrozenClock) -> None:
    site, _ = await catalog.create_site(store, name="N", origins=["https://a.example"], now_ms=clock.now_ms())
    changed = await catalog.update_site(store, site, {"tab_limit": 50})
    assert changed.tab_limit == 50 and changed.origins == site.origins
    assert (await catalog.Catalog(store).site(site.id)).tab_limit == 50
