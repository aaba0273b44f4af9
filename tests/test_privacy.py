"""What is kept about a reader's wallet, for how long, and the reader's rights: export and erasure."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from coinslot import catalog, keyspace, ledger, statements, topups
from coinslot.clock import FrozenClock
from coinslot.keyring import KeyRing
from coinslot.store import Store

from api import Api, auth
from conftest import PUBLIC_URL, make_settings, running_app

DAY_S = 24 * 60 * 60
CARD = {"Sec-Fetch-Site": "same-origin", "Origin": PUBLIC_URL}


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


async def start_topup(api: Api, token: str, amount: int = 500) -> dict[str, Any]:
    r = await api.client.post("/v1/topups", json={"amount": amount}, headers=auth(token))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_an_empty_wallet_expires_unless_money_moves_through_it(api: Api) -> None:
    site = await api.site(tab_limit=100)
    await api.item(site, "a", 30)
    idle, funded, on_tab = await api.wallet(), await api.wallet(), await api.wallet()
    named = (("idle", idle), ("funded", funded), ("on_tab", on_tab))
    keys = {name: keyspace.wallet_key(await api.wallet_id(t)) for name, t in named}

    for key in keys.values():  # 396 days (13 months) by default, from creation
        assert 395 * DAY_S < await api.store.redis.ttl(key) <= 396 * DAY_S
    await api.fund(site, funded, 100)  # a credit: the wallet holds money now
    assert (await api.unlock(on_tab, site[0], "a")).status_code == 200  # an unlock on the site's tab
    assert await api.store.redis.ttl(keys["funded"]) == -1
    assert await api.store.redis.ttl(keys["on_tab"]) == -1

    # Time runs out for the idle one: it is gone, its token with it, and reconcile drops its index entry.
    await api.store.redis.pexpire(keys["idle"], 1)
    await asyncio.sleep(0.01)
    assert (await api.client.get("/v1/wallet", headers=auth(idle))).status_code == 401
    report = await ledger.reconcile(api.store)
    assert report.clean and report.expired >= 1
    assert not await api.store.redis.sismember(keyspace.WALLET_INDEX, keys["idle"][3:-1])
    assert await api.store.redis.sismember(keyspace.WALLET_INDEX, keys["funded"][3:-1])
    assert (await ledger.reconcile(api.store)).expired == 0  # a second run finds nothing more


async def test_an_open_checkout_keeps_an_empty_wallet_while_it_may_be_paid(
    tmp_path: Path, store: Store, clock: FrozenClock, keyring: KeyRing
) -> None:
    settings = make_settings(tmp_path, empty_wallet_days=1)
    async with running_app(settings, store, clock, keyring) as client:
        api = Api(client, store, clock)
        token = await api.wallet()
        key = keyspace.wallet_key(await api.wallet_id(token))
        assert 0 < await store.redis.ttl(key) <= DAY_S
        await start_topup(api, token)
        # As long as the session's record (40 days): a payment that arrives late still finds its wallet.
        assert await store.redis.ttl(key) > 39 * DAY_S


async def test_export_gives_the_reader_everything_kept_about_the_wallet(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19, title="An article")
    token = await api.wallet()
    await api.fund(site, token, 100)
    unlocked = (await api.unlock(token, site[0], "a")).json()
    topup = await start_topup(api, token)

    r = await api.client.get("/v1/wallet/export", headers=auth(token))

    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    data = r.json()
    assert data["wallet"]["balance"] == 81 and data["wallet"]["currency"] == "EUR"
    assert data["wallet"]["expires_at"] is None  # money moved through it: kept until erased
    assert data["owned"] == [{"site": site[0], "item": "a", "purchase_id": unlocked["purchase_id"]}]
    # A receipt keeps the item's id, not a copy of its title (the catalog has that): that is all kept.
    assert [(p["item"], p["charged"], p["kind"]) for p in data["purchases"]] == [("a", 19, "item")]
    assert [e["kind"] for e in data["ledger"]] == ["voucher", "unlock"]
    assert len(data["credited"]) == 1 and data["credited"][0].startswith("v:")
    assert [(t["topup_id"], t["status"], t["amount"]) for t in data["topups"]] == [(topup["topup_id"], "pending", 500)]
    assert (await api.client.get("/v1/wallet/export")).status_code == 401


async def test_erasing_a_wallet_reports_the_balance_left_ends_its_token_and_keeps_the_books(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    token = await api.wallet()
    await api.fund(site, token, 100)
    assert (await api.unlock(token, site[0], "a")).status_code == 200
    wid = await api.wallet_id(token)
    site_obj = await catalog.Catalog(api.store).site(site[0])
    before = (await statements.stats(api.store, site_obj)).public()

    r = await api.client.delete("/v1/wallet", headers=auth(token))

    assert r.status_code == 200, r.text
    assert r.json() == {"erased": True, "balance_left": 81, "currency": "EUR", "ledger_entries_kept": 2}
    for call in (api.client.get("/v1/wallet", headers=auth(token)), api.unlock(token, site[0], "a")):
        assert (await call).status_code == 401  # no token of it works again
    assert (await api.client.delete("/v1/wallet", headers=auth(token))).status_code == 401
    k = keyspace.wallet_keys(wid)
    assert not await api.store.redis.exists(k.owned, k.purchases)  # what the reader bought is gone
    assert set(await api.store.redis.hkeys(k.wallet)) == {"currency", "balance", "seq", "erased_ms"}
    # The ledger stays: the site's books and the replay are as they were.
    assert (await statements.stats(api.store, site_obj)).public() == before
    report = await ledger.reconcile(api.store)
    assert report.clean, report.problems


async def test_erasing_waits_for_an_open_checkout(api: Api) -> None:
    token = await api.wallet()
    topup = await start_topup(api, token)

    refused = await api.client.delete("/v1/wallet", headers=auth(token))

    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/topup-pending") and topup["topup_id"] in refused.json()["detail"]
    api.clock.advance(2 * 60 * 60 * 1000)  # the session (one hour) expired unpaid
    assert (await api.client.delete("/v1/wallet", headers=auth(token))).status_code == 200


async def test_a_payment_for_an_erased_wallet_is_not_credited_and_raises_an_alert(api: Api) -> None:
    token = await api.wallet()
    topup = await start_topup(api, token)
    session = topup["checkout_url"].rsplit("/", 1)[-1]
    api.clock.advance(2 * 60 * 60 * 1000)
    assert (await api.client.delete("/v1/wallet", headers=auth(token))).status_code == 200
    alerts = REGISTRY.get_sample_value("coinslot_alerts_total", {"kind": "wallet-gone"}) or 0.0

    outcome = await topups.fulfil(api.store, session, amount=500, currency="EUR", now_ms=api.clock.now_ms())

    assert outcome is topups.Fulfilment.REFUSED
    assert REGISTRY.get_sample_value("coinslot_alerts_total", {"kind": "wallet-gone"}) == alerts + 1


async def test_erasing_an_empty_wallet_leaves_no_trace_and_forgets_the_cookie(api: Api) -> None:
    token = await api.wallet()
    wid = await api.wallet_id(token)

    r = await api.client.delete("/v1/wallet", headers={**CARD, "Cookie": f"coinslot_wallet={token}"})

    assert r.status_code == 200, r.text
    assert r.json()["balance_left"] == 0 and r.json()["ledger_entries_kept"] == 0
    assert "coinslot_wallet=; Max-Age=0" in r.headers["set-cookie"]
    assert not await api.store.redis.exists(keyspace.wallet_key(wid))
    assert not await api.store.redis.sismember(keyspace.WALLET_INDEX, wid)
