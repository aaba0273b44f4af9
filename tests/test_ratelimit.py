"""Abuse limits: wallet creation and voucher guessing are counted per client address."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from coinslot.clock import FrozenClock
from coinslot.store import Store
from coinslot.tokens import KeyRing

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
