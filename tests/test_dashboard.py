"""The publisher's dashboard: signing in (one-time link, secret key), the session, the checks on
every form, and the pages it shows.

Every test runs on standalone Redis and on the 3-master Cluster.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coinslot import keyspace
from coinslot.clock import FrozenClock
from coinslot.dashauth import LINK_TTL_S, SESSION_TTL_S
from coinslot.keyring import KeyRing
from coinslot.store import Store
from receiver import receiver

from api import Api
from conftest import PUBLIC_URL, make_settings, running_app

COOKIE = "coinslot_dash"


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


class Publisher:
    """A browser on the dashboard: its own session cookie, the backend's Origin on every form."""

    def __init__(self, api: Api) -> None:
        self.client = api.client
        self.cookie: str | None = None
        self.csrf = ""

    def _headers(self, origin: str | None = PUBLIC_URL) -> dict[str, str]:
        headers = {} if origin is None else {"Origin": origin}
        if self.cookie:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        return headers

    async def get(self, path: str) -> httpx.Response:
        r = await self.client.get(path, headers=self._headers(None))
        found = re.search(r'name="csrf" value="([^"]+)"', r.text)
        if found:
            self.csrf = found.group(1)
        return r

    async def post(
        self, path: str, form: dict[str, str], *, origin: str | None = PUBLIC_URL, csrf: bool = True
    ) -> httpx.Response:
        data = {**form, "csrf": self.csrf} if csrf else form
        r = await self.client.post(path, data=data, headers=self._headers(origin))
        self.client.cookies.clear()  # this browser keeps its own cookie, below, not the shared client's
        for header in r.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            if name == COOKIE:
                self.cookie = rest.split(";")[0] or None
        return r

    async def sign_in_with_link(self, token: str) -> httpx.Response:
        return await self.post("/dashboard/signin", {"token": token}, csrf=False)


def admin(site: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {site[1]}"}


async def link(api: Api, site: str) -> str:
    services: Any = api.client.app.state.services  # type: ignore[attr-defined]
    token: str = await services.dashboard.issue_link(site, now_ms=api.clock.now_ms())
    return token


async def signed_in(api: Api) -> tuple[Publisher, tuple[str, str]]:
    site = await api.site()
    publisher = Publisher(api)
    r = await publisher.sign_in_with_link(await link(api, site[0]))
    assert r.status_code == 303 and r.headers["location"] == "/dashboard", r.text
    assert (await publisher.get("/dashboard")).status_code == 200
    return publisher, site


# Sign-in --------------------------------------------------------------------------------------


async def test_a_printed_link_signs_in_once_with_a_strict_cookie(api: Api) -> None:
    site = await api.site()
    token = await link(api, site[0])
    page = await api.client.get(f"/dashboard/signin?token={token}")
    assert page.status_code == 200 and token in page.text  # the GET shows a button; it spends nothing

    publisher = Publisher(api)
    r = await publisher.sign_in_with_link(token)
    assert r.status_code == 303
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(COOKIE + "="))
    assert f"Max-Age={SESSION_TTL_S}" in cookie and "Path=/dashboard" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # loopback here; beyond it the cookie is Secure
    overview = await publisher.get("/dashboard")
    assert overview.status_code == 200 and "Daily Planet" in overview.text

    again = await Publisher(api).sign_in_with_link(token)
    assert again.status_code == 401 and "not valid" in again.text


async def test_an_expired_link_is_refused(api: Api) -> None:
    site = await api.site()
    token = await link(api, site[0])
    api.clock.advance(LINK_TTL_S + 1)
    r = await Publisher(api).sign_in_with_link(token)
    assert r.status_code == 401 and COOKIE not in r.headers.get("set-cookie", "")


async def test_a_link_is_kept_only_as_an_hmac_that_expires(api: Api, store: Store) -> None:
    site = await api.site()
    token = await link(api, site[0])
    keys = [k async for k in _scan(store, "dash:link:*")]
    assert keys and all(token not in k for k in keys)
    assert 0 < await store.redis.ttl(keys[0]) <= LINK_TTL_S


