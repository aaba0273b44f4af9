"""Abuse limits: wallet creation and voucher guessing are counted per client address."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from coinslot.clock import FrozenClock
from coinslot.keyring import KeyRing
from coinslot.store import Store

from api import Api, auth
from conftest import make_settings, running_app


@pytest.fixture
async def client(
    tmp_path: Path, standalone_store: Store, clock: FrozenClock, keyring: KeyRing
) -> AsyncIterator[httpx.AsyncClient]:
    settings = dataclasses.replace(make_settings(tmp_path), wallets_per_ip_per_hour=3, failed_redeems_per_ip_per_hour=2)
    async with running_app(settings, standalone_store, clock, keyring) as c:
        yield c


async def test_wallet_creation_is_limited_per_address(client: httpx.AsyncClient, clock: FrozenClock) -> None:
    statuses = [(await client.post("/v1/wallets", json={})).status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]

    refused = await client.post("/v1/wallets", json={})
    assert refused.json()["type"].endswith("/rate-limited")
    assert 0 < int(refused.headers["retry-after"]) <= 3600

    clock.advance(3600)
    assert (await client.post("/v1/wallets", json={})).status_code == 201


async def test_wrong_voucher_codes_are_limited_but_right_ones_do_not_count(
    client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock
) -> None:
    api = Api(client, standalone_store, clock)
    site = await api.site()
    wallet = await api.wallet()
    good = [await api.voucher(site, 10) for _ in range(3)]
    for code in good[:2]:
        assert (await api.redeem(wallet, code)).status_code == 200

    wrong = [(await api.redeem(wallet, f"WRONG-CODE-{n}")).status_code for n in range(3)]

    assert wrong == [409, 409, 429]
    assert (await api.redeem(wallet, good[2])).status_code == 429  # a full bucket stops every try
    clock.advance(3600)
    assert (await client.post("/v1/vouchers/redeem", json={"code": good[2]}, headers=auth(wallet))).status_code == 200


# Card testing: top-up checkouts per wallet and per address -----------------------------


@pytest.fixture
async def topup_client(
    tmp_path: Path, standalone_store: Store, clock: FrozenClock, keyring: KeyRing
) -> AsyncIterator[httpx.AsyncClient]:
    settings = dataclasses.replace(make_settings(tmp_path), topups_per_wallet_per_hour=2, topups_per_ip_per_hour=3)
    async with running_app(settings, standalone_store, clock, keyring) as c:
        yield c


async def topup(client: httpx.AsyncClient, wallet: str) -> httpx.Response:
    return await client.post("/v1/topups", json={"amount": 500}, headers=auth(wallet))


async def test_topup_checkouts_are_limited_per_wallet(
    topup_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock
) -> None:
    api = Api(topup_client, standalone_store, clock)
    wallet, other = await api.wallet(), await api.wallet()

    statuses = [(await topup(topup_client, wallet)).status_code for _ in range(3)]
    refused = await topup(topup_client, wallet)

    assert statuses == [201, 201, 429]
    assert refused.json()["type"].endswith("/rate-limited")
    assert "top-up checkouts for this wallet" in refused.json()["detail"]
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert (await topup(topup_client, other)).status_code == 201  # another wallet has its own count
    clock.advance(3600)
    assert (await topup(topup_client, wallet)).status_code == 201


async def test_topup_checkouts_are_limited_per_address_across_wallets(
    topup_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock
) -> None:
    api = Api(topup_client, standalone_store, clock)
    wallets = [await api.wallet() for _ in range(4)]

    statuses = [(await topup(topup_client, w)).status_code for w in wallets]

    assert statuses == [201, 201, 201, 429]


async def test_topup_links_are_limited_with_a_429_page_but_reopening_one_is_free(
    topup_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock
) -> None:
    api = Api(topup_client, standalone_store, clock)
    site = await api.site()
    await api.item(site, "article", 150)
    wallet = await api.wallet()
    options = [(await api.unlock(wallet, site[0], "article")).json()["topup_options"][0] for _ in range(3)]
    paths = [o["url"].split("8000", 1)[1] for o in options]

    first, reopened, second, third = [await topup_client.get(p) for p in (paths[0], paths[0], paths[1], paths[2])]

    assert [r.status_code for r in (first, reopened, second)] == [303, 303, 303]
    assert third.status_code == 429
    assert third.headers["content-type"].startswith("text/html")
    assert 0 < int(third.headers["retry-after"]) <= 3600
    assert (await topup_client.get(f"/v1/topups/{options[2]['topup_id']}", headers=auth(wallet))).status_code == 404
