"""The dashboard's counters (coinslot.insights): every step of the funnel counted from real requests,
on the site's day, with no wallet id and no address anywhere in Redis, and kept as long as configured.

Every test runs on standalone Redis and on the 3-master Cluster.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from coinslot import insights, keyspace
from coinslot.clock import FrozenClock
from coinslot.insights import Note
from coinslot.sitedays import site_day
from coinslot.store import Store

from api import Api, auth

CLIENT_IP = "203.0.113.7"  # what the test transport reports as the client (conftest.running_app)


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


def services(api: Api) -> Any:
    return api.client.app.state.services  # type: ignore[attr-defined]


async def counted(api: Api, site: str, day: str) -> dict[str, str]:
    await services(api).insights.flush()
    found: dict[str, str] = await api.store.redis.hgetall(keyspace.insights_day_key(site, day))
    return found


async def reader_session(api: Api, site: tuple[str, str], item: str) -> tuple[str, str]:
    """A reader sees the card, presses, is offered a top-up, pays it, unlocks, reads again, undoes."""
    wallet = await api.wallet()
    shown = await api.client.get(f"/v1/card/{site[0]}/{item}?view=1", headers=auth(wallet))
    assert shown.status_code == 200
    assert (await api.client.get(f"/v1/card/{site[0]}/{item}", headers=auth(wallet))).status_code == 200  # not a view

    offered = await api.unlock(wallet, site[0], item)
    assert offered.status_code == 402
    link = offered.json()["topup_options"][0]["url"].removeprefix("http://127.0.0.1:8000")
    opened = await api.client.get(link)
    assert opened.status_code == 303, opened.text
    session = opened.headers["location"].rsplit("/", 1)[-1]
    paid = await api.client.post(f"/checkout/test/{session}", headers={"Origin": "http://127.0.0.1:8000"})
    assert paid.status_code == 200, paid.text

    bought = await api.unlock(wallet, site[0], item)
    assert bought.status_code == 200 and bought.json()["charged"] == 50
    assert (await api.unlock(wallet, site[0], item)).json()["charged"] == 0  # owned
    undone = await api.client.post(f"/v1/purchases/{bought.json()['purchase_id']}/refund", headers=auth(wallet))
    assert undone.status_code == 200, undone.text
    return wallet, site_day("UTC", api.clock.now_ms()).day


async def test_every_step_of_the_funnel_is_counted_per_site_and_item(api: Api) -> None:
    site = await api.site()
    await api.item(site, "counted", 50)
    _, day = await reader_session(api, site, "counted")

    c = await counted(api, site[0], day)
    for scope in ("", "|counted"):
        assert int(c["shown" + scope]) == 1
        assert int(c["pressed" + scope]) == 3  # the 402, the sale, the owned read
        assert int(c["offered" + scope]) == 1
        assert int(c["topup_started" + scope]) == 1
        assert int(c["topup_paid" + scope]) == 1
        assert int(c["unlocked" + scope]) == 2
        assert int(c["unlocked:charged" + scope]) == 1 and int(c["unlocked:owned" + scope]) == 1
        assert int(c["revenue" + scope]) == 50
        assert int(c["refunded" + scope]) == 1 and int(c["refunded_amount" + scope]) == 50
    readers = await api.store.redis.pfcount(keyspace.insights_readers_key(site[0], day))
    assert readers == 1


async def test_passes_the_cap_and_publisher_refunds_are_counted(api: Api) -> None:
    site = await api.site(daily_cap=30)
    await api.item(site, "cheap", 20)
    await api.item(site, "dear", 40)
    await api.item(site, "more", 40)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    first = await api.unlock(wallet, site[0], "cheap")
    assert first.json()["charged"] == 20
    assert (await api.unlock(wallet, site[0], "dear")).json()["charged"] == 10  # the cap's rest
    third = await api.unlock(wallet, site[0], "more")
    assert third.json()["access"] == "cap" and third.json()["charged"] == 0
    r = await api.client.post(
        f"/v1/admin/purchases/{first.json()['purchase_id']}/refund", headers={"Authorization": f"Bearer {site[1]}"}
    )
    assert r.status_code == 200, r.text
    c = await counted(api, site[0], site_day("UTC", api.clock.now_ms()).day)
    assert int(c["revenue"]) == 30 and int(c["refunded_amount|cheap"]) == 20
    assert int(c["unlocked"]) == 3 and int(c["unlocked:cap|more"]) == 1 and int(c["unlocked:charged"]) == 2


async def test_made_up_sites_and_items_leave_nothing(api: Api, store: Store) -> None:
    site = await api.site()
    wallet = await api.wallet()
    assert (await api.unlock(wallet, site[0], "no-such-item")).status_code == 404
    assert (await api.unlock(wallet, "site_nowhere", "x")).status_code == 404
    services(api).insights.note(Note(insights.SHOWN, api.clock.now_ms(), "site_nowhere", "x"))
    services(api).insights.note(Note(insights.SHOWN, api.clock.now_ms(), site[0], "no-such-item"))
    await services(api).insights.flush()
    assert not [k async for k in store.redis.scan_iter(match="{st:site_nowhere}*")]
    assert not await store.redis.exists(keyspace.insights_day_key(site[0], site_day("UTC", api.clock.now_ms()).day))


async def test_no_wallet_id_or_address_is_kept_in_any_counter(api: Api, store: Store) -> None:
    site = await api.site()
    await api.item(site, "private", 50)
    wallet, _ = await reader_session(api, site, "private")
    wallet_id = await api.wallet_id(wallet)
    await services(api).insights.flush()
    keys = [k async for k in store.redis.scan_iter(match="{st:" + site[0] + "}*")]
    keys += [k async for k in store.redis.scan_iter(match="insights:*")]
    assert len(keys) >= 3  # the day's counters, its readers, a top-up's attribution
    for key in keys:
        assert wallet_id not in key and CLIENT_IP not in key
        kind = await store.redis.type(key)
        if kind == "hash":
            values = await store.redis.hgetall(key)
            text = " ".join(f"{f} {v}" for f, v in values.items())
        elif key.startswith("insights:tu:"):
            text = await store.redis.get(key)
        else:  # a HyperLogLog: registers of hashed pseudonyms, no member is kept
            assert kind == "string" and key == keyspace.insights_readers_key(site[0], key.rsplit(":", 1)[1])
            continue
        assert wallet_id not in text and CLIENT_IP not in text, (key, text)


async def test_each_days_counters_expire_after_the_retention(api: Api, store: Store) -> None:
    site = await api.site(timezone="Europe/Berlin")
    await api.item(site, "kept", 50)
    wallet = await api.wallet()
    assert (await api.client.get(f"/v1/card/{site[0]}/kept?view=1", headers=auth(wallet))).status_code == 200
    await services(api).insights.flush()
    day = site_day("Europe/Berlin", api.clock.now_ms())
    ends = day.ends_ms // 1000 + 400 * 24 * 60 * 60  # the default COINSLOT_INSIGHTS_DAYS
    assert await store.redis.execute_command("EXPIRETIME", keyspace.insights_day_key(site[0], day.day)) == ends
    assert await store.redis.execute_command("EXPIRETIME", keyspace.insights_readers_key(site[0], day.day)) == ends


async def test_a_full_queue_drops_notes_without_failing_the_request(api: Api) -> None:
    site = await api.site()
    await api.item(site, "busy", 50)
    counter = services(api).insights
    for _ in range(insights.QUEUE_SIZE + 10):  # the writer cannot run meanwhile: no await in between
        counter.note(Note(insights.SHOWN, api.clock.now_ms(), site[0], "busy"))
    assert counter.dropped >= 10
    wallet = await api.wallet()
    assert (await api.client.get(f"/v1/card/{site[0]}/busy?view=1", headers=auth(wallet))).status_code == 200
    await counter.flush()


async def test_the_overview_and_items_show_the_counts(api: Api) -> None:
    from test_dashboard import signed_in  # one sign-in helper for both files

    publisher, site = await signed_in(api)
    await api.item(site, "seen", 50, title="Seen article")
    await api.item(site, "unseen", 10, title="Unseen article")
    await reader_session(api, site, "seen")
    await services(api).insights.flush()
    overview = await publisher.get("/dashboard")
    assert overview.status_code == 200
    funnel = overview.text.split('class="funnel"')[1]
    assert '<th scope="row">Card shown</th><td class="num">1</td>' in funnel
    assert "33.3 %" in funnel and "50.0 %" in funnel  # 1 top-up of 3 presses; 1 refund of 2 unlocks
    items = await publisher.get("/dashboard/items?sort=-views")
    assert items.text.index("Seen article") < items.text.index("Unseen article")
    ascending = await publisher.get("/dashboard/items?sort=views")
    assert ascending.text.index("Unseen article") < ascending.text.index("Seen article")
    assert (await publisher.get("/dashboard/items?sort=nonsense")).status_code == 422