async def test_the_secret_key_signs_in_and_wrong_keys_are_rate_limited(api: Api) -> None:
    site = await api.site()
    publisher = Publisher(api)
    assert (await publisher.post("/dashboard/signin", {"key": site[1]}, csrf=False)).status_code == 303
    assert (await publisher.get("/dashboard")).status_code == 200

    stranger = Publisher(api)
    statuses = [
        (await stranger.post("/dashboard/signin", {"key": "sk_wrong"}, csrf=False)).status_code for _ in range(11)
    ]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    # Once limited, even the right key waits: guessing must not learn which try was right.
    assert (await stranger.post("/dashboard/signin", {"key": site[1]}, csrf=False)).status_code == 429


async def test_a_forged_or_missing_cookie_is_sent_to_sign_in(api: Api) -> None:
    publisher, _ = await signed_in(api)
    assert publisher.cookie is not None
    for forged in (publisher.cookie[:-2] + "xx", "bm90LWEtc2Vzc2lvbg.AAAA.BBBB", ""):
        publisher.cookie = forged
        r = await publisher.get("/dashboard/items")
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/signin"


async def test_a_session_ends_after_its_time(api: Api) -> None:
    publisher, _ = await signed_in(api)
    api.clock.advance(SESSION_TTL_S + 1)
    assert (await publisher.get("/dashboard")).status_code == 303


async def test_sign_out_ends_the_session_on_the_server(api: Api, store: Store) -> None:
    publisher, _ = await signed_in(api)
    kept = publisher.cookie
    assert [k async for k in _scan(store, "dash:session:*")]
    r = await publisher.post("/dashboard/signout", {})
    assert r.status_code == 303 and publisher.cookie is None
    publisher.cookie = kept  # a copy of the cookie kept elsewhere opens nothing now
    assert (await publisher.get("/dashboard")).status_code == 303


async def test_cross_site_forms_are_refused(api: Api) -> None:
    publisher, _ = await signed_in(api)
    for origin, csrf in (("https://evil.example", True), (None, True), (PUBLIC_URL, False)):
        r = await publisher.post("/dashboard/vouchers", {"amount": "100"}, origin=origin, csrf=csrf)
        assert r.status_code == 403, (origin, csrf, r.text)
        assert r.headers["content-type"].startswith("text/html")
    r = await publisher.post("/dashboard/signin", {"key": "sk_x"}, origin="https://evil.example", csrf=False)
    assert r.status_code == 403
    assert (await publisher.post("/dashboard/vouchers", {"amount": "100"})).status_code == 303


async def test_pages_are_private_unframed_and_script_free(api: Api) -> None:
    publisher, _ = await signed_in(api)
    for path in ("/dashboard", "/dashboard/items", "/dashboard/vouchers", "/dashboard/ledger", "/dashboard/signin"):
        r = await publisher.get(path)
        assert r.status_code == 200, path
        assert r.headers["cache-control"] == "no-store"
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "script-src" not in csp
        assert "<script" not in r.text and " style=" not in r.text
    assert "<h1>Items</h1>" in (await publisher.get("/dashboard/items")).text
    css = await api.client.get("/dashboard/dashboard.css")
    assert css.status_code == 200 and "prefers-color-scheme:dark" in css.text


# Pages ----------------------------------------------------------------------------------------


