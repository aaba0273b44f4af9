"""Offers, hosted content, CORS for the site's own origins, the JWKS and health."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.datastructures import Secret

from coinslot.clock import FrozenClock
from coinslot.keyring import KeyRing
from coinslot.store import Store

from api import Api, auth
from conftest import make_settings, running_app

SITE_ORIGIN = "http://localhost:8001"


@pytest.fixture
def api(standalone_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock) -> Api:
    return Api(standalone_client, standalone_store, clock)


async def test_offers_give_price_and_ownership_with_a_wallet(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19, title="Heat wave")
    await api.item(site, "b", 49)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    await api.unlock(wallet, site[0], "a")

    anonymous = await api.client.get(f"/v1/offers?site={site[0]}&items=a,b,zzz")
    mine = await api.client.get(f"/v1/offers?site={site[0]}&items=a,b", headers=auth(wallet))

    assert anonymous.json()["items"][0] == {
        "item": "a",
        "title": "Heat wave",
        "price": 19,
        "currency": "EUR",
        "kind": "item",
    }
    assert anonymous.json()["unknown"] == ["zzz"]
    assert "owned" not in anonymous.json()["items"][0]
    assert [(o["item"], o["owned"]) for o in mine.json()["items"]] == [("a", True), ("b", False)]
    assert mine.headers["cache-control"] == "no-store"

    code = (await api.client.post("/v1/wallet/recovery-code", headers=auth(wallet))).json()["code"]
    assert (await api.client.post("/v1/wallets/recover", json={"code": code})).status_code == 200
    stale = await api.client.get(f"/v1/offers?site={site[0]}&items=a,b", headers=auth(wallet))
    assert stale.status_code == 401  # the recovered wallet's old token tells nothing of what it owns


async def test_offers_refuse_more_than_50_items(api: Api) -> None:
    site = await api.site()
    r = await api.client.get(f"/v1/offers?site={site[0]}&items=" + ",".join(f"i{n}" for n in range(51)))
    assert r.status_code == 422
    assert r.json()["type"].endswith("/invalid-query")


async def test_cors_only_for_the_sites_origins_and_never_with_credentials(api: Api) -> None:
    site = await api.site(origins=[SITE_ORIGIN])
    await api.item(site, "a", 19)

    ok = await api.client.get(f"/v1/offers?site={site[0]}&items=a", headers={"Origin": SITE_ORIGIN})
    other = await api.client.get(f"/v1/offers?site={site[0]}&items=a", headers={"Origin": "https://evil.example"})
    preflight = await api.client.options(
        f"/v1/content/{site[0]}/a",
        headers={
            "Origin": SITE_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )

    assert ok.headers["access-control-allow-origin"] == SITE_ORIGIN
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == SITE_ORIGIN
    for r in (ok, other, preflight):
        assert "access-control-allow-credentials" not in r.headers


async def test_money_routes_send_no_cors(api: Api) -> None:
    site = await api.site(origins=[SITE_ORIGIN])
    await api.item(site, "a", 19)
    wallet = await api.wallet()
    r = await api.client.post(
        "/v1/unlocks", json={"site": site[0], "item": "a"}, headers={**auth(wallet), "Origin": SITE_ORIGIN}
    )
    assert "access-control-allow-origin" not in r.headers
    pre = await api.client.options(
        "/v1/unlocks", headers={"Origin": SITE_ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in pre.headers


async def test_content_needs_an_unlock_token(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19, content_html="<p>Secret story</p>")

    r = await api.client.get(f"/v1/content/{site[0]}/a")

    assert r.status_code == 402
    offer = r.json()["offer"]
    assert (offer["price"], offer["currency"], offer["unlock"]["url"]) == (
        19,
        "EUR",
        "http://127.0.0.1:8000/v1/unlocks",
    )
    assert "Secret story" not in r.text


async def test_content_with_token_as_json_and_sandboxed_html(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19, content_html="<p>Secret story</p>")
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    token = (await api.unlock(wallet, site[0], "a")).json()["token"]

    as_json = await api.client.get(f"/v1/content/{site[0]}/a", headers=auth(token))
    as_html = await api.client.get(f"/v1/content/{site[0]}/a?token={token}", headers={"Accept": "text/html"})

    assert as_json.json()["content_html"] == "<p>Secret story</p>"
    assert as_html.text == "<p>Secret story</p>"
    assert as_html.headers["content-security-policy"] == "sandbox"
    assert as_html.headers["x-content-type-options"] == "nosniff"


async def test_token_for_one_item_does_not_open_another(api: Api, clock: FrozenClock) -> None:
    site = await api.site()
    other_site = await api.site()
    await api.item(site, "a", 19, content_html="<p>A</p>")
    await api.item(site, "b", 19, content_html="<p>B</p>")
    await api.item(other_site, "a", 19, content_html="<p>other</p>")
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    token = (await api.unlock(wallet, site[0], "a")).json()["token"]

    assert (await api.client.get(f"/v1/content/{site[0]}/b", headers=auth(token))).status_code == 401
    assert (await api.client.get(f"/v1/content/{other_site[0]}/a", headers=auth(token))).status_code == 401
    clock.advance(601)
    expired = await api.client.get(f"/v1/content/{site[0]}/a", headers=auth(token))
    assert expired.status_code == 401
    assert expired.json()["type"].endswith("/unlock-token-expired")


async def test_jwks_and_health(api: Api) -> None:
    jwks = (await api.client.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["kty"] == "OKP" and "d" not in jwks["keys"][0]
    health = await api.client.get("/healthz")
    assert health.json() == {"status": "ok", "redis": "ok"}


METRICS_TOKEN = "m" * 40


async def test_metrics_count_credits(
    tmp_path: Path, standalone_store: Store, clock: FrozenClock, keyring: KeyRing
) -> None:
    settings = make_settings(tmp_path, metrics_token=Secret(METRICS_TOKEN))
    async with running_app(settings, standalone_store, clock, keyring) as client:
        api = Api(client, standalone_store, clock)
        site = await api.site()
        wallet = await api.wallet()
        await api.fund(site, wallet, 100)

        text = (await api.client.get("/metrics", headers=auth(METRICS_TOKEN))).text

    assert 'coinslot_credits_total{kind="voucher",outcome="ok"}' in text
    assert 'coinslot_credited_minor_units_total{currency="EUR",kind="voucher"}' in text


async def test_metrics_are_off_without_a_token_and_closed_without_the_right_one(
    tmp_path: Path, standalone_store: Store, clock: FrozenClock, keyring: KeyRing
) -> None:
    async with running_app(make_settings(tmp_path), standalone_store, clock, keyring) as client:
        off = await client.get("/metrics")
    assert off.status_code == 404
    assert "COINSLOT_METRICS_TOKEN" in off.json()["detail"]

    settings = make_settings(tmp_path, metrics_token=Secret(METRICS_TOKEN))
    async with running_app(settings, standalone_store, clock, keyring) as client:
        wallet = (await client.post("/v1/wallets", json={})).json()["token"]
        for headers in ({}, auth("m" * 39), auth(METRICS_TOKEN + "m"), auth(wallet), {"Authorization": "Basic bTpt"}):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert "coinslot_" not in refused.text
        assert (await client.get("/metrics", headers=auth(METRICS_TOKEN))).status_code == 200
