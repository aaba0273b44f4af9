"""Wallet credentials: Bearer for servers and agents, a partitioned cookie for the card only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from coinslot.clock import FrozenClock
from coinslot.http.credentials import COOKIE
from coinslot.keyring import KeyRing
from coinslot.store import Store

from api import Api, auth
from conftest import make_settings, running_app

Headers = list[tuple[str, str]]

PUBLIC = "http://127.0.0.1:8000"
CARD = {"Sec-Fetch-Site": "same-origin", "Origin": PUBLIC}  # what the browser sends from the card's iframe


@pytest.fixture
def api(standalone_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock) -> Api:
    return Api(standalone_client, standalone_store, clock)


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={token}"}


async def test_card_gets_a_partitioned_httponly_cookie(api: Api) -> None:
    r = await api.client.post("/v1/wallets", json={}, headers=CARD)

    set_cookie = r.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "Secure", "SameSite=none", "Partitioned", "Path=/"):
        assert attribute.lower() in set_cookie.lower()
    assert r.headers["cache-control"] == "no-store"


async def test_no_cookie_for_cross_site_or_server_callers(api: Api) -> None:
    cross = await api.client.post(
        "/v1/wallets", json={}, headers={"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost:8001"}
    )
    server = await api.client.post("/v1/wallets", json={})
    assert "set-cookie" not in cross.headers
    assert "set-cookie" not in server.headers


async def test_cookie_honoured_from_the_card(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    token = await api.wallet()
    await api.fund(site, token, 50)

    read = await api.client.get("/v1/wallet", headers={**cookie(token), "Sec-Fetch-Site": "same-origin"})
    paid = await api.client.post("/v1/unlocks", json={"site": site[0], "item": "a"}, headers={**cookie(token), **CARD})

    assert read.status_code == 200
    assert paid.status_code == 200
    assert paid.json()["balance"] == 31


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a non-browser client replaying a stolen cookie gets nothing for it
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost:8001"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:9999"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "none"},
    ],
)
async def test_cookie_ignored_unless_same_origin(api: Api, headers: dict[str, str]) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    token = await api.wallet()
    await api.fund(site, token, 50)

    r = await api.client.post("/v1/unlocks", json={"site": site[0], "item": "a"}, headers={**cookie(token), **headers})

    assert r.status_code == 401
    assert await api.balance(token) == 50


async def test_bearer_wins_over_cookie(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    cookie_wallet, bearer_wallet = await api.wallet(), await api.wallet()
    await api.fund(site, cookie_wallet, 50)
    await api.fund(site, bearer_wallet, 50)

    r = await api.client.post(
        "/v1/unlocks",
        json={"site": site[0], "item": "a"},
        headers={**cookie(cookie_wallet), **CARD, **auth(bearer_wallet)},
    )

    assert r.status_code == 200
    assert await api.balance(bearer_wallet) == 31
    assert await api.balance(cookie_wallet) == 50


async def test_a_bad_cookie_is_ignored_not_fatal(api: Api) -> None:
    r = await api.client.get("/v1/wallet", headers={**cookie("garbage"), "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 401
    assert r.json()["type"].endswith("/unauthorized")


async def test_secret_key_is_not_a_wallet(api: Api) -> None:
    site = await api.site()
    r = await api.client.get("/v1/wallet", headers=auth(site[1]))
    assert r.status_code == 401


async def test_rotated_secret_key_works_for_24_hours(api: Api, clock: FrozenClock) -> None:
    from coinslot import catalog

    site = await api.site()
    new_key = await catalog.rotate_secret(api.store, site[0], now_ms=clock.now_ms())

    assert (await api.client.get("/v1/admin/site", headers=auth(site[1]))).status_code == 200
    assert (await api.client.get("/v1/admin/site", headers=auth(new_key))).status_code == 200
    clock.advance(24 * 3600 + 1)
    assert (await api.client.get("/v1/admin/site", headers=auth(site[1]))).status_code == 401
    assert (await api.client.get("/v1/admin/site", headers=auth(new_key))).status_code == 200


@pytest.mark.parametrize(
    "lines",
    [
        # The proxy appends to the client's own line: one line, the client's claim first.
        lambda n: [("X-Forwarded-For", f"10.9.0.{n}, 198.51.100.4")],
        # The proxy adds a line of its own after the client's.
        lambda n: [("X-Forwarded-For", f"10.9.0.{n}"), ("X-Forwarded-For", "198.51.100.4")],
        lambda n: [("X-Forwarded-For", f"10.9.0.{n}, 10.9.1.{n}"), ("X-Forwarded-For", "198.51.100.4")],
    ],
    ids=["one-line", "a-line-each", "two-claims-then-the-proxys-line"],
)
async def test_behind_one_proxy_a_client_cannot_choose_its_own_address(
    tmp_path: Path, standalone_store: Store, clock: FrozenClock, keyring: KeyRing, lines: Callable[[int], Headers]
) -> None:
    settings = make_settings(tmp_path, trusted_proxy_hops=1, wallets_per_ip_per_hour=2)
    async with running_app(settings, standalone_store, clock, keyring) as client:
        statuses = [(await client.post("/v1/wallets", json={}, headers=lines(n))).status_code for n in range(3)]
    assert statuses == [201, 201, 429]  # all three from the address the proxy saw


async def test_without_a_trusted_proxy_forwarded_for_is_ignored(
    tmp_path: Path, standalone_store: Store, clock: FrozenClock, keyring: KeyRing
) -> None:
    settings = make_settings(tmp_path, wallets_per_ip_per_hour=2)
    async with running_app(settings, standalone_store, clock, keyring) as client:
        statuses = [
            (await client.post("/v1/wallets", json={}, headers={"X-Forwarded-For": f"10.9.2.{n}"})).status_code
            for n in range(3)
        ]
    assert statuses == [201, 201, 429]
