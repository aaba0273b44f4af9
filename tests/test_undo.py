"""Undo and goodwill refunds (money rule 8) — on standalone Redis and Cluster."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from coinslot import keyspace, ledger
from coinslot.clock import FrozenClock
from coinslot.store import Store
from test_passes_and_caps import card, receipts, utc_ms

from api import Api, auth

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


async def undo(api: Api, wallet: str, purchase_id: str) -> httpx.Response:
    return await api.client.post(f"/v1/purchases/{purchase_id}/refund", headers=auth(wallet))


def problem(r: httpx.Response) -> str:
    assert r.headers["content-type"] == "application/problem+json", r.text
    kind: str = r.json()["type"]
    return kind.rsplit("/", 1)[1]


async def bought(api: Api, wallet: str, site: str, item: str) -> dict[str, Any]:
    r = await api.unlock(wallet, site, item)
    assert r.status_code == 200 and r.json()["charged"] > 0, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_an_undo_gives_the_money_back_ends_the_ownership_and_shows_in_the_books(api: Api) -> None:
    site = await api.site(refund_window=600)
    await api.item(site, "a", 19, content_html="<p>a</p>")
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    made = await bought(api, wallet, site[0], "a")
    assert made["undo"] == {"purchase_id": made["purchase_id"], "price": 19, "until": api.clock.now_ms() + 600_000}
    api.clock.advance(60)
    state = await card(api, wallet, site[0], "a")
    assert state["undo"] == made["undo"]

    r = await undo(api, wallet, made["purchase_id"])

    assert r.status_code == 200, r.text
    assert r.json() == {"purchase_id": made["purchase_id"], "refunded": 19, "balance": 100, "currency": "EUR"}
    assert (await card(api, wallet, site[0], "a"))["owned"] is False
    receipt = (await receipts(api, wallet))[0]
    assert receipt["refunded_at"] == api.clock.now_ms() and "undo_until" not in receipt
    line = (await api.client.get("/v1/wallet", headers=auth(wallet))).json()["ledger"][0]
    assert (line["kind"], line["amount"], line["ref"]) == ("purchase-refund", 19, made["purchase_id"])
    secret = {"Authorization": f"Bearer {site[1]}"}
    stats = (await api.client.get("/v1/admin/stats", headers=secret)).json()
    assert (stats["revenue"], stats["unlocks"], stats["refunds"]) == (0, 1, 1)
    assert stats["items"]["a"] == {"unlocks": 1, "refunds": 1, "revenue": 0}
    export = (await api.client.get("/v1/admin/ledger", headers=secret)).text.splitlines()
    assert [json.loads(e)["kind"] for e in export] == ["voucher", "unlock", "purchase-refund"]
    assert (await ledger.reconcile(api.store)).clean
    again = await bought(api, wallet, site[0], "a")  # bought again, charged again
    assert again["charged"] == 19


async def test_the_window_closes_on_its_last_millisecond(api: Api) -> None:
    site = await api.site(refund_window=300)
    await api.item(site, "a", 19)
    await api.item(site, "b", 19)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    start = api.clock.now_ms()
    a = await bought(api, wallet, site[0], "a")
    b = await bought(api, wallet, site[0], "b")
    api.clock.ms = start + 300_000 - 1
    assert (await undo(api, wallet, a["purchase_id"])).status_code == 200
    api.clock.ms = start + 300_000
    late = await undo(api, wallet, b["purchase_id"])
    assert (late.status_code, problem(late)) == (409, "refund-window-closed")
    assert (await card(api, wallet, site[0], "b"))["undo"] is None


async def test_a_site_without_a_window_allows_no_undo(api: Api) -> None:
    site = await api.site(refund_window=0)
    await api.item(site, "a", 19)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    made = await bought(api, wallet, site[0], "a")
    assert made["undo"] is None
    assert problem(await undo(api, wallet, made["purchase_id"])) == "refund-window-closed"


async def test_at_most_three_undos_in_thirty_days(api: Api) -> None:
    site = await api.site()
    for n in range(6):
        await api.item(site, f"i{n}", 10)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    first_undo = api.clock.now_ms()
    for n in range(3):
        made = await bought(api, wallet, site[0], f"i{n}")
        assert (await undo(api, wallet, made["purchase_id"])).status_code == 200
        api.clock.advance(3600)
    fourth = await bought(api, wallet, site[0], "i3")
    assert (await card(api, wallet, site[0], "i3"))["undo"] is None  # the card does not offer what would fail
    refused = await undo(api, wallet, fourth["purchase_id"])
    assert (refused.status_code, problem(refused)) == (409, "refund-limit-reached")

    api.clock.ms = first_undo + 30 * DAY_MS  # the first undo leaves the 30 days
    fifth = await bought(api, wallet, site[0], "i4")
    assert (await undo(api, wallet, fifth["purchase_id"])).status_code == 200


async def test_a_pass_that_served_cannot_be_undone_one_that_did_not_can(api: Api) -> None:
    site = await api.site()
    await api.item(site, "pass", 99, pass_hours=24)
    await api.item(site, "a", 19)
    read, unlocked, unused = await api.wallet(), await api.wallet(), await api.wallet()
    for wallet in (read, unlocked, unused):
        await api.fund(site, wallet, 200)

    for wallet in (read, unlocked):
        pass_ = await bought(api, wallet, site[0], "pass")
        if wallet == read:
            await card(api, wallet, site[0], "a")  # the card opened an item under the pass: it served
        else:
            assert (await api.unlock(wallet, site[0], "a")).json()["access"] == "pass"
        assert (await card(api, wallet, site[0], "pass"))["undo"] is None
        refused = await undo(api, wallet, pass_["purchase_id"])
        assert (refused.status_code, problem(refused)) == (409, "refund-pass-used")

    idle = await bought(api, unused, site[0], "pass")
    assert (await undo(api, unused, idle["purchase_id"])).status_code == 200
    after = await api.unlock(unused, site[0], "a")
    assert (after.json()["charged"], after.json()["access"]) == (19, "purchase")  # the pass is gone


async def test_no_undo_of_a_purchase_on_a_day_with_free_unlocks_even_the_next_day(api: Api) -> None:
    site = await api.site(daily_cap=30, refund_window=2 * 24 * 3600)
    for n in range(4):
        await api.item(site, f"i{n}", 20)
    wallet = await api.wallet()
    await api.fund(site, wallet, 200)
    api.clock.ms = utc_ms("2026-02-02T12:00:00")
    paid = await bought(api, wallet, site[0], "i0")
    await bought(api, wallet, site[0], "i1")  # 10 of 20: the cap is reached
    assert (await api.unlock(wallet, site[0], "i2")).json()["access"] == "cap"
    refused = await undo(api, wallet, paid["purchase_id"])
    assert (refused.status_code, problem(refused)) == (409, "refund-cap-day")

    api.clock.ms = utc_ms("2026-02-03T09:00:00")  # a new day: the old one is remembered
    await bought(api, wallet, site[0], "i3")
    assert problem(await undo(api, wallet, paid["purchase_id"])) == "refund-cap-day"
    assert (await api.client.get("/v1/wallet", headers=auth(wallet))).json()["purchases"][0].get("undo_until")


async def test_an_undo_gives_back_room_under_the_cap(api: Api) -> None:
    site = await api.site(daily_cap=40)
    for n in range(3):
        await api.item(site, f"i{n}", 20)
    wallet = await api.wallet()
    await api.fund(site, wallet, 200)
    first = await bought(api, wallet, site[0], "i0")
    assert (await undo(api, wallet, first["purchase_id"])).status_code == 200
    assert (await card(api, wallet, site[0], "i1"))["cap"]["spent_today"] == 0
    assert (await api.unlock(wallet, site[0], "i1")).json()["charged"] == 20
    assert (await api.unlock(wallet, site[0], "i2")).json()["charged"] == 20


async def test_another_wallets_purchase_is_not_found_and_a_free_grant_is_no_purchase(api: Api) -> None:
    site = await api.site(daily_cap=10)
    await api.item(site, "a", 10)
    await api.item(site, "b", 10)
    mine, theirs = await api.wallet(), await api.wallet()
    await api.fund(site, mine, 100)
    made = await bought(api, mine, site[0], "a")
    r = await undo(api, theirs, made["purchase_id"])
    assert (r.status_code, problem(r)) == (404, "unknown-purchase")
    free = (await api.unlock(mine, site[0], "b")).json()
    assert problem(await undo(api, mine, free["purchase_id"])) == "unknown-purchase"


async def test_twenty_concurrent_undos_of_one_purchase_refund_once(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    made = await bought(api, wallet, site[0], "a")

    results = await asyncio.gather(*(undo(api, wallet, made["purchase_id"]) for _ in range(20)))

    assert sorted(r.status_code for r in results) == [200] + [409] * 19
    assert {problem(r) for r in results if r.status_code == 409} == {"already-refunded"}
    assert await api.balance(wallet) == 100
    assert (await ledger.reconcile(api.store)).clean


async def test_a_publishers_goodwill_refund_needs_no_window_and_is_not_the_readers(api: Api) -> None:
    site, other = await api.site(refund_window=0), await api.site()
    for n in range(5):
        await api.item(site, f"i{n}", 10)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    made = [await bought(api, wallet, site[0], f"i{n}") for n in range(5)]
    api.clock.advance(90 * 24 * 3600)

    path = f"/v1/admin/purchases/{made[0]['purchase_id']}/refund"
    wrong = await api.client.post(path, headers={"Authorization": f"Bearer {other[1]}"})
    assert (wrong.status_code, problem(wrong)) == (404, "unknown-purchase")
    right = await api.client.post(path, headers={"Authorization": f"Bearer {site[1]}"})
    assert right.status_code == 200 and right.json()["refunded"] == 10
    assert "balance" not in right.json()  # the reader's wallet is not the publisher's to see
    twice = await api.client.post(path, headers={"Authorization": f"Bearer {site[1]}"})
    assert problem(twice) == "already-refunded"
    for n in (1, 2, 3):
        r = await api.client.post(
            f"/v1/admin/purchases/{made[n]['purchase_id']}/refund", headers={"Authorization": f"Bearer {site[1]}"}
        )
        assert r.status_code == 200
    lines = (await api.client.get("/v1/wallet", headers=auth(wallet))).json()["ledger"]
    assert [line["kind"] for line in lines[:4]] == ["purchase-refund"] * 4
    assert await api.balance(wallet) == 90
    assert (await ledger.reconcile(api.store)).clean


async def test_a_purchase_stored_before_receipts_named_their_line_is_shown_read_and_undone(api: Api) -> None:
    # Redis written by the version before the compact ledger line: the receipt held the whole record
    # and the ledger entry was JSON. Upgrading must not turn such a wallet's receipts into errors.
    site = await api.site(refund_window=600)
    await api.item(site, "a", 19, title="First", content_html="<p>a</p>")
    await api.item(site, "b", 25, title="Second", content_html="<p>b</p>")
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    await bought(api, wallet, site[0], "a")
    old = await bought(api, wallet, site[0], "b")
    wallet_id = await api.wallet_id(wallet)
    k = keyspace.wallet_keys(wallet_id)
    entry = ledger.parse_entry(await api.store.redis.lindex(k.ledger, -1), wallet_id)
    assert entry is not None and entry["ref"] == old["purchase_id"]
    await api.store.redis.lset(k.ledger, -1, json.dumps(entry))
    record = {"id": old["purchase_id"], "site": site[0], "item": "b", "kind": "item", "title": "Second",
              "price": 25, "charged": 25, "currency": "EUR", "at": entry["at"]}  # fmt: skip
    await api.store.redis.hset(k.purchases, old["purchase_id"], json.dumps(record))

    shown = {r["item"]: r for r in await receipts(api, wallet)}
    assert (shown["a"]["charged"], shown["b"]["charged"], shown["b"]["title"]) == (19, 25, "Second")
    assert "undo_until" in shown["b"]
    read = await card(api, wallet, site[0], "b")
    assert read["owned"] and read["undo"]["price"] == 25
    export = await api.client.get("/v1/wallet/export", headers=auth(wallet))
    assert sorted(p["charged"] for p in export.json()["purchases"]) == [19, 25]
    assert (await undo(api, wallet, old["purchase_id"])).status_code == 200
    assert await api.balance(wallet) == 100 - 19
    assert (await ledger.reconcile(api.store)).clean
