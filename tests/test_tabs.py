"""The tab outstanding (coinslot.tabs) from real requests: what unlocks on a site's tab lent, what credits
repaid (oldest debt first, a refunded purchase its own site's first), shown on the dashboard's overview;
and the counts a top-up not offered by a 402, or a refund from the command line, add to the funnel.

Every test that reaches Redis runs on standalone Redis and on the 3-master Cluster.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from coinslot import keyspace, tabs
from coinslot.cli import main
from coinslot.clock import FrozenClock
from coinslot.sitedays import site_day
from coinslot.store import Store
from test_dashboard import signed_in
from test_insights import counted, services

from api import Api, auth

PUBLIC = "http://127.0.0.1:8000"
WALLET = keyspace.wallet_account("w")


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


async def tab_site(api: Api, limit: int = 300) -> tuple[str, str]:
    site = await api.site(tab_limit=limit)
    for item, price in (("a", 30), ("b", 40), ("c", 50)):
        await api.item(site, item, price)
    return site


async def owed(api: Api, *sites: tuple[str, str]) -> list[int]:
    await services(api).insights.flush()
    return [await tabs.owed(api.store, site[0]) for site in sites]


async def bought(api: Api, wallet: str, site: tuple[str, str], item: str) -> dict[str, Any]:
    r = await api.unlock(wallet, site[0], item)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def paid_topup(api: Api, wallet: str, amount: int, site: str | None = None) -> None:
    """A top-up through the wallet API (no 402 offered it), paid in the test checkout."""
    r = await api.client.post("/v1/topups", json={"amount": amount, "site": site}, headers=auth(wallet))
    assert r.status_code == 201, r.text
    session = r.json()["checkout_url"].rsplit("/", 1)[-1]
    paid = await api.client.post(f"/checkout/test/{session}", headers={"Origin": PUBLIC})
    assert paid.status_code == 200, paid.text


async def test_the_overview_shows_the_tab_owed_until_a_top_up_repays_it(api: Api) -> None:
    publisher, site = await signed_in(api)
    r = await api.client.patch("/v1/admin/site", json={"tab_limit": 100}, headers=auth(site[1]))
    assert r.status_code == 200, r.text
    await api.item(site, "story", 50)
    wallet = await api.wallet()
    assert (await bought(api, wallet, site, "story"))["balance"] == -50
    assert await owed(api, site) == [50]
    page = await publisher.get("/dashboard")
    assert "<dt>Tab outstanding</dt><dd>€0.50" in page.text, page.text

    await paid_topup(api, wallet, 200)
    assert await api.balance(wallet) == 150
    assert await owed(api, site) == [0]
    assert "<dt>Tab outstanding</dt><dd>€0.00" in (await publisher.get("/dashboard")).text
    sums = await api.store.redis.hgetall(keyspace.insights_tab_key(site[0]))
    assert sums == {"lent": "50", "repaid": "50"}  # two numbers: no wallet, no reader


async def test_a_credit_repays_two_sites_tabs_oldest_first(api: Api) -> None:
    first, second = await tab_site(api), await tab_site(api)
    wallet = await api.wallet()
    await bought(api, wallet, first, "a")  # -30, lent by the first site
    await bought(api, wallet, second, "b")  # -70
    assert await owed(api, first, second) == [30, 40]
    r = await api.redeem(wallet, await api.voucher(second, 50))  # the second site's voucher, yet oldest first
    assert r.status_code == 200 and r.json()["balance"] == -20
    assert await owed(api, first, second) == [0, 20]
    await paid_topup(api, wallet, 200)
    assert await owed(api, first, second) == [0, 0]


async def test_a_refunded_purchase_repays_its_own_sites_tab_first(api: Api) -> None:
    first, second = await tab_site(api), await tab_site(api)
    wallet = await api.wallet()
    await bought(api, wallet, first, "a")  # -30
    later = await bought(api, wallet, second, "b")  # -70
    r = await api.client.post(f"/v1/purchases/{later['purchase_id']}/refund", headers=auth(wallet))
    assert r.status_code == 200 and r.json()["balance"] == -30, r.text
    assert await owed(api, first, second) == [30, 0]  # oldest first would have left the second site 10


async def test_only_what_goes_below_zero_is_lent(api: Api) -> None:
    site = await tab_site(api)
    rich, short = await api.wallet(), await api.wallet()
    await api.fund(site, rich, 100)
    await bought(api, rich, site, "c")  # 100 → 50: lends nothing
    assert (await api.unlock(rich, site[0], "c")).json()["charged"] == 0  # owned: nothing either
    assert await owed(api, site) == [0]
    await api.fund(site, short, 20)
    await bought(api, short, site, "c")  # 20 → -30: the 20 was the reader's own
    assert await owed(api, site) == [30]
    await api.fund(site, rich, 10)  # money into a wallet that owes nothing repays nothing
    assert await owed(api, site) == [30]


async def test_a_top_up_no_402_offered_counts_in_the_sites_funnel(api: Api) -> None:
    site = await tab_site(api)
    wallet = await api.wallet()
    await paid_topup(api, wallet, 200, site[0])
    await paid_topup(api, wallet, 500)  # for no site: counted nowhere
    c = await counted(api, site[0], site_day("UTC", api.clock.now_ms()).day)
    assert c == {"topup_started": "1", "topup_paid": "1"}  # the site's own figures; no item named


async def test_a_refund_from_the_command_line_is_counted_and_repays_the_tab(
    api: Api, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site = await tab_site(api)
    wallet = await api.wallet()
    purchase = (await bought(api, wallet, site, "c"))["purchase_id"]
    assert await owed(api, site) == [50]
    monkeypatch.setenv("COINSLOT_REDIS_URL", redis_url)
    monkeypatch.setenv("COINSLOT_DATA_DIR", str(tmp_path / "cli"))
    day = site_day("UTC", int(time.time() * 1000)).day  # the command reads the system's clock
    assert await asyncio.to_thread(main, ["refund", purchase]) == 0, capsys.readouterr()
    assert await api.balance(wallet) == 0
    c = await api.store.redis.hgetall(keyspace.insights_day_key(site[0], day))
    assert c["refunded"] == c["refunded|c"] == "1" and c["refunded_amount"] == "50"
    assert await owed(api, site) == [0]


# The replay itself, on entries as the ledger holds them --------------------------------------


def entry(kind: str, moved: int, balance: int, site: str = "") -> dict[str, Any]:
    return {"kind": kind, "site": site, "balance": balance, "postings": [{"account": WALLET, "amount": moved}]}


def test_a_banks_debit_below_zero_is_no_sites_tab() -> None:
    lent_then_disputed = [entry("unlock", -30, -30, "s1"), entry("dispute", -100, -130)]
    assert tabs.replay([*lent_then_disputed, entry("topup", 50, -80)], WALLET) == {"s1": 30, "": 20}
    # The bank's money given back pays the bank's debt first, not the site's older one.
    assert tabs.replay([*lent_then_disputed, entry("dispute-won", 100, -30)], WALLET) == {"": 100}
    # Money paying off only a bank's debt repays no site.
    assert tabs.replay([entry("dispute", -100, -100), entry("voucher", 50, -50)], WALLET) == {"": 50}