async def test_items_are_edited_with_the_admin_apis_rules(api: Api) -> None:
    publisher, site = await signed_in(api)
    await api.item(site, "dash-item", 19, content_html="<p>Old</p>")
    page = await publisher.get("/dashboard/items/dash-item")
    assert page.status_code == 200 and "&lt;p&gt;Old&lt;/p&gt;" in page.text
    form = {"title": "New title", "price": "49", "pass_hours": "", "content": "<p>New</p><script>x()</script>"}
    r = await publisher.post("/dashboard/items/dash-item", form)
    assert r.status_code == 303, r.text
    offers = (await api.client.get(f"/v1/offers?site={site[0]}&items=dash-item")).json()
    assert offers["items"][0]["price"] == 49
    assert offers["items"][0]["title"] == "New title"
    page = await publisher.get("/dashboard/items/dash-item")
    assert "New" in page.text and "script" not in page.text.split("<textarea")[1].split("</textarea>")[0]

    bad = await publisher.post("/dashboard/items/dash-item", {**form, "price": "-1"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
    bad = await publisher.post("/dashboard/items/dash-item", {**form, "title": " "})
    assert bad.status_code == 422

    r = await publisher.post("/dashboard/items/dash-item/archive", {"archived": "1"})
    assert r.status_code == 303
    offers = (await api.client.get(f"/v1/offers?site={site[0]}&items=dash-item")).json()
    assert offers["items"][0]["archived"] is True
    await publisher.post("/dashboard/items/dash-item/archive", {"archived": "0"})
    offers = (await api.client.get(f"/v1/offers?site={site[0]}&items=dash-item")).json()
    assert not offers["items"][0].get("archived")


async def test_a_price_test_is_started_read_and_ended_on_the_items_page(api: Api, store: Store) -> None:
    publisher, site = await signed_in(api)
    await api.item(site, "tested", 19)
    page = await publisher.get("/dashboard/items/tested")
    assert "Start the test" in page.text
    for bad in ("19", "abc", "", "100001", "²"):
        r = await publisher.post("/dashboard/items/tested/price-test", {"test_price": bad})
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html"), bad
    assert (
        await publisher.post("/dashboard/items/tested/price-test", {"test_price": "29"}, origin=None)
    ).status_code == 403
    r = await publisher.post("/dashboard/items/tested/price-test", {"test_price": "29"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/items/tested?test=started"
    page = await publisher.get("/dashboard/items/tested?test=started")
    assert "The price test has started." in page.text and "Too early to tell: each price needs 100 views." in page.text
    assert "€0.19" in page.text and "€0.29" in page.text and "Keep €0.29" in page.text
    title = re.search(r"<title>([^<]*)</title>", page.text)
    assert title is not None and title.group(1).startswith("Title of tested")
    assert "tested · €0.19 · test €0.29" in (await publisher.get("/dashboard/items")).text

    # Two thousand views a price, as the counters would hold them: the page calls the leader.
    since = (await api.client.get("/v1/admin/items/tested/price-test", headers=admin(site))).json()["since"]
    counts = {
        "a:shown": 2000,
        "a:unlocked": 100,
        "a:revenue": 1900,
        "b:shown": 2000,
        "b:unlocked": 100,
        "b:revenue": 2900,
    }
    await store.redis.hset(keyspace.price_test_key(site[0], "tested", since), mapping=counts)
    page = await publisher.get("/dashboard/items/tested")
    assert "€0.29 earns more per view, with 95 % confidence." in page.text
    assert "5.0 %" in page.text and "€14.50" in page.text  # conversion of b; its revenue per 1,000 views
    german = await publisher.get("/dashboard/items/tested?lang=de")
    assert "0,29\xa0€ bringt mit 95 % Sicherheit mehr pro Aufruf." in german.text

    r = await publisher.post("/dashboard/items/tested/price-test/keep", {"price": "29"})
    assert r.status_code == 303
    assert (await api.client.get(f"/v1/offers?site={site[0]}&items=tested")).json()["items"][0]["price"] == 29
    page = await publisher.get("/dashboard/items/tested?test=kept")
    assert "Price kept: the test has ended." in page.text
    assert "Last test: €0.19 against €0.29; €0.29 was kept. It ran from" in page.text
    # The ended test's figures stay, without its buttons; another test may start.
    assert "€0.29 earns more per view, with 95 % confidence." in page.text and "Keep €" not in page.text
    assert "Start the test" in page.text
    again = await publisher.post("/dashboard/items/tested/price-test/keep", {"price": "29"})
    assert again.status_code == 409


async def test_another_sites_item_cannot_be_edited(api: Api) -> None:
    publisher, _ = await signed_in(api)
    other = await api.site()
    await api.item(other, "theirs", 19)
    assert (await publisher.get("/dashboard/items/theirs")).status_code == 404
    r = await publisher.post("/dashboard/items/theirs/archive", {"archived": "1"})
    assert r.status_code == 404


async def test_vouchers_are_created_and_listed_with_uses_left(api: Api) -> None:
    publisher, _ = await signed_in(api)
    r = await publisher.post("/dashboard/vouchers", {"amount": "250", "uses": "3", "code": "DASH-TEST-1"})
    assert r.status_code == 303 and "created=DASH-TEST-1" in r.headers["location"]
    page = await publisher.get("/dashboard/vouchers")
    assert "DASH-TEST-1" in page.text and "€2.50" in page.text
    assert (await publisher.post("/dashboard/vouchers", {"amount": "x"})).status_code == 422


async def test_the_ledger_exports_by_the_sites_days(api: Api) -> None:
    publisher, site = await signed_in(api)
    await api.item(site, "ledgered", 19)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    assert (await api.unlock(wallet, site[0], "ledgered")).status_code == 200
    r = await publisher.get("/dashboard/ledger/export?format=csv&from=2026-01-01&to=2026-01-01")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    assert ",unlock," in r.text and "ledgered" in r.text
    wallet_id = await api.wallet_id(wallet)
    assert wallet_id not in r.text
    earlier = await publisher.get("/dashboard/ledger/export?format=csv&from=2025-12-01&to=2025-12-31")
    assert "ledgered" not in earlier.text
    bad = await publisher.get("/dashboard/ledger/export?format=xml")
    assert bad.status_code == 422


async def test_german_pages(api: Api) -> None:
    publisher, _ = await signed_in(api)
    r = await publisher.get("/dashboard?lang=de")
    assert '<html lang="de">' in r.text and "Übersicht" in r.text


async def _scan(store: Store, pattern: str) -> Any:
    async for key in store.redis.scan_iter(match=pattern):
        yield key


@pytest.fixture
async def hooks_api(tmp_path: Path, store: Store, clock: FrozenClock, keyring: KeyRing) -> AsyncIterator[Api]:
    """The app with loopback endpoints allowed, as in test mode (the receiver listens on loopback)."""
    async with running_app(make_settings(tmp_path, webhooks_allow_private=True), store, clock, keyring) as client:
        yield Api(client, store, clock)


async def test_webhooks_are_added_tested_and_removed_from_the_dashboard(hooks_api: Api) -> None:
    publisher, _ = await signed_in(hooks_api)
    with receiver() as rx:
        added = await publisher.post("/dashboard/webhooks", {"url": rx.url})
        assert added.status_code == 201 and rx.url in added.text
        secret = re.search(r"<code>(whsec_[^<]+)</code>", added.text)
        assert secret is not None  # shown on this answer only
        listed = await publisher.get("/dashboard/webhooks")
        assert rx.url in listed.text and secret.group(1) not in listed.text
        endpoint = re.search(r'action="/dashboard/webhooks/([^/"]+)/ping"', listed.text)
        assert endpoint is not None
        assert (await publisher.post(f"/dashboard/webhooks/{endpoint.group(1)}/ping", {})).status_code == 303
        deadline = time.monotonic() + 10
        while not rx.ids() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(rx.ids()) == 1 and rx.ids()[0] in (await publisher.get("/dashboard/webhooks")).text
        forged = await publisher.post(f"/dashboard/webhooks/{endpoint.group(1)}/remove", {"x": "1"}, csrf=False)
        assert forged.status_code == 403
        removed = await publisher.post(f"/dashboard/webhooks/{endpoint.group(1)}/remove", {})
        assert removed.status_code == 303 and rx.url not in (await publisher.get("/dashboard/webhooks")).text
    refused = await publisher.post("/dashboard/webhooks", {"url": "ftp://example.com/x"})
    assert refused.status_code == 422 and refused.headers["content-type"].startswith("text/html")
