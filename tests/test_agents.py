"""Agents pay through the same door: a 402 with the offer and a challenge, an unlock with a wallet
token, the content, a second read free, and a daily spending limit for unattended use (UTC days)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coinslot.clock import FrozenClock
from coinslot.keyring import KeyRing
from coinslot.store import Store
from receiver import receiver

from api import Api, auth
from conftest import PUBLIC_URL, make_settings, running_app

PROBLEMS = "https://coinslot.dev/problems/"
DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


def challenge_params(header: str) -> dict[str, str]:
    """The auth-params of a ``Coinslot`` challenge, read as RFC 9110 spells quoted-strings."""
    scheme, _, rest = header.partition(" ")
    assert scheme == "Coinslot"
    pairs = re.findall(r'\s*([A-Za-z]+)="((?:[^"\\]|\\.)*)"\s*(?:,|$)', rest)
    assert ", ".join(f'{k}="{v}"' for k, v in pairs) == rest  # nothing left unread
    return {k: re.sub(r"\\(.)", r"\1", v) for k, v in pairs}


async def set_limit(api: Api, wallet: str, limit: int | None) -> dict[str, Any]:
    r = await api.client.patch("/v1/wallet", json={"daily_limit": limit}, headers=auth(wallet))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def wallet_view(api: Api, wallet: str) -> dict[str, Any]:
    r = await api.client.get("/v1/wallet", headers=auth(wallet))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_an_agent_goes_from_402_to_content_and_reads_again_for_free(api: Api) -> None:
    site = await api.site()
    await api.item(site, "article-42", 19, title="The heat wave", content_html="<p>It was hot.</p>")
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    path = f"/v1/content/{site[0]}/article-42"

    # No token: the offer as JSON, and the same facts in a challenge.
    r = await api.client.get(path)
    assert r.status_code == 402
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == PROBLEMS + "payment-required"
    offer = problem["offer"]
    assert (offer["site"], offer["item"], offer["title"], offer["price"], offer["currency"]) == (
        site[0],
        "article-42",
        "The heat wave",
        19,
        "EUR",
    )
    assert offer["unlock"] == {
        "method": "POST",
        "url": PUBLIC_URL + "/v1/unlocks",
        "body": {"site": site[0], "item": "article-42", "price": 19},
    }
    assert offer["wallet"]["url"] == PUBLIC_URL + "/v1/wallets"
    assert offer["offers"] == f"{PUBLIC_URL}/v1/offers?site={site[0]}&items=article-42"
    assert challenge_params(r.headers["www-authenticate"]) == {
        "realm": site[0],
        "item": "article-42",
        "price": "19",
        "currency": "EUR",
        "unlock": PUBLIC_URL + "/v1/unlocks",
    }
    assert "It was hot" not in r.text
    # A wallet that does not own the item gets the same 402: a GET never spends.
    r = await api.client.get(path, headers=auth(wallet))
    assert (r.status_code, r.json()["type"]) == (402, PROBLEMS + "payment-required")
    assert "does not own" in r.json()["detail"] and "www-authenticate" in r.headers
    assert await api.balance(wallet) == 100

    # Unlock with the wallet token, as the offer says; the unlock token opens the content.
    bought = await api.client.request(
        offer["unlock"]["method"], offer["unlock"]["url"], json=offer["unlock"]["body"], headers=auth(wallet)
    )
    assert bought.status_code == 200, bought.text
    assert (bought.json()["charged"], bought.json()["balance"]) == (19, 81)
    r = await api.client.get(path, headers=auth(bought.json()["token"]))
    assert r.status_code == 200 and r.json()["content_html"] == "<p>It was hot.</p>"

    # A second read is free: with the wallet token itself, or by unlocking again (charged 0).
    r = await api.client.get(path, headers=auth(wallet))
    assert r.status_code == 200 and r.json()["content_html"] == "<p>It was hot.</p>"
    again = await api.unlock(wallet, site[0], "article-42", price=19)
    assert (again.json()["charged"], again.json()["purchase_id"]) == (0, bought.json()["purchase_id"])
    r = await api.client.get(path, headers=auth(again.json()["token"]))
    assert r.status_code == 200
    assert await api.balance(wallet) == 81


async def test_a_daily_limit_refuses_what_would_pass_it_with_its_own_type(api: Api, clock: FrozenClock) -> None:
    site = await api.site()
    for item in ("a", "b", "c", "d"):
        await api.item(site, item, 19, content_html=f"<p>{item}</p>")
    wallet = await api.wallet()
    await api.fund(site, wallet, 500)
    await api.unlock(wallet, site[0], "a", price=19)  # before the limit: not counted against it

    tomorrow = 1_767_225_600_000 + DAY_MS  # the clock starts at 2026-01-01T00:00Z
    assert await set_limit(api, wallet, 40) == {"daily_limit": 40, "spent_today": 0, "day_ends": tomorrow}
    assert (await api.unlock(wallet, site[0], "b", price=19)).status_code == 200
    assert (await api.unlock(wallet, site[0], "c", price=19)).status_code == 200
    r = await api.unlock(wallet, site[0], "d", price=19)

    assert r.status_code == 402
    problem = r.json()
    assert problem["type"] == PROBLEMS + "wallet-daily-limit"
    assert (problem["daily_limit"], problem["spent_today"], problem["price"], problem["currency"]) == (
        40,
        38,
        19,
        "EUR",
    )
    assert problem["day_ends"] == tomorrow and "2026-01-02T00:00:00Z" in problem["detail"]
    assert "topup_options" not in problem  # money would not help
    assert await api.balance(wallet) == 500 - 3 * 19
    # What it owns is read again for free, whatever the limit.
    owned = await api.unlock(wallet, site[0], "a", price=19)
    assert (owned.status_code, owned.json()["charged"]) == (200, 0)
    assert (await api.client.get(f"/v1/content/{site[0]}/b", headers=auth(wallet))).status_code == 200
    view = await wallet_view(api, wallet)
    assert (view["daily_limit"], view["spent_today"], view["day_ends"]) == (40, 38, tomorrow)
    export = (await api.client.get("/v1/wallet/export", headers=auth(wallet))).json()["wallet"]
    assert (export["daily_limit"], export["spent_today"]) == (40, 38)

    # Raising the limit keeps today's spending; removing it lifts the refusal.
    assert await set_limit(api, wallet, 60) == {"daily_limit": 60, "spent_today": 38, "day_ends": tomorrow}
    assert (await api.unlock(wallet, site[0], "d", price=19)).status_code == 200
    assert await set_limit(api, wallet, None) == {"daily_limit": None, "spent_today": 0, "day_ends": tomorrow}
    assert (await wallet_view(api, wallet))["daily_limit"] is None


async def test_exactly_the_limit_is_allowed_one_cent_more_is_not_and_a_new_utc_day_starts_over(
    api: Api, clock: FrozenClock
) -> None:
    # The site's day is Auckland's; the wallet's day is UTC's all the same (a wallet has no time zone).
    site = await api.site(timezone="Pacific/Auckland")
    for item, price in (("p49", 49), ("p2", 2), ("p1", 1), ("q1", 1), ("r1", 1)):
        await api.item(site, item, price)
    wallet = await api.wallet()
    await api.fund(site, wallet, 500)
    await set_limit(api, wallet, 50)
    clock.advance(12 * 3600)  # noon UTC: past midnight in Auckland, not in UTC

    assert (await api.unlock(wallet, site[0], "p49")).status_code == 200
    over = await api.unlock(wallet, site[0], "p2")  # 49 + 2 = 51: one cent over
    assert (over.status_code, over.json()["type"], over.json()["spent_today"]) == (
        402,
        PROBLEMS + "wallet-daily-limit",
        49,
    )
    assert (await api.unlock(wallet, site[0], "p1")).status_code == 200  # 49 + 1 = 50: exactly the limit
    assert (await api.unlock(wallet, site[0], "q1")).status_code == 402
    clock.ms = 1_767_225_600_000 + DAY_MS - 1  # the last millisecond of the UTC day
    assert (await api.unlock(wallet, site[0], "q1")).status_code == 402
    clock.advance(0.001)  # 2026-01-02T00:00Z: a new day
    assert (await api.unlock(wallet, site[0], "q1")).status_code == 200
    view = await wallet_view(api, wallet)
    assert (view["spent_today"], view["day_ends"]) == (1, 1_767_225_600_000 + 2 * DAY_MS)
    assert await api.balance(wallet) == 500 - 51


async def test_parallel_unlocks_never_spend_past_the_limit(api: Api) -> None:
    site = await api.site()
    items = [f"i{n}" for n in range(12)]
    for item in items:
        await api.item(site, item, 19)
    wallet = await api.wallet()
    await api.fund(site, wallet, 1000)
    await set_limit(api, wallet, 100)  # 5 × 19 = 95 fit, a sixth would make 114

    answers = await asyncio.gather(*(api.unlock(wallet, site[0], item, price=19) for item in items))

    assert sorted(r.status_code for r in answers) == [200] * 5 + [402] * 7
    assert {r.json()["type"] for r in answers if r.status_code == 402} == {PROBLEMS + "wallet-daily-limit"}
    view = await wallet_view(api, wallet)
    assert (view["spent_today"], view["balance"]) == (95, 1000 - 95)


async def test_an_undo_gives_the_days_spending_back(api: Api) -> None:
    site = await api.site(refund_window=600)
    for item in ("a", "b", "c"):
        await api.item(site, item, 19)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    await set_limit(api, wallet, 40)
    await api.unlock(wallet, site[0], "a")
    b = (await api.unlock(wallet, site[0], "b")).json()
    assert (await api.unlock(wallet, site[0], "c")).status_code == 402

    r = await api.client.post(f"/v1/purchases/{b['purchase_id']}/refund", headers=auth(wallet))

    assert r.status_code == 200, r.text
    assert (await wallet_view(api, wallet))["spent_today"] == 19
    assert (await api.unlock(wallet, site[0], "c")).status_code == 200
    assert (await wallet_view(api, wallet))["spent_today"] == 38


async def test_passes_and_the_daily_cap_count_only_what_they_charge(api: Api) -> None:
    capped = await api.site(daily_cap=20)
    for item in ("a", "b", "c"):
        await api.item(capped, item, 19)
    with_pass = await api.site()
    await api.item(with_pass, "day-pass", 30, pass_hours=24)
    await api.item(with_pass, "x", 19)
    wallet = await api.wallet()
    await api.fund(capped, wallet, 100)
    await set_limit(api, wallet, 20)

    assert (await api.unlock(wallet, capped[0], "a")).json()["charged"] == 19
    assert (await api.unlock(wallet, capped[0], "b")).json()["charged"] == 1  # the cap takes the rest: 20 spent
    free = await api.unlock(wallet, capped[0], "c")  # free under the cap: the limit does not refuse it
    assert (free.status_code, free.json()["access"], free.json()["charged"]) == (200, "cap", 0)
    assert (await wallet_view(api, wallet))["spent_today"] == 20

    await set_limit(api, wallet, 50)
    assert (await api.unlock(wallet, with_pass[0], "day-pass")).json()["charged"] == 30  # a pass counts
    await set_limit(api, wallet, 50)  # 50 spent: nothing more may be charged today
    under = await api.unlock(wallet, with_pass[0], "x")  # but the pass grants it, for nothing
    assert (under.status_code, under.json()["access"]) == (200, "pass")


async def test_the_limit_is_checked_where_it_is_set(api: Api) -> None:
    wallet = await api.wallet()
    for bad in ({"daily_limit": -1}, {"daily_limit": 1_000_001}, {"daily_limit": "5"}, {}, {"limit": 5}):
        r = await api.client.patch("/v1/wallet", json=bad, headers=auth(wallet))
        assert (r.status_code, r.json()["type"]) == (422, PROBLEMS + "invalid-body"), bad
    r = await api.client.patch("/v1/wallet", json={"budget": 250, "daily_limit": 0}, headers=auth(wallet))
    assert r.json() == {"budget": 250, "daily_limit": None, "spent_today": 0, "day_ends": 1_767_225_600_000 + DAY_MS}
    r = await api.client.patch("/v1/wallet", json={"daily_limit": 5}, headers=auth("not-a-wallet"))
    assert r.status_code == 401


async def test_only_the_authorization_header_carries_a_wallet_token_to_content(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19, content_html="<p>A</p>")
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    await api.unlock(wallet, site[0], "a")

    in_query = await api.client.get(f"/v1/content/{site[0]}/a?token={wallet}")  # URLs end up in logs
    forged = await api.client.get(f"/v1/content/{site[0]}/a", headers=auth(wallet[:-2] + "xx"))
    secret = await api.client.get(f"/v1/content/{site[0]}/a", headers=auth(site[1]))

    assert (in_query.status_code, in_query.json()["type"]) == (401, PROBLEMS + "unlock-token-invalid")
    assert (forged.status_code, secret.status_code) == (401, 401)
    assert (await api.client.get(f"/v1/content/{site[0]}/nope", headers=auth(wallet))).status_code == 404


# topup.paid: a top-up started from a site's 402 (or naming the site) tells that site -------------


@pytest.fixture
async def hook_client(
    tmp_path: Path, store: Store, clock: FrozenClock, keyring: KeyRing
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(tmp_path, webhooks_allow_private=True), store, clock, keyring) as c:
        yield c


async def until_posts(rx: Any, n: int, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if len(rx.posts) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(rx.posts)} posts, waited for {n}")


async def test_a_topup_paid_from_a_sites_402_sends_topup_paid_to_that_site(
    hook_client: httpx.AsyncClient, store: Store, clock: FrozenClock
) -> None:
    api = Api(hook_client, store, clock)
    site, other = await api.site(), await api.site()
    await api.item(site, "a", 150)
    wallet = await api.wallet()
    with receiver() as rx, receiver() as other_rx:
        for s, r in ((site, rx), (other, other_rx)):
            add = await hook_client.post("/v1/admin/webhooks", json={"url": r.url}, headers=auth(s[1]))
            assert add.status_code == 201, add.text
        refused = await api.unlock(wallet, site[0], "a", price=150)
        assert refused.status_code == 402
        option = refused.json()["topup_options"][0]

        opened = await hook_client.get(option["url"].removeprefix(PUBLIC_URL))  # a person opens the link
        assert opened.status_code == 303
        paid = await hook_client.post(opened.headers["location"].removeprefix(PUBLIC_URL))
        assert paid.status_code == 200, paid.text
        await until_posts(rx, 1)

        event = rx.posts[0].event
        assert event["type"] == "topup.paid"
        assert event["data"]["site"] == site[0] and event["data"]["topup_id"] == option["topup_id"]
        assert (event["data"]["amount"], event["data"]["currency"]) == (option["amount"], "EUR")
        topup = (await hook_client.get(f"/v1/topups/{option['topup_id']}", headers=auth(wallet))).json()
        assert (topup["status"], topup["site"]) == ("paid", site[0])
        assert (await api.unlock(wallet, site[0], "a", price=150)).status_code == 200

        # An agent's own top-up may name the site too; one without a site tells nobody.
        named = await hook_client.post("/v1/topups", json={"amount": 500, "site": other[0]}, headers=auth(wallet))
        plain = await hook_client.post("/v1/topups", json={"amount": 500}, headers=auth(wallet))
        for started in (plain, named):
            assert started.status_code == 201, started.text
            assert (await hook_client.post(started.json()["checkout_url"].removeprefix(PUBLIC_URL))).status_code == 200
        await until_posts(other_rx, 1)
        assert other_rx.posts[0].event["data"]["topup_id"] == named.json()["topup_id"]
        await asyncio.sleep(0.2)  # time for a stray post to arrive, if one were sent
        paid_events = [
            [p.event["data"]["topup_id"] for p in r.posts if p.event["type"] == "topup.paid"] for r in (rx, other_rx)
        ]
        assert paid_events == [[option["topup_id"]], [named.json()["topup_id"]]]


async def test_a_topup_names_only_a_site_that_exists_and_sells_in_the_wallets_currency(api: Api) -> None:
    usd = await api.site(currency="USD")
    wallet = await api.wallet()

    unknown = await api.client.post("/v1/topups", json={"amount": 500, "site": "site_nope"}, headers=auth(wallet))
    other_currency = await api.client.post("/v1/topups", json={"amount": 500, "site": usd[0]}, headers=auth(wallet))
    empty = await api.client.post("/v1/topups", json={"amount": 500, "site": ""}, headers=auth(wallet))

    assert (unknown.status_code, unknown.json()["type"]) == (404, PROBLEMS + "unknown-site")
    assert (other_currency.status_code, other_currency.json()["type"]) == (409, PROBLEMS + "currency-mismatch")
    assert empty.status_code == 422
