"""Passes and the daily cap (DESIGN.md "Words", money rule 11) — on standalone Redis and Cluster."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from coinslot import ledger
from coinslot.clock import FrozenClock
from coinslot.store import Store

from api import Api, auth

HOUR_MS = 3600 * 1000


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


async def card(api: Api, wallet: str, site: str, item: str) -> dict[str, Any]:
    r = await api.client.get(f"/v1/card/{site}/{item}", headers=auth(wallet))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def receipts(api: Api, wallet: str) -> list[dict[str, Any]]:
    r = await api.client.get("/v1/wallet", headers=auth(wallet))
    found: list[dict[str, Any]] = r.json()["purchases"]
    return found


def exp_of(token: str) -> int:
    exp: int = jwt.decode(token, options={"verify_signature": False})["exp"]
    return exp


def utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


# Passes ------------------------------------------------------------------------------------


async def test_a_pass_grants_every_item_of_its_site_until_the_exact_millisecond_it_ends(api: Api) -> None:
    site = await api.site()
    await api.item(site, "day-pass", 99, pass_hours=24)
    for name in ("a", "b"):
        await api.item(site, name, 19, content_html=f"<p>{name}</p>")
    wallet = await api.wallet()
    await api.fund(site, wallet, 500)
    start = api.clock.now_ms()

    bought = await api.unlock(wallet, site[0], "day-pass", price=99)
    assert bought.status_code == 200, bought.text
    pass_ = bought.json()
    ends = start + 24 * HOUR_MS
    assert (pass_["charged"], pass_["balance"], pass_["access"], pass_["access_until"]) == (99, 401, "purchase", ends)

    api.clock.ms = ends - 1
    under = await api.unlock(wallet, site[0], "a", price=19)
    body = under.json()
    assert (body["charged"], body["balance"], body["access"]) == (0, 401, "pass")
    assert body["purchase_id"] == pass_["purchase_id"] and body["content"] == "<p>a</p>"
    assert exp_of(body["token"]) == ends // 1000  # the token ends with the pass, not 10 minutes later
    assert [r["item"] for r in await receipts(api, wallet)] == ["day-pass"]  # no purchase under a pass
    state = await card(api, wallet, site[0], "b")  # a returning reader: no click needed
    assert (state["owned"], state["access"], state["access_until"]) == (True, "pass", ends)

    api.clock.ms = ends  # owned only while now < expires_at
    after = await api.unlock(wallet, site[0], "b", price=19)
    assert (after.json()["charged"], after.json()["access"]) == (19, "purchase")
    assert (await card(api, wallet, site[0], "day-pass"))["owned"] is False
    again = await api.unlock(wallet, site[0], "day-pass", price=99)
    assert (again.json()["charged"], again.json()["balance"]) == (99, 401 - 19 - 99)
    assert (await ledger.reconcile(api.store)).clean


async def test_buying_a_pass_that_still_runs_charges_nothing_and_another_site_is_not_covered(api: Api) -> None:
    site, other = await api.site(), await api.site()
    await api.item(site, "pass", 99, pass_hours=1)
    await api.item(other, "x", 19)
    wallet = await api.wallet()
    await api.fund(site, wallet, 200)
    first = (await api.unlock(wallet, site[0], "pass")).json()
    api.clock.advance(1800)
    again = (await api.unlock(wallet, site[0], "pass")).json()
    assert (again["charged"], again["purchase_id"], again["balance"]) == (0, first["purchase_id"], 101)
    assert exp_of(again["token"]) == api.clock.now_ms() // 1000 + 600  # the pass has 30 minutes left
    elsewhere = await api.unlock(wallet, other[0], "x")
    assert elsewhere.json()["charged"] == 19


async def test_a_replayed_unlock_says_again_what_granted_it(api: Api) -> None:
    site = await api.site(daily_cap=10)
    await api.item(site, "pass", 50, pass_hours=2)
    await api.item(site, "a", 10)
    await api.item(site, "b", 10)
    by_pass, by_cap = await api.wallet(), await api.wallet()
    for wallet in (by_pass, by_cap):
        await api.fund(site, wallet, 100)
    await api.unlock(by_pass, site[0], "pass")
    await api.unlock(by_cap, site[0], "a")
    for wallet, access in ((by_pass, "pass"), (by_cap, "cap")):
        first = await api.unlock(wallet, site[0], "b", key="k1")
        again = await api.unlock(wallet, site[0], "b", key="k1")
        assert again.headers["idempotent-replayed"] == "true"
        fields = ("purchase_id", "charged", "balance", "access", "access_until")
        assert [again.json()[f] for f in fields] == [first.json()[f] for f in fields]
        assert (first.json()["access"], first.json()["charged"]) == (access, 0)


async def test_a_token_under_a_pass_never_outlives_it(api: Api) -> None:
    site = await api.site()
    await api.item(site, "hour", 50, pass_hours=1)
    await api.item(site, "a", 19)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    ends = (await api.unlock(wallet, site[0], "hour")).json()["access_until"]
    api.clock.ms = ends - 100_000  # the pass has 100 s left; a token would last 600
    body = (await api.unlock(wallet, site[0], "a")).json()
    assert exp_of(body["token"]) == ends // 1000
    state = await card(api, wallet, site[0], "a")
    assert exp_of(state["token"]) == ends // 1000


async def test_offers_and_the_card_tell_of_the_pass(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    await api.item(site, "day", 99, pass_hours=24, title="All of today")
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    state = await card(api, wallet, site[0], "a")
    assert state["site_pass"] == {"item": "day", "title": "All of today", "price": 99, "pass_hours": 24}
    assert (await card(api, wallet, site[0], "day"))["site_pass"] is None  # the pass does not offer itself
    await api.unlock(wallet, site[0], "day")
    offers = await api.client.get(f"/v1/offers?site={site[0]}&items=a,day", headers=auth(wallet))
    assert [o["owned"] for o in offers.json()["items"]] == [True, True]


# The daily cap -----------------------------------------------------------------------------


async def test_the_cap_charges_up_to_it_then_grants_free_until_the_day_ends(api: Api) -> None:
    site = await api.site(daily_cap=100)
    for n in range(6):
        await api.item(site, f"i{n}", 30, content_html=f"<p>{n}</p>")
    wallet = await api.wallet()
    await api.fund(site, wallet, 500)
    api.clock.ms = utc_ms("2026-01-05T20:00:00")
    day_ends = utc_ms("2026-01-06T00:00:00")

    charged = [(await api.unlock(wallet, site[0], f"i{n}", price=30)).json()["charged"] for n in range(4)]
    assert charged == [30, 30, 30, 10]  # min(price, max(0, cap - spent))
    state = await card(api, wallet, site[0], "i4")
    assert state["cap"] == {"daily_cap": 100, "spent_today": 100, "free_now": True, "day_ends": day_ends}

    free = (await api.unlock(wallet, site[0], "i4", price=30)).json()
    assert (free["charged"], free["balance"], free["access"], free["access_until"]) == (0, 400, "cap", day_ends)
    assert free["content"] == "<p>4</p>" and free["undo"] is None
    assert exp_of(free["token"]) <= day_ends // 1000
    bought = await receipts(api, wallet)
    assert sorted(r["item"] for r in bought) == ["i0", "i1", "i2", "i3"]  # no purchase for a free unlock
    assert next(r for r in bought if r["item"] == "i3")["charged"] == 10

    api.clock.ms = day_ends - 1
    assert (await card(api, wallet, site[0], "i4"))["access"] == "cap"
    api.clock.ms = day_ends
    assert (await card(api, wallet, site[0], "i4"))["owned"] is False  # free access ended with the day
    assert (await api.unlock(wallet, site[0], "i5", price=30)).json()["charged"] == 30
    assert (await ledger.reconcile(api.store)).clean


async def test_the_cap_day_follows_the_sites_time_zone_across_a_clock_change(api: Api) -> None:
    # Europe/Berlin moves to summer time on 2026-03-29: that day lasts 23 hours.
    site = await api.site(daily_cap=50, timezone="Europe/Berlin")
    for n in range(6):
        await api.item(site, f"i{n}", 50)
    wallet = await api.wallet()
    await api.fund(site, wallet, 500)

    api.clock.ms = utc_ms("2026-03-28T22:59:59.999")  # 23:59:59.999 in Berlin, March 28th
    assert (await api.unlock(wallet, site[0], "i0")).json()["charged"] == 50
    late = (await api.unlock(wallet, site[0], "i1")).json()
    assert (late["charged"], late["access_until"]) == (0, utc_ms("2026-03-28T23:00:00"))

    api.clock.ms = utc_ms("2026-03-28T23:00:00")  # midnight in Berlin: a new day, the cap starts over
    day = (await card(api, wallet, site[0], "i2"))["cap"]
    assert day["spent_today"] == 0 and day["day_ends"] - api.clock.ms == 23 * HOUR_MS
    assert (await api.unlock(wallet, site[0], "i2")).json()["charged"] == 50
    api.clock.ms = utc_ms("2026-03-29T21:59:59.999")  # still March 29th in Berlin (CEST, +2)
    assert (await api.unlock(wallet, site[0], "i3")).json()["charged"] == 0
    api.clock.ms = utc_ms("2026-03-29T22:00:00")
    assert (await api.unlock(wallet, site[0], "i4")).json()["charged"] == 50


async def test_a_pass_counts_toward_the_cap_but_is_never_free(api: Api) -> None:
    site = await api.site(daily_cap=100)
    await api.item(site, "a", 60)
    await api.item(site, "b", 60)
    await api.item(site, "pass", 150, pass_hours=24)
    wallet = await api.wallet()
    await api.fund(site, wallet, 1000)
    assert (await api.unlock(wallet, site[0], "a")).json()["charged"] == 60
    assert (await api.unlock(wallet, site[0], "b")).json()["charged"] == 40
    bought = (await api.unlock(wallet, site[0], "pass")).json()
    assert bought["charged"] == 150
    assert (await card(api, wallet, site[0], "a"))["cap"]["spent_today"] == 250

    other = await api.wallet()
    await api.fund(site, other, 1000)
    assert (await api.unlock(other, site[0], "pass")).json()["charged"] == 150  # the pass alone passes the cap
    free = (await api.unlock(other, site[0], "a")).json()
    assert (free["charged"], free["access"]) == (0, "pass")  # the pass covers it before the cap is asked


async def test_concurrent_unlocks_on_a_capped_wallet_never_spend_more_than_the_cap(api: Api) -> None:
    site = await api.site(daily_cap=250)
    for n in range(100):
        await api.item(site, f"i{n}", 7)
    wallet = await api.wallet()
    await api.fund(site, wallet, 10_000)

    results = await asyncio.gather(*(api.unlock(wallet, site[0], f"i{n}") for n in range(100)))

    assert [r.status_code for r in results] == [200] * 100
    charged = [r.json()["charged"] for r in results]
    assert sum(charged) == 250 and sorted(set(charged)) == [0, 5, 7]  # 35 full, one part, 64 free
    assert [r.json()["access"] for r in results].count("cap") == charged.count(0)
    assert await api.balance(wallet) == 10_000 - 250
    assert len(await receipts(api, wallet)) == 36
    assert (await ledger.reconcile(api.store)).clean


# Unlock attempts per wallet ----------------------------------------------------------------


async def test_a_wallet_hammering_unlocks_waits_with_retry_after(
    tmp_path: Any, store: Store, clock: FrozenClock, keyring: Any
) -> None:
    from conftest import make_settings, running_app

    async with running_app(make_settings(tmp_path, unlocks_per_wallet_per_minute=5), store, clock, keyring) as c:
        api = Api(c, store, clock)
        site = await api.site()
        await api.item(site, "a", 10)
        wallet, other = await api.wallet(), await api.wallet()
        await api.fund(site, wallet, 100)
        clock.ms = utc_ms("2026-01-05T10:00:15")
        statuses = [(await api.unlock(wallet, site[0], "a")).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        refused = await api.unlock(wallet, site[0], "a")
        assert refused.headers["retry-after"] == "45"
        assert refused.json()["type"].endswith("/rate-limited")
        assert (await api.unlock(other, site[0], "a")).status_code == 402  # another wallet is not slowed
        clock.ms = utc_ms("2026-01-05T10:01:00")
        assert (await api.unlock(wallet, site[0], "a")).status_code == 200
        assert await api.balance(wallet) == 90  # the owned item was charged once


# The reader's one-click budget -------------------------------------------------------------


async def test_the_one_click_budget_is_kept_with_the_wallet(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    wallet = await api.wallet()
    assert (await card(api, wallet, site[0], "a"))["budget"] == 100  # €1.00 unless the reader says otherwise
    r = await api.client.patch("/v1/wallet", json={"budget": 250}, headers=auth(wallet))
    assert r.status_code == 200 and r.json() == {"budget": 250}
    assert (await card(api, wallet, site[0], "a"))["budget"] == 250
    assert (await api.client.get("/v1/wallet", headers=auth(wallet))).json()["budget"] == 250
    for bad in ({"budget": -1}, {"budget": 100_001}, {"budget": "5"}, {"budget": 5, "x": 1}):
        refused = await api.client.patch("/v1/wallet", json=bad, headers=auth(wallet))
        assert refused.status_code == 422, bad
    erased = await api.client.delete("/v1/wallet", headers=auth(wallet))
    assert erased.status_code == 200
    assert (await api.client.patch("/v1/wallet", json={"budget": 5}, headers=auth(wallet))).status_code == 401
